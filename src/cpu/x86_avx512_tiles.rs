//! AVX-512 VNNI prefill tiles: the batched matrix product of a prompt (many tokens), for
//! Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 IQ4_NL and, block by sub-block, Q4_K Q5_K Q6_K IQ4_XS.
//!
//! One 512-bit accumulator holds a whole 4-row × 4-token tile: lane `4r + t` is the dot
//! product of weight row `r` with token `t`. For each block, eight `vpdpbusd` (one per group
//! of 4 elements) multiply
//! - the weight side, row `r`'s 4 quants of group `g` as unsigned bytes `q + c` repeated for
//!   the 4 tokens (64 bytes, decoded), with
//! - the token side, 4 tokens' 4 signed activations of group `g` (16 bytes) broadcast to all
//!   four 128-bit lanes straight from memory,
//!
//! so every instruction does 64 useful multiply-adds and the block's scales apply once per
//! 16 outputs: `acc += cvt(Σ (q+c)·a − c·Σa)·(d_w·d_a)` (+ `m_w·s_a` for the formats with a
//! min, whose nibbles need no offset). The offset term `c·Σa` belongs to the token, so it is
//! formed once per activation block, not per weight row.
//! Activations are laid out once per matrix product (4-token tiles); weights are decoded once
//! per group of 4 rows and chunk of blocks into an L1-sized buffer and reused by every token
//! tile (scales once per super-block): the weights themselves stay in the map, untouched.
//! Four token tiles share each weight load. The integer sums are ggml's exactly;
//! only float rounding order differs. Only reached through [`tiles`], which checks the CPU.

#![allow(clippy::needless_range_loop)] // the loops index several arrays by row and token

use core::arch::x86_64::*;

use super::x86_avx2::{f16_at as f16, nibbles32};
use crate::quant::GgmlType;

pub fn detected() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && super::x86_avx2::detected()
}

/// Prepared activation bytes per block of a 4-token tile: 8 groups × 16 bytes of quants, the
/// 4 scales `d_a`, the 4 block sums `s_a` (Q8_1) and the 4 offset corrections `−c·Σa` (i32).
const ACT_BLOCK: usize = 8 * 16 + 3 * 16;
/// Decoded weight bytes per block of a 4-row group: 8 groups × 64 bytes of unsigned quants,
/// then 16 lanes each of `d_w` and `m_w` (f32).
const DEC_BLOCK: usize = 8 * 64 + 2 * 64;
/// Blocks decoded at once per four-row group: two groups of 16 × 640 B = 20 KiB, under half
/// of a 48 KiB L1d.
const CHUNK_BLOCKS: usize = 16;
/// Token tiles whose accumulators stay live across chunks (512 tokens).
const MAX_TILES: usize = 128;

/// The activation format a weight format is paired with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Partner {
    Q8_0,
    Q8_1,
    /// Q8_K, read in chunks of the tile block's length (`s` from the 16-element `bsums`).
    Q8K,
}

/// One weight format as the tiles see it: blocks of `ELEMS` (32, or 16 for Q6_K's scale
/// groups) with one scale `d` (and min `m`: `d·q + m`), stored in units of `UNIT_ELEMS`
/// elements / `UNIT_BYTES` bytes. `quants(row, b)` gives block `b`'s quants as the unsigned
/// bytes `q + OFFSET` (the first `ELEMS` of 32) — `vpdpbusd`'s unsigned operand, so the
/// activations stay signed and the offset is undone per token (`−OFFSET·Σa`), not per row;
/// `scales(row, u, d, m)` gives the scale and min of every block of unit `u`.
trait LaneFormat {
    const PARTNER: Partner;
    const ELEMS: usize = 32;
    const MIN: bool;
    const OFFSET: i32;
    const UNIT_ELEMS: usize = 32;
    const UNIT_BYTES: usize;
    unsafe fn quants(row: *const u8, b: usize) -> __m256i;
    unsafe fn scales(row: *const u8, u: usize, d: &mut [f32; 16], m: &mut [f32; 16]);
}

