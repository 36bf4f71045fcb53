//! AVX2 (+FMA, F16C) dot products of weight rows with quantized activation rows.
//!
//! Each kernel is generic over `NT`, the number of activation rows (tokens) it dots with one
//! weight row: `NT = 1` is the matrix-vector product, `NT = 4` the prefill tile that decodes
//! every weight block once for four tokens. Integer block sums are exactly the scalar ones
//! (`_mm256_maddubs_epi16` never saturates on these operand ranges: |u8·i8 pair| ≤ 2·128·127),
//! only the float accumulation order differs. Only reached through [`table`], which checks the
//! CPU first.

#![allow(clippy::needless_range_loop)] // the tile loops index several arrays by token

use core::arch::x86_64::*;
use std::mem::{offset_of, size_of};

use super::kernels::{CpuKernels, VecDot, VecDotX4, float_entries};
use crate::quant::formats::{
    BlockIQ1M, BlockIQ1S, BlockIQ2XXS, BlockIQ4NL, BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K,
    BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8_1, BlockQ8K,
};
use crate::quant::iq_tables::{IQ1S_GRID, IQ2XXS_GRID, KSIGNS_IQ2XS};
use crate::quant::{GgmlType, scalar_kernels};

/// True if this CPU runs these kernels.
pub fn detected() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

// ------------------------------------------------------------------------------------------
// Helpers.

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_f32(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_f32x4(s: __m128) -> f32 {
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// f16 (little-endian at `p`) to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = unsafe { p.cast::<u16>().read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f32_at(p: *const u8) -> f32 {
    unsafe { p.cast::<f32>().read_unaligned() }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn load256(p: *const u8) -> __m256i {
    unsafe { _mm256_loadu_si256(p.cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load128(p: *const u8) -> __m128i {
    unsafe { _mm_loadu_si128(p.cast()) }
}

/// Σ of adjacent u8·i8 products, in 8 i32 lanes (each lane: 4 products).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn mul_sum_us8(a: __m256i, b: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1))
}

/// How the kernels multiply-accumulate bytes (their `VNNI` parameter): AVX2's
/// `vpmaddubsw` + `vpmaddwd` pair, or one VNNI instruction in its AVX-512 (EVEX, `x86_avx512`)
/// or AVX-VNNI (VEX, `x86_avxvnni`) encoding. A VNNI kind is only instantiated inside functions
/// compiled with its target features.
pub(super) const NO_VNNI: u8 = 0;
pub(super) const AVX512_VNNI: u8 = 1;
pub(super) const AVX_VNNI: u8 = 2;

/// `mul_sum_us8`, or one `vpdpbusd`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_us8<const VNNI: u8>(a: __m256i, b: __m256i) -> __m256i {
    match VNNI {
        AVX512_VNNI => unsafe { _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b) },
        AVX_VNNI => unsafe { _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), a, b) },
        _ => mul_sum_us8(a, b),
    }
}

/// `acc + madd(a, b)` (i16 pairs to i32), or one `vpdpwssd`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn madd_acc<const VNNI: u8>(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    match VNNI {
        AVX512_VNNI => unsafe { _mm256_dpwssd_epi32(acc, a, b) },
        AVX_VNNI => unsafe { _mm256_dpwssd_avx_epi32(acc, a, b) },
        _ => _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)),
    }
}

/// 16 bytes of nibbles → 32 bytes: low nibbles in lanes 0..16, high nibbles in 16..32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn nibbles32(p: *const u8) -> __m256i {
    let t = unsafe { load128(p) };
    _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0f))
}

/// 32 bits → 32 bytes, 0xff where the bit is set (byte j ↔ bit j).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn bits32(p: *const u8) -> __m256i {
    byte_mask(unsafe { p.cast::<u32>().read_unaligned() })
}

/// The bits of `x` → 32 bytes, 0xff where the bit is set (byte j ↔ bit j).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn byte_mask(x: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

/// The non-linear IQ4 levels, in both 128-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn iq4_table() -> __m256i {
    let t = _mm_setr_epi8(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
    _mm256_set_m128i(t, t)
}

// ------------------------------------------------------------------------------------------
// 32-element blocks paired with Q8_0 (34-byte blocks) or Q8_1 (36-byte blocks).

/// Q4_0 block `x`'s 32 quants as signed bytes (element j in byte j; the same for the others).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_0_quants(x: *const u8) -> __m256i {
    _mm256_sub_epi8(unsafe { nibbles32(x.add(offset_of!(BlockQ4_0, qs))) }, _mm256_set1_epi8(8))
}

/// Q5_0: `q - 16` is the nibble with 0xf0 or'ed in where the fifth bit is clear.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_0_quants(x: *const u8) -> __m256i {
    let hi = _mm256_andnot_si256(unsafe { bits32(x.add(offset_of!(BlockQ5_0, qh))) }, _mm256_set1_epi8(0xf0u8 as i8));
    _mm256_or_si256(unsafe { nibbles32(x.add(offset_of!(BlockQ5_0, qs))) }, hi)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_0_quants(x: *const u8) -> __m256i {
    unsafe { load256(x.add(offset_of!(BlockQ8_0, qs))) }
}

/// IQ4_NL: the nibbles looked up in `table` ([`iq4_table`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn iq4_nl_quants(x: *const u8, table: __m256i) -> __m256i {
    _mm256_shuffle_epi8(table, unsafe { nibbles32(x.add(offset_of!(BlockIQ4NL, qs))) })
}

/// Q4_1 block `x`'s 32 quants as unsigned bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_1_quants(x: *const u8) -> __m256i {
    unsafe { nibbles32(x.add(offset_of!(BlockQ4_1, qs))) }
}

