//! IQ2_XXS: 2.06 bits per weight. Per 32 weights, 8 bytes: 4 grid indices (one byte each,
//! into `IQ2XXS_GRID`, 8 magnitudes per entry), then a u32 with 4 × 7 sign bits (expanded by
//! `KSIGNS_IQ2XS` to even parity) and a 4-bit scale in the top bits. Pairs with Q8_K.

use super::block::{Block, assert_block, blocks_mut, f16_bits_to_f32, f32_to_f16_bits, nearest_int, row_blocks};
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

/// A simple IQ2_XXS quantizer: per group of 8, signs from `x` (the smallest magnitude gives way
/// when the count of negatives is odd) and a brute-force search of the grid. Not ggml's
/// quantizer (that one needs an importance matrix and neighbour tables); it produces valid
/// blocks close to `x`, for synthesising test models.
pub fn quantize_row_simple(x: &[f32], dst: &mut [u8]) {
    const GMAX: f32 = 43.0; // largest grid magnitude
    for (xb, yb) in x.chunks_exact(256).zip(blocks_mut::<BlockIQ2XXS>(dst)) {
        let mut sub = [0f32; 8];
        for (s, xs) in sub.iter_mut().zip(xb.chunks_exact(32)) {
            *s = xs.iter().fold(0f32, |m, v| m.max(v.abs())) / GMAX;
        }
        let max_sub = sub.iter().fold(0f32, |m, &v| m.max(v));
        *yb = BlockIQ2XXS { d: f32_to_f16_bits(0.0), qs: [0; 64] };
        if max_sub == 0.0 {
            continue;
        }
        // The largest sub-block scale, (2*15 + 1)/8 of d.
        yb.d = f32_to_f16_bits(max_sub * 8.0 / 31.0);
        let d = f16_bits_to_f32(yb.d);
        for (ib, xs) in xb.chunks_exact(32).enumerate() {
            let ls = nearest_int((sub[ib] * 8.0 / d - 1.0) / 2.0).clamp(0, 15) as u32;
            let db = d * (0.5 + ls as f32) * 0.25;
            let mut aux = ls << 28;
            for (l, g) in xs.chunks_exact(8).enumerate() {
                let mut neg = 0u8;
                for (j, &v) in g.iter().enumerate() {
                    neg |= ((v < 0.0) as u8) << j;
                }
                if neg.count_ones() % 2 == 1 {
                    let jmin = (0..8).min_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs())).unwrap();
                    neg ^= 1 << jmin;
                }
                let target: [f32; 8] = std::array::from_fn(|j| if neg & (1 << j) != 0 { -g[j] } else { g[j] });
                let err = |idx: usize| -> f32 {
                    (0..8).map(|j| (db * ((IQ2XXS_GRID[idx] >> (8 * j)) as u8) as f32 - target[j]).powi(2)).sum()
                };
                let best = (0..256).min_by(|&a, &b| err(a).total_cmp(&err(b))).unwrap();
                yb.qs[8 * ib + l] = best as u8;
                aux |= ((neg & 127) as u32) << (7 * l);
            }
            yb.qs[8 * ib + 4..8 * ib + 8].copy_from_slice(&aux.to_le_bytes());
        }
    }
}
