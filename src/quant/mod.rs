//! Weight formats: ggml's block layouts, dequantization, and dot products against the
//! activation types ggml pairs them with (Q8_0, Q8_1, Q8_K).
//!
//! Everything here is the scalar reference, bit-exact to ggml where ggml is deterministic:
//! dequantization reproduces llama.cpp's f32 values bitwise, activation quantization
//! reproduces ggml-cpu's x86 `quantize_row_q8_*` byte for byte, and every `vec_dot` computes
//! the same integer block sums as ggml (only the float accumulation order may differ).
//! SIMD kernels live elsewhere and are tested against these.

pub(crate) mod block;
mod float;
mod iq1;
mod iq2_xxs;
mod iq4;
pub(crate) mod iq_tables;
mod k_quants;
pub mod oracle;
mod q4_0;
mod q4_1;
mod q5_0;
mod q5_1;
mod q8;
mod q8_0;
mod types;

pub use block::{f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits};
/// The 16 Q3_K sub-block scales (already minus 32), for the SIMD kernels.
pub(crate) use k_quants::q3_k::unpack_scales as q3_k_scales;
#[cfg(target_arch = "x86_64")] // the AVX-512 prefill tiles
pub(crate) use k_quants::scale_min_k4;
pub use q8::{BlockQ8_0, BlockQ8_1, BlockQ8K};
pub use types::GgmlType;

/// Block layouts (`#[repr(C)]`, alignment 1) and the [`WeightFormat`] of every type, for SIMD
/// kernels that want the scalar pieces. Byte slices become block slices with
/// `block::blocks` inside the crate.
pub mod formats {
    pub use super::float::{BF16, F16, F32};
    pub use super::iq1::{BlockIQ1M, BlockIQ1S, IQ1M, IQ1S};
    pub use super::iq2_xxs::{BlockIQ2XXS, IQ2XXS};
    pub use super::iq4::{BlockIQ4NL, BlockIQ4XS, IQ4NL, IQ4XS};
    pub use super::k_quants::q2_k::BlockQ2K;
    pub use super::k_quants::q3_k::BlockQ3K;
    pub use super::k_quants::q4_k::BlockQ4K;
    pub use super::k_quants::q5_k::BlockQ5K;
    pub use super::k_quants::q6_k::BlockQ6K;
    pub use super::k_quants::{Q2K, Q3K, Q4K, Q5K, Q6K};
    pub use super::q4_0::{BlockQ4_0, Q4_0};
    pub use super::q4_1::{BlockQ4_1, Q4_1};
    pub use super::q5_0::{BlockQ5_0, Q5_0};
    pub use super::q5_1::{BlockQ5_1, Q5_1};
    pub use super::q8::{BlockQ8_0, BlockQ8_1, BlockQ8K};
    pub use super::q8_0::Q8_0;
}

/// One weight format: its block layout and scalar kernels.
pub trait WeightFormat {
    const TYPE: GgmlType;
    /// The activation type ggml quantizes the other operand to (`vec_dot_type`).
    const PARTNER: GgmlType;
    /// Dequantize whole blocks: `dst.len()` elements from `src`.
    fn dequantize_row(src: &[u8], dst: &mut [f32]);
    /// Dot product of `n` weights with `n` activations already in `PARTNER` layout.
    fn vec_dot(n: usize, w: &[u8], act: &[u8]) -> f32;
}

/// Quantize an f32 row into a block format: `(src, dst)`.
pub type QuantizeFn = fn(&[f32], &mut [u8]);

/// Per-type kernel table; the `cpu` module builds faster ones with the same shape.
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    pub ty: GgmlType,
    pub partner: GgmlType,
    pub dequantize_row: fn(&[u8], &mut [f32]),
    pub vec_dot: fn(usize, &[u8], &[u8]) -> f32,
    /// Quantize an f32 activation row into `partner` layout.
    pub quantize_partner: QuantizeFn,
}

const fn kernels<F: WeightFormat>() -> Kernels {
    Kernels {
        ty: F::TYPE,
        partner: F::PARTNER,
        dequantize_row: F::dequantize_row,
        vec_dot: F::vec_dot,
        quantize_partner: partner_quantizer(F::PARTNER),
    }
}

