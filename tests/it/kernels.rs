//! Every SIMD kernel table this CPU runs (AVX2, AVX-VNNI, AVX-512 VNNI/BF16, NEON, NEON dotprod) against the
//! scalar oracle and against each other: vec_dot within float-reordering error, the four-token
//! tile equal to four single dots, the activation quantizers untouched (bit-identical).

use prima::cpu::kernels::{self, CpuKernels};
use prima::quant::{self, GgmlType, oracle};

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn assert_varies(x: &[f32]) {
    let distinct = x.iter().map(|v| v.to_bits()).collect::<std::collections::HashSet<_>>().len();
    assert!(distinct > x.len() / 4, "test input has too few distinct values");
    let mean = x.iter().sum::<f32>() / x.len() as f32;
    assert!(x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / x.len() as f32 > 1e-6, "test input is flat");
}

/// (isa name, table) for every variant but scalar.
type Table = fn(GgmlType) -> Option<CpuKernels>;

fn simd_tables() -> Vec<(&'static str, Table)> {
    kernels::available_isas().into_iter().filter(|i| i.name != "scalar").map(|i| (i.name, i.table)).collect()
}

fn types_with_quantizer() -> Vec<GgmlType> {
    GgmlType::ALL.iter().copied().filter(|&t| quant::is_supported(t) && quant::can_quantize_weights(t)).collect()
}

#[test]
fn simd_vec_dot_matches_scalar_oracle() {
    let tables = simd_tables();
    eprintln!("SIMD variants on this CPU: {:?}", tables.iter().map(|t| t.0).collect::<Vec<_>>());
    for (isa, table) in &tables {
        for ty in types_with_quantizer() {
            let Some(k) = table(ty) else { continue };
            // The IQ1/IQ2 test quantizers search their grids by brute force: slow under qemu,
            // so those types skip the longest row.
            let grid_search = matches!(ty, GgmlType::IQ1_S | GgmlType::IQ1_M | GgmlType::IQ2_XXS);
            let cases: &[(usize, u64)] =
                if grid_search { &[(256, 1), (4096, 2)] } else { &[(256, 1), (4096, 2), (14336, 3)] };
            for &(n, seed) in cases {
                oracle::compare_with_scalar(&k.k, n, 6, seed).unwrap_or_else(|e| panic!("{isa}: {e}"));
            }
        }
    }
}

/// Weight rows from random floats, activation rows quantized by the scalar x86-exact quantizer.
fn operands(ty: GgmlType, n: usize, rows: usize, tokens: usize, seed: u64) -> (Vec<u8>, Vec<u8>, Vec<Vec<f32>>) {
    let mut rng = Rng(seed | 1);
    let partner = quant::vec_dot_type(ty);
    let (wb, ab) = (ty.row_bytes(n).unwrap(), partner.row_bytes(n).unwrap());
    let mut w = vec![0u8; wb * rows];
    for r in 0..rows {
        let scale = 0.01 + 0.2 * rng.next_f32().abs();
        let wf: Vec<f32> = (0..n).map(|_| scale * rng.next_f32()).collect();
        assert_varies(&wf);
        quant::quantize_weights(ty, &wf, &mut w[r * wb..(r + 1) * wb]);
    }
    let mut act = vec![0u8; ab * tokens];
    let mut xs = Vec::new();
    for t in 0..tokens {
        let scale = 0.1 + 5.0 * rng.next_f32().abs();
        let x: Vec<f32> = (0..n).map(|i| scale * rng.next_f32() + if i % 61 == 7 { 9.0 } else { 0.0 }).collect();
        assert_varies(&x);
        quant::quantize_row(partner, &x, &mut act[t * ab..(t + 1) * ab]);
        xs.push(x);
    }
    (w, act, xs)
}

/// Σ|w·x| over the dequantized operands: the scale of the float rounding error.
fn magnitude(ty: GgmlType, w: &[u8], x: &[f32]) -> f64 {
    let mut d = vec![0f32; x.len()];
    (quant::scalar_kernels(ty).unwrap().dequantize_row)(w, &mut d);
    d.iter().zip(x).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum()
}

