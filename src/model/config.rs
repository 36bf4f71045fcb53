//! Hyper-parameters read from `<arch>.*` GGUF keys (llama.cpp's names).

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama 1/2/3, DeepSeek-R1-Distill-Llama, SmolLM, Mistral-style models.
    Llama,
    /// Qwen 2/2.5, QwQ, DeepSeek-R1-Distill-Qwen: q/k/v biases, NEOX rope.
    Qwen2,
}

pub use crate::cpu::ops::RopeStyle;

#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub arch: Arch,
    pub arch_name: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope_style: RopeStyle,
    pub rope_dims: usize,
    pub rope_base: f32,
    /// 1/factor for linear rope scaling, 1 otherwise.
    pub rope_freq_scale: f32,
}

impl ModelConfig {
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig> {
        let arch_name = f.architecture().ok_or_else(|| Error::msg("missing metadata key `general.architecture`"))?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(Error::msg(format!("architecture `{other}` is not supported (supported: llama, qwen2)")));
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let n_embd = f.require_u64(&key("embedding_length"))? as usize;
        let n_head = f.require_u64(&key("attention.head_count"))? as usize;
        let n_head_kv = f.get_u64(&key("attention.head_count_kv")).map(|v| v as usize).unwrap_or(n_head);
        if n_head == 0 || n_head_kv == 0 || !n_head.is_multiple_of(n_head_kv) || !n_embd.is_multiple_of(n_head) {
            return Err(Error::msg(format!(
                "inconsistent attention shape: {n_head} heads, {n_head_kv} kv heads, embedding {n_embd}"
            )));
        }
        let head_dim_k = f.get_u64(&key("attention.key_length")).map(|v| v as usize).unwrap_or(n_embd / n_head);
        let head_dim_v = f.get_u64(&key("attention.value_length")).map(|v| v as usize).unwrap_or(n_embd / n_head);
        let n_vocab = match f.get_u64(&key("vocab_size")) {
            Some(v) => v as usize,
            None => f
                .tensor(super::tensor_names::TOKEN_EMBD)
                .map(|t| t.n_rows())
                .or_else(|| f.array_len("tokenizer.ggml.tokens"))
                .ok_or_else(|| Error::msg("cannot tell the vocabulary size"))?,
        };
        let rope_freq_scale = match f.get_str(&key("rope.scaling.type")) {
            Some("linear") => 1.0 / f.get_f32(&key("rope.scaling.factor")).unwrap_or(1.0),
            Some("none") | None => 1.0,
            // llama3-style scaling is carried by the rope_freqs tensor; yarn is not used by
            // the supported families' released GGUFs.
            Some("llama3") => 1.0,
            Some(other) => return Err(Error::msg(format!("rope scaling type `{other}` is not supported"))),
        };
        let cfg = ModelConfig {
            arch,
            arch_name: arch_name.to_string(),
            n_layer: f.require_u64(&key("block_count"))? as usize,
            n_embd,
            n_ff: f.require_u64(&key("feed_forward_length"))? as usize,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_vocab,
            n_ctx_train: f.get_u64(&key("context_length")).unwrap_or(2048) as usize,
            rms_eps: f.get_f32(&key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
            rope_style: match arch {
                Arch::Llama => RopeStyle::Normal,
                Arch::Qwen2 => RopeStyle::Neox,
            },
            rope_dims: f.get_u64(&key("rope.dimension_count")).map(|v| v as usize).unwrap_or(head_dim_k),
            rope_base: f.get_f32(&key("rope.freq_base")).unwrap_or(10000.0),
            rope_freq_scale,
        };
        if cfg.n_layer == 0 || cfg.rope_dims > cfg.head_dim_k || !cfg.rope_dims.is_multiple_of(2) {
            return Err(Error::msg(format!(
                "inconsistent model shape: {} layers, rope dims {} for head size {}",
                cfg.n_layer, cfg.rope_dims, cfg.head_dim_k
            )));
        }
        Ok(cfg)
    }

    pub fn kv_dim_k(&self) -> usize {
        self.n_head_kv * self.head_dim_k
    }
    pub fn kv_dim_v(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim_k
    }
}
