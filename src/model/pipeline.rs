//! The pipeline: embedding → layer windows → output, with the KV state of every sequence.
//! It is the one engine: `prima run/chat/perplexity/bench` run it with every window on this
//! device; the ring's head runs it with remote windows (windows that send the activations
//! around the ring and wait for them back) interleaved with its own.
//!
//! # Sequences and batches
//! A pipeline holds up to `n_seq` sequences (fixed at construction), each with its own KV slot
//! of `n_ctx` positions and its own length. One [`Pipeline::decode_batch`] carries tokens of any
//! of them ([`Batch`]: token, sequence, position, want-logits); attention stays within a
//! sequence, and a token's logits do not depend on the other tokens of its batch (as far as
//! the CPU kernels compute each output row the same way whatever the batch size).
//!
//! ```text
//! let mut batch = Batch::new();
//! batch.push_sequence(0, p.seq_pos(0), &prompt_a);   // logits of its last token
//! batch.push(next_b, 1, p.seq_pos(1), true);         // one decode step of sequence 1
//! let logits = p.decode_batch(&batch)?;              // 2 rows × n_vocab, in batch order
//! p.seq_clear(1);                                    // sequence 1's slot is free again
//! ```
//! One-sequence users (run, chat, perplexity) call [`Pipeline::decode`], [`Pipeline::pos`] and
//! [`Pipeline::truncate`], which act on sequence 0.
//!
//! # One loop
//! A batch is cut into chunks of at most `n_batch` tokens; each chunk is embedded, passed
//! through every window in order and, for the tokens that want them, turned into logits.
//! Windows that answer later ([`Window::submit`] returning `None`: remote ones) let up to
//! `max_in_flight` chunks travel at once, so every device of a ring works on some chunk of a
//! long prompt; each window still sees the chunks in order.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use super::batch::{Batch, KvOp, SeqId, SeqPos, one_per_sequence};
use super::window::check_rows;
use super::{Head, LayerWindow, Model};
use crate::cpu::pool::ThreadPool;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// Prompt tokens processed per forward pass (llama.cpp's default n_ubatch).
pub const DEFAULT_BATCH: usize = 512;

/// Consecutive layers with their slice of the KV cache, on this device or another.
pub trait Window: Send {
    /// Run the window in place on one row of hidden state per entry of `rows`.
    fn forward(&mut self, rows: &[SeqPos], hidden: &mut Vec<f32>) -> Result<()>;
    /// Start the window on a chunk: `Some(output)` when computed at once (local windows),
    /// `None` when the output comes later from [`Window::collect`] (remote windows).
    fn submit(&mut self, rows: &[SeqPos], mut hidden: Vec<f32>) -> Result<Option<Vec<f32>>> {
        self.forward(rows, &mut hidden)?;
        Ok(Some(hidden))
    }
    /// The output of the oldest chunk submitted and not yet collected (`rows` are its rows).
    fn collect(&mut self, rows: &[SeqPos]) -> Result<Vec<f32>> {
        let _ = rows;
        Err(Error::msg("a local window has no chunk in flight"))
    }
    /// Apply a KV cache operation.
    fn kv(&mut self, op: KvOp) -> Result<()>;
    /// Whether the window computes on this device (and may be paged, see [`Paging`]).
    fn is_local(&self) -> bool {
        true
    }
    /// The mapped weights (file, byte ranges), for prefetch and release (`crate::memory`).
    fn mapped(&self) -> Option<(GgufFile, Vec<Range<usize>>)> {
        None
    }
    /// Where to report, while running, how many of [`Window::mapped`]'s ranges are done with.
    fn set_progress(&mut self, _progress: Arc<AtomicUsize>) {}
}

/// Makes the window of a layer range, on the pipeline's thread pool ([`Pipeline::open_with`]).
pub type OpenWindow<'a> = dyn Fn(Range<usize>, &Arc<ThreadPool>) -> Result<Box<dyn Window>> + 'a;

