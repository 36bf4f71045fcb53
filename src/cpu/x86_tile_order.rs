//! One-row and four-row dot products in the summation order of the AVX-512 prefill tiles
//! (`x86_avx512_tiles`), for the ten formats the tiles run. Where the tiles serve batches of
//! four or more tokens, these serve the rest (decode, batches of 2–3, a task's last rows), so
//! a token's logits do not depend on its batch: every kernel sums one output the same way.
//!
//! The order, per output: the row's blocks in order — 32-element blocks; Q4_K, Q5_K and
//! IQ4_XS sub-blocks of 32; Q6_K groups of 16 — each an exact integer sum `Σq·a`, then
//! `acc = fma(Σq·a as f32, d_w·d_a, acc)` and, for the formats with a min,
//! `acc = fma(m_w, s_a, acc)`, from `acc = 0`; the result is `acc`. A tile lane is exactly this
//! chain (one lane per row and token); here the integer sums come from AVX2 and the chain is
//! scalar FMAs, so the kernels run (and are tested) on any AVX2 CPU. Four rows keep four
//! chains in flight, which hides the FMA latency a single chain pays.

#![allow(clippy::needless_range_loop)] // the block loops index several arrays by block

use core::arch::x86_64::*;
use std::mem::{offset_of, size_of};

use super::kernels::{CpuKernels, VecDot, VecDotRows4, VecDotX4};
use super::prefetch_l2_block;
use super::x86_avx2::{
    Q6_K as K16_Q6_K, f16_at, f32_at, iq4_nl_quants, iq4_table, k4_scales_mins, k16_quants, load256, mul_sum_us8,
    nibbles32, q4_0_quants, q4_1_quants, q5_0_quants, q5_1_quants, q8_0_quants,
};
use crate::quant::formats::{
    BlockIQ4NL, BlockIQ4XS, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0,
    BlockQ8_1, BlockQ8K,
};
use crate::quant::{GgmlType, scalar_kernels};

/// Blocks per storage unit at most (Q6_K: 16 groups per super-block).
const MAX_BLOCKS: usize = 16;

/// One weight format as the chain sees it: a storage unit (a block, or a super-block of
/// `BLOCKS` blocks) of `W` against one unit of the activation format `A`.
trait TileOrder {
    type W;
    type A;
    /// Elements per storage unit.
    const UNIT: usize;
    const BLOCKS: usize;
    const MIN: bool;
    /// `d_a` (and `s_a`) of each block of the activation unit at `y`.
    unsafe fn act(y: *const u8, da: &mut [f32; MAX_BLOCKS], sa: &mut [f32; MAX_BLOCKS]);
    /// Each block's `Σq·a` of the weight unit at `x` with the activation unit at `y`, and its
    /// `d_w` (and `m_w`).
    unsafe fn weight(
        x: *const u8,
        y: *const u8,
        isum: &mut [i32; MAX_BLOCKS],
        dw: &mut [f32; MAX_BLOCKS],
        mw: &mut [f32; MAX_BLOCKS],
    );
}

/// The sum of a vector's 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Per 128-bit half `h`: `[Σ p0, Σ p1, Σ p2, Σ p3]` over lanes `4h..4h + 4` of each vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn quad_sums(p: [__m256i; 4]) -> __m256i {
    _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]))
}

/// `[Σ p0, Σ p1, Σ p2, Σ p3]` over all 8 lanes of each vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sums4(p: [__m256i; 4]) -> __m128i {
    let h = quad_sums(p);
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
}

/// Σ q·a of 32 signed weight bytes with 32 signed activation bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_signed(qx: __m256i, qy: __m256i) -> __m256i {
    mul_sum_us8(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx))
}

