//! NEON kernels (baseline on aarch64), with the SDOT (`dotprod`) variant where present.

use super::kernels::CpuKernels;
use crate::quant::GgmlType;

pub fn dotprod_detected() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

pub fn table(_ty: GgmlType) -> Option<CpuKernels> {
    None
}

pub fn table_dotprod(_ty: GgmlType) -> Option<CpuKernels> {
    None
}
