//! `prima agent`: the one thing started by hand on each device. It serves forever: every
//! connection authenticates first; a control connection from a head can upgrade the binary,
//! fill the layer cache and then run windows in a ring until the head stops it or goes away,
//! after which everything it held is dropped and the agent is idle again.
//!
//! Before a peer has authenticated it holds one of a few handshake slots: at most
//! [`MAX_PENDING_PER_IP`] per source address, and when all [`MAX_PENDING`] are taken a newcomer
//! from a less busy address evicts a handshake of the busiest one, so strangers cannot keep the
//! head out; each handshake has one absolute deadline ([`auth::HANDSHAKE_DEADLINE`]).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use super::auth::{self, Secret};
use super::cache;
use super::messages::{Msg, RingRole};
use super::ring::{self, Event};
use super::sha256::sha256;
use super::transport::{Conn, Timeouts};
use crate::error::{Context, Error, Result};

/// Largest binary accepted by `ShipBegin`, and the smallest that can be a real prima.
const MAX_BINARY: u64 = 1 << 30;
const MIN_BINARY: u64 = 4096;
/// Handshakes in progress at once, in all and per source address.
pub const MAX_PENDING: usize = 32;
pub const MAX_PENDING_PER_IP: usize = 4;
/// Authenticated connections served at once (control, ring links).
const MAX_CONNECTIONS: usize = 256;
/// Bounds on what an authenticated head may ask for.
const MAX_THREADS: usize = 1024;
const MAX_WINDOWS: usize = 4096;
const MAX_CTX: u32 = 1 << 24;
/// Sequences one ring may batch (each has its own KV slot).
const MAX_SEQ: u32 = 256;

pub struct AgentOptions {
    pub listen: String,
    pub secret: Secret,
    pub cache_dir: PathBuf,
    pub timeouts: Timeouts,
    /// Install a shipped binary even when it reports an older version than ours.
    pub allow_downgrade: bool,
}

/// The sha256 of the running executable: two prima binaries are the same build iff these match.
/// `PRIMA_FAKE_BUILD_ID` (tests only) replaces it, to force an upgrade.
pub fn build_id() -> [u8; 32] {
    static ID: OnceLock<[u8; 32]> = OnceLock::new();
    *ID.get_or_init(|| {
        if let Ok(fake) = std::env::var("PRIMA_FAKE_BUILD_ID") {
            return sha256(fake.as_bytes());
        }
        std::env::current_exe().and_then(std::fs::read).map(|b| sha256(&b)).unwrap_or([0; 32])
    })
}

type Joins = Mutex<HashMap<u64, mpsc::Sender<(RingRole, Conn)>>>;

struct Shared {
    opts: AgentOptions,
    /// Sessions waiting for (or holding) ring links, by session id.
    joins: Joins,
    /// Links of running ring sessions, closed by `Down`.
    active: Mutex<HashMap<u64, Vec<super::transport::Sender>>>,
    /// Models being streamed in by some session.
    streaming: Mutex<std::collections::HashSet<String>>,
    /// Authenticated connections being served.
    open: AtomicUsize,
    /// Handshakes in progress, by source address.
    pending: Mutex<HashMap<IpAddr, Vec<(u64, TcpStream)>>>,
    next_id: AtomicU64,
    /// A binary is being received: a second ship is refused until it is done.
    shipping: AtomicBool,
}

/// A handshake slot; freed on drop, however the handshake ends.
struct PendingSlot<'a> {
    sh: &'a Shared,
    ip: IpAddr,
    id: u64,
}

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        let mut p = self.sh.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = p.get_mut(&self.ip) {
            v.retain(|(id, _)| *id != self.id);
            if v.is_empty() {
                p.remove(&self.ip);
            }
        }
    }
}

/// Counts one served connection while alive (a panic or an early return still releases it).
struct OpenSlot<'a>(&'a AtomicUsize);

impl Drop for OpenSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Held while a binary is being received.
struct ShipSlot<'a>(&'a AtomicBool);