#[test]
fn simd_tile_and_variants_agree() {
    let tables = simd_tables();
    for ty in types_with_quantizer() {
        let scalar = quant::scalar_kernels(ty).unwrap();
        let partner = scalar.partner;
        // Row lengths that are not multiples of 256 where the block allows (SmolLM2's 576).
        let lens: &[usize] = if ty.block_size() == 256 { &[256, 2048] } else { &[576, 1536, 64] };
        for &n in lens {
            let (w, act, xs) = operands(ty, n, 3, 5, n as u64 ^ ty as u64);
            let (wb, ab) = (ty.row_bytes(n).unwrap(), partner.row_bytes(n).unwrap());
            for r in 0..3 {
                let wr = &w[r * wb..(r + 1) * wb];
                let want: Vec<f32> = (0..5).map(|t| (scalar.vec_dot)(n, wr, &act[t * ab..(t + 1) * ab])).collect();
                let mut results: Vec<(&str, Vec<f32>)> = Vec::new();
                for (isa, table) in &tables {
                    let Some(k) = table(ty) else { continue };
                    let one: Vec<f32> = (0..5).map(|t| (k.k.vec_dot)(n, wr, &act[t * ab..(t + 1) * ab])).collect();
                    for start in [0, 1] {
                        let mut four = [0f32; 4];
                        k.dot_x4(n, wr, &act[start * ab..], ab, &mut four);
                        for i in 0..4 {
                            assert_eq!(
                                four[i].to_bits(),
                                one[start + i].to_bits(),
                                "{isa} {ty} n={n}: tile differs from single dot at token {}",
                                start + i
                            );
                        }
                    }
                    results.push((isa, one));
                }
                results.push(("scalar", want));
                for (t, x) in xs.iter().enumerate() {
                    let tol = 1e-5 * magnitude(ty, wr, x) + 1e-30;
                    for a in &results {
                        for b in &results {
                            let d = (a.1[t] as f64 - b.1[t] as f64).abs();
                            assert!(d <= tol, "{ty} n={n} token {t}: {} {} vs {} {}", a.0, a.1[t], b.0, b.1[t]);
                        }
                    }
                }
            }
        }
    }
}

/// The prefill tiles (rows × tokens, activations prepared once) against the scalar oracle, on
/// shapes that exercise every edge: row counts that are not multiples of 4, token counts with
/// a partial tile and more than one 64-token block, odd block counts (a half run), and rows
/// longer than one decoded chunk.
#[test]
fn prefill_tiles_match_scalar_oracle() {
    let mut tested = Vec::new();
    for isa in kernels::available_isas() {
        for ty in types_with_quantizer() {
            let Some(tiles) = (isa.tiles)(ty) else { continue };
            tested.push(format!("{} {ty}", isa.name));
            let scalar = quant::scalar_kernels(ty).unwrap();
            let (order, _) = kernels::tile_order(ty).expect("every tiled type has tile-order kernels");
            let shapes: &[(usize, usize, usize)] = if ty.block_size() == 256 {
                &[(256, 6, 5), (2048, 9, 4), (4096 + 256, 4, 67), (4096 + 256, 13, 9), (512, 21, 6)]
            } else {
                &[(576, 6, 5), (96, 9, 4), (32, 5, 7), (4096 + 96, 4, 67), (1024 + 96, 20, 9)]
            };
            // Rows 3..rows go eight at a time where there are eight, the rest four at a time.
            for &(n, rows, tokens) in shapes {
                let (w, act, xs) = operands(ty, n, rows, tokens, (n * rows + tokens) as u64 ^ ty as u64);
                let (wb, ab) = (ty.row_bytes(n).unwrap(), scalar.partner.row_bytes(n).unwrap());
                let mut prepared = vec![0u8; (tiles.prepared_bytes)(n, tokens)];
                (tiles.prepare)(&act, ab, tokens, n, &mut prepared);
                let mut out = vec![f32::NAN; rows * tokens];
                // Two ranges, as two tasks would split them: 0..3 and 3..rows.
                for range in [0..3, 3..rows] {
                    // SAFETY: `out` is rows × tokens and the ranges are disjoint.
                    unsafe { (tiles.rows_tokens)(&w, wb, n, range, &prepared, tokens, out.as_mut_ptr(), rows) };
                }
                let mut worst = 0f64;
                for r in 0..rows {
                    let wr = &w[r * wb..(r + 1) * wb];
                    for t in 0..tokens {
                        let want = (scalar.vec_dot)(n, wr, &act[t * ab..(t + 1) * ab]);
                        let got = out[t * rows + r];
                        let one = (order.k.vec_dot)(n, wr, &act[t * ab..(t + 1) * ab]);
                        assert_eq!(
                            got.to_bits(),
                            one.to_bits(),
                            "{} {ty} n={n} row {r} token {t}: tiles {got} vs the one-row kernel {one}",
                            isa.name
                        );
                        let tol = 1e-5 * magnitude(ty, wr, &xs[t]) + 1e-30;
                        worst = worst.max((got as f64 - want as f64).abs() / tol);
                        assert!(
                            (got as f64 - want as f64).abs() <= tol,
                            "{} {ty} n={n} row {r} token {t}: tiles {got} vs scalar {want} (tolerance {tol:e})",
                            isa.name
                        );
                    }
                }
                eprintln!("{} {ty} n={n}: worst error {worst:.4} of the tolerance", isa.name);
            }
        }
    }
    eprintln!("prefill tiles tested: {tested:?}");
    assert_ran("prefill tiles", tested.len());
}

