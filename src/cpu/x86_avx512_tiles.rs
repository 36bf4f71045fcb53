//! AVX-512 VNNI prefill tiles: the batched matrix product of a prompt (many tokens) on 512-bit
//! vectors, 4 weight rows × 4 tokens per step with the 16 accumulators in registers.
//!
//! Every weight format is reduced to one shape first, so a single micro-kernel serves them all:
//! a run of 64 weights ("pair": two 32-element blocks, or a quarter of a K-quant super-block)
//! becomes 64 *unsigned* bytes `u` for `vpdpbusd`, a scale per 4-weight lane `dw`, and, for
//! formats with a real-valued min or offset, a per-lane `mw`:
//!
//! `dot = Σ_lanes dw·da·(Σ4 u·a + c) + mw·s`
//!
//! where the activation side is prepared once per matrix product from the exact ggml
//! activation blocks (Q8_0 / Q8_1 / Q8_K): quants `a`, their scale `da` per lane, and either an
//! integer correction `c = −2^k·Σ4 a` (formats whose quants are `u − 2^k`: Q4_0 Q5_0 Q8_0
//! IQ4_NL) or `s = da·Σa / lanes` (formats with a min: Q4_1 Q5_1 and the K-quants, whose
//! mins/offsets `mw` then multiply the activations' block sums). The integer sums are ggml's
//! exactly; only float rounding order differs.
//!
//! Weights are decoded into that shape once per group of 4 rows and column chunk (into an
//! L1-sized buffer on the stack) and reused by every token tile: the weights stay in the map
//! untouched (no repacked copy), yet each block is unpacked once per 64 tokens, not once per
//! token tile. Only reached through [`table`], which checks the CPU first.

#![allow(clippy::needless_range_loop)] // the tile loops index several arrays by row and token

use core::arch::x86_64::*;

use crate::quant::GgmlType;

/// Elements per run (one 512-bit vector of bytes).
const RUN: usize = 64;
/// Prepared activation bytes per run: `a` (64 i8) | `da` (16 f32) | `c` (16 i32) or `s` (16 f32).
const ACT_RUN: usize = 192;
/// Decoded weight bytes per run: `u` (64 u8) | `dw` (16 f32) | `mw` (16 f32).
const DEC_RUN: usize = 192;
/// Runs decoded at once per row: 4 rows × 32 runs × 192 B = 24 KiB, half of a 48 KiB L1d.
const CHUNK_RUNS: usize = 32;
/// Tokens per pass over a decoded chunk (the accumulators of 16 tiles live on the stack).
const TOKEN_BLOCK: usize = 64;

pub fn detected() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && super::x86_avx2::detected()
}

/// The prepared-activation layout a format's tiles read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ActPrep {
    /// From Q8_0 with `c = −2^shift·Σ4 a` (quants stored as `u = q + 2^shift`).
    Q8_0Offset(u32),
    /// From Q8_1 with `s = s_block / 8` per lane.
    Q8_1Sum,
    /// From Q8_K with `s = d·bsum16 / 4` per lane.
    Q8KSum,
}

/// One weight format as the tiles see it.
trait TileFormat {
    const PREP: ActPrep;
    /// Float min/offset term present (`mw`).
    const MIN: bool;
    /// Weight bytes per decoding unit and runs per unit (a block pair, or a super-block).
    const UNIT_BYTES: usize;
    const UNIT_RUNS: usize;
    /// Decode unit `i` of a row (`units` whole units plus, for 32-element formats, possibly
    /// one trailing half: `half_tail` means the unit's second block is absent) into
    /// `UNIT_RUNS × DEC_RUN` bytes at `out`.
    unsafe fn decode(x: *const u8, half_tail: bool, out: *mut u8);
}

