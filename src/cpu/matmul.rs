//! Matrix products of quantized weights with f32 activations, the way ggml pairs them:
//! each activation row is quantized once to the weight format's partner type, then every
//! output is one integer-friendly dot product of a weight row with that quantized row.
//!
//! Decode (one token) is a matrix-vector product: rows are split into chunks that the pool's
//! threads claim dynamically. Prefill walks each weight row once per four tokens
//! (`vec_dot_x4`), so a weight block is decoded once for four activation rows and stays in L1
//! while every tile of tokens uses it.

use super::kernels::{self, CpuKernels, Tiles};
use super::pool::ThreadPool;
use crate::quant::GgmlType;

/// A weight matrix as the products read it: `rows` rows of `cols` elements of type `ty`,
/// `row_bytes` apart in `data`.
#[derive(Clone, Copy)]
pub struct Matrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub row_bytes: usize,
    pub data: &'a [u8],
}

/// Whatever holds a weight matrix (the model's mapped tensors, a test's buffer).
pub trait AsMatrix: Sync {
    fn matrix(&self) -> Matrix<'_>;
}

impl AsMatrix for Matrix<'_> {
    fn matrix(&self) -> Matrix<'_> {
        *self
    }
}

/// A raw pointer that may cross threads; users write disjoint elements only.
#[derive(Clone, Copy)]
pub struct SyncPtr(pub *mut f32);
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    #[inline]
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// Rows per task: several tasks per thread so a thread slowed by the OS does not hold the
/// others up, but large enough that claiming a task is noise.
fn rows_per_task(rows: usize, threads: usize, n_tokens: usize) -> usize {
    if threads <= 1 {
        return rows.max(1);
    }
    let min_rows = (64 / n_tokens.max(1)).max(4);
    rows.div_ceil(threads * 4).max(min_rows)
}

/// Prompt batches of at least this many tokens use the prefill tiles (where the type has them):
/// below it, decoding each weight block into the tiles' shape costs more than it saves.
const MIN_TILE_TOKENS: usize = 4;

/// The activation rows of one matrix product, quantized once for every weight that reads them.
pub struct Activations<'a> {
    /// `n_tokens` rows in the partner layout, `row_bytes` apart.
    pub quantized: &'a [u8],
    pub row_bytes: usize,
    pub n_tokens: usize,
    /// The same rows in the prefill tiles' layout, when a tile kernel will read them.
    pub prepared: Option<(&'static Tiles, &'a [u8])>,
}

/// Quantize `n_tokens` rows of `x` (`cols` wide) for weights of kernels `k` into `scratch`
/// (grown, never shrunk), and prepare them for the tiles when the batch is large enough.
pub fn quantize_activations<'a>(
    k: &CpuKernels,
    cols: usize,
    x: &[f32],
    n_tokens: usize,
    scratch: &'a mut Vec<u8>,
) -> Activations<'a> {
    let row_bytes = k.k.partner.row_bytes(cols).expect("row length is a whole number of blocks");
    debug_assert_eq!(x.len(), n_tokens * cols);
    let tiles = kernels::tiles(k.k.ty).filter(|_| n_tokens >= MIN_TILE_TOKENS);
    let prepared_bytes = tiles.map_or(0, |t| (t.prepared_bytes)(cols, n_tokens));
    let need = row_bytes * n_tokens + prepared_bytes;
    if scratch.len() < need {
        scratch.resize(need, 0);
    }
    let (quantized, rest) = scratch.split_at_mut(row_bytes * n_tokens);
    for t in 0..n_tokens {
        (k.k.quantize_partner)(&x[t * cols..(t + 1) * cols], &mut quantized[t * row_bytes..(t + 1) * row_bytes]);
    }
    let prepared = tiles.map(|t| {
        let p = &mut rest[..prepared_bytes];
        (t.prepare)(quantized, row_bytes, n_tokens, cols, p);
        (t, &*p)
    });
    Activations { quantized, row_bytes, n_tokens, prepared }
}