/// Blocks per storage unit of `F` (1, 8 or 16).
const fn blocks_per_unit<F: LaneFormat>() -> usize {
    F::UNIT_ELEMS / F::ELEMS
}

/// The IQ4_NL (and IQ4_XS) levels plus 128, as unsigned bytes, in both 128-bit lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn iq4_levels_u8() -> __m256i {
    let t = _mm_setr_epi8(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
    let t = _mm_xor_si128(t, _mm_set1_epi8(-128));
    _mm256_set_m128i(t, t)
}

/// Bit `j` of the u32 at `p` as bit 4 of byte `j` (the fifth bit of Q5_0/Q5_1 quants).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn fifth_bits32(p: *const u8) -> __m256i {
    let bits = unsafe { p.cast::<u32>().read_unaligned() };
    _mm256_maskz_set1_epi8(bits, 0x10)
}

macro_rules! block32 {
    ($name:ident, $bytes:expr, $offset:expr, $min:expr, |$x:ident| $quants:expr, ($d:expr, $m:expr)) => {
        #[allow(non_camel_case_types)] // ggml's names
        struct $name;
        impl LaneFormat for $name {
            const PARTNER: Partner = if $min { Partner::Q8_1 } else { Partner::Q8_0 };
            const MIN: bool = $min;
            const OFFSET: i32 = $offset;
            const UNIT_BYTES: usize = $bytes;
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn quants(row: *const u8, b: usize) -> __m256i {
                let $x = unsafe { row.add(b * $bytes) };
                unsafe { $quants }
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn scales(row: *const u8, b: usize, d: &mut [f32; 16], m: &mut [f32; 16]) {
                let $x = unsafe { row.add(b * $bytes) };
                (d[0], m[0]) = unsafe { ($d, $m) };
            }
        }
    };
}

block32!(Q4_0, 18, 8, false, |x| nibbles32(x.add(2)), (f16(x), 0.0));
block32!(Q5_0, 22, 16, false, |x| _mm256_or_si256(nibbles32(x.add(6)), fifth_bits32(x.add(2))), (f16(x), 0.0));
block32!(
    Q8_0,
    34,
    128,
    false,
    |x| _mm256_xor_si256(_mm256_loadu_si256(x.add(2).cast()), _mm256_set1_epi8(-128)),
    (f16(x), 0.0)
);
block32!(IQ4_NL, 18, 128, false, |x| _mm256_shuffle_epi8(iq4_levels_u8(), nibbles32(x.add(2))), (f16(x), 0.0));
block32!(Q4_1, 20, 0, true, |x| nibbles32(x.add(4)), (f16(x), f16(x.add(2))));
block32!(Q5_1, 24, 0, true, |x| _mm256_or_si256(nibbles32(x.add(8)), fifth_bits32(x.add(4))), (f16(x), f16(x.add(2))));

// Super-block formats: a tile block is one sub-block (its scale `d·sc`, its min `−dmin·m`).

/// Q4_K and Q5_K sub-block `j` of the super-block at `x` (`HIGH`: the fifth bit from `qh`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn k4_quants<const HIGH: bool>(x: *const u8, j: usize) -> __m256i {
    let qs = unsafe { x.add(if HIGH { 48 } else { 16 } + 32 * (j / 2)) };
    let bits = unsafe { _mm256_loadu_si256(qs.cast()) };
    // Even sub-blocks are the low nibbles of their 32 bytes, odd ones the high nibbles.
    let shifted = if j.is_multiple_of(2) { bits } else { _mm256_srli_epi16(bits, 4) };
    let q = _mm256_and_si256(shifted, _mm256_set1_epi8(0x0f));
    if !HIGH {
        return q;
    }
    let qh = unsafe { _mm256_loadu_si256(x.add(16).cast()) };
    let hb = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(j as i32)), _mm256_set1_epi8(1));
    _mm256_or_si256(q, _mm256_slli_epi16(hb, 4))
}

