//! A stable-toolchain mutational fuzzer for everything that parses untrusted bytes: the GGUF
//! reader, cluster.toml, every frame type, the Noise handshake and the record layer.
//!
//! Each target starts from valid inputs and mutates them (bit flips, byte overwrites with
//! boundary values, truncation, insertion, duplication, splicing) with a seeded xorshift
//! generator, so a run repeats exactly. A panic is a crash: the input is written to
//! `target/fuzz-crash-TARGET.bin` and the test fails. `cargo test` runs a short round
//! (`PRIMA_FUZZ_ITERS`, default 3000 per target); the long run is
//! `PRIMA_FUZZ_ITERS=1000000 cargo test --release --test it fuzz:: -- --nocapture`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use prima::cluster::auth::{self, Secret};
use prima::cluster::config::ClusterConfig;
use prima::cluster::messages::{EngineKind, KvOp, Msg, RingRole, TensorEntry, WorkerStats};
use prima::cluster::record::{Opener, Sealer};
use prima::cluster::transport::{MAX_FRAME, encode, read_frame};
use prima::gguf::write::GgufWriter;
use prima::gguf::{GgufFile, Value};
use prima::model::SeqPos;
use prima::quant::GgmlType;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(r: &mut Rng, seeds: &[Vec<u8>], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&seeds[r.below(seeds.len())]);
    for _ in 0..1 + r.below(4) {
        let n = out.len();
        match r.below(7) {
            0 if n > 0 => {
                let i = r.below(n);
                out[i] ^= 1 << r.below(8);
            }
            1 if n > 0 => {
                let i = r.below(n);
                out[i] = [0, 1, 0x7f, 0x80, 0xff, 0xfe, 8, 9][r.below(8)];
            }
            2 if n > 0 => {
                // A boundary u32/u64 over a length or count field.
                let i = r.below(n);
                let v = [0u64, 1, 0xffff_ffff, u64::MAX, 1 << 31, 65535][r.below(6)].to_le_bytes();
                let w = if r.below(2) == 0 { 4 } else { 8 };
                for (k, b) in v[..w].iter().enumerate() {
                    if i + k < n {
                        out[i + k] = *b;
                    }
                }
            }
            3 => out.truncate(r.below(n + 1)),
            4 => {
                let i = r.below(n + 1);
                let b = r.next().to_le_bytes();
                out.splice(i..i, b[..1 + r.below(8)].iter().copied());
            }
            5 if n > 1 => {
                let (a, b) = (r.below(n), r.below(n));
                let (a, b) = (a.min(b), a.max(b));
                let piece = out[a..b].to_vec();
                let at = r.below(n + 1);
                out.splice(at..at, piece);
            }
            _ => {
                let other = &seeds[r.below(seeds.len())];
                if !other.is_empty() {
                    let at = r.below(out.len() + 1);
                    let from = r.below(other.len());
                    out.truncate(at);
                    out.extend_from_slice(&other[from..]);
                }
            }
        }
    }
}

fn iters() -> usize {
    std::env::var("PRIMA_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000)
}

/// Run `target` on mutations of `seeds`; returns the number of executions.
fn run(name: &str, seeds: &[Vec<u8>], mut target: impl FnMut(&[u8])) -> usize {
    let mut r = Rng(0x2545_f491_4f6c_dd1d ^ name.len() as u64);
    let mut input = Vec::new();
    let n = iters();
    for s in seeds {
        target(s);
    }
    for _ in 0..n {
        mutate(&mut r, seeds, &mut input);
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/fuzz-crash-{name}.bin"));
            let _ = std::fs::write(&p, &input);
            panic!("fuzz target {name} crashed; input saved to {}", p.display());
        }
    }
    eprintln!("fuzz {name}: {} executions, no crash", n + seeds.len());
    n + seeds.len()
}

fn small_gguf() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Value::Str("llama".into()));
    w.kv("llama.block_count", Value::U32(1));
    w.kv("tokenizer.ggml.tokens", Value::Array(prima::gguf::ValueType::Str, vec![Value::Str("a".into()); 3]));
    w.kv("tokenizer.ggml.scores", Value::Array(prima::gguf::ValueType::F32, vec![Value::F32(0.5); 3]));
    w.kv("x.bytes", Value::Array(prima::gguf::ValueType::U8, vec![Value::U8(7); 5]));
    w.kv(
        "x.nested",
        Value::Array(
            prima::gguf::ValueType::Array,
            vec![Value::Array(prima::gguf::ValueType::I32, vec![Value::I32(-1)])],
        ),
    );
    w.tensor("t.weight", &[32, 2], GgmlType::F32, vec![0u8; 256]);
    w.tensor("q.weight", &[32], GgmlType::Q4_0, vec![1u8; 18]);
    w.to_bytes()
}

#[test]
fn gguf_reader() {
    run("gguf", &[small_gguf()], |b| {
        if let Ok(f) = GgufFile::from_bytes(b.to_vec()) {
            for t in &f.tensors {
                let _ = f.tensor_data(t).len();
            }
        }
    });
}

