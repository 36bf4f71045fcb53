//! `prima up`, head side: connect to every agent, upgrade those running another build, make sure
//! each holds the tensors of the layers it will run (streaming only what is missing), load the
//! windows everywhere and close the ring. Progress goes to stderr, one line per step.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use super::agent::build_id;
use super::auth::{self, Secret};
use super::cache;
use super::config::{ClusterConfig, DeviceConfig, Plan};
use super::messages::{EngineKind, Msg, RingRole};
use super::planning;
use super::ring::{self, Event, HeadStats, Member, Ring};
use super::transport::{CHUNK, Conn, Timeouts};
use crate::cpu::ThreadPool;
use crate::error::{Context, Error, Result};
use crate::gguf::GgufFile;
use crate::profile::DeviceProfile;
use crate::sched::halda;

pub struct UpOptions {
    pub engine: EngineKind,
    /// Where the head memoises tensor hashes (None: hash every time).
    pub hash_memo: Option<PathBuf>,
    /// Print progress lines on stderr.
    pub verbose: bool,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions { engine: EngineKind::Real, hash_memo: default_memo_dir(), verbose: true }
    }
}

/// `$XDG_CACHE_HOME/prima` or `~/.cache/prima`.
pub fn default_memo_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("prima"))
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

struct Progress(bool);
impl Progress {
    fn line(&self, s: impl std::fmt::Display) {
        if self.0 {
            eprintln!("up: {s}");
        }
    }
}

fn dev_label(d: &DeviceConfig) -> String {
    format!("device `{}` ({})", d.name, d.addr)
}

/// Connect and authenticate, with a clear error naming the device.
fn connect(d: &DeviceConfig, secret: &Secret, t: Timeouts) -> Result<(Conn, Msg)> {
    let mut c = Conn::connect(&d.addr, d.name.clone(), t).map_err(|e| {
        Error::msg(format!(
            "{} is unreachable: {e}. Is `prima agent --listen {}` running there, and the port open?",
            dev_label(d),
            d.addr
        ))
    })?;
    auth::client(&mut c, secret, t).map_err(|e| {
        Error::msg(format!("{} refused us: {e} (do both sides use the same secret file?)", dev_label(d)))
    })?;
    pin(&c, d, secret)?;
    c.send(&Msg::Hello)?;
    let hello = c.recv_ok().with_context(|| dev_label(d))?;
    Ok((c, hello))
}

/// The agent's proven key must be the one pinned for this device (pinned now if it is new).
fn pin(c: &Conn, d: &DeviceConfig, secret: &Secret) -> Result<()> {
    match (secret.pin_file(), c.remote_key()) {
        (Some(file), Some(key)) => auth::check_pin(file, &d.name, &d.addr, &key),
        (None, _) => Ok(()),
        (_, None) => Err(Error::msg(format!("{}: no key after the handshake", dev_label(d)))),
    }
}

