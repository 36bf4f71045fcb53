//! The GPU kernels and the GPU window against the CPU, on whatever adapter exists (Mesa's
//! lavapipe in CI: tests/run.sh installs it). Without an adapter each test prints a visible
//! SKIPPED line, and fails under CI=true.
#![cfg(feature = "gpu")]

use std::sync::{Arc, OnceLock};

use prima::cpu::ops::{self, HeadCache, Rope};
use prima::cpu::pool::ThreadPool;
use prima::gpu::kernels::{FORMATS, Op};
use prima::gpu::{Gpu, GpuWindow, oneshot};
use prima::model::config::RopeStyle;
use prima::model::{Head, LayerWindow, Model, SeqPos, Window};
use prima::quant::{self, GgmlType};

use crate::common;

fn gpu() -> Option<Arc<Gpu>> {
    static GPU: OnceLock<Result<Arc<Gpu>, String>> = OnceLock::new();
    let opened = GPU.get_or_init(|| {
        let g = Gpu::open().map(Arc::new).map_err(|e| e.to_string());
        if let Ok(g) = &g {
            eprintln!("GPU tests on {}", g.name());
        }
        g
    });
    match opened {
        Ok(g) => Some(g.clone()),
        Err(e) => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but no GPU adapter: {e}");
            eprintln!("SKIPPED: no GPU adapter ({e}); install mesa-vulkan-drivers for lavapipe");
            None
        }
    }
}

/// Deterministic values in [-1, 1).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Every weight matrix of every fixture format through the decode (1 token) and prefill (5
/// tokens) kernels, against the scalar dequantization × f64 dot. The error bound is relative
/// to Σ|w·x| of the row (f32 accumulation order differs): measured worst 6.3e-8 on lavapipe, bound 1e-5.
#[test]
fn matmul_every_fixture_format_matches_the_scalar_reference() {
    let Some(g) = gpu() else { return };
    let mut seen = std::collections::BTreeSet::new();
    let mut worst = 0f64;
    let dir = common::fixtures().join("models");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    for path in names.iter().filter(|p| p.extension().is_some_and(|e| e == "gguf")) {
        let Ok(f) = prima::gguf::GgufFile::open(path) else { continue };
        for t in f.tensors.iter().filter(|t| t.dims.len() == 2 && t.name.starts_with("blk.0.")) {
            if !FORMATS.contains(&t.ty) {
                let e = oneshot::matmul(&g, t.ty, &[], 0, 32, &[], 0, 1).unwrap_err().to_string();
                assert!(e.contains(&t.ty.to_string()), "{}: {e}", t.name);
                continue;
            }
            if !seen.insert((t.ty, t.row_len())) {
                continue;
            }
            let (rows, cols) = (t.n_rows(), t.row_len());
            let w = f.tensor_data(t);
            let row_bytes = t.ty.row_bytes(cols).unwrap();
            let mut deq = vec![0f32; cols];
            for n in [1usize, 5] {
                let x = noise(n * cols, rows as u64 + n as u64);
                let y = oneshot::matmul(&g, t.ty, w, rows, cols, &x, n, 1).unwrap();
                for r in 0..rows {
                    quant::dequantize_row(t.ty, &w[r * row_bytes..(r + 1) * row_bytes], &mut deq);
                    for tk in 0..n {
                        let xs = &x[tk * cols..(tk + 1) * cols];
                        let want: f64 = deq.iter().zip(xs).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let scale: f64 = deq.iter().zip(xs).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
                        let err = (y[tk * rows + r] as f64 - want).abs() / scale.max(1e-30);
                        worst = worst.max(err);
                        assert!(
                            err < 1e-5,
                            "{} {} row {r} token {tk}: {} vs {want}",
                            path.display(),
                            t.ty,
                            y[tk * rows + r]
                        );
                    }
                }
            }
        }
    }
    let tys: std::collections::BTreeSet<GgmlType> = seen.iter().map(|s| s.0).collect();
    eprintln!("GPU matmul checked for {tys:?}; worst relative error {worst:.2e}");
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K] {
        assert!(tys.contains(&ty), "no fixture exercised {ty}");
    }
}

fn close(name: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{name}[{i}]: GPU {a} vs CPU {b}");
    }
}

#[test]
fn rms_norm_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let (dim, n) = (200, 3);
    let mut x = noise(dim * n, 1);
    let wt = noise(dim, 2);
    let mut out = vec![0f32; dim * n];
    let eps = 1e-5f32;
    oneshot::op(
        &g,
        Op::RmsNorm,
        &[dim as u32, eps.to_bits(), 0, 0],
        n,
        0,
        &mut [&mut x.clone()[..], &mut wt.clone()[..], &mut out[..]],
        (n as u32, 1, 1),
    )
    .unwrap();
    ops::rms_norm(&mut x, &wt, eps);
    close("rms_norm", &out, &x, 1e-5);
}