/// The 32-element formats paired with Q8_0: signed quants from `$quants`, scale `d` first.
macro_rules! signed32 {
    ($name:ident, $block:ty, |$x:ident| $quants:expr) => {
        #[allow(non_camel_case_types)] // ggml's names
        struct $name;
        impl TileOrder for $name {
            type W = $block;
            type A = BlockQ8_0;
            const UNIT: usize = 32;
            const BLOCKS: usize = 1;
            const MIN: bool = false;
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn act(y: *const u8, da: &mut [f32; MAX_BLOCKS], _: &mut [f32; MAX_BLOCKS]) {
                da[0] = unsafe { f16_at(y) };
            }
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn weight(
                $x: *const u8,
                y: *const u8,
                isum: &mut [i32; MAX_BLOCKS],
                dw: &mut [f32; MAX_BLOCKS],
                _: &mut [f32; MAX_BLOCKS],
            ) {
                let qy = unsafe { load256(y.add(offset_of!(BlockQ8_0, qs))) };
                isum[0] = hsum_i32(dot_signed(unsafe { $quants }, qy));
                dw[0] = unsafe { f16_at($x) };
            }
        }
    };
}

signed32!(Q4_0, BlockQ4_0, |x| q4_0_quants(x));
signed32!(Q5_0, BlockQ5_0, |x| q5_0_quants(x));
signed32!(Q8_0, BlockQ8_0, |x| q8_0_quants(x));
signed32!(IQ4_NL, BlockIQ4NL, |x| iq4_nl_quants(x, iq4_table()));

/// The 32-element formats with a min, paired with Q8_1: unsigned quants, `d` then `m`.
macro_rules! unsigned32 {
    ($name:ident, $block:ty, |$x:ident| $quants:expr) => {
        #[allow(non_camel_case_types)] // ggml's names
        struct $name;
        impl TileOrder for $name {
            type W = $block;
            type A = BlockQ8_1;
            const UNIT: usize = 32;
            const BLOCKS: usize = 1;
            const MIN: bool = true;
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn act(y: *const u8, da: &mut [f32; MAX_BLOCKS], sa: &mut [f32; MAX_BLOCKS]) {
                unsafe { (da[0], sa[0]) = (f16_at(y), f16_at(y.add(offset_of!(BlockQ8_1, s)))) };
            }
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn weight(
                $x: *const u8,
                y: *const u8,
                isum: &mut [i32; MAX_BLOCKS],
                dw: &mut [f32; MAX_BLOCKS],
                mw: &mut [f32; MAX_BLOCKS],
            ) {
                let qy = unsafe { load256(y.add(offset_of!(BlockQ8_1, qs))) };
                isum[0] = hsum_i32(mul_sum_us8(unsafe { $quants }, qy));
                unsafe { (dw[0], mw[0]) = (f16_at($x), f16_at($x.add(offset_of!($block, m)))) };
            }
        }
    };
}

unsigned32!(Q4_1, BlockQ4_1, |x| q4_1_quants(x));
unsigned32!(Q5_1, BlockQ5_1, |x| q5_1_quants(x));

/// Q8_K's scale for every block of `ELEMS` elements, and with `SUMS` their `d·Σa` (from the
/// 16-element `bsums`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8k_act<const ELEMS: usize, const SUMS: bool>(
    y: *const u8,
    da: &mut [f32; MAX_BLOCKS],
    sa: &mut [f32; MAX_BLOCKS],
) {
    let d = unsafe { f32_at(y) };
    let bsum = |g: usize| unsafe { y.add(offset_of!(BlockQ8K, bsums) + 2 * g).cast::<i16>().read_unaligned() } as i32;
    for b in 0..256 / ELEMS {
        da[b] = d;
        if SUMS {
            let sum: i32 = (b * ELEMS / 16..(b + 1) * ELEMS / 16).map(bsum).sum();
            sa[b] = d * sum as f32;
        }
    }
}