// ------------------------------------------------------------------------------------------
// Small helpers.

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn f16(p: *const u8) -> f32 {
    let bits = unsafe { p.cast::<u16>().read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// 16 lanes: `a` in the first 8, `b` in the last 8.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn halves(a: f32, b: f32) -> __m512 {
    _mm512_castpd_ps(_mm512_insertf64x4(
        _mm512_castps_pd(_mm512_castps256_ps512(_mm256_set1_ps(a))),
        _mm256_castps_pd(_mm256_set1_ps(b)),
        1,
    ))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn store_run(out: *mut u8, u: __m512i, dw: __m512, mw: __m512) {
    unsafe {
        _mm512_storeu_si512(out.cast(), u);
        _mm512_storeu_ps(out.add(64).cast(), dw);
        _mm512_storeu_ps(out.add(128).cast(), mw);
    }
}

/// 16 bytes of nibbles → 32 bytes: low nibbles first (elements 0..16), then high (16..32).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn nibbles32(p: *const u8) -> __m256i {
    let t = unsafe { _mm_loadu_si128(p.cast()) };
    _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0f))
}

/// 32 bytes of nibbles → 64: low nibbles first (elements 0..32), then high (32..64).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn nibbles64(p: *const u8) -> __m512i {
    let t = unsafe { _mm256_loadu_si256(p.cast()) };
    _mm512_and_si512(join(t, _mm256_srli_epi16(t, 4)), _mm512_set1_epi8(0x0f))
}

/// Bit `j` of the u32 at `p` as bit 4 of byte `j` (the fifth bit of Q5_0/Q5_1 quants).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn fifth_bits32(p: *const u8) -> __m256i {
    let bits = unsafe { p.cast::<u32>().read_unaligned() };
    _mm256_maskz_set1_epi8(bits, 0x10)
}

/// The IQ4 levels + 128, in all four 128-bit lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn iq4_levels_biased() -> __m512i {
    let t = _mm_setr_epi8(1, 24, 45, 63, 79, 93, 106, 118, -127, -115, -103, -90, -75, -59, -39, -15);
    _mm512_broadcast_i32x4(t)
}

// ------------------------------------------------------------------------------------------
// 32-element formats: a unit is a pair of blocks.

/// Writes one run from two blocks (`b` absent when `half_tail`): quants via `quants`, scales
/// (and mins) via `dm`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn pair_run(
    x: *const u8,
    bytes: usize,
    half_tail: bool,
    quants: impl Fn(*const u8) -> __m256i,
    dm: impl Fn(*const u8) -> (f32, f32),
    out: *mut u8,
) {
    let (qa, (da, ma)) = (quants(x), dm(x));
    let (qb, (db, mb)) = if half_tail {
        (_mm256_setzero_si256(), (0.0, 0.0))
    } else {
        let y = unsafe { x.add(bytes) };
        (quants(y), dm(y))
    };
    unsafe { store_run(out, join(qa, qb), halves(da, db), halves(ma, mb)) };
}

macro_rules! block32_format {
    ($name:ident, $prep:expr, $min:expr, $bytes:expr, |$x:ident| $quants:expr, |$y:ident| $dm:expr) => {
        #[allow(non_camel_case_types)] // ggml's names
        struct $name;
        impl TileFormat for $name {
            const PREP: ActPrep = $prep;
            const MIN: bool = $min;
            const UNIT_BYTES: usize = 2 * $bytes;
            const UNIT_RUNS: usize = 1;
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn decode(x: *const u8, half_tail: bool, out: *mut u8) {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
                fn quants($x: *const u8) -> __m256i {
                    unsafe { $quants }
                }
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
                fn dm($y: *const u8) -> (f32, f32) {
                    unsafe { $dm }
                }
                unsafe { pair_run(x, $bytes, half_tail, |p| quants(p), |p| dm(p), out) }
            }
        }
    };
}