#[test]
fn rope_normal_and_neox_with_freq_factors_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let (head_dim, heads, n, pos) = (16usize, 3usize, 4usize, 5usize);
    for style in [RopeStyle::Normal, RopeStyle::Neox] {
        for factors in [None, Some(noise(6, 9).iter().map(|v| 1.5 + v).collect::<Vec<_>>())] {
            // Rotate 12 of 16 dimensions: partial rotary as some models use.
            let rope = Rope::new(12, 10000.0, 1.0, style, factors.clone());
            let half = 6;
            let mut table = Vec::new();
            let mut cs = vec![(0f32, 0f32); half];
            for t in 0..n {
                rope.table(pos + t, &mut cs);
                table.extend(cs.iter().flat_map(|&(c, s)| [c, s]));
            }
            let mut x = noise(n * heads * head_dim, 3);
            let mut gx = x.clone();
            let st = if style == RopeStyle::Neox { 1 } else { 0 };
            let wgs = (n * heads * half).div_ceil(64) as u32;
            oneshot::op(
                &g,
                Op::Rope,
                &[head_dim as u32, heads as u32, half as u32, st],
                n,
                pos,
                &mut [&mut table[..], &mut gx[..]],
                (wgs, 1, 1),
            )
            .unwrap();
            let mut cs_t = vec![(0f32, 0f32); half];
            for t in 0..n {
                rope.table(pos + t, &mut cs_t);
                rope.apply(&mut x[t * heads * head_dim..(t + 1) * heads * head_dim], head_dim, &cs_t);
            }
            close(&format!("rope {style:?} factors {}", factors.is_some()), &gx, &x, 1e-6);
        }
    }
}

/// Grouped-query attention of new tokens over a cache longer than one 256-position chunk.
#[test]
fn attention_over_the_cache_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let (n_head, n_kv, hk, hv) = (4usize, 2usize, 32usize, 32usize);
    let (n, pos) = (3usize, 300usize);
    let total = pos + n;
    let (kd, vd) = (n_kv * hk, n_kv * hv);
    let q = noise(n * n_head * hk, 4);
    let keys = noise(total * kd, 5);
    let values = noise(total * vd, 6);
    let scale = 1.0 / (hk as f32).sqrt();
    let mut out = vec![0f32; n * n_head * hv];
    let shape = [n_head as u32, (n_head / n_kv) as u32, hk as u32, hv as u32, kd as u32, vd as u32, scale.to_bits(), 0];
    oneshot::op(
        &g,
        Op::Attention,
        &shape,
        n,
        pos,
        &mut [&mut q.clone()[..], &mut keys.clone()[..], &mut values.clone()[..], &mut out[..]],
        (n_head as u32, n as u32, 1),
    )
    .unwrap();
    let mut want = vec![0f32; out.len()];
    let mut scores = vec![0f32; total];
    for t in 0..n {
        for h in 0..n_head {
            let gi = h / (n_head / n_kv);
            let cache = HeadCache {
                keys: &keys[gi * hk..],
                kstride: kd,
                values: &values[gi * hv..],
                vstride: vd,
                seen: pos + t + 1,
            };
            let o = &mut want[(t * n_head + h) * hv..][..hv];
            ops::attend(&q[(t * n_head + h) * hk..][..hk], &cache, scale, &mut scores, o);
        }
    }
    close("attention", &out, &want, 1e-5);
}

#[test]
fn silu_mul_and_add_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let (width, n) = (100usize, 3usize);
    let wgs = (width * n).div_ceil(64) as u32;
    let mut gate = noise(width * n, 7).iter().map(|v| v * 8.0).collect::<Vec<_>>();
    let up = noise(width * n, 8);
    let mut gg = gate.clone();
    oneshot::op(&g, Op::SiluMul, &[width as u32, 0, 0, 0], n, 0, &mut [&mut gg[..], &mut up.clone()[..]], (wgs, 1, 1))
        .unwrap();
    ops::silu_mul(&mut gate, &up);
    close("silu_mul", &gg, &gate, 1e-6);
    // A full operand, then a bias repeated per row.
    for y_len in [0usize, width] {
        let mut x = noise(width * n, 9);
        let y = noise(if y_len == 0 { width * n } else { width }, 10);
        let mut gx = x.clone();
        oneshot::op(
            &g,
            Op::Add,
            &[width as u32, y_len as u32, 0, 0],
            n,
            0,
            &mut [&mut gx[..], &mut y.clone()[..]],
            (wgs, 1, 1),
        )
        .unwrap();
        if y_len == 0 {
            ops::add_in_place(&mut x, &y);
        } else {
            ops::add_bias(&mut x, &y);
        }
        close("add", &gx, &x, 0.0);
    }
}