/// Q4_K and Q5_K (`HIGH`: the fifth bit from `qh`): sub-blocks of 32 with scale `d·sc` and
/// min `−dmin·m`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k4_weight<const HIGH: bool>(
    x: *const u8,
    y: *const u8,
    isum: &mut [i32; MAX_BLOCKS],
    dw: &mut [f32; MAX_BLOCKS],
    mw: &mut [f32; MAX_BLOCKS],
) {
    let qs = if HIGH { offset_of!(BlockQ5K, qs) } else { offset_of!(BlockQ4K, qs) };
    let m4 = _mm256_set1_epi8(0x0f);
    let qh = if HIGH { unsafe { load256(x.add(offset_of!(BlockQ5K, qh))) } } else { _mm256_setzero_si256() };
    let mut p = [_mm256_setzero_si256(); 8];
    for j in 0..8 {
        // Even sub-blocks are the low nibbles of their 32 bytes, odd ones the high nibbles.
        let bits = unsafe { load256(x.add(qs + 32 * (j / 2))) };
        let mut q = _mm256_and_si256(if j % 2 == 0 { bits } else { _mm256_srli_epi16::<4>(bits) }, m4);
        if HIGH {
            let hb = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(j as i32)), _mm256_set1_epi8(1));
            q = _mm256_or_si256(q, _mm256_slli_epi16::<4>(hb));
        }
        p[j] = mul_sum_us8(q, unsafe { load256(y.add(offset_of!(BlockQ8K, qs) + 32 * j)) });
    }
    unsafe {
        _mm_storeu_si128(isum.as_mut_ptr().cast(), sums4([p[0], p[1], p[2], p[3]]));
        _mm_storeu_si128(isum.as_mut_ptr().add(4).cast(), sums4([p[4], p[5], p[6], p[7]]));
    }
    let mut sm = [0u8; 16];
    unsafe { _mm_storeu_si128(sm.as_mut_ptr().cast(), k4_scales_mins(x.add(offset_of!(BlockQ4K, scales)))) };
    let (d, dmin) = unsafe { (f16_at(x), f16_at(x.add(offset_of!(BlockQ4K, dmin)))) };
    for j in 0..8 {
        (dw[j], mw[j]) = (d * sm[j] as f32, -dmin * sm[8 + j] as f32);
    }
}

