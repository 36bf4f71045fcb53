//! Weight formats: ggml's block layouts, dequantization, and dot products against the
//! activation types ggml pairs them with (Q8_0, Q8_1, Q8_K).

mod types;
pub use types::GgmlType;