const fn partner_quantizer(partner: GgmlType) -> QuantizeFn {
    match partner {
        GgmlType::Q8_0 => q8::quantize_row_q8_0,
        GgmlType::Q8_1 => q8::quantize_row_q8_1,
        GgmlType::Q8_K => q8::quantize_row_q8_k,
        GgmlType::F16 => float::quantize_row_f16,
        GgmlType::BF16 => float::quantize_row_bf16,
        GgmlType::F32 => float::quantize_row_f32,
        _ => panic!("not an activation type"),
    }
}

static F32: Kernels = kernels::<float::F32>();
static F16: Kernels = kernels::<float::F16>();
static BF16: Kernels = kernels::<float::BF16>();
static Q4_0: Kernels = kernels::<q4_0::Q4_0>();
static Q4_1: Kernels = kernels::<q4_1::Q4_1>();
static Q5_0: Kernels = kernels::<q5_0::Q5_0>();
static Q5_1: Kernels = kernels::<q5_1::Q5_1>();
static Q8_0: Kernels = kernels::<q8_0::Q8_0>();
static Q2_K: Kernels = kernels::<k_quants::Q2K>();
static Q3_K: Kernels = kernels::<k_quants::Q3K>();
static Q4_K: Kernels = kernels::<k_quants::Q4K>();
static Q5_K: Kernels = kernels::<k_quants::Q5K>();
static Q6_K: Kernels = kernels::<k_quants::Q6K>();
static IQ4_NL: Kernels = kernels::<iq4::IQ4NL>();
static IQ4_XS: Kernels = kernels::<iq4::IQ4XS>();
static IQ1_S: Kernels = kernels::<iq1::IQ1S>();
static IQ1_M: Kernels = kernels::<iq1::IQ1M>();
static IQ2_XXS: Kernels = kernels::<iq2_xxs::IQ2XXS>();

/// The scalar (oracle) kernels for a weight type, or None if the engine cannot run it.
pub fn scalar_kernels(ty: GgmlType) -> Option<&'static Kernels> {
    use GgmlType as T;
    Some(match ty {
        T::F32 => &F32,
        T::F16 => &F16,
        T::BF16 => &BF16,
        T::Q4_0 => &Q4_0,
        T::Q4_1 => &Q4_1,
        T::Q5_0 => &Q5_0,
        T::Q5_1 => &Q5_1,
        T::Q8_0 => &Q8_0,
        T::Q2_K => &Q2_K,
        T::Q3_K => &Q3_K,
        T::Q4_K => &Q4_K,
        T::Q5_K => &Q5_K,
        T::Q6_K => &Q6_K,
        T::IQ4_NL => &IQ4_NL,
        T::IQ4_XS => &IQ4_XS,
        T::IQ1_S => &IQ1_S,
        T::IQ1_M => &IQ1_M,
        T::IQ2_XXS => &IQ2_XXS,
        _ => return None,
    })
}

/// true if the engine can run matrices of this type
pub fn is_supported(ty: GgmlType) -> bool {
    scalar_kernels(ty).is_some()
}

/// error naming the type if unsupported
pub fn check_supported(ty: GgmlType) -> crate::Result<()> {
    if is_supported(ty) {
        return Ok(());
    }
    let supported: Vec<String> = GgmlType::ALL.iter().filter(|t| is_supported(**t)).map(|t| t.to_string()).collect();
    crate::bail!(
        "tensor type {ty} (ggml type {}) is not supported; supported types: {}",
        ty as u32,
        supported.join(", ")
    )
}

/// The activation type ggml pairs with weights of `ty` (Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL, Q8_1
/// for Q4_1/Q5_1, Q8_K for K- and IQ-types, F16 for F16, BF16 for BF16, F32 for F32).
pub fn vec_dot_type(ty: GgmlType) -> GgmlType {
    use GgmlType as T;
    match scalar_kernels(ty) {
        Some(k) => k.partner,
        // ggml's pairing for the types we do not run, for completeness.
        None => match ty {
            T::Q8_1 => T::Q8_1,
            T::MXFP4 => T::Q8_0,
            T::IQ2_XS | T::IQ3_XXS | T::IQ3_S | T::IQ2_S | T::TQ1_0 | T::TQ2_0 | T::Q8_K => T::Q8_K,
            other => other,
        },
    }
}

