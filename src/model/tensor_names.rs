//! The GGUF tensor names of the llama family (llama.cpp's), spelled in one place.

/// The token embedding (also the output matrix of models that tie them).
pub const TOKEN_EMBD: &str = "token_embd.weight";
pub const OUTPUT_NORM: &str = "output_norm.weight";
/// The output matrix; absent when tied to [`TOKEN_EMBD`].
pub const OUTPUT: &str = "output.weight";
/// Llama 3.1 rope frequency factors, read by every window.
pub const ROPE_FREQS: &str = "rope_freqs.weight";

/// Tensors of the head (embedding, final norm, output).
pub const HEAD_TENSORS: &[&str] = &[TOKEN_EMBD, OUTPUT_NORM, OUTPUT];
/// Tensors every window needs besides its own layers'.
pub const SHARED_WINDOW_TENSORS: &[&str] = &[ROPE_FREQS];

/// What every layer's tensor names start with.
pub const LAYER_PREFIX: &str = "blk.";

/// The prefix of layer `layer`'s tensors: `blk.N.`.
pub fn layer_prefix(layer: usize) -> String {
    format!("blk.{layer}.")
}

/// Layer `layer`'s tensor `name` (e.g. `attn_q.weight`): `blk.N.attn_q.weight`.
pub fn layer_tensor(layer: usize, name: &str) -> String {
    format!("blk.{layer}.{name}")
}

/// The layer a tensor belongs to, if it is a layer's (`blk.N.…`).
pub fn layer_of(tensor: &str) -> Option<usize> {
    tensor.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}
