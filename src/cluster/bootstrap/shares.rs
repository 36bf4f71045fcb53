//! Phase 2 of `prima up`: every device's profile (for the plan), then each device's share of
//! the model: the tensors of its layers, streamed where missing (resumable, verified).

use std::time::{Duration, Instant};

use super::{Progress, UpOptions, dev_label, mb};
use crate::cluster::cache;
use crate::cluster::config::{ClusterConfig, DeviceConfig, LayerSplit};
use crate::cluster::messages::Msg;
use crate::cluster::planning;
use crate::cluster::ring;
use crate::cluster::transport::{CHUNK, Conn};
use crate::error::{Context, Error, Result};
use crate::gguf::GgufFile;
use crate::model::Model;
use crate::profile::DeviceProfile;

/// Make sure every worker of `plan` holds the tensors of its layers.
pub(super) fn sync_shares(
    conns: &mut [Conn],
    devices: &[DeviceConfig],
    f: &GgufFile,
    model: &Model,
    plan: &LayerSplit,
    opts: &UpOptions,
    p: &Progress,
) -> Result<()> {
    for (i, c) in conns.iter_mut().enumerate() {
        let d = &devices[i + 1];
        let names = ring::window_tensor_names(model, &plan.ranges(i + 1));
        let th = Instant::now();
        let hashes = cache::tensor_hashes(f, &names, opts.hash_memo.as_deref())?;
        if th.elapsed() > Duration::from_secs(1) {
            p.line(format!(
                "hashed {} tensors for {} in {:.1} s",
                names.len(),
                dev_label(d),
                th.elapsed().as_secs_f64()
            ));
        }
        sync_model(c, d, f, &names, &hashes, p)?;
    }
    Ok(())
}

/// Make sure the device holds `names` of the model; stream what it lacks.
fn sync_model(
    c: &mut Conn,
    d: &DeviceConfig,
    f: &GgufFile,
    names: &[String],
    hashes: &[[u8; 32]],
    p: &Progress,
) -> Result<()> {
    let share = cache::share(f, names, hashes)?;
    let total: u64 = share.tensors.iter().map(|t| t.size).sum();
    let tensors = share.tensors.clone();
    c.send(&Msg::ModelCheck { model_id: share.model_id.clone(), header: share.header, tensors: share.tensors })?;
    let have = match c.recv_ok().with_context(|| dev_label(d))? {
        Msg::ModelStatus { have } if have.len() == tensors.len() => have,
        m => return Err(Error::msg(format!("{}: expected ModelStatus, got {}", dev_label(d), m.name()))),
    };
    let present: u64 = have.iter().zip(&tensors).map(|(h, t)| (*h).min(t.size)).sum();
    let missing = total - present;
    if missing == 0 {
        p.line(format!("model {}: has its {} tensors ({:.1} MB) cached", dev_label(d), tensors.len(), mb(total)));
    } else {
        p.line(format!(
            "stream {}: {:.1} MB of {:.1} MB missing{}",
            dev_label(d),
            mb(missing),
            mb(total),
            if present > 0 { format!(" (resuming, {:.1} MB already there)", mb(present)) } else { String::new() }
        ));
    }
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut last_report = Instant::now();
    for (i, (t, &h)) in tensors.iter().zip(&have).enumerate() {
        let info = f.tensor(&t.name).ok_or_else(|| Error::msg(format!("no tensor `{}`", t.name)))?;
        let data = f.tensor_data(info);
        let mut off = h.min(t.size) as usize;
        while off < data.len() {
            let end = (off + CHUNK).min(data.len());
            c.send(&Msg::TensorChunk { index: i as u32, offset: off as u64, data: data[off..end].to_vec() })
                .with_context(|| format!("streaming layers to {}", dev_label(d)))?;
            sent += (end - off) as u64;
            off = end;
            if last_report.elapsed() > Duration::from_secs(2) {
                last_report = Instant::now();
                let s = t0.elapsed().as_secs_f64();
                p.line(format!(
                    "stream {}: {:.1}/{:.1} MB, {:.1} MB/s",
                    dev_label(d),
                    mb(sent),
                    mb(missing),
                    mb(sent) / s
                ));
            }
        }
    }
    c.send(&Msg::StreamEnd)?;
    match c.recv_ok().with_context(|| format!("verifying the layers sent to {}", dev_label(d)))? {
        Msg::ModelStatus { have } if have.iter().zip(&tensors).all(|(h, t)| *h == t.size) => {}
        m => return Err(Error::msg(format!("{}: layers incomplete after streaming ({})", dev_label(d), m.name()))),
    }
    if missing > 0 {
        let s = t0.elapsed().as_secs_f64().max(1e-6);
        p.line(format!(
            "stream {}: {:.1} MB in {:.2} s ({:.1} MB/s), verified",
            dev_label(d),
            mb(sent),
            s,
            mb(sent) / s
        ));
    }
    Ok(())
}

/// Every device's profile, the head's first: measured here (cached per build) and asked of
/// each agent over its control connection.
pub(super) fn profiles_of(
    cfg: &ClusterConfig,
    conns: &mut [&mut Conn],
    opts: &UpOptions,
    p: &Progress,
) -> Result<Vec<DeviceProfile>> {
    p.line("profiling the devices (cached per build; the first time takes a few seconds each)");
    let head_dir = opts.hash_memo.clone().unwrap_or_else(std::env::temp_dir).join("head-profile");
    let mut profiles = vec![planning::cached_profile(&head_dir)?];
    profiles[0].name = cfg.devices[0].name.clone();
    for (c, d) in conns.iter_mut().zip(&cfg.devices[1..]) {
        let mut prof = planning::remote_profile(c, &dev_label(d))?;
        prof.name = d.name.clone();
        profiles.push(prof);
    }
    for (prof, d) in profiles.iter_mut().zip(&cfg.devices) {
        d.cap_gpu_memory(prof);
    }
    Ok(profiles)
}
