//! Q2_K: 16 sub-blocks of 16 weights; 4-bit scale and 4-bit min per sub-block (one byte),
//! f16 super-scales `d` and `dmin`; 2-bit quants (`w = d*sc*q - dmin*m`).
//! Quants of 128 weights share 32 bytes: element 32*k + l sits at bit 2k of byte l.

use super::QK_K;
use crate::quant::block::{Block, assert_block, f16_bits_to_f32, row_blocks};
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