struct Q4K;
impl TileOrder for Q4K {
    type W = BlockQ4K;
    type A = BlockQ8K;
    const UNIT: usize = 256;
    const BLOCKS: usize = 8;
    const MIN: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn act(y: *const u8, da: &mut [f32; MAX_BLOCKS], sa: &mut [f32; MAX_BLOCKS]) {
        unsafe { q8k_act::<32, true>(y, da, sa) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weight(x: *const u8, y: *const u8, isum: &mut [i32; 16], dw: &mut [f32; 16], mw: &mut [f32; 16]) {
        unsafe { k4_weight::<false>(x, y, isum, dw, mw) }
    }
}

struct Q5K;
impl TileOrder for Q5K {
    type W = BlockQ5K;
    type A = BlockQ8K;
    const UNIT: usize = 256;
    const BLOCKS: usize = 8;
    const MIN: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn act(y: *const u8, da: &mut [f32; MAX_BLOCKS], sa: &mut [f32; MAX_BLOCKS]) {
        unsafe { q8k_act::<32, true>(y, da, sa) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weight(x: *const u8, y: *const u8, isum: &mut [i32; 16], dw: &mut [f32; 16], mw: &mut [f32; 16]) {
        unsafe { k4_weight::<true>(x, y, isum, dw, mw) }
    }
}

/// Q6_K: groups of 16 with scale `d·sc`; quants `u = q + 32`, so `Σq·a = Σu·a − 32·bsum`.
struct Q6K;
impl TileOrder for Q6K {
    type W = BlockQ6K;
    type A = BlockQ8K;
    const UNIT: usize = 256;
    const BLOCKS: usize = 16;
    const MIN: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn act(y: *const u8, da: &mut [f32; MAX_BLOCKS], sa: &mut [f32; MAX_BLOCKS]) {
        unsafe { q8k_act::<16, false>(y, da, sa) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weight(x: *const u8, y: *const u8, isum: &mut [i32; 16], dw: &mut [f32; 16], _: &mut [f32; 16]) {
        // Vector v holds groups 2v (lanes 0..4 of its products) and 2v + 1 (lanes 4..8).
        let p: [__m256i; 8] = std::array::from_fn(|v| {
            let u = unsafe { k16_quants::<K16_Q6_K>(x, v) };
            mul_sum_us8(u, unsafe { load256(y.add(offset_of!(BlockQ8K, qs) + 32 * v)) })
        });
        let mut lanes = [0i32; 16];
        unsafe {
            _mm256_storeu_si256(lanes.as_mut_ptr().cast(), quad_sums([p[0], p[1], p[2], p[3]]));
            _mm256_storeu_si256(lanes.as_mut_ptr().add(8).cast(), quad_sums([p[4], p[5], p[6], p[7]]));
        }
        let d = unsafe { f16_at(x.add(offset_of!(BlockQ6K, d))) };
        for g in 0..16 {
            // Lane k of a quad-sum vector: vector k % 4, half k / 4.
            let k = g % 8;
            let lane = 8 * (g / 8) + 4 * (k % 2) + k / 2;
            let bsum = unsafe { y.add(offset_of!(BlockQ8K, bsums) + 2 * g).cast::<i16>().read_unaligned() } as i32;
            isum[g] = lanes[lane] - 32 * bsum;
            let sc = unsafe { *x.add(offset_of!(BlockQ6K, scales) + g) } as i8;
            dw[g] = d * sc as f32;
        }
    }
}

/// IQ4_XS: sub-blocks of 32 non-linear levels, scale `d·(ls − 32)`.
struct IQ4XS;
impl TileOrder for IQ4XS {
    type W = BlockIQ4XS;
    type A = BlockQ8K;
    const UNIT: usize = 256;
    const BLOCKS: usize = 8;
    const MIN: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn act(y: *const u8, da: &mut [f32; MAX_BLOCKS], sa: &mut [f32; MAX_BLOCKS]) {
        unsafe { q8k_act::<32, false>(y, da, sa) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weight(x: *const u8, y: *const u8, isum: &mut [i32; 16], dw: &mut [f32; 16], _: &mut [f32; 16]) {
        let table = iq4_table();
        let p: [__m256i; 8] = std::array::from_fn(|j| {
            // Sub-block j: 16 bytes of nibbles, low ones elements 0..16, high ones 16..32.
            let qx = _mm256_shuffle_epi8(table, unsafe { nibbles32(x.add(offset_of!(BlockIQ4XS, qs) + 16 * j)) });
            dot_signed(qx, unsafe { load256(y.add(offset_of!(BlockQ8K, qs) + 32 * j)) })
        });
        unsafe {
            _mm_storeu_si128(isum.as_mut_ptr().cast(), sums4([p[0], p[1], p[2], p[3]]));
            _mm_storeu_si128(isum.as_mut_ptr().add(4).cast(), sums4([p[4], p[5], p[6], p[7]]));
        }
        let d = unsafe { f16_at(x) };
        let sh = unsafe { x.add(offset_of!(BlockIQ4XS, scales_h)).cast::<u16>().read_unaligned() } as u32;
        for j in 0..8 {
            let sl = unsafe { *x.add(offset_of!(BlockIQ4XS, scales_l) + j / 2) } as u32;
            let ls = ((sl >> (4 * (j % 2))) & 0x0f) | (((sh >> (2 * j)) & 3) << 4);
            dw[j] = d * (ls as i32 - 32) as f32;
        }
    }
}

/// `out[k] = dot(w + k·wstride, a + k·astride)` for `N` (weight row, activation row) pairs of
/// `units` storage units each: four rows and one token (`SHARED_ACT`, `astride = 0`: the
/// activation scales are read once per unit), or one row and four tokens (`wstride = 0`).
/// The chain of the module comment, one per output.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn chain<F: TileOrder, const N: usize, const SHARED_ACT: bool>(
    units: usize,
    w: *const u8,
    wstride: usize,
    a: *const u8,
    astride: usize,
    out: &mut [f32; N],
) {
    let (wb, ab) = (size_of::<F::W>(), size_of::<F::A>());
    let mut acc = [0f32; N];
    let (mut da, mut sa) = ([0f32; MAX_BLOCKS], [0f32; MAX_BLOCKS]);
    let (mut isum, mut dw, mut mw) = ([0i32; MAX_BLOCKS], [0f32; MAX_BLOCKS], [0f32; MAX_BLOCKS]);
    for u in 0..units {
        if SHARED_ACT {
            unsafe { F::act(a.add(u * ab), &mut da, &mut sa) };
        }
        for (k, acc) in acc.iter_mut().enumerate() {
            let x = unsafe { w.add(k * wstride + u * wb) };
            let y = unsafe { a.add(k * astride + u * ab) };
            if !SHARED_ACT {
                unsafe { F::act(y, &mut da, &mut sa) };
            } else if N > 1 {
                // The next four-row group's unit: its reads overlap this group's work.
                prefetch_l2_block(x.wrapping_add(N * wstride), wb);
            }
            unsafe { F::weight(x, y, &mut isum, &mut dw, &mut mw) };
            for b in 0..F::BLOCKS {
                *acc = (isum[b] as f32).mul_add(dw[b] * da[b], *acc);
                if F::MIN {
                    *acc = mw[b].mul_add(sa[b], *acc);
                }
            }
        }
    }
    *out = acc;
}

/// Units of `n` elements, checked against the weight and activation lengths.
fn units<F: TileOrder>(n: usize, rows: usize, row_bytes: usize, w: &[u8], act: &[u8]) -> usize {
    let u = n / F::UNIT;
    assert!(n.is_multiple_of(F::UNIT) && (rows == 1 || row_bytes >= u * size_of::<F::W>()));
    assert!(w.len() >= (rows - 1) * row_bytes + u * size_of::<F::W>() && act.len() >= u * size_of::<F::A>());
    u
}

fn one_row<F: TileOrder>(n: usize, w: &[u8], act: &[u8]) -> f32 {
    let u = units::<F>(n, 1, 0, w, act);
    let mut o = [0f32; 1];
    // SAFETY: AVX2/FMA/F16C checked before the kernels were handed out; lengths checked.
    unsafe { chain::<F, 1, true>(u, w.as_ptr(), 0, act.as_ptr(), 0, &mut o) };
    o[0]
}

fn four_rows<F: TileOrder>(n: usize, w: &[u8], row_bytes: usize, act: &[u8], out: &mut [f32; 4]) {
    let u = units::<F>(n, 4, row_bytes, w, act);
    // SAFETY: as in `one_row`.
    unsafe { chain::<F, 4, true>(u, w.as_ptr(), row_bytes, act.as_ptr(), 0, out) };
}

fn four_tokens<F: TileOrder>(n: usize, w: &[u8], act: &[u8], stride: usize, out: &mut [f32; 4]) {
    let u = units::<F>(n, 1, 0, w, act);
    assert!(stride >= u * size_of::<F::A>() && act.len() >= 3 * stride + u * size_of::<F::A>());
    // SAFETY: as in `one_row`.
    unsafe { chain::<F, 4, false>(u, w.as_ptr(), 0, act.as_ptr(), stride, out) };
}

/// The tile-order kernels for `ty` (`vec_dot`, four tokens, and the four-row kernel), or None for types the tiles do not run
/// or CPUs without AVX2.
pub fn kernels(ty: GgmlType) -> Option<(CpuKernels, VecDotRows4)> {
    use GgmlType as T;
    if !super::x86_avx2::detected() {
        return None;
    }
    let (vec_dot, x4, rows4): (VecDot, VecDotX4, VecDotRows4) = match ty {
        T::Q4_0 => (one_row::<Q4_0>, four_tokens::<Q4_0>, four_rows::<Q4_0>),
        T::Q5_0 => (one_row::<Q5_0>, four_tokens::<Q5_0>, four_rows::<Q5_0>),
        T::Q8_0 => (one_row::<Q8_0>, four_tokens::<Q8_0>, four_rows::<Q8_0>),
        T::IQ4_NL => (one_row::<IQ4_NL>, four_tokens::<IQ4_NL>, four_rows::<IQ4_NL>),
        T::Q4_1 => (one_row::<Q4_1>, four_tokens::<Q4_1>, four_rows::<Q4_1>),
        T::Q5_1 => (one_row::<Q5_1>, four_tokens::<Q5_1>, four_rows::<Q5_1>),
        T::Q4_K => (one_row::<Q4K>, four_tokens::<Q4K>, four_rows::<Q4K>),
        T::Q5_K => (one_row::<Q5K>, four_tokens::<Q5K>, four_rows::<Q5K>),
        T::Q6_K => (one_row::<Q6K>, four_tokens::<Q6K>, four_rows::<Q6K>),
        T::IQ4_XS => (one_row::<IQ4XS>, four_tokens::<IQ4XS>, four_rows::<IQ4XS>),
        _ => return None,
    };
    let base = *scalar_kernels(ty)?;
    let k = CpuKernels { k: crate::quant::Kernels { vec_dot, ..base }, vec_dot_x4: Some(x4), isa: "avx2-tile-order" };
    Some((k, rows4))
}
