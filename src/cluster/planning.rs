//! Choosing the split for `prima up`: manual windows from cluster.toml, an even split, or the
//! Halda plan over every device's measured profile (the default). Devices the plan drops leave
//! the ring.

use std::path::Path;

use super::config::{ClusterConfig, LayerSplit, Schedule};
use super::messages::Msg;
use super::transport::Conn;
use crate::error::{Context, Error, Result};
use crate::gguf::GgufFile;
use crate::profile::DeviceProfile;
use crate::sched::{ModelCost, halda};

/// This device's profile, kept in `dir` per build and host environment
/// ([`crate::profile::cache`]); measured again on `--reprofile` or when the head asks for it.
pub fn cached_profile(dir: &Path) -> Result<DeviceProfile> {
    cached_profile_fresh(dir, crate::profile::cache::reprofile_requested())
}

pub fn cached_profile_fresh(dir: &Path, fresh: bool) -> Result<DeviceProfile> {
    let stamp: String = super::agent::build_id().iter().map(|b| format!("{b:02x}")).collect();
    let opt = crate::profile::measure::Options { disk_dir: dir.to_path_buf(), ..Default::default() };
    Ok(crate::profile::cache::cached(dir, &opt, &stamp, fresh)?.0)
}

/// Ask an agent for its profile.
pub fn remote_profile(c: &mut Conn, label: &str) -> Result<DeviceProfile> {
    c.send(&Msg::ProfileRequest { fresh: crate::profile::cache::reprofile_requested() })?;
    match c.recv_ok().with_context(|| format!("profiling {label}"))? {
        Msg::ProfileReply { json } => DeviceProfile::from_json(&json).with_context(|| label.to_string()),
        m => Err(Error::msg(format!("{label}: expected ProfileReply, got {}", m.name()))),
    }
}

/// The split to run: `LayerSplit` over the devices marked `true` in the returned mask, and the Halda
/// plan when one was computed (for printing and predicted-vs-measured reports).
pub struct Choice {
    pub plan: LayerSplit,
    pub active: Vec<bool>,
    pub halda: Option<halda::Plan>,
}

/// Manual windows win; then the configured schedule. `profiles` are fetched lazily (only Halda
/// needs them): index 0 is the head.
pub fn choose(
    cfg: &ClusterConfig,
    f: &GgufFile,
    n_layer: usize,
    profiles: impl FnOnce() -> Result<Vec<DeviceProfile>>,
) -> Result<Choice> {
    let n = cfg.devices.len();
    let manual = cfg.devices.iter().any(|d| d.window.is_some());
    if manual || cfg.schedule == Schedule::Even || n == 1 {
        return Ok(Choice { plan: cfg.plan(n_layer)?, active: vec![true; n], halda: None });
    }
    let profiles = profiles()?;
    let cost = ModelCost::from_gguf(f)?;
    let opts = halda::Options {
        n_ctx: cfg.ctx_size as u64,
        // Our KV cache is f32, and the head (device 0) runs embedding, output and sampling.
        kv_ty: crate::quant::GgmlType::F32,
        head: Some(0),
        k: cfg.rounds,
        ..halda::Options::default()
    };
    let hp = halda::plan(&profiles, &cost, &opts).context("planning the split (Halda)")?;
    let windows = hp.windows();
    let active: Vec<bool> = windows.iter().enumerate().map(|(i, &w)| i == 0 || w > 0).collect();
    let plan = LayerSplit {
        rounds: hp.k as usize,
        windows: windows.iter().zip(&active).filter(|(_, a)| **a).map(|(&w, _)| w as usize).collect(),
    };
    if plan.n_layer() != n_layer {
        return Err(Error::msg(format!(
            "the planner's split {:?} × {} rounds does not cover the model's {n_layer} layers",
            plan.windows, plan.rounds
        )));
    }
    Ok(Choice { plan, active, halda: Some(hp) })
}
