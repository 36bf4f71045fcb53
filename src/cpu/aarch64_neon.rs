//! NEON kernels (baseline on aarch64), each in two variants: plain NEON (`vmull_s8` +
//! `vpadalq_s16`) and SDOT where the CPU has `dotprod` (`vdotq_s32` is unstable, so `sdot` is
//! emitted with `asm!` inside `#[target_feature(enable = "neon,dotprod")]` functions).
//!
//! Like the AVX2 file, every kernel is generic over `NT` activation rows (1: matrix-vector,
//! 4: the prefill tile) and computes exactly the scalar integer block sums. Formats that differ
//! only in how a block unpacks share one accumulate loop (`blocks32`, `k4_family`,
//! `groups16`, `floats`), with the format as a const parameter.

#![allow(clippy::needless_range_loop)]
// the tile loops index several arrays by token
// NEON intrinsics are `#[target_feature]` fns, and `#[inline(always)]` cannot carry the
// attribute: kernel bodies are one `unsafe` block, and the inner ones document the raw loads.
#![allow(unused_unsafe)]

use core::arch::aarch64::*;
use std::arch::asm;

use super::kernels::{CpuKernels, VecDot, VecDotX4, float_entries};
use crate::quant::iq_tables::{IQ1S_GRID, IQ2XXS_GRID, KSIGNS_IQ2XS};
use crate::quant::{GgmlType, f16_bits_to_f32, q3_k_scales, scalar_kernels};

pub fn dotprod_detected() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// `acc + Σ a·b` over groups of four i8 lanes.
#[inline(always)]
unsafe fn dot16<const DOT: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    unsafe {
        if DOT {
            let mut acc = acc;
            // SAFETY: only instantiated with DOT inside `neon,dotprod` functions, which run only
            // after `dotprod_detected()`.
            unsafe {
                asm!("sdot {0:v}.4s, {1:v}.16b, {2:v}.16b", inout(vreg) acc, in(vreg) a, in(vreg) b,
                 options(pure, nomem, nostack));
            }
            acc
        } else {
            let p0 = vmull_s8(vget_low_s8(a), vget_low_s8(b));
            let p1 = vmull_high_s8(a, b);
            vpadalq_s16(vpadalq_s16(acc, p0), p1)
        }
    }
}

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    unsafe { f16_bits_to_f32([*p, *p.add(1)]) }
}

#[inline(always)]
unsafe fn f32_at(p: *const u8) -> f32 {
    unsafe { p.cast::<f32>().read_unaligned() }
}

#[inline(always)]
unsafe fn ld_u8(p: *const u8) -> uint8x16_t {
    unsafe { vld1q_u8(p) }
}

#[inline(always)]
unsafe fn ld_s8(p: *const u8) -> int8x16_t {
    unsafe { vld1q_s8(p.cast()) }
}

/// Each byte of `b` shifted right by `k` (a run-time count).
#[inline(always)]
fn shr(b: uint8x16_t, k: usize) -> uint8x16_t {
    unsafe { vshlq_u8(b, vdupq_n_s8(-(k as i8))) }
}

const IQ4: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

// ------------------------------------------------------------------------------------------
// 32-element blocks paired with Q8_0 (34-byte blocks) or, with a min, Q8_1 (36 bytes).

const Q4_0: u8 = 0;
const Q5_0: u8 = 1;
const Q8_0: u8 = 2;
const IQ4_NL: u8 = 3;
const Q4_1: u8 = 4;
const Q5_1: u8 = 5;

/// 0xff in byte j where bit j of the 32 bits at `p` is set: (weights 0..16, 16..32).
#[inline(always)]
unsafe fn fifth_bits(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    unsafe {
        let b = p.cast::<u32>().read_unaligned().to_le_bytes();
        let bits = vld1q_u8([1u8, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128].as_ptr());
        (
            vtstq_u8(vcombine_u8(vdup_n_u8(b[0]), vdup_n_u8(b[1])), bits),
            vtstq_u8(vcombine_u8(vdup_n_u8(b[2]), vdup_n_u8(b[3])), bits),
        )
    }
}

