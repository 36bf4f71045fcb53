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

use super::kernels::{CpuKernels, VecDot, VecDotX4};
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
fn hsum_f32x4(s: __m128) -> f32 {
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// f16 (little-endian at `p`) to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = unsafe { p.cast::<u16>().read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f32_at(p: *const u8) -> f32 {
    unsafe { p.cast::<f32>().read_unaligned() }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load256(p: *const u8) -> __m256i {
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
fn mul_sum_us8(a: __m256i, b: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1))
}

/// `mul_sum_us8`, or one VNNI `vpdpbusd` when `VNNI` (only instantiated inside functions
/// compiled with `avx512vnni,avx512vl`, see `x86_avx512`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_us8<const VNNI: bool>(a: __m256i, b: __m256i) -> __m256i {
    if VNNI { unsafe { _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b) } } else { mul_sum_us8(a, b) }
}

/// `acc + madd(a, b)` (i16 pairs to i32), one VNNI `vpdpwssd` when `VNNI`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn madd_acc<const VNNI: bool>(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    if VNNI { unsafe { _mm256_dpwssd_epi32(acc, a, b) } } else { _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)) }
}

/// 16 bytes of nibbles → 32 bytes: low nibbles in lanes 0..16, high nibbles in 16..32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles32(p: *const u8) -> __m256i {
    let t = unsafe { load128(p) };
    _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0f))
}

/// 32 bits → 32 bytes, 0xff where the bit is set (byte j ↔ bit j).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bits32(p: *const u8) -> __m256i {
    let x = unsafe { p.cast::<u32>().read_unaligned() };
    let shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

/// The non-linear IQ4 levels, in both 128-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn iq4_table() -> __m256i {
    let t = _mm_setr_epi8(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
    _mm256_set_m128i(t, t)
}

// ------------------------------------------------------------------------------------------
// 32-element blocks paired with Q8_0 (34-byte blocks) or Q8_1 (36-byte blocks).

