//! AVX-512 VNNI (`avx512vnni` + `avx512vl`): the kernels of `x86_avx2` compiled with VNNI, on
//! 256-bit vectors (Zen 4 double-pumps 512-bit integer ops, so wider vectors buy nothing
//! there). The 32-element formats use `vpdpbusd` (`_mm256_dpbusd_epi32`) in place of AVX2's
//! `vpmaddubsw` + `vpmaddwd` pair. The K-quants and IQ4_XS stay AVX2: folding their scale
//! multiply into `vpdpwssd` (`madd_acc::<true>` in `x86_avx2`) puts the 4-cycle `vpdpwssd` on
//! the accumulator chain, and measured 1.5-2x slower on Zen 4 than `vpmaddwd` + `vpaddd`.

use super::kernels::{CpuKernels, VecDot, VecDotX4};
use super::x86_avx2::{self, entry, iq4_nl, q4_0, q4_1, q5_0, q5_1, q8_0};
use crate::quant::{GgmlType, scalar_kernels};

pub fn detected() -> bool {
    is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") && x86_avx2::detected()
}

/// The VNNI instantiations: the generic kernels compiled with the extra features.
macro_rules! vnni {
    ($($name:ident = $kernel:ident),*) => {$(
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
        unsafe fn $name<const NT: usize>(nb: usize, w: *const u8, a: *const u8, s: usize, o: &mut [f32; NT]) {
            unsafe { $kernel::<NT, true>(nb, w, a, s, o) }
        }
    )*};
}
vnni!(q4_0_vnni = q4_0, q5_0_vnni = q5_0, q8_0_vnni = q8_0, iq4_nl_vnni = iq4_nl, q4_1_vnni = q4_1, q5_1_vnni = q5_1);

entry!(vd_q4_0, vd4_q4_0, q4_0_vnni, 32, 18, 34);
entry!(vd_q5_0, vd4_q5_0, q5_0_vnni, 32, 22, 34);
entry!(vd_q8_0, vd4_q8_0, q8_0_vnni, 32, 34, 34);
entry!(vd_iq4_nl, vd4_iq4_nl, iq4_nl_vnni, 32, 18, 34);
entry!(vd_q4_1, vd4_q4_1, q4_1_vnni, 32, 20, 36);
entry!(vd_q5_1, vd4_q5_1, q5_1_vnni, 32, 24, 36);

/// The VNNI kernels for `ty`; None without AVX-512 VNNI or for types that stay AVX2.
pub fn table(ty: GgmlType) -> Option<CpuKernels> {
    use GgmlType as T;
    if !detected() {
        return None;
    }
    let (vec_dot, x4): (VecDot, VecDotX4) = match ty {
        T::Q4_0 => (vd_q4_0, vd4_q4_0),
        T::Q5_0 => (vd_q5_0, vd4_q5_0),
        T::Q8_0 => (vd_q8_0, vd4_q8_0),
        T::IQ4_NL => (vd_iq4_nl, vd4_iq4_nl),
        T::Q4_1 => (vd_q4_1, vd4_q4_1),
        T::Q5_1 => (vd_q5_1, vd4_q5_1),
        _ => return None,
    };
    let base = *scalar_kernels(ty)?;
    Some(CpuKernels { k: crate::quant::Kernels { vec_dot, ..base }, vec_dot_x4: Some(x4), isa: "avx512vnni" })
}