/// Q5_1: the nibble plus 16 where the fifth bit is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_1_quants(x: *const u8) -> __m256i {
    let hi = _mm256_and_si256(unsafe { bits32(x.add(offset_of!(BlockQ5_1, qh))) }, _mm256_set1_epi8(0x10));
    _mm256_or_si256(unsafe { nibbles32(x.add(offset_of!(BlockQ5_1, qs))) }, hi)
}

/// Signed weights (i8 in `qx`, scale `dx`) against Q8_0 rows: the shared inner step.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn step_signed_q8_0<const NT: usize, const VNNI: u8>(
    dx: f32,
    qx: __m256i,
    y: *const u8,
    astride: usize,
    acc: &mut [__m256; NT],
) {
    let ax = _mm256_sign_epi8(qx, qx);
    for (t, a) in acc.iter_mut().enumerate() {
        let yb = unsafe { y.add(t * astride) };
        let d = _mm256_set1_ps(dx * unsafe { f16_at(yb) });
        let qy = unsafe { load256(yb.add(2)) };
        let p = unsafe { dot_us8::<VNNI>(ax, _mm256_sign_epi8(qy, qx)) };
        *a = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), *a);
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_0<const NT: usize, const VNNI: u8>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    // Two accumulator sets (even and odd blocks): no FMA latency chain in the matvec.
    let mut acc = [[_mm256_setzero_ps(); NT]; 2];
    for i in 0..nb {
        let x = unsafe { w.add(i * size_of::<BlockQ4_0>()) };
        let qx = unsafe { q4_0_quants(x) };
        unsafe { step_signed_q8_0::<NT, VNNI>(f16_at(x), qx, a.add(i * Q8_0_BYTES), astride, &mut acc[i & 1]) };
    }
    for t in 0..NT {
        out[t] = hsum_f32(_mm256_add_ps(acc[0][t], acc[1][t]));
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_0<const NT: usize, const VNNI: u8>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    // Two accumulator sets (even and odd blocks): no FMA latency chain in the matvec.
    let mut acc = [[_mm256_setzero_ps(); NT]; 2];
    for i in 0..nb {
        let x = unsafe { w.add(i * size_of::<BlockQ5_0>()) };
        let qx = unsafe { q5_0_quants(x) };
        unsafe { step_signed_q8_0::<NT, VNNI>(f16_at(x), qx, a.add(i * Q8_0_BYTES), astride, &mut acc[i & 1]) };
    }
    for t in 0..NT {
        out[t] = hsum_f32(_mm256_add_ps(acc[0][t], acc[1][t]));
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_0<const NT: usize, const VNNI: u8>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    // Two accumulator sets (even and odd blocks): no FMA latency chain in the matvec.
    let mut acc = [[_mm256_setzero_ps(); NT]; 2];
    for i in 0..nb {
        let x = unsafe { w.add(i * size_of::<BlockQ8_0>()) };
        let qx = unsafe { q8_0_quants(x) };
        unsafe { step_signed_q8_0::<NT, VNNI>(f16_at(x), qx, a.add(i * Q8_0_BYTES), astride, &mut acc[i & 1]) };
    }
    for t in 0..NT {
        out[t] = hsum_f32(_mm256_add_ps(acc[0][t], acc[1][t]));
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn iq4_nl<const NT: usize, const VNNI: u8>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    // Two accumulator sets (even and odd blocks): no FMA latency chain in the matvec.
    let mut acc = [[_mm256_setzero_ps(); NT]; 2];
    let table = iq4_table();
    for i in 0..nb {
        let x = unsafe { w.add(i * size_of::<BlockIQ4NL>()) };
        let qx = unsafe { iq4_nl_quants(x, table) };
        unsafe { step_signed_q8_0::<NT, VNNI>(f16_at(x), qx, a.add(i * Q8_0_BYTES), astride, &mut acc[i & 1]) };
    }
    for t in 0..NT {
        out[t] = hsum_f32(_mm256_add_ps(acc[0][t], acc[1][t]));
    }
}

/// Unsigned weights with a min (`m`) against Q8_1 rows: `d·dy·Σq·y + m·s_y`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn step_unsigned_q8_1<const NT: usize, const VNNI: u8>(
    dx: f32,
    mx: f32,
    qx: __m256i,
    y: *const u8,
    astride: usize,
    acc: &mut [__m256; NT],
    accm: &mut [f32; NT],
) {
    for t in 0..NT {
        let yb = unsafe { y.add(t * astride) };
        let d = _mm256_set1_ps(dx * unsafe { f16_at(yb) });
        accm[t] += mx * unsafe { f16_at(yb.add(2)) };
        let p = unsafe { dot_us8::<VNNI>(qx, load256(yb.add(4))) };
        acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[t]);
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_1<const NT: usize, const VNNI: u8>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    // Two accumulator sets (even and odd blocks): no FMA latency chain in the matvec.
    let mut acc = [[_mm256_setzero_ps(); NT]; 2];
    let mut accm = [0f32; NT];
    for i in 0..nb {
        let x = unsafe { w.add(i * size_of::<BlockQ4_1>()) };
        let qx = unsafe { q4_1_quants(x) };
        unsafe {
            step_unsigned_q8_1::<NT, VNNI>(
                f16_at(x),
                f16_at(x.add(2)),
                qx,
                a.add(i * Q8_1_BYTES),
                astride,
                &mut acc[i & 1],
                &mut accm,
            )
        };
    }
    for t in 0..NT {
        out[t] = hsum_f32(_mm256_add_ps(acc[0][t], acc[1][t])) + accm[t];
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_1<const NT: usize, const VNNI: u8>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    // Two accumulator sets (even and odd blocks): no FMA latency chain in the matvec.
    let mut acc = [[_mm256_setzero_ps(); NT]; 2];
    let mut accm = [0f32; NT];
    for i in 0..nb {
        let x = unsafe { w.add(i * size_of::<BlockQ5_1>()) };
        let qx = unsafe { q5_1_quants(x) };
        unsafe {
            step_unsigned_q8_1::<NT, VNNI>(
                f16_at(x),
                f16_at(x.add(2)),
                qx,
                a.add(i * Q8_1_BYTES),
                astride,
                &mut acc[i & 1],
                &mut accm,
            )
        };
    }
    for t in 0..NT {
        out[t] = hsum_f32(_mm256_add_ps(acc[0][t], acc[1][t])) + accm[t];
    }
}

// ------------------------------------------------------------------------------------------
// 256-element super-blocks paired with Q8_K (292 bytes: f32 d, 256 i8, 16 i16 bsums).

pub(super) const Q8K: usize = size_of::<BlockQ8K>();
pub(super) const Q8K_QS: usize = offset_of!(BlockQ8K, qs);
pub(super) const Q8K_BSUMS: usize = offset_of!(BlockQ8K, bsums);
pub(super) const Q8_0_BYTES: usize = size_of::<BlockQ8_0>();
pub(super) const Q8_1_BYTES: usize = size_of::<BlockQ8_1>();

/// The 8 scales and 8 mins of a Q4_K/Q5_K block as 16 bytes (scales first).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn k4_scales_mins(p: *const u8) -> __m128i {
    const K1: u32 = 0x3f3f3f3f;
    const K2: u32 = 0x0f0f0f0f;
    const K3: u32 = 0x03030303;
    let mut u = [0u32; 4];
    unsafe { std::ptr::copy_nonoverlapping(p, u.as_mut_ptr().cast::<u8>(), 12) };
    u[3] = ((u[2] >> 4) & K2) | (((u[1] >> 6) & K3) << 4);
    let uaux = u[1] & K1;
    u[1] = (u[2] & K2) | (((u[0] >> 6) & K3) << 4);
    u[2] = uaux;
    u[0] &= K1;
    _mm_setr_epi32(u[0] as i32, u[1] as i32, u[2] as i32, u[3] as i32)
}

/// i16 lane `k` of a 16-lane vector broadcast to all lanes (within-lane byte shuffle).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bcast16(v: __m256i, k: i32) -> __m256i {
    _mm256_shuffle_epi8(v, _mm256_set1_epi16((((2 * k + 1) << 8) | (2 * k)) as i16))
}

