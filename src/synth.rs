//! Synthetic models with real large-model shapes (random weights) for benchmarks: the speed
//! of a 70B-shaped layer does not depend on what its weights say, only on their shapes and
//! formats. The tokenizer metadata is borrowed from a real model, padded to the vocabulary.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{Context, Error, Result};
use crate::gguf::write::{TensorSpec, write_streaming};
use crate::gguf::{GgufFile, Value};
use crate::quant::{self, GgmlType};
use crate::sampler::Rng;

#[derive(Clone, Debug)]
pub struct Shape {
    pub name: &'static str,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_vocab: usize,
    pub rope_base: f32,
}

pub const SHAPES: &[Shape] = &[
    Shape {
        name: "llama3-8b",
        n_layer: 32,
        n_embd: 4096,
        n_ff: 14336,
        n_head: 32,
        n_head_kv: 8,
        n_vocab: 128256,
        rope_base: 500000.0,
    },
    Shape {
        name: "llama3-70b",
        n_layer: 80,
        n_embd: 8192,
        n_ff: 28672,
        n_head: 64,
        n_head_kv: 8,
        n_vocab: 128256,
        rope_base: 500000.0,
    },
    Shape {
        name: "qwen25-32b",
        n_layer: 64,
        n_embd: 5120,
        n_ff: 27648,
        n_head: 40,
        n_head_kv: 8,
        n_vocab: 152064,
        rope_base: 1000000.0,
    },
];

/// The weight format of each tensor, by llama.cpp's file-type recipes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    Pure(GgmlType),
    /// Q4_K, with Q6_K for output and for attn_v / ffn_down in llama.cpp's "more bits" layers.
    Q4KM,
}

impl Mix {
    pub fn parse(s: &str) -> Result<Mix> {
        if s.eq_ignore_ascii_case("q4_k_m") {
            return Ok(Mix::Q4KM);
        }
        GgmlType::ALL.iter().find(|t| t.name().eq_ignore_ascii_case(s)).map(|&t| Mix::Pure(t)).ok_or_else(|| {
            Error::msg(format!("unknown weight format `{s}` (try q4_k_m, q4_0, q8_0, q6_k, iq4_xs, f16)"))
        })
    }

    fn type_for(self, name: &str, layer: Option<usize>, n_layer: usize) -> GgmlType {
        match self {
            Mix::Pure(t) => t,
            Mix::Q4KM => {
                // llama.cpp's use_more_bits(): first and last eighth, and every third between.
                let more_bits = |i: usize| i < n_layer / 8 || i >= 7 * n_layer / 8 || (i - n_layer / 8) % 3 == 2;
                match (name, layer) {
                    ("output.weight", _) => GgmlType::Q6_K,
                    (n, Some(i))
                        if (n.ends_with("attn_v.weight") || n.ends_with("ffn_down.weight")) && more_bits(i) =>
                    {
                        GgmlType::Q6_K
                    }
                    _ => GgmlType::Q4_K,
                }
            }
        }
    }

    fn file_type(self) -> u32 {
        match self {
            Mix::Q4KM => 15,
            Mix::Pure(GgmlType::F32) => 0,
            Mix::Pure(GgmlType::F16) => 1,
            Mix::Pure(GgmlType::Q4_0) => 2,
            Mix::Pure(GgmlType::Q4_1) => 3,
            Mix::Pure(GgmlType::Q8_0) => 7,
            Mix::Pure(GgmlType::Q5_0) => 8,
            Mix::Pure(GgmlType::Q5_1) => 9,
            Mix::Pure(GgmlType::Q6_K) => 18,
            Mix::Pure(GgmlType::IQ4_NL) => 25,
            Mix::Pure(GgmlType::IQ4_XS) => 30,
            Mix::Pure(GgmlType::BF16) => 32,
            Mix::Pure(_) => 0,
        }
    }
}