/// Q4_K and Q5_K: the 8 sub-blocks' `d·sc` and `−dmin·m` of the super-block at `x`.
unsafe fn k4_scales(x: *const u8, d: &mut [f32; 16], m: &mut [f32; 16]) {
    let sc = unsafe { &*x.add(4).cast::<[u8; 12]>() };
    let (dd, dmin) = unsafe { (f16(x), f16(x.add(2))) };
    for j in 0..8 {
        let (s, mm) = crate::quant::scale_min_k4(j, sc);
        (d[j], m[j]) = (dd * s as f32, -dmin * mm as f32);
    }
}

macro_rules! k_format {
    ($name:ident, $bytes:expr, $elems:expr, $offset:expr, $min:expr,
     |$x:ident, $j:ident| $quants:expr, |$sx:ident, $d:ident, $m:ident| $scales:expr) => {
        struct $name;
        impl LaneFormat for $name {
            const PARTNER: Partner = Partner::Q8K;
            const ELEMS: usize = $elems;
            const MIN: bool = $min;
            const OFFSET: i32 = $offset;
            const UNIT_ELEMS: usize = 256;
            const UNIT_BYTES: usize = $bytes;
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn quants(row: *const u8, b: usize) -> __m256i {
                let per = 256 / $elems;
                let ($x, $j) = (unsafe { row.add((b / per) * $bytes) }, b % per);
                unsafe { $quants }
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn scales(row: *const u8, u: usize, $d: &mut [f32; 16], $m: &mut [f32; 16]) {
                let $sx = unsafe { row.add(u * $bytes) };
                unsafe { $scales }
            }
        }
    };
}

k_format!(Q4K, 144, 32, 0, true, |x, j| k4_quants::<false>(x, j), |x, d, m| k4_scales(x, d, m));
k_format!(Q5K, 176, 32, 0, true, |x, j| k4_quants::<true>(x, j), |x, d, m| k4_scales(x, d, m));
// Q6_K: 16-element groups (one i8 scale each), quants q − 32 stored as q.
k_format!(
    Q6K,
    210,
    16,
    32,
    false,
    |x, g| {
        // Element e = 16g + l (l < 16) of the super-block: half h = e / 128, within it e' = e % 128,
        // k = e' / 32: nibble k/2 of ql[64h + e' % 64], bits 2k..2k+2 of qh[32h + e' % 32].
        let (h, e) = (g / 8, (16 * g) % 128);
        let k = e / 32;
        let ql = _mm_loadu_si128(x.add(64 * h + e % 64).cast());
        let qh = _mm_loadu_si128(x.add(128 + 32 * h + e % 32).cast());
        let low = if k < 2 { ql } else { _mm_srli_epi16(ql, 4) };
        let low = _mm_and_si128(low, _mm_set1_epi8(0x0f));
        let high = _mm_and_si128(_mm_srl_epi16(qh, _mm_cvtsi32_si128(2 * k as i32)), _mm_set1_epi8(3));
        _mm256_zextsi128_si256(_mm_or_si128(low, _mm_slli_epi16(high, 4)))
    },
    |x, d, _m| {
        let dd = f16(x.add(208));
        for g in 0..16 {
            d[g] = dd * *x.add(192 + g) as i8 as f32;
        }
    }
);
// IQ4_XS: non-linear levels, a 6-bit scale per 32.
k_format!(
    IQ4XS,
    136,
    32,
    128,
    false,
    |x, j| _mm256_shuffle_epi8(iq4_levels_u8(), nibbles32(x.add(8 + 16 * j))),
    |x, d, _m| {
        let dd = f16(x);
        let sh = x.add(2).cast::<u16>().read_unaligned() as u32;
        for j in 0..8 {
            let sl = *x.add(4 + j / 2) as u32;
            let ls = ((sl >> (4 * (j % 2))) & 0x0f) | (((sh >> (2 * j)) & 3) << 4);
            d[j] = dd * (ls as i32 - 32) as f32;
        }
    }
);

// ------------------------------------------------------------------------------------------
// Layouts.

/// Prepared bytes for `n_tokens` activation rows of `cols` elements (whole 4-token tiles).
fn prepared_bytes<F: LaneFormat>(cols: usize, n_tokens: usize) -> usize {
    n_tokens.div_ceil(4) * (cols / F::ELEMS) * ACT_BLOCK
}

/// Lay out 4 tokens' activation rows (`rows[t]`, None past the last token) for the tiles:
/// per block, group `g`'s 16 bytes are `[a_0 a_1 a_2 a_3]` (4 signed bytes of each token),
/// then the tokens' 4 scales, 4 block sums (`d_a·Σa`, for formats with a min) and 4 offset
/// corrections `−OFFSET·Σa`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn prepare_tile<F: LaneFormat>(rows: [Option<*const u8>; 4], nb: usize, out: *mut u8) {
    for b in 0..nb {
        let o = unsafe { out.add(b * ACT_BLOCK) };
        let mut q = [_mm256_setzero_si256(); 4];
        let (mut d, mut s, mut corr) = ([0f32; 4], [0f32; 4], [0i32; 4]);
        for (t, row) in rows.iter().enumerate() {
            let Some(row) = *row else { continue };
            match F::PARTNER {
                Partner::Q8_0 | Partner::Q8_1 => {
                    let (bytes, qs) = if F::PARTNER == Partner::Q8_1 { (36, 4) } else { (34, 2) };
                    let x = unsafe { row.add(b * bytes) };
                    q[t] = unsafe { _mm256_loadu_si256(x.add(qs).cast()) };
                    d[t] = unsafe { f16(x) };
                    if F::PARTNER == Partner::Q8_1 {
                        s[t] = unsafe { f16(x.add(2)) };
                    }
                }
                Partner::Q8K => {
                    // Chunk b of the row's Q8_K blocks (292 bytes: f32 d, 256 quants, 16 bsums).
                    let per = 256 / F::ELEMS;
                    let x = unsafe { row.add((b / per) * 292) };
                    let e0 = (b % per) * F::ELEMS;
                    let qs = unsafe { x.add(4 + e0) };
                    q[t] = if F::ELEMS == 32 {
                        unsafe { _mm256_loadu_si256(qs.cast()) }
                    } else {
                        _mm256_zextsi128_si256(unsafe { _mm_loadu_si128(qs.cast()) })
                    };
                    d[t] = unsafe { x.cast::<f32>().read_unaligned() };
                    let bsum = |g: usize| unsafe { x.add(260 + 2 * g).cast::<i16>().read_unaligned() } as i32;
                    let sum: i32 = (e0 / 16..(e0 + F::ELEMS) / 16).map(bsum).sum();
                    s[t] = d[t] * sum as f32;
                }
            }
            if F::OFFSET != 0 {
                // Σa: the sum of the biased bytes (a + 128, via psadbw) minus 32·128; bytes
                // past ELEMS are zero and bias to 128, so they cancel.
                let biased = _mm256_xor_si256(q[t], _mm256_set1_epi8(-128));
                let sad = _mm256_sad_epu8(biased, _mm256_setzero_si256());
                let s128 = _mm_add_epi64(_mm256_castsi256_si128(sad), _mm256_extracti128_si256(sad, 1));
                let sum = _mm_cvtsi128_si64(_mm_add_epi64(s128, _mm_unpackhi_epi64(s128, s128))) as i32 - 32 * 128;
                corr[t] = -F::OFFSET * sum;
            }
        }
        // Transpose 4 tokens × 8 dwords into 8 groups × 4 tokens.
        let t01l = _mm256_unpacklo_epi32(q[0], q[1]); // a0g0 a1g0 a0g1 a1g1 | a0g4 a1g4 a0g5 a1g5
        let t01h = _mm256_unpackhi_epi32(q[0], q[1]); // g2, g3 | g6, g7
        let t23l = _mm256_unpacklo_epi32(q[2], q[3]);
        let t23h = _mm256_unpackhi_epi32(q[2], q[3]);
        let g04 = _mm256_unpacklo_epi64(t01l, t23l); // [g0 | g4]
        let g15 = _mm256_unpackhi_epi64(t01l, t23l); // [g1 | g5]
        let g26 = _mm256_unpacklo_epi64(t01h, t23h); // [g2 | g6]
        let g37 = _mm256_unpackhi_epi64(t01h, t23h); // [g3 | g7]
        unsafe {
            _mm256_storeu_si256(o.cast(), _mm256_permute2x128_si256(g04, g15, 0x20)); // g0 g1
            _mm256_storeu_si256(o.add(32).cast(), _mm256_permute2x128_si256(g26, g37, 0x20)); // g2 g3
            _mm256_storeu_si256(o.add(64).cast(), _mm256_permute2x128_si256(g04, g15, 0x31)); // g4 g5
            _mm256_storeu_si256(o.add(96).cast(), _mm256_permute2x128_si256(g26, g37, 0x31)); // g6 g7
            _mm_storeu_ps(o.add(128).cast(), _mm_loadu_ps(d.as_ptr()));
            _mm_storeu_ps(o.add(144).cast(), _mm_loadu_ps(s.as_ptr()));
            _mm_storeu_si128(o.add(160).cast(), _mm_loadu_si128(corr.as_ptr().cast()));
        }
    }
}