/// The ends of the network: token embedding in, output norm and matrix out.
pub trait Ends: Send {
    fn n_embd(&self) -> usize;
    fn n_vocab(&self) -> usize;
    /// Hidden states of `tokens`, row-major into `out`.
    fn embed(&self, tokens: &[u32], out: &mut [f32]) -> Result<()>;
    /// Logits of each `n_embd`-wide row of `hidden`, row-major into `out`.
    fn logits(&mut self, hidden: &[f32], out: &mut [f32]);
}

/// Page-cache hooks around the local windows (`crate::memory::Pager`), numbered in run order
/// among the local windows. `decode`: the chunk is a decode step (one token per sequence).
pub trait Paging: Send {
    fn arrived(&mut self, window: usize, decode: bool);
    fn done(&mut self, window: usize, decode: bool);
}

/// Rebuilds a pipeline's windows after a batch failed (a ring that lost a device): the
/// pipeline then replays every sequence's history on the new windows and retries the batch,
/// so its callers never see the failure. Exact when replaying computes the KV state the
/// original steps computed (batch-invariant kernels).
pub trait Recovery: Send {
    /// `err` ended a batch `after` it started: new windows to go on with, or the error to give up.
    fn recover(&mut self, err: Error, after: Duration) -> Result<Rebuilt>;
    /// The replay of `tokens` tokens on the rebuilt windows took `took`.
    fn replayed(&mut self, tokens: usize, took: Duration);
    /// The batch that failed went through on the rebuilt windows.
    fn resumed(&mut self);
}

/// What a [`Recovery`] hands back: the windows (fresh KV state) and their page-cache hooks.
pub struct Rebuilt {
    pub windows: Vec<Box<dyn Window>>,
    pub paging: Option<Box<dyn Paging>>,
    pub max_in_flight: usize,
}

/// Time spent on this device in decode steps (embedding, local windows, logits).
#[derive(Clone, Copy, Debug, Default)]
pub struct PipelineStats {
    pub decode_steps: u64,
    pub compute_ns: u64,
}

pub struct Pipeline {
    ends: Box<dyn Ends>,
    windows: Vec<Box<dyn Window>>,
    /// Per window: its index among the local windows (for [`Paging`]).
    local_index: Vec<Option<usize>>,
    paging: Option<Box<dyn Paging>>,
    n_ctx: usize,
    n_batch: usize,
    max_in_flight: usize,
    /// Per sequence: positions in the KV cache.
    seq_len: Vec<usize>,
    /// Per sequence: the tokens at those positions (what a replay feeds again).
    history: Vec<Vec<u32>>,
    recovery: Option<Box<dyn Recovery>>,
    logits: Vec<f32>,
    /// Hidden rows of the tokens that want logits, gathered.
    selected: Vec<f32>,
    /// Hidden-state buffers for reuse.
    spare: Vec<Vec<f32>>,
    stats: PipelineStats,
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

impl Pipeline {
    /// One sequence, every layer in one window on this device.
    pub fn new(m: &Model, n_ctx: usize, threads: usize) -> Result<Pipeline> {
        Self::open(m, n_ctx, 1, threads, &[m.config.n_layer])
    }

    /// `n_seq` sequences of `n_ctx` positions each; the layers split into consecutive windows
    /// of the given sizes (which must cover the model), all on this device.
    pub fn open(m: &Model, n_ctx: usize, n_seq: usize, threads: usize, sizes: &[usize]) -> Result<Pipeline> {
        Self::open_with(m, n_ctx, n_seq, threads, sizes, &|r, pool| {
            Ok(Box::new(LayerWindow::new(m, r, n_ctx, n_seq, pool.clone())?))
        })
    }

