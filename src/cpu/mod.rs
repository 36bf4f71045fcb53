//! CPU execution: the worker pool, matrix products and the small element-wise kernels.
//!
//! SIMD kernels live in one file per instruction set and are picked at run time
//! ([`kernels`]); the scalar kernels of [`crate::quant`] are the fallback and the oracle.

#[cfg(target_arch = "aarch64")]
mod aarch64_neon;
pub mod kernels;
pub mod matmul;
pub mod ops;
pub mod pool;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_rows4;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_tiles;
#[cfg(target_arch = "x86_64")]
mod x86_avx512bf16;
#[cfg(target_arch = "x86_64")]
mod x86_avxvnni;

pub use pool::{ThreadPool, default_threads};

/// Which kernel set this CPU runs (printed by `prima bench`).
pub fn kernel_summary() -> String {
    kernels::summary()
}
