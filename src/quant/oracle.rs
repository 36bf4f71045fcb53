//! Checks a candidate kernel table (SIMD) against the scalar oracle, so every fast path is
//! tested the same way: dequantization and activation quantization bit for bit, `vec_dot`
//! within float-reordering error.

use super::{GgmlType, Kernels, can_quantize_weights, quantize_weights, scalar_kernels};

/// xorshift64*: deterministic inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Compare `candidate` with the scalar kernels of its type on `rows` random rows of `n`
/// elements (a multiple of 256). Errors describe the first mismatch.
pub fn compare_with_scalar(candidate: &Kernels, n: usize, rows: usize, seed: u64) -> Result<(), String> {
    let ty = candidate.ty;
    let scalar = scalar_kernels(ty).ok_or_else(|| format!("{ty} has no scalar kernels"))?;
    if candidate.partner != scalar.partner {
        return Err(format!("{ty}: partner {} instead of {}", candidate.partner, scalar.partner));
    }
    if !can_quantize_weights(ty) || !n.is_multiple_of(256) {
        return Err(format!("{ty}: cannot synthesise rows of {n}"));
    }
    let mut rng = Rng(seed | 1);
    let wbytes = ty.row_bytes(n).unwrap();
    let abytes = scalar.partner.row_bytes(n).unwrap();
    let (mut w, mut a1, mut a2) = (vec![0u8; wbytes], vec![0u8; abytes], vec![0u8; abytes]);
    let (mut d1, mut d2) = (vec![0f32; n], vec![0f32; n]);
    for row in 0..rows {
        // Varying scale and an occasional outlier, like real activations; every third row is
        // halves in -127..127 with 127 leading each 32, so the activation scale is exactly 1 and
        // rounding ties abound.
        let scale = 0.1 + 4.0 * rng.uniform().abs();
        let x: Vec<f32> = if row % 3 == 2 {
            (0..n).map(|i| if i % 32 == 0 { 127.0 } else { ((i * 37 % 254) as f32 - 127.0) + 0.5 }).collect()
        } else {
            (0..n).map(|i| scale * rng.uniform() + if i % 97 == 3 { 8.0 } else { 0.0 }).collect()
        };
        let wf: Vec<f32> = (0..n).map(|_| rng.uniform() * 0.05).collect();
        quantize_weights(ty, &wf, &mut w);

        (scalar.dequantize_row)(&w, &mut d1);
        (candidate.dequantize_row)(&w, &mut d2);
        if let Some(i) = (0..n).find(|&i| d1[i].to_bits() != d2[i].to_bits()) {
            return Err(format!("{ty} row {row}: dequantize differs at {i}: {} vs {}", d2[i], d1[i]));
        }
        (scalar.quantize_partner)(&x, &mut a1);
        (candidate.quantize_partner)(&x, &mut a2);
        if let Some(i) = (0..abytes).find(|&i| a1[i] != a2[i]) {
            return Err(format!("{ty} row {row}: {} activation byte {i} differs", scalar.partner));
        }
        let want = (scalar.vec_dot)(n, &w, &a1) as f64;
        let got = (candidate.vec_dot)(n, &w, &a1) as f64;
        let mag: f64 = d1.iter().zip(&x).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
        let tol = 1e-5 * mag.max(1e-20) + if ty == GgmlType::F32 { 0.0 } else { f32::MIN_POSITIVE as f64 };
        if (got - want).abs() > tol {
            return Err(format!("{ty} row {row}: vec_dot {got} vs scalar {want}"));
        }
    }
    Ok(())
}
