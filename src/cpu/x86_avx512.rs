//! AVX-512 (F/BW/VL + VNNI) kernels: `_mm512_dpbusd_epi32` / `_mm256_dpbusd_epi32` in place of
//! AVX2's `maddubs` + `madd` pair.

use super::kernels::CpuKernels;
use crate::quant::GgmlType;

pub fn detected() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && super::x86_avx2::detected()
}

pub fn table(_ty: GgmlType) -> Option<CpuKernels> {
    None
}