    /// [`Pipeline::open`] with each window made by `open` from its layers (the GPU offload
    /// makes split CPU/GPU windows: `crate::gpu::Offload`).
    pub fn open_with(
        m: &Model,
        n_ctx: usize,
        n_seq: usize,
        threads: usize,
        sizes: &[usize],
        open: &OpenWindow,
    ) -> Result<Pipeline> {
        let c = &m.config;
        if sizes.iter().sum::<usize>() != c.n_layer || sizes.contains(&0) {
            return Err(Error::msg(format!("windows {sizes:?} do not cover the model's {} layers", c.n_layer)));
        }
        let pool = Arc::new(ThreadPool::new(threads));
        let mut start = 0;
        let mut windows: Vec<Box<dyn Window>> = Vec::new();
        for &w in sizes {
            windows.push(open(start..start + w, &pool)?);
            start += w;
        }
        Ok(Self::from_parts(Box::new(Head::new(m, pool)?), windows, n_ctx, n_seq))
    }

    /// A pipeline over given parts (the ring's head: its own windows and remote ones).
    pub fn from_parts(ends: Box<dyn Ends>, windows: Vec<Box<dyn Window>>, n_ctx: usize, n_seq: usize) -> Pipeline {
        let mut n_local = 0;
        let local_index = windows
            .iter()
            .map(|w| {
                w.is_local().then(|| {
                    n_local += 1;
                    n_local - 1
                })
            })
            .collect();
        Pipeline {
            ends,
            windows,
            local_index,
            paging: None,
            n_ctx,
            n_batch: DEFAULT_BATCH,
            max_in_flight: 1,
            seq_len: vec![0; n_seq.max(1)],
            history: vec![Vec::new(); n_seq.max(1)],
            recovery: None,
            logits: Vec::new(),
            selected: Vec::new(),
            spare: Vec::new(),
            stats: PipelineStats::default(),
        }
    }

    /// Page-cache management of the local windows.
    pub fn set_paging(&mut self, paging: Box<dyn Paging>) {
        self.paging = Some(paging);
    }

    /// Who rebuilds the windows when a batch fails (see [`Recovery`]).
    pub fn set_recovery(&mut self, recovery: Box<dyn Recovery>) {
        self.recovery = Some(recovery);
    }

    /// Replace the windows (and their paging); every sequence is then empty.
    fn install(&mut self, r: Rebuilt) {
        let mut n_local = 0;
        self.local_index = r
            .windows
            .iter()
            .map(|w| {
                w.is_local().then(|| {
                    n_local += 1;
                    n_local - 1
                })
            })
            .collect();
        self.windows = r.windows;
        self.paging = r.paging;
        self.max_in_flight = r.max_in_flight.max(1);
        self.seq_len.fill(0);
    }

    /// Tokens per chunk (a forward pass).
    pub fn set_batch(&mut self, n_batch: usize) {
        self.n_batch = n_batch.max(1);
    }

    /// Chunks travelling at once when windows answer later (a ring: its device count).
    pub fn set_max_in_flight(&mut self, n: usize) {
        self.max_in_flight = n.max(1);
    }

    /// Positions each sequence can hold.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    pub fn n_seq(&self) -> usize {
        self.seq_len.len()
    }

    pub fn n_vocab(&self) -> usize {
        self.ends.n_vocab()
    }

    pub fn windows(&self) -> &[Box<dyn Window>] {
        &self.windows
    }

    pub fn stats(&self) -> PipelineStats {
        self.stats
    }

    /// Positions held for sequence `seq` (the next token's position).
    pub fn seq_pos(&self, seq: SeqId) -> usize {
        self.seq_len.get(seq as usize).copied().unwrap_or(0)
    }

    /// Forget sequence `seq` from position `pos` on.
    pub fn seq_truncate(&mut self, seq: SeqId, pos: usize) -> Result<()> {
        if seq as usize >= self.seq_len.len() {
            return Err(Error::msg(format!("no sequence {seq}: the pipeline holds {}", self.seq_len.len())));
        }
        self.kv(KvOp::Truncate { seq, len: pos as u32 })?;
        let len = &mut self.seq_len[seq as usize];
        *len = (*len).min(pos);
        self.history[seq as usize].truncate(*len);
        Ok(())
    }