/// Tests of the AVX-512 kernels pass with zero cases on CPUs without them: say so, and fail
/// where the CPU has the features but no case ran (a dispatch or detection slip, or
/// `PRIMA_KERNELS`/`PRIMA_TILES` set under CI).
fn assert_ran(what: &str, cases: usize) {
    if kernels::tiles_detected() {
        assert!(cases > 0, "{what}: this CPU has AVX-512 VNNI/BW but no case ran");
    } else if cases == 0 {
        eprintln!("{what}: no AVX-512 VNNI/BW on this CPU, 0 cases (the AVX-512 paths are untested here)");
    }
}

#[test]
fn tables_keep_the_x86_exact_activation_quantizers() {
    for (isa, table) in simd_tables() {
        for ty in types_with_quantizer() {
            let Some(k) = table(ty) else { continue };
            let s = quant::scalar_kernels(ty).unwrap();
            assert_eq!(k.k.partner, s.partner, "{isa} {ty}");
            let n = 512;
            let mut rng = Rng(ty as u64 + 11);
            let x: Vec<f32> = (0..n).map(|_| 3.0 * rng.next_f32()).collect();
            assert_varies(&x);
            let ab = s.partner.row_bytes(n).unwrap();
            let (mut a, mut b) = (vec![0u8; ab], vec![0u8; ab]);
            (k.k.quantize_partner)(&x, &mut a);
            (s.quantize_partner)(&x, &mut b);
            assert_eq!(a, b, "{isa} {ty}: activation quantization must stay bit-identical");
        }
    }
}

#[test]
fn dispatch_picks_a_simd_table_where_available() {
    let summary = prima::cpu::kernel_summary();
    eprintln!("kernels: {summary}");
    if simd_tables().is_empty() {
        return;
    }
    // Every weight format the engine runs has a kernel in the baseline SIMD table of each
    // architecture (AVX2, NEON), so none falls back to scalar.
    for ty in GgmlType::ALL.iter().copied().filter(|&t| quant::is_supported(t)) {
        let k = kernels::get(ty).unwrap();
        assert_ne!(k.isa, "scalar", "{ty} runs scalar although SIMD is available ({summary})");
    }
}

/// Single-thread weight bytes per second of every kernel variant on cache-resident rows:
/// `cargo test --test it kernels::throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    let n = 4096;
    use GgmlType as T;
    let types = [
        T::Q4_K,
        T::Q6_K,
        T::Q8_0,
        T::Q4_0,
        T::IQ4_XS,
        T::Q5_0,
        T::Q2_K,
        T::Q3_K,
        T::IQ2_XXS,
        T::IQ1_S,
        T::IQ1_M,
        T::BF16,
    ];
    for ty in types {
        let (w, act, _) = operands(ty, n, 64, 4, 9);
        let wb = ty.row_bytes(n).unwrap();
        let ab = quant::vec_dot_type(ty).row_bytes(n).unwrap();
        for isa in kernels::available_isas() {
            let Some(k) = (isa.table)(ty) else { continue };
            for tile in [false, true] {
                let start = std::time::Instant::now();
                let mut sink = 0f32;
                let mut bytes = 0usize;
                while start.elapsed().as_millis() < 200 {
                    for r in 0..64 {
                        let wr = &w[r * wb..(r + 1) * wb];
                        if tile {
                            let mut o = [0f32; 4];
                            k.dot_x4(n, wr, &act, ab, &mut o);
                            sink += o[0];
                        } else {
                            sink += (k.k.vec_dot)(n, wr, &act[..ab]);
                        }
                        bytes += wb;
                    }
                }
                let gbs = bytes as f64 / start.elapsed().as_secs_f64() / 1e9;
                let per_token = if tile { gbs * 4.0 } else { gbs };
                eprintln!(
                    "{ty:7} {:12} {}: {gbs:6.2} GB/s of weights ({per_token:6.2} GB/s per token) {sink:e}",
                    isa.name,
                    if tile { "x4" } else { "x1" }
                );
            }
        }
    }
}

