//! IQ1_S and IQ1_M: ~1.5-1.75 bits per weight. Each group of 8 weights is an 11-bit index into
//! `IQ1S_GRID` (values in {-1, 0, 1}) shifted by ±`IQ1_DELTA`; groups of 32 (IQ1_S) or 16
//! (IQ1_M) share a 3-bit odd scale `2s + 1`. Both pair with Q8_K, whose `bsums` carry the shift.

use super::block::{Block, assert_block, blocks_mut, f16_bits_to_f32, f32_to_f16_bits, nearest_int, row_blocks};
use super::iq_tables::IQ1S_GRID;
use super::q8::BlockQ8K;
use super::{GgmlType, WeightFormat};

/// `IQ1S_DELTA` = `IQ1M_DELTA` in ggml.
const IQ1_DELTA: f32 = 0.125;

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockIQ1S {
    pub d: [u8; 2],
    /// Low 8 bits of the 32 grid indices.
    pub qs: [u8; 32],
    /// Per 32 weights, a u16: 4 × 3 high index bits, 3-bit scale (bits 12..15), delta sign (bit 15).
    pub qh: [u8; 16],
}

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockIQ1M {
    pub qs: [u8; 32],
    /// Per 16 weights, a byte: two × (3 high index bits + delta sign bit).
    pub qh: [u8; 16],
    /// 4 u16: 3-bit scales for each 16 weights, and the f16 super-scale spread over the top nibbles.
    pub scales: [u8; 8],
}

// SAFETY: byte arrays only.
unsafe impl Block for BlockIQ1S {
    const ELEMS: usize = 256;
}
// SAFETY: byte arrays only.
unsafe impl Block for BlockIQ1M {
    const ELEMS: usize = 256;
}
assert_block!(BlockIQ1S, GgmlType::IQ1_S);
assert_block!(BlockIQ1M, GgmlType::IQ1_M);

/// Grid value `j` (-1, 0 or 1) of grid entry `idx`.
#[inline]
fn grid(idx: usize, j: usize) -> i32 {
    (IQ1S_GRID[idx] >> (8 * j)) as u8 as i8 as i32
}

impl BlockIQ1S {
    #[inline]
    fn qh(&self, ib: usize) -> u32 {
        u16::from_le_bytes([self.qh[2 * ib], self.qh[2 * ib + 1]]) as u32
    }
    /// Grid index of group `l` (0..4) of sub-block `ib` (0..8).
    #[inline]
    fn index(&self, ib: usize, l: usize) -> usize {
        self.qs[4 * ib + l] as usize | (((self.qh(ib) >> (3 * l)) & 7) << 8) as usize
    }
}

pub struct IQ1S;

impl WeightFormat for IQ1S {
    const TYPE: GgmlType = GgmlType::IQ1_S;
    const PARTNER: GgmlType = GgmlType::Q8_K;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        let xs = row_blocks::<BlockIQ1S>(src, dst.len());
        for (x, y) in xs.iter().zip(dst.chunks_exact_mut(256)) {
            let d = f16_bits_to_f32(x.d);
            for (ib, out) in y.chunks_exact_mut(32).enumerate() {
                let qh = x.qh(ib);
                let dl = d * (2 * ((qh >> 12) & 7) + 1) as f32;
                let delta = if qh & 0x8000 != 0 { -IQ1_DELTA } else { IQ1_DELTA };
                for (l, group) in out.chunks_exact_mut(8).enumerate() {
                    let idx = x.index(ib, l);
                    for (j, o) in group.iter_mut().enumerate() {
                        *o = dl * (grid(idx, j) as f32 + delta);
                    }
                }
            }
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let xs = row_blocks::<BlockIQ1S>(w, n);
        let ys = row_blocks::<BlockQ8K>(act, n);
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            let (mut sumi, mut sumi1) = (0i32, 0i32);
            for (ib, q8) in y.qs.chunks_exact(32).enumerate() {
                let qh = x.qh(ib);
                let ls = (2 * ((qh >> 12) & 7) + 1) as i32;
                let delta = if qh & 0x8000 != 0 { -1 } else { 1 };
                let mut lsum = 0;
                for (l, a) in q8.chunks_exact(8).enumerate() {
                    let idx = x.index(ib, l);
                    lsum += (0..8).map(|j| a[j] as i32 * grid(idx, j)).sum::<i32>();
                }
                sumi += ls * lsum;
                sumi1 += ls * delta * (y.bsum(2 * ib) + y.bsum(2 * ib + 1));
            }
            sumf += f16_bits_to_f32(x.d) * y.d() * (sumi as f32 + IQ1_DELTA * sumi1 as f32);
        }
        sumf
    }
}

