//! llama-bench-style throughput: prompt processing (pp) and token generation (tg) on one
//! device, mean ± standard deviation over repetitions, as a table or llama-bench's JSON.

use std::fmt::Write;
use std::time::Instant;

use crate::error::Result;
use crate::gpu::Offload;
use crate::model::Model;
use crate::sampler::Rng;

#[derive(Clone, Debug)]
pub struct BenchParams {
    pub n_prompt: usize,
    pub n_gen: usize,
    pub threads: usize,
    pub reps: usize,
    /// The last layers run on the GPU (`-ngl`).
    pub gpu_layers: usize,
}

#[derive(Clone, Debug)]
pub struct BenchResult {
    pub model_filename: String,
    pub model_type: String,
    pub model_size: u64,
    pub model_n_params: u64,
    pub n_threads: usize,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub n_batch: usize,
    pub samples_ns: Vec<u64>,
    pub kernels: String,
    /// Layers run on the GPU and its name ("" for none).
    pub n_gpu_layers: usize,
    pub gpu_info: String,
    /// Weight bytes one generated token reads (every matrix once; the embedding table only
    /// when the output projection is tied to it).
    pub weight_bytes_per_token: u64,
}

impl BenchResult {
    fn n_tokens(&self) -> usize {
        self.n_prompt + self.n_gen
    }
    pub fn samples_ts(&self) -> Vec<f64> {
        self.samples_ns.iter().map(|&ns| self.n_tokens() as f64 * 1e9 / ns as f64).collect()
    }
    pub fn avg_ts(&self) -> f64 {
        mean(&self.samples_ts())
    }
    pub fn stddev_ts(&self) -> f64 {
        stddev(&self.samples_ts())
    }
    pub fn test_name(&self) -> String {
        if self.n_gen == 0 { format!("pp{}", self.n_prompt) } else { format!("tg{}", self.n_gen) }
    }
}

pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
}

pub fn stddev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// "llama 135M Q4_1"-style description, like llama.cpp's `llama_model_desc`.
pub fn model_type(m: &Model) -> String {
    let params: u64 = m.gguf.tensors.iter().map(|t| t.n_elements()).sum();
    let size = if params >= 1_000_000_000 {
        format!("{:.0}B", params as f64 / 1e9)
    } else {
        format!("{:.0}M", params as f64 / 1e6)
    };
    format!("{} {size} {}", m.config.arch_name, crate::model::file_type_name(m))
}

/// Bytes of weights a decode step streams: all tensors except the token embedding, which is
/// read one row per token unless it doubles as the output projection.
pub fn weight_bytes_per_token(m: &Model) -> u64 {
    use crate::model::tensor_names::{OUTPUT, TOKEN_EMBD};
    let tied = m.gguf.tensor(OUTPUT).is_none();
    m.gguf.tensors.iter().filter(|t| tied || t.name != TOKEN_EMBD).map(|t| t.size).sum()
}

/// The memory-bandwidth bound of decode: `weight bytes per token ÷ read bandwidth`, against
/// the measured tg rate. One line for the report.
pub fn bandwidth_bound_line(r: &BenchResult, read_gbps: f64) -> String {
    let bound_ts = read_gbps * 1e9 / r.weight_bytes_per_token.max(1) as f64;
    format!(
        "{}: {:.1} MB of weights per token, RAM read {:.2} GB/s ({} threads) -> bound {:.2} t/s ({:.1} ms/token); measured {:.2} t/s = {:.0}% of the bound",
        r.test_name(),
        r.weight_bytes_per_token as f64 / 1e6,
        read_gbps,
        r.n_threads,
        bound_ts,
        1e3 / bound_ts,
        r.avg_ts(),
        100.0 * r.avg_ts() / bound_ts
    )
}