// Quants `u = q + 8` are the raw nibbles.
block32_format!(Q4_0, ActPrep::Q8_0Offset(3), false, 18, |x| nibbles32(x.add(2)), |x| (f16(x), 0.0));
// `u = q + 16`: nibble | fifth bit.
block32_format!(
    Q5_0,
    ActPrep::Q8_0Offset(4),
    false,
    22,
    |x| _mm256_or_si256(nibbles32(x.add(6)), fifth_bits32(x.add(2))),
    |x| (f16(x), 0.0)
);
// `u = q + 128`.
block32_format!(
    Q8_0,
    ActPrep::Q8_0Offset(7),
    false,
    34,
    |x| _mm256_xor_si256(_mm256_loadu_si256(x.add(2).cast()), _mm256_set1_epi8(-128)),
    |x| (f16(x), 0.0)
);
// `u = level + 128`.
block32_format!(
    IQ4_NL,
    ActPrep::Q8_0Offset(7),
    false,
    18,
    |x| _mm256_shuffle_epi8(_mm512_castsi512_si256(iq4_levels_biased()), nibbles32(x.add(2))),
    |x| (f16(x), 0.0)
);
// Unsigned quants with a min: `d·q + m`.
block32_format!(Q4_1, ActPrep::Q8_1Sum, true, 20, |x| nibbles32(x.add(4)), |x| (f16(x), f16(x.add(2))));
block32_format!(
    Q5_1,
    ActPrep::Q8_1Sum,
    true,
    24,
    |x| _mm256_or_si256(nibbles32(x.add(8)), fifth_bits32(x.add(4))),
    |x| (f16(x), f16(x.add(2)))
);

// ------------------------------------------------------------------------------------------
// K-quants and IQ4_XS: a unit is a 256-element super-block, four runs.

/// Scale and min of sub-block `j` from Q4_K/Q5_K's 12 packed 6-bit values.
#[inline]
unsafe fn scale_min_k4(j: usize, q: *const u8) -> (f32, f32) {
    let q = unsafe { &*q.cast::<[u8; 12]>() };
    let (sc, m) = crate::quant::scale_min_k4(j, q);
    (sc as f32, m as f32)
}

/// Per-lane values for a run of two 32-element sub-blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn sub_pair(a: f32, b: f32) -> __m512 {
    halves(a, b)
}

/// Q4_K and Q5_K (`HIGH`: the fifth bit from `qh`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn decode_k4<const HIGH: bool>(x: *const u8, out: *mut u8) {
    let qs_off = if HIGH { 48 } else { 16 };
    let (d, dmin) = unsafe { (f16(x), f16(x.add(2))) };
    let qh = if HIGH { unsafe { _mm256_loadu_si256(x.add(16).cast()) } } else { _mm256_setzero_si256() };
    for j in 0..4 {
        let mut u = unsafe { nibbles64(x.add(qs_off + 32 * j)) };
        if HIGH {
            // Bit 2j of qh[l] for the first sub-block, 2j + 1 for the second, to bit 4.
            let one = _mm256_set1_epi8(1);
            let lo = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j as i32)), one);
            let hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j as i32 + 1)), one);
            u = _mm512_or_si512(u, _mm512_slli_epi16(join(lo, hi), 4));
        }
        let (s0, m0) = unsafe { scale_min_k4(2 * j, x.add(4)) };
        let (s1, m1) = unsafe { scale_min_k4(2 * j + 1, x.add(4)) };
        unsafe { store_run(out.add(j * DEC_RUN), u, sub_pair(d * s0, d * s1), sub_pair(-dmin * m0, -dmin * m1)) };
    }
}

struct Q4K;
impl TileFormat for Q4K {
    const PREP: ActPrep = ActPrep::Q8KSum;
    const MIN: bool = true;
    const UNIT_BYTES: usize = 144;
    const UNIT_RUNS: usize = 4;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn decode(x: *const u8, _: bool, out: *mut u8) {
        unsafe { decode_k4::<false>(x, out) }
    }
}

struct Q5K;
impl TileFormat for Q5K {
    const PREP: ActPrep = ActPrep::Q8KSum;
    const MIN: bool = true;
    const UNIT_BYTES: usize = 176;
    const UNIT_RUNS: usize = 4;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn decode(x: *const u8, _: bool, out: *mut u8) {
        unsafe { decode_k4::<true>(x, out) }
    }
}

