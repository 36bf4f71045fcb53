//! Q4_K: 8 sub-blocks of 32 weights; 6-bit scale and 6-bit min per sub-block (12 packed
//! bytes), f16 super-scales `d`, `dmin`; 4-bit quants (`w = d*sc*q - dmin*m`).
//! Each 64 weights share 32 bytes: low nibbles are the first 32, high nibbles the next 32.

use super::{QK_K, dequantize_block_k4, dot_block_k4, pack_scales_k4, requantize_k4, sub_block_scales_k4};
use crate::quant::block::{Block, assert_block, blocks_mut, row_blocks};
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

/// The 8 sub-blocks of 32 quants: sub-block 2c is the low nibbles of bytes 32c..32c+32,
/// sub-block 2c + 1 their high nibbles.
#[inline]
fn sub_block_quants(qs: &[u8; 128], j: usize) -> impl Iterator<Item = u8> + '_ {
    let shift = 4 * (j % 2);
    qs[32 * (j / 2)..32 * (j / 2) + 32].iter().map(move |&b| (b >> shift) & 0x0f)
}

pub struct Q4K;

impl WeightFormat for Q4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const PARTNER: GgmlType = GgmlType::Q8_K;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        let xs = row_blocks::<BlockQ4K>(src, dst.len());
        for (x, y) in xs.iter().zip(dst.chunks_exact_mut(QK_K)) {
            dequantize_block_k4(x.d, x.dmin, &x.scales, |j| sub_block_quants(&x.qs, j), y);
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let xs = row_blocks::<BlockQ4K>(w, n);
        let ys = row_blocks::<BlockQ8K>(act, n);
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            sumf += dot_block_k4(x.d, x.dmin, &x.scales, |j| sub_block_quants(&x.qs, j), y);
        }
        sumf
    }
}

/// `quantize_row_q4_K_ref` (llama-quantize without an importance matrix).
pub fn quantize_row_ref(x: &[f32], dst: &mut [u8]) {
    let mut l = [0u8; QK_K];
    for (xb, yb) in x.chunks_exact(QK_K).zip(blocks_mut::<BlockQ4K>(dst)) {
        let (scales, mins) = sub_block_scales_k4(xb, 15, -1.0, 20, &mut l);
        (yb.scales, yb.d, yb.dmin) = pack_scales_k4(&scales, &mins);
        requantize_k4(xb, &yb.scales, yb.d, yb.dmin, 15, &mut l);
        for (c, q) in yb.qs.chunks_exact_mut(32).enumerate() {
            for (i, b) in q.iter_mut().enumerate() {
                *b = l[64 * c + i] | (l[64 * c + i + 32] << 4);
            }
        }
    }
}
