//! A model running on one device: the head plus windows covering every layer, in order.

use std::sync::Arc;

use super::{Head, LayerWindow, Model};
use crate::cpu::pool::ThreadPool;
use crate::error::{Error, Result};

/// Prompt tokens processed per forward pass (llama.cpp's default n_ubatch).
pub const DEFAULT_BATCH: usize = 512;

pub struct Session {
    pub head: Head,
    pub windows: Vec<LayerWindow>,
    n_embd: usize,
    n_ctx: usize,
    n_batch: usize,
    pos: usize,
    hidden: Vec<f32>,
    logits: Vec<f32>,
}

/// The default context: the model's training context, capped so the f32 KV cache takes at
/// most a quarter of the memory available now.
pub fn default_context(m: &Model) -> usize {
    let c = &m.config;
    let per_pos = (c.kv_dim_k() + c.kv_dim_v()) * 4 * c.n_layer;
    let avail = crate::sys::available_memory().unwrap_or(4 << 30);
    let cap = (avail / 4 / per_pos.max(1) as u64) as usize;
    c.n_ctx_train.min(cap.max(256))
}

impl Session {
    /// All layers in one window.
    pub fn new(m: &Model, n_ctx: usize, threads: usize) -> Result<Session> {
        Self::with_windows(m, n_ctx, threads, &[m.config.n_layer])
    }

    /// Layers split into consecutive windows of the given sizes (must sum to the layer count).
    pub fn with_windows(m: &Model, n_ctx: usize, threads: usize, sizes: &[usize]) -> Result<Session> {
        let c = &m.config;
        if sizes.iter().sum::<usize>() != c.n_layer || sizes.contains(&0) {
            return Err(Error::msg(format!("windows {sizes:?} do not cover the model's {} layers", c.n_layer)));
        }
        let pool = Arc::new(ThreadPool::new(threads));
        let mut start = 0;
        let mut windows = Vec::new();
        for &w in sizes {
            windows.push(LayerWindow::new(m, start..start + w, n_ctx, pool.clone())?);
            start += w;
        }
        Ok(Session {
            head: Head::new(m, pool)?,
            windows,
            n_embd: c.n_embd,
            n_ctx,
            n_batch: DEFAULT_BATCH,
            pos: 0,
            hidden: Vec::new(),
            logits: Vec::new(),
        })
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    pub fn n_vocab(&self) -> usize {
        self.head.n_vocab()
    }

    /// Tokens already in the cache.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Forget the cache from `pos` on.
    pub fn truncate(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
        for w in &mut self.windows {
            w.kv_truncate(self.pos);
        }
    }

    pub fn set_batch(&mut self, n_batch: usize) {
        self.n_batch = n_batch.max(1);
    }

    /// Append `tokens` and return the logits after the last one.
    pub fn decode(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        if tokens.is_empty() {
            return Err(Error::msg("nothing to decode: empty token list"));
        }
        let mut last = 0;
        for chunk in tokens.chunks(self.n_batch) {
            self.forward(chunk)?;
            last = chunk.len();
        }
        let v = self.n_vocab();
        self.logits.resize(v, 0.0);
        let row = &self.hidden[(last - 1) * self.n_embd..last * self.n_embd];
        self.head.logits(row, &mut self.logits);
        Ok(&self.logits)
    }

    /// Append `tokens` and return the logits after every one of them (`len × n_vocab`).
    pub fn decode_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let v = self.n_vocab();
        let mut out = vec![0f32; tokens.len() * v];
        let mut done = 0;
        for chunk in tokens.chunks(self.n_batch) {
            self.forward(chunk)?;
            let n = chunk.len();
            self.head.logits_batch(&self.hidden[..n * self.n_embd], &mut out[done * v..(done + n) * v]);
            done += n;
        }
        Ok(out)
    }

    fn forward(&mut self, tokens: &[u32]) -> Result<()> {
        let n = tokens.len();
        self.hidden.resize(n * self.n_embd, 0.0);
        self.head.embed(tokens, &mut self.hidden)?;
        for w in &mut self.windows {
            w.forward(&mut self.hidden, n, self.pos)?;
        }
        self.pos += n;
        Ok(())
    }
}
