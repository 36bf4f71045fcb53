//! A window of consecutive transformer layers with its own KV cache: the unit of work one
//! device runs per visit of the ring. Reading it top to bottom is the llama forward pass.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Model;
use super::config::ModelConfig;
use super::kv_cache::KvCache;
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
        let n = |s: &str| format!("blk.{i}.{s}");
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
    pub fn new(m: &Model, layers: Range<usize>, n_ctx: usize, pool: Arc<ThreadPool>) -> Result<LayerWindow> {
        let c = &m.config;
        if layers.start >= layers.end || layers.end > c.n_layer {
            return Err(Error::msg(format!("layer window {layers:?} is outside the model's {} layers", c.n_layer)));
        }
        let weights = layers.clone().map(|i| LayerWeights::load(m, i)).collect::<Result<Vec<_>>>()?;
        let freq_factors = load_optional_vector(&m.gguf, "rope_freqs.weight", c.rope_dims / 2)?;
        Ok(LayerWindow {
            rope: Rope::new(c.rope_dims, c.rope_base, c.rope_freq_scale, c.rope_style, freq_factors),
            kv: KvCache::new(layers.len(), n_ctx, c.kv_dim_k(), c.kv_dim_v()),
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
        self.kv.n_ctx
    }

    /// Positions currently held in the KV cache.
    pub fn kv_len(&self) -> usize {
        self.kv.len
    }

    pub fn kv_truncate(&mut self, len: usize) {
        self.kv.truncate(len);
    }

    pub fn kv_bytes(&self) -> usize {
        self.kv.bytes()
    }

    pub fn layer_weights(&self) -> &[LayerWeights] {
        &self.weights
    }

    /// Run the window on `n_tokens` hidden states (row-major, `n_embd` wide) at positions
    /// `pos..pos + n_tokens`, in place. Earlier positions must already be in the cache.
    pub fn forward(&mut self, hidden: &mut [f32], n_tokens: usize, pos: usize) -> Result<()> {
        let c = &self.cfg;
        if hidden.len() != n_tokens * c.n_embd {
            return Err(Error::msg(format!(
                "window {:?}: got {} activations for {n_tokens} tokens of width {}",
                self.layers,
                hidden.len(),
                c.n_embd
            )));
        }
        if pos > self.kv.len {
            return Err(Error::msg(format!(
                "window {:?}: position {pos} requested but the cache holds only {}",
                self.layers, self.kv.len
            )));
        }
        if pos + n_tokens > self.kv.n_ctx {
            return Err(Error::msg(format!(
                "context is full: {} positions needed, the context holds {} (raise -c)",
                pos + n_tokens,
                self.kv.n_ctx
            )));
        }
        self.kv.len = pos;
        // The rotary tables of these positions, shared by every layer.
        let half = c.rope_dims / 2;
        self.s.rope.resize(n_tokens * half, (0.0, 0.0));
        for (t, table) in self.s.rope.chunks_exact_mut(half.max(1)).enumerate() {
            self.rope.table(pos + t, table);
        }
        for li in 0..self.weights.len() {
            self.layer(li, hidden, n_tokens, pos);
        }
        self.kv.len = pos + n_tokens;
        Ok(())
    }

    fn layer(&mut self, li: usize, x: &mut [f32], n: usize, pos: usize) {
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
        self.kv.k_rows_mut(li, pos, n).copy_from_slice(k);
        self.kv.v_rows_mut(li, pos, n).copy_from_slice(v);
        let attn = grow(&mut s.attn, n * c.n_head * c.head_dim_v);
        attention(pool, c, &self.kv, li, q, attn, n, pos, &mut s.scores);
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

/// Causal grouped-query attention for `n` new tokens at `pos..pos+n` over the cached keys and
/// values of layer `li` (which already include the new tokens). One task per (token, head).
#[allow(clippy::too_many_arguments)]
fn attention(
    pool: &ThreadPool,
    c: &ModelConfig,
    kv: &KvCache,
    li: usize,
    q: &[f32],
    out: &mut [f32],
    n: usize,
    pos: usize,
    scores: &mut Vec<f32>,
) {
    let (hk, hv) = (c.head_dim_k, c.head_dim_v);
    let group = c.n_head / c.n_head_kv;
    let (kd, vd) = (c.kv_dim_k(), c.kv_dim_v());
    let total = pos + n;
    let keys = kv.k_layer(li, total);
    let values = kv.v_layer(li, total);
    let scale = 1.0 / (hk as f32).sqrt();
    let n_tasks = n * c.n_head;
    let n_chunks = pool.n_threads().min(n_tasks);
    let scores = grow(scores, n_chunks * total);
    let scores_ptr = SyncPtr(scores.as_mut_ptr());
    let out_ptr = SyncPtr(out.as_mut_ptr());
    pool.run(n_chunks, &|ci| {
        let (scores_ptr, out_ptr) = (scores_ptr, out_ptr);
        // SAFETY: chunk `ci` owns scores[ci*total..] and the output heads of its tasks.
        let sc = unsafe { std::slice::from_raw_parts_mut(scores_ptr.0.add(ci * total), total) };
        // Strided, not contiguous: a later token attends over more keys (causal), so
        // contiguous chunks would leave the first thread with a quarter of the work.
        for task in (ci..n_tasks).step_by(n_chunks) {
            let (t, h) = (task / c.n_head, task % c.n_head);
            let g = h / group;
            let seen = pos + t + 1;
            let qh = &q[t * c.n_head * hk + h * hk..][..hk];
            let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.0.add(t * c.n_head * hv + h * hv), hv) };
            let cache =
                ops::HeadCache { keys: &keys[g * hk..], kstride: kd, values: &values[g * hv..], vstride: vd, seen };
            ops::attend(qh, &cache, scale, sc, o);
        }
    });
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
