//! IQ2_XXS: 2.06 bits per weight. Per 32 weights, 8 bytes: 4 grid indices (one byte each,
//! into `IQ2XXS_GRID`, 8 magnitudes per entry), then a u32 with 4 × 7 sign bits (expanded by
//! `KSIGNS_IQ2XS` to even parity) and a 4-bit scale in the top bits. Pairs with Q8_K.

use super::block::{Block, assert_block, f16_bits_to_f32, row_blocks};
use super::iq_tables::{IQ2XXS_GRID, KMASK_IQ2XS, KSIGNS_IQ2XS};
use super::q8::BlockQ8K;
use super::{GgmlType, WeightFormat};

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockIQ2XXS {
    pub d: [u8; 2],
    pub qs: [u8; 64],
}

// SAFETY: byte arrays only.
unsafe impl Block for BlockIQ2XXS {
    const ELEMS: usize = 256;
}
assert_block!(BlockIQ2XXS, GgmlType::IQ2_XXS);

/// The 4 grid indices and the sign/scale word of sub-block `ib` (0..8).
#[inline]
fn sub_block(x: &BlockIQ2XXS, ib: usize) -> (&[u8], u32) {
    let b = &x.qs[8 * ib..8 * ib + 8];
    (&b[..4], u32::from_le_bytes([b[4], b[5], b[6], b[7]]))
}

/// Magnitude `j` of grid entry `idx` and whether group sign bits `signs` negate it.
#[inline]
fn value(idx: u8, signs: u8, j: usize) -> (i32, bool) {
    let g = (IQ2XXS_GRID[idx as usize] >> (8 * j)) as u8 as i32;
    (g, signs & KMASK_IQ2XS[j] != 0)
}

pub struct IQ2XXS;

impl WeightFormat for IQ2XXS {
    const TYPE: GgmlType = GgmlType::IQ2_XXS;
    const PARTNER: GgmlType = GgmlType::Q8_K;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        let xs = row_blocks::<BlockIQ2XXS>(src, dst.len());
        for (x, y) in xs.iter().zip(dst.chunks_exact_mut(256)) {
            let d = f16_bits_to_f32(x.d);
            for (ib, out) in y.chunks_exact_mut(32).enumerate() {
                let (idx, aux) = sub_block(x, ib);
                let db = d * (0.5 + (aux >> 28) as f32) * 0.25;
                for (l, group) in out.chunks_exact_mut(8).enumerate() {
                    let signs = KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
                    for (j, o) in group.iter_mut().enumerate() {
                        let (g, neg) = value(idx[l], signs, j);
                        *o = db * g as f32 * if neg { -1.0 } else { 1.0 };
                    }
                }
            }
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let xs = row_blocks::<BlockIQ2XXS>(w, n);
        let ys = row_blocks::<BlockQ8K>(act, n);
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            let d = f16_bits_to_f32(x.d) * y.d();
            let mut bsum = 0i32;
            for (ib, q8) in y.qs.chunks_exact(32).enumerate() {
                let (idx, aux) = sub_block(x, ib);
                let ls = (2 * (aux >> 28) + 1) as i32;
                let mut sumi = 0i32;
                for (l, a) in q8.chunks_exact(8).enumerate() {
                    let signs = KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
                    for (j, &q) in a.iter().enumerate() {
                        let (g, neg) = value(idx[l], signs, j);
                        sumi += if neg { -g * q as i32 } else { g * q as i32 };
                    }
                }
                bsum += sumi * ls;
            }
            sumf += d * bsum as f32;
        }
        0.125 * sumf
    }
}