/// Lane 4r + t of group g takes dword 8r + g of [row0 row1 | row2 row3].
const GROUP_LANES: [[i32; 16]; 8] = {
    let mut t = [[0i32; 16]; 8];
    let mut g = 0;
    while g < 8 {
        let mut l = 0;
        while l < 16 {
            t[g][l] = (8 * (l / 4) + g) as i32;
            l += 1;
        }
        g += 1;
    }
    t
};

/// Lane `l` takes value `l / 4`: a row's scalar spread over its 4 token lanes.
const ROW_LANES: [i32; 16] = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3];

/// Decode blocks `b0..b0 + n` of 4 rows (`rows[r]`, None past the last row) for the tiles:
/// per block, group `g`'s 64 bytes hold row `r`'s 4 unsigned quants in lanes `4r..4r+4` (once
/// per token), then `d_w` and `m_w` per lane. `b0` is a multiple of the blocks per unit, so
/// each row's scales are decoded once per unit.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn decode_rows<F: LaneFormat>(rows: [Option<*const u8>; 4], b0: usize, n: usize, out: *mut u8) {
    let per = blocks_per_unit::<F>();
    let row_lanes = unsafe { _mm512_loadu_si512(ROW_LANES.as_ptr().cast()) };
    let (mut d, mut m) = ([[0f32; 16]; 4], [[0f32; 16]; 4]);
    for b in 0..n {
        let (unit, k) = ((b0 + b) / per, (b0 + b) % per);
        let o = unsafe { out.add(b * DEC_BLOCK) };
        let mut q = [_mm256_setzero_si256(); 4];
        for (r, row) in rows.iter().enumerate() {
            let Some(row) = *row else { continue };
            if k == 0 {
                unsafe { F::scales(row, unit, &mut d[r], &mut m[r]) };
            }
            q[r] = unsafe { F::quants(row, b0 + b) };
        }
        let lo = _mm512_inserti64x4(_mm512_castsi256_si512(q[0]), q[1], 1);
        let hi = _mm512_inserti64x4(_mm512_castsi256_si512(q[2]), q[3], 1);
        for (g, lanes) in GROUP_LANES.iter().enumerate().take(F::ELEMS / 4) {
            let ix = unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) };
            unsafe { _mm512_storeu_si512(o.add(64 * g).cast(), _mm512_permutex2var_epi32(lo, ix, hi)) };
        }
        let spread =
            |v: [f32; 4]| _mm512_permutexvar_ps(row_lanes, _mm512_castps128_ps512(_mm_setr_ps(v[0], v[1], v[2], v[3])));
        unsafe {
            _mm512_storeu_ps(o.add(512).cast(), spread([d[0][k], d[1][k], d[2][k], d[3][k]]));
            if F::MIN {
                _mm512_storeu_ps(o.add(576).cast(), spread([m[0][k], m[1][k], m[2][k], m[3][k]]));
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// The micro-kernel and the loop nest.

/// `acc[g][i] += Σ over blocks` of decoded 4-row group `g` × prepared token tile `i`, for
/// `R` ≤ 2 groups and `NT` ≤ 4 tiles `tstride` bytes apart: each weight load serves every
/// tile and each activation load every group (`R·NT` independent sums). `CORR`: the weights
/// carry an offset, undone by the tiles' per-token corrections.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn micro<const R: usize, const NT: usize, const MIN: bool, const CORR: bool, const G: usize>(
    nb: usize,
    dec: [*const u8; R],
    act: *const u8,
    tstride: usize,
    acc: &mut [[__m512; NT]; R],
) {
    for b in 0..nb {
        let w = |g: usize| unsafe { dec[g].add(b * DEC_BLOCK) };
        let y = |i: usize| unsafe { act.add(i * tstride + b * ACT_BLOCK) };
        let mut start = [_mm512_setzero_si512(); NT];
        if CORR {
            for i in 0..NT {
                start[i] = unsafe { _mm512_broadcast_i32x4(_mm_loadu_si128(y(i).add(160).cast())) };
            }
        }
        let mut sum = [start; R];
        for k in 0..G {
            let wk: [__m512i; R] = std::array::from_fn(|g| unsafe { _mm512_loadu_si512(w(g).add(64 * k).cast()) });
            for i in 0..NT {
                let a = unsafe { _mm512_broadcast_i32x4(_mm_loadu_si128(y(i).add(16 * k).cast())) };
                for g in 0..R {
                    sum[g][i] = _mm512_dpbusd_epi32(sum[g][i], wk[g], a);
                }
            }
        }
        for i in 0..NT {
            let da = unsafe { _mm512_broadcast_f32x4(_mm_loadu_ps(y(i).add(128).cast())) };
            let sa = if MIN { unsafe { _mm512_broadcast_f32x4(_mm_loadu_ps(y(i).add(144).cast())) } } else { da };
            for g in 0..R {
                let dw = unsafe { _mm512_loadu_ps(w(g).add(512).cast()) };
                acc[g][i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[g][i]), _mm512_mul_ps(dw, da), acc[g][i]);
                if MIN {
                    let mw = unsafe { _mm512_loadu_ps(w(g).add(576).cast()) };
                    acc[g][i] = _mm512_fmadd_ps(mw, sa, acc[g][i]);
                }
            }
        }
    }
}

