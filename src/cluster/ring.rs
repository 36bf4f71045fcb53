//! The piped ring: every token goes around the devices `k` times; each device runs one window
//! of layers per round; activations travel hop to hop, never through a hub.
//!
//! ```text
//!   head: embed ─► [dev 1 w₁] ─► [dev 2 w₂] ─► … ─► [head w₀] ─► (next round) … ─► output, sample
//! ```
//! The compute engine is reached through two small traits ([`Window`], [`HeadCompute`]) so the
//! protocol is tested with a deterministic fake (each layer mixes a running value with its index
//! and the token position) as well as with the real model.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use super::messages::{EngineKind, KvOp, Msg, WorkerStats};
use super::transport::{Receiver, Sender};
use crate::cpu::ThreadPool;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model::{Head, LayerWindow, Model};

/// Layers `[a, b)` of a model, with their slice of the KV cache.
pub trait Window: Send {
    /// Run the window in place on `n_tokens` rows of hidden state starting at position `pos`.
    fn forward(&mut self, hidden: &mut [f32], n_tokens: usize, pos: usize) -> Result<()>;
    /// Keep only the first `len` cached positions.
    fn kv_truncate(&mut self, len: usize);
    /// The mapped weights (file, byte ranges), for prefetch and release (`crate::memory`).
    fn mapped(&self) -> Option<(GgufFile, Vec<Range<usize>>)> {
        None
    }
    /// Where to report, while running, how many of [`Window::mapped`]'s ranges are done with.
    fn set_progress(&mut self, _progress: Arc<AtomicUsize>) {}
}

/// What only the head runs: token embedding, output norm and matrix.
pub trait HeadCompute: Send {
    fn n_embd(&self) -> usize;
    fn n_vocab(&self) -> usize;
    fn embed(&self, tokens: &[u32], out: &mut [f32]) -> Result<()>;
    fn logits(&mut self, hidden_last_row: &[f32], out: &mut [f32]);
}

/// Model dimensions, read from GGUF metadata.
pub fn dims(f: &GgufFile) -> Result<(usize, usize, usize)> {
    let arch = f.architecture().ok_or_else(|| Error::msg("the model has no general.architecture"))?;
    let n_layer = f.require_u64(&format!("{arch}.block_count"))? as usize;
    let n_embd = f.require_u64(&format!("{arch}.embedding_length"))? as usize;
    let n_vocab = f
        .get_u64(&format!("{arch}.vocab_size"))
        .map(|v| v as usize)
        .or_else(|| f.array_len("tokenizer.ggml.tokens"))
        .ok_or_else(|| Error::msg("the model has no vocabulary size"))?;
    Ok((n_layer, n_embd, n_vocab))
}

// ---------------------------------------------------------------------------------------------
// The fake engine.

const FAKE_MOD: u32 = 1021;

/// Deterministic stand-in for a layer window: row[0] ← (3·row[0] + layer + 1 + position) mod 1021
/// per layer, in order; checks that batches arrive at the position its KV cache expects.
pub struct FakeWindow {
    pub layers: Range<usize>,
    pub n_embd: usize,
    pub kv_len: usize,
    pub n_ctx: usize,
    /// Sleep per batch (from `PRIMA_FAKE_DELAY_MS`), to make a fake ring slow enough to break.
    pub delay: Duration,
}

impl Window for FakeWindow {
    fn forward(&mut self, hidden: &mut [f32], n_tokens: usize, pos: usize) -> Result<()> {
        if pos != self.kv_len {
            return Err(Error::msg(format!(
                "layers {:?}: batch at position {pos} but the KV cache holds {} positions",
                self.layers, self.kv_len
            )));
        }
        if pos + n_tokens > self.n_ctx || hidden.len() != n_tokens * self.n_embd {
            return Err(Error::msg(format!("layers {:?}: bad batch ({n_tokens} tokens at {pos})", self.layers)));
        }
        for (t, row) in hidden.chunks_exact_mut(self.n_embd).enumerate() {
            let mut v = row[0] as u32;
            for l in self.layers.clone() {
                v = (v * 3 + l as u32 + 1 + (pos + t) as u32) % FAKE_MOD;
            }
            row[0] = v as f32;
        }
        self.kv_len += n_tokens;
        std::thread::sleep(self.delay);
        Ok(())
    }
    fn kv_truncate(&mut self, len: usize) {
        self.kv_len = self.kv_len.min(len);
    }
}

