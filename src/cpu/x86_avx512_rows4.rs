//! Four-row decode kernels (AVX-512 VNNI, on 256-bit vectors) for the 32-element formats
//! paired with Q8_0: Q4_0, Q5_0, Q8_0, IQ4_NL. A decode step is a matrix-vector product, and
//! the one-row kernels repeat the activation block's work (load, f16 scale, sign tricks) for
//! every weight row; here one pass over the activation row serves four weight rows.
//!
//! Weights are turned into unsigned bytes `u = q + 2^k` (nibbles as they are, Q8_0 and the
//! IQ4_NL levels with the sign bit flipped), which `vpdpbusd` takes directly against the signed
//! activation quants; the offset `2^k·Σ4 a` is formed once per activation block and starts each
//! row's accumulation, so a row-block costs an unpack, one `vpdpbusd`, a convert and an FMA.
//! The integer block sums equal ggml's; only the float accumulation order differs. Only reached
//! through [`rows4`], which checks the CPU first.

use core::arch::x86_64::*;

use super::kernels::VecDotRows4;
use super::x86_avx2::hsum_f32;
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

/// The IQ4_NL levels plus 128, as unsigned bytes, in both 128-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn iq4_levels_u8() -> __m256i {
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
            let p = _mm256_dpbusd_epi32(start, unsafe { unsigned::<F>(x, levels) }, qy);
            let d = _mm256_mul_ps(unsafe { scale(x) }, dy);
            *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(acc) {
        *o = hsum_f32(acc);
    }
}

/// Safe wrappers: check the slice lengths, then call the kernel (sound only because
/// [`rows4`] hands them out after [`detected`]).
macro_rules! entry {
    ($name:ident, $f:expr) => {
        fn $name(n: usize, w: &[u8], row_bytes: usize, act: &[u8], out: &mut [f32; 4]) {
            let nb = n / 32;
            let bs = layout($f).0;
            assert!(n % 32 == 0 && row_bytes >= nb * bs && w.len() >= 3 * row_bytes + nb * bs && act.len() >= nb * 34);
            // SAFETY: CPU features checked before the kernel was handed out; lengths checked.
            unsafe { rows4_kernel::<{ $f }>(nb, w.as_ptr(), row_bytes, act.as_ptr(), out) }
        }
    };
}
entry!(r4_q4_0, Q4_0);
entry!(r4_q5_0, Q5_0);
entry!(r4_q8_0, Q8_0);
entry!(r4_iq4_nl, IQ4_NL);

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
        _ => return None,
    })
}
