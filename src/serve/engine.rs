//! What the scheduler needs from a model: several sequences (slots), each with its own KV
//! cache, advanced together: [`PipelineEngine`] advances all of them in one pass of the
//! weights per step.

use crate::error::{Error, Result};
use crate::gpu::Offload;
use crate::model::{Batch, Model, Pipeline, SeqId};

/// Tokens to append to one sequence in this step.
pub struct SeqWork<'a> {
    pub slot: usize,
    pub tokens: &'a [u32],
    /// Whether the logits after the last token are needed (not for a prompt's early chunks).
    pub logits: bool,
}

/// A device (or ring member) as the cluster view shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceView {
    pub name: String,
    /// Layer ranges it runs, e.g. "0-29".
    pub layers: String,
    /// Predicted ms per token from the plan, where there is one.
    pub predicted_ms: Option<f64>,
    /// Measured ms per token split into computing / waiting / sending (None: not measured).
    pub compute_ms: Option<f64>,
    pub wait_ms: Option<f64>,
    pub send_ms: Option<f64>,
    /// Memory pressure in [0, 1] (used / total, page cache counted as free).
    pub pressure: Option<f64>,
}

pub trait Engine: Send {
    /// Sequences that can be in flight at once.
    fn slots(&self) -> usize;
    /// Positions each sequence may hold.
    fn n_ctx(&self) -> usize;
    /// Append each work's tokens to its sequence; one row of logits per work, in order (an
    /// empty row where `logits` is false).
    fn step(&mut self, work: &[SeqWork]) -> Result<Vec<Vec<f32>>>;
    /// Keep the first `pos` tokens of a sequence, forget the rest (0 empties it).
    fn truncate(&mut self, slot: usize, pos: usize) -> Result<()>;
    /// The devices behind this engine, for the cluster view.
    fn devices(&self) -> Vec<DeviceView>;
}

/// The batched [`Pipeline`]: one sequence per slot, every step one `decode_batch` (one pass
/// of the weights for all running sequences). On one device or as a ring's head.
pub struct PipelineEngine {
    pipeline: Box<dyn HoldsPipeline>,
    batch: Batch,
    devices: Box<dyn Fn() -> Vec<DeviceView> + Send>,
}

impl PipelineEngine {
    /// `slots` sequences of `n_ctx` positions, every layer on this device (the last ones on
    /// its GPU as `offload` says).
    pub fn local(
        model: &Model,
        n_ctx: usize,
        threads: usize,
        slots: usize,
        offload: &Offload,
    ) -> Result<PipelineEngine> {
        let n_layer = model.config.n_layer;
        let pipeline = offload.pipeline(model, n_ctx, slots.max(1), threads, &[n_layer])?;
        Ok(Self::new(pipeline, Box::new(move || vec![local_device(n_layer)])))
    }

    /// Any pipeline (e.g. a ring head's, with remote windows); `devices` describes its devices
    /// for the cluster view.
    pub fn new(
        pipeline: impl HoldsPipeline + 'static,
        devices: Box<dyn Fn() -> Vec<DeviceView> + Send>,
    ) -> PipelineEngine {
        PipelineEngine { pipeline: Box::new(pipeline), batch: Batch::new(), devices }
    }
}

/// What owns the pipeline the engine drives: a pipeline of its own, or a ring (whose control
/// links must stay open while it serves).
pub trait HoldsPipeline: Send {
    fn get(&self) -> &Pipeline;
    fn get_mut(&mut self) -> &mut Pipeline;
}

impl HoldsPipeline for Pipeline {
    fn get(&self) -> &Pipeline {
        self
    }
    fn get_mut(&mut self) -> &mut Pipeline {
        self
    }
}

impl HoldsPipeline for crate::cluster::ring::Ring {
    fn get(&self) -> &Pipeline {
        self.pipeline_ref()
    }
    fn get_mut(&mut self) -> &mut Pipeline {
        self.pipeline()
    }
}

/// The devices of a ring for the cluster view: each member's layers and the plan's prediction.
pub fn ring_devices(ring: &crate::cluster::ring::Ring, head_name: &str) -> Vec<DeviceView> {
    let layers = |r: &[std::ops::Range<usize>]| {
        r.iter().filter(|r| !r.is_empty()).map(|r| format!("{}-{}", r.start, r.end - 1)).collect::<Vec<_>>().join(",")
    };
    let predicted =
        |name: &str| ring.plan().and_then(|p| p.devices.iter().find(|d| d.name == name).map(|d| d.ms.total()));
    let view = |name: &str, ranges: &[std::ops::Range<usize>]| DeviceView {
        name: name.to_string(),
        layers: layers(ranges),
        predicted_ms: predicted(name),
        compute_ms: None,
        wait_ms: None,
        send_ms: None,
        pressure: None,
    };
    std::iter::once(view(head_name, &ring.head_ranges()))
        .chain(ring.members().iter().map(|m| view(&m.name, &m.ranges)))
        .collect()
}

impl Engine for PipelineEngine {
    fn slots(&self) -> usize {
        self.pipeline.get().n_seq()
    }

    fn n_ctx(&self) -> usize {
        self.pipeline.get().n_ctx()
    }

    fn step(&mut self, work: &[SeqWork]) -> Result<Vec<Vec<f32>>> {
        self.batch.clear();
        for w in work {
            let pos = self.pipeline.get().seq_pos(w.slot as SeqId);
            for (i, &t) in w.tokens.iter().enumerate() {
                self.batch.push(t, w.slot as SeqId, pos + i, w.logits && i + 1 == w.tokens.len());
            }
        }
        let v = self.pipeline.get().n_vocab();
        let logits = self.pipeline.get_mut().decode_batch(&self.batch)?;
        let mut rows = logits.chunks_exact(v);
        work.iter()
            .map(|w| match w.logits {
                true => {
                    rows.next().map(<[f32]>::to_vec).ok_or_else(|| Error::msg("the pipeline returned too few logits"))
                }
                false => Ok(Vec::new()),
            })
            .collect()
    }

    fn truncate(&mut self, slot: usize, pos: usize) -> Result<()> {
        self.pipeline.get_mut().seq_truncate(slot as SeqId, pos)
    }

    fn devices(&self) -> Vec<DeviceView> {
        (self.devices)()
    }
}

/// This machine running every layer.
pub fn local_device(n_layer: usize) -> DeviceView {
    let name = crate::sys::hostname().unwrap_or_default();
    let pressure = crate::memory::pressure::snapshot().map(|s| 1.0 - s.available as f64 / s.total.max(1) as f64);
    DeviceView {
        name: if name.is_empty() { "this device".into() } else { name },
        layers: format!("0-{}", n_layer.saturating_sub(1)),
        predicted_ms: None,
        compute_ms: None,
        wait_ms: None,
        send_ms: None,
        pressure,
    }
}