/// The 32 weights of a 32-element block (elements 0..16, 16..32) as bytes: signed for the
/// Q8_0-paired kinds, unsigned (but below 32) for Q4_1/Q5_1.
#[inline(always)]
unsafe fn decode32<const KIND: u8>(x: *const u8) -> (int8x16_t, int8x16_t) {
    unsafe {
        let m4 = vdupq_n_u8(0x0f);
        let (lo, hi) = match KIND {
            Q4_0 => {
                let v = ld_u8(x.add(2));
                let eight = vdupq_n_u8(8);
                (vsubq_u8(vandq_u8(v, m4), eight), vsubq_u8(vshrq_n_u8(v, 4), eight))
            }
            Q5_0 => {
                let (set_lo, set_hi) = fifth_bits(x.add(2));
                let v = ld_u8(x.add(6));
                // q - 16: the nibble with 0xf0 or'ed in where the fifth bit is clear.
                let f0 = vdupq_n_u8(0xf0);
                (vorrq_u8(vandq_u8(v, m4), vbicq_u8(f0, set_lo)), vorrq_u8(vshrq_n_u8(v, 4), vbicq_u8(f0, set_hi)))
            }
            Q8_0 => (ld_u8(x.add(2)), ld_u8(x.add(18))),
            IQ4_NL => {
                let v = ld_u8(x.add(2));
                let t = vld1q_u8(IQ4.as_ptr().cast());
                (vqtbl1q_u8(t, vandq_u8(v, m4)), vqtbl1q_u8(t, vshrq_n_u8(v, 4)))
            }
            Q4_1 => {
                let v = ld_u8(x.add(4));
                (vandq_u8(v, m4), vshrq_n_u8(v, 4))
            }
            _ => {
                let (set_lo, set_hi) = fifth_bits(x.add(4));
                let v = ld_u8(x.add(8));
                let b4 = vdupq_n_u8(0x10);
                (vorrq_u8(vandq_u8(v, m4), vandq_u8(set_lo, b4)), vorrq_u8(vshrq_n_u8(v, 4), vandq_u8(set_hi, b4)))
            }
        };
        (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
    }
}

/// 32-element blocks: `d·dy·Σq·y`, plus `m·s_y` for the Q8_1-paired kinds.
#[inline(always)]
unsafe fn blocks32<const NT: usize, const DOT: bool, const KIND: u8>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    unsafe {
        let wblock = match KIND {
            Q4_0 | IQ4_NL => 18,
            Q5_0 => 22,
            Q8_0 => 34,
            Q4_1 => 20,
            _ => 24,
        };
        let with_min = KIND == Q4_1 || KIND == Q5_1;
        let (ablock, qs) = if with_min { (36, 4) } else { (34, 2) };
        let mut acc = [vdupq_n_f32(0.0); NT];
        let mut accm = [0f32; NT];
        for i in 0..nb {
            let x = unsafe { w.add(i * wblock) };
            let (x0, x1) = unsafe { decode32::<KIND>(x) };
            let dx = unsafe { f16_at(x) };
            for t in 0..NT {
                let y = unsafe { a.add(t * astride + i * ablock) };
                let p = unsafe {
                    dot16::<DOT>(dot16::<DOT>(vdupq_n_s32(0), x0, ld_s8(y.add(qs))), x1, ld_s8(y.add(qs + 16)))
                };
                acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(p), dx * unsafe { f16_at(y) });
                if with_min {
                    accm[t] += unsafe { f16_at(x.add(2)) * f16_at(y.add(2)) };
                }
            }
        }
        for t in 0..NT {
            out[t] = vaddvq_f32(acc[t]) + accm[t];
        }
    }
}

// ------------------------------------------------------------------------------------------
// 256-element super-blocks paired with Q8_K (292 bytes: f32 d, 256 i8, 16 i16 bsums).

const Q8K: usize = 292;

/// Q4_K scales and mins (8 each) from the 12 packed bytes.
#[inline(always)]
unsafe fn k4_scales_mins(p: *const u8) -> [u8; 16] {
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
    let mut b = [0u8; 16];
    for (k, v) in u.iter().enumerate() {
        b[4 * k..4 * k + 4].copy_from_slice(&v.to_le_bytes());
    }
    b
}

#[inline(always)]
unsafe fn bsum(y: *const u8, j: usize) -> i32 {
    unsafe { y.add(260 + 2 * j).cast::<i16>().read_unaligned() as i32 }
}