/// Write a random-weight llama model of `shape` (with `n_layer` overriding the layer count).
pub fn write_model(shape: &Shape, n_layer: usize, mix: Mix, vocab_from: &GgufFile, out: &Path) -> Result<()> {
    let (e, f, kv) = (shape.n_embd as u64, shape.n_ff as u64, (shape.n_embd / shape.n_head * shape.n_head_kv) as u64);
    let mut specs: Vec<TensorSpec> = Vec::new();
    let mut add = |name: String, dims: Vec<u64>, layer: Option<usize>| {
        let ty = if dims.len() == 1 { GgmlType::F32 } else { mix.type_for(&name, layer, n_layer) };
        let bytes = ty.row_bytes(dims[0] as usize).expect("row length is a block multiple") as u64
            * dims[1..].iter().product::<u64>();
        specs.push(TensorSpec { name, dims, ty, bytes });
    };
    let v = shape.n_vocab as u64;
    add("token_embd.weight".into(), vec![e, v], None);
    for i in 0..n_layer {
        let n = |s: &str| format!("blk.{i}.{s}");
        add(n("attn_norm.weight"), vec![e], Some(i));
        add(n("attn_q.weight"), vec![e, e], Some(i));
        add(n("attn_k.weight"), vec![e, kv], Some(i));
        add(n("attn_v.weight"), vec![e, kv], Some(i));
        add(n("attn_output.weight"), vec![e, e], Some(i));
        add(n("ffn_norm.weight"), vec![e], Some(i));
        add(n("ffn_gate.weight"), vec![e, f], Some(i));
        add(n("ffn_up.weight"), vec![e, f], Some(i));
        add(n("ffn_down.weight"), vec![f, e], Some(i));
    }
    add("output_norm.weight".into(), vec![e], None);
    add("output.weight".into(), vec![e, v], None);
    for t in &specs {
        quant::check_supported(t.ty).with_context(|| format!("synthesising {}", t.name))?;
    }

    let metadata = metadata(shape, n_layer, mix, vocab_from)?;
    // One random quantized row pool per (type, row length): rows are drawn from it, so each
    // tensor's bytes are valid blocks without quantizing billions of weights.
    let mut pools: std::collections::HashMap<(GgmlType, u64), Vec<u8>> = Default::default();
    let mut rng = Rng::new(42);
    const POOL_ROWS: usize = 64;
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    write_streaming(&metadata, &specs, 32, &mut w, |i, w| {
        let t = &specs[i];
        let row_len = t.dims[0] as usize;
        let rows = (t.bytes as usize) / t.ty.row_bytes(row_len).unwrap();
        let pool = pools.entry((t.ty, t.dims[0])).or_insert_with(|| {
            let std = if t.dims.len() == 1 { 0.0 } else { 1.0 / (row_len as f32).sqrt() };
            let row_bytes = t.ty.row_bytes(row_len).unwrap();
            let mut bytes = vec![0u8; POOL_ROWS * row_bytes];
            let mut x = vec![0f32; row_len];
            for r in 0..POOL_ROWS {
                for v in x.iter_mut() {
                    // Sum of uniforms: cheap, roughly normal.
                    let u: f32 = (0..4).map(|_| rng.next_f32()).sum::<f32>() - 2.0;
                    *v = if std == 0.0 { 1.0 + 0.1 * u } else { u * std * 1.7 };
                }
                quant::quantize_weights(t.ty, &x, &mut bytes[r * row_bytes..(r + 1) * row_bytes]);
            }
            bytes
        });
        let row_bytes = t.ty.row_bytes(row_len).unwrap();
        for _ in 0..rows {
            let k = (rng.next_u64() as usize) % POOL_ROWS;
            w.write_all(&pool[k * row_bytes..(k + 1) * row_bytes])?;
        }
        Ok(())
    })?;
    w.flush()?;
    Ok(())
}

fn metadata(shape: &Shape, n_layer: usize, mix: Mix, vocab_from: &GgufFile) -> Result<Vec<(String, Value)>> {
    let mut md = vec![
        ("general.architecture".to_string(), Value::Str("llama".into())),
        ("general.name".to_string(), Value::Str(format!("synthetic {} ({n_layer} layers)", shape.name))),
        ("general.file_type".to_string(), Value::U32(mix.file_type())),
        ("general.quantization_version".to_string(), Value::U32(2)),
        ("llama.block_count".to_string(), Value::U32(n_layer as u32)),
        ("llama.context_length".to_string(), Value::U32(8192)),
        ("llama.embedding_length".to_string(), Value::U32(shape.n_embd as u32)),
        ("llama.feed_forward_length".to_string(), Value::U32(shape.n_ff as u32)),
        ("llama.attention.head_count".to_string(), Value::U32(shape.n_head as u32)),
        ("llama.attention.head_count_kv".to_string(), Value::U32(shape.n_head_kv as u32)),
        ("llama.attention.layer_norm_rms_epsilon".to_string(), Value::F32(1e-5)),
        ("llama.rope.freq_base".to_string(), Value::F32(shape.rope_base)),
        ("llama.rope.dimension_count".to_string(), Value::U32((shape.n_embd / shape.n_head) as u32)),
        ("llama.vocab_size".to_string(), Value::U32(shape.n_vocab as u32)),
    ];
    for (k, v) in &vocab_from.metadata {
        if !k.starts_with("tokenizer.") {
            continue;
        }
        let v = match (k.as_str(), v) {
            // Pad the token list (and its parallel arrays) to the vocabulary size.
            ("tokenizer.ggml.tokens", Value::Array(ty, items)) => {
                let mut items = items.clone();
                items.truncate(shape.n_vocab);
                let n = items.len();
                items.extend((n..shape.n_vocab).map(|i| Value::Str(format!("<|synthetic_{i}|>"))));
                Value::Array(*ty, items)
            }
            ("tokenizer.ggml.token_type", Value::Array(ty, items)) => {
                let mut items = items.clone();
                items.truncate(shape.n_vocab);
                items.resize(shape.n_vocab, Value::I32(3));
                Value::Array(*ty, items)
            }
            ("tokenizer.ggml.scores", Value::Array(ty, items)) => {
                let mut items = items.clone();
                items.truncate(shape.n_vocab);
                items.resize(shape.n_vocab, Value::F32(0.0));
                Value::Array(*ty, items)
            }
            (_, v) => v.clone(),
        };
        md.push((k.clone(), v));
    }
    if !md.iter().any(|(k, _)| k == "tokenizer.ggml.tokens") {
        return Err(Error::msg("the vocabulary source has no tokenizer.ggml.tokens"));
    }
    Ok(md)
}
