//! Q4_1: 32 weights per block, f16 scale and minimum, 4-bit quants (`w = d * q + m`).
//! Pairs with Q8_1, whose `s = d * sum(q)` turns the minimum into one multiply per block.

use super::block::{Block, assert_block, blocks_mut, f16_bits_to_f32, f32_to_f16_bits, row_blocks};
use super::q8::BlockQ8_1;
use super::{GgmlType, WeightFormat};

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qs: [u8; 16],
}

// SAFETY: byte arrays only.
unsafe impl Block for BlockQ4_1 {
    const ELEMS: usize = 32;
}
assert_block!(BlockQ4_1, GgmlType::Q4_1);

pub struct Q4_1;

impl WeightFormat for Q4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const PARTNER: GgmlType = GgmlType::Q8_1;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        let xs = row_blocks::<BlockQ4_1>(src, dst.len());
        for (x, y) in xs.iter().zip(dst.chunks_exact_mut(32)) {
            let d = f16_bits_to_f32(x.d);
            let m = f16_bits_to_f32(x.m);
            for (j, &q) in x.qs.iter().enumerate() {
                y[j] = (q & 0x0f) as f32 * d + m;
                y[j + 16] = (q >> 4) as f32 * d + m;
            }
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let xs = row_blocks::<BlockQ4_1>(w, n);
        let ys = row_blocks::<BlockQ8_1>(act, n);
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            let mut sumi = 0i32;
            for (j, &q) in x.qs.iter().enumerate() {
                sumi += (q & 0x0f) as i32 * y.qs[j] as i32;
                sumi += (q >> 4) as i32 * y.qs[j + 16] as i32;
            }
            sumf += (f16_bits_to_f32(x.d) * y.d()) * sumi as f32 + f16_bits_to_f32(x.m) * y.s();
        }
        sumf
    }
}

/// `quantize_row_q4_1_ref`: min/max over the block, 15 steps between them.
pub fn quantize_row_ref(x: &[f32], dst: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(32).zip(blocks_mut::<BlockQ4_1>(dst)) {
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &v in xb {
            min = if v < min { v } else { min };
            max = if v > max { v } else { max };
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = f32_to_f16_bits(d);
        yb.m = f32_to_f16_bits(min);
        for j in 0..16 {
            let q0 = (((xb[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (((xb[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
            yb.qs[j] = q0 | (q1 << 4);
        }
    }
}