/// A window of no layers (a device that only forwards in some configuration).
pub struct EmptyWindow;

impl Window for EmptyWindow {
    fn forward(&mut self, _: &mut [f32], _: usize, _: usize) -> Result<()> {
        Ok(())
    }
    fn kv_truncate(&mut self, _: usize) {}
}

pub struct FakeHead {
    pub n_embd: usize,
    pub n_vocab: usize,
}

impl HeadCompute for FakeHead {
    fn n_embd(&self) -> usize {
        self.n_embd
    }
    fn n_vocab(&self) -> usize {
        self.n_vocab
    }
    fn embed(&self, tokens: &[u32], out: &mut [f32]) -> Result<()> {
        out.fill(0.0);
        for (row, &t) in out.chunks_exact_mut(self.n_embd).zip(tokens) {
            row[0] = (t % FAKE_MOD) as f32;
        }
        Ok(())
    }
    fn logits(&mut self, h: &[f32], out: &mut [f32]) {
        out.fill(0.0);
        out[(h[0] as usize * 7 + 3) % self.n_vocab] = 1.0;
    }
}

// ---------------------------------------------------------------------------------------------
// The real engine.

impl Window for LayerWindow {
    fn forward(&mut self, hidden: &mut [f32], n_tokens: usize, pos: usize) -> Result<()> {
        LayerWindow::forward(self, hidden, n_tokens, pos)
    }
    fn kv_truncate(&mut self, len: usize) {
        LayerWindow::kv_truncate(self, len)
    }
    fn mapped(&self) -> Option<(GgufFile, Vec<Range<usize>>)> {
        LayerWindow::mapped(self)
    }
    fn set_progress(&mut self, progress: Arc<AtomicUsize>) {
        LayerWindow::set_progress(self, progress)
    }
}

struct RealHead {
    head: Head,
    n_embd: usize,
}

impl HeadCompute for RealHead {
    fn n_embd(&self) -> usize {
        self.n_embd
    }
    fn n_vocab(&self) -> usize {
        self.head.n_vocab()
    }
    fn embed(&self, tokens: &[u32], out: &mut [f32]) -> Result<()> {
        self.head.embed(tokens, out)
    }
    fn logits(&mut self, h: &[f32], out: &mut [f32]) {
        self.head.logits(h, out)
    }
}

/// Tensors a device running `ranges` needs (each once, in file order of first use).
pub fn window_tensor_names(f: &GgufFile, ranges: &[Range<usize>]) -> Result<Vec<String>> {
    let m = Model::from_gguf(f.clone())?;
    let mut seen = std::collections::HashSet::new();
    Ok(ranges
        .iter()
        .flat_map(|r| r.clone())
        .flat_map(|l| m.layer_tensor_names(l))
        .filter(|n| seen.insert(n.clone()))
        .collect())
}

