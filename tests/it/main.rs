//! The one integration-test binary (each extra tests/*.rs would re-link every dependency).

mod cli;
mod cluster;
mod common;
mod fuzz;
mod gguf;
mod gpu;
mod kernels;
mod living;
mod memory;
mod model;
mod pipeline;
mod quant;
mod sampler;
mod sched;
mod security;
mod serve;
mod tokenizer;
