//! Q3_K: 16 sub-blocks of 16 weights; 6-bit signed scales (12 packed bytes, offset 32) and an
//! f16 super-scale; 3-bit quants = 2 low bits (laid out as Q2_K) + 1 high bit in `hmask`
//! (bit k of byte l for element 32*k + l), stored inverted: a clear bit subtracts 4.

use super::QK_K;
use crate::quant::block::{Block, assert_block, f16_bits_to_f32, row_blocks};
use crate::quant::q8::BlockQ8K;
use crate::quant::{GgmlType, WeightFormat};

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ3K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    pub d: [u8; 2],
}

// SAFETY: byte arrays only.
unsafe impl Block for BlockQ3K {
    const ELEMS: usize = QK_K;
}
assert_block!(BlockQ3K, GgmlType::Q3_K);

/// The 16 scales, already minus 32 (-32..=31).
fn unpack_scales(s: &[u8; 12]) -> [i32; 16] {
    let word = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (a0, a1, tmp) = (word(0), word(1), word(2));
    const K1: u32 = 0x0303_0303;
    const K2: u32 = 0x0f0f_0f0f;
    let aux = [
        (a0 & K2) | ((tmp & K1) << 4),
        (a1 & K2) | (((tmp >> 2) & K1) << 4),
        ((a0 >> 4) & K2) | (((tmp >> 4) & K1) << 4),
        ((a1 >> 4) & K2) | (((tmp >> 6) & K1) << 4),
    ];
    let mut out = [0i32; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = ((aux[i / 4] >> (8 * (i % 4))) & 0xff) as i32 - 32;
    }
    out
}

/// The 256 signed 3-bit quants (-4..=3) of a block, in element order.
fn unpack_quants(x: &BlockQ3K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for (e, v) in a.iter_mut().enumerate() {
        let (half, k, l) = (e / 128, (e % 128) / 32, e % 32);
        let low = (x.qs[32 * half + l] >> (2 * k)) & 3;
        let high_bit = 1u8 << (4 * half + k);
        *v = low as i8 - if x.hmask[l] & high_bit != 0 { 0 } else { 4 };
    }
    a
}

pub struct Q3K;

impl WeightFormat for Q3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const PARTNER: GgmlType = GgmlType::Q8_K;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        let xs = row_blocks::<BlockQ3K>(src, dst.len());
        for (x, y) in xs.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d_all = f16_bits_to_f32(x.d);
            let scales = unpack_scales(&x.scales);
            let q = unpack_quants(x);
            for ((out, qq), &sc) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).zip(&scales) {
                let dl = d_all * sc as f32;
                for (o, &v) in out.iter_mut().zip(qq) {
                    *o = dl * v as f32;
                }
            }
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let xs = row_blocks::<BlockQ3K>(w, n);
        let ys = row_blocks::<BlockQ8K>(act, n);
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            let scales = unpack_scales(&x.scales);
            let q = unpack_quants(x);
            let mut isum = 0i32;
            for ((q8, qq), &sc) in y.qs.chunks_exact(16).zip(q.chunks_exact(16)).zip(&scales) {
                let s: i32 = q8.iter().zip(qq).map(|(&a, &b)| a as i32 * b as i32).sum();
                isum += sc * s;
            }
            sumf += f16_bits_to_f32(x.d) * y.d() * isum as f32;
        }
        sumf
    }
}
