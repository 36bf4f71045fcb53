//! Weight formats against llama.cpp: bitwise dequantization (kernel vectors), x86-exact
//! activation quantization, vec_dot integer exactness and error bounds, reference quantizers.

use prima::cpu::kernels;
use prima::gguf::GgufFile;
use prima::quant::{self, GgmlType};

use crate::common;

/// Every weight type the engine runs.
const WEIGHT_TYPES: [GgmlType; 18] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::IQ1_S,
    GgmlType::IQ1_M,
    GgmlType::IQ2_XXS,
];

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn kernel_vector_files() -> Vec<serde_json::Value> {
    let dir = common::fixtures().join("kernel_vectors");
    let mut paths: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    assert_eq!(paths.len(), 23, "expected the 23 kernel vector files");
    paths.iter().map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()).collect()
}

/// Tiny deterministic generator (xorshift64*), so tests need no dependency.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (r >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Activation vectors that demonstrably vary: smooth, random, spiky, mostly negative.
fn activations(n: usize) -> Vec<Vec<f32>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let smooth: Vec<f32> = (0..n).map(|i| (0.1 * i as f64 + 0.3).sin() as f32).collect();
    let random: Vec<f32> = (0..n).map(|_| 3.0 * rng.next_f32()).collect();
    let spiky: Vec<f32> = (0..n).map(|i| if i % 37 == 5 { 40.0 } else { 0.5 * rng.next_f32() }).collect();
    let negative: Vec<f32> = (0..n).map(|_| rng.next_f32() - 0.8).collect();
    let all = vec![smooth, random, spiky, negative];
    for x in &all {
        let mean = x.iter().sum::<f32>() / n as f32;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
        assert!(var > 1e-3, "test input does not vary");
        let distinct = x.iter().map(|v| v.to_bits()).collect::<std::collections::HashSet<_>>().len();
        assert!(distinct > n / 4, "test input has too few distinct values");
    }
    all
}

fn quantize_act(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let partner = quant::vec_dot_type(ty);
    let mut act = vec![0u8; partner.row_bytes(x.len()).unwrap()];
    quant::quantize_row(partner, x, &mut act);
    act
}

fn dequantize(ty: GgmlType, row: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    quant::dequantize_row(ty, row, &mut out);
    out
}

fn f16(b: &[u8]) -> f64 {
    quant::f16_bits_to_f32([b[0], b[1]]) as f64
}

/// Dequantize an activation row (partner layout) in f64, independently of the library.
fn dequantize_act(partner: GgmlType, act: &[u8], n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    match partner {
        GgmlType::F32 => out.extend(act.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)),
        GgmlType::F16 => out.extend(act.chunks_exact(2).map(f16)),
        GgmlType::BF16 => out.extend(
            act.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16) as f64),
        ),
        GgmlType::Q8_0 => {
            for b in act.chunks_exact(34) {
                out.extend(b[2..].iter().map(|&q| f16(&b[..2]) * q as i8 as f64));
            }
        }
        GgmlType::Q8_1 => {
            for b in act.chunks_exact(36) {
                out.extend(b[4..].iter().map(|&q| f16(&b[..2]) * q as i8 as f64));
            }
        }
        GgmlType::Q8_K => {
            for b in act.chunks_exact(292) {
                let d = f32::from_le_bytes(b[..4].try_into().unwrap()) as f64;
                out.extend(b[4..260].iter().map(|&q| d * q as i8 as f64));
            }
        }
        other => panic!("{other} is not an activation type"),
    }
    assert_eq!(out.len(), n);
    out
}

/// Σ a·b in f64, and Σ |a·b| for relative bounds.
fn dot64(a: &[f32], b: &[f64]) -> (f64, f64) {
    a.iter().zip(b).fold((0.0, 0.0), |(s, m), (&x, &y)| (s + x as f64 * y, m + (x as f64 * y).abs()))
}

