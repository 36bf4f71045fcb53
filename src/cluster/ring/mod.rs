//! The piped ring: every token goes around the devices `k` times; each device runs one window
//! of layers per round; activations travel hop to hop, never through a hub.
//!
//! ```text
//!   head: embed ─► [dev 1 w₁] ─► [dev 2 w₂] ─► … ─► [head w₀] ─► (next round) … ─► output, sample
//! ```
//! The head runs a [`Pipeline`] whose windows alternate between remote ones ([`head`]: round
//! `r` of the workers) and its own; each worker serves its windows ([`worker`]). The engine is
//! the model's ([`crate::model::Window`]) or, for protocol tests, a deterministic fake
//! ([`fake`]).

pub mod events;
pub mod fake;
pub mod head;
pub mod worker;

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use events::{Event, pump};
pub use head::{LinkStats, RemoteWindow, RingLink};
pub use worker::run_worker;

use super::messages::{EngineKind, Msg, WorkerStats};
use super::transport::Sender;
use crate::cpu::ThreadPool;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::gpu::Offload;
use crate::model::{Ends, Head, Model, Pipeline, Window};
use fake::{EmptyWindow, FakeEnds, FakeWindow};

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

/// Head-side counters of decode steps.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadStats {
    pub decode_steps: u64,
    pub compute_ns: u64,
    pub wait_ns: u64,
    pub send_ns: u64,
}

/// Tensors a device running `ranges` needs (each once, in file order of first use).
pub fn window_tensor_names(m: &Model, ranges: &[Range<usize>]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ranges
        .iter()
        .flat_map(|r| r.clone())
        .flat_map(|l| m.layer_tensor_names(l))
        .filter(|n| seen.insert(n.clone()))
        .collect()
}

