//! Q4_K: 8 sub-blocks of 32 weights; 6-bit scale and 6-bit min per sub-block (12 packed
//! bytes), f16 super-scales `d`, `dmin`; 4-bit quants (`w = d*sc*q - dmin*m`).
//! Each 64 weights share 32 bytes: low nibbles are the first 32, high nibbles the next 32.

use super::{QK_K, scale_min_k4};
use crate::quant::block::{Block, assert_block, blocks_mut, f16_bits_to_f32, f32_to_f16_bits, nearest_int, row_blocks};
use crate::quant::q8::BlockQ8K;
use crate::quant::{GgmlType, WeightFormat};

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}

// SAFETY: byte arrays only.
unsafe impl Block for BlockQ4K {
    const ELEMS: usize = QK_K;
}
assert_block!(BlockQ4K, GgmlType::Q4_K);

/// Quant of element `e` (0..256).
#[inline]
fn quant(qs: &[u8; 128], e: usize) -> u8 {
    let b = qs[32 * (e / 64) + e % 32];
    if e % 64 < 32 { b & 0x0f } else { b >> 4 }
}

pub struct Q4K;

impl WeightFormat for Q4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const PARTNER: GgmlType = GgmlType::Q8_K;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        let xs = row_blocks::<BlockQ4K>(src, dst.len());
        for (x, y) in xs.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = f16_bits_to_f32(x.d);
            let min = f16_bits_to_f32(x.dmin);
            for (j, out) in y.chunks_exact_mut(32).enumerate() {
                let (sc, m) = scale_min_k4(j, &x.scales);
                let (dl, ml) = (d * sc as f32, min * m as f32);
                for (l, o) in out.iter_mut().enumerate() {
                    *o = dl * quant(&x.qs, 32 * j + l) as f32 - ml;
                }
            }
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let xs = row_blocks::<BlockQ4K>(w, n);
        let ys = row_blocks::<BlockQ8K>(act, n);
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            let (mut isum, mut summs) = (0i32, 0i32);
            for (j, q8) in y.qs.chunks_exact(32).enumerate() {
                let (sc, m) = scale_min_k4(j, &x.scales);
                let s: i32 = q8.iter().enumerate().map(|(l, &a)| a as i32 * quant(&x.qs, 32 * j + l) as i32).sum();
                isum += sc as i32 * s;
                summs += m as i32 * (y.bsum(2 * j) + y.bsum(2 * j + 1));
            }
            let d = f16_bits_to_f32(x.d) * y.d();
            let dmin = f16_bits_to_f32(x.dmin) * y.d();
            sumf += d * isum as f32 - dmin * summs as f32;
        }
        sumf
    }
}

/// ggml's `make_qkx2_quants`: weighted least-squares scale and min for `x` with `nmax` levels,
/// trying `nstep + 1` candidate scales around the min/max one. Returns (scale, -min).
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    l_aux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = if x[i] < min { x[i] } else { min };
        max = if x[i] > max { x[i] } else { max };
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            l_aux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * l_aux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&l_aux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// `quantize_row_q4_K_ref` (llama-quantize without an importance matrix).
pub fn quantize_row_ref(x: &[f32], dst: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut l_aux = [0u8; 32];
    let mut weights = [0f32; 32];
    for (xb, yb) in x.chunks_exact(QK_K).zip(blocks_mut::<BlockQ4K>(dst)) {
        let mut scales = [0f32; 8];
        let mut mins = [0f32; 8];
        let (mut max_scale, mut max_min) = (0f32, 0f32);
        for j in 0..8 {
            let xs = &xb[32 * j..32 * j + 32];
            let sum_x2: f32 = xs.iter().fold(0.0, |s, v| s + v * v);
            let av_x = (sum_x2 / 32.0).sqrt();
            for (w, v) in weights.iter_mut().zip(xs) {
                *w = av_x + v.abs();
            }
            let (s, m) = make_qkx2_quants(15, xs, &weights, &mut l[32 * j..32 * j + 32], &mut l_aux, -1.0, 0.1, 20);
            scales[j] = s;
            mins[j] = m;
            max_scale = if s > max_scale { s } else { max_scale };
            max_min = if m > max_min { m } else { max_min };
        }
        let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        yb.scales = [0; 12];
        for j in 0..8 {
            // ggml stores nearest_int into a uint8_t before clamping; values are in 0..=63 anyway.
            let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
            let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
            if j < 4 {
                yb.scales[j] = ls;
                yb.scales[j + 4] = lm;
            } else {
                yb.scales[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
                yb.scales[j - 4] |= (ls >> 4) << 6;
                yb.scales[j] |= (lm >> 4) << 6;
            }
        }
        yb.d = f32_to_f16_bits(max_scale / 63.0);
        yb.dmin = f32_to_f16_bits(max_min / 63.0);
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &yb.scales);
            let d = f16_bits_to_f32(yb.d) * sc as f32;
            if d == 0.0 {
                continue;
            }
            let dm = f16_bits_to_f32(yb.dmin) * m as f32;
            for ii in 0..32 {
                l[32 * j + ii] = nearest_int((xb[32 * j + ii] + dm) / d).clamp(0, 15) as u8;
            }
        }
        for (c, q) in yb.qs.chunks_exact_mut(32).enumerate() {
            for (i, b) in q.iter_mut().enumerate() {
                *b = l[64 * c + i] | (l[64 * c + i + 32] << 4);
            }
        }
    }
}
