//! Q2_K: 16 sub-blocks of 16 weights; 4-bit scale and 4-bit min per sub-block (one byte),
//! f16 super-scales `d` and `dmin`; 2-bit quants (`w = d*sc*q - dmin*m`).
//! Quants of 128 weights share 32 bytes: element 32*k + l sits at bit 2k of byte l.

use super::{QK_K, make_qkx2_quants};
use crate::quant::block::{Block, assert_block, blocks_mut, f16_bits_to_f32, f32_to_f16_bits, nearest_int, row_blocks};
use crate::quant::q8::BlockQ8K;
use crate::quant::{GgmlType, WeightFormat};

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ2K {
    pub scales: [u8; 16],
    pub qs: [u8; 64],
    pub d: [u8; 2],
    pub dmin: [u8; 2],
}

// SAFETY: byte arrays only.
unsafe impl Block for BlockQ2K {
    const ELEMS: usize = QK_K;
}
assert_block!(BlockQ2K, GgmlType::Q2_K);

pub struct Q2K;

impl WeightFormat for Q2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const PARTNER: GgmlType = GgmlType::Q8_K;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        let xs = row_blocks::<BlockQ2K>(src, dst.len());
        for (x, y) in xs.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = f16_bits_to_f32(x.d);
            let min = f16_bits_to_f32(x.dmin);
            // Sub-block `is` covers y[16*is..], i.e. half `is % 2` of shift pass `(is/2) % 4`.
            for (is, (out, &sc)) in y.chunks_exact_mut(16).zip(&x.scales).enumerate() {
                let q = &x.qs[32 * (is / 8) + 16 * (is % 2)..][..16];
                let shift = 2 * ((is / 2) % 4);
                let dl = d * (sc & 0x0f) as f32;
                let ml = min * (sc >> 4) as f32;
                for (o, &b) in out.iter_mut().zip(q) {
                    *o = dl * ((b >> shift) & 3) as f32 - ml;
                }
            }
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let xs = row_blocks::<BlockQ2K>(w, n);
        let ys = row_blocks::<BlockQ8K>(act, n);
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            let summs: i32 = (0..16).map(|j| y.bsum(j) * (x.scales[j] >> 4) as i32).sum();
            let dall = y.d() * f16_bits_to_f32(x.d);
            let dmin = y.d() * f16_bits_to_f32(x.dmin);
            let mut isum = 0i32;
            for (is, (q8, &sc)) in y.qs.chunks_exact(16).zip(&x.scales).enumerate() {
                let q2 = &x.qs[32 * (is / 8) + 16 * (is % 2)..][..16];
                let shift = 2 * ((is / 2) % 4);
                let s: i32 = q8.iter().zip(q2).map(|(&a, &b)| a as i32 * ((b >> shift) & 3) as i32).sum();
                isum += (sc & 0x0f) as i32 * s;
            }
            sumf += dall * isum as f32 - dmin * summs as f32;
        }
        sumf
    }
}

/// `quantize_row_q2_K_ref` (llama-quantize without an importance matrix): per-16 scale and
/// min fitted by mean absolute error, then both quantized to 4 bits.
pub fn quantize_row_ref(x: &[f32], dst: &mut [u8]) {
    const Q4SCALE: f32 = 15.0;
    let mut l = [0u8; QK_K];
    let mut l_aux = [0u8; 16];
    let mut weights = [0f32; 16];
    for (xb, yb) in x.chunks_exact(QK_K).zip(blocks_mut::<BlockQ2K>(dst)) {
        let (mut scales, mut mins) = ([0f32; 16], [0f32; 16]);
        let (mut max_scale, mut max_min) = (0f32, 0f32);
        for j in 0..16 {
            let xs = &xb[16 * j..16 * j + 16];
            for (w, v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            (scales[j], mins[j]) =
                make_qkx2_quants(3, xs, &weights, &mut l[16 * j..16 * j + 16], &mut l_aux, -0.5, 0.1, 15, true);
            max_scale = if scales[j] > max_scale { scales[j] } else { max_scale };
            max_min = if mins[j] > max_min { mins[j] } else { max_min };
        }
        yb.scales = [0; 16];
        yb.d = f32_to_f16_bits(0.0);
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for (s, v) in yb.scales.iter_mut().zip(&scales) {
                *s = nearest_int(iscale * v) as u8;
            }
            yb.d = f32_to_f16_bits(max_scale / Q4SCALE);
        }
        yb.dmin = f32_to_f16_bits(0.0);
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for (s, v) in yb.scales.iter_mut().zip(&mins) {
                *s |= (nearest_int(iscale * v) << 4) as u8;
            }
            yb.dmin = f32_to_f16_bits(max_min / Q4SCALE);
        }
        for j in 0..16 {
            let d = f16_bits_to_f32(yb.d) * (yb.scales[j] & 0x0f) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = f16_bits_to_f32(yb.dmin) * (yb.scales[j] >> 4) as f32;
            for i in 16 * j..16 * j + 16 {
                l[i] = nearest_int((xb[i] + dm) / d).clamp(0, 3) as u8;
            }
        }
        for half in 0..2 {
            for i in 0..32 {
                let q = |k: usize| l[128 * half + 32 * k + i];
                yb.qs[32 * half + i] = q(0) | (q(1) << 2) | (q(2) << 4) | (q(3) << 6);
            }
        }
    }
}
