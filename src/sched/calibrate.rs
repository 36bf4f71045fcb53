//! Calibration from the first tokens of a run. Some figures cannot be known in advance: the
//! rate a disk really streams a window's tail at under the others' load, a CPU shared with
//! other work, the cost of page faults. After a few decode tokens the head knows each device's
//! measured milliseconds per token (the ring's worker and head stats); this module turns the
//! gap between prediction and measurement into corrected profiles, so that re-planning (or
//! just predicting the running split again) uses what the devices really did.
//!
//! Per device, with the plan's breakdown b and the measured time t:
//! - a device that streams (disk bytes > 0) keeps its compute figures and takes the excess
//!   t − (compute + memory + network) as its disk time: its disk rate becomes
//!   bytes / excess (the rate actually seen while streaming);
//! - a device that does not stream, or whose time is below its non-disk prediction, scales
//!   its CPU throughputs and RAM rate by (compute + memory) / (t − network).
//!
//! Factors are clamped to [1/8, 8] so one bad sample cannot poison a plan.

use super::halda::{self, Plan};
use super::model_cost::ModelCost;
use crate::error::{Error, Result};
use crate::profile::DeviceProfile;

/// Milliseconds per decode token a device spent computing and sending, from the ring's
/// counters (`WorkerStats`/`HeadStats`: decode steps, compute and send nanoseconds). None
/// before the first decode step.
pub fn measured_ms(decode_steps: u64, compute_ns: u64, send_ns: u64) -> Option<f64> {
    (decode_steps > 0).then(|| (compute_ns + send_ns) as f64 / 1e6 / decode_steps as f64)
}

/// What calibration changed on one device.
#[derive(Clone, Debug, PartialEq)]
pub struct Correction {
    pub device: usize,
    pub predicted_ms: f64,
    pub measured_ms: f64,
    /// CPU and RAM figures were divided by this (> 1: the device is slower than profiled).
    pub compute_factor: f64,
    /// The disk rate seen while streaming, GB/s, where the device streams.
    pub disk_gbps: Option<f64>,
}

const MIN_FACTOR: f64 = 1.0 / 8.0;
const MAX_FACTOR: f64 = 8.0;

/// Profiles corrected so that `plan`'s split, predicted again, matches `measured` (ms per token
/// per device, input order; None = not measured or not in the ring).
pub fn calibrate(
    profiles: &[DeviceProfile],
    plan: &Plan,
    measured: &[Option<f64>],
) -> Result<(Vec<DeviceProfile>, Vec<Correction>)> {
    if profiles.len() != plan.devices.len() || measured.len() != profiles.len() {
        return Err(Error::msg(format!(
            "calibration: {} profiles, {} planned devices, {} measurements",
            profiles.len(),
            plan.devices.len(),
            measured.len()
        )));
    }
    let mut out = profiles.to_vec();
    let mut corrections = Vec::new();
    for (i, d) in plan.devices.iter().enumerate() {
        let Some(t) = measured[i].filter(|t| t.is_finite() && *t > 0.0) else { continue };
        if d.w == 0 {
            continue;
        }
        let b = d.ms;
        let busy = b.compute + b.memory;
        let mut c =
            Correction { device: i, predicted_ms: b.total(), measured_ms: t, compute_factor: 1.0, disk_gbps: None };
        let excess = t - busy - b.network;
        if d.disk_bytes > 0 && excess > 0.0 {
            let gbps = d.disk_bytes as f64 / (excess * 1e6);
            let old = out[i].disk.seq_gbps.max(1e-9);
            let gbps = gbps.clamp(old * MIN_FACTOR, old * MAX_FACTOR);
            out[i].disk.seq_gbps = gbps;
            if out[i].os == crate::profile::Os::MacOs {
                out[i].disk.rnd_gbps = gbps;
            }
            out[i].disk.method = format!("{} (calibrated from the run)", out[i].disk.method);
            c.disk_gbps = Some(gbps);
        } else if busy > 0.0 {
            let f = ((t - b.network).max(busy * MIN_FACTOR) / busy).clamp(MIN_FACTOR, MAX_FACTOR);
            for tp in &mut out[i].cpu {
                tp.gflops /= f;
            }
            out[i].ram_read_gbps /= f;
            c.compute_factor = f;
        }
        corrections.push(c);
    }
    Ok((out, corrections))
}

/// The ring head's hook: calibrate from the first tokens, then plan again on the corrected
/// profiles. Returns the corrected profiles, the running split predicted again with them
/// (what it should now measure), the new plan (which may differ: re-plan if it is faster by
/// more than the cost of moving layers), and the corrections.
pub fn replan(
    profiles: &[DeviceProfile],
    cost: &ModelCost,
    opt: &halda::Options,
    plan: &Plan,
    measured: &[Option<f64>],
) -> Result<Replan> {
    let (corrected, corrections) = calibrate(profiles, plan, measured)?;
    let current = halda::evaluate(&corrected, cost, opt, plan.head, plan.k, &plan.windows(), &plan.gpu_windows())?;
    let next = halda::plan(&corrected, cost, opt)?;
    Ok(Replan { profiles: corrected, current, next, corrections })
}

/// What [`replan`] found.
#[derive(Clone, Debug)]
pub struct Replan {
    pub profiles: Vec<DeviceProfile>,
    pub current: Plan,
    pub next: Plan,
    pub corrections: Vec<Correction>,
}

/// Predicted-vs-measured lines, one per device, with the relative error.
pub fn render(plan: &Plan, measured: &[Option<f64>]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for (d, m) in plan.devices.iter().zip(measured) {
        if d.w == 0 {
            continue;
        }
        let p = d.ms.total();
        match m {
            Some(m) => {
                let _ = writeln!(
                    s,
                    "  {:12} predicted {p:8.2}  measured {m:8.2}  ({:+.0}%)",
                    d.name,
                    (p / m - 1.0) * 100.0
                );
            }
            None => {
                let _ = writeln!(s, "  {:12} predicted {p:8.2}  measured -", d.name);
            }
        }
    }
    s
}

/// `prima up`'s closing table: per device of the plan, the predicted and the measured ms per
/// decode token (computing + sending; `measured` by device name) with the error, and the
/// ring's whole token time against the plan's (`ring_ms`: wall time per generated token,
/// prompt included).
pub fn report(plan: &Plan, measured: &[(&str, Option<f64>)], ring_ms: f64) -> String {
    let by_plan: Vec<Option<f64>> =
        plan.devices.iter().map(|d| measured.iter().find(|(n, _)| *n == d.name).and_then(|(_, m)| *m)).collect();
    format!(
        "up: predicted vs measured (computing + sending, ms per decode token):\n{}  {:12} predicted {:8.2}  \
         measured {ring_ms:8.2}  (whole ring per generated token, prompt included)\n",
        render(plan, &by_plan),
        "total",
        plan.ms_per_token
    )
}