/// `micro` for `F`'s min flag, offset and block length.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn run_micro<F: LaneFormat, const R: usize, const NT: usize>(
    nb: usize,
    dec: [*const u8; R],
    act: *const u8,
    tstride: usize,
    acc: &mut [[__m512; NT]; R],
) {
    match (F::MIN, F::OFFSET != 0, F::ELEMS) {
        (true, false, 32) => unsafe { micro::<R, NT, true, false, 8>(nb, dec, act, tstride, acc) },
        (false, true, 32) => unsafe { micro::<R, NT, false, true, 8>(nb, dec, act, tstride, acc) },
        (false, true, _) => unsafe { micro::<R, NT, false, true, 4>(nb, dec, act, tstride, acc) },
        (_, _, 32) => unsafe { micro::<R, NT, true, true, 8>(nb, dec, act, tstride, acc) },
        _ => unsafe { micro::<R, NT, true, true, 4>(nb, dec, act, tstride, acc) },
    }
}

/// Token tiles `0..tiles` of one chunk for `R` decoded groups: `acc[g][i]` accumulates group
/// `g` × tile `i`, four tiles at a time, then two, then one.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn chunk_tiles<F: LaneFormat, const R: usize>(
    n: usize,
    dec: [*const u8; R],
    a0: *const u8,
    tstride: usize,
    tiles: usize,
    acc: &mut [[__m512; MAX_TILES]; R],
) {
    let mut i = 0;
    while i + 4 <= tiles {
        unsafe { tiles_at::<F, R, 4>(n, dec, a0, tstride, i, acc) };
        i += 4;
    }
    if i + 2 <= tiles {
        unsafe { tiles_at::<F, R, 2>(n, dec, a0, tstride, i, acc) };
        i += 2;
    }
    if i < tiles {
        unsafe { tiles_at::<F, R, 1>(n, dec, a0, tstride, i, acc) };
    }
}

