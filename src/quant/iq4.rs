//! IQ4_NL and IQ4_XS: 4-bit indices into the non-linear table `KVALUES_IQ4NL`.
//! IQ4_NL is Q4_0's layout (32 weights, f16 scale, pairs with Q8_0). IQ4_XS is a 256-weight
//! super-block with an f16 scale and a 6-bit scale per 32 (offset 32: low 4 bits in
//! `scales_l`, high 2 bits in `scales_h`), pairing with Q8_K.

use super::block::{Block, assert_block, f16_bits_to_f32, row_blocks};
use super::iq_tables::KVALUES_IQ4NL;
use super::q8::{BlockQ8_0, BlockQ8K};
use super::{GgmlType, WeightFormat};

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockIQ4NL {
    pub d: [u8; 2],
    pub qs: [u8; 16],
}

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockIQ4XS {
    pub d: [u8; 2],
    pub scales_h: [u8; 2],
    pub scales_l: [u8; 4],
    pub qs: [u8; 128],
}

// SAFETY: byte arrays only.
unsafe impl Block for BlockIQ4NL {
    const ELEMS: usize = 32;
}
// SAFETY: byte arrays only.
unsafe impl Block for BlockIQ4XS {
    const ELEMS: usize = 256;
}
assert_block!(BlockIQ4NL, GgmlType::IQ4_NL);
assert_block!(BlockIQ4XS, GgmlType::IQ4_XS);

#[inline]
fn level(nibble: u8) -> i32 {
    KVALUES_IQ4NL[nibble as usize] as i32
}

/// Dequantize 32 weights packed as in Q4_0 (byte j: element j low, j + 16 high) with scale `d`.
#[inline]
fn dequant32(qs: &[u8], d: f32, y: &mut [f32]) {
    for (j, &q) in qs[..16].iter().enumerate() {
        y[j] = d * level(q & 0x0f) as f32;
        y[j + 16] = d * level(q >> 4) as f32;
    }
}

/// Integer dot of 32 packed indices with 32 i8 activations.
#[inline]
fn dot32(qs: &[u8], q8: &[i8]) -> i32 {
    let mut sum = 0;
    for (j, &q) in qs[..16].iter().enumerate() {
        sum += q8[j] as i32 * level(q & 0x0f) + q8[j + 16] as i32 * level(q >> 4);
    }
    sum
}

pub struct IQ4NL;

impl WeightFormat for IQ4NL {
    const TYPE: GgmlType = GgmlType::IQ4_NL;
    const PARTNER: GgmlType = GgmlType::Q8_0;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        let xs = row_blocks::<BlockIQ4NL>(src, dst.len());
        for (x, y) in xs.iter().zip(dst.chunks_exact_mut(32)) {
            dequant32(&x.qs, f16_bits_to_f32(x.d), y);
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let xs = row_blocks::<BlockIQ4NL>(w, n);
        let ys = row_blocks::<BlockQ8_0>(act, n);
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            let d = y.d() * f16_bits_to_f32(x.d);
            sumf += d * dot32(&x.qs, &y.qs) as f32;
        }
        sumf
    }
}

impl BlockIQ4XS {
    /// Scale of sub-block `ib` (0..8), minus 32.
    #[inline]
    fn scale(&self, ib: usize) -> i32 {
        let h = u16::from_le_bytes(self.scales_h);
        let low = (self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f;
        let high = ((h >> (2 * ib)) & 3) as u8;
        (low | (high << 4)) as i32 - 32
    }
}

pub struct IQ4XS;

impl WeightFormat for IQ4XS {
    const TYPE: GgmlType = GgmlType::IQ4_XS;
    const PARTNER: GgmlType = GgmlType::Q8_K;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        let xs = row_blocks::<BlockIQ4XS>(src, dst.len());
        for (x, y) in xs.iter().zip(dst.chunks_exact_mut(256)) {
            let d = f16_bits_to_f32(x.d);
            for (ib, (out, qs)) in y.chunks_exact_mut(32).zip(x.qs.chunks_exact(16)).enumerate() {
                dequant32(qs, d * x.scale(ib) as f32, out);
            }
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let xs = row_blocks::<BlockIQ4XS>(w, n);
        let ys = row_blocks::<BlockQ8K>(act, n);
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            let d4d8 = f16_bits_to_f32(x.d) * y.d();
            for (ib, (qs, q8)) in x.qs.chunks_exact(16).zip(y.qs.chunks_exact(32)).enumerate() {
                sumf += (d4d8 * x.scale(ib) as f32) * dot32(qs, q8) as f32;
            }
        }
        sumf
    }
}
