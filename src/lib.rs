//! prima: run large GGUF language models on a home cluster of ordinary devices.
//!
//! ```text
//!  gguf ──► quant ──► cpu kernels ──► model (embed → layer windows → head) ──► sampler
//!   │                                   ▲                                       │
//!   └──► tokenizer / chat ──────────────┘                                       ▼
//!  cluster: config · agent · ring transport      sched: profile → Halda plan    cli
//! ```

pub mod cli;
pub mod cluster;
pub mod error;
pub mod gguf;
pub mod quant;

pub use error::{Error, Result};