/// Q4_K and Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins; `HIGH` adds Q5_K's fifth bit.
#[inline(always)]
unsafe fn k4_family<const NT: usize, const DOT: bool, const HIGH: bool>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    unsafe {
        let (bsize, qs) = if HIGH { (176, 48) } else { (144, 16) };
        let m4 = vdupq_n_u8(0x0f);
        let one = vdupq_n_u8(1);
        let mut sumf = [0f32; NT];
        for i in 0..nb {
            let x = unsafe { w.add(i * bsize) };
            let (d, dmin) = unsafe { (f16_at(x), f16_at(x.add(2))) };
            let sm = unsafe { k4_scales_mins(x.add(4)) };
            let qh = if HIGH { unsafe { [ld_u8(x.add(16)), ld_u8(x.add(32))] } } else { [vdupq_n_u8(0); 2] };
            let mut isum = [0i32; NT];
            for j in 0..4 {
                let v = unsafe { [ld_u8(x.add(qs + 32 * j)), ld_u8(x.add(qs + 16 + 32 * j))] };
                // Weights 64j + l (low nibbles) and 64j + 32 + l (high nibbles); Q5_K's fifth
                // bits are bits 2j and 2j + 1 of qh[l].
                let mut lo = [vandq_u8(v[0], m4), vandq_u8(v[1], m4)];
                let mut hi = [vshrq_n_u8(v[0], 4), vshrq_n_u8(v[1], 4)];
                if HIGH {
                    for h in 0..2 {
                        let b = shr(qh[h], 2 * j);
                        lo[h] = vorrq_u8(lo[h], vshlq_n_u8(vandq_u8(b, one), 4));
                        hi[h] = vorrq_u8(hi[h], vshlq_n_u8(vandq_u8(vshrq_n_u8(b, 1), one), 4));
                    }
                }
                let [l0, l1, h0, h1] = [lo[0], lo[1], hi[0], hi[1]].map(|v| vreinterpretq_s8_u8(v));
                for t in 0..NT {
                    let y = unsafe { a.add(t * astride + i * Q8K + 4 + 64 * j) };
                    let z = vdupq_n_s32(0);
                    let sl = unsafe { vaddvq_s32(dot16::<DOT>(dot16::<DOT>(z, l0, ld_s8(y)), l1, ld_s8(y.add(16)))) };
                    let sh = unsafe {
                        vaddvq_s32(dot16::<DOT>(dot16::<DOT>(z, h0, ld_s8(y.add(32))), h1, ld_s8(y.add(48))))
                    };
                    isum[t] += sm[2 * j] as i32 * sl + sm[2 * j + 1] as i32 * sh;
                }
            }
            for t in 0..NT {
                let y = unsafe { a.add(t * astride + i * Q8K) };
                let mut summs = 0i32;
                for j in 0..8 {
                    summs += sm[8 + j] as i32 * unsafe { bsum(y, 2 * j) + bsum(y, 2 * j + 1) };
                }
                let dy = unsafe { f32_at(y) };
                sumf[t] += d * dy * isum[t] as f32 - dmin * dy * summs as f32;
            }
        }
        *out = sumf;
    }
}

const Q2_K: u8 = 0;
const Q3_K: u8 = 1;
const Q6_K: u8 = 2;
const IQ2_XXS: u8 = 3;
const IQ1_S: u8 = 4;
const IQ1_M: u8 = 5;

/// Bits `2k..2k+2` of each byte.
#[inline(always)]
fn crumbs(b: uint8x16_t, k: usize) -> uint8x16_t {
    unsafe { vandq_u8(shr(b, 2 * k), vdupq_n_u8(3)) }
}