/// Tiles `i..i + NT` of [`chunk_tiles`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tiles_at<F: LaneFormat, const R: usize, const NT: usize>(
    n: usize,
    dec: [*const u8; R],
    a0: *const u8,
    tstride: usize,
    i: usize,
    acc: &mut [[__m512; MAX_TILES]; R],
) {
    let mut part: [[__m512; NT]; R] = std::array::from_fn(|g| std::array::from_fn(|j| acc[g][i + j]));
    unsafe { run_micro::<F, R, NT>(n, dec, a0.add(i * tstride), tstride, &mut part) };
    for g in 0..R {
        acc[g][i..i + NT].copy_from_slice(&part[g]);
    }
}

/// Rows `rows` of `w` (`row_bytes` apart, `cols` wide) times every prepared token tile,
/// written to `out[t * ostride + r]`: eight rows at a time (two decoded groups), the rest
/// four at a time.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_tokens<F: LaneFormat>(
    w: *const u8,
    row_bytes: usize,
    cols: usize,
    rows: std::ops::Range<usize>,
    act: *const u8,
    n_tokens: usize,
    out: *mut f32,
    ostride: usize,
) {
    let mut r0 = rows.start;
    while r0 < rows.end {
        let m = Matrix { w, row_bytes, cols, act, n_tokens, out, ostride };
        if rows.end - r0 >= 8 {
            unsafe { row_groups::<F, 2>(&m, r0, 8) };
            r0 += 8;
        } else {
            let nr = (rows.end - r0).min(4);
            unsafe { row_groups::<F, 1>(&m, r0, nr) };
            r0 += nr;
        }
    }
}