// ---------------------------------------------------------------------------------------------
// 1. Kernel vectors: bitwise dequantization, GGUF offsets, dot with x.

#[test]
fn kernel_vectors_dequantize_bitwise() {
    let mut seen = std::collections::HashSet::new();
    for file in kernel_vector_files() {
        let model = file["model"].as_str().unwrap();
        let x = f32s(&file["x"]);
        let gguf = GgufFile::open(common::model(model)).unwrap();
        for t in file["tensors"].as_array().unwrap() {
            let ty = GgmlType::from_id(t["ggml_type"].as_u64().unwrap() as u32).unwrap();
            assert_eq!(ty.name().to_uppercase(), t["type"].as_str().unwrap().to_uppercase());
            seen.insert(ty);
            let n = t["shape"][0].as_u64().unwrap() as usize;
            let row_bytes = t["row_bytes"].as_u64().unwrap() as usize;
            assert_eq!(ty.row_bytes(n), Some(row_bytes), "{model} {ty}");
            assert_eq!(ty.block_size(), t["block_size"].as_u64().unwrap() as usize);
            assert_eq!(ty.type_size(), t["type_size"].as_u64().unwrap() as usize);

            // The same bytes sit in the GGUF at data_offset.
            let name = t["name"].as_str().unwrap();
            let info = gguf.tensor(name).unwrap();
            assert_eq!(info.ty, ty);
            assert_eq!(
                gguf.data_offset + info.offset,
                t["data_offset"].as_u64().unwrap(),
                "{model} {name}: data offset"
            );
            let data = gguf.tensor_data(info);

            for r in t["rows"].as_array().unwrap() {
                let row = r["row"].as_u64().unwrap() as usize;
                let raw = hex(r["raw_hex"].as_str().unwrap());
                assert_eq!(raw.len(), row_bytes);
                assert_eq!(&data[row * row_bytes..(row + 1) * row_bytes], &raw[..], "{model} {name} row {row}");

                let want = f32s(&r["f32"]);
                let got = dequantize(ty, &raw, n);
                let mismatches: Vec<usize> = (0..n).filter(|&i| got[i].to_bits() != want[i].to_bits()).collect();
                assert!(
                    mismatches.is_empty(),
                    "{model} {name} row {row} ({ty}): {} values differ, first at {}: {} vs {}",
                    mismatches.len(),
                    mismatches[0],
                    got[mismatches[0]],
                    want[mismatches[0]]
                );

                let x64: Vec<f64> = x[..n].iter().map(|&v| v as f64).collect();
                let (dot, mag) = dot64(&got, &x64);
                let want_dot = r["dot_x_f64"].as_f64().unwrap();
                assert!((dot - want_dot).abs() <= 1e-12 * mag, "{model} {name} row {row}: {dot} vs {want_dot}");

                // The quantized path lands close to the exact dot too.
                let vd = kernels::vec_dot(ty, n, &raw, &quantize_act(ty, &x[..n])) as f64;
                let tol = match ty {
                    GgmlType::F32 => 1e-6,
                    GgmlType::F16 => 2e-3,
                    GgmlType::BF16 => 1e-2,
                    _ => 2e-2,
                };
                assert!(
                    (vd - want_dot).abs() <= tol * mag,
                    "{model} {name} row {row} ({ty}): vec_dot {vd} vs {want_dot}"
                );
            }
        }
    }
    // Every supported type except F32 has a kernel vector file.
    for ty in WEIGHT_TYPES.iter().filter(|t| **t != GgmlType::F32) {
        assert!(seen.contains(ty), "no kernel vectors for {ty}");
    }
}