/// The signed weights of group `g` (elements 16g..16g + 16) of a Q2_K/Q3_K/Q6_K block.
#[inline(always)]
unsafe fn k16_quants<const KIND: u8>(x: *const u8, g: usize) -> int8x16_t {
    unsafe {
        // Vector v = g/2 of 32 weights is shift pass k of half h; g's 16 are its part g%2.
        let (v, l) = (g / 2, 16 * (g % 2));
        let (half, k) = (v / 4, v % 4);
        match KIND {
            Q2_K => vreinterpretq_s8_u8(crumbs(ld_u8(x.add(16 + 32 * half + l)), k)),
            // Low bits as Q2_K, minus 4 where bit v of hmask[l] is clear.
            Q3_K => {
                let low = crumbs(ld_u8(x.add(32 + 32 * half + l)), k);
                let hbit = vandq_u8(shr(ld_u8(x.add(l)), v), vdupq_n_u8(1));
                vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(low, vshlq_n_u8(hbit, 2))), vdupq_n_s8(4))
            }
            // Nibble k/2 of ql[64h + 32(k%2) + l], bits 2k of qh[32h + l] on top, minus 32.
            _ => {
                let b = ld_u8(x.add(64 * half + 32 * (k % 2) + l));
                let low = if k < 2 { vandq_u8(b, vdupq_n_u8(0x0f)) } else { vshrq_n_u8(b, 4) };
                let high = crumbs(ld_u8(x.add(128 + 32 * half + l)), k);
                vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(low, vshlq_n_u8(high, 4))), vdupq_n_s8(32))
            }
        }
    }
}

#[inline(always)]
unsafe fn iq4_xs<const NT: usize, const DOT: bool>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    unsafe {
        let table = unsafe { vld1q_s8(IQ4.as_ptr()) };
        let m4 = vdupq_n_u8(0x0f);
        let mut sumf = [0f32; NT];
        for i in 0..nb {
            let x = unsafe { w.add(i * 136) };
            let d = unsafe { f16_at(x) };
            let sh = unsafe { x.add(2).cast::<u16>().read_unaligned() } as u32;
            let mut isum = [0i32; NT];
            for ib in 0..8 {
                let sl = unsafe { *x.add(4 + ib / 2) } as u32;
                let ls = (((sl >> (4 * (ib % 2))) & 0x0f) | (((sh >> (2 * ib)) & 3) << 4)) as i32 - 32;
                let v = unsafe { ld_u8(x.add(8 + 16 * ib)) };
                let q0 = vqtbl1q_s8(table, vandq_u8(v, m4));
                let q1 = vqtbl1q_s8(table, vshrq_n_u8(v, 4));
                for t in 0..NT {
                    let y = unsafe { a.add(t * astride + i * Q8K + 4 + 32 * ib) };
                    let p = unsafe { dot16::<DOT>(dot16::<DOT>(vdupq_n_s32(0), q0, ld_s8(y)), q1, ld_s8(y.add(16))) };
                    isum[t] += ls * vaddvq_s32(p);
                }
            }
            for t in 0..NT {
                sumf[t] += d * unsafe { f32_at(a.add(t * astride + i * Q8K)) } * isum[t] as f32;
            }
        }
        *out = sumf;
    }
}

// ------------------------------------------------------------------------------------------
// IQ2_XXS, IQ1_S, IQ1_M: grid-coded weights, rebuilt per 32-weight sub-block from lookups.

/// Grid rows `i0` and `i1` (8 bytes each) as one vector.
#[inline(always)]
fn grid2(grid: &[u64], i0: usize, i1: usize) -> uint8x16_t {
    unsafe { vcombine_u8(vcreate_u8(grid[i0]), vcreate_u8(grid[i1])) }
}

/// IQ1 weights as integers, `8·grid + delta` (`delta` ±1 per byte): one dot product carries
/// both terms of `grid + delta/8`; the block scale includes the 1/8.
#[inline(always)]
fn iq1_weights(grid: uint8x16_t, delta: int8x16_t) -> int8x16_t {
    unsafe { vaddq_s8(vshlq_n_s8(vreinterpretq_s8_u8(grid), 3), delta) }
}

/// ±1 bytes: -1 for the groups of 8 whose flag is set.
#[inline(always)]
fn signs_of(neg0: bool, neg1: bool) -> int8x16_t {
    unsafe { vcombine_s8(vdup_n_s8(if neg0 { -1 } else { 1 }), vdup_n_s8(if neg1 { -1 } else { 1 })) }
}

