//! F32, F16 and BF16 rows. ggml converts the activation to the weight's own float type
//! (`from_float` of F16/BF16), so products are of two rounded values; sums go to f64 like
//! ggml's scalar `ggml_float` accumulator.

use half::{f16, slice::HalfFloatSliceExt};

use super::block::{bf16_bits_to_f32, f32_to_bf16_bits};
use super::{GgmlType, WeightFormat};

pub struct F32;
pub struct F16;
pub struct BF16;

fn f32_at(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn pair(b: &[u8]) -> [u8; 2] {
    [b[0], b[1]]
}

impl WeightFormat for F32 {
    const TYPE: GgmlType = GgmlType::F32;
    const PARTNER: GgmlType = GgmlType::F32;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
            *d = f32_at(s);
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let mut sum = 0f64;
        for (a, b) in w[..4 * n].chunks_exact(4).zip(act[..4 * n].chunks_exact(4)) {
            sum += (f32_at(a) * f32_at(b)) as f64;
        }
        sum as f32
    }
}

/// Chunk for bulk f16 conversion: `half` picks F16C once per slice, not per element.
const CHUNK: usize = 64;

/// Convert up to CHUNK little-endian f16s to f32 (bulk, so F16C is used when present).
fn f16_chunk_to_f32(src: &[u8], dst: &mut [f32]) {
    let mut h = [f16::ZERO; CHUNK];
    let h = &mut h[..dst.len()];
    for (o, b) in h.iter_mut().zip(src.chunks_exact(2)) {
        *o = f16::from_bits(u16::from_le_bytes(pair(b)));
    }
    h.convert_to_f32_slice(dst);
}

impl WeightFormat for F16 {
    const TYPE: GgmlType = GgmlType::F16;
    const PARTNER: GgmlType = GgmlType::F16;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        for (d, s) in dst.chunks_mut(CHUNK).zip(src.chunks(2 * CHUNK)) {
            f16_chunk_to_f32(s, d);
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let mut sum = 0f64;
        let (mut a, mut b) = ([0f32; CHUNK], [0f32; CHUNK]);
        for (wc, ac) in w[..2 * n].chunks(2 * CHUNK).zip(act[..2 * n].chunks(2 * CHUNK)) {
            let m = wc.len() / 2;
            f16_chunk_to_f32(wc, &mut a[..m]);
            f16_chunk_to_f32(ac, &mut b[..m]);
            // Products are exact in f32 (two 11-bit significands).
            sum += a[..m].iter().zip(&b[..m]).map(|(x, y)| (x * y) as f64).sum::<f64>();
        }
        sum as f32
    }
}

impl WeightFormat for BF16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const PARTNER: GgmlType = GgmlType::BF16;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
            *d = bf16_bits_to_f32(pair(s));
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let mut sum = 0f64;
        for (a, b) in w[..2 * n].chunks_exact(2).zip(act[..2 * n].chunks_exact(2)) {
            sum += (bf16_bits_to_f32(pair(a)) * bf16_bits_to_f32(pair(b))) as f64;
        }
        sum as f32
    }
}

fn check_len(x: &[f32], dst: &[u8], width: usize) {
    assert_eq!(dst.len(), x.len() * width, "destination row has the wrong length");
}

pub fn quantize_row_f32(x: &[f32], dst: &mut [u8]) {
    check_len(x, dst, 4);
    for (d, v) in dst.chunks_exact_mut(4).zip(x) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

pub fn quantize_row_f16(x: &[f32], dst: &mut [u8]) {
    check_len(x, dst, 2);
    let mut h = [f16::ZERO; CHUNK];
    for (d, xc) in dst.chunks_mut(2 * CHUNK).zip(x.chunks(CHUNK)) {
        let h = &mut h[..xc.len()];
        h.convert_from_f32_slice(xc);
        for (o, v) in d.chunks_exact_mut(2).zip(h.iter()) {
            o.copy_from_slice(&v.to_bits().to_le_bytes());
        }
    }
}

pub fn quantize_row_bf16(x: &[f32], dst: &mut [u8]) {
    check_len(x, dst, 2);
    for (d, v) in dst.chunks_exact_mut(2).zip(x) {
        d.copy_from_slice(&f32_to_bf16_bits(*v));
    }
}
