//! Four-row decode kernels (AVX-512 VNNI, on 256-bit vectors) for the 32-element formats
//! paired with Q8_0: Q4_0, Q5_0, Q8_0, IQ4_NL. A decode step is a matrix-vector product, and
//! the one-row kernels repeat the activation block's work (load, f16 scale, sign tricks) for
//! every weight row; here one pass over the activation row serves four weight rows.
//!
//! Weights are turned into unsigned bytes `u = q + 2^k` (nibbles as they are, Q8_0 and the
//! IQ4_NL levels with the sign bit flipped), which `vpdpbusd` takes directly against the signed
//! activation quants; the offset `2^k·Σ4 a` is formed once per activation block and starts each
//! row's accumulation, so a row-block costs an unpack, one `vpdpbusd`, a convert and an FMA.
//! The integer block sums equal ggml's; only the float accumulation order differs.
//!
//! Q4_K and Q6_K (256-element super-blocks paired with Q8_K) run on 512-bit vectors: one
//! `vpdpbusd` covers 64 weights (four or two sub-blocks), `vpackssdw` folds two of those
//! products into i16 per sub-block and one `vpdpwssd` applies the sub-block scales, so a
//! super-block costs one float step per row. The activation vectors are arranged once per
//! super-block for all four rows. Only reached through [`rows4`], which checks the CPU first.

use core::arch::x86_64::*;

use super::kernels::VecDotRows4;
use super::prefetch_l2_block;
use super::x86_avx2::{Q8K, Q8K_BSUMS, Q8K_QS, f16_at, hsum_f32, hsum_f32x4, k4_scales_mins};
use crate::quant::GgmlType;

pub fn detected() -> bool {
    super::x86_avx512::detected() && is_x86_feature_detected!("avx512bw")
}

const Q4_0: u8 = 0;
const Q5_0: u8 = 1;
const Q8_0: u8 = 2;
const IQ4_NL: u8 = 3;

/// An f16 at `p` (little-endian) broadcast to 8 lanes; reads 8 bytes, which every block has.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn scale(p: *const u8) -> __m256 {
    _mm256_broadcastss_ps(_mm_cvtph_ps(unsafe { _mm_loadl_epi64(p.cast()) }))
}

/// 16 bytes of nibbles → 32 bytes: low nibbles in lanes 0..16, high nibbles in 16..32 (one
/// broadcast load and a per-half shift: no cross-lane shuffle).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let t = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(p.cast()) });
    _mm256_and_si256(_mm256_srlv_epi64(t, _mm256_set_epi64x(4, 4, 0, 0)), _mm256_set1_epi8(0x0f))
}

/// The IQ4_NL (and IQ4_XS) levels plus 128, as unsigned bytes, in both 128-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn iq4_levels_u8() -> __m256i {
    let t = _mm_setr_epi8(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
    let t = _mm_xor_si128(t, _mm_set1_epi8(-128));
    _mm256_set_m128i(t, t)
}

/// Block bytes and `k` of the unsigned offset `2^k`.
const fn layout(f: u8) -> (usize, i32) {
    match f {
        Q4_0 => (18, 3),
        Q5_0 => (22, 4),
        Q8_0 => (34, 7),
        _ => (18, 7),
    }
}

/// The block at `x` as 32 unsigned bytes `q + 2^k`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unsigned<const F: u8>(x: *const u8, levels: __m256i) -> __m256i {
    unsafe {
        match F {
            Q4_0 => nibbles(x.add(2)),
            Q5_0 => {
                // Fifth bit j of `qh` ↔ element j.
                let qh = x.add(2).cast::<u32>().read_unaligned();
                _mm256_or_si256(nibbles(x.add(6)), _mm256_maskz_mov_epi8(qh, _mm256_set1_epi8(0x10)))
            }
            Q8_0 => _mm256_xor_si256(_mm256_loadu_si256(x.add(2).cast()), _mm256_set1_epi8(-128)),
            _ => _mm256_shuffle_epi8(levels, nibbles(x.add(2))),
        }
    }
}