/// Connect, upgrading the agent first if it runs another build.
fn connect_current(d: &DeviceConfig, secret: &Secret, t: Timeouts, p: &Progress) -> Result<Conn> {
    let t0 = Instant::now();
    let (mut c, hello) = connect(d, secret, t)?;
    let Msg::HelloReply { version, build_id: theirs, os, arch } = hello else {
        return Err(Error::msg(format!("{}: expected HelloReply, got {}", dev_label(d), hello.name())));
    };
    p.line(format!(
        "connect {}: prima {version} {os}/{arch} ({:.0} ms)",
        dev_label(d),
        t0.elapsed().as_secs_f64() * 1e3
    ));
    if theirs == build_id() {
        return Ok(c);
    }
    if os != std::env::consts::OS || arch != std::env::consts::ARCH {
        if version == env!("CARGO_PKG_VERSION") {
            return Ok(c);
        }
        return Err(Error::msg(format!(
            "{} runs prima {version} on {os}/{arch}; this head is prima {} on {}/{}, so it cannot send its own binary: \
             install prima {} there by hand",
            dev_label(d),
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            env!("CARGO_PKG_VERSION")
        )));
    }
    // Ship our own binary.
    let t0 = Instant::now();
    let bytes = own_binary()?;
    let sha = super::sha256::sha256(&bytes);
    c.send(&Msg::ShipBegin { size: bytes.len() as u64, sha256: sha })?;
    for chunk in bytes.chunks(CHUNK) {
        c.send(&Msg::ShipChunk { data: chunk.to_vec() })?;
    }
    c.send(&Msg::ShipEnd)?;
    match c.recv_ok().with_context(|| format!("upgrading {}", dev_label(d)))? {
        Msg::Restarting => {}
        m => return Err(Error::msg(format!("{}: expected Restarting, got {}", dev_label(d), m.name()))),
    }
    drop(c);
    p.line(format!(
        "ship {}: {:.1} MB binary in {:.2} s, agent restarting",
        dev_label(d),
        mb(bytes.len() as u64),
        t0.elapsed().as_secs_f64()
    ));
    // The agent re-executes; reconnect once it listens again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(150));
        match connect(d, secret, t) {
            Ok((c, Msg::HelloReply { build_id: b, .. })) if b == build_id() => {
                p.line(format!("ship {}: upgraded ({:.2} s)", dev_label(d), t0.elapsed().as_secs_f64()));
                return Ok(c);
            }
            Ok(_) => {
                return Err(Error::msg(format!(
                    "{} still reports another build after the upgrade (is its binary read-only?)",
                    dev_label(d)
                )));
            }
            Err(e) if Instant::now() > deadline => return Err(e.context("after the upgrade")),
            Err(_) => {}
        }
    }
}