/// Q6_K: `u` = the 6-bit quant (0..63), scale per 16 elements, offset −32 as the min term.
struct Q6K;
impl TileFormat for Q6K {
    const PREP: ActPrep = ActPrep::Q8KSum;
    const MIN: bool = true;
    const UNIT_BYTES: usize = 210;
    const UNIT_RUNS: usize = 4;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn decode(x: *const u8, _: bool, out: *mut u8) {
        let d = unsafe { f16(x.add(208)) };
        let sc = unsafe { &*x.add(192).cast::<[i8; 16]>() };
        let m4 = _mm256_set1_epi8(0x0f);
        let m3 = _mm256_set1_epi8(0x03);
        for half in 0..2 {
            let ql = unsafe { x.add(64 * half) };
            let b1 = unsafe { _mm256_loadu_si256(ql.cast()) };
            let b2 = unsafe { _mm256_loadu_si256(ql.add(32).cast()) };
            let bh = unsafe { _mm256_loadu_si256(x.add(128 + 32 * half).cast()) };
            // Element 32k + l of this half: nibble k/2 of ql[l + 32(k%2)], bits 2k..2k+2 of qh[l].
            let q = |k: usize| {
                let b = if k % 2 == 0 { b1 } else { b2 };
                let low = if k < 2 { b } else { _mm256_srli_epi16(b, 4) };
                let high = _mm256_and_si256(_mm256_srl_epi16(bh, _mm_cvtsi32_si128(2 * k as i32)), m3);
                _mm256_or_si256(_mm256_and_si256(low, m4), _mm256_slli_epi16(high, 4))
            };
            for m in 0..2 {
                let u = join(q(2 * m), q(2 * m + 1));
                // Lanes 4g..4g+4 of the run cover 16-element group 8·half + 4m + g.
                let g0 = 8 * half + 4 * m;
                let mut dw = [0f32; 16];
                for (l, v) in dw.iter_mut().enumerate() {
                    *v = d * sc[g0 + l / 4] as f32;
                }
                let dw = unsafe { _mm512_loadu_ps(dw.as_ptr()) };
                let mw = _mm512_mul_ps(dw, _mm512_set1_ps(-32.0));
                unsafe { store_run(out.add((2 * half + m) * DEC_RUN), u, dw, mw) };
            }
        }
    }
}

/// IQ4_XS: `u = level + 128`, one 6-bit scale per 32, the −128 offset as the min term.
struct IQ4XS;
impl TileFormat for IQ4XS {
    const PREP: ActPrep = ActPrep::Q8KSum;
    const MIN: bool = true;
    const UNIT_BYTES: usize = 136;
    const UNIT_RUNS: usize = 4;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn decode(x: *const u8, _: bool, out: *mut u8) {
        let d = unsafe { f16(x) };
        let sh = unsafe { x.add(2).cast::<u16>().read_unaligned() } as u32;
        let levels = _mm512_castsi512_si256(iq4_levels_biased());
        let scale = |ib: usize| {
            let sl = unsafe { *x.add(4 + ib / 2) } as u32;
            let ls = ((sl >> (4 * (ib % 2))) & 0x0f) | (((sh >> (2 * ib)) & 3) << 4);
            d * (ls as i32 - 32) as f32
        };
        for j in 0..4 {
            let q = |ib: usize| _mm256_shuffle_epi8(levels, unsafe { nibbles32(x.add(8 + 16 * ib)) });
            let u = join(q(2 * j), q(2 * j + 1));
            let (s0, s1) = (scale(2 * j), scale(2 * j + 1));
            unsafe { store_run(out.add(j * DEC_RUN), u, sub_pair(s0, s1), sub_pair(-128.0 * s0, -128.0 * s1)) };
        }
    }
}

// ------------------------------------------------------------------------------------------
// Activation preparation (once per matrix product).

