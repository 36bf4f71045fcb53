//! IQ4_NL and IQ4_XS: 4-bit indices into the non-linear table `KVALUES_IQ4NL`.
//! IQ4_NL is Q4_0's layout (32 weights, f16 scale, pairs with Q8_0). IQ4_XS is a 256-weight
//! super-block with an f16 scale and a 6-bit scale per 32 (offset 32: low 4 bits in
//! `scales_l`, high 2 bits in `scales_h`), pairing with Q8_K.

use super::block::{Block, assert_block, blocks_mut, f16_bits_to_f32, f32_to_f16_bits, nearest_int, row_blocks};
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

/// Index of the level nearest to `x` (ggml's `best_index_int8`; ties go up).
fn best_index(x: f32) -> u8 {
    let v = |i: usize| KVALUES_IQ4NL[i] as f32;
    if x <= v(0) {
        return 0;
    }
    if x >= v(15) {
        return 15;
    }
    let (mut lo, mut hi) = (0, 15);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if x < v(mid) { hi = mid } else { lo = mid }
    }
    if x - v(hi - 1) < v(hi) - x { (hi - 1) as u8 } else { hi as u8 }
}

/// Best scale for one block of 32 (ggml's search in `quantize_row_iq4_nl_impl`, weights x²,
/// `ntry` = 7 as llama-quantize uses); fills `l`. Returns 0 for an all-zero block.
fn block_scale(x: &[f32], l: &mut [u8]) -> f32 {
    const NTRY: i32 = 7;
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-15 {
        return 0.0;
    }
    let v0 = KVALUES_IQ4NL[0] as f32;
    let sums = |id: f32, l: Option<&mut [u8]>| {
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        let mut l = l;
        for (j, &v) in x.iter().enumerate() {
            let idx = best_index(id * v);
            if let Some(l) = l.as_deref_mut() {
                l[j] = idx;
            }
            let q = KVALUES_IQ4NL[idx as usize] as f32;
            let w = v * v;
            sumqx += w * q * v;
            sumq2 += w * q * q;
        }
        (sumqx, sumq2)
    };
    let d = -max / v0;
    let (sumqx, sumq2) = sums(1.0 / d, Some(l));
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let (sumqx, sumq2) = sums((itry + KVALUES_IQ4NL[0] as i32) as f32 / max, None);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// Pack 32 level indices as Q4_0 does.
fn pack32(l: &[u8], qs: &mut [u8]) {
    for j in 0..16 {
        qs[j] = l[j] | (l[j + 16] << 4);
    }
}

/// `quantize_iq4_nl` without an importance matrix (what llama-quantize runs).
pub fn quantize_row_iq4_nl(x: &[f32], dst: &mut [u8]) {
    let mut l = [0u8; 32];
    for (xb, yb) in x.chunks_exact(32).zip(blocks_mut::<BlockIQ4NL>(dst)) {
        let d = block_scale(xb, &mut l);
        yb.d = f32_to_f16_bits(d);
        // The final indices are recomputed against the block's own scale.
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for (o, &v) in l.iter_mut().zip(xb) {
            *o = best_index(id * v);
        }
        pack32(&l, &mut yb.qs);
    }
}

/// `quantize_iq4_xs` without an importance matrix.
pub fn quantize_row_iq4_xs(x: &[f32], dst: &mut [u8]) {
    let mut l = [0u8; 256];
    for (xb, yb) in x.chunks_exact(256).zip(blocks_mut::<BlockIQ4XS>(dst)) {
        let mut scales = [0f32; 8];
        let (mut max_scale, mut amax_scale) = (0f32, 0f32);
        for (ib, s) in scales.iter_mut().enumerate() {
            *s = block_scale(&xb[32 * ib..32 * ib + 32], &mut l[32 * ib..32 * ib + 32]);
            if s.abs() > amax_scale {
                amax_scale = s.abs();
                max_scale = *s;
            }
        }
        let d = -max_scale / 32.0;
        yb.d = f32_to_f16_bits(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut scales_h = 0u16;
        yb.scales_l = [0; 4];
        for (ib, &s) in scales.iter().enumerate() {
            let ls = nearest_int(id * s).clamp(-32, 31);
            let dl = d * ls as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            for i in 32 * ib..32 * ib + 32 {
                l[i] = best_index(idl * xb[i]);
            }
            let ls = (ls + 32) as u8;
            yb.scales_l[ib / 2] |= (ls & 0x0f) << (4 * (ib % 2));
            scales_h |= ((ls >> 4) as u16) << (2 * ib);
        }
        yb.scales_h = scales_h.to_le_bytes();
        for (ib, qs) in yb.qs.chunks_exact_mut(16).enumerate() {
            pack32(&l[32 * ib..32 * ib + 32], qs);
        }
    }
}