fn kernels_or_panic(ty: GgmlType) -> &'static Kernels {
    match scalar_kernels(ty) {
        Some(k) => k,
        None => panic!("quant: no kernels for {ty} (call check_supported first)"),
    }
}

/// Dequantize one row (src holds whole blocks; dst.len() = elements).
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    (kernels_or_panic(ty).dequantize_row)(src, dst)
}

/// Quantize an f32 activation row into `partner` layout (dst.len() = partner.row_bytes(x.len())),
/// exactly as ggml-cpu does on x86.
pub fn quantize_row(partner: GgmlType, x: &[f32], dst: &mut [u8]) {
    use GgmlType as T;
    match partner {
        T::Q8_0 | T::Q8_1 | T::Q8_K | T::F16 | T::BF16 | T::F32 => partner_quantizer(partner)(x, dst),
        _ => panic!("quant: {partner} is not an activation type"),
    }
}

/// Q8_K activation rows as ggml-cpu quantizes them in groups of 4 for its repacked x86 kernels
/// (Q4_K, and Q2_K with AVX-512, on batches of 4+ tokens); differs from `quantize_row` only in
/// the sign of the scale of a block holding both +amax and -amax. Q8_0 needs no such variant
/// (`ggml_quantize_mat_q8_0_4x8` matches `quantize_row_q8_0`).
pub fn quantize_row_q8_k_repacked(x: &[f32], dst: &mut [u8]) {
    q8::quantize_row_q8_k_repacked(x, dst)
}

/// The weight quantizer for `ty`: for every type but the IQ1/IQ2 ones, ggml's own
/// (`quantize_row_*_ref` / `quantize_iq4_*`, what `llama-quantize` runs without an importance
/// matrix), bit for bit. IQ1_S, IQ1_M and IQ2_XXS get simple grid searches (ggml requires an
/// importance matrix for them): valid, reasonably close blocks for synthesising test models.
pub fn weight_quantizer(ty: GgmlType) -> Option<QuantizeFn> {
    use GgmlType as T;
    Some(match ty {
        T::F32 => float::quantize_row_f32,
        T::F16 => float::quantize_row_f16,
        T::BF16 => float::quantize_row_bf16,
        T::Q4_0 => q4_0::quantize_row_ref,
        T::Q4_1 => q4_1::quantize_row_ref,
        T::Q5_0 => q5_0::quantize_row_ref,
        T::Q5_1 => q5_1::quantize_row_ref,
        T::Q8_0 => q8_0::quantize_row_ref,
        T::Q2_K => k_quants::q2_k::quantize_row_ref,
        T::Q3_K => k_quants::q3_k::quantize_row_ref,
        T::Q4_K => k_quants::q4_k::quantize_row_ref,
        T::Q5_K => k_quants::q5_k::quantize_row_ref,
        T::Q6_K => k_quants::q6_k::quantize_row_ref,
        T::IQ4_NL => iq4::quantize_row_iq4_nl,
        T::IQ4_XS => iq4::quantize_row_iq4_xs,
        // Not ggml's (imatrix-driven) quantizers: simple grid searches, for test models.
        T::IQ1_S => iq1::quantize_row_iq1_s_simple,
        T::IQ1_M => iq1::quantize_row_iq1_m_simple,
        T::IQ2_XXS => iq2_xxs::quantize_row_simple,
        _ => return None,
    })
}

/// Quantize weights (whole blocks) with [`weight_quantizer`]. Panics for types without one
/// (see [`can_quantize_weights`]); every supported type has one.
pub fn quantize_weights(ty: GgmlType, x: &[f32], dst: &mut [u8]) {
    match weight_quantizer(ty) {
        Some(f) => f(x, dst),
        None => panic!("quant: no reference quantizer for {ty}"),
    }
}

/// Types `quantize_weights` accepts.
pub fn can_quantize_weights(ty: GgmlType) -> bool {
    weight_quantizer(ty).is_some()
}
