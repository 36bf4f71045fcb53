//! `prima up`, head side, in four phases: connect to every agent (upgrading those running
//! another build: [`connect`]), plan the split and make sure each device holds the tensors of
//! its layers (streaming only what is missing: [`shares`]), assign and load the windows
//! everywhere ([`load`]), and close the ring ([`close`]). Long steps report progress on stderr
//! as they go; the rest comes back in an [`UpReport`].

mod close;
mod connect;
mod load;
mod replan;
mod shares;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::auth::{self, Secret};
use super::cache;
use super::config::{ClusterConfig, DeviceConfig, LayerSplit};
use super::messages::{EngineKind, Msg};
use super::planning;
use super::ring::{self, Member, Ring, RingParts, RingState};
use super::transport::Conn;
use crate::cpu::ThreadPool;
use crate::error::{Context, Error, Result};
use crate::gguf::GgufFile;
use crate::model::{Model, Window};
use crate::profile::DeviceProfile;
use crate::sched::halda;

#[derive(Clone)]
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
/// Returns the head's end of the ring and what was done. A ring of several devices forms
/// itself again when it loses one ([`replan`]).
pub fn up(cfg: &ClusterConfig, opts: &UpOptions) -> Result<(Ring, UpReport)> {
    let p = Progress(opts.verbose);
    let t = cfg.timeouts;
    let f = GgufFile::open(&cfg.model).with_context(|| format!("the model of {}", cfg.path.display()))?;
    let model = Model::from_gguf(f.clone())?;
    let n_embd = model.config.n_embd;
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

    // 1. Connect (and upgrade).
    let conns = match &secret {
        Some(s) => connect::connect_all(&cfg.devices[1..], s, t, &p)?,
        None => Vec::new(),
    };

    // 2.–4. Plan, sync shares, assign and load, close the ring.
    let mut former = Former::new(cfg.clone(), f, model, secret, opts.clone());
    let formed = former.form(&vec![true; cfg.devices.len()], conns, &p)?;
    let ends = ring::open_ends(opts.engine, &cfg.model, &former.pool)?;
    let mut ring = Ring::new(RingParts {
        ends,
        windows: formed.windows,
        state: formed.state,
        timeout: t.io,
        batch_size: cfg.batch_size as usize,
        n_ctx: cfg.ctx_size as usize,
        n_seq: opts.n_seq,
    });
    if cfg.devices.len() > 1 {
        let replanner = replan::Replanner::new(former, formed.in_ring, ring.state());
        ring.pipeline().set_recovery(Box::new(replanner));
    }
    Ok((ring, formed.report))
}

/// What forming a ring needs, kept to form it again over other devices.
pub(super) struct Former {
    /// Every device of cluster.toml.
    cfg: ClusterConfig,
    f: GgufFile,
    model: Model,
    secret: Option<Secret>,
    opts: UpOptions,
    /// The head's compute threads (its windows of every ring share them).
    pool: Arc<ThreadPool>,
    /// Per device of `cfg`: its profile, once asked (Halda plans over them).
    profiles: Vec<Option<DeviceProfile>>,
}

/// A ring formed over some devices: the head's own windows and the links.
pub(super) struct Formed {
    windows: Vec<Box<dyn Window>>,
    state: RingState,
    /// Per device of cluster.toml: whether it is in this ring (has layers).
    in_ring: Vec<bool>,
    report: UpReport,
    /// Time to plan, to stream the layers devices lacked, to load and close the ring.
    times: [Duration; 3],
}

impl Former {
    fn new(cfg: ClusterConfig, f: GgufFile, model: Model, secret: Option<Secret>, opts: UpOptions) -> Former {
        // One rule for every device: the configured threads, else `cpu::default_threads`.
        let threads = match cfg.devices[0].threads.unwrap_or(0) {
            0 => crate::cpu::default_threads(),
            n => n as usize,
        };
        let profiles = vec![None; cfg.devices.len()];
        Former { cfg, f, model, secret, opts, pool: Arc::new(ThreadPool::new(threads)), profiles }
    }

