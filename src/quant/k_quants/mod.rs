//! K-quants: 256-weight super-blocks with quantized per-sub-block scales (and mins), paired
//! with Q8_K activations whose per-16 `bsums` let the mins be applied once per sub-block.

pub mod q2_k;
pub mod q3_k;
pub mod q4_k;
pub mod q5_k;
pub mod q6_k;

pub use q2_k::Q2K;
pub use q3_k::Q3K;
pub use q4_k::Q4K;
pub use q5_k::Q5K;
pub use q6_k::Q6K;

use crate::quant::block::{f16_bits_to_f32, f32_to_f16_bits, nearest_int};

pub(crate) const QK_K: usize = 256;

/// Dequantize one Q4_K/Q5_K super-block: 8 sub-blocks of 32, `d·scale·q − dmin·min`.
/// `quants(j)` yields sub-block `j`'s unsigned quants (4 bits, or 5 with Q5_K's high bits).
pub(crate) fn dequantize_block_k4<I: Iterator<Item = u8>>(
    d: [u8; 2],
    dmin: [u8; 2],
    scales: &[u8; 12],
    quants: impl Fn(usize) -> I,
    out: &mut [f32],
) {
    let d = f16_bits_to_f32(d);
    let min = f16_bits_to_f32(dmin);
    for (j, out) in out.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(j, scales);
        let (dl, ml) = (d * sc as f32, min * m as f32);
        for (o, q) in out.iter_mut().zip(quants(j)) {
            *o = dl * q as f32 - ml;
        }
    }
}

/// Dot product of one Q4_K/Q5_K super-block with a Q8_K block, combined as ggml does: integer
/// sums per sub-block, the mins applied through the Q8_K `bsums`.
pub(crate) fn dot_block_k4<I: Iterator<Item = u8>>(
    d: [u8; 2],
    dmin: [u8; 2],
    scales: &[u8; 12],
    quants: impl Fn(usize) -> I,
    y: &crate::quant::q8::BlockQ8K,
) -> f32 {
    let (mut isum, mut summs) = (0i32, 0i32);
    for (j, q8) in y.qs.chunks_exact(32).enumerate() {
        let (sc, m) = scale_min_k4(j, scales);
        let s: i32 = q8.iter().zip(quants(j)).map(|(&a, q)| a as i32 * q as i32).sum();
        isum += sc as i32 * s;
        summs += m as i32 * (y.bsum(2 * j) + y.bsum(2 * j + 1));
    }
    let d = f16_bits_to_f32(d) * y.d();
    let dmin = f16_bits_to_f32(dmin) * y.d();
    d * isum as f32 - dmin * summs as f32
}

/// Scale and min of sub-block `j` (0..8) from the 12 packed 6-bit values of Q4_K/Q5_K
/// (`get_scale_min_k4`).
#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// ggml's `make_qkx2_quants`: weighted least-squares scale and min for `x` with `nmax` levels,
/// trying `nstep + 1` candidate scales around the min/max one. Returns (scale, -min).
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    l_aux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = if x[i] < min { x[i] } else { min };
        max = if x[i] > max { x[i] } else { max };
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * if use_mad { diff.abs() } else { diff * diff };
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            l_aux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * l_aux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * if use_mad { diff.abs() } else { diff * diff };
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&l_aux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Per-32 scales and mins of a Q4_K/Q5_K super-block (`nmax` = 15 or 31) with ggml's weights
/// `sqrt(mean x²) + |x|`; fills `l` with the provisional quants.
pub(crate) fn sub_block_scales_k4(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    l: &mut [u8; QK_K],
) -> ([f32; 8], [f32; 8]) {
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    let mut weights = [0f32; 32];
    let mut l_aux = [0u8; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2: f32 = xs.iter().fold(0.0, |s, v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        (scales[j], mins[j]) =
            make_qkx2_quants(nmax, xs, &weights, &mut l[32 * j..32 * j + 32], &mut l_aux, rmin, 0.1, nstep, false);
    }
    (scales, mins)
}

/// Quantize the 8 scales and mins to 6 bits against their maxima and pack them as
/// `scale_min_k4` reads them; returns (packed, d, dmin) with d, dmin as f16 bytes.
pub(crate) fn pack_scales_k4(scales: &[f32; 8], mins: &[f32; 8]) -> ([u8; 12], [u8; 2], [u8; 2]) {
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        max_scale = if scales[j] > max_scale { scales[j] } else { max_scale };
        max_min = if mins[j] > max_min { mins[j] } else { max_min };
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut q = [0u8; 12];
    for j in 0..8 {
        // ggml stores nearest_int into a uint8_t before clamping.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            q[j] = ls;
            q[j + 4] = lm;
        } else {
            q[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
            q[j - 4] |= (ls >> 4) << 6;
            q[j] |= (lm >> 4) << 6;
        }
    }
    (q, f32_to_f16_bits(max_scale / 63.0), f32_to_f16_bits(max_min / 63.0))
}

/// Final quants of a Q4_K/Q5_K super-block against the stored (rounded) scales; sub-blocks
/// with a zero scale keep their provisional quants, as in ggml.
pub(crate) fn requantize_k4(x: &[f32], scales: &[u8; 12], d: [u8; 2], dmin: [u8; 2], nmax: i32, l: &mut [u8; QK_K]) {
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, scales);
        let dl = f16_bits_to_f32(d) * sc as f32;
        if dl == 0.0 {
            continue;
        }
        let dm = f16_bits_to_f32(dmin) * m as f32;
        for i in 32 * j..32 * j + 32 {
            l[i] = nearest_int((x[i] + dm) / dl).clamp(0, nmax) as u8;
        }
    }
}
