//! `prima agent`: the one thing started by hand on each device. It serves forever: every
//! connection authenticates first; a control connection from a head can upgrade the binary,
//! fill the layer cache and then run windows in a ring until the head stops it or goes away,
//! after which everything it held is dropped and the agent is idle again.

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use super::auth::{self, Secret};
use super::cache;
use super::messages::{Msg, RingRole};
use super::ring::{self, Event};
use super::sha256::{Sha256, sha256};
use super::transport::{Conn, Timeouts};
use crate::error::{Context, Error, Result};

/// Largest binary accepted by `ShipBegin`.
const MAX_BINARY: u64 = 1 << 30;
/// Unauthenticated peers get this long to finish the handshake.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once (beyond that, new ones are dropped).
const MAX_CONNECTIONS: usize = 64;

pub struct AgentOptions {
    pub listen: String,
    pub secret: Secret,
    pub cache_dir: PathBuf,
    pub timeouts: Timeouts,
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
    open: AtomicUsize,
}

fn log(listen: &str, msg: impl std::fmt::Display) {
    eprintln!("agent {listen}: {msg}");
}

/// Bind and serve forever.
pub fn serve(opts: AgentOptions) -> Result<()> {
    let listener = TcpListener::bind(&opts.listen)
        .with_context(|| format!("listening on {} (is another agent running there?)", opts.listen))?;
    serve_on(listener, opts)
}

pub fn serve_on(listener: TcpListener, opts: AgentOptions) -> Result<()> {
    std::fs::create_dir_all(&opts.cache_dir)
        .with_context(|| format!("creating cache dir {}", opts.cache_dir.display()))?;
    log(&opts.listen, format!("listening (prima {}, cache {})", env!("CARGO_PKG_VERSION"), opts.cache_dir.display()));
    let _ = build_id();
    let shared = Arc::new(Shared {
        opts,
        joins: Mutex::new(HashMap::new()),
        active: Mutex::new(HashMap::new()),
        streaming: Mutex::default(),
        open: AtomicUsize::new(0),
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
        let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
        if shared.open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            log(&shared.opts.listen, format!("{peer}: too many connections, dropped"));
            continue;
        }
        shared.open.fetch_add(1, Ordering::Relaxed);
        let sh = shared.clone();
        std::thread::Builder::new()
            .name(format!("conn {peer}"))
            .spawn(move || {
                if let Err(e) = handle(&sh, stream, &peer) {
                    log(&sh.opts.listen, format!("{peer}: {e}"));
                }
                sh.open.fetch_sub(1, Ordering::Relaxed);
            })
            .expect("spawning a thread");
    }
    Ok(())
}

fn handle(sh: &Shared, stream: TcpStream, peer: &str) -> Result<()> {
    let t = sh.opts.timeouts;
    let mut conn = Conn::new(stream, peer, Timeouts { io: AUTH_TIMEOUT, ..t })?;
    if let Err(e) = auth::server(&mut conn, &sh.opts.secret, t) {
        return Err(e.context("refused (not authenticated), connection dropped"));
    }
    conn.rx.set_timeout(t.io);
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
            Msg::Assign { session, model_id: _, windows, n_ctx, n_seq, threads, engine } => {
                let ranges: Vec<_> = windows.iter().map(|&(a, b)| a as usize..b as usize).collect();
                let Some(model) = model.take() else {
                    let msg = "Assign before a completed model check";
                    conn.send(&Msg::Error { msg: msg.into() })?;
                    return Err(Error::msg(msg));
                };
                let t0 = Instant::now();
                let threads = if threads == 0 { crate::sys::default_threads() } else { threads as usize };
                let pool = Arc::new(crate::cpu::ThreadPool::new(threads));
                let mut w = match ring::open_windows(engine, &model, &ranges, n_ctx as usize, n_seq as usize, &pool) {
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

/// Receive a binary, verify it, install it over our own executable and re-execute.
fn ship(sh: &Shared, conn: &mut Conn, size: u64, want: [u8; 32]) -> Result<()> {
    if size > MAX_BINARY {
        conn.send(&Msg::Error { msg: format!("binary of {size} bytes is too large") })?;
        return Err(Error::msg("binary too large"));
    }
    let exe = std::env::current_exe().context("finding our own executable")?;
    let exe = PathBuf::from(exe.to_string_lossy().trim_end_matches(" (deleted)"));
    let tmp = exe.with_file_name(format!(".{}.incoming", exe.file_name().and_then(|n| n.to_str()).unwrap_or("prima")));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    let mut h = Sha256::new();
    let mut got = 0u64;
    loop {
        match conn.recv_ok()? {
            Msg::ShipChunk { data } => {
                got += data.len() as u64;
                if got > size {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(Error::msg("binary longer than announced"));
                }
                h.update(&data);
                f.write_all(&data)?;
            }
            Msg::ShipEnd => break,
            m => {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::msg(format!("unexpected {} while receiving a binary", m.name())));
            }
        }
    }
    if got != size || h.finish() != want {
        let _ = std::fs::remove_file(&tmp);
        conn.send(&Msg::Error { msg: "binary arrived corrupted (size or sha256 mismatch)".into() })?;
        return Err(Error::msg("shipped binary failed verification"));
    }
    f.sync_all()?;
    drop(f);
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &exe).with_context(|| format!("installing {}", exe.display()))?;
    log(&sh.opts.listen, format!("installed a new binary ({size} bytes) at {}, restarting", exe.display()));
    conn.send(&Msg::Restarting)?;
    conn.tx.close();
    let err =
        std::process::Command::new(&exe).args(std::env::args_os().skip(1)).env_remove("PRIMA_FAKE_BUILD_ID").exec();
    Err(Error::msg(format!("re-executing {}: {err}", exe.display())))
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
    let next = match conn.recv_ok()? {
        Msg::Connect { next } => next,
        m => return Err(Error::msg(format!("expected Connect, got {}", m.name()))),
    };
    let mut outbound = None;
    if let Some(addr) = &next {
        let mut c = Conn::connect(addr, format!("next device {addr}"), t)?;
        auth::client(&mut c, &sh.opts.secret, t)?;
        c.send(&Msg::RingJoin { session, role: RingRole::Inbound })?;
        outbound = Some(c);
    }
    let mut inbound = None;
    let deadline = Instant::now() + t.io * 2;
    while inbound.is_none() || outbound.is_none() {
        let left = deadline.checked_duration_since(Instant::now()).unwrap_or_default();
        match joins.recv_timeout(left) {
            Ok((RingRole::Inbound, c)) if inbound.is_none() => inbound = Some(c),
            Ok((RingRole::Outbound, c)) if outbound.is_none() && next.is_none() => outbound = Some(c),
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
