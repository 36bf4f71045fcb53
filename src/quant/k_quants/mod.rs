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

pub(crate) const QK_K: usize = 256;

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