/// Prepared bytes per activation row of `cols` elements.
fn prepared_row_bytes(cols: usize) -> usize {
    cols.div_ceil(RUN) * ACT_RUN
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn prepare_row(prep: ActPrep, cols: usize, src: *const u8, out: *mut u8) {
    let runs = cols.div_ceil(RUN);
    for r in 0..runs {
        let o = unsafe { out.add(r * ACT_RUN) };
        let (a, da, extra): (__m512i, __m512, __m512) = match prep {
            ActPrep::Q8_0Offset(_) | ActPrep::Q8_1Sum => {
                let (bytes, qs) = if prep == ActPrep::Q8_1Sum { (36, 4) } else { (34, 2) };
                let x = unsafe { src.add(2 * r * bytes) };
                let second = 2 * r + 1 < cols / 32;
                let y = unsafe { x.add(bytes) };
                let qa = unsafe { _mm256_loadu_si256(x.add(qs).cast()) };
                let qb = if second { unsafe { _mm256_loadu_si256(y.add(qs).cast()) } } else { _mm256_setzero_si256() };
                let a = join(qa, qb);
                let (d0, d1) = unsafe { (f16(x), if second { f16(y) } else { 0.0 }) };
                let extra = if let ActPrep::Q8_0Offset(shift) = prep {
                    let sum4 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), a);
                    let c = _mm512_sub_epi32(
                        _mm512_setzero_si512(),
                        _mm512_sll_epi32(sum4, _mm_cvtsi32_si128(shift as i32)),
                    );
                    _mm512_castsi512_ps(c)
                } else {
                    let (s0, s1) = unsafe { (f16(x.add(2)), if second { f16(y.add(2)) } else { 0.0 }) };
                    halves(s0 * 0.125, s1 * 0.125)
                };
                (a, halves(d0, d1), extra)
            }
            ActPrep::Q8KSum => {
                // Run r is quarter r % 4 of super-block r / 4 (292 bytes: d, qs[256], bsums[16]).
                let x = unsafe { src.add((r / 4) * 292) };
                let d = unsafe { x.cast::<f32>().read_unaligned() };
                let a = unsafe { _mm512_loadu_si512(x.add(4 + 64 * (r % 4)).cast()) };
                let mut s = [0f32; 16];
                for (l, v) in s.iter_mut().enumerate() {
                    let g = 4 * (r % 4) + l / 4;
                    let bsum = unsafe { x.add(260 + 2 * g).cast::<i16>().read_unaligned() };
                    *v = d * bsum as f32 * 0.25;
                }
                (a, _mm512_set1_ps(d), unsafe { _mm512_loadu_ps(s.as_ptr()) })
            }
        };
        unsafe {
            _mm512_storeu_si512(o.cast(), a);
            _mm512_storeu_ps(o.add(64).cast(), da);
            _mm512_storeu_ps(o.add(128).cast(), extra);
        }
    }
}

// ------------------------------------------------------------------------------------------
// The micro-kernel and the loop nest.

/// `acc[r][t] += Σ over `runs` of the decoded rows × prepared tokens` for R ≤ 4 rows
/// (`DEC_RUN·CHUNK_RUNS` bytes apart in `dec`) and T ≤ 4 tokens (`astride` apart in `act`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn micro<const R: usize, const T: usize, const MIN: bool, const OFFSET: bool>(
    runs: usize,
    dec: *const u8,
    act: *const u8,
    astride: usize,
    acc: &mut [[__m512; T]; R],
) {
    for p in 0..runs {
        let mut u = [_mm512_setzero_si512(); R];
        let mut dw = [_mm512_setzero_ps(); R];
        for r in 0..R {
            let x = unsafe { dec.add((r * CHUNK_RUNS + p) * DEC_RUN) };
            u[r] = unsafe { _mm512_loadu_si512(x.cast()) };
            dw[r] = unsafe { _mm512_loadu_ps(x.add(64).cast()) };
        }
        for t in 0..T {
            let y = unsafe { act.add(t * astride + p * ACT_RUN) };
            let a = unsafe { _mm512_loadu_si512(y.cast()) };
            let da = unsafe { _mm512_loadu_ps(y.add(64).cast()) };
            let extra = unsafe { _mm512_loadu_si512(y.add(128).cast()) };
            for r in 0..R {
                let c = if OFFSET { extra } else { _mm512_setzero_si512() };
                let sum = _mm512_dpbusd_epi32(c, u[r], a);
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(dw[r], da), acc[r][t]);
                if MIN {
                    let mw = unsafe { _mm512_loadu_ps(dec.add((r * CHUNK_RUNS + p) * DEC_RUN + 128).cast()) };
                    acc[r][t] = _mm512_fmadd_ps(mw, _mm512_castsi512_ps(extra), acc[r][t]);
                }
            }
        }
    }
}