// Every kernel here prefetches the same block of the next four-row group (`prefetch_l2_block`),
// so its reads are in flight while this group computes: the hardware prefetcher alone left about
// half of a core's read rate unused in decode (8B-shaped Q4_K_M: 1.3 → 2.0–2.2 tokens/s with the
// other core busy).

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows4_kernel<const F: u8>(nb: usize, w: *const u8, row_bytes: usize, a: *const u8, out: &mut [f32; 4]) {
    let (bs, k) = layout(F);
    let shift = _mm_cvtsi32_si128(k);
    let ones = _mm256_set1_epi8(1);
    let levels = iq4_levels_u8();
    let mut acc = [_mm256_setzero_ps(); 4];
    for i in 0..nb {
        let yb = unsafe { a.add(i * 34) };
        let qy = unsafe { _mm256_loadu_si256(yb.add(2).cast()) };
        let dy = unsafe { scale(yb) };
        // −2^k·Σ4 a: the unsigned weights' offset, the starting value of every row's sum.
        let sum_y = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, qy);
        let start = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_sll_epi32(sum_y, shift));
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = unsafe { w.add(r * row_bytes + i * bs) };
            prefetch_l2_block(x.wrapping_add(4 * row_bytes), 1);
            let p = _mm256_dpbusd_epi32(start, unsafe { unsigned::<F>(x, levels) }, qy);
            let d = _mm256_mul_ps(unsafe { scale(x) }, dy);
            *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(acc) {
        *o = hsum_f32(acc);
    }
}

/// 64 bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn load512(p: *const u8) -> __m512i {
    unsafe { _mm512_loadu_si512(p.cast()) }
}

/// 32 bytes at `lo` in the low half, 32 at `hi` in the high half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn join256(lo: *const u8, hi: *const u8) -> __m512i {
    unsafe {
        let lo = _mm512_castsi256_si512(_mm256_loadu_si256(lo.cast()));
        _mm512_inserti64x4(lo, _mm256_loadu_si256(hi.cast()), 1)
    }
}

/// 64 byte indices of a table for `vpshufb`/`vpermw`, loaded once per kernel call.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn table512(t: &[u8; 64]) -> __m512i {
    unsafe { load512(t.as_ptr()) }
}

/// `vpshufb` indices (per 128-bit lane, into 8 i16 scales) that lay the scales of Q4_K sub-blocks
/// `4h..4h + 4` over `vpackssdw` of two sub-block products: lanes 0–1 hold sub-blocks `4h` and
/// `4h + 1` (four i16 each), lanes 2–3 sub-blocks `4h + 2` and `4h + 3`.
const fn q4_k_scale_index(h: usize) -> [u8; 64] {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        let (lane, word) = (i / 16, (i % 16) / 2);
        let sub = 4 * h + 2 * (lane / 2) + word / 4;
        t[i] = (2 * sub + i % 2) as u8;
        i += 1;
    }
    t
}