/// Sub-block `ib` of the grid block at `x`: its 32 signed integer weights (two groups of 16).
#[inline(always)]
unsafe fn iq_weights<const KIND: u8>(x: *const u8, ib: usize) -> [int8x16_t; 2] {
    unsafe {
        match KIND {
            IQ2_XXS => {
                let q = x.add(2 + 8 * ib);
                let aux = q.add(4).cast::<u32>().read_unaligned();
                let bits = vld1q_u8([1u8, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128].as_ptr());
                let half = |h: usize| {
                    let g = grid2(&IQ2XXS_GRID, *q.add(2 * h) as usize, *q.add(2 * h + 1) as usize);
                    // Each group's 7 sign bits, expanded to 8 with even parity; 0xff = negative.
                    let s = |l: usize| KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
                    let m = vtstq_u8(vcombine_u8(vdup_n_u8(s(2 * h)), vdup_n_u8(s(2 * h + 1))), bits);
                    vreinterpretq_s8_u8(vsubq_u8(veorq_u8(g, m), m))
                };
                [half(0), half(1)]
            }
            IQ1_S => {
                let qh = x.add(34 + 2 * ib).cast::<u16>().read_unaligned() as usize;
                let idx = |l: usize| *x.add(2 + 4 * ib + l) as usize | (((qh >> (3 * l)) & 7) << 8);
                let delta = signs_of(qh & 0x8000 != 0, qh & 0x8000 != 0);
                let half = |h: usize| iq1_weights(grid2(&IQ1S_GRID, idx(2 * h), idx(2 * h + 1)), delta);
                [half(0), half(1)]
            }
            _ => {
                let h = |l: usize| (*x.add(32 + 2 * ib + l / 2) as usize) >> (4 * (l % 2));
                let idx = |l: usize| *x.add(4 * ib + l) as usize | ((h(l) & 7) << 8);
                let half = |k: usize| {
                    let delta = signs_of(h(2 * k) & 8 != 0, h(2 * k + 1) & 8 != 0);
                    iq1_weights(grid2(&IQ1S_GRID, idx(2 * k), idx(2 * k + 1)), delta)
                };
                [half(0), half(1)]
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// The formats of 16 groups of 16 weights with an integer scale each (Q2_K: and a min), grid
// or not: one accumulate loop, a per-block decode of the scales and a per-32 one of the weights.

/// A block's float scale (the IQ formats' 1/8 included) and its 16 integer group scales.
#[inline(always)]
unsafe fn group_scales<const KIND: u8>(x: *const u8) -> (f32, [i32; 16]) {
    unsafe {
        let u16_at = |off: usize| x.add(off).cast::<u16>().read_unaligned() as i32;
        match KIND {
            Q2_K => (f16_at(x.add(80)), std::array::from_fn(|g| (*x.add(g) & 0x0f) as i32)),
            Q3_K => (f16_at(x.add(108)), q3_k_scales(&*x.add(96).cast::<[u8; 12]>())),
            Q6_K => (f16_at(x.add(208)), std::array::from_fn(|g| *x.add(192 + g) as i8 as i32)),
            // The 4-bit scale in the top of each sub-block's sign word.
            IQ2_XXS => (0.125 * f16_at(x), std::array::from_fn(|g| 2 * (u16_at(2 + 8 * (g / 2) + 6) >> 12) + 1)),
            IQ1_S => (0.125 * f16_at(x), std::array::from_fn(|g| 2 * ((u16_at(34 + 2 * (g / 2)) >> 12) & 7) + 1)),
            _ => {
                let sc: [i32; 4] = std::array::from_fn(|k| u16_at(48 + 2 * k));
                // The f16 super-scale, spread over the top nibbles of the four scale words.
                let bits = (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
                // Group g: the 3 bits at 3(g % 4) of scale word g / 4.
                let scales = std::array::from_fn(|g| 2 * ((sc[g / 4] >> (3 * (g % 4))) & 7) + 1);
                (0.125 * f16_bits_to_f32((bits as u16).to_le_bytes()), scales)
            }
        }
    }
}

/// The signed weights of sub-block `v` (weights 32v..32v + 32), as two groups of 16.
#[inline(always)]
unsafe fn group_weights<const KIND: u8>(x: *const u8, v: usize) -> [int8x16_t; 2] {
    unsafe {
        match KIND {
            Q2_K | Q3_K | Q6_K => [k16_quants::<KIND>(x, 2 * v), k16_quants::<KIND>(x, 2 * v + 1)],
            _ => iq_weights::<KIND>(x, v),
        }
    }
}

#[inline(always)]
unsafe fn groups16<const NT: usize, const DOT: bool, const KIND: u8>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    unsafe {
        let bsize = match KIND {
            Q2_K => 84,
            Q3_K => 110,
            Q6_K => 210,
            IQ2_XXS => 66,
            IQ1_S => 50,
            _ => 56,
        };
        let mut sumf = [0f32; NT];
        for i in 0..nb {
            let x = unsafe { w.add(i * bsize) };
            let (d, sc) = unsafe { group_scales::<KIND>(x) };
            let mut isum = [vdupq_n_s32(0); NT];
            for v in 0..8 {
                let q = unsafe { group_weights::<KIND>(x, v) };
                for t in 0..NT {
                    let y = unsafe { a.add(t * astride + i * Q8K + 4 + 32 * v) };
                    isum[t] = vmlaq_n_s32(isum[t], dot16::<DOT>(vdupq_n_s32(0), q[0], ld_s8(y)), sc[2 * v]);
                    isum[t] = vmlaq_n_s32(isum[t], dot16::<DOT>(vdupq_n_s32(0), q[1], ld_s8(y.add(16))), sc[2 * v + 1]);
                }
            }
            for t in 0..NT {
                let y = unsafe { a.add(t * astride + i * Q8K) };
                let dy = unsafe { f32_at(y) };
                sumf[t] += d * dy * vaddvq_s32(isum[t]) as f32;
                if KIND == Q2_K {
                    let summs: i32 = (0..16).map(|g| unsafe { bsum(y, g) * (*x.add(g) >> 4) as i32 }).sum();
                    sumf[t] -= unsafe { f16_at(x.add(82)) } * dy * summs as f32;
                }
            }
        }
        *out = sumf;
    }
}

// ------------------------------------------------------------------------------------------
// Float rows (`nb` counts 8-element groups; `float_dot` adds the tail).

const FLOAT_F32: u8 = 0;
const FLOAT_F16: u8 = 1;
const FLOAT_BF16: u8 = 2;

/// Eight elements of a `KIND` row at `p` as f32. f16 widens with FCVTL (base AdvSIMD; the
/// `float16x4_t` intrinsics are unstable), bf16 by moving its bits to the top of an f32.
#[inline(always)]
unsafe fn load_f32x8<const KIND: u8>(p: *const u8) -> [float32x4_t; 2] {
    unsafe {
        match KIND {
            FLOAT_F16 => {
                let h = vld1q_u16(p.cast());
                let (lo, hi): (float32x4_t, float32x4_t);
                asm!("fcvtl {0:v}.4s, {2:v}.4h", "fcvtl2 {1:v}.4s, {2:v}.8h", out(vreg) lo, out(vreg) hi, in(vreg) h,
                     options(pure, nomem, nostack));
                [lo, hi]
            }
            FLOAT_BF16 => {
                let h = vld1q_u16(p.cast());
                [
                    vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
                    vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
                ]
            }
            _ => [vld1q_f32(p.cast()), vld1q_f32(p.add(16).cast())],
        }
    }
}

#[inline(always)]
unsafe fn floats<const NT: usize, const KIND: u8>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    unsafe {
        let group = if KIND == FLOAT_F32 { 32 } else { 16 };
        let mut acc = [[vdupq_n_f32(0.0); 2]; NT];
        for i in 0..nb {
            let x = unsafe { load_f32x8::<KIND>(w.add(group * i)) };
            for t in 0..NT {
                let y = unsafe { load_f32x8::<KIND>(a.add(t * astride + group * i)) };
                acc[t][0] = vfmaq_f32(acc[t][0], x[0], y[0]);
                acc[t][1] = vfmaq_f32(acc[t][1], x[1], y[1]);
            }
        }
        for t in 0..NT {
            out[t] = vaddvq_f32(vaddq_f32(acc[t][0], acc[t][1]));
        }
    }
}

// ------------------------------------------------------------------------------------------
// Instantiations, safe entry points and the tables.

/// Safe `vec_dot` and `vec_dot_x4` over `$kernel::<NT, $generics>`: check the slice lengths,
/// then call the kernel.
macro_rules! entry {
    ($one:ident, $four:ident, $kernel:ident, [$($g:tt)*], $elems:expr, $wb:expr, $ab:expr) => {
        fn $one(n: usize, w: &[u8], act: &[u8]) -> f32 {
            let nb = n / $elems;
            assert!(n % $elems == 0 && w.len() >= nb * $wb && act.len() >= nb * $ab);
            let mut o = [0f32; 1];
            // SAFETY: lengths checked above; NEON is baseline on aarch64, and the dotprod
            // kernels are only in the table built after `dotprod_detected()`.
            unsafe { $kernel::<1, $($g)*>(nb, w.as_ptr(), act.as_ptr(), 0, &mut o) };
            o[0]
        }
        fn $four(n: usize, w: &[u8], act: &[u8], stride: usize, out: &mut [f32; 4]) {
            let nb = n / $elems;
            assert!(n % $elems == 0 && w.len() >= nb * $wb && stride >= nb * $ab);
            assert!(act.len() >= 3 * stride + nb * $ab);
            // SAFETY: as above.
            unsafe { $kernel::<4, $($g)*>(nb, w.as_ptr(), act.as_ptr(), stride, out) };
        }
    };
}

/// For one integer kernel `$kernel::<NT, DOT, $generics>`: its `neon,dotprod` instantiation
/// `$dp` and the entry points of both variants (plain: `$one`/`$four`, SDOT: `$one_dp`/`$four_dp`).
macro_rules! entries {
    ($kernel:ident [$($g:tt)*], $dp:ident, $elems:expr, $wb:expr, $ab:expr, $one:ident, $four:ident, $one_dp:ident, $four_dp:ident) => {
        #[target_feature(enable = "neon,dotprod")]
        unsafe fn $dp<const NT: usize>(nb: usize, w: *const u8, a: *const u8, s: usize, o: &mut [f32; NT]) {
            unsafe { $kernel::<NT, true, $($g)*>(nb, w, a, s, o) }
        }
        entry!($one, $four, $kernel, [false, $($g)*], $elems, $wb, $ab);
        entry!($one_dp, $four_dp, $dp, [], $elems, $wb, $ab);
    };
}

entries!(blocks32[Q4_0], q4_0_dp, 32, 18, 34, vd_q4_0, vd4_q4_0, vdd_q4_0, vdd4_q4_0);
entries!(blocks32[Q5_0], q5_0_dp, 32, 22, 34, vd_q5_0, vd4_q5_0, vdd_q5_0, vdd4_q5_0);
entries!(blocks32[Q8_0], q8_0_dp, 32, 34, 34, vd_q8_0, vd4_q8_0, vdd_q8_0, vdd4_q8_0);
entries!(blocks32[IQ4_NL], iq4_nl_dp, 32, 18, 34, vd_iq4_nl, vd4_iq4_nl, vdd_iq4_nl, vdd4_iq4_nl);
entries!(blocks32[Q4_1], q4_1_dp, 32, 20, 36, vd_q4_1, vd4_q4_1, vdd_q4_1, vdd4_q4_1);
entries!(blocks32[Q5_1], q5_1_dp, 32, 24, 36, vd_q5_1, vd4_q5_1, vdd_q5_1, vdd4_q5_1);
entries!(k4_family[false], q4_k_dp, 256, 144, Q8K, vd_q4_k, vd4_q4_k, vdd_q4_k, vdd4_q4_k);
entries!(k4_family[true], q5_k_dp, 256, 176, Q8K, vd_q5_k, vd4_q5_k, vdd_q5_k, vdd4_q5_k);
entries!(groups16[Q2_K], q2_k_dp, 256, 84, Q8K, vd_q2_k, vd4_q2_k, vdd_q2_k, vdd4_q2_k);
entries!(groups16[Q3_K], q3_k_dp, 256, 110, Q8K, vd_q3_k, vd4_q3_k, vdd_q3_k, vdd4_q3_k);
entries!(groups16[Q6_K], q6_k_dp, 256, 210, Q8K, vd_q6_k, vd4_q6_k, vdd_q6_k, vdd4_q6_k);
entries!(iq4_xs[], iq4_xs_dp, 256, 136, Q8K, vd_iq4_xs, vd4_iq4_xs, vdd_iq4_xs, vdd4_iq4_xs);
entries!(groups16[IQ2_XXS], iq2_xxs_dp, 256, 66, Q8K, vd_iq2_xxs, vd4_iq2_xxs, vdd_iq2_xxs, vdd4_iq2_xxs);
entries!(groups16[IQ1_S], iq1_s_dp, 256, 50, Q8K, vd_iq1_s, vd4_iq1_s, vdd_iq1_s, vdd4_iq1_s);
entries!(groups16[IQ1_M], iq1_m_dp, 256, 56, Q8K, vd_iq1_m, vd4_iq1_m, vdd_iq1_m, vdd4_iq1_m);
entry!(vd_f32_8, vd4_f32_8, floats, [FLOAT_F32], 8, 32, 32);
entry!(vd_f16_8, vd4_f16_8, floats, [FLOAT_F16], 8, 16, 16);
entry!(vd_bf16_8, vd4_bf16_8, floats, [FLOAT_BF16], 8, 16, 16);

fn build(ty: GgmlType, f: (VecDot, VecDotX4), isa: &'static str) -> Option<CpuKernels> {
    let base = *scalar_kernels(ty)?;
    Some(CpuKernels { k: crate::quant::Kernels { vec_dot: f.0, ..base }, vec_dot_x4: Some(f.1), isa })
}

/// Plain NEON kernels for `ty` (None: no NEON kernel, the caller falls back to scalar).
pub fn table(ty: GgmlType) -> Option<CpuKernels> {
    use GgmlType as T;
    let f: (VecDot, VecDotX4) = match ty {
        T::Q4_0 => (vd_q4_0, vd4_q4_0),
        T::Q5_0 => (vd_q5_0, vd4_q5_0),
        T::Q8_0 => (vd_q8_0, vd4_q8_0),
        T::IQ4_NL => (vd_iq4_nl, vd4_iq4_nl),
        T::Q4_1 => (vd_q4_1, vd4_q4_1),
        T::Q5_1 => (vd_q5_1, vd4_q5_1),
        T::Q2_K => (vd_q2_k, vd4_q2_k),
        T::Q3_K => (vd_q3_k, vd4_q3_k),
        T::Q4_K => (vd_q4_k, vd4_q4_k),
        T::Q5_K => (vd_q5_k, vd4_q5_k),
        T::Q6_K => (vd_q6_k, vd4_q6_k),
        T::IQ4_XS => (vd_iq4_xs, vd4_iq4_xs),
        T::IQ2_XXS => (vd_iq2_xxs, vd4_iq2_xxs),
        T::IQ1_S => (vd_iq1_s, vd4_iq1_s),
        T::IQ1_M => (vd_iq1_m, vd4_iq1_m),
        // Floats have no dotprod variant: this table serves them under both.
        T::F32 => float_entries!(T::F32, vd_f32_8, vd4_f32_8),
        T::F16 => float_entries!(T::F16, vd_f16_8, vd4_f16_8),
        T::BF16 => float_entries!(T::BF16, vd_bf16_8, vd4_bf16_8),
        _ => return None,
    };
    build(ty, f, "neon")
}

/// NEON + SDOT kernels for `ty`; None without `dotprod`.
pub fn table_dotprod(ty: GgmlType) -> Option<CpuKernels> {
    use GgmlType as T;
    if !dotprod_detected() {
        return None;
    }
    let f: (VecDot, VecDotX4) = match ty {
        T::Q4_0 => (vdd_q4_0, vdd4_q4_0),
        T::Q5_0 => (vdd_q5_0, vdd4_q5_0),
        T::Q8_0 => (vdd_q8_0, vdd4_q8_0),
        T::IQ4_NL => (vdd_iq4_nl, vdd4_iq4_nl),
        T::Q4_1 => (vdd_q4_1, vdd4_q4_1),
        T::Q5_1 => (vdd_q5_1, vdd4_q5_1),
        T::Q2_K => (vdd_q2_k, vdd4_q2_k),
        T::Q3_K => (vdd_q3_k, vdd4_q3_k),
        T::Q4_K => (vdd_q4_k, vdd4_q4_k),
        T::Q5_K => (vdd_q5_k, vdd4_q5_k),
        T::Q6_K => (vdd_q6_k, vdd4_q6_k),
        T::IQ4_XS => (vdd_iq4_xs, vdd4_iq4_xs),
        T::IQ2_XXS => (vdd_iq2_xxs, vdd4_iq2_xxs),
        T::IQ1_S => (vdd_iq1_s, vdd4_iq1_s),
        T::IQ1_M => (vdd_iq1_m, vdd4_iq1_m),
        _ => return None,
    };
    build(ty, f, "neon-dotprod")
}
