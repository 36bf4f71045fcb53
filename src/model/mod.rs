//! The llama-family model: `embed → layer windows → head`.
//!
//! A [`LayerWindow`] owns its layers' weights (views into the map) and their KV cache, so one
//! device can run any subset of windows; [`Head`] holds the embedding and the output layer.
//! [`Session`] chains them on one device.

pub mod config;
pub mod head;
pub mod kv_cache;
pub mod session;
pub mod weights;
pub mod window;

use std::path::Path;

pub use config::{Arch, ModelConfig};
pub use head::Head;
pub use session::Session;
pub use window::LayerWindow;

use crate::error::{Context, Result};
use crate::gguf::GgufFile;

/// Tensors every window needs besides its own layers' (Llama 3.1 rope frequency factors).
const SHARED_WINDOW_TENSORS: &[&str] = &["rope_freqs.weight"];
const HEAD_TENSORS: &[&str] = &["token_embd.weight", "output_norm.weight", "output.weight"];

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
        let prefix = format!("blk.{layer}.");
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
