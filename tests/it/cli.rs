//! The command line as users meet it: output on stdout only, errors in plain words.

use std::process::Command;

use crate::common;

const BIN: &str = env!("CARGO_BIN_EXE_prima");

fn prima(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("running prima")
}

#[test]
fn inspect_output() {
    let f = prima::gguf::GgufFile::open(common::model("c-qwen2-q4_k_m.gguf")).unwrap();
    let text = prima::cli::inspect::render(&f, true);
    insta::with_settings!({ snapshot_path => "../../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("inspect_c_qwen2_q4_k_m", text);
    });
}

#[test]
fn run_prints_only_the_greedy_continuation() {
    let g = common::golden("c-llama-f32.golden.json");
    let case = &g["cases"][0];
    let model = common::model("c-llama-f32.gguf");
    let o = prima(&[
        "run",
        "-m",
        model.to_str().unwrap(),
        "-p",
        case["prompt"].as_str().unwrap(),
        "-n",
        "16",
        "--temp",
        "0",
        "--ignore-eos",
        "-c",
        "64",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = prima::gguf::GgufFile::open(&model).unwrap();
    let tok = prima::tokenizer::Tokenizer::from_gguf(&f).unwrap();
    let ids: Vec<u32> = case["greedy_tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let want = tok.decode(&ids, false) + "\n";
    assert_eq!(String::from_utf8_lossy(&o.stdout), want);
    assert!(String::from_utf8_lossy(&o.stderr).contains("ms/token"));
}

#[test]
fn chat_answers_each_turn() {
    use std::io::Write;
    let model = common::model("c-qwen2-q4_k_m.gguf");
    let mut child = Command::new(BIN)
        .args(["chat", "-m", model.to_str().unwrap(), "--temp", "0", "-n", "8", "-c", "256"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Hello\nWhat is 2+2?\n/exit\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    let prompts: Vec<usize> =
        err.match_indices("[prompt: ").map(|(i, _)| err[i + 9..].split(' ').next().unwrap().parse().unwrap()).collect();
    assert_eq!(prompts.len(), 2, "two turns expected: {err}");
    // The second turn reuses the cached prefix: it evaluates fewer tokens than the first
    // turn's prompt and reply, though its conversation contains them.
    assert!(prompts[1] < prompts[0], "{prompts:?}");
    // Each reply ends with a newline on stdout (the random model's words may be anything).
    assert!(String::from_utf8_lossy(&o.stdout).matches('\n').count() >= 2);
}

#[test]
fn bad_inputs_give_plain_errors() {
    let dir = std::env::temp_dir().join(format!("prima-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.gguf");
    std::fs::write(&junk, b"GGUF\x03\x00\x00\x00\xff\xff").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["run".into(), "-m".into(), "/nonexistent.gguf".into(), "-p".into(), "x".into()], "/nonexistent.gguf"),
        (vec!["inspect".into(), junk.to_str().unwrap().into()], "truncated GGUF"),
        (
            vec![
                "run".into(),
                "-m".into(),
                common::fixtures().join("vocab/c-2048.vocab-only.gguf").to_str().unwrap().into(),
                "-p".into(),
                "x".into(),
            ],
            "missing",
        ),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = prima(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.starts_with("error: ") && err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("prima-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `prima tokenize`: the ids of llama.cpp's golden for the same text, as a list and as a table.
#[test]
fn tokenize_prints_the_golden_ids() {
    let g = common::golden("smollm2-135m.vocab-only.tokenizer.json");
    let vocab = common::fixtures().join("vocab").join(g["vocab_file"].as_str().unwrap());
    let case = g["cases"].as_array().unwrap().iter().find(|c| c["text"].as_str().unwrap().len() > 10).unwrap();
    let text = case["text"].as_str().unwrap();
    let want: Vec<u64> = case["tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    let out = ok(&prima(&["tokenize", "-m", vocab.to_str().unwrap(), "--ids", "--no-bos", text]));
    assert_eq!(out.trim(), format!("{want:?}"));
    let table = ok(&prima(&["tokenize", "-m", vocab.to_str().unwrap(), "--no-bos", text]));
    let ids: Vec<u64> = table.lines().map(|l| l.split(" -> ").next().unwrap().trim().parse().unwrap()).collect();
    assert_eq!(ids, want);
    let pieces: String = table.lines().map(|l| l.split(" -> ").nth(1).unwrap().trim_matches('"').to_string()).collect();
    assert!(pieces.replace("\\n", "\n").contains(text.split_whitespace().next().unwrap()), "{table}");
}

/// `prima perplexity` on SmolLM2 prints llama-perplexity's final estimate within 1%.
#[test]
fn perplexity_prints_llama_perplexity_estimate() {
    let g = common::golden("smollm2-135m-q4_1.perplexity.json");
    let model = crate::model::smollm2();
    let text = common::fixtures().join("calibration.txt");
    let out = ok(&prima(&["perplexity", "-m", model.to_str().unwrap(), "-f", text.to_str().unwrap(), "-c", "128"]));
    let ppl: f64 = out
        .strip_prefix("Final estimate: PPL = ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{out}"))
        .parse()
        .unwrap();
    let want = g["final_estimate"]["ppl"].as_f64().unwrap();
    assert!((ppl / want - 1.0).abs() < 0.01, "PPL {ppl} vs llama-perplexity {want}");
}

/// `prima bench -m --json`: llama-bench's JSON, each figure consistent with its own samples.
#[test]
fn bench_json_is_consistent_with_its_samples() {
    let model = common::model("c-llama-pure-q4_0.gguf");
    let out =
        ok(&prima(&["bench", "-m", model.to_str().unwrap(), "-p", "8", "-n", "4", "-r", "2", "-t", "1", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let runs = v.as_array().unwrap();
    assert_eq!(runs.len(), 2, "{out}");
    let tensor_bytes: u64 = {
        let f = prima::gguf::GgufFile::open(&model).unwrap();
        f.tensors.iter().map(|t| t.size).sum()
    };
    for (r, (n_prompt, n_gen)) in runs.iter().zip([(8, 0), (0, 4)]) {
        assert_eq!((r["n_prompt"].as_u64().unwrap(), r["n_gen"].as_u64().unwrap()), (n_prompt, n_gen), "{r}");
        assert_eq!(r["model_size"].as_u64().unwrap(), tensor_bytes);
        let ns: Vec<f64> = r["samples_ns"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let ts: Vec<f64> = r["samples_ts"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(ns.len(), 2);
        let tokens = (n_prompt + n_gen) as f64;
        for (n, t) in ns.iter().zip(&ts) {
            assert!((t - tokens * 1e9 / n).abs() <= 1e-3 * t, "{t} tok/s vs {n} ns for {tokens} tokens");
        }
        let mean_ns = ns.iter().sum::<f64>() / 2.0;
        assert!((r["avg_ns"].as_f64().unwrap() - mean_ns).abs() <= 1.0, "{r}");
        let mean_ts = ts.iter().sum::<f64>() / 2.0;
        assert!((r["avg_ts"].as_f64().unwrap() - mean_ts).abs() <= 1e-3 * mean_ts, "{r}");
    }
}

/// `prima bench --profile --json` writes a profile `prima plan --profiles` reads; the plan gives
/// every layer of the model to the devices, and the faster profile gets at least as many layers.
#[test]
fn bench_profile_json_feeds_plan() {
    let dir = scratch("plan");
    let profiles = dir.join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    let a = profiles.join("a.json");
    let out = ok(&prima(&[
        "bench",
        "--profile",
        "--json",
        "--formats",
        "q4_K",
        "-t",
        "1",
        "--disk-dir",
        dir.to_str().unwrap(),
        "-o",
        a.to_str().unwrap(),
    ]));
    let printed: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&a).unwrap()).unwrap();
    assert_eq!(printed, written);
    // A second device: the same machine under another name.
    let mut b = written.clone();
    let name = b.as_object().unwrap().keys().find(|k| *k == "name").cloned();
    if let Some(k) = name {
        b[k] = serde_json::Value::String("b".into());
    }
    std::fs::write(profiles.join("b.json"), b.to_string()).unwrap();
    let plan = ok(&prima(&["plan", "--profiles", profiles.to_str().unwrap(), "-m", "llama3-8b", "-c", "1024"]));
    let first = plan.lines().next().unwrap();
    assert!(first.contains("32 layers") && first.contains("context 1024"), "{plan}");
    // The header's windows cover the 32 layers `k` times over.
    let k: u32 = first.split("k = ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    let windows: u32 = first.rsplit(' ').next().unwrap().split(':').map(|w| w.parse::<u32>().unwrap()).sum();
    assert_eq!(windows * k, 32, "{plan}");
    assert!(plan.contains("predicted:"), "{plan}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `prima synth` writes a model of the named shape (1 layer, IQ1_S: about 200 MB) that reads back.
#[test]
fn synth_writes_the_named_shape() {
    let dir = scratch("synth");
    let out = dir.join("s.gguf");
    let vocab = common::fixtures().join("vocab/c-2048.vocab-only.gguf");
    ok(&prima(&[
        "synth",
        "--shape",
        "llama3-8b",
        "--mix",
        "iq1_s",
        "--layers",
        "1",
        "--vocab-from",
        vocab.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]));
    let f = prima::gguf::GgufFile::open(&out).unwrap();
    assert_eq!(f.get_u64("llama.block_count"), Some(1));
    assert_eq!(f.get_u64("llama.embedding_length"), Some(4096));
    assert_eq!(f.tensor("blk.0.attn_q.weight").map(|t| t.ty), Some(prima::quant::GgmlType::IQ1_S));
    assert!(f.tensor("blk.1.attn_q.weight").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `prima fetch` on a folder that holds the demo model prints its path and re-downloads nothing.
#[test]
fn fetch_prints_the_cached_model() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let path = crate::model::smollm2();
    let out = ok(&prima(&["fetch", dir.to_str().unwrap()]));
    assert_eq!(out.trim(), path.to_str().unwrap());
}

/// The demo model in models/ has the SHA-256 `prima fetch` checks downloads against.
#[test]
fn demo_model_has_the_pinned_sha256() {
    let path = crate::model::smollm2();
    assert_eq!(prima::fetch::sha256_file(&path).unwrap(), prima::fetch::SMOLLM2_SHA256);
}

/// `prima up --local-agents` ended by SIGTERM (no destructor runs): the agents it started
/// follow it instead of staying up on their ports.
#[test]
fn local_agents_exit_with_a_terminated_head() {
    use std::io::{BufRead, BufReader};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};
    let dir = scratch("local-agents");
    let port = || TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (p1, p2) = (port(), port());
    std::fs::write(dir.join("s.secret"), "local agents test secret 0123456789").unwrap();
    let model = crate::model::smollm2();
    let toml = format!(
        "model = {model:?}\nsecret_file = \"s.secret\"\nschedule = \"even\"\nctx_size = 2048\n\
         [[device]]\nname = \"head\"\naddr = \"127.0.0.1:0\"\n\
         [[device]]\nname = \"a1\"\naddr = \"127.0.0.1:{p1}\"\n\
         [[device]]\nname = \"a2\"\naddr = \"127.0.0.1:{p2}\"\n"
    );
    std::fs::write(dir.join("c.toml"), toml).unwrap();
    let mut head = Command::new(BIN)
        .args(["up", "--local-agents", "-n", "100000", "--ignore-eos", "--temp", "0", "-p", "Once"])
        .arg(dir.join("c.toml"))
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(head.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("ring ready") {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "prima up ended before the ring formed:\n{seen}");
        seen += &line;
    }
    let listening = |p: u16| TcpStream::connect(("127.0.0.1", p)).is_ok();
    assert!(listening(p1) && listening(p2));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(head.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    head.wait().unwrap();
    let t0 = Instant::now();
    while listening(p1) || listening(p2) {
        assert!(t0.elapsed() < Duration::from_secs(10), "local agents still listening after the head was terminated");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
