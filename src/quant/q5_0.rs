//! Q5_0: 32 weights per block, f16 scale, 5-bit quants offset by 16 (`w = d * (q - 16)`).
//! The low 4 bits are packed as in Q4_0; bit j of the little-endian u32 `qh` is the 5th bit
//! of element j.

use super::block::{Block, assert_block, blocks_mut, f16_bits_to_f32, f32_to_f16_bits, row_blocks};
use super::q8::BlockQ8_0;
use super::{GgmlType, WeightFormat};

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

// SAFETY: byte arrays only.
unsafe impl Block for BlockQ5_0 {
    const ELEMS: usize = 32;
}
assert_block!(BlockQ5_0, GgmlType::Q5_0);

/// The 5-bit quants (0..32) of elements j and j + 16.
#[inline]
fn quants(qs: &[u8; 16], qh: u32, j: usize) -> (i32, i32) {
    let h0 = ((qh >> j) << 4) & 0x10;
    let h1 = (qh >> (j + 12)) & 0x10;
    (((qs[j] & 0x0f) as u32 | h0) as i32, ((qs[j] >> 4) as u32 | h1) as i32)
}

pub struct Q5_0;

impl WeightFormat for Q5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const PARTNER: GgmlType = GgmlType::Q8_0;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        let xs = row_blocks::<BlockQ5_0>(src, dst.len());
        for (x, y) in xs.iter().zip(dst.chunks_exact_mut(32)) {
            let d = f16_bits_to_f32(x.d);
            let qh = u32::from_le_bytes(x.qh);
            for j in 0..16 {
                let (q0, q1) = quants(&x.qs, qh, j);
                y[j] = (q0 - 16) as f32 * d;
                y[j + 16] = (q1 - 16) as f32 * d;
            }
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let xs = row_blocks::<BlockQ5_0>(w, n);
        let ys = row_blocks::<BlockQ8_0>(act, n);
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            let qh = u32::from_le_bytes(x.qh);
            let mut sumi = 0i32;
            for j in 0..16 {
                let (q0, q1) = quants(&x.qs, qh, j);
                sumi += (q0 - 16) * y.qs[j] as i32 + (q1 - 16) * y.qs[j + 16] as i32;
            }
            sumf += (f16_bits_to_f32(x.d) * y.d()) * sumi as f32;
        }
        sumf
    }
}

/// `quantize_row_q5_0_ref`.
pub fn quantize_row_ref(x: &[f32], dst: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(32).zip(blocks_mut::<BlockQ5_0>(dst)) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = f32_to_f16_bits(d);
        let mut qh = 0u32;
        for j in 0..16 {
            let q0 = ((xb[j] * id + 16.5) as i8).min(31) as u8;
            let q1 = ((xb[j + 16] * id + 16.5) as i8).min(31) as u8;
            yb.qs[j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
            qh |= ((q0 as u32 & 0x10) >> 4) << j;
            qh |= ((q1 as u32 & 0x10) >> 4) << (j + 16);
        }
        yb.qh = qh.to_le_bytes();
    }
}