    /// Forget sequence `seq` (its slot is free for a new one).
    pub fn seq_clear(&mut self, seq: SeqId) -> Result<()> {
        self.seq_truncate(seq, 0)
    }

    /// Forget every sequence.
    pub fn reset(&mut self) -> Result<()> {
        self.kv(KvOp::Reset)?;
        self.seq_len.fill(0);
        self.history.iter_mut().for_each(Vec::clear);
        Ok(())
    }

    fn kv(&mut self, op: KvOp) -> Result<()> {
        for w in &mut self.windows {
            w.kv(op)?;
        }
        Ok(())
    }

    /// Sequence 0's length.
    pub fn pos(&self) -> usize {
        self.seq_len[0]
    }

    /// Forget sequence 0 from `pos` on.
    pub fn truncate(&mut self, pos: usize) -> Result<()> {
        self.seq_truncate(0, pos)
    }

    /// Append `tokens` to sequence 0 and return the logits after the last one.
    pub fn decode(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        let mut b = Batch::new();
        b.push_sequence(0, self.pos(), tokens);
        self.decode_batch(&b)
    }

    /// Append `tokens` to sequence 0 and return the logits after every one (`len × n_vocab`).
    pub fn decode_all(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        let mut b = Batch::new();
        let pos = self.pos();
        for (i, &t) in tokens.iter().enumerate() {
            b.push(t, 0, pos + i, true);
        }
        self.decode_batch(&b)
    }

    /// Run `batch` and return the logits of its tokens that want them, in batch order
    /// (`batch.n_logits() × n_vocab`). On an error the sequences of the batch keep only their
    /// positions before it.
    pub fn decode_batch(&mut self, batch: &Batch) -> Result<&[f32]> {
        let rows = batch.rows();
        if rows.is_empty() {
            return Err(Error::msg("nothing to decode: empty batch"));
        }
        check_rows(rows, "the batch", self.seq_len.len(), self.n_ctx, |s| self.seq_len[s])?;
        let v = self.n_vocab();
        let mut recovered = false;
        loop {
            let t0 = Instant::now();
            self.logits.resize(batch.n_logits() * v, 0.0);
            match self.run(batch) {
                Ok(()) => {
                    for (r, &t) in rows.iter().zip(batch.tokens()) {
                        self.seq_len[r.seq as usize] = r.pos as usize + 1;
                        let h = &mut self.history[r.seq as usize];
                        h.truncate(r.pos as usize);
                        h.push(t);
                    }
                    if let (true, Some(rec)) = (recovered, self.recovery.as_mut()) {
                        rec.resumed();
                    }
                    return Ok(&self.logits);
                }
                Err(e) => {
                    for r in rows {
                        let len = &mut self.seq_len[r.seq as usize];
                        *len = (*len).min(r.pos as usize);
                        self.history[r.seq as usize].truncate(*len);
                    }
                    if self.recovery.is_none() {
                        return Err(e);
                    }
                    self.recover(e, t0.elapsed())?;
                    recovered = true;
                }
            }
        }
    }

    /// Rebuild the windows and replay every sequence's history on them, until a replay
    /// succeeds or the [`Recovery`] gives up.
    fn recover(&mut self, mut err: Error, mut after: Duration) -> Result<()> {
        loop {
            let rec = self.recovery.as_mut().expect("checked by the caller");
            let rebuilt = rec.recover(err, after)?;
            self.install(rebuilt);
            let mut replay = Batch::new();
            for (seq, h) in self.history.iter().enumerate() {
                for (pos, &t) in h.iter().enumerate() {
                    replay.push(t, seq as SeqId, pos, false);
                }
            }
            let t0 = Instant::now();
            if replay.is_empty() {
                return Ok(());
            }
            match self.run(&replay) {
                Ok(()) => {
                    for (len, h) in self.seq_len.iter_mut().zip(&self.history) {
                        *len = h.len();
                    }
                    let rec = self.recovery.as_mut().expect("checked by the caller");
                    rec.replayed(replay.len(), t0.elapsed());
                    return Ok(());
                }
                Err(e) => (err, after) = (e, t0.elapsed()),
            }
        }
    }

