//! Sequences: several decoded together give, bit for bit, the logits (and so the greedy
//! tokens) each gives alone — on one device and through a ring of real agents, k = 1 and 2.
//!
//! The ring's agents run inside the test process (the same `agent::serve_on` over loopback
//! TCP): an agent process would be another build than this test binary, which as the head
//! would then ship itself to it.
//!
//! Exact equality needs kernels that compute an output row the same way whatever the batch
//! size; on CPUs where the four-row or tile kernels differ from the one-row kernel in
//! summation order, run these with `PRIMA_TILES=0 PRIMA_ROWS4=0`.

use prima::cluster::bootstrap::{UpOptions, up};
use prima::cluster::config::ClusterConfig;
use prima::cluster::messages::EngineKind;
use prima::model::{Batch, Model, Pipeline};
use prima::sampler::argmax;

use crate::cluster::{Scratch, deep_model, write_config};
use crate::common;

const PROMPTS: [&[u32]; 3] = [&[1, 415, 2001, 77, 9, 1500], &[1, 300, 12], &[1, 640, 1024, 5, 88, 17, 4, 902, 33]];
const N_GEN: usize = 6;

/// Per sequence: the generated tokens and the logits after the prompt and each fed token.
type Run = Vec<(Vec<u32>, Vec<Vec<f32>>)>;

/// Each prompt alone on a fresh one-sequence pipeline.
fn alone(m: &Model) -> Run {
    PROMPTS
        .iter()
        .map(|prompt| {
            let mut p = Pipeline::new(m, 64, 1).unwrap();
            let mut logits = vec![p.decode(prompt).unwrap().to_vec()];
            let mut tokens = vec![argmax(&logits[0])];
            while tokens.len() < N_GEN {
                logits.push(p.decode(&[*tokens.last().unwrap()]).unwrap().to_vec());
                tokens.push(argmax(logits.last().unwrap()));
            }
            (tokens, logits)
        })
        .collect()
}

/// All prompts on one pipeline, sequence `i` joining at step `i * stagger` (its prompt in the
/// same batch as the others' decode steps), each decoded step by step in shared batches.
fn together(p: &mut Pipeline, stagger: usize) -> Run {
    let n = PROMPTS.len();
    let mut out: Run = vec![(Vec::new(), Vec::new()); n];
    let mut step = 0;
    while out.iter().any(|(t, _)| t.len() < N_GEN) {
        let mut b = Batch::new();
        let mut members = Vec::new();
        for (i, (tokens, _)) in out.iter().enumerate() {
            let seq = i as u32;
            if step == i * stagger {
                b.push_sequence(seq, p.seq_pos(seq), PROMPTS[i]);
            } else if step > i * stagger && tokens.len() < N_GEN {
                b.push(*tokens.last().unwrap(), seq, p.seq_pos(seq), true);
            } else {
                continue;
            }
            members.push(i);
        }
        let v = p.n_vocab();
        let logits = p.decode_batch(&b).unwrap();
        assert_eq!(logits.len(), members.len() * v);
        for (row, &i) in logits.chunks_exact(v).zip(&members) {
            out[i].1.push(row.to_vec());
            out[i].0.push(argmax(row));
        }
        step += 1;
    }
    out
}

fn assert_same(what: &str, got: &Run, want: &Run) {
    for (i, ((gt, gl), (wt, wl))) in got.iter().zip(want).enumerate() {
        assert_eq!(gt, wt, "{what}: sequence {i} tokens");
        for (step, (g, w)) in gl.iter().zip(wl).enumerate() {
            let diff = g.iter().zip(w).position(|(a, b)| a.to_bits() != b.to_bits());
            assert!(diff.is_none(), "{what}: sequence {i} step {step}: logit {diff:?} differs");
        }
    }
}

#[test]
fn sequences_together_equal_each_alone_on_one_device() {
    for fixture in ["c-llama-q4_k_m.gguf", "c-qwen2-q4_k_m.gguf"] {
        let m = Model::open(common::model(fixture)).unwrap();
        let want = alone(&m);
        let n_layer = m.config.n_layer;
        for sizes in [vec![n_layer], vec![1, n_layer - 1]] {
            for stagger in [0, 2] {
                let mut p = Pipeline::open(&m, 64, 3, 1, &sizes).unwrap();
                let got = together(&mut p, stagger);
                assert_same(&format!("{fixture} windows {sizes:?} stagger {stagger}"), &got, &want);
                // A cleared slot serves a new sequence as if fresh; the others are untouched.
                p.seq_clear(1).unwrap();
                assert_eq!((p.seq_pos(0), p.seq_pos(1)), (PROMPTS[0].len() + N_GEN - 1, 0));
                let again = p.decode_batch(&{
                    let mut b = Batch::new();
                    b.push_sequence(1, 0, PROMPTS[1]);
                    b
                });
                assert_eq!(again.unwrap(), &want[1].1[0][..], "{fixture}: reused slot");
            }
        }
    }
}

