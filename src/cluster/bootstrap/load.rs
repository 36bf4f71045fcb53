//! Phase 3 of `prima up`: assign every device its windows and load them everywhere at once
//! (every `Assign` sent, the head's own windows loaded, then every answer collected).

use std::sync::Arc;
use std::time::Instant;

use super::{UpOptions, dev_label};
use crate::cluster::config::{ClusterConfig, DeviceConfig, LayerSplit};
use crate::cluster::messages::Msg;
use crate::cluster::ring;
use crate::cluster::transport::Conn;
use crate::cpu::ThreadPool;
use crate::error::{Context, Error, Result};
use crate::gpu::Offload;
use crate::model::Window;

/// The head's loaded windows.
pub(super) struct Loaded {
    pub windows: Vec<Box<dyn Window>>,
    /// One line per device: what it loaded and how long it took.
    pub lines: Vec<String>,
}

pub(super) fn assign_and_load(
    conns: &mut [Conn],
    cfg: &ClusterConfig,
    plan: &LayerSplit,
    session: u64,
    model_id: &str,
    opts: &UpOptions,
    pool: &Arc<ThreadPool>,
) -> Result<Loaded> {
    let devices = &cfg.devices;
    let threads = |d: &DeviceConfig| d.threads.unwrap_or(0);
    for (i, c) in conns.iter().enumerate() {
        let d = &devices[i + 1];
        let windows = plan.ranges(i + 1).iter().map(|r| (r.start as u32, r.end as u32)).collect();
        c.send(&Msg::Assign {
            session,
            model_id: model_id.to_string(),
            windows,
            n_ctx: cfg.ctx_size,
            n_seq: opts.n_seq as u32,
            threads: threads(d),
            engine: opts.engine,
            gpu_layers: d.gpu_layers.unwrap_or(0),
        })?;
    }
    let t0 = Instant::now();
    let head_ranges = plan.ranges(0);
    let offload = Offload::open(devices[0].gpu_layers.unwrap_or(0) as usize);
    let (n_ctx, n_seq) = (cfg.ctx_size as usize, opts.n_seq);
    let windows = ring::open_windows(opts.engine, &cfg.model, &head_ranges, n_ctx, n_seq, pool, &offload)?;
    let mut lines = vec![format!(
        "load {} (head): layers {} in {:.2} s",
        devices[0].name,
        ring::fmt_ranges(&head_ranges),
        t0.elapsed().as_secs_f64()
    )];
    for (i, c) in conns.iter_mut().enumerate() {
        let d = &devices[i + 1];
        match c.recv_ok().with_context(|| format!("loading layers on {}", dev_label(d)))? {
            Msg::Assigned { load_ms } => lines.push(format!(
                "load {}: layers {} in {:.2} s",
                dev_label(d),
                ring::fmt_ranges(&plan.ranges(i + 1)),
                load_ms as f64 / 1e3
            )),
            m => return Err(Error::msg(format!("{}: expected Assigned, got {}", dev_label(d), m.name()))),
        }
    }
    Ok(Loaded { windows, lines })
}