/// Single-thread prefill throughput, tiles vs the 4-token kernels, on 64 rows × 64 tokens of
/// 4096 columns (cache-resident): the best of many short runs, so a busy machine still gives
/// a usable number. `cargo test --release --test it kernels::tiles_throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn tiles_throughput() {
    let (n, rows, tokens) = (4096, 64, 64);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Q4_1,
        GgmlType::IQ4_NL,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_XS,
    ] {
        let (w, act, _) = operands(ty, n, rows, tokens, 5);
        let (wb, ab) = (ty.row_bytes(n).unwrap(), quant::vec_dot_type(ty).row_bytes(n).unwrap());
        let k = kernels::get(ty).unwrap();
        let best = |f: &mut dyn FnMut()| {
            let mut best = f64::MAX;
            for _ in 0..30 {
                let t = std::time::Instant::now();
                f();
                best = best.min(t.elapsed().as_secs_f64());
            }
            (rows * tokens * n) as f64 / best / 1e9
        };
        let mut out = vec![0f32; rows * tokens];
        let x4 = best(&mut || {
            for r in 0..rows {
                for t0 in (0..tokens).step_by(4) {
                    let mut o = [0f32; 4];
                    k.dot_x4(n, &w[r * wb..(r + 1) * wb], &act[t0 * ab..], ab, &mut o);
                    out[t0 * rows + r] = o[0];
                }
            }
        });
        let tiles = kernels::tiles(ty).map(|tl| {
            let mut prepared = vec![0u8; (tl.prepared_bytes)(n, tokens)];
            best(&mut || {
                (tl.prepare)(&act, ab, tokens, n, &mut prepared);
                // SAFETY: `out` is rows × tokens.
                unsafe { (tl.rows_tokens)(&w, wb, n, 0..rows, &prepared, tokens, out.as_mut_ptr(), rows) };
            })
        });
        eprintln!(
            "{ty:7} {}: x4 {x4:6.1} GMAC/s, tiles {}",
            k.isa,
            tiles.map_or("-".into(), |t| format!("{t:6.1} GMAC/s ({:.2}x)", t / x4))
        );
    }
}

