//! The activation ("vec-dot partner") types Q8_0, Q8_1 and Q8_K, and how ggml-cpu quantizes an
//! f32 activation row into them on x86.
//!
//! Q8_0/Q8_1 follow the AVX path of `quantize_row_q8_0/1` (not the scalar `_ref`): the
//! multiplier is `127/amax` (not `1/d`) and rounding is to nearest even (`_mm256_round_ps`),
//! not `roundf`. Q8_K uses `quantize_row_q8_K_ref` (x86 has no SIMD version): the scale comes
//! from the signed value of largest magnitude, `iscale = -127/max`, so `d` may be negative.

use super::GgmlType;
use super::block::{Block, assert_block, blocks_mut, f16_bits_to_f32, f32_to_f16_bits, nearest_int};

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: [u8; 2],
    pub qs: [i8; 32],
}

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: [u8; 2],
    /// f16 of `d * sum(qs)` (the f32 `d`, before rounding to f16).
    pub s: [u8; 2],
    pub qs: [i8; 32],
}

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8K {
    /// f32, little-endian.
    pub d: [u8; 4],
    pub qs: [i8; 256],
    /// i16 sums of each 16 quants, little-endian.
    pub bsums: [[u8; 2]; 16],
}

// SAFETY: byte arrays only (i8 has the layout and validity of u8).
unsafe impl Block for BlockQ8_0 {
    const ELEMS: usize = 32;
}
unsafe impl Block for BlockQ8_1 {
    const ELEMS: usize = 32;
}
unsafe impl Block for BlockQ8K {
    const ELEMS: usize = 256;
}
assert_block!(BlockQ8_0, GgmlType::Q8_0);
assert_block!(BlockQ8_1, GgmlType::Q8_1);
assert_block!(BlockQ8K, GgmlType::Q8_K);

impl BlockQ8_0 {
    #[inline]
    pub fn d(&self) -> f32 {
        f16_bits_to_f32(self.d)
    }
}

impl BlockQ8_1 {
    #[inline]
    pub fn d(&self) -> f32 {
        f16_bits_to_f32(self.d)
    }
    #[inline]
    pub fn s(&self) -> f32 {
        f16_bits_to_f32(self.s)
    }
}

impl BlockQ8K {
    #[inline]
    pub fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }
    #[inline]
    pub fn bsum(&self, j: usize) -> i32 {
        i16::from_le_bytes(self.bsums[j]) as i32
    }
}

fn check_len(x: &[f32], dst: &[u8], ty: GgmlType) {
    assert_eq!(Some(dst.len()), ty.row_bytes(x.len()), "{ty} row of {} elements", x.len());
}

/// max |x| of a block, as the AVX max-reduction computes it.
fn abs_max(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// Scale and round one 32-element block as the AVX code does; returns the f32 `d`.
fn quantize_block_x86(x: &[f32], qs: &mut [i8; 32]) -> f32 {
    let amax = abs_max(x);
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    for (q, v) in qs.iter_mut().zip(x) {
        *q = nearest_int(v * id) as i8;
    }
    d
}

/// `quantize_row_q8_0` of ggml-cpu on x86 (AVX/AVX2).
pub fn quantize_row_q8_0(x: &[f32], dst: &mut [u8]) {
    check_len(x, dst, GgmlType::Q8_0);
    for (xb, yb) in x.chunks_exact(32).zip(blocks_mut::<BlockQ8_0>(dst)) {
        let d = quantize_block_x86(xb, &mut yb.qs);
        yb.d = f32_to_f16_bits(d);
    }
}

/// `quantize_row_q8_1` of ggml-cpu on x86 (AVX2).
pub fn quantize_row_q8_1(x: &[f32], dst: &mut [u8]) {
    check_len(x, dst, GgmlType::Q8_1);
    for (xb, yb) in x.chunks_exact(32).zip(blocks_mut::<BlockQ8_1>(dst)) {
        let d = quantize_block_x86(xb, &mut yb.qs);
        let sum: i32 = yb.qs.iter().map(|&q| q as i32).sum();
        yb.d = f32_to_f16_bits(d);
        yb.s = f32_to_f16_bits(d * sum as f32);
    }
}

/// `quantize_row_q8_K_ref` (what ggml-cpu uses on x86).
pub fn quantize_row_q8_k(x: &[f32], dst: &mut [u8]) {
    quantize_q8_k_with(x, dst, |xb| {
        // First element of largest magnitude, keeping its sign.
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        max
    })
}

/// Q8_K as ggml-cpu quantizes groups of 4 activation rows for its repacked x86 kernels
/// (`ggml_quantize_mat_q8_K_4x8`: Q4_K and, with AVX-512, Q2_K prompt batches). Identical to
/// [`quantize_row_q8_k`] except when both +amax and -amax occur in a block: the scale then
/// takes the positive one's sign (the row version takes the first one's).
pub fn quantize_row_q8_k_repacked(x: &[f32], dst: &mut [u8]) {
    quantize_q8_k_with(x, dst, |xb| {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        if xb.contains(&amax) { amax } else { -amax }
    })
}

/// Q8_K with the signed block maximum chosen by `signed_max`.
fn quantize_q8_k_with(x: &[f32], dst: &mut [u8], signed_max: impl Fn(&[f32]) -> f32) {
    check_len(x, dst, GgmlType::Q8_K);
    for (xb, yb) in x.chunks_exact(256).zip(blocks_mut::<BlockQ8K>(dst)) {
        let max = signed_max(xb);
        if max == 0.0 {
            // ggml leaves bsums untouched here; zero them so the block is fully defined.
            *yb = BlockQ8K { d: [0; 4], qs: [0; 256], bsums: [[0; 2]; 16] };
            continue;
        }
        let iscale = -127.0 / max;
        for (q, v) in yb.qs.iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (j, chunk) in yb.qs.chunks_exact(16).enumerate() {
            let sum: i32 = chunk.iter().map(|&q| q as i32).sum();
            yb.bsums[j] = (sum as i16).to_le_bytes();
        }
        yb.d = (1.0 / iscale).to_le_bytes();
    }
}
