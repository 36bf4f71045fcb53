//! The llama-family model: `embed → layer windows → head`.
//!
//! A [`LayerWindow`] owns its layers' weights (views into the map) and their KV cache, so one
//! device can run any subset of windows; [`Head`] holds the embedding and the output layer.
//! A [`Pipeline`] chains them (and, on a ring, remote windows) and holds the sequences.

pub mod batch;
pub mod config;
pub mod head;
pub mod kv_cache;
pub mod pipeline;
pub mod tensor_names;
pub mod weights;
pub mod window;

use std::path::Path;

pub use batch::{Batch, KvOp, SeqId, SeqPos};
pub use config::{Arch, ModelConfig};
pub use head::Head;
pub use pipeline::{Ends, Paging, Pipeline, Rebuilt, Recovery, Window};
pub use window::LayerWindow;

use crate::error::{Context, Result};
use crate::gguf::GgufFile;

use tensor_names::{HEAD_TENSORS, SHARED_WINDOW_TENSORS};

pub struct Model {
    pub config: ModelConfig,
    pub gguf: GgufFile,
}

impl Model {
    pub fn open(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let gguf = GgufFile::open(path)?;
        Self::from_gguf(gguf).with_context(|| path.display())
    }

    pub fn from_gguf(gguf: GgufFile) -> Result<Model> {
        Ok(Model { config: ModelConfig::from_gguf(&gguf)?, gguf })
    }

    /// Names of the tensors a window running `layer` needs (its `blk.N.*` plus shared ones).
    pub fn layer_tensor_names(&self, layer: usize) -> Vec<String> {
        let prefix = tensor_names::layer_prefix(layer);
        let mut names: Vec<String> =
            self.gguf.tensors.iter().filter(|t| t.name.starts_with(&prefix)).map(|t| t.name.clone()).collect();
        names.extend(SHARED_WINDOW_TENSORS.iter().filter(|n| self.gguf.tensor(n).is_some()).map(|n| n.to_string()));
        names
    }

    /// Names of the tensors the head needs (embedding, final norm, output).
    pub fn head_tensor_names(&self) -> Vec<String> {
        HEAD_TENSORS.iter().filter(|n| self.gguf.tensor(n).is_some()).map(|n| n.to_string()).collect()
    }
}

/// llama.cpp's name for `general.file_type` (e.g. "Q4_K - Medium"), or the dominant matrix type.
pub fn file_type_name(m: &Model) -> String {
    let name = match m.gguf.get_u64("general.file_type") {
        Some(0) => "all F32",
        Some(1) => "F16",
        Some(2) => "Q4_0",
        Some(3) => "Q4_1",
        Some(7) => "Q8_0",
        Some(8) => "Q5_0",
        Some(9) => "Q5_1",
        Some(10) => "Q2_K - Medium",
        Some(11) => "Q3_K - Small",
        Some(12) => "Q3_K - Medium",
        Some(13) => "Q3_K - Large",
        Some(14) => "Q4_K - Small",
        Some(15) => "Q4_K - Medium",
        Some(16) => "Q5_K - Small",
        Some(17) => "Q5_K - Medium",
        Some(18) => "Q6_K",
        Some(19) => "IQ2_XXS - 2.0625 bpw",
        Some(20) => "IQ2_XS - 2.3125 bpw",
        Some(21) => "Q2_K - Small",
        Some(23) => "IQ3_XXS - 3.0625 bpw",
        Some(24) => "IQ1_S - 1.5625 bpw",
        Some(25) => "IQ4_NL - 4.5 bpw",
        Some(30) => "IQ4_XS - 4.25 bpw",
        Some(31) => "IQ1_M - 1.75 bpw",
        Some(32) => "BF16",
        _ => "",
    };
    if !name.is_empty() {
        return name.to_string();
    }
    let mut bytes: std::collections::BTreeMap<crate::quant::GgmlType, u64> = Default::default();
    for t in &m.gguf.tensors {
        *bytes.entry(t.ty).or_default() += t.size;
    }
    bytes.into_iter().max_by_key(|&(_, b)| b).map(|(t, _)| t.to_string()).unwrap_or_default()
}

impl Model {
    /// The same model with every quantized tensor dequantized to F32, held in memory: what
    /// `llama-quantize --allow-requantize … F32` makes, and what the deqf32 goldens ran on.
    /// Multiplying dequantized weights by f32 activations isolates the dequantization from the
    /// activation quantization (a reference for tests; small models only).
    pub fn dequantized(&self) -> Result<Model> {
        use crate::gguf::write::GgufWriter;
        use crate::quant::{self, GgmlType};
        let mut w = GgufWriter::new();
        for (k, v) in &self.gguf.metadata {
            w.kv(k, v.clone());
        }
        for t in &self.gguf.tensors {
            let data = self.gguf.tensor_data(t);
            if t.ty == GgmlType::F32 {
                w.tensor(&t.name, &t.dims, t.ty, data.to_vec());
                continue;
            }
            quant::check_supported(t.ty)?;
            let row = t.row_len();
            let row_bytes = t.ty.row_bytes(row).expect("checked by the reader");
            let mut out = Vec::with_capacity(t.n_elements() as usize * 4);
            let mut buf = vec![0f32; row];
            for r in data.chunks_exact(row_bytes) {
                quant::dequantize_row(t.ty, r, &mut buf);
                out.extend(buf.iter().flat_map(|v| v.to_le_bytes()));
            }
            w.tensor(&t.name, &t.dims, GgmlType::F32, out);
        }
        Model::from_gguf(crate::gguf::GgufFile::from_bytes(w.to_bytes())?)
    }
}
