//! Q6_K: 16 sub-blocks of 16 weights; i8 scales, f16 super-scale; 6-bit quants offset by 32
//! (`w = d*sc*(q - 32)`). Per 128 weights: 64 bytes of low nibbles (`ql`) and 32 bytes of
//! 2-bit high parts (`qh`); element 32*k + l takes nibble k/2 of ql[l + 32*(k%2)] and bits
//! 2k..2k+2 of qh[l].

use super::QK_K;
use crate::quant::block::{Block, assert_block, blocks_mut, f16_bits_to_f32, f32_to_f16_bits, nearest_int, row_blocks};
use crate::quant::q8::BlockQ8K;
use crate::quant::{GgmlType, WeightFormat};

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: [u8; 2],
}

// SAFETY: byte arrays only (i8 has the layout and validity of u8).
unsafe impl Block for BlockQ6K {
    const ELEMS: usize = QK_K;
}
assert_block!(BlockQ6K, GgmlType::Q6_K);

/// The 256 quants of a block minus 32 (-32..=31), in element order.
fn unpack_quants(x: &BlockQ6K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for half in 0..2 {
        let (ql, qh) = (&x.ql[64 * half..64 * half + 64], &x.qh[32 * half..32 * half + 32]);
        let out = &mut a[128 * half..128 * half + 128];
        for l in 0..32 {
            let h = qh[l];
            out[l] = ((ql[l] & 0x0f) | ((h & 3) << 4)) as i8 - 32;
            out[l + 32] = ((ql[l + 32] & 0x0f) | (((h >> 2) & 3) << 4)) as i8 - 32;
            out[l + 64] = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
            out[l + 96] = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    a
}

pub struct Q6K;

impl WeightFormat for Q6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const PARTNER: GgmlType = GgmlType::Q8_K;

    fn dequantize_row(src: &[u8], dst: &mut [f32]) {
        let xs = row_blocks::<BlockQ6K>(src, dst.len());
        for (x, y) in xs.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = f16_bits_to_f32(x.d);
            let q = unpack_quants(x);
            for ((out, qq), &sc) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).zip(&x.scales) {
                let dl = d * sc as f32;
                for (o, &v) in out.iter_mut().zip(qq) {
                    *o = dl * v as f32;
                }
            }
        }
    }

    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32 {
        let xs = row_blocks::<BlockQ6K>(w, n);
        let ys = row_blocks::<BlockQ8K>(act, n);
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            let q = unpack_quants(x);
            let mut isum = 0i32;
            for ((q8, qq), &sc) in y.qs.chunks_exact(16).zip(q.chunks_exact(16)).zip(&x.scales) {
                let s: i32 = q8.iter().zip(qq).map(|(&a, &b)| a as i32 * b as i32).sum();
                isum += sc as i32 * s;
            }
            sumf += f16_bits_to_f32(x.d) * y.d() * isum as f32;
        }
        sumf
    }
}

/// ggml's `make_qx_quants` with `rmse_type` 1 (weights x²) and no importance weights: the
/// scale for signed quants in -nmax..nmax, searched over 19 candidates. Writes `l` offset by
/// `nmax` and returns the scale.
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-15 {
        l_out.fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (o, &v) in l_out.iter_mut().zip(x) {
        let l = quant(iscale, v);
        *o = (l + nmax) as i8;
        let w = v * v;
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let l = quant(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (o, &v) in l_out.iter_mut().zip(x) {
                *o = (quant(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `quantize_row_q6_K_ref` (llama-quantize without an importance matrix).
pub fn quantize_row_ref(x: &[f32], dst: &mut [u8]) {
    let mut l = [0i8; QK_K];
    for (xb, yb) in x.chunks_exact(QK_K).zip(blocks_mut::<BlockQ6K>(dst)) {
        let mut scales = [0f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for ib in 0..16 {
            let s = make_qx_quants(32, &xb[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < 1e-15 {
            *yb = BlockQ6K { ql: [0; 128], qh: [0; 64], scales: [0; 16], d: f32_to_f16_bits(0.0) };
            continue;
        }
        let iscale = -128.0 / max_scale;
        yb.d = f32_to_f16_bits(1.0 / iscale);
        for (o, &s) in yb.scales.iter_mut().zip(&scales) {
            *o = nearest_int(iscale * s).min(127) as i8;
        }
        for j in 0..16 {
            let d = f16_bits_to_f32(yb.d) * yb.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                l[16 * j + ii] = (nearest_int(xb[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
            }
        }
        for half in 0..2 {
            let lq = &l[128 * half..128 * half + 128];
            for i in 0..32 {
                let q = |k: usize| lq[i + 32 * k] as u8;
                yb.ql[64 * half + i] = (q(0) & 0x0f) | ((q(2) & 0x0f) << 4);
                yb.ql[64 * half + 32 + i] = (q(1) & 0x0f) | ((q(3) & 0x0f) << 4);
                yb.qh[32 * half + i] = (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
            }
        }
    }
}
