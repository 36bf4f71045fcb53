//! AVX-VNNI (`avxvnni`): the VEX-encoded 256-bit `vpdpbusd` (`_mm256_dpbusd_avx_epi32`) of
//! CPUs with VNNI but no AVX-512 (Alder Lake and later Intel client cores, Zen 5 client parts).
//! The same 32-element kernels as `x86_avx512`, in the other encoding; the K-quants and IQ4_XS
//! stay AVX2 for the reason given there.

use super::x86_avx2::{self, AVX_VNNI, vnni_flavour};

pub fn detected() -> bool {
    is_x86_feature_detected!("avxvnni") && x86_avx2::detected()
}

vnni_flavour!("avx2,fma,f16c,avxvnni", AVX_VNNI, "avxvnni");
