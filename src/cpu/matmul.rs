//! Matrix products of quantized weights with f32 activations, the way ggml pairs them:
//! each activation row is quantized once to the weight format's partner type, then every
//! output is one integer-friendly dot product of a weight row with that quantized row.

use super::pool::ThreadPool;
use crate::model::weights::Weight;
use crate::quant;

/// A raw pointer that may cross threads; users write disjoint elements only.
#[derive(Clone, Copy)]
pub struct SyncPtr(pub *mut f32);
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

/// `out[t][r] = Σ_c w[r][c] · x[t][c]` for `n_tokens` rows of `x` (row-major, `w.cols` wide);
/// `out` is `n_tokens × w.rows`. `scratch` holds the quantized activations (grown, never shrunk).
pub fn matmul(pool: &ThreadPool, w: &Weight, x: &[f32], n_tokens: usize, out: &mut [f32], scratch: &mut Vec<u8>) {
    let partner = quant::vec_dot_type(w.ty);
    let act_bytes = partner.row_bytes(w.cols).expect("row length is a whole number of blocks");
    debug_assert_eq!(x.len(), n_tokens * w.cols);
    debug_assert_eq!(out.len(), n_tokens * w.rows);
    if scratch.len() < act_bytes * n_tokens {
        scratch.resize(act_bytes * n_tokens, 0);
    }
    for t in 0..n_tokens {
        quant::quantize_row(
            partner,
            &x[t * w.cols..(t + 1) * w.cols],
            &mut scratch[t * act_bytes..(t + 1) * act_bytes],
        );
    }
    let act = &scratch[..act_bytes * n_tokens];
    let rows = w.rows;
    let out_ptr = SyncPtr(out.as_mut_ptr());
    pool.for_chunks(rows, 16, &|range| {
        let out_ptr = out_ptr;
        for r in range {
            let wr = w.row(r);
            for t in 0..n_tokens {
                let v = quant::vec_dot(w.ty, w.cols, wr, &act[t * act_bytes..(t + 1) * act_bytes]);
                // SAFETY: each (t, r) is written by exactly one task; `out` outlives the call.
                unsafe { *out_ptr.0.add(t * rows + r) = v };
            }
        }
    });
}
