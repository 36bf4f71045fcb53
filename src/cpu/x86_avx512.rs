//! AVX-512 VNNI (`avx512vnni` + `avx512vl`): the kernels of `x86_avx2` compiled with VNNI, on
//! 256-bit vectors (Zen 4 double-pumps 512-bit integer ops, so wider vectors buy nothing
//! there). The 32-element formats use `vpdpbusd` (`_mm256_dpbusd_epi32`) in place of AVX2's
//! `vpmaddubsw` + `vpmaddwd` pair. The K-quants and IQ4_XS stay AVX2: folding their scale
//! multiply into `vpdpwssd` (`madd_acc::<AVX512_VNNI>` in `x86_avx2`) puts the 4-cycle `vpdpwssd` on
//! the accumulator chain, and measured 1.5-2x slower on Zen 4 than `vpmaddwd` + `vpaddd`.

use super::x86_avx2::{self, AVX512_VNNI, vnni_flavour};

pub fn detected() -> bool {
    is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") && x86_avx2::detected()
}

vnni_flavour!("avx2,fma,f16c,avx512f,avx512vl,avx512vnni", AVX512_VNNI, "avx512vnni");
