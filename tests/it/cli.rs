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
    let o = prima(&["run", "-m", model.to_str().unwrap(), "-p", case["prompt"].as_str().unwrap(), "-n", "16", "--temp", "0", "--ignore-eos", "-c", "64"]);
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
    let prompts: Vec<usize> = err
        .match_indices("[prompt: ")
        .map(|(i, _)| err[i + 9..].split(' ').next().unwrap().parse().unwrap())
        .collect();
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
        (vec!["run".into(), "-m".into(), common::fixtures().join("vocab/c-2048.vocab-only.gguf").to_str().unwrap().into(), "-p".into(), "x".into()], "missing"),
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