/// Shared body of Q4_K and Q5_K: `HIGH` adds the fifth bit from `qh`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k4_family<const NT: usize, const HIGH: bool, const VNNI: u8>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    let (bsize, qs_off) = if HIGH {
        (size_of::<BlockQ5K>(), offset_of!(BlockQ5K, qs))
    } else {
        (size_of::<BlockQ4K>(), offset_of!(BlockQ4K, qs))
    };
    let m4 = _mm256_set1_epi8(0x0f);
    let mut acc = [_mm256_setzero_ps(); NT];
    let mut accm = [_mm_setzero_ps(); NT];
    for i in 0..nb {
        let x = unsafe { w.add(i * bsize) };
        let (d, dmin) = unsafe { (f16_at(x), f16_at(x.add(2))) };
        let sm = _mm256_cvtepu8_epi16(unsafe { k4_scales_mins(x.add(4)) });
        let mins = _mm256_extracti128_si256(sm, 1);
        let sc128 = _mm256_castsi256_si128(sm);
        let scales = _mm256_set_m128i(sc128, sc128);
        let qh = if HIGH { unsafe { load256(x.add(16)) } } else { _mm256_setzero_si256() };
        let mut sumi = [_mm256_setzero_si256(); NT];
        for j in 0..4 {
            let bits = unsafe { load256(x.add(qs_off + 32 * j)) };
            let mut ql = _mm256_and_si256(bits, m4);
            let mut qhi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            if HIGH {
                // Bit 2j of qh[l] for the low half, 2j + 1 for the high half, moved to bit 4.
                let one = _mm256_set1_epi8(1);
                let sh = _mm_cvtsi32_si128(2 * j as i32);
                let hb = _mm256_srl_epi16(qh, sh);
                ql = _mm256_or_si256(ql, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
                qhi = _mm256_or_si256(qhi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 1), one), 4));
            }
            let sl = bcast16(scales, 2 * j as i32);
            let sh = bcast16(scales, 2 * j as i32 + 1);
            for t in 0..NT {
                let y = unsafe { a.add(t * astride + i * Q8K + Q8K_QS + 64 * j) };
                let pl = _mm256_maddubs_epi16(ql, unsafe { load256(y) });
                let ph = _mm256_maddubs_epi16(qhi, unsafe { load256(y.add(32)) });
                sumi[t] = unsafe { madd_acc::<VNNI>(madd_acc::<VNNI>(sumi[t], sl, pl), sh, ph) };
            }
        }
        for t in 0..NT {
            let y = unsafe { a.add(t * astride + i * Q8K) };
            let dy = unsafe { f32_at(y) };
            let bs = unsafe { load256(y.add(Q8K_BSUMS)) };
            let q8s = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            let prod = _mm_madd_epi16(mins, q8s);
            accm[t] = _mm_fmadd_ps(_mm_set1_ps(dmin * dy), _mm_cvtepi32_ps(prod), accm[t]);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * dy), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
        }
    }
    for t in 0..NT {
        out[t] = hsum_f32(acc[t]) - hsum_f32x4(accm[t]);
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_k<const NT: usize, const VNNI: u8>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    unsafe { k4_family::<NT, false, VNNI>(nb, w, a, astride, out) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_k<const NT: usize, const VNNI: u8>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    unsafe { k4_family::<NT, true, VNNI>(nb, w, a, astride, out) }
}

// Q2_K, Q3_K and Q6_K: 16 sub-blocks of 16 weights, unsigned quants `u` with a per-format
// offset (`w = sc·(u - OFFSET)`; Q2_K has per-sub-block mins instead). They share the
// accumulate loop and differ only in how a 32-weight vector of `u` and the scales unpack.

const Q2_K: u8 = 0;
const Q3_K: u8 = 1;
pub(super) const Q6_K: u8 = 2;

/// The 16 Q3_K scales (6 bits from 12 packed bytes) minus 32, as i8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3_k_scales(p: *const u8) -> __m128i {
    let s = crate::quant::q3_k_scales(unsafe { &*p.cast::<[u8; 12]>() });
    let b: [i8; 16] = std::array::from_fn(|i| s[i] as i8);
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// Scales of groups `2v` and `2v + 1` (of the 16 i8 in `sc8`) as i16 lanes 0..8 and 8..16: the
/// lanes `vpmaddubsw` leaves the two 16-weight halves of vector `v` in.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pair_scales(sc8: __m128i, v: usize) -> __m256i {
    let g = 2 * v as i8;
    let mask = _mm_setr_epi8(g, g, g, g, g, g, g, g, g + 1, g + 1, g + 1, g + 1, g + 1, g + 1, g + 1, g + 1);
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, mask))
}