/// The whole model with every layer on the GPU against the CPU window: a 7-token prefill then
/// 3 decode steps, logits compared relative to the largest logit of each step. The CPU runs the
/// dequantized model (F32 weights × f32 activations, what the GPU kernels compute), so the
/// difference is float summation order only. Returns the worst relative difference.
fn window_vs_cpu(g: Arc<Gpu>, path: &std::path::Path, tol: f32) -> f32 {
    window_vs_cpu_with(g, path, tol, prima::gpu::DEFAULT_MAX_BATCH, None)
}

fn window_vs_cpu_with(g: Arc<Gpu>, path: &std::path::Path, tol: f32, max_batch: usize, max_part: Option<u64>) -> f32 {
    let m = Model::open(path).unwrap();
    let reference = m.dequantized().unwrap();
    let c = m.config.clone();
    let pool = Arc::new(ThreadPool::new(2));
    let n_ctx = 64;
    let mut cpu = LayerWindow::new(&reference, 0..c.n_layer, n_ctx, 1, pool.clone()).unwrap();
    let mut gpu = GpuWindow::with_options(g, &m, 0..c.n_layer, n_ctx, max_batch, max_part).unwrap();
    let mut head = Head::new(&reference, pool).unwrap();
    let prompt: Vec<u32> = (0..7).map(|i| (i * 37 + 11) % c.n_vocab as u32).collect();
    let mut worst = 0f32;
    let mut pos = 0;
    let mut tokens = prompt.clone();
    for step in 0..4 {
        let n = tokens.len();
        let mut h = vec![0f32; n * c.n_embd];
        head.embed(&tokens, &mut h).unwrap();
        let mut hg = h.clone();
        let rows: Vec<SeqPos> = (pos..pos + n).map(|p| SeqPos::new(0, p)).collect();
        Window::forward(&mut cpu, &rows, &mut h).unwrap();
        gpu.forward(&mut hg, n, pos).unwrap();
        let mut lc = vec![0f32; n * c.n_vocab];
        let mut lg = lc.clone();
        head.logits_batch(&h, &mut lc);
        head.logits_batch(&hg, &mut lg);
        for (rc, rg) in lc.chunks(c.n_vocab).zip(lg.chunks(c.n_vocab)) {
            let top = rc.iter().fold(0f32, |a, v| a.max(v.abs()));
            let diff = rc.iter().zip(rg).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            worst = worst.max(diff / top);
        }
        assert!(worst < tol, "{} step {step}: logits differ by {worst} of the largest", path.display());
        pos += n;
        // Greedy next token from the CPU's logits, fed to both.
        let last = &lc[(n - 1) * c.n_vocab..];
        let next = last.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0;
        tokens = vec![next as u32];
    }
    assert_eq!(gpu.kv_len(), pos);
    worst
}

#[test]
fn window_on_the_gpu_matches_the_cpu_on_fixtures() {
    let Some(g) = gpu() else { return };
    // Normal and neox rope, q/k/v biases (qwen2), head size 128, the formats of the mixes.
    for name in [
        "c-llama-f32.gguf",
        "c-llama-f16.gguf",
        "c-llama-hd128-q4_k_m.gguf",
        "c-qwen2-f32.gguf",
        "c-llama-q4_k_m.gguf",
        "c-qwen2-q4_k_m.gguf",
        "c-llama-pure-q8_0.gguf",
        "c-llama-pure-iq4_xs.gguf",
    ] {
        // Measured on lavapipe: 4.5e-7 .. 7.4e-7.
        let worst = window_vs_cpu(g.clone(), &common::model(name), 1e-5);
        eprintln!("{name}: logits within {worst:.2e} of the largest");
    }
}

/// Tensors split into many parts (1 KiB bindings: every matrix has several row ranges at
/// aligned arena offsets) and the 7-token prompt run as chunks of 3, 3 and 1 tokens.
#[test]
fn window_with_split_tensors_and_chunked_prefill_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    for name in ["c-llama-pure-q4_0.gguf", "c-qwen2-q4_k_m.gguf"] {
        let worst = window_vs_cpu_with(g.clone(), &common::model(name), 1e-5, 3, Some(1024));
        eprintln!("{name} split and chunked: logits within {worst:.2e} of the largest");
    }
}

#[test]
fn window_on_the_gpu_matches_the_cpu_on_smollm2() {
    let Some(g) = gpu() else { return };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!("SKIPPED: {} is missing (prima fetch models)", path.display());
        return;
    }
    let worst = window_vs_cpu(g, &path, 1e-3);
    eprintln!("SmolLM2-135M Q4_1: logits within {worst:.2e} of the largest");
}

#[test]
fn a_format_without_a_kernel_is_named() {
    let Some(g) = gpu() else { return };
    let m = Model::open(common::model("c-llama-pure-iq2_xxs.gguf")).unwrap();
    let Err(e) = GpuWindow::new(g, &m, 0..1, 16) else { panic!("IQ2_XXS loaded on the GPU") };
    assert!(e.to_string().contains("IQ2_XXS"), "{e}");
}