/// `out[t][r] = Σ_c w[r][c] · x[t][c]` for `n_tokens` rows of `x` (row-major, `w.cols` wide);
/// `out` is `n_tokens × w.rows`. `scratch` holds the quantized activations (grown, never shrunk).
pub fn matmul(pool: &ThreadPool, w: &dyn AsMatrix, x: &[f32], n_tokens: usize, out: &mut [f32], scratch: &mut Vec<u8>) {
    let mut group_scratch: GroupScratch = [std::mem::take(scratch), Vec::new(), Vec::new(), Vec::new()];
    matmul_group(pool, x, n_tokens, &mut [Product { w, out }], &mut group_scratch);
    *scratch = std::mem::take(&mut group_scratch[0]);
}

/// One product of a [`matmul_group`]: a weight and its output (`n_tokens × w.rows`).
pub struct Product<'a> {
    pub w: &'a dyn AsMatrix,
    pub out: &'a mut [f32],
}

/// The most products one group holds (q/k/v is the largest use).
pub const MAX_GROUP: usize = 4;

/// Activation buffers of a group: one per distinct activation layout (grown, never shrunk).
pub type GroupScratch = [Vec<u8>; MAX_GROUP];

/// Several products with the same input `x` (q/k/v, gate/up): `x` is quantized once per
/// distinct activation layout (a Q4_K_M layer mixes Q4_K and Q6_K, both paired with Q8_K),
/// and every row task of every product runs in one pool dispatch, so a decode step pays one
/// quantization and one barrier per group instead of one per matrix.
pub fn matmul_group(
    pool: &ThreadPool,
    x: &[f32],
    n_tokens: usize,
    products: &mut [Product<'_>],
    scratch: &mut GroupScratch,
) {
    let n = products.len();
    assert!((1..=MAX_GROUP).contains(&n), "a group holds 1..={MAX_GROUP} products");
    let cols = products[0].w.matrix().cols;
    // Per product: its kernels and which activation set it reads. A set is keyed by the
    // partner type and the prefill tiles that will read it (their prepared rows differ).
    let mut kern: [Option<&CpuKernels>; MAX_GROUP] = [None; MAX_GROUP];
    let mut set_of = [0usize; MAX_GROUP];
    let mut sets: [Option<&CpuKernels>; MAX_GROUP] = [None; MAX_GROUP];
    let key = |k: &CpuKernels| {
        let tiles = kernels::tiles(k.k.ty).filter(|_| n_tokens >= MIN_TILE_TOKENS);
        (k.k.partner, tiles.map(|t| t as *const Tiles))
    };
    for (i, p) in products.iter().enumerate() {
        let m = p.w.matrix();
        assert_eq!(m.cols, cols, "products of a group share their input width");
        debug_assert_eq!(p.out.len(), n_tokens * m.rows);
        let k: &CpuKernels = kernels::get(m.ty).expect("weight type checked at load");
        let j = sets.iter().position(|s| s.is_none_or(|s| key(s) == key(k))).expect("at most one set per product");
        sets[j].get_or_insert(k);
        (kern[i], set_of[i]) = (Some(k), j);
    }
    let mut acts: [Option<Activations>; MAX_GROUP] = [None, None, None, None];
    for ((act, k), buf) in acts.iter_mut().zip(sets).zip(scratch.iter_mut()) {
        if let Some(k) = k {
            *act = Some(quantize_activations(k, cols, x, n_tokens, buf));
        }
    }
    // Tasks of every product, numbered consecutively: product i owns tasks first[i]..first[i + 1].
    let all_rows: usize = products.iter().map(|p| p.w.matrix().rows).sum();
    // Whole 4-row tiles per task.
    let per = rows_per_task(all_rows, pool.n_threads(), n_tokens).next_multiple_of(4);
    let mut first = [0usize; MAX_GROUP + 1];
    let mut outs = [SyncPtr(std::ptr::null_mut()); MAX_GROUP];
    let mut weights: [Option<Matrix>; MAX_GROUP] = [None; MAX_GROUP];
    for (i, p) in products.iter_mut().enumerate() {
        let m = p.w.matrix();
        first[i + 1] = first[i] + m.rows.div_ceil(per);
        outs[i] = SyncPtr(p.out.as_mut_ptr());
        weights[i] = Some(m);
    }
    pool.run(first[n], &|task| {
        let i = (0..n).rfind(|&i| first[i] <= task).expect("task 0 belongs to product 0");
        let (k, w) = (kern[i].expect("set above"), &weights[i].expect("set above"));
        let act = acts[set_of[i]].as_ref().expect("quantized above");
        let start = (task - first[i]) * per;
        let range = start..(start + per).min(w.rows);
        // SAFETY: tasks cover disjoint row ranges of each output; the outputs outlive the call.
        unsafe {
            match kernels::rows4(w.ty).filter(|_| n_tokens == 1 && act.prepared.is_none()) {
                Some(r4) => matvec_rows4(r4, k, w, range, act, outs[i]),
                None => rows_times_tokens(k, w, range, act, outs[i], w.rows),
            }
        }
    });
}

/// `out[r] = dot(w[r], act)` for one token over the weight rows `rows`: four rows per kernel
/// call, the remainder through [`rows_times_tokens`].
///
/// # Safety
/// As [`rows_times_tokens`] with `n_tokens = 1`.
unsafe fn matvec_rows4(
    r4: kernels::VecDotRows4,
    k: &CpuKernels,
    w: &Matrix,
    rows: std::ops::Range<usize>,
    act: &Activations,
    out: SyncPtr,
) {
    let (data, rb) = (w.data, w.row_bytes);
    let whole = rows.start + (rows.len() / 4) * 4;
    for r in (rows.start..whole).step_by(4) {
        let mut o = [0f32; 4];
        r4(w.cols, &data[r * rb..(r + 4) * rb], rb, act.quantized, &mut o);
        // SAFETY: the caller owns these outputs.
        unsafe { std::ptr::copy_nonoverlapping(o.as_ptr(), out.get().add(r), 4) };
    }
    // SAFETY: as above.
    unsafe { rows_times_tokens(k, w, whole..rows.end, act, out, w.rows) };
}

/// How many rows ahead the one-row decode loop prefetches.
const PREFETCH_ROWS: usize = 2;

/// `out[t * out_stride + r] = dot(w[r], act[t])` for the weight rows `rows` and every token of
/// `act`: the unit of work one task runs.
///
/// # Safety
/// `out` must have room for `n_tokens × out_stride` values, and no other thread may write the
/// elements `(t, r)` for `r` in `rows` while this runs.
pub unsafe fn rows_times_tokens(
    k: &CpuKernels,
    w: &Matrix,
    rows: std::ops::Range<usize>,
    act: &Activations,
    out: SyncPtr,
    out_stride: usize,
) {
    let data = w.data;
    let (cols, row_bytes, n_tokens, act_bytes) = (w.cols, w.row_bytes, act.n_tokens, act.row_bytes);
    if let Some((tiles, prepared)) = act.prepared {
        // SAFETY: the caller's guarantees are the tile kernel's.
        return unsafe { (tiles.rows_tokens)(data, row_bytes, cols, rows, prepared, n_tokens, out.get(), out_stride) };
    }
    let act = act.quantized;
    let tiles = n_tokens / 4;
    let rows_end = rows.end;
    for r in rows {
        let wr = &data[r * row_bytes..(r + 1) * row_bytes];
        if n_tokens < 4 && r + PREFETCH_ROWS < rows_end {
            // Decode reads each row once: ask for a later one while this one computes.
            super::prefetch_l2_block(data[(r + PREFETCH_ROWS) * row_bytes..].as_ptr(), row_bytes);
        }
        for tile in 0..tiles {
            let t0 = 4 * tile;
            let mut o = [0f32; 4];
            k.dot_x4(cols, wr, &act[t0 * act_bytes..], act_bytes, &mut o);
            for (i, v) in o.into_iter().enumerate() {
                // SAFETY: the caller owns (t, r) for every r in `rows`.
                unsafe { *out.get().add((t0 + i) * out_stride + r) = v };
            }
        }
        for t in 4 * tiles..n_tokens {
            let v = (k.k.vec_dot)(cols, wr, &act[t * act_bytes..(t + 1) * act_bytes]);
            // SAFETY: as above.
            unsafe { *out.get().add(t * out_stride + r) = v };
        }
    }
}
