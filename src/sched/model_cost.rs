//! What one decode token costs a model, per layer and per weight format: FLOPs, weight bytes,
//! KV bytes. Computed from a GGUF's tensor table (shapes and types), or from a [`ModelShape`]
//! that describes a model without the file (tests, "what if" plans).
//!
//! Counting follows upstream `llama_model_n_flops` with its flaws fixed: matmuls cost 2·in·out
//! per token and are charged to the weight's format; attention over `n_kv` cached tokens costs
//! 4·head_dim·n_head·n_kv, charged to the KV type; norms, RoPE, softmax and SwiGLU are F32
//! work; MoE expert tensors are charged for the active experts only. Layers are averaged (a
//! Q4_K_M file mixes formats between layers).

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model::ModelConfig;
use crate::quant::GgmlType;

/// A model described by its hyperparameters and the formats of its weights.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelShape {
    pub name: String,
    pub n_layer: u32,
    pub n_embd: u64,
    pub n_ff: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub head_dim: u64,
    pub n_vocab: u64,
    /// q/k/v projections carry biases (Qwen2).
    pub qkv_bias: bool,
    /// Format of the attention and FFN matrices.
    pub layer_ty: GgmlType,
    /// attn_v and ffn_down format (Q4_K_M keeps them in Q6_K on part of the layers; here on all).
    pub v_down_ty: GgmlType,
    pub embd_ty: GgmlType,
    /// `None` = output tied to the token embeddings.
    pub output_ty: Option<GgmlType>,
}

impl ModelShape {
    /// Meta Llama-3-8B in Q4_K (v and down in Q6_K, output Q6_K).
    pub fn llama3_8b_q4k() -> Self {
        Self::llama("Llama-3-8B Q4_K", 32, 4096, 14336, 32, 8, 128256)
    }
    /// Meta Llama-3-70B in Q4_K.
    pub fn llama3_70b_q4k() -> Self {
        Self::llama("Llama-3-70B Q4_K", 80, 8192, 28672, 64, 8, 128256)
    }
    /// Qwen2.5-32B in Q4_K.
    pub fn qwen25_32b_q4k() -> Self {
        ModelShape { qkv_bias: true, ..Self::llama("Qwen2.5-32B Q4_K", 64, 5120, 27648, 40, 8, 152064) }
    }

    fn llama(name: &str, n_layer: u32, e: u64, ff: u64, heads: u64, kv: u64, vocab: u64) -> Self {
        ModelShape {
            name: name.into(),
            n_layer,
            n_embd: e,
            n_ff: ff,
            n_head: heads,
            n_head_kv: kv,
            head_dim: e / heads,
            n_vocab: vocab,
            qkv_bias: false,
            layer_ty: GgmlType::Q4_K,
            v_down_ty: GgmlType::Q6_K,
            embd_ty: GgmlType::Q4_K,
            output_ty: Some(GgmlType::Q6_K),
        }
    }

    /// The tensor table this shape implies: (name, ggml dims, type).
    pub fn tensors(&self) -> Vec<(String, Vec<u64>, GgmlType)> {
        let (e, kv) = (self.n_embd, self.n_head_kv * self.head_dim);
        let q = self.n_head * self.head_dim;
        let mut t = vec![("token_embd.weight".to_string(), vec![e, self.n_vocab], self.embd_ty)];
        for l in 0..self.n_layer {
            let p = |s: &str| format!("blk.{l}.{s}");
            t.push((p("attn_norm.weight"), vec![e], GgmlType::F32));
            t.push((p("attn_q.weight"), vec![e, q], self.layer_ty));
            t.push((p("attn_k.weight"), vec![e, kv], self.layer_ty));
            t.push((p("attn_v.weight"), vec![e, kv], self.v_down_ty));
            if self.qkv_bias {
                t.push((p("attn_q.bias"), vec![q], GgmlType::F32));
                t.push((p("attn_k.bias"), vec![kv], GgmlType::F32));
                t.push((p("attn_v.bias"), vec![kv], GgmlType::F32));
            }
            t.push((p("attn_output.weight"), vec![q, e], self.layer_ty));
            t.push((p("ffn_norm.weight"), vec![e], GgmlType::F32));
            t.push((p("ffn_gate.weight"), vec![e, self.n_ff], self.layer_ty));
            t.push((p("ffn_up.weight"), vec![e, self.n_ff], self.layer_ty));
            t.push((p("ffn_down.weight"), vec![self.n_ff, e], self.v_down_ty));
        }
        t.push(("output_norm.weight".to_string(), vec![e], GgmlType::F32));
        if let Some(ty) = self.output_ty {
            t.push(("output.weight".to_string(), vec![e, self.n_vocab], ty));
        }
        t
    }

