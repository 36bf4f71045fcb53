//! Q8_0 as a weight format: 32 weights per block, f16 scale, i8 quants (`w = d * q`).
//! The block is the same as the activation type; see `q8.rs` for the x86 activation quantizer.

use super::block::{blocks_mut, f16_bits_to_f32, f32_to_f16_bits, row_blocks};
use super::q8::BlockQ8_0;
use super::{GgmlType, WeightFormat};

pub struct Q8_0;

impl WeightFormat for Q8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const PARTNER: GgmlType = GgmlType::Q8_0;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        let xs = row_blocks::<BlockQ8_0>(src, dst.len());
        for (x, y) in xs.iter().zip(dst.chunks_exact_mut(32)) {
            let d = f16_bits_to_f32(x.d);
            for (o, &q) in y.iter_mut().zip(&x.qs) {
                *o = q as f32 * d;
            }
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let xs = row_blocks::<BlockQ8_0>(w, n);
        let ys = row_blocks::<BlockQ8_0>(act, n);
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            let sumi: i32 = x.qs.iter().zip(&y.qs).map(|(&a, &b)| a as i32 * b as i32).sum();
            sumf += sumi as f32 * (f16_bits_to_f32(x.d) * y.d());
        }
        sumf
    }
}

/// `quantize_row_q8_0_ref` (weights; differs from the x86 activation path in using `1/d` and
/// rounding half away from zero).
pub fn quantize_row_ref(x: &[f32], dst: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(32).zip(blocks_mut::<BlockQ8_0>(dst)) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = f32_to_f16_bits(d);
        for (q, v) in yb.qs.iter_mut().zip(xb) {
            *q = (v * id).round() as i8;
        }
    }
}