/// The operands of [`rows_tokens`].
struct Matrix {
    w: *const u8,
    row_bytes: usize,
    cols: usize,
    act: *const u8,
    n_tokens: usize,
    out: *mut f32,
    ostride: usize,
}

/// Rows `r0..r0 + nr` (`nr` ≤ 4·R) as `R` four-row groups, times every token tile.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn row_groups<F: LaneFormat, const R: usize>(m: &Matrix, r0: usize, nr: usize) {
    let nb = m.cols / F::ELEMS;
    let tstride = nb * ACT_BLOCK;
    let n_tiles = m.n_tokens.div_ceil(4);
    // Stack scratch, not zeroed: decoded blocks are written before they are read, and each
    // tile's accumulator is set on the first chunk.
    let mut dec = std::mem::MaybeUninit::<[[u8; CHUNK_BLOCKS * DEC_BLOCK]; R]>::uninit();
    let dec: [*mut u8; R] =
        std::array::from_fn(|g| unsafe { dec.as_mut_ptr().cast::<u8>().add(g * CHUNK_BLOCKS * DEC_BLOCK) });
    let mut acc = [[_mm512_setzero_ps(); MAX_TILES]; R];
    let row_ptrs: [[Option<*const u8>; 4]; R] = std::array::from_fn(|g| {
        std::array::from_fn(|r| (4 * g + r < nr).then(|| unsafe { m.w.add((r0 + 4 * g + r) * m.row_bytes) }))
    });
    for tile0 in (0..n_tiles).step_by(MAX_TILES) {
        let tiles = (n_tiles - tile0).min(MAX_TILES);
        for a in acc.iter_mut() {
            a[..tiles].fill(_mm512_setzero_ps());
        }
        for b0 in (0..nb).step_by(CHUNK_BLOCKS) {
            let n = (nb - b0).min(CHUNK_BLOCKS);
            for g in 0..R {
                unsafe { decode_rows::<F>(row_ptrs[g], b0, n, dec[g]) };
            }
            let a0 = unsafe { m.act.add(tile0 * tstride + b0 * ACT_BLOCK) };
            unsafe { chunk_tiles::<F, R>(n, dec.map(|d| d.cast_const()), a0, tstride, tiles, &mut acc) };
        }
        for g in 0..R {
            for i in 0..tiles {
                let mut lanes = [0f32; 16];
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc[g][i]) };
                let t0 = 4 * (tile0 + i);
                for t in 0..(m.n_tokens - t0).min(4) {
                    for r in 0..nr.saturating_sub(4 * g).min(4) {
                        unsafe { *m.out.add((t0 + t) * m.ostride + r0 + 4 * g + r) = lanes[4 * r + t] };
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Safe entry points and the table.

fn prepare<F: LaneFormat>(q8: &[u8], act_bytes: usize, n_tokens: usize, cols: usize, out: &mut [u8]) {
    let nb = cols / F::ELEMS;
    let partner_bytes = match F::PARTNER {
        Partner::Q8_0 => cols / 32 * 34,
        Partner::Q8_1 => cols / 32 * 36,
        Partner::Q8K => cols / 256 * 292,
    };
    assert!(cols.is_multiple_of(F::UNIT_ELEMS) && act_bytes >= partner_bytes);
    assert!(q8.len() >= n_tokens * act_bytes && out.len() >= prepared_bytes::<F>(cols, n_tokens));
    for tile in 0..n_tokens.div_ceil(4) {
        let rows = std::array::from_fn(|t| {
            let tok = 4 * tile + t;
            (tok < n_tokens).then(|| unsafe { q8.as_ptr().add(tok * act_bytes) })
        });
        // SAFETY: CPU features checked before the table was built; lengths checked above.
        unsafe { prepare_tile::<F>(rows, nb, out.as_mut_ptr().add(tile * nb * ACT_BLOCK)) };
    }
}

/// # Safety
/// As [`super::kernels::TileRowsFn`].
#[allow(clippy::too_many_arguments)]
unsafe fn rows_tokens_entry<F: LaneFormat>(
    w: &[u8],
    row_bytes: usize,
    cols: usize,
    rows: std::ops::Range<usize>,
    prepared: &[u8],
    n_tokens: usize,
    out: *mut f32,
    ostride: usize,
) {
    assert!(cols.is_multiple_of(F::UNIT_ELEMS) && row_bytes == cols / F::UNIT_ELEMS * F::UNIT_BYTES);
    assert!(rows.end * row_bytes <= w.len() && prepared.len() >= prepared_bytes::<F>(cols, n_tokens));
    // SAFETY: CPU features checked before the table was built; input lengths checked above;
    // the caller owns the outputs.
    unsafe { rows_tokens::<F>(w.as_ptr(), row_bytes, cols, rows, prepared.as_ptr(), n_tokens, out, ostride) }
}

fn tiles_of<F: LaneFormat>() -> super::kernels::Tiles {
    super::kernels::Tiles {
        prepared_bytes: prepared_bytes::<F>,
        prepare: prepare::<F>,
        rows_tokens: rows_tokens_entry::<F>,
    }
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