    pub fn cost(&self) -> Result<ModelCost> {
        let hp = Hparams {
            n_layer: self.n_layer,
            n_embd: self.n_embd,
            n_head: self.n_head,
            n_head_kv: self.n_head_kv,
            head_dim_k: self.head_dim,
            head_dim_v: self.head_dim,
            n_ff: self.n_ff,
            expert_frac: 1.0,
        };
        ModelCost::from_tensors(&self.name, &hp, self.tensors().iter().map(|(n, d, t)| (n.as_str(), d.as_slice(), *t)))
    }
}

/// The hyperparameters the cost needs.
#[derive(Clone, Debug)]
pub struct Hparams {
    pub n_layer: u32,
    pub n_embd: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub head_dim_k: u64,
    pub head_dim_v: u64,
    pub n_ff: u64,
    /// Active experts / experts (1 for dense models).
    pub expert_frac: f64,
}

/// FLOPs per token charged to one weight format.
#[derive(Clone, Debug, PartialEq)]
pub struct TypedFlops {
    pub ty: GgmlType,
    pub flops: f64,
}

/// Per-token costs of a model, the input to Halda.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelCost {
    pub name: String,
    pub n_layer: u32,
    pub n_embd: u64,
    pub n_vocab: u64,
    pub n_head: u64,
    /// K + V elements per token per layer (n_head_kv·(head_dim_k + head_dim_v)).
    pub kv_elems: u64,
    /// Matmul FLOPs per token of the average layer, by weight format (sorted by format).
    pub layer_flops: Vec<TypedFlops>,
    /// Non-matmul F32 FLOPs per token of the average layer, excluding attention.
    pub layer_f32_flops: f64,
    /// Attention FLOPs per token per cached token of the average layer (charged to the KV type).
    pub attn_flops_per_kv: f64,
    /// Weight bytes of the average layer.
    pub layer_bytes: f64,
    /// token_embd bytes, and one of its rows (the only part a decode token reads).
    pub input_bytes: u64,
    pub input_row_bytes: u64,
    pub input_ty: GgmlType,
    /// Output-layer matmul FLOPs by format (the LM head; tied embeddings included).
    pub output_flops: Vec<TypedFlops>,
    /// output + output_norm bytes (token_embd's bytes when tied).
    pub output_bytes: u64,
    pub output_tied: bool,
    /// Total weight bytes.
    pub total_bytes: u64,
}