/// Open windows over `model` (a full model or a device's cached share), with a KV cache of
/// `n_seq` sequences of `n_ctx` positions; the last layers of each on the GPU as `offload` says.
pub fn open_windows(
    kind: EngineKind,
    model: &Path,
    ranges: &[Range<usize>],
    n_ctx: usize,
    n_seq: usize,
    pool: &Arc<ThreadPool>,
    offload: &Offload,
) -> Result<Vec<Box<dyn Window>>> {
    let m = Model::from_gguf(GgufFile::open_weights(model)?)?;
    let n_layer = m.config.n_layer;
    if let Some(r) = ranges.iter().find(|r| r.end > n_layer || r.start > r.end) {
        return Err(Error::msg(format!("window {r:?} is outside the model's {n_layer} layers")));
    }
    let delay =
        Duration::from_millis(std::env::var("PRIMA_FAKE_DELAY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0));
    ranges
        .iter()
        .map(|r| {
            Ok(match kind {
                EngineKind::Fake => {
                    Box::new(FakeWindow::new(r.clone(), m.config.n_embd, n_ctx, n_seq, delay)) as Box<dyn Window>
                }
                EngineKind::Real if r.is_empty() => Box::new(EmptyWindow),
                EngineKind::Real => offload.window(&m, r.clone(), n_ctx, n_seq, pool)?,
            })
        })
        .collect()
}

/// The embedding and output of `model` (the real ones or the fake engine's).
pub fn open_ends(kind: EngineKind, model: &Path, pool: &Arc<ThreadPool>) -> Result<Box<dyn Ends>> {
    let m = Model::from_gguf(GgufFile::open_weights(model)?)?;
    Ok(match kind {
        EngineKind::Fake => Box::new(FakeEnds { n_embd: m.config.n_embd, n_vocab: m.config.n_vocab }),
        EngineKind::Real => Box::new(Head::new(&m, pool.clone())?),
    })
}

/// What [`Ring::new`] assembles: the head's parts and its links.
pub struct RingParts {
    pub ends: Box<dyn Ends>,
    /// The head's own windows, one per round.
    pub windows: Vec<Box<dyn Window>>,
    pub state: RingState,
    pub timeout: Duration,
    pub batch_size: usize,
    pub n_ctx: usize,
    pub n_seq: usize,
}

/// What changes when the ring is formed again (after a loss): its links, members and split.
pub struct RingState {
    /// The link to device 1 (None: the head alone).
    pub link: Option<Arc<Mutex<RingLink>>>,
    /// Devices 1..N (index 0 is device 1).
    pub members: Vec<Member>,
    pub head_ranges: Vec<Range<usize>>,
    /// Control links to devices 1..N.
    pub controls: Vec<Sender>,
    /// Other links kept open (and heart-beating): the inbound ring link from the last device.
    pub keep_open: Vec<Sender>,
    /// The Halda plan the split came from, if any (for predicted-vs-measured reports).
    pub plan: Option<crate::sched::halda::Plan>,
}

impl RingState {
    /// Hang up every link: the workers end this ring's session and free its windows.
    pub fn close(&self) {
        if let Some(l) = &self.link {
            lock(l).out().close();
        }
        for c in self.controls.iter().chain(&self.keep_open) {
            c.close();
        }
    }

    /// The head's pipeline windows: for every round, the workers' (remote) then its own, and
    /// the page-cache hooks of its own.
    pub fn pipeline_windows(&self, own: Vec<Box<dyn Window>>) -> (Vec<Box<dyn Window>>, crate::memory::Pager) {
        let mut own = own;
        let pager = crate::memory::Pager::new(own.iter().map(|w| w.mapped()));
        for w in own.iter_mut() {
            w.set_progress(pager.progress());
        }
        let mut windows: Vec<Box<dyn Window>> = Vec::new();
        for (round, w) in own.into_iter().enumerate() {
            if let Some(l) = &self.link {
                windows.push(Box::new(RemoteWindow::new(round, l.clone())));
            }
            windows.push(w);
        }
        (windows, pager)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The head's end of a formed ring (or a ring of one: the head alone).
pub struct Ring {
    pipeline: Pipeline,
    state: Arc<Mutex<RingState>>,
    timeout: Duration,
}

impl Ring {
    /// The head's pipeline: for every round, the workers' windows (remote) then its own;
    /// its own windows paged by a [`crate::memory::Pager`].
    pub fn new(p: RingParts) -> Ring {
        let (windows, pager) = p.state.pipeline_windows(p.windows);
        let mut pipeline = Pipeline::from_parts(p.ends, windows, p.n_ctx, p.n_seq);
        pipeline.set_paging(Box::new(pager));
        pipeline.set_batch(p.batch_size);
        pipeline.set_max_in_flight(p.state.members.len() + 1);
        Ring { pipeline, state: Arc::new(Mutex::new(p.state)), timeout: p.timeout }
    }

    pub fn pipeline(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    pub fn pipeline_ref(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The links, members and split, shared with whoever forms the ring again.
    pub fn state(&self) -> Arc<Mutex<RingState>> {
        self.state.clone()
    }

    pub fn members(&self) -> Vec<Member> {
        lock(&self.state).members.clone()
    }

    pub fn head_ranges(&self) -> Vec<Range<usize>> {
        lock(&self.state).head_ranges.clone()
    }

    pub fn plan(&self) -> Option<crate::sched::halda::Plan> {
        lock(&self.state).plan.clone()
    }

    /// The head's decode-step counters: its own compute and its time on the link.
    pub fn head_stats(&self) -> HeadStats {
        let p = self.pipeline.stats();
        let l = lock(&self.state).link.as_ref().map(|l| lock(l).stats()).unwrap_or_default();
        // The pipeline's time includes the link's; the head computed the rest.
        let on_link = l.send_ns + l.wait_ns;
        HeadStats {
            decode_steps: p.decode_steps,
            compute_ns: p.compute_ns.saturating_sub(on_link),
            wait_ns: l.wait_ns,
            send_ns: l.send_ns,
        }
    }

    /// Stop every worker (they return to idle) and collect their counters.
    pub fn stop(self) -> Result<Vec<WorkerStats>> {
        let state = lock(&self.state);
        for c in &state.controls {
            let _ = c.send(&Msg::Stop);
        }
        let mut stats = vec![None; state.members.len()];
        if let Some(link) = &state.link {
            let link = lock(link);
            let deadline = Instant::now() + self.timeout;
            while stats.iter().any(Option::is_none) {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else { break };
                match link.events().recv_timeout(left) {
                    Ok(Event::Control(i, Msg::Stopped { stats: s })) => stats[i] = Some(s),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        state.close();
        Ok(stats.into_iter().map(Option::unwrap_or_default).collect())
    }
}