impl Drop for ShipSlot<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A temporary file removed on drop unless it was installed.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Shared {
    /// A handshake slot for a peer at `ip`, or None (too many from that address).
    fn admit(&self, ip: IpAddr, stream: &TcpStream) -> Option<PendingSlot<'_>> {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mine = p.get(&ip).map_or(0, Vec::len);
        if mine >= MAX_PENDING_PER_IP {
            return None;
        }
        let total: usize = p.values().map(Vec::len).sum();
        if total >= MAX_PENDING {
            // Full: take a slot from the busiest address (never from a less busy one).
            let (&busiest, n) = p.iter().map(|(a, v)| (a, v.len())).max_by_key(|&(_, n)| n)?;
            if n <= mine + 1 {
                return None;
            }
            let v = p.get_mut(&busiest).expect("present");
            let (_, victim) = v.remove(0);
            let _ = victim.shutdown(std::net::Shutdown::Both);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        p.entry(ip).or_default().push((id, stream.try_clone().ok()?));
        Some(PendingSlot { sh: self, ip, id })
    }
}

fn log(listen: &str, msg: impl std::fmt::Display) {
    eprintln!("agent {listen}: {msg}");
}

/// Bind and serve forever.
pub fn serve(opts: AgentOptions) -> Result<()> {
    let listener = bind(&opts.listen)
        .with_context(|| format!("listening on {} (is another agent running there?)", opts.listen))?;
    serve_on(listener, opts)
}

/// Set in the environment of an agent started by the one it replaces (Windows, where a
/// process cannot replace itself): that one still holds the port for a moment.
const REPLACING: &str = "PRIMA_AGENT_REPLACING";

fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(if std::env::var_os(REPLACING).is_some() { 20 } else { 0 });
    loop {
        match TcpListener::bind(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            r => return r,
        }
    }
}

