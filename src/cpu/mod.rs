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
mod x86_avx512_tiles;
#[cfg(target_arch = "x86_64")]
mod x86_avx512bf16;
#[cfg(target_arch = "x86_64")]
mod x86_avxvnni;
#[cfg(target_arch = "x86_64")]
mod x86_tile_order;

pub use pool::{ThreadPool, default_threads};

/// Ask for the cache line at `p` into L2 (a hint: `p` may point anywhere, a prefetch never
/// faults). Decode streams every weight once per token, and the hardware prefetcher alone
/// leaves much of a core's read rate unused while the kernels compute.
#[inline(always)]
pub fn prefetch_l2(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86_64; a prefetch has no memory effect.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T1 }>(p.cast())
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `prfm` only hints the cache; it never faults.
    unsafe {
        core::arch::asm!("prfm pldl2keep, [{0}]", in(reg) p, options(nostack, preserves_flags, readonly))
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}

/// [`prefetch_l2`] for every line of the `bytes` at `p`. Called per block of contiguous blocks
/// (one prefetch per 64 bytes from each block's start covers every line: a line only a block's
/// tail reaches is the next block's first), or once for a whole row.
#[inline(always)]
pub fn prefetch_l2_block(p: *const u8, bytes: usize) {
    for off in (0..bytes).step_by(64) {
        prefetch_l2(p.wrapping_add(off));
    }
}

/// Which kernel set this CPU runs (printed by `prima bench`).
pub fn kernel_summary() -> String {
    kernels::summary()
}