    /// Form a ring over the devices marked in `candidates` (the head always is), whose agents
    /// are `conns` in order: plan the split, stream what each lacks, assign and load, close.
    fn form(&mut self, candidates: &[bool], conns: Vec<Conn>, p: &Progress) -> Result<Formed> {
        let t0 = Instant::now();
        let n_layer = self.model.config.n_layer;
        let index: Vec<usize> = (0..candidates.len()).filter(|&i| i == 0 || candidates[i]).collect();
        let mut sub = self.cfg.clone();
        sub.devices = index.iter().map(|&i| self.cfg.devices[i].clone()).collect();
        if index.len() < self.cfg.devices.len() {
            redistribute_windows(&self.cfg, &mut sub, &index, n_layer, p)?;
        }
        let mut conns = conns;
        let mut report = UpReport::default();

        // The split (manual windows, an even split, or Halda over every device's profile), then
        // every device's share of the model.
        let (profiles, opts) = (&mut self.profiles, &self.opts);
        let choice = planning::choose(&sub, &self.f, n_layer, || {
            if index.iter().any(|&i| profiles[i].is_none()) {
                let mut live: Vec<&mut Conn> = conns.iter_mut().collect();
                let got = shares::profiles_of(&sub, &mut live, opts, p)?;
                for (&i, prof) in index.iter().zip(got) {
                    profiles[i] = Some(prof);
                }
            }
            Ok(index.iter().map(|&i| profiles[i].clone().expect("fetched above")).collect())
        })?;
        report.plan = choice.halda.as_ref().map(halda::render);
        // Devices the plan drops leave the ring: keep the others, in ring order.
        let mut kept = Vec::new();
        let mut active = Vec::new();
        let mut in_ring = vec![false; self.cfg.devices.len()];
        // The head has no connection: `None` pairs with device 0.
        let conns_by_device = std::iter::once(None).chain(conns.into_iter().map(Some));
        let candidates = sub.devices.iter().zip(&choice.active).zip(conns_by_device).zip(&index);
        for (j, (((d, keep), c), &i)) in candidates.enumerate() {
            if *keep {
                // Halda's GPU layers per window (n_m) where the file sets no `gpu_layers`.
                let mut d = d.clone();
                d.gpu_layers = d.gpu_layers.or(choice.halda.as_ref().map(|h| h.devices[j].n).filter(|&n| n > 0));
                kept.push(d);
                active.extend(c);
                in_ring[i] = true;
            } else {
                p.line(format!("{} gets no layers and stays idle", dev_label(d)));
            }
        }
        let mut conns = active;
        sub.devices = kept;
        let cfg = &sub;
        let plan: &LayerSplit = &choice.plan;
        let devices = &cfg.devices;
        let n = devices.len();
        report.layout = format!(
            "{}: {n_layer} layers, {n} device(s), {} round(s), windows {:?}",
            cfg.model.display(),
            plan.rounds,
            plan.windows
        );
        let planned = Instant::now();
        shares::sync_shares(&mut conns, devices, &self.f, &self.model, plan, &self.opts, p)?;
        let streamed = Instant::now();

        // Assign and load.
        let session = u64::from_le_bytes(auth::nonce()?[..8].try_into().expect("8 bytes"));
        let loaded =
            load::assign_and_load(&mut conns, cfg, plan, session, &cache::model_id(&self.f), &self.opts, &self.pool)?;
        report.loads = loaded.lines;

        // Close the ring.
        let members: Vec<Member> = devices[1..]
            .iter()
            .enumerate()
            .map(|(i, d)| Member { name: d.name.clone(), addr: d.addr.clone(), ranges: plan.ranges(i + 1) })
            .collect();
        let links = match &self.secret {
            Some(s) if n > 1 => {
                let t = cfg.timeouts;
                let l = close::close_ring(conns, devices, members.clone(), plan.rounds.max(1), session, s, t)?;
                crate::sys::release_free_heap();
                report.ring = Some(devices.iter().map(|d| d.name.clone()).collect());
                Some(l)
            }
            _ => None,
        };
        let (link, controls, keep_open) = match links {
            Some(l) => (Some(Arc::new(Mutex::new(l.link))), l.controls, l.keep_open),
            None => (None, Vec::new(), Vec::new()),
        };
        let state = RingState { link, members, head_ranges: plan.ranges(0), controls, keep_open, plan: choice.halda };
        let times = [planned - t0, streamed - planned, streamed.elapsed()];
        Ok(Formed { windows: loaded.windows, state, in_ring, report, times })
    }
}

/// Manual windows over fewer devices than cluster.toml names: the survivors' windows grow in
/// proportion to cover the model in the same number of rounds (largest remainders first).
fn redistribute_windows(
    cfg: &ClusterConfig,
    sub: &mut ClusterConfig,
    index: &[usize],
    n_layer: usize,
    p: &Progress,
) -> Result<()> {
    if !cfg.devices.iter().any(|d| d.window.is_some()) {
        return Ok(());
    }
    let rounds = cfg.plan(n_layer)?.rounds.max(1);
    let per_round = n_layer / rounds;
    let w: Vec<usize> = index.iter().map(|&i| cfg.devices[i].window.unwrap_or(0) as usize).collect();
    let total: usize = w.iter().sum();
    let mut new: Vec<usize> = match total {
        // Nothing left that had layers: the head takes them all.
        0 => std::iter::once(per_round).chain(std::iter::repeat_n(0, w.len() - 1)).collect(),
        _ => w.iter().map(|&x| x * per_round / total).collect(),
    };
    let mut order: Vec<usize> = (0..w.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse((w[i] * per_round) % total.max(1)));
    let short = per_round - new.iter().sum::<usize>();
    for &i in order.iter().cycle().take(short) {
        new[i] += 1;
    }
    p.line(format!(
        "manual windows redistributed in proportion over the {} remaining device(s): {w:?} → {new:?} per round",
        index.len()
    ));
    for (d, &x) in sub.devices.iter_mut().zip(&new) {
        d.window = Some(x as u32);
    }
    sub.rounds = Some(rounds as u32);
    Ok(())
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