#[test]
fn batch_positions_are_checked() {
    let m = Model::open(common::model("c-llama-q4_k_m.gguf")).unwrap();
    let mut p = Pipeline::open(&m, 8, 2, 1, &[m.config.n_layer]).unwrap();
    let bad = |rows: &[(u32, u32, usize)]| {
        let mut b = Batch::new();
        for &(t, s, pos) in rows {
            b.push(t, s, pos, true);
        }
        b
    };
    for (rows, why) in [
        (vec![(1, 0, 1)], "a gap before the first position"),
        (vec![(1, 0, 0), (2, 0, 2)], "a gap inside a sequence"),
        (vec![(1, 2, 0)], "a sequence beyond n_seq"),
        (vec![(1, 0, 8)], "a position beyond the context"),
        (vec![(999_999, 0, 0)], "a token outside the vocabulary"),
    ] {
        assert!(p.decode_batch(&bad(&rows)).is_err(), "{why} accepted");
        assert_eq!((p.seq_pos(0), p.seq_pos(1)), (0, 0), "{why}: state changed");
    }
    assert!(p.decode_batch(&Batch::new()).is_err());
    assert!(p.seq_truncate(2, 0).is_err());
    p.decode_batch(&bad(&[(1, 1, 0), (2, 0, 0), (3, 1, 1)])).unwrap();
    assert_eq!((p.seq_pos(0), p.seq_pos(1)), (1, 2));
}

/// An agent serving on a thread of this process; its address.
fn agent_thread(dir: &Scratch, name: &str) -> String {
    use prima::cluster::agent::{AgentOptions, serve_on};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let opts = AgentOptions {
        listen: addr.clone(),
        secret: prima::cluster::auth::Secret::load(&dir.path("cluster.secret")).unwrap(),
        cache_dir: dir.path(&format!("{name}.cache")),
        timeouts: prima::cluster::transport::Timeouts { io: std::time::Duration::from_secs(3), ..Default::default() },
        allow_downgrade: false,
    };
    std::thread::spawn(move || serve_on(listener, opts));
    addr
}

#[test]
fn sequences_together_through_a_ring_equal_each_alone() {
    let dir = Scratch::new("seqs");
    let (a1, a2) = (agent_thread(&dir, "a1"), agent_thread(&dir, "a2"));
    let model = deep_model(&dir, "c-llama-q4_k_m.gguf", 6);
    let want = alone(&Model::open(&model).unwrap());
    for (k, w) in [(1, [1, 3, 2]), (2, [1, 1, 1])] {
        let cfg = write_config(
            &dir,
            &format!("seqs-{k}.toml"),
            &model,
            Some(k),
            &[("head", "127.0.0.1:1", Some(w[0])), ("second", &a1, Some(w[1])), ("third", &a2, Some(w[2]))],
        );
        let cfg = ClusterConfig::load(&cfg).unwrap();
        let opts = UpOptions { engine: EngineKind::Real, hash_memo: None, verbose: false, n_seq: 3 };
        let (mut ring, _) = up(&cfg, &opts).unwrap();
        for stagger in [0, 1] {
            let got = together(ring.pipeline(), stagger);
            assert_same(&format!("ring k={k} windows {w:?} stagger {stagger}"), &got, &want);
            ring.pipeline().reset().unwrap();
        }
        // Clearing one sequence on every device, then reusing its slot.
        let p = ring.pipeline();
        let mut b = Batch::new();
        b.push_sequence(0, 0, PROMPTS[0]);
        b.push_sequence(2, 0, PROMPTS[2]);
        p.decode_batch(&b).unwrap();
        p.seq_clear(0).unwrap();
        let mut b = Batch::new();
        b.push_sequence(0, 0, PROMPTS[1]);
        assert_eq!(p.decode_batch(&b).unwrap(), &want[1].1[0][..], "ring k={k}: reused slot");
        ring.stop().unwrap();
    }
}

/// Replaying a sequence's history in one batch (how a ring rebuilds its KV state after losing a
/// device) builds the KV state its decode steps built: the next token's logits are bit-equal,
/// whatever the chunk size of the replay.
#[test]
fn replayed_history_equals_the_decode_steps_that_built_it() {
    let models = [common::model("c-llama-q4_k_m.gguf"), common::model("c-qwen2-q4_k_m.gguf"), crate::model::smollm2()];
    for path in models {
        let m = Model::open(&path).unwrap();
        let mut p = Pipeline::new(&m, 64, 1).unwrap();
        let mut history = PROMPTS[2].to_vec();
        let mut next = argmax(p.decode(PROMPTS[2]).unwrap());
        for _ in 0..12 {
            history.push(next);
            next = argmax(p.decode(&[next]).unwrap());
        }
        let stepped = p.decode(&[next]).unwrap().to_vec();
        for n_batch in [512, 5, 1] {
            let mut q = Pipeline::new(&m, 64, 1).unwrap();
            q.set_batch(n_batch);
            q.decode(&history).unwrap();
            let replayed = q.decode(&[next]).unwrap();
            let diff = replayed.iter().zip(&stepped).position(|(a, b)| a.to_bits() != b.to_bits());
            assert!(diff.is_none(), "{}: replay in chunks of {n_batch}: logit {diff:?} differs", path.display());
        }
    }
}