/// Open windows over `model` (a full model or a device's cached share).
pub fn open_windows(
    kind: EngineKind,
    model: &Path,
    ranges: &[Range<usize>],
    n_ctx: usize,
    pool: &Arc<ThreadPool>,
) -> Result<Vec<Box<dyn Window>>> {
    let f = GgufFile::open_weights(model)?;
    let (n_layer, n_embd, _) = dims(&f)?;
    if let Some(r) = ranges.iter().find(|r| r.end > n_layer || r.start > r.end) {
        return Err(Error::msg(format!("window {r:?} is outside the model's {n_layer} layers")));
    }
    let delay =
        Duration::from_millis(std::env::var("PRIMA_FAKE_DELAY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0));
    match kind {
        EngineKind::Fake => Ok(ranges
            .iter()
            .map(|r| Box::new(FakeWindow { layers: r.clone(), n_embd, kv_len: 0, n_ctx, delay }) as Box<dyn Window>)
            .collect()),
        EngineKind::Real => {
            let m = Model::from_gguf(f)?;
            ranges
                .iter()
                .map(|r| {
                    Ok(if r.is_empty() {
                        Box::new(EmptyWindow) as Box<dyn Window>
                    } else {
                        Box::new(LayerWindow::new(&m, r.clone(), n_ctx, pool.clone())?) as Box<dyn Window>
                    })
                })
                .collect()
        }
    }
}

pub fn open_head(kind: EngineKind, model: &Path, pool: &Arc<ThreadPool>) -> Result<Box<dyn HeadCompute>> {
    let f = GgufFile::open_weights(model)?;
    let (_, n_embd, n_vocab) = dims(&f)?;
    match kind {
        EngineKind::Fake => Ok(Box::new(FakeHead { n_embd, n_vocab })),
        EngineKind::Real => {
            let m = Model::from_gguf(f)?;
            let head = Head::new(&m, pool.clone())?;
            Ok(Box::new(RealHead { head, n_embd }))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Events: every connection is read by its own thread into one channel.

pub enum Event {
    /// A message on the inbound ring link.
    Ring(Msg),
    /// The inbound ring link failed or closed.
    RingClosed(Error),
    /// A message on device `i`'s control connection.
    Control(usize, Msg),
    /// Device `i`'s control connection failed or closed.
    ControlClosed(usize, Error),
}

/// Read `rx` on a thread until it fails; `wrap` turns each message into an event.
pub fn pump(mut rx: Receiver, tx: mpsc::Sender<Event>, wrap: impl Fn(Result<Msg>) -> Event + Send + 'static) {
    std::thread::Builder::new()
        .name(format!("read {}", rx.peer()))
        .spawn(move || {
            loop {
                let r = rx.recv();
                let end = r.is_err();
                if tx.send(wrap(r)).is_err() || end {
                    return;
                }
            }
        })
        .expect("spawning a thread");
}

// ---------------------------------------------------------------------------------------------
// Worker side.

/// Serve the ring until the head says stop (Ok) or something fails (Err, to be reported).
/// `events` carries `Ring(..)` from the predecessor and `Control(0, ..)` from the head.
pub fn run_worker(
    windows: &mut [Box<dyn Window>],
    events: &mpsc::Receiver<Event>,
    out: &Sender,
) -> Result<WorkerStats> {
    let mut st = WorkerStats::default();
    let mut pager = crate::memory::Pager::new(windows.iter().map(|w| w.mapped()));
    for w in windows.iter_mut() {
        w.set_progress(pager.progress());
    }
    let mut last_send_end = Instant::now();
    loop {
        let ev = events.recv().map_err(|_| Error::msg("event channel closed"))?;
        let arrived = Instant::now();
        match ev {
            Event::Ring(Msg::Activations { round, n_tokens, pos, mut data }) => {
                pager.arrived(round as usize, n_tokens as usize);
                let nw = windows.len();
                let w = windows
                    .get_mut(round as usize)
                    .ok_or_else(|| Error::msg(format!("activations for round {round}, but we have {nw} windows")))?;
                w.forward(&mut data, n_tokens as usize, pos as usize)?;
                let computed = Instant::now();
                out.send(&Msg::Activations { round, n_tokens, pos, data })?;
                let sent = Instant::now();
                pager.done(round as usize, n_tokens as usize);
                st.batches += 1;
                if n_tokens == 1 {
                    if round == 0 {
                        st.decode_steps += 1;
                    } else {
                        st.wait_ns += (arrived - last_send_end).as_nanos() as u64;
                    }
                    st.compute_ns += (computed - arrived).as_nanos() as u64;
                    st.send_ns += (sent - computed).as_nanos() as u64;
                }
                last_send_end = sent;
            }
            Event::Ring(Msg::Kv(op)) => {
                for w in windows.iter_mut() {
                    match op {
                        KvOp::Clear => w.kv_truncate(0),
                        KvOp::Truncate(n) => w.kv_truncate(n as usize),
                    }
                }
                out.send(&Msg::Kv(op))?;
            }
            Event::Ring(m) => return Err(Error::msg(format!("unexpected {} on the ring", m.name()))),
            Event::RingClosed(e) => return Err(e.context("ring link from the previous device")),
            Event::Control(_, Msg::Stop) => {
                st.mem_pressure_ppm = (pager.peak_pressure() * 1e6) as u32;
                return Ok(st);
            }
            Event::Control(_, m) => return Err(Error::msg(format!("unexpected {} from the head", m.name()))),
            Event::ControlClosed(_, e) => return Err(e.context("the head went away")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Head side.

/// A worker as the head sees it: for error messages and stats.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub addr: String,
    pub ranges: Vec<Range<usize>>,
}

pub fn fmt_ranges(r: &[Range<usize>]) -> String {
    r.iter().map(|r| format!("{}..{}", r.start, r.end)).collect::<Vec<_>>().join(",")
}

/// Head-side counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadStats {
    pub decode_steps: u64,
    pub compute_ns: u64,
    pub wait_ns: u64,
    pub send_ns: u64,
}

/// The head's end of a formed ring (or a ring of one: the head alone).
pub struct Ring {
    pub head: Box<dyn HeadCompute>,
    pub windows: Vec<Box<dyn Window>>,
    /// Devices 1..N (index 0 of this vec is device 1).
    pub members: Vec<Member>,
    pub head_ranges: Vec<Range<usize>>,
    /// Link to device 1 and control links to devices 1..N (None when alone).
    pub out: Option<Sender>,
    pub controls: Vec<Sender>,
    /// Other links kept open (and heart-beating): the inbound ring link from the last device.
    pub links: Vec<Sender>,
    pub events: mpsc::Receiver<Event>,
    pub timeout: Duration,
    pub batch_size: usize,
    pub stats: HeadStats,
    /// Positions held in every device's KV cache.
    pub kv_len: usize,
    pub n_ctx: usize,
    pub logits: Vec<f32>,
    /// The Halda plan the split came from, if any (for predicted-vs-measured reports).
    pub plan: Option<crate::sched::halda::Plan>,
    /// Prefetch and release of the head's own windows.
    pub pager: crate::memory::Pager,
}

impl Ring {
    fn what(&self, round: usize, n_tokens: usize, pos: usize) -> String {
        format!(
            "the ring was running round {} of {} for {n_tokens} token(s) at position {pos}",
            round + 1,
            self.windows.len()
        )
    }

    /// Turn a failure event into the clearest error: a device that went away beats a device
    /// that reported a broken link, which beats our own broken ring link.
    fn failure(&self, first: Event, doing: &str) -> Error {
        let mut evs = vec![first];
        let deadline = Instant::now() + Duration::from_millis(700);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(e) => evs.push(e),
                Err(_) => break,
            }
        }
        let rank = |e: &Event| match e {
            Event::ControlClosed(..) => 0,
            Event::Control(_, Msg::Error { .. }) => 1,
            Event::RingClosed(_) => 2,
            _ => 3,
        };
        evs.sort_by_key(rank);
        let dev = |i: usize| {
            let m = &self.members[i];
            format!("device `{}` ({}, layers {})", m.name, m.addr, fmt_ranges(&m.ranges))
        };
        match evs.swap_remove(0) {
            Event::ControlClosed(i, e) => Error::msg(format!("{} stopped answering while {doing}: {e}", dev(i))),
            Event::Control(i, Msg::Error { msg }) => Error::msg(format!("{} failed while {doing}: {msg}", dev(i))),
            Event::RingClosed(e) => {
                let last = self.members.len().saturating_sub(1);
                Error::msg(format!("ring link from {} broke while {doing}: {e}", dev(last)))
            }
            Event::Control(i, m) => Error::msg(format!("{} sent an unexpected {} while {doing}", dev(i), m.name())),
            Event::Ring(m) => Error::msg(format!("unexpected {} on the ring while {doing}", m.name())),
        }
    }

    /// Wait for the next ring message.
    fn recv_ring(&mut self, doing: &dyn Fn() -> String) -> Result<Msg> {
        loop {
            match self.events.recv_timeout(self.timeout * 3) {
                Ok(Event::Ring(m)) => return Ok(m),
                Ok(Event::Control(_, Msg::Stopped { .. })) => continue,
                Ok(e) => return Err(self.failure(e, &doing())),
                Err(_) => {
                    return Err(Error::msg(format!(
                        "no answer from the ring for {:?} while {}",
                        self.timeout * 3,
                        doing()
                    )));
                }
            }
        }
    }

    /// Run all layers on `n_tokens` rows of hidden state (in place) at position `pos`.
    pub fn forward(&mut self, hidden: &mut Vec<f32>, n_tokens: usize, pos: usize) -> Result<()> {
        let decode = n_tokens == 1;
        for round in 0..self.windows.len() {
            if let Some(out) = &self.out {
                let t0 = Instant::now();
                let data = std::mem::take(hidden);
                let msg = Msg::Activations { round: round as u32, n_tokens: n_tokens as u32, pos: pos as u32, data };
                if let Err(e) = out.send(&msg) {
                    let doing = self.what(round, n_tokens, pos);
                    return Err(self.failure(Event::RingClosed(e), &doing));
                }
                let t1 = Instant::now();
                let m = self.recv_ring(&|| {
                    format!("the ring was running round {} for {n_tokens} token(s) at position {pos}", round + 1)
                })?;
                let t2 = Instant::now();
                match m {
                    Msg::Activations { round: r, n_tokens: n, pos: p, data }
                        if r as usize == round && n as usize == n_tokens && p as usize == pos =>
                    {
                        *hidden = data
                    }
                    m => {
                        return Err(Error::msg(format!(
                            "ring returned an unexpected {} in round {}",
                            m.name(),
                            round + 1
                        )));
                    }
                }
                if decode {
                    self.stats.send_ns += (t1 - t0).as_nanos() as u64;
                    self.stats.wait_ns += (t2 - t1).as_nanos() as u64;
                }
            }
            self.pager.arrived(round, n_tokens);
            let t = Instant::now();
            self.windows[round].forward(hidden, n_tokens, pos)?;
            if decode {
                self.stats.compute_ns += t.elapsed().as_nanos() as u64;
            }
            self.pager.done(round, n_tokens);
        }
        if decode {
            self.stats.decode_steps += 1;
        }
        Ok(())
    }

    /// Evaluate `tokens` at position `pos` (prefill in batches) and write the logits of the last
    /// token into `logits`.
    pub fn eval(&mut self, tokens: &[u32], pos: usize, logits: &mut [f32]) -> Result<()> {
        let e = self.head.n_embd();
        let n_batches = tokens.len().div_ceil(self.batch_size.max(1));
        let hidden = if self.out.is_some() && n_batches > 1 {
            self.prefill_pipelined(tokens, pos)?
        } else {
            let mut p = pos;
            let mut hidden = Vec::new();
            for chunk in tokens.chunks(self.batch_size.max(1)) {
                let t = Instant::now();
                hidden.resize(chunk.len() * e, 0.0);
                self.head.embed(chunk, &mut hidden)?;
                if chunk.len() == 1 {
                    self.stats.compute_ns += t.elapsed().as_nanos() as u64;
                }
                self.forward(&mut hidden, chunk.len(), p)?;
                p += chunk.len();
                self.kv_len = p;
            }
            hidden
        };
        let t = Instant::now();
        let last = &hidden[hidden.len() - e..];
        self.head.logits(last, logits);
        if tokens.len() == 1 {
            self.stats.compute_ns += t.elapsed().as_nanos() as u64;
        }
        Ok(())
    }

    /// Prompt batches flow through the ring concurrently (one per device at most), instead of
    /// one batch making all k laps before the next starts: every device works on some batch.
    /// Links are FIFO and every batch takes the same path, so each window still sees its batches
    /// in position order. Returns the last batch's hidden states.
    fn prefill_pipelined(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>> {
        let e = self.head.n_embd();
        let bs = self.batch_size.max(1);
        let k = self.windows.len();
        let batches: Vec<(usize, &[u32])> = tokens.chunks(bs).enumerate().map(|(i, c)| (pos + i * bs, c)).collect();
        let max_in_flight = self.members.len() + 1;
        let (mut next, mut in_flight, mut done) = (0, 0, 0);
        // Position of the next batch expected back from the ring in each round.
        let mut expect = vec![pos; k];
        let mut last = Vec::new();
        let end = pos + tokens.len();
        while done < batches.len() {
            while in_flight < max_in_flight && next < batches.len() {
                let (p, chunk) = batches[next];
                let mut hidden = vec![0f32; chunk.len() * e];
                self.head.embed(chunk, &mut hidden)?;
                self.send_round(0, chunk.len(), p, hidden)?;
                in_flight += 1;
                next += 1;
            }
            let doing = format!("the ring was reading the prompt (positions {pos}..{end})");
            let (round, n, p, mut data) = match self.recv_ring(&|| doing.clone())? {
                Msg::Activations { round, n_tokens, pos, data } => {
                    (round as usize, n_tokens as usize, pos as usize, data)
                }
                m => return Err(Error::msg(format!("ring returned an unexpected {} during the prompt", m.name()))),
            };
            if round >= k || p != expect[round] || data.len() != n * e {
                return Err(Error::msg(format!("ring returned batch at {p} in round {} out of order", round + 1)));
            }
            expect[round] = p + n;
            self.windows[round].forward(&mut data, n, p)?;
            if round + 1 < k {
                self.send_round(round + 1, n, p, data)?;
            } else {
                done += 1;
                in_flight -= 1;
                self.kv_len = p + n;
                if p + n == end {
                    last = data;
                }
            }
        }
        Ok(last)
    }

    fn send_round(&mut self, round: usize, n_tokens: usize, pos: usize, data: Vec<f32>) -> Result<()> {
        let out = self.out.as_ref().expect("a ring");
        let msg = Msg::Activations { round: round as u32, n_tokens: n_tokens as u32, pos: pos as u32, data };
        if let Err(e) = out.send(&msg) {
            let doing = self.what(round, n_tokens, pos);
            return Err(self.failure(Event::RingClosed(e), &doing));
        }
        Ok(())
    }

    /// Append `tokens` at the end of the sequence and return the next-token logits
    /// (the shape of `generate::Decoder::decode`).
    pub fn decode(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        if tokens.is_empty() {
            return Err(Error::msg("nothing to decode: empty token list"));
        }
        if self.kv_len + tokens.len() > self.n_ctx {
            return Err(Error::msg(format!(
                "the context holds {} positions; {} needed",
                self.n_ctx,
                self.kv_len + tokens.len()
            )));
        }
        let mut logits = std::mem::take(&mut self.logits);
        logits.resize(self.head.n_vocab(), 0.0);
        let r = self.eval(tokens, self.kv_len, &mut logits);
        self.logits = logits;
        r?;
        Ok(&self.logits)
    }

    /// Tokens in every device's KV cache.
    pub fn pos(&self) -> usize {
        self.kv_len
    }

    /// Forget positions from `pos` on, on every device.
    pub fn truncate(&mut self, pos: usize) -> Result<()> {
        self.kv(KvOp::Truncate(pos as u32))
    }

    /// Apply a KV operation on every device (relayed around the ring).
    pub fn kv(&mut self, op: KvOp) -> Result<()> {
        for w in &mut self.windows {
            match op {
                KvOp::Clear => w.kv_truncate(0),
                KvOp::Truncate(n) => w.kv_truncate(n as usize),
            }
        }
        self.kv_len = match op {
            KvOp::Clear => 0,
            KvOp::Truncate(n) => self.kv_len.min(n as usize),
        };
        if let Some(out) = &self.out {
            if let Err(e) = out.send(&Msg::Kv(op)) {
                return Err(self.failure(Event::RingClosed(e), "relaying a KV cache operation"));
            }
            match self.recv_ring(&|| "relaying a KV cache operation".to_string())? {
                Msg::Kv(o) if o == op => {}
                m => return Err(Error::msg(format!("ring returned an unexpected {} for a KV operation", m.name()))),
            }
        }
        Ok(())
    }

    /// Stop every worker (they return to idle) and collect their counters.
    pub fn stop(self) -> Result<Vec<WorkerStats>> {
        for c in &self.controls {
            let _ = c.send(&Msg::Stop);
        }
        let mut stats = vec![None; self.members.len()];
        let deadline = Instant::now() + self.timeout;
        while stats.iter().any(Option::is_none) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { break };
            match self.events.recv_timeout(left) {
                Ok(Event::Control(i, Msg::Stopped { stats: s })) => stats[i] = Some(s),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        for c in self.controls.iter().chain(&self.out).chain(&self.links) {
            c.close();
        }
        Ok(stats.into_iter().map(Option::unwrap_or_default).collect())
    }
}

impl crate::generate::Decoder for Ring {
    fn decode(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        Ring::decode(self, tokens)
    }
    fn pos(&self) -> usize {
        self.kv_len
    }
    fn truncate(&mut self, pos: usize) -> Result<()> {
        Ring::truncate(self, pos)
    }
    fn n_ctx(&self) -> usize {
        self.n_ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_window_checks_positions_and_is_order_sensitive() {
        let mut a = FakeWindow { layers: 0..2, n_embd: 2, kv_len: 0, n_ctx: 64, delay: Duration::ZERO };
        let mut b = FakeWindow { layers: 2..4, n_embd: 2, kv_len: 0, n_ctx: 64, delay: Duration::ZERO };
        let mut all = FakeWindow { layers: 0..4, n_embd: 2, kv_len: 0, n_ctx: 64, delay: Duration::ZERO };
        let mut h1 = vec![5.0, 0.0, 6.0, 0.0];
        let mut h2 = h1.clone();
        a.forward(&mut h1, 2, 0).unwrap();
        b.forward(&mut h1, 2, 0).unwrap();
        all.forward(&mut h2, 2, 0).unwrap();
        assert_eq!(h1, h2);
        let mut h3 = vec![5.0, 0.0, 6.0, 0.0];
        let mut a2 = FakeWindow { layers: 0..2, n_embd: 2, kv_len: 0, n_ctx: 64, delay: Duration::ZERO };
        let mut b2 = FakeWindow { layers: 2..4, n_embd: 2, kv_len: 0, n_ctx: 64, delay: Duration::ZERO };
        b2.forward(&mut h3, 2, 0).unwrap();
        a2.forward(&mut h3, 2, 0).unwrap();
        assert_ne!(h1, h3);
        assert!(a.forward(&mut [0.0, 0.0], 1, 5).is_err());
        a.kv_truncate(1);
        a.forward(&mut [0.0, 0.0], 1, 1).unwrap();
    }
}