impl BlockIQ1M {
    #[inline]
    fn sc(&self, i: usize) -> u16 {
        u16::from_le_bytes([self.scales[2 * i], self.scales[2 * i + 1]])
    }
    /// The f16 super-scale, stored in the top nibble of each of the 4 scale words.
    #[inline]
    fn d(&self) -> f32 {
        let bits =
            (self.sc(0) >> 12) | ((self.sc(1) >> 8) & 0x00f0) | ((self.sc(2) >> 4) & 0x0f00) | (self.sc(3) & 0xf000);
        f16_bits_to_f32(bits.to_le_bytes())
    }
    /// The two odd scales of sub-block `ib` (0..8): first and second 16 weights.
    #[inline]
    fn scales(&self, ib: usize) -> (i32, i32) {
        let s = self.sc(ib / 2) >> (6 * (ib % 2));
        ((2 * (s & 7) + 1) as i32, (2 * ((s >> 3) & 7) + 1) as i32)
    }
    /// Grid index and delta sign (-1/+1) of group `l` (0..4) of sub-block `ib`.
    #[inline]
    fn group(&self, ib: usize, l: usize) -> (usize, i32) {
        let h = self.qh[2 * ib + l / 2] as usize;
        let h = if l.is_multiple_of(2) { h } else { h >> 4 };
        (self.qs[4 * ib + l] as usize | ((h & 7) << 8), if h & 8 != 0 { -1 } else { 1 })
    }
}

pub struct IQ1M;

impl WeightFormat for IQ1M {
    const TYPE: GgmlType = GgmlType::IQ1_M;
    const PARTNER: GgmlType = GgmlType::Q8_K;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        let xs = row_blocks::<BlockIQ1M>(src, dst.len());
        for (x, y) in xs.iter().zip(dst.chunks_exact_mut(256)) {
            let d = x.d();
            for (ib, out) in y.chunks_exact_mut(32).enumerate() {
                let (s1, s2) = x.scales(ib);
                let (dl1, dl2) = (d * s1 as f32, d * s2 as f32);
                for (l, group) in out.chunks_exact_mut(8).enumerate() {
                    let (idx, sign) = x.group(ib, l);
                    let delta = if sign < 0 { -IQ1_DELTA } else { IQ1_DELTA };
                    let dl = if l < 2 { dl1 } else { dl2 };
                    for (j, o) in group.iter_mut().enumerate() {
                        *o = dl * (grid(idx, j) as f32 + delta);
                    }
                }
            }
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let xs = row_blocks::<BlockIQ1M>(w, n);
        let ys = row_blocks::<BlockQ8K>(act, n);
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            let (mut sumi1, mut sumi2) = (0i32, 0i32);
            for (ib, q8) in y.qs.chunks_exact(32).enumerate() {
                let (mut sum1, mut sum2) = ([0i32; 2], [0i32; 2]);
                for (l, a) in q8.chunks_exact(8).enumerate() {
                    let (idx, sign) = x.group(ib, l);
                    sum1[l / 2] += (0..8).map(|j| a[j] as i32 * grid(idx, j)).sum::<i32>();
                    sum2[l / 2] += a.iter().map(|&v| v as i32).sum::<i32>() * sign;
                }
                let (ls1, ls2) = x.scales(ib);
                sumi1 += sum1[0] * ls1 + sum1[1] * ls2;
                sumi2 += sum2[0] * ls1 + sum2[1] * ls2;
            }
            sumf += x.d() * y.d() * (sumi1 as f32 + IQ1_DELTA * sumi2 as f32);
        }
        sumf
    }
}

/// Best grid entry and delta sign for 8 values at scale `dl`: (index, negative delta, error).
fn best_group(x: &[f32], dl: f32, deltas: &[bool]) -> (usize, bool, f32) {
    let mut best = (0, false, f32::INFINITY);
    for &neg in deltas {
        let delta = if neg { -IQ1_DELTA } else { IQ1_DELTA };
        for idx in 0..IQ1S_GRID.len() {
            let err: f32 = (0..8).map(|j| (dl * (grid(idx, j) as f32 + delta) - x[j]).powi(2)).sum();
            if err < best.2 {
                best = (idx, neg, err);
            }
        }
    }
    best
}