/// Four Q4_K rows (144-byte blocks: d, dmin, 12 bytes of 6-bit scales and mins, 128 bytes of
/// nibbles where byte `32p + l` holds element `l` of sub-block `2p` low and of `2p + 1` high).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows4_q4_k(nb: usize, w: *const u8, row_bytes: usize, a: *const u8, out: &mut [f32; 4]) {
    let m4 = _mm512_set1_epi8(0x0f);
    let index = [table512(&q4_k_scale_index(0)), table512(&q4_k_scale_index(1))];
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut acc_min = [_mm_setzero_ps(); 4];
    for i in 0..nb {
        let y = unsafe { a.add(i * Q8K) };
        let dy = unsafe { y.cast::<f32>().read_unaligned() };
        let q = unsafe { y.add(Q8K_QS) };
        // A 64-byte weight load holds sub-blocks (2p, 2p + 2) in its low nibbles and
        // (2p + 1, 2p + 3) in its high ones: the activations in the same order.
        let ys = unsafe {
            [
                join256(q, q.add(64)),
                join256(q.add(32), q.add(96)),
                join256(q.add(128), q.add(192)),
                join256(q.add(160), q.add(224)),
            ]
        };
        let bs = unsafe { _mm256_loadu_si256(y.add(Q8K_BSUMS).cast()) };
        // Sums over the 32-element sub-blocks, for the mins.
        let bs32 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        for r in 0..4 {
            let x = unsafe { w.add(r * row_bytes + i * 144) };
            prefetch_l2_block(x.wrapping_add(4 * row_bytes), 144);
            let (d, dmin) = unsafe { (f16_at(x), f16_at(x.add(2))) };
            let sm = _mm256_cvtepu8_epi16(unsafe { k4_scales_mins(x.add(4)) });
            let scales = _mm512_broadcast_i32x4(_mm256_castsi256_si128(sm));
            let mut sum = _mm512_setzero_si512();
            for h in 0..2 {
                let bits = unsafe { load512(x.add(16 + 64 * h)) };
                let lo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(bits, m4), ys[2 * h]);
                let hi_bits = _mm512_and_si512(_mm512_srli_epi16(bits, 4), m4);
                let hi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi_bits, ys[2 * h + 1]);
                let sc = _mm512_shuffle_epi8(scales, index[h]);
                sum = _mm512_dpwssd_epi32(sum, _mm512_packs_epi32(lo, hi), sc);
            }
            acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(d * dy), _mm512_cvtepi32_ps(sum), acc[r]);
            let mins = _mm_madd_epi16(_mm256_extracti128_si256(sm, 1), bs32);
            acc_min[r] = _mm_fmadd_ps(_mm_set1_ps(dmin * dy), _mm_cvtepi32_ps(mins), acc_min[r]);
        }
    }
    for r in 0..4 {
        out[r] = _mm512_reduce_add_ps(acc[r]) - hsum_f32x4(acc_min[r]);
    }
}

/// `vpermw` indices (into 16 i16 scales) that lay the scales of Q6_K half `h` over
/// `vpackssdw` of its two 64-element products: lane `k` holds sub-block `8h + k` (four i16),
/// then `8h + 4 + k`.
const fn q6_k_scale_index(h: usize) -> [u8; 64] {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 32 {
        let (lane, word) = (i / 8, i % 8);
        let sub = 8 * h + lane + if word < 4 { 0 } else { 4 };
        t[2 * i] = sub as u8;
        i += 1;
    }
    t
}

