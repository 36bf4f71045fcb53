//! `prima up`, head side, in four phases: connect to every agent (upgrading those running
//! another build: [`connect`]), plan the split and make sure each device holds the tensors of
//! its layers (streaming only what is missing: [`shares`]), assign and load the windows
//! everywhere ([`load`]), and close the ring ([`close`]). Long steps report progress on stderr
//! as they go; the rest comes back in an [`UpReport`].

mod close;
mod connect;
mod load;
mod shares;

use std::path::PathBuf;

use super::auth::{self, Secret};
use super::cache;
use super::config::{ClusterConfig, DeviceConfig, LayerSplit};
use super::messages::{EngineKind, Msg};
use super::planning;
use super::ring::{Member, Ring, RingParts};
use super::transport::Conn;
use crate::error::{Context, Error, Result};
use crate::gguf::GgufFile;
use crate::model::Model;
use crate::profile::DeviceProfile;
use crate::sched::halda;

pub struct UpOptions {
    pub engine: EngineKind,
    /// Where the head memoises tensor hashes (None: hash every time).
    pub hash_memo: Option<PathBuf>,
    /// Print progress lines on stderr.
    pub verbose: bool,
    /// Sequences the ring holds at once (KV slots on every device).
    pub n_seq: usize,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions { engine: EngineKind::Real, hash_memo: default_memo_dir(), verbose: true, n_seq: 1 }
    }
}

/// `$XDG_CACHE_HOME/prima` or `~/.cache/prima`.
pub fn default_memo_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("prima"))
}

pub(crate) fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

pub(crate) struct Progress(bool);
impl Progress {
    pub(crate) fn line(&self, s: impl std::fmt::Display) {
        if self.0 {
            eprintln!("up: {s}");
        }
    }
}

pub(crate) fn dev_label(d: &DeviceConfig) -> String {
    format!("device `{}` ({})", d.name, d.addr)
}

/// What `prima up` did, for the front end to print: the plan, each device's load, the ring.
#[derive(Clone, Debug, Default)]
pub struct UpReport {
    /// Halda's plan, rendered (when the split came from it).
    pub plan: Option<String>,
    /// Model, devices, rounds and windows.
    pub layout: String,
    /// One line per device: the layers it loaded and how long that took.
    pub loads: Vec<String>,
    /// The devices in ring order (None for the head alone).
    pub ring: Option<Vec<String>>,
}

impl UpReport {
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.plan.iter().map(|p| format!("plan (Halda):\n{}", p.trim_end())).collect();
        out.push(self.layout.clone());
        out.extend(self.loads.iter().cloned());
        if let Some(r) = &self.ring {
            out.push(format!("ring ready: {}", r.join(" → ")));
        }
        out
    }
}