/// Bits `2k..2k+2` of each byte of `b`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn crumbs(b: __m256i, k: usize) -> __m256i {
    _mm256_and_si256(_mm256_srl_epi16(b, _mm_cvtsi32_si128(2 * k as i32)), _mm256_set1_epi8(3))
}

/// Unsigned quants of weights `32v..32v + 32` of the block at `x`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn k16_quants<const KIND: u8>(x: *const u8, v: usize) -> __m256i {
    let (half, k) = (v / 4, v % 4);
    match KIND {
        // Weight 128h + 32k + l: bits 2k of qs[32h + l].
        Q2_K => crumbs(unsafe { load256(x.add(16 + 32 * half)) }, k),
        // The same low bits, plus 4 where bit v of hmask[l] is set (the stored bit is inverted).
        Q3_K => {
            let low = crumbs(unsafe { load256(x.add(32 + 32 * half)) }, k);
            let hbit = _mm256_and_si256(
                _mm256_srl_epi16(unsafe { load256(x) }, _mm_cvtsi32_si128(v as i32)),
                _mm256_set1_epi8(1),
            );
            _mm256_or_si256(low, _mm256_slli_epi16(hbit, 2))
        }
        // Nibble k/2 of ql[64h + 32(k%2) + l], bits 2k of qh[32h + l] on top.
        _ => {
            let b = unsafe { load256(x.add(64 * half + 32 * (k % 2))) };
            let low = if k < 2 { b } else { _mm256_srli_epi16(b, 4) };
            let high = crumbs(unsafe { load256(x.add(128 + 32 * half)) }, k);
            _mm256_or_si256(_mm256_and_si256(low, _mm256_set1_epi8(0x0f)), _mm256_slli_epi16(high, 4))
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k16_family<const NT: usize, const KIND: u8, const VNNI: u8>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    // Block bytes and log2 of the quant offset.
    let (bsize, offset_log2) = match KIND {
        Q2_K => (size_of::<BlockQ2K>(), None),
        Q3_K => (size_of::<BlockQ3K>(), Some(2)),
        _ => (size_of::<BlockQ6K>(), Some(5)),
    };
    let mut acc = [_mm256_setzero_ps(); NT];
    let mut accm = [_mm256_setzero_ps(); NT];
    for i in 0..nb {
        let x = unsafe { w.add(i * bsize) };
        // Super-scale, 16 scales (i8), and for Q2_K the min scale and 16 mins (i16).
        let (d, sc8, dmin, mins) = match KIND {
            Q2_K => {
                let packed = unsafe { load128(x) };
                let sc8 = _mm_and_si128(packed, _mm_set1_epi8(0x0f));
                let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0f)));
                unsafe { (f16_at(x.add(80)), sc8, f16_at(x.add(82)), mins) }
            }
            Q3_K => unsafe { (f16_at(x.add(108)), q3_k_scales(x.add(96)), 0.0, _mm256_setzero_si256()) },
            _ => unsafe { (f16_at(x.add(208)), load128(x.add(192)), 0.0, _mm256_setzero_si256()) },
        };
        let mut sumi = [_mm256_setzero_si256(); NT];
        for v in 0..8 {
            let q = unsafe { k16_quants::<KIND>(x, v) };
            let s = pair_scales(sc8, v);
            for t in 0..NT {
                let y = unsafe { load256(a.add(t * astride + i * Q8K + Q8K_QS + 32 * v)) };
                sumi[t] = unsafe { madd_acc::<VNNI>(sumi[t], s, _mm256_maddubs_epi16(q, y)) };
            }
        }
        for t in 0..NT {
            let y = unsafe { a.add(t * astride + i * Q8K) };
            let dy = unsafe { f32_at(y) };
            let bs = unsafe { load256(y.add(Q8K_BSUMS)) };
            if let Some(sh) = offset_log2 {
                // The offset: OFFSET·Σ_g sc[g]·bsum[g].
                let off = _mm256_sll_epi32(_mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), bs), _mm_cvtsi32_si128(sh));
                sumi[t] = _mm256_sub_epi32(sumi[t], off);
            }
            if KIND == Q2_K {
                accm[t] = _mm256_fmadd_ps(
                    _mm256_set1_ps(dmin * dy),
                    _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bs)),
                    accm[t],
                );
            }
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * dy), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
        }
    }
    for t in 0..NT {
        out[t] = if KIND == Q2_K { hsum_f32(acc[t]) - hsum_f32(accm[t]) } else { hsum_f32(acc[t]) };
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn iq4_xs<const NT: usize, const VNNI: u8>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    let m4 = _mm256_set1_epi8(0x0f);
    let table = iq4_table();
    let mut acc = [_mm256_setzero_ps(); NT];
    for i in 0..nb {
        let x = unsafe { w.add(i * size_of::<BlockIQ4XS>()) };
        let d = unsafe { f16_at(x) };
        let sh = unsafe { x.add(2).cast::<u16>().read_unaligned() } as u32;
        let mut sumi = [_mm256_setzero_si256(); NT];
        for p in 0..4 {
            let bits = unsafe { load256(x.add(8 + 32 * p)) };
            let lo = _mm256_and_si256(bits, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            // Sub-block 2p is [lo.low128, hi.low128], 2p + 1 is [lo.high128, hi.high128].
            let q = [
                _mm256_shuffle_epi8(table, _mm256_permute2x128_si256(lo, hi, 0x20)),
                _mm256_shuffle_epi8(table, _mm256_permute2x128_si256(lo, hi, 0x31)),
            ];
            for (h, qx) in q.iter().enumerate() {
                let ib = 2 * p + h;
                let sl = unsafe { *x.add(4 + ib / 2) } as u32;
                let ls = (((sl >> (4 * (ib % 2))) & 0x0f) | (((sh >> (2 * ib)) & 3) << 4)) as i16 - 32;
                let ls = _mm256_set1_epi16(ls);
                let ax = _mm256_sign_epi8(*qx, *qx);
                for t in 0..NT {
                    let y = unsafe { load256(a.add(t * astride + i * Q8K + Q8K_QS + 32 * ib)) };
                    let p16 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(y, *qx));
                    sumi[t] = unsafe { madd_acc::<VNNI>(sumi[t], ls, p16) };
                }
            }
        }
        for t in 0..NT {
            let dy = unsafe { f32_at(a.add(t * astride + i * Q8K)) };
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * dy), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
        }
    }
    for t in 0..NT {
        out[t] = hsum_f32(acc[t]);
    }
}