/// The tile-order kernels (one-row and four-row; they run on any AVX2 CPU): the four-row
/// kernel equals the one-row kernel bit for bit, row by row, and both the scalar oracle within
/// float-reordering error; row strides wider than a row (as in a real matrix they are equal;
/// wider catches a kernel that assumes contiguous rows).
#[test]
fn rows4_matches_one_row_and_scalar_oracle() {
    let mut checked = 0;
    for ty in types_with_quantizer() {
        let Some((one, r4)) = kernels::tile_order(ty) else { continue };
        let scalar = quant::scalar_kernels(ty).unwrap();
        for n in [576, 1536, 64, 4096, 256, 768].into_iter().filter(|n| n % ty.block_size() == 0) {
            let (w, act, xs) = operands(ty, n, 8, 1, n as u64 * 31 + ty as u64);
            let wb = ty.row_bytes(n).unwrap();
            for pad in [0, 7] {
                let stride = wb + pad;
                let mut padded = vec![0xa5u8; stride * 4];
                for r in 0..4 {
                    padded[r * stride..r * stride + wb].copy_from_slice(&w[(r + 4) * wb..(r + 5) * wb]);
                }
                let mut got = [0f32; 4];
                r4(n, &padded, stride, &act, &mut got);
                for r in 0..4 {
                    let wr = &w[(r + 4) * wb..(r + 5) * wb];
                    let single = (one.k.vec_dot)(n, wr, &act);
                    assert_eq!(got[r].to_bits(), single.to_bits(), "{ty} n={n} pad={pad} row {r}: four-row vs one-row");
                    let want = (scalar.vec_dot)(n, wr, &act);
                    let tol = 1e-5 * magnitude(ty, wr, &xs[0]) + 1e-30;
                    assert!(
                        (got[r] as f64 - want as f64).abs() <= tol,
                        "{ty} n={n} pad={pad} row {r}: {} vs {want}",
                        got[r]
                    );
                }
                checked += 1;
            }
        }
    }
    // Their four-token kernel (prefill where the tiles are off) equals the one-row kernel too.
    for ty in types_with_quantizer() {
        let Some((k, _)) = kernels::tile_order(ty) else { continue };
        let n = if ty.block_size() == 256 { 512 } else { 576 };
        let (w, act, _) = operands(ty, n, 1, 5, 77 ^ ty as u64);
        let ab = k.k.partner.row_bytes(n).unwrap();
        for start in [0, 1] {
            let mut four = [0f32; 4];
            k.dot_x4(n, &w, &act[start * ab..], ab, &mut four);
            for (i, v) in four.into_iter().enumerate() {
                let t = start + i;
                let one = (k.k.vec_dot)(n, &w, &act[t * ab..(t + 1) * ab]);
                assert_eq!(v.to_bits(), one.to_bits(), "{ty} token {t}: four-token vs one-row kernel");
            }
        }
        checked += 1;
    }
    eprintln!("rows4: {checked} cases");
    if simd_tables().iter().any(|t| t.0 == "avx2") {
        assert!(checked > 0, "AVX2 CPU, but no tile-order case ran");
    }
}

/// Batch invariance of the whole dispatch: each token's outputs of `matmul` are bit-identical
/// whether it is alone (one-row or four-row kernels), in a batch of 2–3 (one-row per token), or
/// at any position of a batch of 4, 5, 17 or 64 (x4 tiles or the AVX-512 prefill tiles), for
/// every weight format, with row counts that leave partial four-row groups and two threads.
#[test]
fn matmul_is_batch_invariant() {
    use prima::cpu::matmul::{Matrix, matmul};
    let pool = prima::cpu::ThreadPool::new(2);
    let (mut tiled, mut four_row) = (Vec::new(), Vec::new());
    for ty in types_with_quantizer() {
        let n = if ty.block_size() == 256 { 512 } else { 576 };
        let rows = 19;
        let tokens = 64 + 3;
        let (w, _, xs) = operands(ty, n, rows, tokens, 0x5eed ^ ty as u64);
        let m = Matrix { ty, rows, cols: n, row_bytes: ty.row_bytes(n).unwrap(), data: &w };
        let mut scratch = Vec::new();
        let run = |first: usize, count: usize, scratch: &mut Vec<u8>| {
            let x: Vec<f32> = xs[first..first + count].concat();
            let mut out = vec![0f32; count * rows];
            matmul(&pool, &m, &x, count, &mut out, scratch);
            out
        };
        let alone: Vec<Vec<f32>> = (0..tokens).map(|t| run(t, 1, &mut scratch)).collect();
        for (count, first) in [(2, 1), (3, 0), (4, 0), (4, 2), (5, 1), (17, 3), (64, 0), (64, 3)] {
            let out = run(first, count, &mut scratch);
            for i in 0..count {
                let (got, want) = (&out[i * rows..(i + 1) * rows], &alone[first + i]);
                for r in 0..rows {
                    assert_eq!(
                        got[r].to_bits(),
                        want[r].to_bits(),
                        "{ty}: token {} at position {i} of a batch of {count}, row {r}: {} vs {} alone",
                        first + i,
                        got[r],
                        want[r]
                    );
                }
            }
        }
        if kernels::tiles(ty).is_some() {
            tiled.push(ty);
        }
        if kernels::rows4(ty).is_some() {
            four_row.push(ty);
        }
    }
    eprintln!("batch invariance: prefill tiles for {tiled:?}, four-row decode for {four_row:?}");
    assert_ran("batch invariance through the prefill tiles", tiled.len());
}

