//! AVX-512 BF16 (`avx512bf16` + `avx512vl`): BF16 weight rows against BF16 activations (ggml's
//! partner type for BF16) with `vdpbf16ps`, which multiplies bf16 pairs and adds them into f32
//! lanes. A bf16 product is exact in f32, so this differs from the AVX2 kernel (widen, then
//! FMA) only in the order of the f32 additions, and in flushing subnormals to zero.

#![allow(clippy::needless_range_loop)] // the tile loops index several arrays by token

use core::arch::x86_64::*;

use super::kernels::{CpuKernels, VecDot, VecDotX4, float_entries};
use super::x86_avx2::{self, entry, hsum_f32, hsum_f32x4};
use crate::quant::{GgmlType, scalar_kernels};

pub fn detected() -> bool {
    is_x86_feature_detected!("avx512bf16") && is_x86_feature_detected!("avx512vl") && x86_avx2::detected()
}

/// `nb` groups of 8 bf16: pairs of groups as one ymm `vdpbf16ps`, an odd last group as xmm.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bf16")]
unsafe fn bf16<const NT: usize>(nb: usize, w: *const u8, a: *const u8, astride: usize, out: &mut [f32; NT]) {
    let mut acc = [[_mm256_setzero_ps(); 2]; NT];
    for i in 0..nb / 2 {
        // SAFETY (all loads): the entry point checked `nb` groups of 16 bytes per row.
        let x: __m256bh = unsafe { std::mem::transmute(_mm256_loadu_si256(w.add(32 * i).cast())) };
        for t in 0..NT {
            let y: __m256bh = unsafe { std::mem::transmute(_mm256_loadu_si256(a.add(t * astride + 32 * i).cast())) };
            acc[t][i & 1] = _mm256_dpbf16_ps(acc[t][i & 1], x, y);
        }
    }
    let mut tail = [_mm_setzero_ps(); NT];
    if nb % 2 == 1 {
        let off = 32 * (nb / 2);
        let x: __m128bh = unsafe { std::mem::transmute(_mm_loadu_si128(w.add(off).cast())) };
        for t in 0..NT {
            let y: __m128bh = unsafe { std::mem::transmute(_mm_loadu_si128(a.add(t * astride + off).cast())) };
            tail[t] = _mm_dpbf16_ps(tail[t], x, y);
        }
    }
    for t in 0..NT {
        out[t] = hsum_f32(_mm256_add_ps(acc[t][0], acc[t][1])) + hsum_f32x4(tail[t]);
    }
}

entry!(vd_bf16_8, vd4_bf16_8, bf16, 8, 16, 16);

/// The BF16 kernels; None without AVX-512 BF16 or for any other type.
pub fn table(ty: GgmlType) -> Option<CpuKernels> {
    if ty != GgmlType::BF16 || !detected() {
        return None;
    }
    let (vec_dot, x4): (VecDot, VecDotX4) = float_entries!(GgmlType::BF16, vd_bf16_8, vd4_bf16_8);
    let base = *scalar_kernels(ty)?;
    Some(CpuKernels { k: crate::quant::Kernels { vec_dot, ..base }, vec_dot_x4: Some(x4), isa: "avx512bf16" })
}