/// Max |x| over `x`, scaled so that it maps to grid value 1 + delta.
fn ideal_scale(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs())) / (1.0 + IQ1_DELTA)
}

/// A simple IQ1_S quantizer (brute-force grid search per group of 8, both delta signs per 32).
/// Not ggml's imatrix-driven quantizer: valid blocks close to `x`, for synthesising test models.
pub fn quantize_row_iq1_s_simple(x: &[f32], dst: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(256).zip(blocks_mut::<BlockIQ1S>(dst)) {
        let sub: [f32; 8] = std::array::from_fn(|i| ideal_scale(&xb[32 * i..32 * i + 32]));
        let max_sub = sub.iter().fold(0f32, |m, &v| m.max(v));
        *yb = BlockIQ1S { d: f32_to_f16_bits(max_sub / 15.0), qs: [0; 32], qh: [0; 16] };
        let d = f16_bits_to_f32(yb.d);
        if d == 0.0 {
            continue;
        }
        for (ib, xs) in xb.chunks_exact(32).enumerate() {
            let ls = nearest_int((sub[ib] / d - 1.0) / 2.0).clamp(0, 7) as u16;
            let dl = d * (2 * ls + 1) as f32;
            // One delta sign for all 4 groups: keep the sign with the smaller total error.
            let mut best: Option<(f32, [usize; 4], bool)> = None;
            for neg in [false, true] {
                let picks: [(usize, bool, f32); 4] =
                    std::array::from_fn(|l| best_group(&xs[8 * l..8 * l + 8], dl, &[neg]));
                let err: f32 = picks.iter().map(|p| p.2).sum();
                if best.is_none_or(|b| err < b.0) {
                    best = Some((err, picks.map(|p| p.0), neg));
                }
            }
            let (_, idx, neg) = best.unwrap();
            let mut qh = (ls << 12) | if neg { 0x8000 } else { 0 };
            for (l, &i) in idx.iter().enumerate() {
                yb.qs[4 * ib + l] = i as u8;
                qh |= ((i >> 8) as u16) << (3 * l);
            }
            yb.qh[2 * ib..2 * ib + 2].copy_from_slice(&qh.to_le_bytes());
        }
    }
}

/// A simple IQ1_M quantizer (brute-force grid search, delta sign per group of 8, scale per 16).
/// Not ggml's imatrix-driven quantizer: valid blocks close to `x`, for synthesising test models.
pub fn quantize_row_iq1_m_simple(x: &[f32], dst: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(256).zip(blocks_mut::<BlockIQ1M>(dst)) {
        let sub: [f32; 16] = std::array::from_fn(|i| ideal_scale(&xb[16 * i..16 * i + 16]));
        let max_sub = sub.iter().fold(0f32, |m, &v| m.max(v));
        let d_bits = u16::from_le_bytes(f32_to_f16_bits(max_sub / 7.0));
        let d = f16_bits_to_f32(d_bits.to_le_bytes());
        let mut sc = [0u16; 4];
        for (i, s) in sc.iter_mut().enumerate() {
            *s = ((d_bits >> (4 * i)) & 0x0f) << 12;
        }
        *yb = BlockIQ1M { qs: [0; 32], qh: [0; 16], scales: [0; 8] };
        if d != 0.0 {
            for (h, xs) in xb.chunks_exact(16).enumerate() {
                // Sub-block ib = h/2 holds two 3-bit scales at bits 6*(ib%2) (+3 for the second half).
                let s = nearest_int((sub[h] / d - 1.0) / 2.0).clamp(0, 7) as u16;
                let dl = d * (2 * s + 1) as f32;
                let ib = h / 2;
                sc[ib / 2] |= s << (6 * (ib % 2) + 3 * (h % 2));
                for (k, g) in xs.chunks_exact(8).enumerate() {
                    let l = 2 * (h % 2) + k; // group within the sub-block
                    let (idx, neg, _) = best_group(g, dl, &[false, true]);
                    yb.qs[4 * ib + l] = idx as u8;
                    let nib = ((idx >> 8) as u8) | if neg { 8 } else { 0 };
                    yb.qh[2 * ib + l / 2] |= nib << (4 * (l % 2));
                }
            }
        }
        for (i, s) in sc.iter().enumerate() {
            yb.scales[2 * i..2 * i + 2].copy_from_slice(&s.to_le_bytes());
        }
    }
}
