//! A window of consecutive transformer layers with its own KV cache: the unit of work one
//! device runs per visit of the ring. Reading it top to bottom is the llama forward pass.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Model;
use super::batch::{KvOp, SeqPos};
use super::config::ModelConfig;
use super::kv_cache::KvCache;
use super::pipeline::Window;
use super::tensor_names::{ROPE_FREQS, layer_tensor};
use super::weights::{Weight, load_optional_vector, load_vector};
use crate::cpu::matmul::{GroupScratch, Product, SyncPtr, matmul_group};
use crate::cpu::ops::{self, Rope};
use crate::cpu::pool::ThreadPool;
use crate::error::{Error, Result};

/// One transformer block's weights (views into the map; norms and biases copied, they are tiny).
pub struct LayerWeights {
    attn_norm: Vec<f32>,
    wq: Weight,
    wk: Weight,
    wv: Weight,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    wo: Weight,
    ffn_norm: Vec<f32>,
    gate: Weight,
    up: Weight,
    down: Weight,
}

impl LayerWeights {
    fn load(m: &Model, i: usize) -> Result<LayerWeights> {
        let c = &m.config;
        let f = &m.gguf;
        let n = |s: &str| layer_tensor(i, s);
        Ok(LayerWeights {
            attn_norm: load_vector(f, &n("attn_norm.weight"), c.n_embd)?,
            wq: Weight::load(f, &n("attn_q.weight"), c.n_embd, c.q_dim())?,
            wk: Weight::load(f, &n("attn_k.weight"), c.n_embd, c.kv_dim_k())?,
            wv: Weight::load(f, &n("attn_v.weight"), c.n_embd, c.kv_dim_v())?,
            bq: load_optional_vector(f, &n("attn_q.bias"), c.q_dim())?,
            bk: load_optional_vector(f, &n("attn_k.bias"), c.kv_dim_k())?,
            bv: load_optional_vector(f, &n("attn_v.bias"), c.kv_dim_v())?,
            wo: Weight::load(f, &n("attn_output.weight"), c.n_head * c.head_dim_v, c.n_embd)?,
            ffn_norm: load_vector(f, &n("ffn_norm.weight"), c.n_embd)?,
            gate: Weight::load(f, &n("ffn_gate.weight"), c.n_embd, c.n_ff)?,
            up: Weight::load(f, &n("ffn_up.weight"), c.n_embd, c.n_ff)?,
            down: Weight::load(f, &n("ffn_down.weight"), c.n_ff, c.n_embd)?,
        })
    }

    /// The matrices, for prefetch and cost accounting.
    pub fn matrices(&self) -> [&Weight; 7] {
        [&self.wq, &self.wk, &self.wv, &self.wo, &self.gate, &self.up, &self.down]
    }
}

/// Activation buffers, sized for the largest batch seen so far (grown, never per token).
#[derive(Default)]
struct Scratch {
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    act: GroupScratch,
    scores: Vec<f32>,
    rope: Vec<(f32, f32)>,
}

fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

pub struct LayerWindow {
    cfg: ModelConfig,
    pub layers: Range<usize>,
    weights: Vec<LayerWeights>,
    kv: KvCache,
    rope: Rope,
    pool: Arc<ThreadPool>,
    s: Scratch,
    /// Matrices of the running forward done so far, in [`LayerWindow::file_ranges`] order
    /// (seven per layer); the pager streams and releases weights behind it.
    progress: Option<Arc<AtomicUsize>>,
}

/// Matrices per layer in [`LayerWindow::file_ranges`] (q, k, v, o, gate, up, down).
pub const MATRICES_PER_LAYER: usize = 7;

