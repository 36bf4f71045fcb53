//! Q5_1: 32 weights per block, f16 scale and minimum, 5-bit quants (`w = d * q + m`);
//! bit layout as Q5_0. Pairs with Q8_1.

use super::block::{Block, assert_block, blocks_mut, f16_bits_to_f32, f32_to_f16_bits, row_blocks};
use super::q8::BlockQ8_1;
use super::{GgmlType, WeightFormat};

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

// SAFETY: byte arrays only.
unsafe impl Block for BlockQ5_1 {
    const ELEMS: usize = 32;
}
assert_block!(BlockQ5_1, GgmlType::Q5_1);

#[inline]
fn quants(qs: &[u8; 16], qh: u32, j: usize) -> (i32, i32) {
    let h0 = ((qh >> j) << 4) & 0x10;
    let h1 = (qh >> (j + 12)) & 0x10;
    (((qs[j] & 0x0f) as u32 | h0) as i32, ((qs[j] >> 4) as u32 | h1) as i32)
}

pub struct Q5_1;

impl WeightFormat for Q5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const PARTNER: GgmlType = GgmlType::Q8_1;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        let xs = row_blocks::<BlockQ5_1>(src, dst.len());
        for (x, y) in xs.iter().zip(dst.chunks_exact_mut(32)) {
            let d = f16_bits_to_f32(x.d);
            let m = f16_bits_to_f32(x.m);
            let qh = u32::from_le_bytes(x.qh);
            for j in 0..16 {
                let (q0, q1) = quants(&x.qs, qh, j);
                y[j] = q0 as f32 * d + m;
                y[j + 16] = q1 as f32 * d + m;
            }
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let xs = row_blocks::<BlockQ5_1>(w, n);
        let ys = row_blocks::<BlockQ8_1>(act, n);
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            let qh = u32::from_le_bytes(x.qh);
            let mut sumi = 0i32;
            for j in 0..16 {
                let (q0, q1) = quants(&x.qs, qh, j);
                sumi += q0 * y.qs[j] as i32 + q1 * y.qs[j + 16] as i32;
            }
            sumf += (f16_bits_to_f32(x.d) * y.d()) * sumi as f32 + f16_bits_to_f32(x.m) * y.s();
        }
        sumf
    }
}

/// `quantize_row_q5_1_ref`.
pub fn quantize_row_ref(x: &[f32], dst: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(32).zip(blocks_mut::<BlockQ5_1>(dst)) {
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &v in xb {
            min = if v < min { v } else { min };
            max = if v > max { v } else { max };
        }
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = f32_to_f16_bits(d);
        yb.m = f32_to_f16_bits(min);
        let mut qh = 0u32;
        for j in 0..16 {
            // ggml casts straight to uint8_t here (no clamp).
            let q0 = ((xb[j] - min) * id + 0.5) as u8;
            let q1 = ((xb[j + 16] - min) * id + 0.5) as u8;
            yb.qs[j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
            qh |= ((q0 as u32 & 0x10) >> 4) << j;
            qh |= ((q1 as u32 & 0x10) >> 4) << (j + 16);
        }
        yb.qh = qh.to_le_bytes();
    }
}