pub fn serve_on(listener: TcpListener, mut opts: AgentOptions) -> Result<()> {
    std::fs::create_dir_all(&opts.cache_dir)
        .with_context(|| format!("creating cache dir {}", opts.cache_dir.display()))?;
    let key = auth::StaticKey::load_or_create(&opts.cache_dir.join("agent.key"))?;
    let fp = auth::fingerprint(&key.public());
    opts.secret = opts.secret.with_key(key);
    log(&opts.listen, format!("listening (prima {}, cache {})", env!("CARGO_PKG_VERSION"), opts.cache_dir.display()));
    // Printed for the owner to compare with what the head pins on first contact.
    log(&opts.listen, format!("key fingerprint {fp}"));
    let _ = build_id();
    let shared = Arc::new(Shared {
        opts,
        joins: Mutex::new(HashMap::new()),
        active: Mutex::new(HashMap::new()),
        streaming: Mutex::default(),
        open: AtomicUsize::new(0),
        pending: Mutex::default(),
        next_id: AtomicU64::new(0),
        shipping: AtomicBool::new(false),
    });
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log(&shared.opts.listen, format!("accept failed: {e}"));
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let Ok(addr) = stream.peer_addr() else { continue };
        let peer = addr.to_string();
        let sh = shared.clone();
        let spawned = std::thread::Builder::new().name(format!("conn {peer}")).spawn(move || {
            let Some(slot) = sh.admit(addr.ip(), &stream) else {
                // Dropped silently and unlogged: a flood must not flood the log either.
                return;
            };
            if let Err(e) = handle(&sh, stream, &peer, slot) {
                log(&sh.opts.listen, format!("{peer}: {e}"));
            }
        });
        if let Err(e) = spawned {
            log(&shared.opts.listen, format!("cannot start a thread for a connection ({e}), dropped"));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

fn handle(sh: &Shared, stream: TcpStream, peer: &str, slot: PendingSlot<'_>) -> Result<()> {
    let t = sh.opts.timeouts;
    let mut conn = Conn::new(stream, peer, t)?;
    if let Err(e) = auth::server(&mut conn, &sh.opts.secret, t) {
        return Err(e.context("refused (not authenticated), connection dropped"));
    }
    drop(slot);
    if sh.open.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
        sh.open.fetch_sub(1, Ordering::Relaxed);
        let _ = conn.send(&Msg::Error { msg: "this agent serves too many connections right now".into() });
        return Err(Error::msg("too many connections, dropped"));
    }
    let _open = OpenSlot(&sh.open);
    match conn.recv()? {
        Msg::Hello => {
            log(&sh.opts.listen, format!("{peer}: head connected"));
            let tx = conn.tx.clone();
            let mut streaming = None;
            let r = control(sh, conn, &mut streaming);
            if let Some(m) = streaming {
                sh.streaming.lock().unwrap_or_else(|p| p.into_inner()).remove(&m);
            }
            tx.close();
            match &r {
                Ok(()) => log(&sh.opts.listen, format!("{peer}: session ended, idle")),
                Err(e) => {
                    log(&sh.opts.listen, format!("{peer}: session failed, idle again: {e}"));
                    return Ok(());
                }
            }
            r
        }
        Msg::RingJoin { session, role } => {
            let tx = sh.joins.lock().unwrap_or_else(|p| p.into_inner()).get(&session).cloned();
            match tx {
                Some(tx) => {
                    let _ = tx.send((role, conn));
                    Ok(())
                }
                None => {
                    let _ = conn.send(&Msg::Error { msg: format!("no session {session:x} here") });
                    Err(Error::msg(format!("ring link for unknown session {session:x}")))
                }
            }
        }
        Msg::Down => {
            let sessions: Vec<_> = sh.active.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
            for (_, links) in &sessions {
                if let Some(ctl) = links.first() {
                    let _ = ctl.send(&Msg::Error { msg: super::messages::STOPPED_BY_DOWN.into() });
                }
                for l in links {
                    l.close();
                }
            }
            log(&sh.opts.listen, format!("{peer}: down: stopped {} ring session(s)", sessions.len()));
            conn.send(&Msg::DownReply { sessions: sessions.len() as u32 })
        }
        m => Err(Error::msg(format!("expected Hello or RingJoin, got {}", m.name()))),
    }
}

fn control(sh: &Shared, mut conn: Conn, streaming_slot: &mut Option<String>) -> Result<()> {
    conn.send(&Msg::HelloReply {
        version: env!("CARGO_PKG_VERSION").to_string(),
        build_id: build_id(),
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
    })?;
    let mut rx: Option<cache::Receiver> = None;
    // The model this session streams: its entry in `sh.streaming`, released by the caller.
    let streaming = streaming_slot;
    // The cache file verified in this session: what `Assign` loads.
    let mut model: Option<PathBuf> = None;
    let mut stream_err: Option<String> = None;
    loop {
        match conn.recv_ok()? {
            Msg::ShipBegin { size, sha256 } => return ship(sh, &mut conn, size, sha256),
            Msg::ProfileRequest { fresh } => match super::planning::cached_profile_fresh(&sh.opts.cache_dir, fresh) {
                Ok(p) => conn.send(&Msg::ProfileReply { json: p.to_json() })?,
                Err(e) => conn.send(&Msg::Error { msg: format!("profiling: {e}") })?,
            },
            Msg::ModelCheck { model_id, header, tensors } => {
                stream_err = None;
                // One stream per model at a time: a second head waits for its turn, briefly.
                let t0 = Instant::now();
                while !sh.streaming.lock().unwrap_or_else(|p| p.into_inner()).insert(model_id.clone()) {
                    if t0.elapsed() > sh.opts.timeouts.io {
                        let msg = "another head is sending this model to this device right now; try again later";
                        conn.send(&Msg::Error { msg: msg.into() })?;
                        return Err(Error::msg(msg));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                if let Some(old) = streaming.replace(model_id.clone()) {
                    sh.streaming.lock().unwrap_or_else(|p| p.into_inner()).remove(&old);
                }
                let r = cache::Receiver::open(&sh.opts.cache_dir, &model_id, &header, tensors);
                match r {
                    Ok(r) => {
                        conn.send(&Msg::ModelStatus { have: r.have().to_vec() })?;
                        rx = Some(r);
                    }
                    Err(e) => {
                        conn.send(&Msg::Error { msg: format!("cache: {e}") })?;
                        return Err(e);
                    }
                }
            }
            Msg::TensorChunk { index, offset, data } => {
                if stream_err.is_none() {
                    let r = rx.as_mut().ok_or_else(|| Error::msg("TensorChunk before ModelCheck"))?;
                    if let Err(e) = r.chunk(index, offset, &data) {
                        stream_err = Some(e.to_string());
                    }
                }
            }
            Msg::StreamEnd => {
                let r = rx.as_mut().ok_or_else(|| Error::msg("StreamEnd before ModelCheck"))?;
                if let Some(e) = stream_err.take() {
                    conn.send(&Msg::Error { msg: e.clone() })?;
                    return Err(Error::msg(e));
                }
                match r.finish() {
                    Ok(p) => {
                        model = Some(p);
                        if let Some(m) = streaming.take() {
                            sh.streaming.lock().unwrap_or_else(|p| p.into_inner()).remove(&m);
                        }
                        conn.send(&Msg::ModelStatus { have: r.have().to_vec() })?
                    }
                    Err(e) => {
                        conn.send(&Msg::Error { msg: e.to_string() })?;
                        return Err(e);
                    }
                }
            }
            Msg::Assign { session, model_id: _, windows, n_ctx, n_seq, threads, engine, gpu_layers } => {
                let ranges: Vec<_> = windows.iter().map(|&(a, b)| a as usize..b as usize).collect();
                let Some(model) = model.take() else {
                    let msg = "Assign before a completed model check";
                    conn.send(&Msg::Error { msg: msg.into() })?;
                    return Err(Error::msg(msg));
                };
                if let Err(e) = check_assign(&model, &windows, n_ctx, n_seq, threads) {
                    conn.send(&Msg::Error { msg: e.to_string() })?;
                    return Err(e);
                }
                let t0 = Instant::now();
                let threads = if threads == 0 { crate::sys::default_threads() } else { threads as usize };
                let pool = Arc::new(crate::cpu::ThreadPool::new(threads));
                let offload = crate::gpu::Offload::open(gpu_layers as usize);
                let (n_ctx, n_seq) = (n_ctx as usize, n_seq as usize);
                let mut w = match ring::open_windows(engine, &model, &ranges, n_ctx, n_seq, &pool, &offload) {
                    Ok(w) => w,
                    Err(e) => {
                        let e = e.context(format!("loading layers {}", ring::fmt_ranges(&ranges)));
                        conn.send(&Msg::Error { msg: e.to_string() })?;
                        return Err(e);
                    }
                };
                crate::sys::release_free_heap();
                let (jtx, jrx) = mpsc::channel();
                sh.joins.lock().unwrap_or_else(|p| p.into_inner()).insert(session, jtx);
                log(&sh.opts.listen, format!("loaded layers {} in {:?}", ring::fmt_ranges(&ranges), t0.elapsed()));
                let r = match conn.send(&Msg::Assigned { load_ms: t0.elapsed().as_millis() as u64 }) {
                    Ok(()) => worker(sh, conn, session, &jrx, &mut w),
                    Err(e) => Err(e),
                };
                sh.joins.lock().unwrap_or_else(|p| p.into_inner()).remove(&session);
                return r;
            }
            m => return Err(Error::msg(format!("unexpected {} from the head", m.name()))),
        }
    }
}

/// An `Assign` within what this device and model can do: a clear refusal instead of a panic or
/// an allocation that aborts the agent.
fn check_assign(model: &Path, windows: &[(u32, u32)], n_ctx: u32, n_seq: u32, threads: u32) -> Result<()> {
    if !(1..=MAX_SEQ).contains(&n_seq) {
        return Err(Error::msg(format!("{n_seq} sequences asked for; 1 to {MAX_SEQ}")));
    }
    if threads as usize > MAX_THREADS {
        return Err(Error::msg(format!("{threads} threads asked for; at most {MAX_THREADS}")));
    }
    if windows.is_empty() || windows.len() > MAX_WINDOWS {
        return Err(Error::msg(format!("{} windows asked for; 1 to {MAX_WINDOWS}", windows.len())));
    }
    if !(1..=MAX_CTX).contains(&n_ctx) {
        return Err(Error::msg(format!("n_ctx = {n_ctx}; 1 to {MAX_CTX}")));
    }
    let f = crate::gguf::GgufFile::open_weights(model)?;
    let cfg = crate::model::ModelConfig::from_gguf(&f)?;
    let n_layer = cfg.n_layer;
    let mut layers = 0u64;
    for &(a, b) in windows {
        if a > b || b as usize > n_layer {
            return Err(Error::msg(format!("window {a}..{b} is outside the model's {n_layer} layers")));
        }
        layers += (b - a) as u64;
    }
    // Keys and values (f32) of every position of every sequence of every layer held here.
    let per_pos = 4 * (cfg.kv_dim_k() + cfg.kv_dim_v()) as u64;
    let kv = layers.saturating_mul(n_ctx as u64).saturating_mul(n_seq as u64).saturating_mul(per_pos);
    if let Some(avail) = crate::sys::available_memory()
        && kv > avail
    {
        return Err(Error::msg(format!(
            "n_ctx = {n_ctx} needs up to {:.1} GiB of KV cache for {layers} layers; this device has {:.1} GiB available",
            kv as f64 / (1u64 << 30) as f64,
            avail as f64 / (1u64 << 30) as f64
        )));
    }
    Ok(())
}

/// Receive a binary, verify it, install it over our own executable and re-execute. The bytes
/// go to a fresh temporary file beside the executable (removed on any failure); what is checked
/// is the file on disk: its size and sha256, its header (an executable for this OS and CPU), and
/// a trial run of `--version`, which must not report an older prima unless `--allow-downgrade`.
fn ship(sh: &Shared, conn: &mut Conn, size: u64, want: [u8; 32]) -> Result<()> {
    let refuse = |conn: &mut Conn, msg: String| -> Result<()> {
        let _ = conn.send(&Msg::Error { msg: msg.clone() });
        Err(Error::msg(format!("binary refused: {msg}")))
    };
    if !(MIN_BINARY..=MAX_BINARY).contains(&size) {
        return refuse(conn, format!("a binary of {size} bytes cannot be prima"));
    }
    if sh.shipping.swap(true, Ordering::AcqRel) {
        return refuse(conn, "another head is installing a binary on this device right now".into());
    }
    let _ship = ShipSlot(&sh.shipping);
    let exe = std::env::current_exe().context("finding our own executable")?;
    let exe = PathBuf::from(exe.to_string_lossy().trim_end_matches(" (deleted)"));
    let name = exe.file_stem().and_then(|n| n.to_str()).unwrap_or("prima");
    // Windows runs a file by its `.exe` ending.
    let tmp = exe.with_file_name(format!(
        ".{name}.incoming.{}{}",
        super::sha256::hex(&auth::nonce()?[..8]),
        std::env::consts::EXE_SUFFIX
    ));
    let mut f = crate::sys::with_mode(std::fs::OpenOptions::new().write(true).create_new(true), 0o700)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut guard = TempFile(Some(tmp.clone()));
    let mut got = 0u64;
    loop {
        match conn.recv_ok()? {
            Msg::ShipChunk { data } => {
                got += data.len() as u64;
                if got > size {
                    return refuse(conn, "binary longer than announced".into());
                }
                f.write_all(&data).with_context(|| format!("writing {}", tmp.display()))?;
            }
            Msg::ShipEnd => break,
            m => return Err(Error::msg(format!("unexpected {} while receiving a binary", m.name()))),
        }
    }
    f.sync_all()?;
    drop(f);
    if got != size || super::sha256::file_sha256(&tmp)? != want {
        return refuse(conn, "binary arrived corrupted (size or sha256 of the file on disk mismatch)".into());
    }
    if let Err(e) = check_executable_header(&tmp) {
        return refuse(conn, e.to_string());
    }
    let theirs = match trial_version(&tmp) {
        Ok(v) => v,
        Err(e) => return refuse(conn, e.to_string()),
    };
    if older(&theirs, env!("CARGO_PKG_VERSION")) && !sh.opts.allow_downgrade {
        return refuse(
            conn,
            format!(
                "downgrade from prima {} to {theirs} refused (start this agent with --allow-downgrade to allow it)",
                env!("CARGO_PKG_VERSION")
            ),
        );
    }
    crate::sys::make_executable(&tmp)?;
    // Windows cannot replace a running executable, but can rename it: the old one moves aside
    // (removed by the next upgrade) and the new one takes its name.
    #[cfg(windows)]
    {
        let old = exe.with_file_name(format!(".{name}.old{}", std::env::consts::EXE_SUFFIX));
        let _ = std::fs::remove_file(&old);
        std::fs::rename(&exe, &old).with_context(|| format!("moving {} aside", exe.display()))?;
    }
    std::fs::rename(&tmp, &exe).with_context(|| format!("installing {}", exe.display()))?;
    guard.0 = None;
    if let Some(dir) = exe.parent() {
        let _ = crate::sys::sync_dir(dir);
    }
    log(
        &sh.opts.listen,
        format!("installed a new binary (prima {theirs}, {size} bytes) at {}, restarting", exe.display()),
    );
    conn.send(&Msg::Restarting)?;
    conn.tx.close();
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(std::env::args_os().skip(1)).env_remove("PRIMA_FAKE_BUILD_ID");
    restart(cmd, &exe)
}

/// Become the new binary: exec in place on Unix (same process id, same terminal).
#[cfg(unix)]
fn restart(mut cmd: std::process::Command, exe: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let err = cmd.env_remove(REPLACING).exec();
    Err(Error::msg(format!("re-executing {}: {err}", exe.display())))
}

/// Windows has no exec: start the new binary (which waits for our port) and exit.
#[cfg(not(unix))]
fn restart(mut cmd: std::process::Command, exe: &Path) -> Result<()> {
    cmd.env(REPLACING, "1").spawn().with_context(|| format!("starting {}", exe.display()))?;
    std::process::exit(0)
}

/// The file must be an executable for this OS and CPU (ELF, Mach-O or PE, 64-bit, our machine
/// type).
pub fn check_executable_header(path: &Path) -> Result<()> {
    let mut h = Vec::with_capacity(1024);
    std::fs::File::open(path).and_then(|f| f.take(1024).read_to_end(&mut h)).context("reading the binary's header")?;
    let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
    if executable_format(&h) == Some((os_family(os), arch)) {
        Ok(())
    } else if matches!(arch, "x86_64" | "aarch64") {
        Err(Error::msg(format!("not an executable for {os}/{arch}")))
    } else {
        Ok(()) // no table for this CPU: the trial run decides
    }
}

/// The executable format an OS runs: "elf" (Linux, Android), "macho" or "pe".
fn os_family(os: &str) -> &'static str {
    match os {
        "macos" | "ios" => "macho",
        "windows" => "pe",
        _ => "elf",
    }
}

/// (format, CPU) of a 64-bit executable's first bytes, for x86_64 and aarch64.
pub fn executable_format(h: &[u8]) -> Option<(&'static str, &'static str)> {
    let u16_at = |i: usize| h.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |i: usize| h.get(i..i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let cpu = |elf: u16| match elf {
        62 => Some("x86_64"),
        183 => Some("aarch64"),
        _ => None,
    };
    if h.starts_with(b"\x7fELF") && h.get(4..6) == Some(&[2, 1]) {
        return Some(("elf", cpu(u16_at(18)?)?));
    }
    if h.starts_with(&[0xcf, 0xfa, 0xed, 0xfe]) {
        let arch = match u32_at(4)? {
            0x0100_0007 => "x86_64",
            0x0100_000c => "aarch64",
            _ => return None,
        };
        return Some(("macho", arch));
    }
    if h.starts_with(b"MZ") {
        // The PE header's offset is at 0x3c; its machine field follows the "PE\0\0" signature.
        let pe = u32_at(0x3c)? as usize;
        if h.get(pe..pe + 4)? != b"PE\0\0" {
            return None;
        }
        let arch = match u16_at(pe + 4)? {
            0x8664 => "x86_64",
            0xaa64 => "aarch64",
            _ => return None,
        };
        return Some(("pe", arch));
    }
    None
}

/// Run `path --version` (10 s at most) and return the version it reports.
fn trial_version(path: &Path) -> Result<String> {
    let mut child = std::process::Command::new(path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("trial run of the new binary")?;
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::msg("the new binary's `--version` did not finish within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.by_ref().take(4096).read_to_string(&mut out);
    }
    let v = out.trim().strip_prefix("prima ").filter(|_| status.success());
    v.map(str::to_string).ok_or_else(|| Error::msg("the new binary's `--version` does not report a prima version"))
}

/// Whether dotted version `a` is older than `b` (numeric parts; anything else compares as 0).
fn older(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> { v.split(['.', '-', '+']).map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a) < parse(b)
}

/// A ring link must come from (or go to) the key the head pinned for that device.
fn expect_key(c: &Conn, want: Option<[u8; 32]>, who: &str) -> Result<()> {
    match (want, c.tx.remote_key()) {
        (Some(w), Some(k)) if w == k => Ok(()),
        (Some(w), k) => Err(Error::msg(format!(
            "ring link refused: {who} presented key {}, the head pinned {}",
            k.map(|k| auth::fingerprint(&k)).unwrap_or_else(|| "none".into()),
            auth::fingerprint(&w)
        ))),
        (None, _) => Err(Error::msg(format!("ring link refused: the head named no key for {who}"))),
    }
}

/// Form our part of the ring, then serve it.
fn worker(
    sh: &Shared,
    mut conn: Conn,
    session: u64,
    joins: &mpsc::Receiver<(RingRole, Conn)>,
    windows: &mut [Box<dyn crate::model::Window>],
) -> Result<()> {
    let t = sh.opts.timeouts;
    let (next, next_key, prev_key, head_key) = match conn.recv_ok()? {
        Msg::Connect { next, next_key, prev_key, head_key } => (next, next_key, prev_key, head_key),
        m => return Err(Error::msg(format!("expected Connect, got {}", m.name()))),
    };
    let mut outbound = None;
    if let Some(addr) = &next {
        let mut c = Conn::connect(addr, format!("next device {addr}"), t)?;
        auth::client(&mut c, &sh.opts.secret, t)?;
        expect_key(&c, next_key, "the next device")?;
        c.send(&Msg::RingJoin { session, role: RingRole::Inbound })?;
        outbound = Some(c);
    }
    let mut inbound = None;
    let deadline = Instant::now() + t.io * 2;
    while inbound.is_none() || outbound.is_none() {
        let left = deadline.checked_duration_since(Instant::now()).unwrap_or_default();
        match joins.recv_timeout(left) {
            Ok((RingRole::Inbound, c)) if inbound.is_none() => {
                expect_key(&c, Some(prev_key), "the previous device")?;
                inbound = Some(c)
            }
            Ok((RingRole::Outbound, c)) if outbound.is_none() && next.is_none() => {
                expect_key(&c, Some(head_key), "the head")?;
                outbound = Some(c)
            }
            Ok((role, _)) => return Err(Error::msg(format!("unexpected extra {role:?} ring link"))),
            Err(_) => {
                let e = Error::msg("the ring links did not arrive in time (firewall between the devices?)");
                let _ = conn.send(&Msg::Error { msg: e.to_string() });
                return Err(e);
            }
        }
    }
    let (inbound, outbound) = (inbound.expect("checked"), outbound.expect("checked"));
    conn.send(&Msg::RingReady)?;

    let (etx, events) = mpsc::channel();
    let Conn { tx: ctl, rx: ctl_rx } = conn;
    ring::pump(ctl_rx, etx.clone(), |r| match r {
        Ok(m) => Event::Control(0, m),
        Err(e) => Event::ControlClosed(0, e),
    });
    ring::pump(inbound.rx, etx.clone(), |r| match r {
        Ok(m) => Event::Ring(m),
        Err(e) => Event::RingClosed(e),
    });
    ring::pump(outbound.rx, etx, |r| match r {
        Ok(m) => Event::Ring(Msg::Error { msg: format!("unexpected {} from the next device", m.name()) }),
        Err(e) => Event::RingClosed(e.context("link to the next device")),
    });
    sh.active
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(session, vec![ctl.clone(), inbound.tx.clone(), outbound.tx.clone()]);
    let r = ring::run_worker(windows, &events, &outbound.tx);
    sh.active.lock().unwrap_or_else(|p| p.into_inner()).remove(&session);
    let out = match r {
        Ok(stats) => {
            let sent = ctl.send(&Msg::Stopped { stats });
            // Keep our ring links open until the head has every device's answer and hangs up,
            // so that no device mistakes a neighbour's orderly stop for a broken ring.
            let deadline = Instant::now() + t.io;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                match events.recv_timeout(left) {
                    Ok(Event::ControlClosed(..)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            sent
        }
        Err(e) => {
            let _ = ctl.send(&Msg::Error { msg: e.to_string() });
            Err(e)
        }
    };
    inbound.tx.close();
    outbound.tx.close();
    ctl.close();
    out
}

#[cfg(test)]
mod tests {
    use super::executable_format;

    #[test]
    fn executable_headers_name_their_platform() {
        let mut elf = b"\x7fELF\x02\x01".to_vec();
        elf.resize(20, 0);
        elf[18] = 183;
        assert_eq!(executable_format(&elf), Some(("elf", "aarch64")));
        elf[18] = 62;
        assert_eq!(executable_format(&elf), Some(("elf", "x86_64")));
        let macho = [0xcf, 0xfa, 0xed, 0xfe, 0x0c, 0, 0, 0x01];
        assert_eq!(executable_format(&macho), Some(("macho", "aarch64")));
        let mut pe = vec![0u8; 0x90];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
        assert_eq!(executable_format(&pe), Some(("pe", "x86_64")));
        pe[0x3c] = 0xf0; // points past the header read
        assert_eq!(executable_format(&pe), None);
        assert_eq!(executable_format(b"#!/bin/sh\n"), None);
    }
}
