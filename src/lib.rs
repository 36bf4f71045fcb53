//! prima: run large GGUF language models on a home cluster of ordinary devices.
//!
//! ```text
//!  gguf ──► quant ──► cpu kernels ──► model (embed → layer windows → head) ──► sampler
//!   │                                   ▲                                       │
//!   └──► tokenizer / chat ──────────────┘                        generate / chat_loop
//!  cluster: config · agent · ring transport      sched: profile → Halda plan    cli
//! ```

pub mod bench;
pub mod chat;
pub mod chat_loop;
pub mod cli;
pub mod cluster;
pub mod cpu;
pub mod error;
pub mod fetch;
pub mod generate;
pub mod gguf;
pub mod gpu;
pub mod memory;
pub mod model;
pub mod perplexity;
pub mod profile;
pub mod quant;
pub mod sampler;
pub mod sched;
pub mod serve;
pub mod synth;
pub mod sys;
pub mod tokenizer;

pub use error::{Error, Result};