/// This program's bytes. On Linux through /proc/self/exe, which stays readable even when an
/// agent sharing our path (devices on one machine) has already replaced the file.
fn own_binary() -> Result<Vec<u8>> {
    if let Ok(b) = std::fs::read("/proc/self/exe") {
        return Ok(b);
    }
    let exe = std::env::current_exe().context("finding our own executable")?;
    std::fs::read(&exe).with_context(|| format!("reading {}", exe.display()))
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
fn profiles_of(
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
    Ok(profiles)
}

/// Connect to every agent and collect the devices' profiles (for `prima plan cluster.toml`).
pub fn gather_profiles(cfg: &ClusterConfig, opts: &UpOptions) -> Result<Vec<DeviceProfile>> {
    let p = Progress(opts.verbose);
    let mut conns = Vec::new();
    if cfg.devices.len() > 1 {
        let secret = Secret::load(&cfg.secret_file)?;
        for d in &cfg.devices[1..] {
            conns.push(connect_current(d, &secret, cfg.timeouts, &p)?);
        }
    }
    let mut live: Vec<&mut Conn> = conns.iter_mut().collect();
    profiles_of(cfg, &mut live, opts, &p)
}

/// Bring the cluster up and return the head's end of the ring.
pub fn up(cfg: &ClusterConfig, opts: &UpOptions) -> Result<Ring> {
    let p = Progress(opts.verbose);
    let t = cfg.timeouts;
    let f = GgufFile::open(&cfg.model).with_context(|| format!("the model of {}", cfg.path.display()))?;
    let (n_layer, n_embd, _) = ring::dims(&f)?;
    let batch_bytes = cfg.batch_size as usize * n_embd * 4;
    if batch_bytes + 4096 > super::transport::MAX_FRAME {
        return Err(Error::msg(format!(
            "{}: batch_size = {} makes {} MiB activation messages, above the {} MiB limit; use batch_size = {} or less",
            cfg.path.display(),
            cfg.batch_size,
            batch_bytes >> 20,
            super::transport::MAX_FRAME >> 20,
            (super::transport::MAX_FRAME - 4096) / (n_embd * 4)
        )));
    }
    let secret = if cfg.devices.len() > 1 { Some(Secret::load(&cfg.secret_file)?) } else { None };
    let mut conns = Vec::new();
    for d in &cfg.devices[1..] {
        conns.push(Some(connect_current(d, secret.as_ref().expect("n > 1"), t, &p)?));
    }

    // The split: manual windows, an even split, or Halda over every device's profile.
    let choice = planning::choose(cfg, &f, n_layer, || {
        let mut live: Vec<&mut Conn> = conns.iter_mut().map(|c| c.as_mut().expect("all connected")).collect();
        profiles_of(cfg, &mut live, opts, &p)
    })?;
    if let Some(hp) = &choice.halda {
        p.line(format!("plan (Halda):\n{}", halda::render(hp).trim_end()));
    }
    // Devices the plan drops leave the ring: keep the others, in ring order.
    let mut kept = Vec::new();
    let mut active_conns = Vec::new();
    for (i, (d, keep)) in cfg.devices.iter().zip(&choice.active).enumerate() {
        if *keep {
            kept.push(d.clone());
            if i > 0 {
                active_conns.push(conns[i - 1].take());
            }
        } else {
            p.line(format!("{} gets no layers and stays idle", dev_label(d)));
        }
    }
    let mut conns: Vec<Conn> = active_conns.into_iter().flatten().collect();
    let cfg = &{
        let mut c = cfg.clone();
        c.devices = kept;
        c
    };
    let plan: Plan = choice.plan.clone();
    let n = cfg.devices.len();
    let devices = &cfg.devices;
    p.line(format!(
        "{}: {n_layer} layers, {n} device(s), {} round(s), windows {:?}",
        cfg.model.display(),
        plan.rounds,
        plan.windows
    ));
    for (i, c) in conns.iter_mut().enumerate() {
        let d = &devices[i + 1];
        let names = ring::window_tensor_names(&f, &plan.ranges(i + 1))?;
        let th = Instant::now();
        let hashes = cache::tensor_hashes(&f, &names, opts.hash_memo.as_deref())?;
        if th.elapsed() > Duration::from_secs(1) {
            p.line(format!(
                "hashed {} tensors for {} in {:.1} s",
                names.len(),
                dev_label(d),
                th.elapsed().as_secs_f64()
            ));
        }
        sync_model(c, d, &f, &names, &hashes, &p)?;
    }

    // Load everywhere at once: send every Assign, load our own windows, then collect.
    let session = u64::from_le_bytes(auth::nonce()?[..8].try_into().expect("8 bytes"));
    let model_id = cache::model_id(&f);
    let threads = |d: &DeviceConfig| d.threads.unwrap_or(0);
    for (i, c) in conns.iter().enumerate() {
        let d = &devices[i + 1];
        let windows = plan.ranges(i + 1).iter().map(|r| (r.start as u32, r.end as u32)).collect();
        c.send(&Msg::Assign {
            session,
            model_id: model_id.clone(),
            windows,
            n_ctx: cfg.ctx_size,
            threads: threads(d),
            engine: opts.engine,
        })?;
    }
    let t0 = Instant::now();
    let head_ranges = plan.ranges(0);
    let head_threads = match threads(&devices[0]) {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n as usize,
    };
    let pool = Arc::new(ThreadPool::new(head_threads));
    let windows = ring::open_windows(opts.engine, &cfg.model, &head_ranges, cfg.ctx_size as usize, &pool)?;
    let head = ring::open_head(opts.engine, &cfg.model, &pool)?;
    p.line(format!(
        "load {} (head): layers {} in {:.2} s",
        devices[0].name,
        ring::fmt_ranges(&head_ranges),
        t0.elapsed().as_secs_f64()
    ));
    for (i, c) in conns.iter_mut().enumerate() {
        let d = &devices[i + 1];
        match c.recv_ok().with_context(|| format!("loading layers on {}", dev_label(d)))? {
            Msg::Assigned { load_ms } => p.line(format!(
                "load {}: layers {} in {:.2} s",
                dev_label(d),
                ring::fmt_ranges(&plan.ranges(i + 1)),
                load_ms as f64 / 1e3
            )),
            m => return Err(Error::msg(format!("{}: expected Assigned, got {}", dev_label(d), m.name()))),
        }
    }

    // Close the ring: each worker connects to its successor; the head connects to the first
    // worker (our outbound) and to the last (our inbound), so no device ever connects to the head.
    let (etx, events) = mpsc::channel();
    let mut out = None;
    let mut controls = Vec::new();
    let mut links = Vec::new();
    if n > 1 {
        let secret = secret.as_ref().expect("n > 1");
        for (i, c) in conns.iter().enumerate() {
            let next = if i + 2 < n { Some(devices[i + 2].addr.clone()) } else { None };
            c.send(&Msg::Connect { next })?;
        }
        let link = |d: &DeviceConfig, role| -> Result<Conn> {
            let mut c = Conn::connect(&d.addr, format!("{} (ring)", d.name), t)?;
            auth::client(&mut c, secret, t)?;
            pin(&c, d, secret)?;
            c.send(&Msg::RingJoin { session, role })?;
            Ok(c)
        };
        let first =
            link(&devices[1], RingRole::Inbound).with_context(|| format!("ring link to {}", dev_label(&devices[1])))?;
        let last = link(&devices[n - 1], RingRole::Outbound)
            .with_context(|| format!("ring link from {}", dev_label(&devices[n - 1])))?;
        for (i, c) in conns.iter_mut().enumerate() {
            let d = &devices[i + 1];
            match c.recv_ok().with_context(|| format!("forming the ring at {}", dev_label(d)))? {
                Msg::RingReady => {}
                m => return Err(Error::msg(format!("{}: expected RingReady, got {}", dev_label(d), m.name()))),
            }
        }
        ring::pump(last.rx, etx.clone(), |r| match r {
            Ok(m) => Event::Ring(m),
            Err(e) => Event::RingClosed(e),
        });
        ring::pump(first.rx, etx.clone(), |r| match r {
            Ok(m) => Event::Ring(Msg::Error { msg: format!("unexpected {} from the first device", m.name()) }),
            Err(e) => Event::RingClosed(e.context("link to the first device")),
        });
        links.push(last.tx);
        out = Some(first.tx);
        for (i, c) in conns.into_iter().enumerate() {
            let Conn { tx, rx } = c;
            controls.push(tx);
            ring::pump(rx, etx.clone(), move |r| match r {
                Ok(m) => Event::Control(i, m),
                Err(e) => Event::ControlClosed(i, e),
            });
        }
        crate::sys::release_free_heap();
        p.line(format!("ring ready: {}", devices.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(" → ")));
    }
    drop(etx);
    let members = devices[1..]
        .iter()
        .enumerate()
        .map(|(i, d)| Member { name: d.name.clone(), addr: d.addr.clone(), ranges: plan.ranges(i + 1) })
        .collect();
    let pager = crate::memory::Pager::new(windows.iter().map(|w| w.mapped()));
    let mut windows = windows;
    for w in windows.iter_mut() {
        w.set_progress(pager.progress());
    }
    Ok(Ring {
        head,
        pager,
        windows,
        members,
        head_ranges,
        out,
        controls,
        links,
        events,
        timeout: t.io,
        batch_size: cfg.batch_size as usize,
        stats: HeadStats::default(),
        kv_len: 0,
        n_ctx: cfg.ctx_size as usize,
        logits: Vec::new(),
        plan: choice.halda,
    })
}

/// Read a whole file (used for the binary hash of other executables in tests).
pub fn file_sha256(path: &Path) -> Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    let mut h = super::sha256::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
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
            pin(&c, d, &secret)?;
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