/// Four Q6_K rows (210-byte blocks: 128 bytes of low nibbles, 64 of high crumbs, 16 i8 scales
/// of 16-element sub-blocks, d). Quants are unsigned `u = q + 32`; the offset
/// `32·Σ sc·bsum` is taken off per super-block.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows4_q6_k(nb: usize, w: *const u8, row_bytes: usize, a: *const u8, out: &mut [f32; 4]) {
    let m4 = _mm512_set1_epi8(0x0f);
    let m_high = _mm512_set1_epi8(0x30);
    // Elements 0..32 of a half take bits 0–1 of qh, 32..64 bits 2–3, 64..96 bits 4–5, 96..128
    // bits 6–7: the shifts that bring them to bits 4–5, per 256-bit half.
    let up = _mm512_set_epi64(2, 2, 2, 2, 4, 4, 4, 4);
    let down = _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0);
    let index = [table512(&q6_k_scale_index(0)), table512(&q6_k_scale_index(1))];
    let mut acc = [_mm512_setzero_ps(); 4];
    for i in 0..nb {
        let y = unsafe { a.add(i * Q8K) };
        let dy = unsafe { y.cast::<f32>().read_unaligned() };
        let q = unsafe { y.add(Q8K_QS) };
        let ys = unsafe { [load512(q), load512(q.add(64)), load512(q.add(128)), load512(q.add(192))] };
        let bs = unsafe { _mm256_loadu_si256(y.add(Q8K_BSUMS).cast()) };
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = unsafe { w.add(r * row_bytes + i * 210) };
            prefetch_l2_block(x.wrapping_add(4 * row_bytes), 210);
            let d = unsafe { f16_at(x.add(208)) };
            let sc16 = _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(x.add(192).cast()) });
            let scales = _mm512_zextsi256_si512(sc16);
            let mut sum = _mm512_setzero_si512();
            for h in 0..2 {
                let ql = unsafe { load512(x.add(64 * h)) };
                let qh = _mm512_broadcast_i64x4(unsafe { _mm256_loadu_si256(x.add(128 + 32 * h).cast()) });
                // (low & 0x0f) | high, one ternary-logic op each.
                let u_lo =
                    _mm512_ternarylogic_epi64::<0xEA>(ql, m4, _mm512_and_si512(_mm512_sllv_epi64(qh, up), m_high));
                let u_hi = _mm512_ternarylogic_epi64::<0xEA>(
                    _mm512_srli_epi16(ql, 4),
                    m4,
                    _mm512_and_si512(_mm512_srlv_epi64(qh, down), m_high),
                );
                let lo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u_lo, ys[2 * h]);
                let hi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u_hi, ys[2 * h + 1]);
                let sc = _mm512_permutexvar_epi16(index[h], scales);
                sum = _mm512_dpwssd_epi32(sum, _mm512_packs_epi32(lo, hi), sc);
            }
            let offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), 5);
            let sum = _mm512_sub_epi32(sum, _mm512_zextsi256_si512(offset));
            *acc = _mm512_fmadd_ps(_mm512_set1_ps(d * dy), _mm512_cvtepi32_ps(sum), *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(acc) {
        *o = _mm512_reduce_add_ps(acc);
    }
}

/// Safe wrappers: check the slice lengths, then call the kernel (sound only because
/// [`rows4`] hands them out after [`detected`]).
macro_rules! entry {
    ($name:ident, $kernel:expr, $elems:expr, $wblock:expr, $ablock:expr) => {
        fn $name(n: usize, w: &[u8], row_bytes: usize, act: &[u8], out: &mut [f32; 4]) {
            let nb = n / $elems;
            let bs = $wblock;
            assert!(
                n % $elems == 0
                    && row_bytes >= nb * bs
                    && w.len() >= 3 * row_bytes + nb * bs
                    && act.len() >= nb * $ablock
            );
            // SAFETY: CPU features checked before the kernel was handed out; lengths checked.
            unsafe { $kernel(nb, w.as_ptr(), row_bytes, act.as_ptr(), out) }
        }
    };
}
entry!(r4_q4_0, rows4_kernel::<Q4_0>, 32, layout(Q4_0).0, 34);
entry!(r4_q5_0, rows4_kernel::<Q5_0>, 32, layout(Q5_0).0, 34);
entry!(r4_q8_0, rows4_kernel::<Q8_0>, 32, layout(Q8_0).0, 34);
entry!(r4_iq4_nl, rows4_kernel::<IQ4_NL>, 32, layout(IQ4_NL).0, 34);
entry!(r4_q4_k, rows4_q4_k, 256, 144, Q8K);
entry!(r4_q6_k, rows4_q6_k, 256, 210, Q8K);

/// The four-row kernel for `ty`, or None on CPUs without AVX-512 VNNI/BW or for other types.
pub fn rows4(ty: GgmlType) -> Option<VecDotRows4> {
    if !detected() {
        return None;
    }
    Some(match ty {
        GgmlType::Q4_0 => r4_q4_0,
        GgmlType::Q5_0 => r4_q5_0,
        GgmlType::Q8_0 => r4_q8_0,
        GgmlType::IQ4_NL => r4_iq4_nl,
        GgmlType::Q4_K => r4_q4_k,
        GgmlType::Q6_K => r4_q6_k,
        _ => return None,
    })
}