impl LayerWindow {
    /// Layers `layers` of `m` with a KV cache of `n_seq` sequences of `n_ctx` positions each.
    pub fn new(
        m: &Model,
        layers: Range<usize>,
        n_ctx: usize,
        n_seq: usize,
        pool: Arc<ThreadPool>,
    ) -> Result<LayerWindow> {
        let c = &m.config;
        if layers.start >= layers.end || layers.end > c.n_layer {
            return Err(Error::msg(format!("layer window {layers:?} is outside the model's {} layers", c.n_layer)));
        }
        let weights = layers.clone().map(|i| LayerWeights::load(m, i)).collect::<Result<Vec<_>>>()?;
        let freq_factors = load_optional_vector(&m.gguf, ROPE_FREQS, c.rope_dims / 2)?;
        Ok(LayerWindow {
            rope: Rope::new(c.rope_dims, c.rope_base, c.rope_freq_scale, c.rope_style, freq_factors),
            kv: KvCache::new(layers.len(), n_ctx, n_seq, c.kv_dim_k(), c.kv_dim_v())?,
            cfg: c.clone(),
            layers,
            weights,
            pool,
            s: Scratch::default(),
            progress: None,
        })
    }

    /// Report progress (matrices done, see [`MATRICES_PER_LAYER`]) into `p` while running.
    pub fn set_progress(&mut self, p: Arc<AtomicUsize>) {
        self.progress = Some(p);
    }

    pub fn n_ctx(&self) -> usize {
        self.kv.n_ctx()
    }

    /// Positions held in the KV cache for sequence `seq`.
    pub fn kv_len(&self, seq: usize) -> usize {
        self.kv.len(seq)
    }

    pub fn kv_bytes(&self) -> usize {
        self.kv.bytes()
    }

    pub fn layer_weights(&self) -> &[LayerWeights] {
        &self.weights
    }

    /// Run the window in place on one row of hidden state (`n_embd` wide) per entry of `rows`,
    /// each at its sequence and position. Within a sequence, positions must follow each other
    /// and start at or before what the cache holds for it (a start before overwrites the rest).
    pub fn run(&mut self, rows: &[SeqPos], hidden: &mut [f32]) -> Result<()> {
        let c = &self.cfg;
        let n_tokens = rows.len();
        let what = format!("window {:?}", self.layers);
        check_hidden(&what, n_tokens, hidden.len(), c.n_embd)?;
        check_rows(rows, &what, self.kv.n_seq(), self.kv.n_ctx(), |s| self.kv.len(s))?;
        // Every row's keys and values are written before any attends, so a row sees the
        // earlier rows of its own sequence in this batch.
        for r in rows {
            self.kv.set_len(r.seq as usize, (r.pos + 1) as usize);
        }
        // The rotary tables of these positions, shared by every layer.
        let half = c.rope_dims / 2;
        self.s.rope.resize(n_tokens * half, (0.0, 0.0));
        for (r, table) in rows.iter().zip(self.s.rope.chunks_exact_mut(half.max(1))) {
            self.rope.table(r.pos as usize, table);
        }
        for li in 0..self.weights.len() {
            self.layer(li, hidden, rows);
        }
        Ok(())
    }

