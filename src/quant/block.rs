//! Shared plumbing: viewing byte slices as block slices, and the scalar conversions ggml uses.
//!
//! Every block struct is built from byte arrays only (f16 and f32 fields are stored as
//! little-endian `[u8; N]`), so it has alignment 1 and any byte pattern is a valid value:
//! a block slice can be laid over any byte buffer (mmap, `Vec<u8>`) without copying.

use half::f16;

/// A ggml block made only of `u8` arrays.
///
/// # Safety
/// Implementors must be `#[repr(C)]`, contain only `u8`/`[u8; N]` fields (so alignment is 1,
/// there is no padding and every bit pattern is valid).
pub(crate) unsafe trait Block: Sized + Copy {
    /// Elements per block.
    const ELEMS: usize;
}

/// View `bytes` (a whole number of blocks) as blocks.
#[inline]
pub(crate) fn blocks<B: Block>(bytes: &[u8]) -> &[B] {
    let size = size_of::<B>();
    assert!(bytes.len().is_multiple_of(size), "{} bytes is not a whole number of {size}-byte blocks", bytes.len());
    // SAFETY: B has alignment 1, no padding and no invalid bit patterns (Block contract);
    // the length is a whole number of blocks and the lifetime is tied to `bytes`.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / size) }
}

/// Mutable version of [`blocks`].
#[inline]
pub(crate) fn blocks_mut<B: Block>(bytes: &mut [u8]) -> &mut [B] {
    let size = size_of::<B>();
    assert!(bytes.len().is_multiple_of(size), "{} bytes is not a whole number of {size}-byte blocks", bytes.len());
    // SAFETY: as in `blocks`; the exclusive borrow of `bytes` is carried over.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<B>(), bytes.len() / size) }
}

/// The first `n / B::ELEMS` blocks of `bytes` (panics if `n` is not whole blocks or too long).
#[inline]
pub(crate) fn row_blocks<B: Block>(bytes: &[u8], n: usize) -> &[B] {
    assert!(n.is_multiple_of(B::ELEMS), "row length {n} is not a multiple of {}", B::ELEMS);
    let nb = n / B::ELEMS;
    &blocks::<B>(&bytes[..nb * size_of::<B>()])[..nb]
}

/// Compile-time check of a block's size against the ggml type table, and of alignment 1.
macro_rules! assert_block {
    ($block:ty, $ty:expr) => {
        const _: () = assert!(size_of::<$block>() == $ty.type_size());
        const _: () = assert!(align_of::<$block>() == 1);
        const _: () = assert!(<$block as $crate::quant::block::Block>::ELEMS == $ty.block_size());
    };
}
pub(crate) use assert_block;

/// IEEE half (little-endian bytes) to f32; exact.
#[inline]
pub fn f16_bits_to_f32(b: [u8; 2]) -> f32 {
    f16::from_bits(u16::from_le_bytes(b)).to_f32()
}

/// f32 to IEEE half, round to nearest even (as F16C `_cvtss_sh` / `GGML_FP32_TO_FP16`).
#[inline]
pub fn f32_to_f16_bits(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

/// f32 to bfloat16 exactly as `ggml_compute_fp32_to_bf16`: round to nearest even, NaN quieted.
#[inline]
pub fn f32_to_bf16_bits(x: f32) -> [u8; 2] {
    let u = x.to_bits();
    let h = if (u & 0x7fff_ffff) > 0x7f80_0000 {
        (u >> 16) as u16 | 64
    } else {
        (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
    };
    h.to_le_bytes()
}

/// bfloat16 (little-endian bytes) to f32; exact.
#[inline]
pub(crate) fn bf16_bits_to_f32(b: [u8; 2]) -> f32 {
    f32::from_bits((u16::from_le_bytes(b) as u32) << 16)
}

/// ggml's `nearest_int`: round half to even by adding 1.5·2^23 (valid for |x| < 2^22, as in
/// ggml). Also what `_mm256_round_ps(.., _MM_ROUND_NEAREST)` gives in that range, and much
/// cheaper than `round_ties_even` without SSE4.1.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    debug_assert!(x.abs() <= 4_194_303.0 || x.is_nan());
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}