/// Whole tensors of every fixture model dequantize without panicking and to finite values,
/// and the scalar table matches the facade.
#[test]
fn whole_tensors_dequantize_finite() {
    for name in
        ["c-llama-pure-q2_k.gguf", "c-llama-pure-iq1_m.gguf", "c-llama-q4_k_m.gguf", "c-llama-pure-iq2_xxs.gguf"]
    {
        let gguf = GgufFile::open(common::model(name)).unwrap();
        for info in &gguf.tensors {
            quant::check_supported(info.ty).unwrap();
            let (n, rows) = (info.row_len(), info.n_rows());
            let rb = info.ty.row_bytes(n).unwrap();
            let data = gguf.tensor_data(info);
            let mut out = vec![0f32; n];
            for r in 0..rows {
                quant::dequantize_row(info.ty, &data[r * rb..(r + 1) * rb], &mut out);
                assert!(out.iter().all(|v| v.is_finite()), "{name} {} row {r}", info.name);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. vec_dot: integer-exact against the dequantized operands, and close to the f32 dot.

/// Weight rows of `ty`: from a fixture model where one exists, else synthesised.
fn weight_rows(ty: GgmlType) -> (usize, Vec<Vec<u8>>) {
    let model = match ty {
        GgmlType::F32 => "c-llama-f32.gguf".to_string(),
        GgmlType::F16 => "c-llama-f16.gguf".to_string(),
        GgmlType::Q5_K => "c-llama-pure-q5_k.gguf".to_string(),
        other => format!("c-llama-pure-{}.gguf", other.name().to_lowercase()),
    };
    let gguf = GgufFile::open(common::model(&model)).unwrap();
    let info = gguf.tensor("blk.0.ffn_down.weight").unwrap();
    assert_eq!(info.ty, ty, "{model}");
    let n = info.row_len();
    let rb = ty.row_bytes(n).unwrap();
    let data = gguf.tensor_data(info);
    (n, (0..12).map(|r| data[r * 7 * rb..(r * 7 + 1) * rb].to_vec()).collect())
}

#[test]
fn vec_dot_matches_dequantized_operands() {
    for ty in WEIGHT_TYPES {
        let partner = quant::vec_dot_type(ty);
        let (n, rows) = weight_rows(ty);
        let xs = activations(n);
        let mut worst_exact = 0f64;
        let mut worst_f32 = 0f64;
        for w in &rows {
            let deq = dequantize(ty, w, n);
            for x in &xs {
                let act = quantize_act(ty, x);
                let vd = kernels::vec_dot(ty, n, w, &act) as f64;

                // Same operands, exact arithmetic: only float rounding may differ (plus the f16
                // rounding of Q8_1's `s`).
                let (exact, mag) = dot64(&deq, &dequantize_act(partner, &act, n));
                let tol_exact = if partner == GgmlType::Q8_1 { 5e-4 } else { 1e-5 };
                let err = (vd - exact).abs() / mag.max(1e-30);
                worst_exact = worst_exact.max(err);
                assert!(err <= tol_exact, "{ty}: vec_dot {vd} vs exact {exact} (rel {err:e})");

                // Against the f32 activations: activation quantization error only.
                let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                let (reference, mag) = dot64(&deq, &x64);
                let tol = match ty {
                    GgmlType::F32 => 1e-6,
                    GgmlType::F16 => 1e-3,
                    GgmlType::BF16 => 8e-3,
                    _ => 0.02,
                };
                let err = (vd - reference).abs() / mag;
                worst_f32 = worst_f32.max(err);
                assert!(err <= tol, "{ty}: vec_dot {vd} vs f32 dot {reference} (rel {err:e})");
            }
        }
        eprintln!("{ty}: worst rel error vs exact {worst_exact:.2e}, vs f32 {worst_f32:.2e}");
    }
}

/// The kernel the CPU dispatch picks (SIMD where this CPU has it) against the scalar oracle,
/// on rows of the real fixture files: within float-reordering error of the scalar dot, and
/// bit-identical where the dispatch falls back to the scalar kernel itself.
#[test]
fn dispatched_vec_dot_matches_scalar_oracle() {
    let mut rng = Rng(7);
    let mut simd = Vec::new();
    for ty in WEIGHT_TYPES {
        let k = quant::scalar_kernels(ty).unwrap();
        assert_eq!(k.ty, ty);
        assert_eq!(k.partner, quant::vec_dot_type(ty));
        let (n, rows) = weight_rows(ty);
        let x: Vec<f32> = (0..n).map(|_| rng.next_f32()).collect();
        let act = quantize_act(ty, &x);
        let mut act2 = vec![0u8; act.len()];
        (k.quantize_partner)(&x, &mut act2);
        assert_eq!(act, act2);
        let fast = kernels::get(ty).unwrap();
        if fast.isa != "scalar" {
            simd.push(format!("{ty}: {}", fast.isa));
        }
        let xa = dequantize_act(k.partner, &act, n);
        for w in &rows {
            let (want, got) = ((k.vec_dot)(n, w, &act), (fast.k.vec_dot)(n, w, &act));
            if fast.isa == "scalar" {
                assert_eq!(got.to_bits(), want.to_bits(), "{ty}: scalar dispatch differs from the oracle");
                continue;
            }
            let (_, mag) = dot64(&dequantize(ty, w, n), &xa);
            let tol = 1e-5 * mag + 1e-30;
            assert!((got as f64 - want as f64).abs() <= tol, "{ty} {}: {got} vs scalar {want}", fast.isa);
        }
    }
    eprintln!("dispatched SIMD kernels: {simd:?}");
}

#[test]
fn vec_dot_types_are_ggmls() {
    use GgmlType as T;
    let pairs = [
        (T::F32, T::F32),
        (T::F16, T::F16),
        (T::BF16, T::BF16),
        (T::Q4_0, T::Q8_0),
        (T::Q5_0, T::Q8_0),
        (T::Q8_0, T::Q8_0),
        (T::IQ4_NL, T::Q8_0),
        (T::Q4_1, T::Q8_1),
        (T::Q5_1, T::Q8_1),
        (T::Q2_K, T::Q8_K),
        (T::Q3_K, T::Q8_K),
        (T::Q4_K, T::Q8_K),
        (T::Q5_K, T::Q8_K),
        (T::Q6_K, T::Q8_K),
        (T::IQ4_XS, T::Q8_K),
        (T::IQ1_S, T::Q8_K),
        (T::IQ1_M, T::Q8_K),
        (T::IQ2_XXS, T::Q8_K),
    ];
    for (w, a) in pairs {
        assert_eq!(quant::vec_dot_type(w), a, "{w}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Activation quantization: the x86 paths, byte for byte.

fn q8_0_block(x: &[f32]) -> (f32, Vec<i8>) {
    let mut b = vec![0u8; 34];
    quant::quantize_row(GgmlType::Q8_0, x, &mut b);
    (quant::f16_bits_to_f32([b[0], b[1]]), b[2..].iter().map(|&q| q as i8).collect())
}

#[test]
fn q8_0_rounds_half_to_even_with_127_over_max() {
    // amax = 127 makes the multiplier exactly 1, so the inputs' halves are the ties.
    let mut x = [0f32; 32];
    let ties = [0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, -3.5, 126.5, -126.5];
    x[..ties.len()].copy_from_slice(&ties);
    x[31] = 127.0;
    let (d, q) = q8_0_block(&x);
    assert_eq!(d, 1.0);
    assert_eq!(&q[..10], &[0, 2, 2, 4, 0, -2, -2, -4, 126, -126]);
    assert_eq!(q[31], 127);
    assert!(q[10..31].iter().all(|&v| v == 0));

    // The multiplier is 127/amax, not 1/d: with amax = 3, 1/d = 1/(3/127) rounds differently
    // from 127/3 for some inputs. Check every element against the x86 formula.
    let x: Vec<f32> = (0..32).map(|i| (i as f32 - 15.5) * 0.1875).collect();
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (d, q) = q8_0_block(&x);
    assert_eq!(d, half::f16::from_f32(amax / 127.0).to_f32());
    for (v, q) in x.iter().zip(&q) {
        assert_eq!(*q as f32, (v * (127.0 / amax)).round_ties_even(), "{v}");
    }

    // All zeros: d = 0, q = 0.
    let (d, q) = q8_0_block(&[0.0; 32]);
    assert_eq!(d, 0.0);
    assert!(q.iter().all(|&v| v == 0));
}

#[test]
fn q8_1_stores_d_and_d_times_sum() {
    let x: Vec<f32> = (0..64).map(|i| ((i * 7 % 23) as f32 - 9.0) * 0.37).collect();
    let mut b = vec![0u8; 72];
    quant::quantize_row(GgmlType::Q8_1, &x, &mut b);
    for (blk, xb) in b.chunks_exact(36).zip(x.chunks_exact(32)) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let q: Vec<i8> = blk[4..].iter().map(|&q| q as i8).collect();
        let mut b0 = vec![0u8; 34];
        quant::quantize_row(GgmlType::Q8_0, xb, &mut b0);
        assert_eq!(&blk[..2], &b0[..2], "d as in Q8_0");
        assert_eq!(&blk[4..], &b0[2..], "quants as in Q8_0");
        let sum: i32 = q.iter().map(|&v| v as i32).sum();
        assert_ne!(sum, 0);
        // s uses the f32 d, before rounding d to f16.
        assert_eq!(u16::from_le_bytes([blk[2], blk[3]]), half::f16::from_f32(d * sum as f32).to_bits());
    }
}

#[test]
fn q8_k_structure() {
    let mut rng = Rng(42);
    let mut x: Vec<f32> = (0..512).map(|_| 2.0 * rng.next_f32()).collect();
    x[77] = -5.0; // block 0: largest magnitude is negative -> d < 0
    x[300] = 4.0; // block 1: positive
    let mut b = vec![0u8; 2 * 292];
    quant::quantize_row(GgmlType::Q8_K, &x, &mut b);
    for (k, (blk, xb)) in b.chunks_exact(292).zip(x.chunks_exact(256)).enumerate() {
        let d = f32::from_le_bytes(blk[..4].try_into().unwrap());
        let qs: Vec<i8> = blk[4..260].iter().map(|&q| q as i8).collect();
        let (imax, max) = if k == 0 { (77, -5.0f32) } else { (300 - 256, 4.0) };
        let iscale = -127.0 / max;
        assert_eq!(d, 1.0 / iscale);
        assert_eq!(d.is_sign_negative(), max > 0.0, "d = -max/127");
        assert_eq!(qs[imax], -127, "the largest value maps to -127");
        for (j, (&q, &v)) in qs.iter().zip(xb).enumerate() {
            assert_eq!(q as i32, ((iscale * v).round_ties_even() as i32).min(127), "block {k} elem {j}");
            assert!((d * q as f32 - v).abs() <= d.abs() * 0.5 + 1e-6);
        }
        for j in 0..16 {
            let bsum = i16::from_le_bytes([blk[260 + 2 * j], blk[261 + 2 * j]]) as i32;
            assert_eq!(bsum, qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum::<i32>());
        }
    }

    // Ties round to even: max = -127 makes iscale exactly 1.
    let mut x = [0f32; 256];
    x[0] = -127.0;
    x[1..7].copy_from_slice(&[0.5, 1.5, 2.5, -0.5, -1.5, -2.5]);
    let mut b = vec![0u8; 292];
    quant::quantize_row(GgmlType::Q8_K, &x, &mut b);
    let q: Vec<i8> = b[4..11].iter().map(|&q| q as i8).collect();
    assert_eq!(q, [-127, 0, 2, 2, 0, -2, -2]);

    // A zero block is all zeros.
    let mut b = vec![0xffu8; 292];
    quant::quantize_row(GgmlType::Q8_K, &[0.0; 256], &mut b);
    assert!(b.iter().all(|&v| v == 0));
}

#[test]
fn q8_k_repacked_differs_only_on_sign_ties() {
    let mut rng = Rng(3);
    let mut x: Vec<f32> = (0..512).map(|_| rng.next_f32()).collect();
    let (mut a, mut b) = (vec![0u8; 584], vec![0u8; 584]);
    quant::quantize_row(GgmlType::Q8_K, &x, &mut a);
    quant::quantize_row_q8_k_repacked(&x, &mut b);
    assert_eq!(a, b, "no ±amax tie: identical");

    // Block 1 holds -2 then +2: the row version takes the first (negative) maximum.
    x[256 + 3] = -2.0;
    x[256 + 9] = 2.0;
    quant::quantize_row(GgmlType::Q8_K, &x, &mut a);
    quant::quantize_row_q8_k_repacked(&x, &mut b);
    assert_eq!(a[..292], b[..292]);
    let d = |blk: &[u8]| f32::from_le_bytes(blk[..4].try_into().unwrap());
    assert_eq!(d(&a[292..]), 2.0 / 127.0);
    assert_eq!(d(&b[292..]), -2.0 / 127.0);
    assert_eq!((a[292 + 4 + 3] as i8, a[292 + 4 + 9] as i8), (-127, 127));
    assert_eq!((b[292 + 4 + 3] as i8, b[292 + 4 + 9] as i8), (127, -127));
}

#[test]
fn float_activations_round_to_nearest_even() {
    let one = 1.0f32;
    let tie16 = f32::from_bits(one.to_bits() + (1 << 12)); // 1 + 2^-11: halfway between f16s
    let above16 = f32::from_bits(one.to_bits() + (3 << 12)); // 1 + 3*2^-11: tie, rounds up to even
    let mut b = vec![0u8; 4];
    quant::quantize_row(GgmlType::F16, &[tie16, above16], &mut b);
    assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x3c00);
    assert_eq!(u16::from_le_bytes([b[2], b[3]]), 0x3c02);

    let tie_bf = f32::from_bits(one.to_bits() + (1 << 15));
    let above_bf = f32::from_bits(one.to_bits() + (3 << 15));
    let mut b = vec![0u8; 6];
    quant::quantize_row(GgmlType::BF16, &[tie_bf, above_bf, f32::from_bits(0x7f80_0001)], &mut b);
    assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x3f80);
    assert_eq!(u16::from_le_bytes([b[2], b[3]]), 0x3f82);
    assert_eq!(u16::from_le_bytes([b[4], b[5]]), 0x7fc0, "NaN is quieted");
}

// ---------------------------------------------------------------------------------------------
// 4. Unsupported types.

#[test]
fn unsupported_types_are_named() {
    for ty in GgmlType::ALL {
        assert_eq!(quant::is_supported(ty), WEIGHT_TYPES.contains(&ty), "{ty}");
        match quant::check_supported(ty) {
            Ok(()) => assert!(WEIGHT_TYPES.contains(&ty)),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(&ty.to_string()), "{msg}");
                assert!(msg.contains("not supported"), "{msg}");
                assert!(quant::scalar_kernels(ty).is_none());
            }
        }
    }
    assert!(quant::check_supported(GgmlType::IQ2_XS).is_err());
    assert!(quant::check_supported(GgmlType::Q8_K).is_err(), "Q8_K is an activation type only");
    assert!(GgmlType::from_id(99).is_none());
}

// ---------------------------------------------------------------------------------------------
// 5. Reference quantizers.

/// ggml's test-quantize-fns data: 0.1 + 2 cos(i + offset).
fn smooth_data(n: usize, offset: f32) -> Vec<f32> {
    (0..n).map(|i| 0.1 + 2.0 * (i as f32 + offset).cos()).collect()
}

const QUANTIZERS: [GgmlType; 18] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::IQ1_S,
    GgmlType::IQ1_M,
    GgmlType::IQ2_XXS,
];

/// The quantizers that are not ggml's (ggml needs an importance matrix for these types).
const SIMPLE_QUANTIZERS: [GgmlType; 3] = [GgmlType::IQ1_S, GgmlType::IQ1_M, GgmlType::IQ2_XXS];

#[test]
fn every_supported_type_can_be_quantized() {
    for ty in GgmlType::ALL {
        assert_eq!(quant::can_quantize_weights(ty), quant::is_supported(ty), "{ty}");
        assert_eq!(quant::can_quantize_weights(ty), QUANTIZERS.contains(&ty), "{ty}");
    }
}

#[test]
fn reference_quantizers_round_trip() {
    let n = 32 * 128;
    let x = smooth_data(n, 0.0);
    for ty in QUANTIZERS {
        assert!(quant::can_quantize_weights(ty));
        let mut q = vec![0u8; ty.row_bytes(n).unwrap()];
        quant::quantize_weights(ty, &x, &mut q);
        let y = dequantize(ty, &q, n);
        let sum2: f64 = x.iter().zip(&y).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        // ggml's "total error" metric (sqrt of the squared-error sum over n) and true RMSE.
        let total = sum2.sqrt() / n as f64;
        let rmse = (sum2 / n as f64).sqrt();
        let max_rmse = match ty {
            GgmlType::F32 => 0.0,
            GgmlType::F16 => 1e-3,
            GgmlType::BF16 => 8e-3,
            GgmlType::Q8_0 => 0.01,
            GgmlType::Q6_K => 0.03,
            GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K => 0.06,
            GgmlType::Q3_K => 0.25,
            GgmlType::Q2_K => 0.45,
            GgmlType::IQ2_XXS => 0.55,
            GgmlType::IQ1_S | GgmlType::IQ1_M => 0.75,
            _ => 0.12,
        };
        // ggml's test-quantize-fns thresholds.
        let max_total = match ty {
            GgmlType::Q2_K => 0.0075,
            GgmlType::Q3_K => 0.0040,
            GgmlType::IQ2_XXS | GgmlType::IQ1_S | GgmlType::IQ1_M => 0.02,
            _ => 0.002,
        };
        eprintln!("{ty}: ggml total error {total:.2e}, rmse {rmse:.2e}");
        assert!(total <= max_total, "{ty}: total error {total}");
        assert!(rmse <= max_rmse, "{ty}: rmse {rmse}");
        // Quantizing the dequantized values again is stable for the block formats.
        if ty.block_size() == 32 && ty != GgmlType::IQ4_NL {
            let mut q2 = vec![0u8; q.len()];
            quant::quantize_weights(ty, &y, &mut q2);
            let y2 = dequantize(ty, &q2, n);
            let drift = y.iter().zip(&y2).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(drift <= 0.02, "{ty}: requantization drift {drift}");
        }
    }
}

/// Our reference quantizers reproduce `llama-quantize` (no imatrix) on the fixture models.
#[test]
fn reference_quantizers_match_llama_quantize() {
    let src = GgufFile::open(common::model("c-llama-f32.gguf")).unwrap();
    let exact = QUANTIZERS.into_iter().filter(|t| t.block_size() > 1 && !SIMPLE_QUANTIZERS.contains(t));
    assert_eq!(exact.clone().count(), 12);
    for ty in exact {
        let model = format!("c-llama-pure-{}.gguf", ty.name().to_lowercase());
        let dst = GgufFile::open(common::model(&model)).unwrap();
        for name in ["blk.0.attn_q.weight", "blk.1.ffn_down.weight", "output.weight"] {
            let s = src.tensor(name).unwrap();
            let d = dst.tensor(name).unwrap();
            assert_eq!(d.ty, ty);
            let x: Vec<f32> =
                src.tensor_data(s).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            let n = s.row_len();
            let rb = ty.row_bytes(n).unwrap();
            let want = dst.tensor_data(d);
            let mut got = vec![0u8; rb];
            let mut bad_rows = 0;
            for (r, xr) in x.chunks_exact(n).enumerate() {
                quant::quantize_weights(ty, xr, &mut got);
                if got[..] != want[r * rb..(r + 1) * rb] {
                    bad_rows += 1;
                }
            }
            assert_eq!(bad_rows, 0, "{model} {name}: {bad_rows} of {} rows differ", s.n_rows());
        }
    }
}

/// Rough scalar throughput, for the record: `cargo test --test it quant::scalar_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn scalar_speed() {
    for ty in WEIGHT_TYPES {
        let (n, rows) = weight_rows(ty);
        let x = &activations(n)[1];
        let act = quantize_act(ty, x);
        let mut out = vec![0f32; n];
        let reps = 2000;
        let t = std::time::Instant::now();
        let mut s = 0f32;
        for r in 0..reps {
            s += kernels::vec_dot(ty, n, &rows[r % rows.len()], &act);
        }
        let dot_ns = t.elapsed().as_nanos() as f64 / (reps * n) as f64;
        let t = std::time::Instant::now();
        for r in 0..reps {
            quant::dequantize_row(ty, &rows[r % rows.len()], &mut out);
        }
        let deq_ns = t.elapsed().as_nanos() as f64 / (reps * n) as f64;
        let t = std::time::Instant::now();
        let mut a2 = act.clone();
        for _ in 0..reps {
            quant::quantize_row(quant::vec_dot_type(ty), x, &mut a2);
        }
        let q_ns = t.elapsed().as_nanos() as f64 / (reps * n) as f64;
        eprintln!("{ty:>8}: vec_dot {dot_ns:.2} ns/elem, dequantize {deq_ns:.2}, quantize act {q_ns:.2} ({s:.1})");
    }
}

