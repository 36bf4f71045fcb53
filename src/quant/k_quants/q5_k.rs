//! Q5_K: Q4_K plus a fifth bit per weight in `qh`: element 64*c + l (l < 32) uses bit 2c of
//! byte l, element 64*c + 32 + l bit 2c + 1 (`w = d*sc*q - dmin*m`, q in 0..32).

use super::{QK_K, dequantize_block_k4, dot_block_k4, pack_scales_k4, requantize_k4, sub_block_scales_k4};
use crate::quant::block::{Block, assert_block, blocks_mut, row_blocks};
use crate::quant::q8::BlockQ8K;
use crate::quant::{GgmlType, WeightFormat};

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ5K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}

// SAFETY: byte arrays only.
unsafe impl Block for BlockQ5K {
    const ELEMS: usize = QK_K;
}
assert_block!(BlockQ5K, GgmlType::Q5_K);

/// The 32 quants (0..32) of sub-block `j` (0..8): nibble as in Q4_K plus bit j of `qh[l]`.
#[inline]
fn sub_block_quants(x: &BlockQ5K, j: usize) -> impl Iterator<Item = u8> + '_ {
    let shift = 4 * (j % 2);
    let low = x.qs[32 * (j / 2)..32 * (j / 2) + 32].iter();
    low.zip(&x.qh).map(move |(&b, &h)| ((b >> shift) & 0x0f) | (((h >> j) & 1) << 4))
}

pub struct Q5K;

impl WeightFormat for Q5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const PARTNER: GgmlType = GgmlType::Q8_K;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        let xs = row_blocks::<BlockQ5K>(src, dst.len());
        for (x, y) in xs.iter().zip(dst.chunks_exact_mut(QK_K)) {
            dequantize_block_k4(x.d, x.dmin, &x.scales, |j| sub_block_quants(x, j), y);
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let xs = row_blocks::<BlockQ5K>(w, n);
        let ys = row_blocks::<BlockQ8K>(act, n);
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            sumf += dot_block_k4(x.d, x.dmin, &x.scales, |j| sub_block_quants(x, j), y);
        }
        sumf
    }
}

/// `quantize_row_q5_K_ref` (llama-quantize without an importance matrix).
pub fn quantize_row_ref(x: &[f32], dst: &mut [u8]) {
    let mut l = [0u8; QK_K];
    for (xb, yb) in x.chunks_exact(QK_K).zip(blocks_mut::<BlockQ5K>(dst)) {
        let (scales, mins) = sub_block_scales_k4(xb, 31, -0.5, 15, &mut l);
        (yb.scales, yb.d, yb.dmin) = pack_scales_k4(&scales, &mins);
        requantize_k4(xb, &yb.scales, yb.d, yb.dmin, 31, &mut l);
        yb.qh = [0; 32];
        for c in 0..4 {
            for i in 0..32 {
                let (l1, l2) = (l[64 * c + i], l[64 * c + 32 + i]);
                yb.qh[i] |= (l1 >> 4) << (2 * c) | (l2 >> 4) << (2 * c + 1);
                yb.qs[32 * c + i] = (l1 & 0x0f) | ((l2 & 0x0f) << 4);
            }
        }
    }
}