/// Rows `rows` of the weight matrix `w` (`row_bytes` apart, `cols` wide) times every prepared
/// token row, written to `out[t * ostride + r]`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_tokens<F: TileFormat>(
    w: *const u8,
    row_bytes: usize,
    cols: usize,
    rows: std::ops::Range<usize>,
    act: *const u8,
    n_tokens: usize,
    out: *mut f32,
    ostride: usize,
) {
    let astride = prepared_row_bytes(cols);
    let total_runs = cols.div_ceil(RUN);
    let offset = matches!(F::PREP, ActPrep::Q8_0Offset(_));
    let mut dec = [0u8; 4 * CHUNK_RUNS * DEC_RUN];
    let mut acc = [[[_mm512_setzero_ps(); 4]; 4]; TOKEN_BLOCK / 4];
    let mut r0 = rows.start;
    while r0 < rows.end {
        let nr = (rows.end - r0).min(4);
        let mut t0 = 0;
        while t0 < n_tokens {
            let nt_block = (n_tokens - t0).min(TOKEN_BLOCK);
            for a in acc.iter_mut().take(nt_block.div_ceil(4)) {
                *a = [[_mm512_setzero_ps(); 4]; 4];
            }
            let mut run0 = 0;
            while run0 < total_runs {
                // Whole units only: a chunk boundary never splits a super-block.
                let runs = (total_runs - run0).min(CHUNK_RUNS / F::UNIT_RUNS * F::UNIT_RUNS);
                for r in 0..nr {
                    let row = unsafe { w.add((r0 + r) * row_bytes) };
                    let blocks32 = cols / 32;
                    for unit in 0..runs / F::UNIT_RUNS {
                        let ui = run0 / F::UNIT_RUNS + unit;
                        let half_tail = F::UNIT_RUNS == 1 && 2 * ui + 1 >= blocks32;
                        let o = unsafe { dec.as_mut_ptr().add((r * CHUNK_RUNS + unit * F::UNIT_RUNS) * DEC_RUN) };
                        unsafe { F::decode(row.add(ui * F::UNIT_BYTES), half_tail, o) };
                    }
                }
                let a0 = unsafe { act.add(t0 * astride + run0 * ACT_RUN) };
                for tile in 0..nt_block.div_ceil(4) {
                    let nt = (nt_block - 4 * tile).min(4);
                    let y = unsafe { a0.add(4 * tile * astride) };
                    unsafe { dispatch::<F>(nr, nt, offset, runs, dec.as_ptr(), y, astride, &mut acc[tile]) };
                }
                run0 += runs;
            }
            for tile in 0..nt_block.div_ceil(4) {
                for t in 0..(nt_block - 4 * tile).min(4) {
                    for r in 0..nr {
                        let v = _mm512_reduce_add_ps(acc[tile][r][t]);
                        unsafe { *out.add((t0 + 4 * tile + t) * ostride + r0 + r) = v };
                    }
                }
            }
            t0 += nt_block;
        }
        r0 += nr;
    }
}

/// The micro-kernel for an `nr × nt` tile: full 4 × 4 tiles are the hot case; the edges (the
/// end of a task's rows, the last tokens) go row by row and token by token.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn dispatch<F: TileFormat>(
    nr: usize,
    nt: usize,
    offset: bool,
    runs: usize,
    dec: *const u8,
    act: *const u8,
    astride: usize,
    acc: &mut [[__m512; 4]; 4],
) {
    if nr == 4 && nt == 4 {
        return unsafe { run_micro::<F, 4, 4>(offset, runs, dec, act, astride, acc, 0, 0) };
    }
    for r in 0..nr {
        for t in 0..nt {
            let (x, y) = unsafe { (dec.add(r * CHUNK_RUNS * DEC_RUN), act.add(t * astride)) };
            unsafe { run_micro::<F, 1, 1>(offset, runs, x, y, astride, acc, r, t) };
        }
    }
}