    fn run(&mut self, batch: &Batch) -> Result<()> {
        let rows = batch.rows();
        let decode = one_per_sequence(rows);
        let t0 = Instant::now();
        let nb = self.n_batch;
        let n_chunks = rows.len().div_ceil(nb);
        let e = self.ends.n_embd();
        // (window, chunk) of every chunk submitted to a window that answers later, oldest first.
        let mut waiting = VecDeque::new();
        let (mut next, mut active) = (0, 0);
        loop {
            while active < self.max_in_flight && next < n_chunks {
                let r = chunk(next, nb, rows.len());
                let mut hidden = self.spare.pop().unwrap_or_default();
                hidden.resize(r.len() * e, 0.0);
                self.ends.embed(&batch.tokens()[r], &mut hidden)?;
                if !self.advance(batch, 0, next, hidden, decode, &mut waiting)? {
                    active += 1;
                }
                next += 1;
            }
            let Some((w, c)) = waiting.pop_front() else { break };
            let hidden = self.windows[w].collect(&rows[chunk(c, nb, rows.len())])?;
            if self.advance(batch, w + 1, c, hidden, decode, &mut waiting)? {
                active -= 1;
            }
        }
        if decode {
            self.stats.decode_steps += 1;
            self.stats.compute_ns += t0.elapsed().as_nanos() as u64;
        }
        Ok(())
    }

    /// Pass chunk `c` on from window `w`: through every window that answers at once, then
    /// either wait for one that answers later (false) or make its logits (true).
    fn advance(
        &mut self,
        batch: &Batch,
        mut w: usize,
        c: usize,
        mut hidden: Vec<f32>,
        decode: bool,
        waiting: &mut VecDeque<(usize, usize)>,
    ) -> Result<bool> {
        let r = chunk(c, self.n_batch, batch.len());
        let rows = &batch.rows()[r.clone()];
        while w < self.windows.len() {
            let local = self.local_index[w];
            if let (Some(p), Some(i)) = (&mut self.paging, local) {
                p.arrived(i, decode);
            }
            match self.windows[w].submit(rows, hidden)? {
                Some(out) => hidden = out,
                None => {
                    waiting.push_back((w, c));
                    return Ok(false);
                }
            }
            if let (Some(p), Some(i)) = (&mut self.paging, local) {
                p.done(i, decode);
            }
            w += 1;
        }
        self.finish(batch, r, &hidden);
        self.spare.push(hidden);
        Ok(true)
    }

    /// Logits of the tokens of `range` that want them, into their rows of `self.logits`.
    fn finish(&mut self, batch: &Batch, range: Range<usize>, hidden: &[f32]) {
        let (e, v) = (self.ends.n_embd(), self.ends.n_vocab());
        let want = batch.wants_logits();
        let before = want[..range.start].iter().filter(|&&w| w).count();
        let n = want[range.clone()].iter().filter(|&&w| w).count();
        if n == 0 {
            return;
        }
        let out = &mut self.logits[before * v..(before + n) * v];
        if n == range.len() {
            self.ends.logits(hidden, out);
            return;
        }
        self.selected.clear();
        for (i, _) in want[range].iter().enumerate().filter(|(_, w)| **w) {
            self.selected.extend_from_slice(&hidden[i * e..(i + 1) * e]);
        }
        self.ends.logits(&self.selected, out);
    }
}

/// Token range of chunk `c` of a batch of `len` tokens cut into chunks of `nb`.
fn chunk(c: usize, nb: usize, len: usize) -> Range<usize> {
    c * nb..((c + 1) * nb).min(len)
}