#[test]
fn oracle_accepts_scalar_and_catches_broken_kernels() {
    for ty in WEIGHT_TYPES {
        let k = quant::scalar_kernels(ty).unwrap();
        quant::oracle::compare_with_scalar(k, 512, 3, 11).unwrap();
    }
    // A vec_dot that drops the last block, a dequantizer off by one ulp, a sloppy quantizer.
    fn short_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
        kernels::vec_dot(GgmlType::Q4_K, n - 256, w, a)
    }
    fn nudged(src: &[u8], dst: &mut [f32]) {
        quant::dequantize_row(GgmlType::Q4_K, src, dst);
        dst[5] = f32::from_bits(dst[5].to_bits() + 1);
    }
    fn ref_q8_0(x: &[f32], dst: &mut [u8]) {
        // ggml's scalar reference (1/d, round half away): not what x86 runs.
        for (xb, b) in x.chunks_exact(32).zip(dst.chunks_exact_mut(34)) {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b[..2].copy_from_slice(&quant::f32_to_f16_bits(d));
            for (q, v) in b[2..].iter_mut().zip(xb) {
                *q = (v * id).round() as i8 as u8;
            }
        }
    }
    let good = *quant::scalar_kernels(GgmlType::Q4_K).unwrap();
    let bad_dot = quant::Kernels { vec_dot: short_dot, ..good };
    assert!(quant::oracle::compare_with_scalar(&bad_dot, 512, 3, 1).unwrap_err().contains("vec_dot"));
    let bad_deq = quant::Kernels { dequantize_row: nudged, ..good };
    assert!(quant::oracle::compare_with_scalar(&bad_deq, 512, 3, 1).unwrap_err().contains("dequantize"));
    let q8 = *quant::scalar_kernels(GgmlType::Q8_0).unwrap();
    let bad_act = quant::Kernels { quantize_partner: ref_q8_0, ..q8 };
    assert!(quant::oracle::compare_with_scalar(&bad_act, 4096, 8, 1).unwrap_err().contains("activation"));
}