    fn layer(&mut self, li: usize, x: &mut [f32], rows: &[SeqPos]) {
        let n = rows.len();
        let c = &self.cfg;
        let w = &self.weights[li];
        let s = &mut self.s;
        let pool = &*self.pool;
        let (q_dim, kd, vd) = (c.q_dim(), c.kv_dim_k(), c.kv_dim_v());

        // Attention block.
        let xn = grow(&mut s.xn, n * c.n_embd);
        ops::rms_norm_into(xn, x, &w.attn_norm, c.rms_eps);
        let (q, k, v) = (grow(&mut s.q, n * q_dim), grow(&mut s.k, n * kd), grow(&mut s.v, n * vd));
        let mut qkv = [Product { w: &w.wq, out: q }, Product { w: &w.wk, out: k }, Product { w: &w.wv, out: v }];
        matmul_group(pool, xn, n, &mut qkv, &mut s.act);
        let [Product { out: q, .. }, Product { out: k, .. }, Product { out: v, .. }] = qkv;
        report(&self.progress, li, 3);
        for (t, b) in [(&mut *q, &w.bq), (&mut *k, &w.bk), (&mut *v, &w.bv)] {
            if let Some(b) = b {
                ops::add_bias(t, b);
            }
        }
        let half = c.rope_dims / 2;
        for t in 0..n {
            let table = &s.rope[t * half..(t + 1) * half];
            self.rope.apply(&mut q[t * q_dim..(t + 1) * q_dim], c.head_dim_k, table);
            self.rope.apply(&mut k[t * kd..(t + 1) * kd], c.head_dim_k, table);
        }
        for (t, r) in rows.iter().enumerate() {
            let (seq, pos) = (r.seq as usize, r.pos as usize);
            self.kv.k_row_mut(li, seq, pos).copy_from_slice(&k[t * kd..(t + 1) * kd]);
            self.kv.v_row_mut(li, seq, pos).copy_from_slice(&v[t * vd..(t + 1) * vd]);
        }
        let attn = grow(&mut s.attn, n * c.n_head * c.head_dim_v);
        attention(pool, c, &self.kv, li, q, attn, rows, &mut s.scores);
        let proj = grow(&mut s.proj, n * c.n_embd);
        matmul_group(pool, attn, n, &mut [Product { w: &w.wo, out: proj }], &mut s.act);
        report(&self.progress, li, 4);
        ops::add_in_place(x, proj);

        // Feed-forward block (SwiGLU).
        ops::rms_norm_into(xn, x, &w.ffn_norm, c.rms_eps);
        let (gate, up) = (grow(&mut s.gate, n * c.n_ff), grow(&mut s.up, n * c.n_ff));
        let mut gate_up = [Product { w: &w.gate, out: gate }, Product { w: &w.up, out: up }];
        matmul_group(pool, xn, n, &mut gate_up, &mut s.act);
        report(&self.progress, li, 6);
        let [Product { out: gate, .. }, Product { out: up, .. }] = gate_up;
        ops::silu_mul(gate, up);
        matmul_group(pool, gate, n, &mut [Product { w: &w.down, out: proj }], &mut s.act);
        report(&self.progress, li, 7);
        ops::add_in_place(x, proj);
    }
}

/// Store "matrices done" (`matrices` of layer `li`) where the pager reads it.
fn report(progress: &Option<Arc<AtomicUsize>>, li: usize, matrices: usize) {
    if let Some(p) = progress {
        p.store(li * MATRICES_PER_LAYER + matrices, Ordering::Release);
    }
}

/// Check that `len` activations are one row of `width` per token.
pub fn check_hidden(what: &str, n_tokens: usize, len: usize, width: usize) -> Result<()> {
    if len != n_tokens * width {
        return Err(Error::msg(format!("{what}: got {len} activations for {n_tokens} tokens of width {width}")));
    }
    Ok(())
}

/// Check that `rows` fit a cache of `n_seq` sequences of `n_ctx` positions whose lengths are
/// `len(seq)`: per sequence, consecutive positions starting at or before its length.
pub fn check_rows(rows: &[SeqPos], what: &str, n_seq: usize, n_ctx: usize, len: impl Fn(usize) -> usize) -> Result<()> {
    // Per sequence: the position its next row must have, once it has one in this batch.
    let mut next: Vec<Option<usize>> = vec![None; n_seq];
    for r in rows {
        let (seq, pos) = (r.seq as usize, r.pos as usize);
        if seq >= n_seq {
            return Err(Error::msg(format!("{what}: sequence {seq} requested, the cache holds {n_seq}")));
        }
        if pos >= n_ctx {
            return Err(Error::msg(format!(
                "context is full: position {pos} of sequence {seq} requested, the context holds {n_ctx} (raise -c)"
            )));
        }
        let ok = match next[seq] {
            Some(expected) => pos == expected,
            None => pos <= len(seq),
        };
        if !ok {
            let expected = next[seq].map_or(format!("at most {}", len(seq)), |e| e.to_string());
            return Err(Error::msg(format!("{what}: position {pos} of sequence {seq} requested, expected {expected}")));
        }
        next[seq] = Some(pos + 1);
    }
    Ok(())
}

