//! NEON kernels (baseline on aarch64), each in two variants: plain NEON (`vmull_s8` +
//! `vpadalq_s16`) and SDOT where the CPU has `dotprod` (`vdotq_s32` is unstable, so `sdot` is
//! emitted with `asm!` inside `#[target_feature(enable = "neon,dotprod")]` functions).
//!
//! Like the AVX2 file, every kernel is generic over `NT` activation rows (1: matrix-vector,
//! 4: the prefill tile) and computes exactly the scalar integer block sums.

#![allow(clippy::needless_range_loop)]
// the tile loops index several arrays by token
// NEON intrinsics are `#[target_feature]` fns, and `#[inline(always)]` cannot carry the
// attribute: kernel bodies are one `unsafe` block, and the inner ones document the raw loads.
#![allow(unused_unsafe)]

use core::arch::aarch64::*;
use std::arch::asm;

use super::kernels::{CpuKernels, VecDot, VecDotX4};
use crate::quant::{GgmlType, f16_bits_to_f32, scalar_kernels};

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

const IQ4: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// The 32 weights of a 32-element block as signed bytes (elements 0..16, 16..32) and its scale.
/// `KIND`: 0 Q4_0, 1 Q5_0, 2 Q8_0, 3 IQ4_NL.
#[inline(always)]
unsafe fn decode32<const KIND: u8>(x: *const u8) -> (f32, int8x16_t, int8x16_t) {
    unsafe {
        let d = f16_at(x);
        match KIND {
            0 => {
                let v = ld_u8(x.add(2));
                let eight = vdupq_n_s8(8);
                let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f))), eight);
                let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), eight);
                (d, lo, hi)
            }
            1 => {
                let qh = x.add(2).cast::<u32>().read_unaligned();
                let v = ld_u8(x.add(6));
                let bits = vld1q_u8([1u8, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128].as_ptr());
                let b = qh.to_le_bytes();
                let set_lo = vtstq_u8(vcombine_u8(vdup_n_u8(b[0]), vdup_n_u8(b[1])), bits);
                let set_hi = vtstq_u8(vcombine_u8(vdup_n_u8(b[2]), vdup_n_u8(b[3])), bits);
                // q - 16: the nibble with 0xf0 or'ed in where the fifth bit is clear.
                let f0 = vdupq_n_u8(0xf0);
                let lo = vorrq_u8(vandq_u8(v, vdupq_n_u8(0x0f)), vbicq_u8(f0, set_lo));
                let hi = vorrq_u8(vshrq_n_u8(v, 4), vbicq_u8(f0, set_hi));
                (d, vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
            }
            2 => (d, ld_s8(x.add(2)), ld_s8(x.add(18))),
            _ => {
                let v = ld_u8(x.add(2));
                let t = vld1q_s8(IQ4.as_ptr());
                (d, vqtbl1q_s8(t, vandq_u8(v, vdupq_n_u8(0x0f))), vqtbl1q_s8(t, vshrq_n_u8(v, 4)))
            }
        }
    }
}

/// 32-element blocks (`wblock` bytes) against Q8_0 rows.
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
            0 | 3 => 18,
            1 => 22,
            _ => 34,
        };
        let mut acc = [vdupq_n_f32(0.0); NT];
        for i in 0..nb {
            let (dx, x0, x1) = unsafe { decode32::<KIND>(w.add(i * wblock)) };
            for t in 0..NT {
                let y = unsafe { a.add(t * astride + i * 34) };
                let p =
                    unsafe { dot16::<DOT>(dot16::<DOT>(vdupq_n_s32(0), x0, ld_s8(y.add(2))), x1, ld_s8(y.add(18))) };
                acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(p), dx * unsafe { f16_at(y) });
            }
        }
        for t in 0..NT {
            out[t] = vaddvq_f32(acc[t]);
        }
    }
}

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