/// Run the pp and tg tests (each skipped when its count is 0), one warm-up run each.
pub fn run(path: &str, p: &BenchParams, mut progress: impl FnMut(&str)) -> Result<Vec<BenchResult>> {
    let m = Model::open(path)?;
    let n_ctx = (p.n_prompt.max(p.n_gen) + 1).max(16);
    let offload = Offload::open(p.gpu_layers);
    let n_layer = m.config.n_layer;
    let mut s = offload.pipeline(&m, n_ctx, 1, p.threads, &[n_layer])?;
    let mut rng = Rng::new(1);
    let n_vocab = m.config.n_vocab as u64;
    let mut random_tokens = |n: usize| -> Vec<u32> { (0..n).map(|_| (rng.next_u64() % n_vocab) as u32).collect() };
    let base = BenchResult {
        model_filename: path.to_string(),
        model_type: model_type(&m),
        model_size: m.gguf.tensors.iter().map(|t| t.size).sum(),
        model_n_params: m.gguf.tensors.iter().map(|t| t.n_elements()).sum(),
        n_threads: p.threads,
        n_prompt: 0,
        n_gen: 0,
        n_batch: crate::model::pipeline::DEFAULT_BATCH,
        samples_ns: Vec::new(),
        kernels: crate::cpu::kernel_summary(),
        weight_bytes_per_token: weight_bytes_per_token(&m),
        n_gpu_layers: offload.gpu_layers().min(n_layer),
        gpu_info: offload.gpu_name().unwrap_or_default(),
    };
    let mut results = Vec::new();
    if p.n_prompt > 0 {
        let mut r = BenchResult { n_prompt: p.n_prompt, ..base.clone() };
        for rep in 0..=p.reps {
            let toks = random_tokens(p.n_prompt);
            s.truncate(0)?;
            let t = Instant::now();
            s.decode(&toks)?;
            if rep > 0 {
                r.samples_ns.push(t.elapsed().as_nanos() as u64);
            }
            progress(&format!("pp{} rep {rep}/{}", p.n_prompt, p.reps));
        }
        results.push(r);
    }
    if p.n_gen > 0 {
        let mut r = BenchResult { n_gen: p.n_gen, ..base.clone() };
        for rep in 0..=p.reps {
            let toks = random_tokens(p.n_gen);
            s.truncate(0)?;
            let t = Instant::now();
            for &tok in &toks {
                s.decode(&[tok])?;
            }
            if rep > 0 {
                r.samples_ns.push(t.elapsed().as_nanos() as u64);
            }
            progress(&format!("tg{} rep {rep}/{}", p.n_gen, p.reps));
        }
        results.push(r);
    }
    Ok(results)
}

/// The llama-bench markdown table.
pub fn render_table(results: &[BenchResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| model | size | params | threads | test | t/s |");
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {:.2} MiB | {:.2} M | {} | {} | {:.2} ± {:.2} |",
            r.model_type,
            r.model_size as f64 / (1 << 20) as f64,
            r.model_n_params as f64 / 1e6,
            r.n_threads,
            r.test_name(),
            r.avg_ts(),
            r.stddev_ts()
        );
    }
    s
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON array with llama-bench's field names, so its tooling reads it unchanged.
pub fn render_json(results: &[BenchResult]) -> String {
    let mut s = String::from("[\n");
    for (i, r) in results.iter().enumerate() {
        let ns: Vec<f64> = r.samples_ns.iter().map(|&x| x as f64).collect();
        let list = |v: Vec<String>| v.join(", ");
        let _ = write!(
            s,
            "  {{\n    \"build_commit\": {},\n    \"build_number\": 0,\n    \"cpu_info\": {},\n    \"gpu_info\": {},\n    \"backends\": {},\n    \"model_filename\": {},\n    \"model_type\": {},\n    \"model_size\": {},\n    \"model_n_params\": {},\n    \"n_batch\": {},\n    \"n_ubatch\": {},\n    \"n_threads\": {},\n    \"type_k\": \"f32\",\n    \"type_v\": \"f32\",\n    \"n_gpu_layers\": {},\n    \"n_prompt\": {},\n    \"n_gen\": {},\n    \"avg_ns\": {:.0},\n    \"stddev_ns\": {:.0},\n    \"avg_ts\": {:.6},\n    \"stddev_ts\": {:.6},\n    \"samples_ns\": [ {} ],\n    \"samples_ts\": [ {} ]\n  }}{}\n",
            json_str(concat!("prima-", env!("CARGO_PKG_VERSION"))),
            json_str(&r.kernels),
            json_str(&r.gpu_info),
            json_str(if r.n_gpu_layers > 0 { "GPU,CPU" } else { "CPU" }),
            json_str(&r.model_filename),
            json_str(&r.model_type),
            r.model_size,
            r.model_n_params,
            r.n_batch,
            r.n_batch,
            r.n_threads,
            r.n_gpu_layers,
            r.n_prompt,
            r.n_gen,
            mean(&ns),
            stddev(&ns),
            r.avg_ts(),
            r.stddev_ts(),
            list(r.samples_ns.iter().map(|x| x.to_string()).collect()),
            list(r.samples_ts().iter().map(|x| format!("{x:.6}")).collect()),
            if i + 1 < results.len() { "," } else { "" }
        );
    }
    s.push(']');
    s
}