// ------------------------------------------------------------------------------------------
// IQ2_XXS, IQ1_S, IQ1_M: grid-coded weights, rebuilt per 32-weight sub-block from lookups,
// then the same signed accumulate as IQ4_XS (`acc_sign32`).

/// `sumi[t] += madd(ls, Σ pairs of ax·sign(y_t, sgn))` for the 32 Q8_K bytes of token `t` at
/// `y + t·astride`: weights `|w| = ax`, signs from `sgn` (w = 0 only where ax = 0).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn acc_sign32<const NT: usize>(
    ax: __m256i,
    sgn: __m256i,
    ls: __m256i,
    y: *const u8,
    astride: usize,
    sumi: &mut [__m256i; NT],
) {
    for t in 0..NT {
        let qy = unsafe { load256(y.add(t * astride)) };
        let p = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(qy, sgn));
        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(ls, p));
    }
}

/// Four 8-byte grid rows as one vector (row `idx[0]` in bytes 0..8).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn grid4(grid: &[u64], idx: [usize; 4]) -> __m256i {
    _mm256_set_epi64x(grid[idx[3]] as i64, grid[idx[2]] as i64, grid[idx[1]] as i64, grid[idx[0]] as i64)
}

/// The per-block tail shared by the grid formats: `acc[t] += scale·dy_t·sumi[t]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_into<const NT: usize>(
    scale: f32,
    y: *const u8,
    astride: usize,
    sumi: &[__m256i; NT],
    acc: &mut [__m256; NT],
) {
    for t in 0..NT {
        let dy = unsafe { f32_at(y.add(t * astride)) };
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(scale * dy), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq2_xxs<const NT: usize>(nb: usize, w: *const u8, a: *const u8, astride: usize, out: &mut [f32; NT]) {
    let one = _mm256_set1_epi8(1);
    let mut acc = [_mm256_setzero_ps(); NT];
    for i in 0..nb {
        let x = unsafe { w.add(i * size_of::<BlockIQ2XXS>()) };
        let mut sumi = [_mm256_setzero_si256(); NT];
        for ib in 0..8 {
            let q = unsafe { x.add(2 + 8 * ib) };
            let idx: [usize; 4] = std::array::from_fn(|l| unsafe { *q.add(l) } as usize);
            let aux = unsafe { q.add(4).cast::<u32>().read_unaligned() };
            // Group l's 7 sign bits, expanded to 8 with even parity; byte j ↔ bit j of the word.
            let signs =
                (0..4).fold(0u32, |s, l| s | (KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize] as u32) << (8 * l));
            let sgn = _mm256_or_si256(byte_mask(signs), one);
            let ls = _mm256_set1_epi16((2 * (aux >> 28) + 1) as i16);
            unsafe {
                acc_sign32::<NT>(
                    grid4(&IQ2XXS_GRID, idx),
                    sgn,
                    ls,
                    a.add(i * Q8K + Q8K_QS + 32 * ib),
                    astride,
                    &mut sumi,
                )
            };
        }
        unsafe { scale_into::<NT>(0.125 * f16_at(x), a.add(i * Q8K), astride, &sumi, &mut acc) };
    }
    for t in 0..NT {
        out[t] = hsum_f32(acc[t]);
    }
}

/// IQ1 weights as integers: `8·grid + delta` (delta ±1 per byte, from `delta`), so one dot
/// product carries both terms of `grid + delta/8`; the caller scales by 1/8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn iq1_weights(grid: __m256i, delta: __m256i) -> __m256i {
    // 8·g per byte: the 16-bit shift carries 3 bits into the next byte, the mask drops them.
    let g8 = _mm256_and_si256(_mm256_slli_epi16(grid, 3), _mm256_set1_epi8(0xf8u8 as i8));
    _mm256_add_epi8(g8, delta)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq1_s<const NT: usize>(nb: usize, w: *const u8, a: *const u8, astride: usize, out: &mut [f32; NT]) {
    let mut acc = [_mm256_setzero_ps(); NT];
    for i in 0..nb {
        let x = unsafe { w.add(i * size_of::<BlockIQ1S>()) };
        let mut sumi = [_mm256_setzero_si256(); NT];
        for ib in 0..8 {
            let qh = unsafe { x.add(34 + 2 * ib).cast::<u16>().read_unaligned() } as usize;
            let idx: [usize; 4] =
                std::array::from_fn(|l| unsafe { *x.add(2 + 4 * ib + l) } as usize | (((qh >> (3 * l)) & 7) << 8));
            let delta = _mm256_set1_epi8(if qh & 0x8000 != 0 { -1 } else { 1 });
            let q = iq1_weights(grid4(&IQ1S_GRID, idx), delta);
            let ls = _mm256_set1_epi16((2 * ((qh >> 12) & 7) + 1) as i16);
            unsafe {
                acc_sign32::<NT>(_mm256_sign_epi8(q, q), q, ls, a.add(i * Q8K + Q8K_QS + 32 * ib), astride, &mut sumi)
            };
        }
        unsafe { scale_into::<NT>(0.125 * f16_at(x), a.add(i * Q8K), astride, &sumi, &mut acc) };
    }
    for t in 0..NT {
        out[t] = hsum_f32(acc[t]);
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq1_m<const NT: usize>(nb: usize, w: *const u8, a: *const u8, astride: usize, out: &mut [f32; NT]) {
    let mut acc = [_mm256_setzero_ps(); NT];
    for i in 0..nb {
        let x = unsafe { w.add(i * size_of::<BlockIQ1M>()) };
        let sc: [u16; 4] = std::array::from_fn(|k| unsafe { x.add(48 + 2 * k).cast::<u16>().read_unaligned() });
        // The f16 super-scale, spread over the top nibbles of the four scale words.
        let d_bits = (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
        let d = crate::quant::f16_bits_to_f32(d_bits.to_le_bytes());
        let mut sumi = [_mm256_setzero_si256(); NT];
        for ib in 0..8 {
            let h: [usize; 4] =
                std::array::from_fn(|l| (unsafe { *x.add(32 + 2 * ib + l / 2) } as usize) >> (4 * (l % 2)));
            let idx: [usize; 4] = std::array::from_fn(|l| unsafe { *x.add(4 * ib + l) } as usize | ((h[l] & 7) << 8));
            // Group l's delta sign, as 8 bytes of ±1.
            let dl = |l: usize| (if h[l] & 8 != 0 { 0xffu64 } else { 1 } * 0x0101_0101_0101_0101) as i64;
            let delta = _mm256_set_epi64x(dl(3), dl(2), dl(1), dl(0));
            let q = iq1_weights(grid4(&IQ1S_GRID, idx), delta);
            // Two odd scales: weights 0..16 (i16 lanes 0..8) and 16..32.
            let s = (sc[ib / 2] >> (6 * (ib % 2))) as i16;
            let ls = _mm256_set_m128i(_mm_set1_epi16(2 * ((s >> 3) & 7) + 1), _mm_set1_epi16(2 * (s & 7) + 1));
            unsafe {
                acc_sign32::<NT>(_mm256_sign_epi8(q, q), q, ls, a.add(i * Q8K + Q8K_QS + 32 * ib), astride, &mut sumi)
            };
        }
        unsafe { scale_into::<NT>(0.125 * d, a.add(i * Q8K), astride, &sumi, &mut acc) };
    }
    for t in 0..NT {
        out[t] = hsum_f32(acc[t]);
    }
}

// ------------------------------------------------------------------------------------------
// Float rows (`nb` counts 8-element groups; the tail is done by the caller's scalar).

const FLOAT_F32: u8 = 0;
const FLOAT_F16: u8 = 1;
const FLOAT_BF16: u8 = 2;

/// Eight elements of a `KIND` row at `p` as f32 (bf16: the bits are the top half of an f32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_f32x8<const KIND: u8>(p: *const u8) -> __m256 {
    match KIND {
        FLOAT_F16 => _mm256_cvtph_ps(unsafe { load128(p) }),
        FLOAT_BF16 => _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(unsafe { load128(p) }), 16)),
        _ => unsafe { _mm256_loadu_ps(p.cast()) },
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn floats<const NT: usize, const KIND: u8>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    let group = if KIND == FLOAT_F32 { 32 } else { 16 };
    let mut acc = [[_mm256_setzero_ps(); 2]; NT];
    for i in 0..nb {
        let x = unsafe { load_f32x8::<KIND>(w.add(group * i)) };
        for t in 0..NT {
            let y = unsafe { load_f32x8::<KIND>(a.add(t * astride + group * i)) };
            acc[t][i & 1] = _mm256_fmadd_ps(x, y, acc[t][i & 1]);
        }
    }
    for t in 0..NT {
        out[t] = hsum_f32(_mm256_add_ps(acc[t][0], acc[t][1]));
    }
}

// ------------------------------------------------------------------------------------------
// Safe entry points and the table.

/// The AVX2 instantiations `$kernel::<NT, $generics>` (VNNI kind `NO_VNNI` for the kernels
/// shared with the VNNI tables).
macro_rules! plain {
    ($($name:ident = $kernel:ident [$($g:tt)*]),*) => {$(
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const NT: usize>(nb: usize, w: *const u8, a: *const u8, s: usize, o: &mut [f32; NT]) {
            unsafe { $kernel::<NT, $($g)*>(nb, w, a, s, o) }
        }
    )*};
}
plain!(
    q4_0_plain = q4_0[NO_VNNI],
    q5_0_plain = q5_0[NO_VNNI],
    q8_0_plain = q8_0[NO_VNNI],
    iq4_nl_plain = iq4_nl[NO_VNNI],
    q4_1_plain = q4_1[NO_VNNI],
    q5_1_plain = q5_1[NO_VNNI],
    q4_k_plain = q4_k[NO_VNNI],
    q5_k_plain = q5_k[NO_VNNI],
    q6_k_plain = k16_family[Q6_K, NO_VNNI],
    iq4_xs_plain = iq4_xs[NO_VNNI],
    q2_k_plain = k16_family[Q2_K, NO_VNNI],
    q3_k_plain = k16_family[Q3_K, NO_VNNI],
    f32_plain = floats[FLOAT_F32],
    f16_plain = floats[FLOAT_F16],
    bf16_plain = floats[FLOAT_BF16]
);

/// Safe `vec_dot` and `vec_dot_x4` wrappers around one generic kernel: checks the slice
/// lengths, then calls the kernel (sound only because [`table`] is built after [`detected`]).
macro_rules! entry {
    ($one:ident, $four:ident, $kernel:ident, $elems:expr, $wblock:expr, $ablock:expr) => {
        fn $one(n: usize, w: &[u8], act: &[u8]) -> f32 {
            let nb = n / $elems;
            assert!(n % $elems == 0 && w.len() >= nb * $wblock && act.len() >= nb * $ablock);
            let mut o = [0f32; 1];
            // SAFETY: CPU features checked before the table was built; lengths checked above.
            unsafe { $kernel::<1>(nb, w.as_ptr(), act.as_ptr(), 0, &mut o) };
            o[0]
        }
        fn $four(n: usize, w: &[u8], act: &[u8], stride: usize, out: &mut [f32; 4]) {
            let nb = n / $elems;
            assert!(n % $elems == 0 && w.len() >= nb * $wblock && stride >= nb * $ablock);
            assert!(act.len() >= 3 * stride + nb * $ablock);
            // SAFETY: as above.
            unsafe { $kernel::<4>(nb, w.as_ptr(), act.as_ptr(), stride, out) };
        }
    };
}

pub(super) use entry;

/// One VNNI flavour of the 32-element kernels (`x86_avx512`, `x86_avxvnni`): their
/// instantiations compiled with `$features` and the byte product `$kind`, the safe entry points,
/// and `table(ty)`, which hands them out only when the file's `detected()` holds.
macro_rules! vnni_flavour {
    ($features:literal, $kind:expr, $isa:literal) => {
        use super::kernels::{CpuKernels, VecDot, VecDotX4};
        use super::x86_avx2::{Q8_0_BYTES, Q8_1_BYTES, entry, iq4_nl, q4_0, q4_1, q5_0, q5_1, q8_0};
        use crate::quant::formats::{BlockIQ4NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
        use crate::quant::{GgmlType, scalar_kernels};
        use std::mem::size_of;

        /// `kernel::<NT, $kind>` compiled with the flavour's features.
        macro_rules! flavoured {
            ($name:ident = $kernel:ident) => {
                #[target_feature(enable = $features)]
                unsafe fn $name<const NT: usize>(nb: usize, w: *const u8, a: *const u8, s: usize, o: &mut [f32; NT]) {
                    unsafe { $kernel::<NT, { $kind }>(nb, w, a, s, o) }
                }
            };
        }
        flavoured!(q4_0_vnni = q4_0);
        flavoured!(q5_0_vnni = q5_0);
        flavoured!(q8_0_vnni = q8_0);
        flavoured!(iq4_nl_vnni = iq4_nl);
        flavoured!(q4_1_vnni = q4_1);
        flavoured!(q5_1_vnni = q5_1);

        entry!(vd_q4_0, vd4_q4_0, q4_0_vnni, 32, size_of::<BlockQ4_0>(), Q8_0_BYTES);
        entry!(vd_q5_0, vd4_q5_0, q5_0_vnni, 32, size_of::<BlockQ5_0>(), Q8_0_BYTES);
        entry!(vd_q8_0, vd4_q8_0, q8_0_vnni, 32, size_of::<BlockQ8_0>(), Q8_0_BYTES);
        entry!(vd_iq4_nl, vd4_iq4_nl, iq4_nl_vnni, 32, size_of::<BlockIQ4NL>(), Q8_0_BYTES);
        entry!(vd_q4_1, vd4_q4_1, q4_1_vnni, 32, size_of::<BlockQ4_1>(), Q8_1_BYTES);
        entry!(vd_q5_1, vd4_q5_1, q5_1_vnni, 32, size_of::<BlockQ5_1>(), Q8_1_BYTES);

        /// The VNNI kernels for `ty`; None without the CPU features or for types that stay AVX2.
        pub fn table(ty: GgmlType) -> Option<CpuKernels> {
            use GgmlType as T;
            if !detected() {
                return None;
            }
            let (vec_dot, x4): (VecDot, VecDotX4) = match ty {
                T::Q4_0 => (vd_q4_0, vd4_q4_0),
                T::Q5_0 => (vd_q5_0, vd4_q5_0),
                T::Q8_0 => (vd_q8_0, vd4_q8_0),
                T::IQ4_NL => (vd_iq4_nl, vd4_iq4_nl),
                T::Q4_1 => (vd_q4_1, vd4_q4_1),
                T::Q5_1 => (vd_q5_1, vd4_q5_1),
                _ => return None,
            };
            let base = *scalar_kernels(ty)?;
            Some(CpuKernels { k: crate::quant::Kernels { vec_dot, ..base }, vec_dot_x4: Some(x4), isa: $isa })
        }
    };
}

pub(super) use vnni_flavour;

entry!(vd_q4_0, vd4_q4_0, q4_0_plain, 32, size_of::<BlockQ4_0>(), Q8_0_BYTES);
entry!(vd_q5_0, vd4_q5_0, q5_0_plain, 32, size_of::<BlockQ5_0>(), Q8_0_BYTES);
entry!(vd_q8_0, vd4_q8_0, q8_0_plain, 32, size_of::<BlockQ8_0>(), Q8_0_BYTES);
entry!(vd_iq4_nl, vd4_iq4_nl, iq4_nl_plain, 32, size_of::<BlockIQ4NL>(), Q8_0_BYTES);
entry!(vd_q4_1, vd4_q4_1, q4_1_plain, 32, size_of::<BlockQ4_1>(), Q8_1_BYTES);
entry!(vd_q5_1, vd4_q5_1, q5_1_plain, 32, size_of::<BlockQ5_1>(), Q8_1_BYTES);
entry!(vd_q4_k, vd4_q4_k, q4_k_plain, 256, size_of::<BlockQ4K>(), Q8K);
entry!(vd_q5_k, vd4_q5_k, q5_k_plain, 256, size_of::<BlockQ5K>(), Q8K);
entry!(vd_q6_k, vd4_q6_k, q6_k_plain, 256, size_of::<BlockQ6K>(), Q8K);
entry!(vd_iq4_xs, vd4_iq4_xs, iq4_xs_plain, 256, size_of::<BlockIQ4XS>(), Q8K);
entry!(vd_q2_k, vd4_q2_k, q2_k_plain, 256, size_of::<BlockQ2K>(), Q8K);
entry!(vd_q3_k, vd4_q3_k, q3_k_plain, 256, size_of::<BlockQ3K>(), Q8K);
entry!(vd_iq2_xxs, vd4_iq2_xxs, iq2_xxs, 256, size_of::<BlockIQ2XXS>(), Q8K);
entry!(vd_iq1_s, vd4_iq1_s, iq1_s, 256, size_of::<BlockIQ1S>(), Q8K);
entry!(vd_iq1_m, vd4_iq1_m, iq1_m, 256, size_of::<BlockIQ1M>(), Q8K);
entry!(vd_f32_8, vd4_f32_8, f32_plain, 8, 32, 32);
entry!(vd_f16_8, vd4_f16_8, f16_plain, 8, 16, 16);
entry!(vd_bf16_8, vd4_bf16_8, bf16_plain, 8, 16, 16);

/// The AVX2 kernels for `ty`, or None if this CPU lacks AVX2/FMA/F16C or the type has no
/// AVX2 kernel (the caller falls back to scalar).
pub fn table(ty: GgmlType) -> Option<CpuKernels> {
    use GgmlType as T;
    if !detected() {
        return None;
    }
    let (vec_dot, x4): (VecDot, VecDotX4) = match ty {
        T::Q4_0 => (vd_q4_0, vd4_q4_0),
        T::Q5_0 => (vd_q5_0, vd4_q5_0),
        T::Q8_0 => (vd_q8_0, vd4_q8_0),
        T::IQ4_NL => (vd_iq4_nl, vd4_iq4_nl),
        T::Q4_1 => (vd_q4_1, vd4_q4_1),
        T::Q5_1 => (vd_q5_1, vd4_q5_1),
        T::Q4_K => (vd_q4_k, vd4_q4_k),
        T::Q5_K => (vd_q5_k, vd4_q5_k),
        T::Q6_K => (vd_q6_k, vd4_q6_k),
        T::IQ4_XS => (vd_iq4_xs, vd4_iq4_xs),
        T::Q2_K => (vd_q2_k, vd4_q2_k),
        T::Q3_K => (vd_q3_k, vd4_q3_k),
        T::IQ2_XXS => (vd_iq2_xxs, vd4_iq2_xxs),
        T::IQ1_S => (vd_iq1_s, vd4_iq1_s),
        T::IQ1_M => (vd_iq1_m, vd4_iq1_m),
        T::F32 => float_entries!(T::F32, vd_f32_8, vd4_f32_8),
        T::F16 => float_entries!(T::F16, vd_f16_8, vd4_f16_8),
        T::BF16 => float_entries!(T::BF16, vd_bf16_8, vd4_bf16_8),
        _ => return None,
    };
    let base = *scalar_kernels(ty)?;
    Some(CpuKernels { k: crate::quant::Kernels { vec_dot, ..base }, vec_dot_x4: Some(x4), isa: "avx2" })
}