#[inline(always)]
unsafe fn q4_k<const NT: usize, const DOT: bool>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    unsafe {
        let m4 = vdupq_n_u8(0x0f);
        let mut sumf = [0f32; NT];
        for i in 0..nb {
            let x = unsafe { w.add(i * 144) };
            let (d, dmin) = unsafe { (f16_at(x), f16_at(x.add(2))) };
            let sm = unsafe { k4_scales_mins(x.add(4)) };
            let mut isum = [0i32; NT];
            for j in 0..4 {
                let (v0, v1) = unsafe { (ld_u8(x.add(16 + 32 * j)), ld_u8(x.add(32 + 32 * j))) };
                let l0 = vreinterpretq_s8_u8(vandq_u8(v0, m4));
                let l1 = vreinterpretq_s8_u8(vandq_u8(v1, m4));
                let h0 = vreinterpretq_s8_u8(vshrq_n_u8(v0, 4));
                let h1 = vreinterpretq_s8_u8(vshrq_n_u8(v1, 4));
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

#[inline(always)]
unsafe fn q6_k<const NT: usize, const DOT: bool>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    astride: usize,
    out: &mut [f32; NT],
) {
    unsafe {
        let m4 = vdupq_n_u8(0x0f);
        let m3 = vdupq_n_u8(0x03);
        let m32 = vdupq_n_s8(32);
        let mut sumf = [0f32; NT];
        for i in 0..nb {
            let x = unsafe { w.add(i * 210) };
            let d = unsafe { f16_at(x.add(208)) };
            let sc = unsafe { std::slice::from_raw_parts(x.add(192).cast::<i8>(), 16) };
            let mut isum = [0i32; NT];
            for half in 0..2 {
                for k in 0..4 {
                    for part in 0..2 {
                        let l = 16 * part;
                        let ql = unsafe { ld_u8(x.add(64 * half + 32 * (k % 2) + l)) };
                        let qh = unsafe { ld_u8(x.add(128 + 32 * half + l)) };
                        let low = if k < 2 { vandq_u8(ql, m4) } else { vshrq_n_u8(ql, 4) };
                        let high = match k {
                            0 => vandq_u8(qh, m3),
                            1 => vandq_u8(vshrq_n_u8(qh, 2), m3),
                            2 => vandq_u8(vshrq_n_u8(qh, 4), m3),
                            _ => vshrq_n_u8(qh, 6),
                        };
                        let q = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(low, vshlq_n_u8(high, 4))), m32);
                        let g = 8 * half + 2 * k + part;
                        for t in 0..NT {
                            let y = unsafe { a.add(t * astride + i * Q8K + 4 + 128 * half + 32 * k + l) };
                            let s = unsafe { vaddvq_s32(dot16::<DOT>(vdupq_n_s32(0), q, ld_s8(y))) };
                            isum[t] += sc[g] as i32 * s;
                        }
                    }
                }
            }
            for t in 0..NT {
                sumf[t] += d * unsafe { f32_at(a.add(t * astride + i * Q8K)) } * isum[t] as f32;
            }
        }
        *out = sumf;
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

#[inline(always)]
unsafe fn q4_0<const NT: usize, const DOT: bool>(nb: usize, w: *const u8, a: *const u8, s: usize, o: &mut [f32; NT]) {
    unsafe { blocks32::<NT, DOT, 0>(nb, w, a, s, o) }
}
#[inline(always)]
unsafe fn q5_0<const NT: usize, const DOT: bool>(nb: usize, w: *const u8, a: *const u8, s: usize, o: &mut [f32; NT]) {
    unsafe { blocks32::<NT, DOT, 1>(nb, w, a, s, o) }
}
#[inline(always)]
unsafe fn q8_0<const NT: usize, const DOT: bool>(nb: usize, w: *const u8, a: *const u8, s: usize, o: &mut [f32; NT]) {
    unsafe { blocks32::<NT, DOT, 2>(nb, w, a, s, o) }
}
#[inline(always)]
unsafe fn iq4_nl<const NT: usize, const DOT: bool>(nb: usize, w: *const u8, a: *const u8, s: usize, o: &mut [f32; NT]) {
    unsafe { blocks32::<NT, DOT, 3>(nb, w, a, s, o) }
}

/// For one kernel: the `neon,dotprod` instantiation and the four safe entry points
/// (`vec_dot`/`vec_dot_x4`, plain and dotprod). Sound because the dotprod table is only
/// handed out after `dotprod_detected()`.
macro_rules! entries {
    ($kernel:ident, $dp:ident, $elems:expr, $wb:expr, $ab:expr, $one:ident, $four:ident, $one_dp:ident, $four_dp:ident) => {
        #[target_feature(enable = "neon,dotprod")]
        unsafe fn $dp<const NT: usize>(nb: usize, w: *const u8, a: *const u8, s: usize, o: &mut [f32; NT]) {
            unsafe { $kernel::<NT, true>(nb, w, a, s, o) }
        }
        fn $one(n: usize, w: &[u8], act: &[u8]) -> f32 {
            let nb = n / $elems;
            assert!(n % $elems == 0 && w.len() >= nb * $wb && act.len() >= nb * $ab);
            let mut o = [0f32; 1];
            // SAFETY: lengths checked above; plain NEON is baseline on aarch64.
            unsafe { $kernel::<1, false>(nb, w.as_ptr(), act.as_ptr(), 0, &mut o) };
            o[0]
        }
        fn $four(n: usize, w: &[u8], act: &[u8], stride: usize, out: &mut [f32; 4]) {
            let nb = n / $elems;
            assert!(n % $elems == 0 && w.len() >= nb * $wb && stride >= nb * $ab);
            assert!(act.len() >= 3 * stride + nb * $ab);
            // SAFETY: as above.
            unsafe { $kernel::<4, false>(nb, w.as_ptr(), act.as_ptr(), stride, out) };
        }
        fn $one_dp(n: usize, w: &[u8], act: &[u8]) -> f32 {
            let nb = n / $elems;
            assert!(n % $elems == 0 && w.len() >= nb * $wb && act.len() >= nb * $ab);
            let mut o = [0f32; 1];
            // SAFETY: lengths checked; dotprod checked before the table was built.
            unsafe { $dp::<1>(nb, w.as_ptr(), act.as_ptr(), 0, &mut o) };
            o[0]
        }
        fn $four_dp(n: usize, w: &[u8], act: &[u8], stride: usize, out: &mut [f32; 4]) {
            let nb = n / $elems;
            assert!(n % $elems == 0 && w.len() >= nb * $wb && stride >= nb * $ab);
            assert!(act.len() >= 3 * stride + nb * $ab);
            // SAFETY: as above.
            unsafe { $dp::<4>(nb, w.as_ptr(), act.as_ptr(), stride, out) };
        }
    };
}

entries!(q4_0, q4_0_dp, 32, 18, 34, vd_q4_0, vd4_q4_0, vdd_q4_0, vdd4_q4_0);
entries!(q5_0, q5_0_dp, 32, 22, 34, vd_q5_0, vd4_q5_0, vdd_q5_0, vdd4_q5_0);
entries!(q8_0, q8_0_dp, 32, 34, 34, vd_q8_0, vd4_q8_0, vdd_q8_0, vdd4_q8_0);
entries!(iq4_nl, iq4_nl_dp, 32, 18, 34, vd_iq4_nl, vd4_iq4_nl, vdd_iq4_nl, vdd4_iq4_nl);
entries!(q4_k, q4_k_dp, 256, 144, Q8K, vd_q4_k, vd4_q4_k, vdd_q4_k, vdd4_q4_k);
entries!(q6_k, q6_k_dp, 256, 210, Q8K, vd_q6_k, vd4_q6_k, vdd_q6_k, vdd4_q6_k);
entries!(iq4_xs, iq4_xs_dp, 256, 136, Q8K, vd_iq4_xs, vd4_iq4_xs, vdd_iq4_xs, vdd4_iq4_xs);

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
        T::Q4_K => (vd_q4_k, vd4_q4_k),
        T::Q6_K => (vd_q6_k, vd4_q6_k),
        T::IQ4_XS => (vd_iq4_xs, vd4_iq4_xs),
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
        T::Q4_K => (vdd_q4_k, vdd4_q4_k),
        T::Q6_K => (vdd_q6_k, vdd4_q6_k),
        T::IQ4_XS => (vdd_iq4_xs, vdd4_iq4_xs),
        _ => return None,
    };
    build(ty, f, "neon-dotprod")
}