impl ModelCost {
    /// From a GGUF's metadata (through [`ModelConfig`], the one header parser) and tensor table.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let c = ModelConfig::from_gguf(f)?;
        // Expert counts are not part of the dense config: read here, 0 for dense models.
        let key = |k: &str| format!("{}.{k}", c.arch_name);
        let n_expert = f.get_u64(&key("expert_count")).unwrap_or(0);
        let n_used = f.get_u64(&key("expert_used_count")).unwrap_or(0);
        let hp = Hparams {
            n_layer: c.n_layer as u32,
            n_embd: c.n_embd as u64,
            n_head: c.n_head as u64,
            n_head_kv: c.n_head_kv as u64,
            head_dim_k: c.head_dim_k as u64,
            head_dim_v: c.head_dim_v as u64,
            n_ff: c.n_ff as u64,
            expert_frac: if n_expert > 0 { n_used as f64 / n_expert as f64 } else { 1.0 },
        };
        let name = f.get_str("general.name").unwrap_or(&c.arch_name).to_string();
        Self::from_tensors(&name, &hp, f.tensors.iter().map(|t| (t.name.as_str(), t.dims.as_slice(), t.ty)))
    }

    /// From (name, dims, type) triples.
    pub fn from_tensors<'a>(
        name: &str,
        hp: &Hparams,
        tensors: impl Iterator<Item = (&'a str, &'a [u64], GgmlType)>,
    ) -> Result<Self> {
        if hp.n_layer == 0 || hp.n_embd == 0 {
            return Err(Error::msg(format!("{name}: model has no layers or zero embedding width")));
        }
        let bytes_of = |dims: &[u64], ty: GgmlType| -> f64 {
            let n: u64 = dims.iter().product();
            let (bs, ts) = ty.block_layout();
            (n as f64 / bs as f64) * ts as f64
        };
        let mut layer_flops: BTreeMap<GgmlType, f64> = BTreeMap::new();
        let (mut layer_bytes, mut layer_f32) = (0.0, 0.0);
        let mut output_flops: BTreeMap<GgmlType, f64> = BTreeMap::new();
        let (mut input, mut output, mut out_norm) = (None, None, 0u64);
        let mut total = 0.0;
        let mut layers_seen = 0u32;
        for (tname, dims, ty) in tensors {
            let b = bytes_of(dims, ty);
            total += b;
            let n: u64 = dims.iter().product();
            if let Some(rest) = tname.strip_prefix("blk.") {
                if let Some(l) = rest.split('.').next().and_then(|s| s.parse::<u32>().ok()) {
                    layers_seen = layers_seen.max(l + 1);
                }
                layer_bytes += b;
                if dims.len() >= 2 && dims[0] > 1 && dims[1] > 1 {
                    let frac = if tname.contains("_exps") { hp.expert_frac } else { 1.0 };
                    *layer_flops.entry(ty).or_default() += 2.0 * n as f64 * frac;
                } else {
                    layer_f32 += n as f64; // norm scale or bias: one op per element
                }
            } else if tname == "token_embd.weight" {
                input = Some((dims.to_vec(), ty, b));
            } else if tname == "output.weight" {
                output = Some((ty, b, n));
            } else if tname == "output_norm.weight" {
                out_norm = b as u64;
            }
        }
        if layers_seen != hp.n_layer {
            return Err(Error::msg(format!(
                "{name}: metadata says {} layers but the tensors describe {layers_seen}",
                hp.n_layer
            )));
        }
        let (in_dims, input_ty, input_bytes) =
            input.ok_or_else(|| Error::msg(format!("{name}: no token_embd.weight tensor")))?;
        let n_vocab = in_dims.get(1).copied().unwrap_or(1);
        let input_row_bytes = bytes_of(&in_dims[..1], input_ty) as u64;
        let output_tied = output.is_none();
        let (out_ty, out_bytes, out_n) = output.unwrap_or((input_ty, input_bytes, in_dims.iter().product()));
        output_flops.insert(out_ty, 2.0 * out_n as f64);
        *output_flops.entry(GgmlType::F32).or_default() += 5.0 * hp.n_embd as f64; // final RMS norm

        let l = hp.n_layer as f64;
        let e = hp.n_embd as f64;
        let rope = 2.5 * ((hp.n_head * hp.head_dim_k + hp.n_head_kv * hp.head_dim_k) as f64);
        let norms = 2.0 * (4.0 * e + 1.0);
        let swiglu = 8.0 * hp.n_ff as f64;
        let residual = 2.0 * e;
        let typed = |m: BTreeMap<GgmlType, f64>, div: f64| -> Vec<TypedFlops> {
            m.into_iter().map(|(ty, f)| TypedFlops { ty, flops: f / div }).collect()
        };
        Ok(ModelCost {
            name: name.to_string(),
            n_layer: hp.n_layer,
            n_embd: hp.n_embd,
            n_vocab,
            n_head: hp.n_head,
            kv_elems: hp.n_head_kv * (hp.head_dim_k + hp.head_dim_v),
            layer_flops: typed(layer_flops, l),
            layer_f32_flops: layer_f32 / l + rope + norms + swiglu + residual,
            // QKᵀ and the V product: 2 FLOPs per multiply-add each; softmax, mask, scale: 7.
            attn_flops_per_kv: (4 * hp.n_head * hp.head_dim_k) as f64 + 7.0 * hp.n_head as f64,
            layer_bytes: layer_bytes / l,
            input_bytes: input_bytes as u64,
            input_row_bytes,
            input_ty,
            output_flops: typed(output_flops, 1.0),
            output_bytes: out_bytes as u64 + out_norm,
            output_tied,
            total_bytes: total as u64,
        })
    }

    /// KV-cache bytes of one layer holding `n_ctx` tokens in `kv_ty` (F16 or F32).
    pub fn kv_bytes_per_layer(&self, n_ctx: u64, kv_ty: GgmlType) -> f64 {
        (n_ctx * self.kv_elems) as f64 * kv_ty.type_size() as f64 / kv_ty.block_size() as f64
    }

    /// Bytes one token appends to one layer's KV cache.
    pub fn kv_row_bytes(&self, kv_ty: GgmlType) -> f64 {
        self.kv_bytes_per_layer(1, kv_ty)
    }

    /// Bytes the head keeps besides its layers: one embedding row per token plus the LM head.
    pub fn head_io_bytes(&self) -> f64 {
        self.input_row_bytes as f64 + self.output_bytes as f64
    }

    /// Hidden-state bytes crossing one ring hop per decode token (f32).
    pub fn hop_bytes(&self) -> f64 {
        4.0 * self.n_embd as f64
    }

    /// Weight formats the model's layers and LM head use.
    pub fn formats(&self) -> Vec<GgmlType> {
        let mut v: Vec<GgmlType> = self.layer_flops.iter().chain(&self.output_flops).map(|t| t.ty).collect();
        v.sort();
        v.dedup();
        v
    }
}