/// Causal grouped-query attention for the rows of `q`, each over the cached keys and values
/// of its own sequence in layer `li` up to its position (the cache already includes the new
/// tokens). One task per (token, head); a token's result does not depend on its batch.
#[allow(clippy::too_many_arguments)]
fn attention(
    pool: &ThreadPool,
    c: &ModelConfig,
    kv: &KvCache,
    li: usize,
    q: &[f32],
    out: &mut [f32],
    rows: &[SeqPos],
    scores: &mut Vec<f32>,
) {
    let (hk, hv) = (c.head_dim_k, c.head_dim_v);
    let group = c.n_head / c.n_head_kv;
    let (kd, vd) = (c.kv_dim_k(), c.kv_dim_v());
    let longest = rows.iter().map(|r| r.pos as usize + 1).max().unwrap_or(0);
    let scale = 1.0 / (hk as f32).sqrt();
    let n_tasks = rows.len() * c.n_head;
    let n_chunks = pool.n_threads().min(n_tasks);
    let scores = grow(scores, n_chunks * longest);
    let scores_ptr = SyncPtr(scores.as_mut_ptr());
    let out_ptr = SyncPtr(out.as_mut_ptr());
    pool.run(n_chunks, &|ci| {
        let (scores_ptr, out_ptr) = (scores_ptr, out_ptr);
        // SAFETY: chunk `ci` owns scores[ci*longest..] and the output heads of its tasks.
        let sc = unsafe { std::slice::from_raw_parts_mut(scores_ptr.0.add(ci * longest), longest) };
        // Strided, not contiguous: a later token attends over more keys (causal), so
        // contiguous chunks would leave the first thread with a quarter of the work.
        for task in (ci..n_tasks).step_by(n_chunks) {
            let (t, h) = (task / c.n_head, task % c.n_head);
            let g = h / group;
            let (seq, seen) = (rows[t].seq as usize, rows[t].pos as usize + 1);
            let (keys, values) = (kv.k_seq(li, seq, seen), kv.v_seq(li, seq, seen));
            let qh = &q[t * c.n_head * hk + h * hk..][..hk];
            let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.0.add(t * c.n_head * hv + h * hv), hv) };
            let cache =
                ops::HeadCache { keys: &keys[g * hk..], kstride: kd, values: &values[g * hv..], vstride: vd, seen };
            ops::attend(qh, &cache, scale, &mut sc[..seen], o);
        }
    });
}

impl Window for LayerWindow {
    fn forward(&mut self, rows: &[SeqPos], hidden: &mut Vec<f32>) -> Result<()> {
        self.run(rows, hidden)
    }

    fn kv(&mut self, op: KvOp) -> Result<()> {
        match op {
            KvOp::Reset => self.kv.reset(),
            KvOp::Truncate { seq, len } if (seq as usize) < self.kv.n_seq() => {
                self.kv.truncate(seq as usize, len as usize)
            }
            KvOp::Truncate { seq, .. } => {
                return Err(Error::msg(format!("window {:?}: no sequence {seq}", self.layers)));
            }
        }
        Ok(())
    }

    fn mapped(&self) -> Option<(crate::gguf::GgufFile, Vec<Range<usize>>)> {
        LayerWindow::mapped(self)
    }

    fn set_progress(&mut self, progress: Arc<AtomicUsize>) {
        LayerWindow::set_progress(self, progress)
    }
}

impl LayerWindow {
    /// Byte ranges of this window's weights in the model file (prefetch, release, streaming).
    pub fn file_ranges(&self) -> Vec<Range<usize>> {
        self.weights.iter().flat_map(|l| l.matrices().map(|w| w.file_range())).collect()
    }

    /// The mapped file and this window's ranges in it (for [`crate::memory::Pager`]).
    pub fn mapped(&self) -> Option<(crate::gguf::GgufFile, Vec<Range<usize>>)> {
        self.weights.first().map(|l| (l.wq.file().clone(), self.file_ranges()))
    }
}
