//! Weight formats: ggml's block layouts, dequantization, and dot products against the
//! activation types ggml pairs them with (Q8_0, Q8_1, Q8_K).

mod types;
pub use types::GgmlType;

// TEMPORARY (replaced by the quant branch): F32/F16 only, so the engine can be built first.
use crate::error::{Error, Result};

pub fn is_supported(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16)
}

pub fn check_supported(ty: GgmlType) -> Result<()> {
    if is_supported(ty) { Ok(()) } else { Err(Error::msg(format!("weight type {ty} is not supported"))) }
}

pub fn vec_dot_type(ty: GgmlType) -> GgmlType {
    ty
}

pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes(c.try_into().unwrap());
            }
        }
        GgmlType::F16 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::f16::from_le_bytes(c.try_into().unwrap()).to_f32();
            }
        }
        _ => unimplemented!(),
    }
}

pub fn quantize_row(partner: GgmlType, x: &[f32], dst: &mut [u8]) {
    match partner {
        GgmlType::F32 => {
            for (c, v) in dst.chunks_exact_mut(4).zip(x) {
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (c, v) in dst.chunks_exact_mut(2).zip(x) {
                c.copy_from_slice(&half::f16::from_f32(*v).to_le_bytes());
            }
        }
        _ => unimplemented!(),
    }
}

pub fn vec_dot(ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> f32 {
    let mut a = vec![0f32; n];
    let mut b = vec![0f32; n];
    dequantize_row(ty, w, &mut a);
    dequantize_row(ty, act, &mut b);
    a.iter().zip(&b).map(|(x, y)| x * y).sum()
}
