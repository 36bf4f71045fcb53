//! What the scheduler needs from a model: several sequences (slots), each with its own KV
//! cache, advanced together. [`SessionEngine`] runs them on this device one after another; a
//! batched engine advances all of them in one pass of the weights.

use crate::error::{Error, Result};
use crate::model::{Model, Session};

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

/// One [`Session`] per slot on this device: sequences are correct but take turns.
pub struct SessionEngine {
    sessions: Vec<Session>,
    n_layer: usize,
}

impl SessionEngine {
    pub fn new(model: &Model, n_ctx: usize, threads: usize, slots: usize) -> Result<SessionEngine> {
        let sessions = (0..slots.max(1)).map(|_| Session::new(model, n_ctx, threads)).collect::<Result<_>>()?;
        Ok(SessionEngine { sessions, n_layer: model.config.n_layer })
    }

    fn session(&mut self, slot: usize) -> Result<&mut Session> {
        let n = self.sessions.len();
        self.sessions.get_mut(slot).ok_or_else(|| Error::msg(format!("slot {slot} out of range (0..{n})")))
    }
}

impl Engine for SessionEngine {
    fn slots(&self) -> usize {
        self.sessions.len()
    }

    fn n_ctx(&self) -> usize {
        self.sessions[0].n_ctx()
    }

    fn step(&mut self, work: &[SeqWork]) -> Result<Vec<Vec<f32>>> {
        let mut rows = Vec::with_capacity(work.len());
        for w in work {
            let logits = self.session(w.slot)?.decode(w.tokens)?;
            rows.push(if w.logits { logits.to_vec() } else { Vec::new() });
        }
        Ok(rows)
    }

    fn truncate(&mut self, slot: usize, pos: usize) -> Result<()> {
        self.session(slot)?.truncate(pos);
        Ok(())
    }

    fn devices(&self) -> Vec<DeviceView> {
        vec![local_device(self.n_layer)]
    }
}

/// This machine running every layer.
pub fn local_device(n_layer: usize) -> DeviceView {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
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