#[test]
fn cluster_toml() {
    let seeds: Vec<Vec<u8>> = [
        include_str!("../../cluster.example.toml").to_string(),
        "model = \"m.gguf\"\nsecret_file = \"s\"\nctx_size = 99\nbatch_size = 3\ntimeout_secs = 1.5\nrounds = 2\n\
         [generate]\ntemperature = nan\ntop_p = 2.0\n\n[[device]]\nname = \"a\"\naddr = \"1.2.3.4:5\"\nwindow = 1\n\
         threads = 4\n\n[[device]]\nname = \"b\"\naddr = \"[::1]:7\"\nwindow = 3\n"
            .to_string(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    run("cluster_toml", &seeds, |b| {
        let _ = ClusterConfig::parse(&String::from_utf8_lossy(b), Path::new("/nonexistent/cluster.toml"));
    });
}

fn every_message() -> Vec<Msg> {
    let e = TensorEntry { name: "blk.0.attn_q.weight".into(), size: 4096, sha256: [3; 32], file_offset: 64 };
    vec![
        Msg::AuthInit { nonce: [1; 32] },
        Msg::AuthChallenge { nonce: [1; 32], mac: [2; 32] },
        Msg::AuthResponse { mac: [2; 32] },
        Msg::AuthOk,
        Msg::Hello,
        Msg::HelloReply { version: "0.1.0".into(), build_id: [9; 32], os: "linux".into(), arch: "x86_64".into() },
        Msg::ShipBegin { size: 1 << 20, sha256: [4; 32] },
        Msg::ShipChunk { data: vec![0x7f, b'E', b'L', b'F', 2, 1] },
        Msg::ShipEnd,
        Msg::Restarting,
        Msg::ProfileRequest { fresh: true },
        Msg::ProfileReply { json: "{\"name\":\"x\"}".into() },
        Msg::ModelCheck { model_id: "abc".into(), header: vec![b'G', b'G', b'U', b'F'], tensors: vec![e.clone(), e] },
        Msg::ModelStatus { have: vec![0, 4096, u64::MAX] },
        Msg::TensorChunk { index: 1, offset: 4096, data: vec![5; 64] },
        Msg::StreamEnd,
        Msg::Assign {
            session: 7,
            model_id: "abc".into(),
            windows: vec![(0, 2), (4, 6)],
            n_ctx: 4096,
            n_seq: 4,
            threads: 4,
            engine: EngineKind::Real,
            gpu_layers: 3,
        },
        Msg::Assigned { load_ms: 12 },
        Msg::Connect {
            next: Some("127.0.0.1:7701".into()),
            next_key: Some([3; 32]),
            prev_key: [4; 32],
            head_key: [5; 32],
        },
        Msg::RingReady,
        Msg::Stop,
        Msg::Stopped { stats: WorkerStats { decode_steps: 3, ..Default::default() } },
        Msg::RingJoin { session: 7, role: RingRole::Outbound },
        Msg::Activations {
            round: 1,
            rows: vec![SeqPos::new(0, 5), SeqPos::new(1, 2)],
            data: vec![0.5, -1.0, f32::NAN, 3.0],
        },
        Msg::Kv(KvOp::Truncate { seq: 1, len: 3 }),
        Msg::Kv(KvOp::Reset),
        Msg::Heartbeat,
        Msg::Error { msg: "no".into() },
        Msg::Down,
        Msg::DownReply { sessions: 2 },
    ]
}

#[test]
fn every_frame_type() {
    let seeds: Vec<Vec<u8>> = every_message().iter().map(encode).collect();
    run("frames", &seeds, |b| {
        let mut r = b;
        while let Ok(m) = read_frame(&mut r, MAX_FRAME, "fuzz") {
            let _ = m.name();
        }
    });
}

#[test]
fn handshake_and_records() {
    let secret = Secret::from_bytes(b"fuzz-secret-0123456789").unwrap();
    // Valid first and third messages of a real handshake, as seeds.
    let mut i = auth::initiator(&secret).unwrap();
    let mut r0 = auth::responder(&secret).unwrap();
    let (mut a, mut b) = ([0u8; 256], [0u8; 256]);
    let n1 = i.write_message(&[], &mut a).unwrap();
    let m1 = a[..n1].to_vec();
    r0.read_message(&m1, &mut b).unwrap();
    let n2 = r0.write_message(&[], &mut a).unwrap();
    i.read_message(&a[..n2], &mut b).unwrap();
    let n3 = i.write_message(&[], &mut a).unwrap();
    let m3 = a[..n3].to_vec();
    let seeds = vec![[m1.clone(), m3.clone()].concat(), m1.clone()];
    run("handshake", &seeds, |input| {
        // A responder fed whatever arrives: message 1, then message 3.
        let mut r = auth::responder(&secret).unwrap();
        let (first, rest) = input.split_at(input.len().min(m1.len()));
        let mut out = [0u8; 256];
        if r.read_message(first, &mut out).is_ok() && r.write_message(&[], &mut out).is_ok() {
            let _ = r.read_message(&rest[..rest.len().min(255)], &mut out);
        }
    });
    // Records: a real session's opener fed mutated sealed frames (each seed sealed as the
    // first record of its own session, so the unmutated seeds open).
    let pairs: Vec<_> = (0..4).map(|_| auth::in_memory_pair(&secret).unwrap()).collect();
    let seeds: Vec<Vec<u8>> = every_message()
        .iter()
        .zip(pairs.iter().cycle())
        .map(|(m, (tx, _))| {
            let mut w = Vec::new();
            Sealer::new(tx.clone()).seal(&encode(m)[..], &mut w);
            w[2..].to_vec()
        })
        .collect();
    let mut k = 0;
    run("records", &seeds, |rec| {
        k += 1;
        let mut out = Vec::new();
        let _ = Opener::new(pairs[k % pairs.len()].1.clone()).open(&rec[..rec.len().min(65535)], &mut out);
    });
}
