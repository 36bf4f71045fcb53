//! Q3_K: 16 sub-blocks of 16 weights; 6-bit signed scales (12 packed bytes, offset 32) and an
//! f16 super-scale; 3-bit quants = 2 low bits (laid out as Q2_K) + 1 high bit in `hmask`
//! (bit k of byte l for element 32*k + l), stored inverted: a clear bit subtracts 4.

use super::QK_K;
use crate::quant::block::{Block, assert_block, blocks_mut, f16_bits_to_f32, f32_to_f16_bits, nearest_int, row_blocks};
use crate::quant::q8::BlockQ8K;
use crate::quant::{GgmlType, WeightFormat};

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ3K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    pub d: [u8; 2],
}

// SAFETY: byte arrays only.
unsafe impl Block for BlockQ3K {
    const ELEMS: usize = QK_K;
}
assert_block!(BlockQ3K, GgmlType::Q3_K);

/// The 16 scales, already minus 32 (-32..=31).
pub(crate) fn unpack_scales(s: &[u8; 12]) -> [i32; 16] {
    let word = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (a0, a1, tmp) = (word(0), word(1), word(2));
    const K1: u32 = 0x0303_0303;
    const K2: u32 = 0x0f0f_0f0f;
    let aux = [
        (a0 & K2) | ((tmp & K1) << 4),
        (a1 & K2) | (((tmp >> 2) & K1) << 4),
        ((a0 >> 4) & K2) | (((tmp >> 4) & K1) << 4),
        ((a1 >> 4) & K2) | (((tmp >> 6) & K1) << 4),
    ];
    let mut out = [0i32; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = ((aux[i / 4] >> (8 * (i % 4))) & 0xff) as i32 - 32;
    }
    out
}

/// The 256 signed 3-bit quants (-4..=3) of a block, in element order.
fn unpack_quants(x: &BlockQ3K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for (g, out) in a.chunks_exact_mut(32).enumerate() {
        // Group g: bits 2(g%4) of qs[32(g/4)..], high bit g of hmask.
        let (half, k) = (g / 4, g % 4);
        let qs = &x.qs[32 * half..32 * half + 32];
        for ((o, &q), &h) in out.iter_mut().zip(qs).zip(&x.hmask) {
            let low = ((q >> (2 * k)) & 3) as i8;
            *o = low - if h & (1 << g) != 0 { 0 } else { 4 };
        }
    }
    a
}

pub struct Q3K;

impl WeightFormat for Q3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const PARTNER: GgmlType = GgmlType::Q8_K;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        let xs = row_blocks::<BlockQ3K>(src, dst.len());
        for (x, y) in xs.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d_all = f16_bits_to_f32(x.d);
            let scales = unpack_scales(&x.scales);
            let q = unpack_quants(x);
            for ((out, qq), &sc) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).zip(&scales) {
                let dl = d_all * sc as f32;
                for (o, &v) in out.iter_mut().zip(qq) {
                    *o = dl * v as f32;
                }
            }
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let xs = row_blocks::<BlockQ3K>(w, n);
        let ys = row_blocks::<BlockQ8K>(act, n);
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            let scales = unpack_scales(&x.scales);
            let q = unpack_quants(x);
            let mut isum = 0i32;
            for ((q8, qq), &sc) in y.qs.chunks_exact(16).zip(q.chunks_exact(16)).zip(&scales) {
                let s: i32 = q8.iter().zip(qq).map(|(&a, &b)| a as i32 * b as i32).sum();
                isum += sc * s;
            }
            sumf += f16_bits_to_f32(x.d) * y.d() * isum as f32;
        }
        sumf
    }
}

/// ggml's `make_q3_quants` with `do_rmse`: signed quants in -nmax..nmax for 16 values,
/// refined coordinate-wise for up to 5 passes (weights x²). Writes `l` offset by `nmax`.
fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-15 {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (o, &v) in l.iter_mut().zip(x) {
        let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *o = q as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (o, &v) in l.iter_mut().zip(x) {
            let w = v * v;
            let cur = *o as f32;
            let mut slx = sumlx - w * v * cur;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * cur * cur;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *o as i32 {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *o = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for o in l.iter_mut() {
        *o += nmax as i8;
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// `quantize_row_q3_K_ref` (llama-quantize without an importance matrix).
pub fn quantize_row_ref(x: &[f32], dst: &mut [u8]) {
    let mut l = [0i8; QK_K];
    for (xb, yb) in x.chunks_exact(QK_K).zip(blocks_mut::<BlockQ3K>(dst)) {
        let mut scales = [0f32; 16];
        let (mut max_scale, mut amax) = (0f32, 0f32);
        for j in 0..16 {
            scales[j] = make_q3_quants(4, &xb[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            if scales[j].abs() > amax {
                amax = scales[j].abs();
                max_scale = scales[j];
            }
        }
        yb.scales = [0; 12];
        yb.d = f32_to_f16_bits(0.0);
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &s) in scales.iter().enumerate() {
                let q = ((nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as u8;
                if j < 8 {
                    yb.scales[j] = q & 0x0f;
                } else {
                    yb.scales[j - 8] |= (q & 0x0f) << 4;
                }
                yb.scales[j % 4 + 8] |= (q >> 4) << (2 * (j / 4));
            }
            yb.d = f32_to_f16_bits(1.0 / iscale);
        }
        let stored = unpack_scales(&yb.scales);
        for ((lj, xj), &sc) in l.chunks_exact_mut(16).zip(xb.chunks_exact(16)).zip(&stored) {
            let d = f16_bits_to_f32(yb.d) * sc as f32;
            if d == 0.0 {
                continue;
            }
            for (o, &v) in lj.iter_mut().zip(xj) {
                *o = (nearest_int(v / d).clamp(-4, 3) + 4) as i8;
            }
        }
        yb.hmask = [0; 32];
        for (j, v) in l.iter_mut().enumerate() {
            if *v > 3 {
                yb.hmask[j % 32] |= 1 << (j / 32);
                *v -= 4;
            }
        }
        for half in 0..2 {
            for i in 0..32 {
                let q = |k: usize| l[128 * half + 32 * k + i] as u8;
                yb.qs[32 * half + i] = q(0) | (q(1) << 2) | (q(2) << 4) | (q(3) << 6);
            }
        }
    }
}
