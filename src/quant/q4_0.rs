//! Q4_0: 32 weights per block, one f16 scale, 4-bit quants offset by 8 (`w = d * (q - 8)`).
//! Byte j holds element j (low nibble) and element j + 16 (high nibble).

use super::block::{Block, assert_block, blocks_mut, f16_bits_to_f32, f32_to_f16_bits, row_blocks};
use super::q8::BlockQ8_0;
use super::{GgmlType, WeightFormat};

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: [u8; 2],
    pub qs: [u8; 16],
}

// SAFETY: byte arrays only.
unsafe impl Block for BlockQ4_0 {
    const ELEMS: usize = 32;
}
assert_block!(BlockQ4_0, GgmlType::Q4_0);

pub struct Q4_0;

impl WeightFormat for Q4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const PARTNER: GgmlType = GgmlType::Q8_0;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        let xs = row_blocks::<BlockQ4_0>(src, dst.len());
        for (x, y) in xs.iter().zip(dst.chunks_exact_mut(32)) {
            let d = f16_bits_to_f32(x.d);
            for (j, &q) in x.qs.iter().enumerate() {
                y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
                y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
            }
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let xs = row_blocks::<BlockQ4_0>(w, n);
        let ys = row_blocks::<BlockQ8_0>(act, n);
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            let mut sumi = 0i32;
            for (j, &q) in x.qs.iter().enumerate() {
                sumi += ((q & 0x0f) as i32 - 8) * y.qs[j] as i32;
                sumi += ((q >> 4) as i32 - 8) * y.qs[j + 16] as i32;
            }
            sumf += sumi as f32 * f16_bits_to_f32(x.d) * y.d();
        }
        sumf
    }
}

/// `quantize_row_q4_0_ref`: the scale is the signed value of largest magnitude over -8.
pub fn quantize_row_ref(x: &[f32], dst: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(32).zip(blocks_mut::<BlockQ4_0>(dst)) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = f32_to_f16_bits(d);
        for j in 0..16 {
            // Truncation toward zero after +8.5, as the C cast to int8_t does.
            let q0 = ((xb[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((xb[j + 16] * id + 8.5) as i8).min(15) as u8;
            yb.qs[j] = q0 | (q1 << 4);
        }
    }
}
