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
    pub head_ranges: Vec<Range<usize>>,
    /// Devices 1..N (index 0 is device 1).
    pub members: Vec<Member>,
    /// The link to device 1 (None: the head alone).
    pub link: Option<RingLink>,
    /// Control links to devices 1..N.
    pub controls: Vec<Sender>,
    /// Other links kept open (and heart-beating): the inbound ring link from the last device.
    pub keep_open: Vec<Sender>,
    pub timeout: Duration,
    pub batch_size: usize,
    pub n_ctx: usize,
    pub n_seq: usize,
    /// The Halda plan the split came from, if any (for predicted-vs-measured reports).
    pub plan: Option<crate::sched::halda::Plan>,
}

/// The head's end of a formed ring (or a ring of one: the head alone).
pub struct Ring {
    pipeline: Pipeline,
    link: Option<Arc<Mutex<RingLink>>>,
    members: Vec<Member>,
    head_ranges: Vec<Range<usize>>,
    controls: Vec<Sender>,
    keep_open: Vec<Sender>,
    timeout: Duration,
    plan: Option<crate::sched::halda::Plan>,
}

impl Ring {
    /// The head's pipeline: for every round, the workers' windows (remote) then its own;
    /// its own windows paged by a [`crate::memory::Pager`].
    pub fn new(p: RingParts) -> Ring {
        let mut own = p.windows;
        let pager = crate::memory::Pager::new(own.iter().map(|w| w.mapped()));
        for w in own.iter_mut() {
            w.set_progress(pager.progress());
        }
        let link = p.link.map(|l| Arc::new(Mutex::new(l)));
        let mut windows: Vec<Box<dyn Window>> = Vec::new();
        for (round, w) in own.into_iter().enumerate() {
            if let Some(l) = &link {
                windows.push(Box::new(RemoteWindow::new(round, l.clone())));
            }
            windows.push(w);
        }
        let mut pipeline = Pipeline::from_parts(p.ends, windows, p.n_ctx, p.n_seq);
        pipeline.set_paging(Box::new(pager));
        pipeline.set_batch(p.batch_size);
        pipeline.set_max_in_flight(p.members.len() + 1);
        Ring {
            pipeline,
            link,
            members: p.members,
            head_ranges: p.head_ranges,
            controls: p.controls,
            keep_open: p.keep_open,
            timeout: p.timeout,
            plan: p.plan,
        }
    }

    pub fn pipeline(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    pub fn pipeline_ref(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn head_ranges(&self) -> &[Range<usize>] {
        &self.head_ranges
    }

    pub fn plan(&self) -> Option<&crate::sched::halda::Plan> {
        self.plan.as_ref()
    }

    /// The head's decode-step counters: its own compute and its time on the link.
    pub fn head_stats(&self) -> HeadStats {
        let p = self.pipeline.stats();
        let l = self.link.as_ref().map(|l| l.lock().unwrap_or_else(|p| p.into_inner()).stats()).unwrap_or_default();
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
        for c in &self.controls {
            let _ = c.send(&Msg::Stop);
        }
        let mut stats = vec![None; self.members.len()];
        let link = self.link.as_ref().map(|l| l.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(link) = &link {
            let deadline = Instant::now() + self.timeout;
            while stats.iter().any(Option::is_none) {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else { break };
                match link.events().recv_timeout(left) {
                    Ok(Event::Control(i, Msg::Stopped { stats: s })) => stats[i] = Some(s),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            link.out().close();
        }
        for c in self.controls.iter().chain(&self.keep_open) {
            c.close();
        }
        Ok(stats.into_iter().map(Option::unwrap_or_default).collect())
    }
}