/// A prompt's logits are bit-identical whether the model reads it in one batch, in chunks of
/// 7 or 3, or token by token, on fixtures whose matrices take the tiled formats (Q4_K/Q6_K,
/// Q4_0, Q8_0) and one that does not (Q2_K).
#[test]
fn model_logits_do_not_depend_on_chunking() {
    use prima::model::{Model, Pipeline};
    for name in ["c-llama-q4_k_m.gguf", "c-llama-pure-q4_0.gguf", "c-llama-pure-q8_0.gguf", "c-llama-pure-q2_k.gguf"] {
        let m = Model::open(crate::common::model(name)).unwrap();
        let v = m.config.n_vocab;
        let prompt: Vec<u32> = (0..19).map(|i| ((i * 37 + 11) % v) as u32).collect();
        let logits = |batch: usize| {
            let mut s = Pipeline::new(&m, 64, 2).unwrap();
            s.set_batch(batch);
            s.decode_all(&prompt).unwrap().to_vec()
        };
        let whole = logits(prompt.len());
        for batch in [7, 3, 1] {
            let got = logits(batch);
            assert_eq!(got.len(), whole.len());
            if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != whole[i].to_bits()) {
                panic!(
                    "{name}: batch {batch}, token {} logit {}: {} vs {} in one batch",
                    i / v,
                    i % v,
                    got[i],
                    whole[i]
                );
            }
        }
    }
}

/// Single-thread decode read rate of the matrix-vector kernels over a real model's two largest
/// matrices (`token_embd`, `output`: hundreds of MB, so they stream from RAM), four-row kernels
/// (with their prefetch) against the bare one-row kernel (no prefetch), and the same from L2
/// (512 rows, repeated).
/// `PRIMA_STREAM_MODEL` (default the 8B shape of `bench/vs-llama.sh`) names the GGUF:
/// `cargo test --release --test it kernels::decode_stream_rate -- --ignored --nocapture`.
#[test]
#[ignore]
fn decode_stream_rate() {
    let path = std::env::var("PRIMA_STREAM_MODEL").unwrap_or_else(|_| "models/synth-llama3-8b.Q4_K_M.gguf".into());
    let Ok(g) = prima::gguf::GgufFile::open(&path) else {
        eprintln!("{path}: missing, nothing measured");
        return;
    };
    for name in ["token_embd.weight", "output.weight"] {
        let Some(t) = g.tensor(name).cloned() else { continue };
        let (data, cols, rows) = (g.tensor_data(&t), t.row_len(), t.n_rows());
        let rb = data.len() / rows;
        let Some(k) = kernels::get(t.ty) else { continue };
        let x: Vec<f32> = (0..cols).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
        let mut act = vec![0u8; k.k.partner.row_bytes(cols).unwrap()];
        (k.k.quantize_partner)(&x, &mut act);
        let rows4 = kernels::rows4(t.ty);
        let pass = |four: bool, n_rows: usize, reps: usize| {
            let start = std::time::Instant::now();
            let mut sink = 0f32;
            for _ in 0..reps {
                for r in (0..n_rows / 4 * 4).step_by(4) {
                    let w = &data[r * rb..(r + 4) * rb];
                    let mut o = [0f32; 4];
                    match rows4.filter(|_| four) {
                        Some(f) => f(cols, w, rb, &act, &mut o),
                        None => (0..4).for_each(|i| o[i] = (k.k.vec_dot)(cols, &w[i * rb..(i + 1) * rb], &act)),
                    }
                    sink += o[0];
                }
            }
            std::hint::black_box(sink);
            (n_rows / 4 * 4 * rb * reps) as f64 / start.elapsed().as_secs_f64() / 1e9
        };
        pass(false, rows, 1); // map the pages
        for four in [false, true] {
            if four && rows4.is_none() {
                continue;
            }
            let stream: Vec<f64> = (0..3).map(|_| pass(four, rows, 1)).collect();
            let l2 = pass(four, 512, rows / 512);
            eprintln!(
                "{name} {} {}: stream {:.2} {:.2} {:.2} GB/s, L2 {l2:.2} GB/s",
                t.ty,
                if four { "four-row" } else { "one-row" },
                stream[0],
                stream[1],
                stream[2]
            );
        }
    }
}