/// `micro` on the `R × T` sub-tile of `acc` at (`r0`, `t0`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_micro<F: TileFormat, const R: usize, const T: usize>(
    offset: bool,
    runs: usize,
    dec: *const u8,
    act: *const u8,
    astride: usize,
    acc: &mut [[__m512; 4]; 4],
    r0: usize,
    t0: usize,
) {
    let mut a = [[_mm512_setzero_ps(); T]; R];
    for r in 0..R {
        for t in 0..T {
            a[r][t] = acc[r0 + r][t0 + t];
        }
    }
    match (F::MIN, offset) {
        (true, _) => unsafe { micro::<R, T, true, false>(runs, dec, act, astride, &mut a) },
        (false, true) => unsafe { micro::<R, T, false, true>(runs, dec, act, astride, &mut a) },
        (false, false) => unsafe { micro::<R, T, false, false>(runs, dec, act, astride, &mut a) },
    }
    for r in 0..R {
        for t in 0..T {
            acc[r0 + r][t0 + t] = a[r][t];
        }
    }
}

// ------------------------------------------------------------------------------------------
// Safe entry points and the table.

fn prepare<F: TileFormat>(q8: &[u8], act_bytes: usize, n_tokens: usize, cols: usize, out: &mut [u8]) {
    let pb = prepared_row_bytes(cols);
    assert!(q8.len() >= n_tokens * act_bytes && out.len() >= n_tokens * pb);
    assert!(cols.is_multiple_of(32) && act_bytes >= partner_row_bytes(F::PREP, cols));
    for t in 0..n_tokens {
        // SAFETY: CPU features checked before the table was built; lengths checked above.
        unsafe { prepare_row(F::PREP, cols, q8.as_ptr().add(t * act_bytes), out.as_mut_ptr().add(t * pb)) };
    }
}

fn partner_row_bytes(prep: ActPrep, cols: usize) -> usize {
    match prep {
        ActPrep::Q8_0Offset(_) => cols / 32 * 34,
        ActPrep::Q8_1Sum => cols / 32 * 36,
        ActPrep::Q8KSum => cols / 256 * 292,
    }
}

/// # Safety
/// As [`super::kernels::TileRowsFn`].
#[allow(clippy::too_many_arguments)]
unsafe fn rows_tokens_entry<F: TileFormat>(
    w: &[u8],
    row_bytes: usize,
    cols: usize,
    rows: std::ops::Range<usize>,
    prepared: &[u8],
    n_tokens: usize,
    out: *mut f32,
    ostride: usize,
) {
    let elems_per_unit = 64 * F::UNIT_RUNS;
    let units_bytes = cols / elems_per_unit * F::UNIT_BYTES + (cols % elems_per_unit) / 32 * (F::UNIT_BYTES / 2);
    assert!(cols.is_multiple_of(if F::UNIT_RUNS == 1 { 32 } else { 256 }) && row_bytes == units_bytes);
    assert!(rows.end * row_bytes <= w.len() && prepared.len() >= n_tokens * prepared_row_bytes(cols));
    // SAFETY: CPU features checked before the table was built; input lengths checked above;
    // the caller owns the outputs.
    unsafe { rows_tokens::<F>(w.as_ptr(), row_bytes, cols, rows, prepared.as_ptr(), n_tokens, out, ostride) }
}

fn tiles_of<F: TileFormat>() -> super::kernels::Tiles {
    super::kernels::Tiles { prepared_row_bytes, prepare: prepare::<F>, rows_tokens: rows_tokens_entry::<F> }
}

/// The prefill tiles for `ty`, or None without AVX-512 VNNI or for types without tiles.
pub fn tiles(ty: GgmlType) -> Option<super::kernels::Tiles> {
    use GgmlType as T;
    if !detected() {
        return None;
    }
    Some(match ty {
        T::Q4_0 => tiles_of::<Q4_0>(),
        T::Q5_0 => tiles_of::<Q5_0>(),
        T::Q8_0 => tiles_of::<Q8_0>(),
        T::IQ4_NL => tiles_of::<IQ4_NL>(),
        T::Q4_1 => tiles_of::<Q4_1>(),
        T::Q5_1 => tiles_of::<Q5_1>(),
        T::Q4_K => tiles_of::<Q4K>(),
        T::Q5_K => tiles_of::<Q5K>(),
        T::Q6_K => tiles_of::<Q6K>(),
        T::IQ4_XS => tiles_of::<IQ4XS>(),
        _ => return None,
    })
}