/// Bring the cluster up: connect, plan and sync shares, assign and load, close the ring.
/// Returns the head's end of the ring and what was done.
pub fn up(cfg: &ClusterConfig, opts: &UpOptions) -> Result<(Ring, UpReport)> {
    let p = Progress(opts.verbose);
    let t = cfg.timeouts;
    let f = GgufFile::open(&cfg.model).with_context(|| format!("the model of {}", cfg.path.display()))?;
    let model = Model::from_gguf(f.clone())?;
    let (n_layer, n_embd) = (model.config.n_layer, model.config.n_embd);
    let batch_bytes = cfg.batch_size as usize * n_embd * 4;
    if batch_bytes + 4096 > crate::cluster::transport::MAX_FRAME {
        return Err(Error::msg(format!(
            "{}: batch_size = {} makes {} MiB activation messages, above the {} MiB limit; use batch_size = {} or less",
            cfg.path.display(),
            cfg.batch_size,
            batch_bytes >> 20,
            crate::cluster::transport::MAX_FRAME >> 20,
            (crate::cluster::transport::MAX_FRAME - 4096) / (n_embd * 4)
        )));
    }
    let secret = if cfg.devices.len() > 1 { Some(Secret::load(&cfg.secret_file)?) } else { None };
    let mut report = UpReport::default();

    // 1. Connect (and upgrade).
    let mut conns = match &secret {
        Some(s) => connect::connect_all(&cfg.devices[1..], s, t, &p)?,
        None => Vec::new(),
    };

    // 2. The split (manual windows, an even split, or Halda over every device's profile), then
    // every device's share of the model.
    let choice = planning::choose(cfg, &f, n_layer, || {
        let mut live: Vec<&mut Conn> = conns.iter_mut().collect();
        shares::profiles_of(cfg, &mut live, opts, &p)
    })?;
    report.plan = choice.halda.as_ref().map(halda::render);
    // Devices the plan drops leave the ring: keep the others, in ring order.
    let mut kept = Vec::new();
    let mut active = Vec::new();
    // The head has no connection: `None` pairs with device 0.
    let conns_by_device = std::iter::once(None).chain(conns.into_iter().map(Some));
    for (i, ((d, keep), c)) in cfg.devices.iter().zip(&choice.active).zip(conns_by_device).enumerate() {
        if *keep {
            // Halda's GPU layers per window (n_m) where the file sets no `gpu_layers`.
            let mut d = d.clone();
            d.gpu_layers = d.gpu_layers.or(choice.halda.as_ref().map(|h| h.devices[i].n).filter(|&n| n > 0));
            kept.push(d);
            active.extend(c);
        } else {
            p.line(format!("{} gets no layers and stays idle", dev_label(d)));
        }
    }
    let mut conns = active;
    let cfg = &{
        let mut c = cfg.clone();
        c.devices = kept;
        c
    };
    let plan: &LayerSplit = &choice.plan;
    let devices = &cfg.devices;
    let n = devices.len();
    report.layout = format!(
        "{}: {n_layer} layers, {n} device(s), {} round(s), windows {:?}",
        cfg.model.display(),
        plan.rounds,
        plan.windows
    );
    shares::sync_shares(&mut conns, devices, &f, &model, plan, opts, &p)?;

    // 3. Assign and load.
    let session = u64::from_le_bytes(auth::nonce()?[..8].try_into().expect("8 bytes"));
    let loaded = load::assign_and_load(&mut conns, cfg, plan, session, &cache::model_id(&f), opts)?;
    report.loads = loaded.lines;

    // 4. Close the ring.
    let members: Vec<Member> = devices[1..]
        .iter()
        .enumerate()
        .map(|(i, d)| Member { name: d.name.clone(), addr: d.addr.clone(), ranges: plan.ranges(i + 1) })
        .collect();
    let links = match &secret {
        Some(s) if n > 1 => {
            let l = close::close_ring(conns, devices, members.clone(), plan.rounds.max(1), session, s, t)?;
            crate::sys::release_free_heap();
            report.ring = Some(devices.iter().map(|d| d.name.clone()).collect());
            Some(l)
        }
        _ => None,
    };
    let (link, controls, keep_open) = match links {
        Some(l) => (Some(l.link), l.controls, l.keep_open),
        None => (None, Vec::new(), Vec::new()),
    };
    let ring = Ring::new(RingParts {
        ends: loaded.ends,
        windows: loaded.windows,
        head_ranges: plan.ranges(0),
        members,
        link,
        controls,
        keep_open,
        timeout: t.io,
        batch_size: cfg.batch_size as usize,
        n_ctx: cfg.ctx_size as usize,
        n_seq: opts.n_seq,
        plan: choice.halda.clone(),
    });
    Ok((ring, report))
}

/// Connect to every agent and collect the devices' profiles (for `prima plan cluster.toml`).
pub fn gather_profiles(cfg: &ClusterConfig, opts: &UpOptions) -> Result<Vec<DeviceProfile>> {
    let p = Progress(opts.verbose);
    let mut conns = Vec::new();
    if cfg.devices.len() > 1 {
        let secret = Secret::load(&cfg.secret_file)?;
        for d in &cfg.devices[1..] {
            conns.push(connect::connect_current(d, &secret, cfg.timeouts, &p)?);
        }
    }
    let mut live: Vec<&mut Conn> = conns.iter_mut().collect();
    shares::profiles_of(cfg, &mut live, opts, &p)
}

/// `prima down`: ask every agent to stop its ring sessions (agents stay up).
pub fn down(cfg: &ClusterConfig) -> Result<()> {
    let secret = Secret::load(&cfg.secret_file)?;
    let t = cfg.timeouts;
    let mut failed = Vec::new();
    for d in &cfg.devices[1..] {
        let r = (|| -> Result<u32> {
            let mut c = Conn::connect(&d.addr, d.name.clone(), t)?;
            auth::client(&mut c, &secret, t)?;
            connect::pin(&c, d, &secret)?;
            c.send(&Msg::Down)?;
            match c.recv_ok()? {
                Msg::DownReply { sessions } => Ok(sessions),
                m => Err(Error::msg(format!("expected DownReply, got {}", m.name()))),
            }
        })();
        match r {
            Ok(n) => eprintln!("down: {}: stopped {n} ring session(s)", dev_label(d)),
            Err(e) => {
                eprintln!("down: {}: {e}", dev_label(d));
                failed.push(d.name.clone());
            }
        }
    }
    if failed.is_empty() { Ok(()) } else { Err(Error::msg(format!("could not reach {}", failed.join(", ")))) }
}