/// Signed weights (i8 in `qx`, scale `dx`) against Q8_0 rows: the shared inner step.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn step_signed_q8_0<const NT: usize, const VNNI: bool>(
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
pub(super) unsafe fn q4_0<const NT: usize, const VNNI: bool>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    // Two accumulator sets (even and odd blocks): no FMA latency chain in the matvec.
    let mut acc = [[_mm256_setzero_ps(); NT]; 2];
    for i in 0..nb {
        let x = unsafe { w.add(i * 18) };
        let qx = _mm256_sub_epi8(unsafe { nibbles32(x.add(2)) }, _mm256_set1_epi8(8));
        unsafe { step_signed_q8_0::<NT, VNNI>(f16_at(x), qx, a.add(i * 34), astride, &mut acc[i & 1]) };
    }
    for t in 0..NT {
        out[t] = hsum_f32(_mm256_add_ps(acc[0][t], acc[1][t]));
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_0<const NT: usize, const VNNI: bool>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    // Two accumulator sets (even and odd blocks): no FMA latency chain in the matvec.
    let mut acc = [[_mm256_setzero_ps(); NT]; 2];
    for i in 0..nb {
        let x = unsafe { w.add(i * 22) };
        // q - 16: the nibble, with 0xf0 or'ed in where the fifth bit is clear.
        let hi = _mm256_andnot_si256(unsafe { bits32(x.add(2)) }, _mm256_set1_epi8(0xf0u8 as i8));
        let qx = _mm256_or_si256(unsafe { nibbles32(x.add(6)) }, hi);
        unsafe { step_signed_q8_0::<NT, VNNI>(f16_at(x), qx, a.add(i * 34), astride, &mut acc[i & 1]) };
    }
    for t in 0..NT {
        out[t] = hsum_f32(_mm256_add_ps(acc[0][t], acc[1][t]));
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_0<const NT: usize, const VNNI: bool>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    // Two accumulator sets (even and odd blocks): no FMA latency chain in the matvec.
    let mut acc = [[_mm256_setzero_ps(); NT]; 2];
    for i in 0..nb {
        let x = unsafe { w.add(i * 34) };
        let qx = unsafe { load256(x.add(2)) };
        unsafe { step_signed_q8_0::<NT, VNNI>(f16_at(x), qx, a.add(i * 34), astride, &mut acc[i & 1]) };
    }
    for t in 0..NT {
        out[t] = hsum_f32(_mm256_add_ps(acc[0][t], acc[1][t]));
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn iq4_nl<const NT: usize, const VNNI: bool>(
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
        let x = unsafe { w.add(i * 18) };
        let qx = _mm256_shuffle_epi8(table, unsafe { nibbles32(x.add(2)) });
        unsafe { step_signed_q8_0::<NT, VNNI>(f16_at(x), qx, a.add(i * 34), astride, &mut acc[i & 1]) };
    }
    for t in 0..NT {
        out[t] = hsum_f32(_mm256_add_ps(acc[0][t], acc[1][t]));
    }
}

/// Unsigned weights with a min (`m`) against Q8_1 rows: `d·dy·Σq·y + m·s_y`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn step_unsigned_q8_1<const NT: usize, const VNNI: bool>(
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
pub(super) unsafe fn q4_1<const NT: usize, const VNNI: bool>(
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
        let x = unsafe { w.add(i * 20) };
        let qx = unsafe { nibbles32(x.add(4)) };
        unsafe {
            step_unsigned_q8_1::<NT, VNNI>(
                f16_at(x),
                f16_at(x.add(2)),
                qx,
                a.add(i * 36),
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
pub(super) unsafe fn q5_1<const NT: usize, const VNNI: bool>(
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
        let x = unsafe { w.add(i * 24) };
        let hi = _mm256_and_si256(unsafe { bits32(x.add(4)) }, _mm256_set1_epi8(0x10));
        let qx = _mm256_or_si256(unsafe { nibbles32(x.add(8)) }, hi);
        unsafe {
            step_unsigned_q8_1::<NT, VNNI>(
                f16_at(x),
                f16_at(x.add(2)),
                qx,
                a.add(i * 36),
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

const Q8K: usize = 292;
const Q8K_QS: usize = 4;
const Q8K_BSUMS: usize = 260;

/// The 8 scales and 8 mins of a Q4_K/Q5_K block as 16 bytes (scales first).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k4_scales_mins(p: *const u8) -> __m128i {
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
unsafe fn k4_family<const NT: usize, const HIGH: bool, const VNNI: bool>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    let (bsize, qs_off) = if HIGH { (176, 48) } else { (144, 16) };
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
pub(super) unsafe fn q4_k<const NT: usize, const VNNI: bool>(
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
pub(super) unsafe fn q5_k<const NT: usize, const VNNI: bool>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    unsafe { k4_family::<NT, true, VNNI>(nb, w, a, astride, out) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6_k<const NT: usize, const VNNI: bool>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    let m4 = _mm256_set1_epi8(0x0f);
    let m3 = _mm256_set1_epi8(0x03);
    let mut acc = [_mm256_setzero_ps(); NT];
    for i in 0..nb {
        let x = unsafe { w.add(i * 210) };
        let d = unsafe { f16_at(x.add(208)) };
        let sc8 = unsafe { load128(x.add(192)) };
        let sc16 = _mm256_cvtepi8_epi16(sc8);
        let mut sumi = [_mm256_setzero_si256(); NT];
        for half in 0..2 {
            let ql = unsafe { x.add(64 * half) };
            let b1 = unsafe { load256(ql) };
            let b2 = unsafe { load256(ql.add(32)) };
            let bh = unsafe { load256(x.add(128 + 32 * half)) };
            for k in 0..4 {
                // Element 32k + l: nibble k/2 of ql[l + 32(k%2)], bits 2k..2k+2 of qh[l].
                let b = if k % 2 == 0 { b1 } else { b2 };
                let low = if k < 2 { b } else { _mm256_srli_epi16(b, 4) };
                let high = _mm256_and_si256(_mm256_srl_epi16(bh, _mm_cvtsi32_si128(2 * k as i32)), m3);
                let qk = _mm256_or_si256(_mm256_and_si256(low, m4), _mm256_slli_epi16(high, 4));
                // Scales of the two 16-element groups this vector covers: lanes 0..8, 8..16.
                let g = (8 * half + 2 * k) as i8;
                let mask =
                    _mm_setr_epi8(g, g, g, g, g, g, g, g, g + 1, g + 1, g + 1, g + 1, g + 1, g + 1, g + 1, g + 1);
                let s = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, mask));
                for t in 0..NT {
                    let y = unsafe { a.add(t * astride + i * Q8K + Q8K_QS + 128 * half + 32 * k) };
                    let p = _mm256_maddubs_epi16(qk, unsafe { load256(y) });
                    sumi[t] = unsafe { madd_acc::<VNNI>(sumi[t], s, p) };
                }
            }
        }
        for t in 0..NT {
            let y = unsafe { a.add(t * astride + i * Q8K) };
            // The -32 offset: 32·Σ_g sc[g]·bsum[g].
            let bs = unsafe { load256(y.add(Q8K_BSUMS)) };
            let off = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), 5);
            let s = _mm256_sub_epi32(sumi[t], off);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * unsafe { f32_at(y) }), _mm256_cvtepi32_ps(s), acc[t]);
        }
    }
    for t in 0..NT {
        out[t] = hsum_f32(acc[t]);
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn iq4_xs<const NT: usize, const VNNI: bool>(
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
        let x = unsafe { w.add(i * 136) };
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
// Float rows (`nb` counts 8-element groups; the tail is done by the caller's scalar).

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16<const NT: usize>(nb: usize, w: *const u8, a: *const u8, astride: usize, out: &mut [f32; NT]) {
    let mut acc = [[_mm256_setzero_ps(); 2]; NT];
    for i in 0..nb {
        let x = _mm256_cvtph_ps(unsafe { load128(w.add(16 * i)) });
        for t in 0..NT {
            let y = _mm256_cvtph_ps(unsafe { load128(a.add(t * astride + 16 * i)) });
            acc[t][i & 1] = _mm256_fmadd_ps(x, y, acc[t][i & 1]);
        }
    }
    for t in 0..NT {
        out[t] = hsum_f32(_mm256_add_ps(acc[t][0], acc[t][1]));
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f32<const NT: usize>(nb: usize, w: *const u8, a: *const u8, astride: usize, out: &mut [f32; NT]) {
    let mut acc = [[_mm256_setzero_ps(); 2]; NT];
    for i in 0..nb {
        let x = unsafe { _mm256_loadu_ps(w.add(32 * i).cast()) };
        for t in 0..NT {
            let y = unsafe { _mm256_loadu_ps(a.add(t * astride + 32 * i).cast()) };
            acc[t][i & 1] = _mm256_fmadd_ps(x, y, acc[t][i & 1]);
        }
    }
    for t in 0..NT {
        out[t] = hsum_f32(_mm256_add_ps(acc[t][0], acc[t][1]));
    }
}

// ------------------------------------------------------------------------------------------
// Safe entry points and the table.

/// The AVX2 instantiations of the kernels shared with the VNNI table.
macro_rules! plain {
    ($($name:ident = $kernel:ident),*) => {$(
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const NT: usize>(nb: usize, w: *const u8, a: *const u8, s: usize, o: &mut [f32; NT]) {
            unsafe { $kernel::<NT, false>(nb, w, a, s, o) }
        }
    )*};
}
plain!(
    q4_0_plain = q4_0,
    q5_0_plain = q5_0,
    q8_0_plain = q8_0,
    iq4_nl_plain = iq4_nl,
    q4_1_plain = q4_1,
    q5_1_plain = q5_1,
    q4_k_plain = q4_k,
    q5_k_plain = q5_k,
    q6_k_plain = q6_k,
    iq4_xs_plain = iq4_xs
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

entry!(vd_q4_0, vd4_q4_0, q4_0_plain, 32, 18, 34);
entry!(vd_q5_0, vd4_q5_0, q5_0_plain, 32, 22, 34);
entry!(vd_q8_0, vd4_q8_0, q8_0_plain, 32, 34, 34);
entry!(vd_iq4_nl, vd4_iq4_nl, iq4_nl_plain, 32, 18, 34);
entry!(vd_q4_1, vd4_q4_1, q4_1_plain, 32, 20, 36);
entry!(vd_q5_1, vd4_q5_1, q5_1_plain, 32, 24, 36);
entry!(vd_q4_k, vd4_q4_k, q4_k_plain, 256, 144, Q8K);
entry!(vd_q5_k, vd4_q5_k, q5_k_plain, 256, 176, Q8K);
entry!(vd_q6_k, vd4_q6_k, q6_k_plain, 256, 210, Q8K);
entry!(vd_iq4_xs, vd4_iq4_xs, iq4_xs_plain, 256, 136, Q8K);
entry!(vd_f16_8, vd4_f16_8, f16, 8, 16, 16);
entry!(vd_f32_8, vd4_f32_8, f32, 8, 32, 32);

/// Float rows of any length: SIMD over the multiple of 8, scalar over the rest.
fn float_tail(n: usize, w: &[u8], act: &[u8], width: usize, to_f32: fn(&[u8]) -> f32) -> f32 {
    (n / 8 * 8..n).map(|i| to_f32(&w[width * i..]) * to_f32(&act[width * i..])).sum()
}
fn le_f16(b: &[u8]) -> f32 {
    crate::quant::f16_bits_to_f32([b[0], b[1]])
}
fn le_f32(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
fn vd_f16(n: usize, w: &[u8], act: &[u8]) -> f32 {
    vd_f16_8(n / 8 * 8, w, act) + float_tail(n, w, act, 2, le_f16)
}
fn vd4_f16(n: usize, w: &[u8], act: &[u8], stride: usize, out: &mut [f32; 4]) {
    vd4_f16_8(n / 8 * 8, w, act, stride, out);
    for (t, o) in out.iter_mut().enumerate() {
        *o += float_tail(n, w, &act[t * stride..], 2, le_f16);
    }
}
fn vd_f32(n: usize, w: &[u8], act: &[u8]) -> f32 {
    vd_f32_8(n / 8 * 8, w, act) + float_tail(n, w, act, 4, le_f32)
}
fn vd4_f32(n: usize, w: &[u8], act: &[u8], stride: usize, out: &mut [f32; 4]) {
    vd4_f32_8(n / 8 * 8, w, act, stride, out);
    for (t, o) in out.iter_mut().enumerate() {
        *o += float_tail(n, w, &act[t * stride..], 4, le_f32);
    }
}

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
        T::F16 => (vd_f16, vd4_f16),
        T::F32 => (vd_f32, vd4_f32),
        _ => return None,
    };
    let base = *scalar_kernels(ty)?;
    Some(CpuKernels { k: crate::quant::Kernels { vec_dot, ..base }, vec_dot_x4: Some(x4), isa: "avx2" })
}
