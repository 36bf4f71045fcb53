//! prima: run large GGUF language models on a home cluster of ordinary devices.
//!
//! ```text
//!  gguf ──► quant ──► cpu kernels ──► model (embed → layer windows → head) ──► sampler
//!   │                                   ▲                                       │
//!   └──► tokenizer / chat ──────────────┘                                       ▼
//!  cluster: config · agent · ring transport      sched: profile → Halda plan    cli
//! ```

pub mod bench;
pub mod cli;
pub mod cluster;
pub mod cpu;
pub mod error;
pub mod fetch;
pub mod gguf;
pub mod memory;
pub mod model;
pub mod quant;
pub mod sampler;
pub mod sys;

pub use error::{Error, Result};
