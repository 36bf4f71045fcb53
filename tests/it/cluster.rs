//! Cluster tests: real `prima agent` processes on 127.0.0.1 ports, driven by `prima up`.
//! Every agent is killed when its guard drops, even when a test fails.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use prima::gguf::GgufFile;
use prima::gguf::write::GgufWriter;

use crate::common;

pub(super) const BIN: &str = env!("CARGO_BIN_EXE_prima");
pub(super) const SECRET: &str = "test-secret-0123456789abcdef";

/// A scratch directory removed at the end.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("prima-it-cluster-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cluster.secret"), SECRET).unwrap();
        Scratch(d)
    }
    pub(crate) fn path(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running agent, killed on drop. Its stderr goes to `log`.
pub(crate) struct Agent {
    child: Child,
    pub(crate) addr: String,
    log: PathBuf,
}

impl Agent {
    pub(super) fn start_with(bin: &Path, dir: &Scratch, name: &str, secret: &str, env: &[(&str, &str)]) -> Agent {
        let addr = format!("127.0.0.1:{}", free_port());
        Agent::start_on(bin, dir, name, secret, env, addr)
    }

    /// The same agent started again on its address (after it was killed).
    pub(crate) fn restart(&mut self, dir: &Scratch, name: &str, env: &[(&str, &str)]) {
        self.kill();
        *self = Agent::start_on(Path::new(BIN), dir, name, SECRET, env, self.addr.clone());
    }

    fn start_on(bin: &Path, dir: &Scratch, name: &str, secret: &str, env: &[(&str, &str)], addr: String) -> Agent {
        let secret_file = dir.path(&format!("{name}.secret"));
        std::fs::write(&secret_file, secret).unwrap();
        let log = dir.path(&format!("{name}.log"));
        let mut cmd = Command::new(bin);
        cmd.args(["agent", "--listen", &addr, "--secret-file"])
            .arg(&secret_file)
            .arg("--cache-dir")
            .arg(dir.path(&format!("{name}.cache")))
            .args(["--timeout-secs", "3"])
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let a = Agent { child, addr, log };
        a.wait_listening();
        a
    }

    pub(crate) fn start(dir: &Scratch, name: &str, env: &[(&str, &str)]) -> Agent {
        Agent::start_with(Path::new(BIN), dir, name, SECRET, env)
    }

    fn wait_listening(&self) {
        let t0 = Instant::now();
        while TcpStream::connect(&self.addr).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10), "agent at {} never listened", self.addr);
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(super) fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A model with `n_layer` layers made by repeating the fixture's two.
pub(crate) fn deep_model(dir: &Scratch, fixture: &str, n_layer: usize) -> PathBuf {
    let src = GgufFile::open(common::model(fixture)).unwrap();
    let arch = src.architecture().unwrap().to_string();
    let mut w = GgufWriter::new();
    for (k, v) in &src.metadata {
        if *k == format!("{arch}.block_count") {
            w.kv(k, prima::gguf::Value::U32(n_layer as u32));
        } else {
            w.kv(k, v.clone());
        }
    }
    let src_layers = src.get_u64(&format!("{arch}.block_count")).unwrap() as usize;
    for t in src.tensors.iter().filter(|t| !t.name.starts_with("blk.")) {
        w.tensor(&t.name, &t.dims, t.ty, src.tensor_data(t).to_vec());
    }
    for l in 0..n_layer {
        let from = format!("blk.{}.", l % src_layers);
        for t in src.tensors.iter().filter(|t| t.name.starts_with(&from)) {
            let name = format!("blk.{l}.{}", &t.name[from.len()..]);
            // Make copies differ (scale the f32 norms a little) so every layer is distinct.
            let mut data = src.tensor_data(t).to_vec();
            if t.ty == prima::quant::GgmlType::F32 && l >= src_layers {
                for c in data.chunks_exact_mut(4) {
                    let v = f32::from_le_bytes(c.try_into().unwrap()) * (1.0 + 0.01 * l as f32);
                    c.copy_from_slice(&v.to_le_bytes());
                }
            }
            w.tensor(&name, &t.dims, t.ty, data);
        }
    }
    let p = dir.path(&format!("{fixture}-{n_layer}l.gguf"));
    std::fs::write(&p, w.to_bytes()).unwrap();
    p
}

/// Write a cluster.toml: the head first, then `agents` with their windows.
pub(crate) fn write_config(
    dir: &Scratch,
    name: &str,
    model: &Path,
    rounds: Option<usize>,
    devices: &[(&str, &str, Option<usize>)],
) -> PathBuf {
    let mut s = format!(
        "model = {:?}\nsecret_file = \"cluster.secret\"\nbatch_size = 3\nctx_size = 256\ntimeout_secs = 3\n",
        model
    );
    if let Some(k) = rounds {
        s.push_str(&format!("rounds = {k}\n"));
    }
    // These tests exercise the ring itself: without manual windows, split evenly (the Halda
    // schedule is tested on its own).
    s.push_str("schedule = \"even\"\n");
    for (name, addr, window) in devices {
        s.push_str(&format!("\n[[device]]\nname = \"{name}\"\naddr = \"{addr}\"\nthreads = 1\n"));
        if let Some(w) = window {
            s.push_str(&format!("window = {w}\n"));
        }
    }
    let p = dir.path(name);
    std::fs::write(&p, s).unwrap();
    p
}

pub(super) fn up(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("up").arg(config).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env("XDG_CACHE_HOME", config.parent().unwrap().join("head-cache"));
    cmd.output().unwrap()
}

pub(super) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(super) const FAKE: (&str, &str) = ("PRIMA_FAKE_ENGINE", "1");

#[test]
fn fake_ring_matches_one_device_for_k_1_2_3_and_caches_layers() {
    let dir = Scratch::new("ring");
    let model = deep_model(&dir, "c-llama-q4_k_m.gguf", 6);
    let a1 = Agent::start(&dir, "a1", &[]);
    let a2 = Agent::start(&dir, "a2", &[]);
    let args = ["-p", "Hello, ring!", "-n", "12", "--temp", "0"];
    let solo = write_config(&dir, "solo.toml", &model, None, &[("head", "127.0.0.1:1", None)]);
    let o = up(&solo, &args, &[FAKE]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let want = text(&o.stdout);
    assert_eq!(want.split_whitespace().count(), 12, "{want}");

    // (rounds, windows head/second/third): uneven, with empty windows, the head last in each round.
    for (k, w) in [(1, [1, 3, 2]), (2, [1, 0, 2]), (3, [0, 1, 1]), (2, [1, 1, 1])] {
        let cfg = write_config(
            &dir,
            &format!("ring{k}.toml"),
            &model,
            Some(k),
            &[("head", "127.0.0.1:1", Some(w[0])), ("second", &a1.addr, Some(w[1])), ("third", &a2.addr, Some(w[2]))],
        );
        let o = up(&cfg, &args, &[FAKE]);
        let err = text(&o.stderr);
        assert!(o.status.success(), "k={k} {w:?}: {err}");
        assert_eq!(text(&o.stdout), want, "k={k} windows {w:?}: {err}");
        assert!(err.contains("ring ready: head → second → third"), "{err}");
        assert!(err.contains("second") && err.contains("ms computing"), "{err}");
    }
    // The first k=1 run streamed layers; running it again streams nothing.
    let cfg = dir.path("ring1.toml");
    let o = up(&cfg, &args, &[FAKE]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("stream "), "second run streamed again:\n{err}");
    assert!(err.contains("cached"), "{err}");
}

#[test]
fn missing_layers_are_streamed_once_then_cached() {
    let dir = Scratch::new("stream");
    let model = deep_model(&dir, "c-qwen2-q4_k_m.gguf", 4);
    let a1 = Agent::start(&dir, "a1", &[]);
    let cfg = write_config(&dir, "c.toml", &model, None, &[("head", "127.0.0.1:1", Some(2)), ("w", &a1.addr, Some(2))]);
    let args = ["-p", "abc", "-n", "3", "--temp", "0"];
    let o = up(&cfg, &args, &[FAKE]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("stream device `w`") && err.contains("verified"), "{err}");
    // Only the device's layers were sent: its cache file holds blk.0 and blk.1, nothing else.
    let cached: Vec<_> =
        walk(&dir.path("a1.cache")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "gguf")).collect();
    assert_eq!(cached.len(), 1);
    let g = GgufFile::open(&cached[0]).unwrap();
    assert!(g.tensors.iter().all(|t| t.name.starts_with("blk.0.") || t.name.starts_with("blk.1.")), "{:?}", g.tensors);
    let src = GgufFile::open(&model).unwrap();
    for t in &g.tensors {
        assert_eq!(g.tensor_data(t), src.tensor_data(src.tensor(&t.name).unwrap()), "{}", t.name);
    }
    let o = up(&cfg, &args, &[FAKE]);
    let err = text(&o.stderr);
    assert!(o.status.success() && !err.contains("stream ") && err.contains("cached"), "{err}");
    // A new split needs other layers: only those are streamed (blk.0 is reused from the cache).
    let cfg =
        write_config(&dir, "c2.toml", &model, None, &[("head", "127.0.0.1:1", Some(1)), ("w", &a1.addr, Some(3))]);
    let o = up(&cfg, &args, &[FAKE]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("missing"), "{err}");
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn wrong_secret_is_refused_and_logged() {
    let dir = Scratch::new("secret");
    let model = deep_model(&dir, "c-llama-q4_k_m.gguf", 2);
    let a1 = Agent::start_with(Path::new(BIN), &dir, "a1", "another-secret-0123456789", &[]);
    let cfg =
        write_config(&dir, "c.toml", &model, None, &[("head", "127.0.0.1:1", Some(1)), ("laptop", &a1.addr, Some(1))]);
    let o = up(&cfg, &["-p", "x", "-n", "1"], &[FAKE]);
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("device `laptop`") && err.contains("refused") && err.contains("secret"), "{err}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(a1.log().contains("wrong secret"), "{}", a1.log());
}

#[test]
fn unreachable_device_is_named() {
    let dir = Scratch::new("unreach");
    let model = deep_model(&dir, "c-llama-q4_k_m.gguf", 2);
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = write_config(&dir, "c.toml", &model, None, &[("head", "127.0.0.1:1", Some(1)), ("nas", &addr, Some(1))]);
    let o = up(&cfg, &["-p", "x", "-n", "1"], &[FAKE]);
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("device `nas`") && err.contains("unreachable") && err.contains("prima agent --listen"),
        "{err}"
    );
}

#[test]
fn garbage_and_oversized_frames_drop_the_connection_not_the_agent() {
    let dir = Scratch::new("garbage");
    let model = deep_model(&dir, "c-llama-q4_k_m.gguf", 2);
    let mut a1 = Agent::start(&dir, "a1", &[]);
    let probes: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", // a length of ~540 MB: rejected before allocating
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3],   // 4 GiB frame
        &[8, 0, 0, 0, 1, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee], // undecodable
        &[0, 0, 0, 0],                        // empty frame
    ];
    for p in probes {
        let mut s = TcpStream::connect(&a1.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(p);
        let mut buf = [0u8; 64];
        let t0 = Instant::now();
        // The agent closes on us (EOF or reset) well before our 5 s timeout.
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(4), "connection not dropped for {p:?}");
    }
    // A silent peer is dropped after the auth timeout too; meanwhile the agent serves others.
    let _silent = TcpStream::connect(&a1.addr).unwrap();
    assert!(a1.alive());
    let cfg = write_config(&dir, "c.toml", &model, None, &[("head", "127.0.0.1:1", Some(1)), ("w", &a1.addr, Some(1))]);
    let o = up(&cfg, &["-p", "x", "-n", "2", "--temp", "0"], &[FAKE]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(a1.log().contains("rejected"), "{}", a1.log());
}

#[test]
fn other_build_gets_our_binary_and_restarts() {
    let dir = Scratch::new("ship");
    let model = deep_model(&dir, "c-llama-q4_k_m.gguf", 2);
    // Run the agent from a copy, so installing over it leaves cargo's binary alone.
    let bin = dir.path("bin/prima");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::write(&bin, [std::fs::read(&bin).unwrap(), b"old build".to_vec()].concat()).unwrap();
    let mut a1 = Agent::start_with(&bin, &dir, "a1", SECRET, &[("PRIMA_FAKE_BUILD_ID", "old")]);
    let pid = a1.child.id();
    let cfg = write_config(&dir, "c.toml", &model, None, &[("head", "127.0.0.1:1", Some(1)), ("w", &a1.addr, Some(1))]);
    let o = up(&cfg, &["-p", "x", "-n", "2", "--temp", "0"], &[FAKE]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}\n{}", a1.log());
    assert!(err.contains("ship device `w`") && err.contains("upgraded"), "{err}");
    assert!(a1.log().contains("installed a new binary"), "{}", a1.log());
    // Same process (exec keeps the pid), new binary on disk.
    assert_eq!(a1.child.id(), pid);
    assert!(a1.alive());
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(BIN).unwrap());
    // Next run: same build, nothing shipped.
    let o = up(&cfg, &["-p", "x", "-n", "2", "--temp", "0"], &[FAKE]);
    let err = text(&o.stderr);
    assert!(o.status.success() && !err.contains("ship "), "{err}");
}

/// A fake-engine ring of three (slowed by `delay_ms` per window) generating without end, once
/// the last worker has loaded its layers: the agents, the head process, the model and the config.
fn endless_ring(
    dir: &Scratch,
    delay_ms: &str,
    prompt: &str,
    stderr: Stdio,
) -> (Agent, Agent, std::process::Child, PathBuf, PathBuf) {
    let model = deep_model(dir, "c-llama-q4_k_m.gguf", 3);
    let slow = [("PRIMA_FAKE_DELAY_MS", delay_ms)];
    let a1 = Agent::start(dir, "a1", &slow);
    let a2 = Agent::start(dir, "a2", &slow);
    let cfg = write_config(
        dir,
        "c.toml",
        &model,
        None,
        &[("head", "127.0.0.1:1", Some(1)), ("second", &a1.addr, Some(1)), ("third", &a2.addr, Some(1))],
    );
    let head = Command::new(BIN)
        .arg("up")
        .arg(&cfg)
        .args(["-p", prompt, "-n", "100000", "--temp", "0"])
        .env("PRIMA_FAKE_ENGINE", "1")
        .env("XDG_CACHE_HOME", dir.path("head-cache"))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !a2.log().contains("loaded layers") {
        assert!(t0.elapsed() < Duration::from_secs(20), "ring never formed: {}", a2.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    (a1, a2, head, model, cfg)
}

/// Wait until the head's stderr (collected by a thread into `err`) says `what`, at most
/// `limit` after `since`.
fn wait_said(err: &std::sync::Mutex<String>, what: &str, since: Instant, limit: Duration) -> String {
    loop {
        let e = err.lock().unwrap().clone();
        if e.contains(what) {
            return e;
        }
        assert!(since.elapsed() < limit, "head never said `{what}` within {limit:?}: {e}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The head's stderr, read line by line as it comes.
fn stderr_of(head: &mut std::process::Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::BufRead;
    let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (e, r) = (err.clone(), head.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
            let mut e = e.lock().unwrap();
            e.push_str(&line);
            e.push('\n');
        }
    });
    err
}

/// A peer that goes silent without FIN or RST (its process stopped: the kernel keeps the socket
/// open and even ACKs): only heartbeats can notice; the ring then forms again without it.
/// Needs no root, unlike the unplugged cable.
#[test]
fn stopped_worker_without_fin_is_found_within_seconds_and_the_ring_goes_on() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let dir = Scratch::new("sigstop");
    let (a1, a2, mut head, _, _) = endless_ring(&dir, "20", "a long enough prompt", Stdio::piped());
    let err = stderr_of(&mut head);
    std::thread::sleep(Duration::from_millis(700));
    let pid = Pid::from_raw(a2.child.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let stopped = Instant::now();
    // (A stopped agent left by a failure is killed with SIGKILL when `a2` drops.)
    let e = wait_said(&err, "lost device `third`", stopped, Duration::from_secs(10));
    let detected = stopped.elapsed();
    assert!(e.contains("stopped answering"), "{e}");
    // The process is alive (stopped, not dead): the connection had no FIN; heartbeats found it.
    assert!(detected > Duration::from_millis(200), "detected after {detected:?}: too fast for a heartbeat timeout");
    let e = wait_said(&err, "resumed", stopped, Duration::from_secs(15));
    assert!(e.contains("manual windows redistributed in proportion"), "{e}");
    assert!(head.try_wait().unwrap().is_none(), "{e}");
    let _ = head.kill();
    let _ = head.wait();
    let _ = kill(pid, Signal::SIGCONT);
    drop(a1);
    drop(a2);
}

#[test]
fn killed_worker_mid_generation_is_named_and_the_ring_goes_on_without_it() {
    let dir = Scratch::new("kill");
    let (mut a1, mut a2, mut head, model, _) = endless_ring(&dir, "20", "a long enough prompt", Stdio::piped());
    let err = stderr_of(&mut head);
    // The ring runs: kill the third device.
    std::thread::sleep(Duration::from_millis(700));
    a2.child.kill().unwrap();
    let killed = Instant::now();
    let e = wait_said(&err, "resumed", killed, Duration::from_secs(10));
    assert!(e.contains("lost device `third`") && e.contains("stopped answering") && e.contains("round"), "{e}");
    assert!(e.contains("ring ready: head → second\n"), "{e}");
    assert!(head.try_wait().unwrap().is_none(), "{e}");
    // The head goes away: the surviving agent goes back to idle and still serves.
    let _ = head.kill();
    let _ = head.wait();
    let t0 = Instant::now();
    while a1.log().matches("idle").count() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(10), "second never went idle: {}", a1.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(a1.alive());
    let cfg =
        write_config(&dir, "c2.toml", &model, None, &[("head", "127.0.0.1:1", Some(1)), ("second", &a1.addr, Some(2))]);
    let o = up(&cfg, &["-p", "x", "-n", "2", "--temp", "0"], &[FAKE]);
    assert!(o.status.success(), "{}", text(&o.stderr));
}

/// Greedy continuation of `prompt` on one device, through the library.
fn single_device_greedy(model: &Path, prompt: &[u32], n: usize) -> prima::Result<Vec<u32>> {
    let m = prima::model::Model::open(model)?;
    let mut s = prima::model::Pipeline::new(&m, 256, 1)?;
    let mut next = prima::sampler::argmax(s.decode(prompt).unwrap());
    let mut out = vec![next];
    while out.len() < n {
        next = prima::sampler::argmax(s.decode(&[next]).unwrap());
        out.push(next);
    }
    Ok(out)
}

#[test]
fn real_ring_is_token_for_token_single_device_llama_and_qwen2() {
    let dir = Scratch::new("real");
    let a1 = Agent::start(&dir, "a1", &[]);
    let a2 = Agent::start(&dir, "a2", &[]);
    let prompt = [1u32, 415, 2001, 77, 9, 1500, 300, 12, 640, 1024, 5];
    let ids = prompt.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" ");
    let n = 10;
    // The Q4_K_M fixtures: the formats users run. A failure on one device fails the test.
    for fixture in ["c-llama-q4_k_m.gguf", "c-qwen2-q4_k_m.gguf"] {
        let model = deep_model(&dir, fixture, 6);
        let want = single_device_greedy(&model, &prompt, n).unwrap_or_else(|e| panic!("{fixture} on one device: {e}"));
        let want: Vec<String> = want.iter().map(|t| t.to_string()).collect();
        for (k, w) in [(1, [1, 3, 2]), (2, [1, 0, 2]), (3, [0, 1, 1])] {
            let cfg = write_config(
                &dir,
                &format!("real-{fixture}-{k}.toml"),
                &model,
                Some(k),
                &[
                    ("head", "127.0.0.1:1", Some(w[0])),
                    ("second", &a1.addr, Some(w[1])),
                    ("third", &a2.addr, Some(w[2])),
                ],
            );
            let o = up(&cfg, &["--ids", "-p", &ids, "-n", &n.to_string(), "--temp", "0"], &[]);
            let err = text(&o.stderr);
            assert!(o.status.success(), "{fixture} k={k} {w:?}: {err}");
            let got: Vec<String> = text(&o.stdout).split_whitespace().map(String::from).collect();
            assert_eq!(got, want, "{fixture} k={k} windows {w:?}: {err}");
        }
        // Text in, text out: `prima up` prints exactly what `prima run` prints.
        let run = Command::new(BIN)
            .args(["run", "-m"])
            .arg(&model)
            .args(["-p", "The quick brown fox", "-n", "12", "--temp", "0", "-t", "1", "-c", "256"])
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", text(&run.stderr));
        let cfg = dir.path(&format!("real-{fixture}-2.toml"));
        let o = up(&cfg, &["-p", "The quick brown fox", "-n", "12", "--temp", "0"], &[]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert_eq!(text(&o.stdout), text(&run.stdout), "{fixture}: {}", text(&o.stderr));
        assert!(!text(&o.stdout).trim().is_empty());
    }
}

/// Network namespaces joined by a bridge: each agent gets its own network stack and address.
/// Needs root and iproute2: the test using it is `#[ignore]`d (visibly, with the reason) and
/// tests/run.sh runs it when root; the same silent-peer case without root is
/// `stopped_worker_without_fin_is_reported_within_seconds` (SIGSTOP).
struct Netns {
    tag: String,
    spaces: Vec<String>,
    bridge: String,
}

fn sh(args: &[&str]) -> Result<(), String> {
    let o = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if o.status.success() { Ok(()) } else { Err(format!("{}: {}", args.join(" "), text(&o.stderr).trim())) }
}

impl Netns {
    /// `n` namespaces with addresses 10.213.S.11, .12, …; the root namespace is 10.213.S.1.
    fn create(n: usize) -> Result<(Netns, Vec<String>), String> {
        if unsafe_geteuid() != 0 {
            return Err("not root".into());
        }
        let id = std::process::id() % 10000;
        let subnet = 1 + std::process::id() % 250;
        let mut ns = Netns { tag: format!("pit{id}"), spaces: Vec::new(), bridge: format!("pbr{id}") };
        sh(&["ip", "link", "add", &ns.bridge, "type", "bridge"])?;
        sh(&["ip", "addr", "add", &format!("10.213.{subnet}.1/24"), "dev", &ns.bridge])?;
        sh(&["ip", "link", "set", &ns.bridge, "up"])?;
        let mut addrs = Vec::new();
        for i in 0..n {
            let space = format!("{}n{i}", ns.tag);
            sh(&["ip", "netns", "add", &space])?;
            ns.spaces.push(space.clone());
            let (host, inner) = (format!("{}h{i}", ns.tag), format!("{}c{i}", ns.tag));
            sh(&["ip", "link", "add", &host, "type", "veth", "peer", "name", &inner])?;
            sh(&["ip", "link", "set", &inner, "netns", &space])?;
            sh(&["ip", "link", "set", &host, "master", &ns.bridge])?;
            sh(&["ip", "link", "set", &host, "up"])?;
            let addr = format!("10.213.{subnet}.{}", 11 + i);
            sh(&["ip", "netns", "exec", &space, "ip", "addr", "add", &format!("{addr}/24"), "dev", &inner])?;
            sh(&["ip", "netns", "exec", &space, "ip", "link", "set", &inner, "up"])?;
            sh(&["ip", "netns", "exec", &space, "ip", "link", "set", "lo", "up"])?;
            addrs.push(addr);
        }
        Ok((ns, addrs))
    }

    /// Cut device `i`'s cable (no FIN, no RST: only heartbeats can notice).
    fn unplug(&self, i: usize) {
        sh(&["ip", "link", "set", &format!("{}h{i}", self.tag), "down"]).unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for s in &self.spaces {
            let _ = sh(&["ip", "netns", "del", s]);
        }
        let _ = sh(&["ip", "link", "del", &self.bridge]);
    }
}

fn unsafe_geteuid() -> u32 {
    // No libc dependency in the tests: the effective uid from /proc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2)?.parse().ok()))
        .unwrap_or(u32::MAX)
}

/// An agent started inside a namespace.
fn agent_in(dir: &Scratch, space: &str, ip: &str, name: &str, env: &[(&str, &str)]) -> Agent {
    let addr = format!("{ip}:7700");
    let secret_file = dir.path(&format!("{name}.secret"));
    std::fs::write(&secret_file, SECRET).unwrap();
    let log = dir.path(&format!("{name}.log"));
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", space, BIN, "agent", "--listen", &addr, "--secret-file"])
        .arg(&secret_file)
        .arg("--cache-dir")
        .arg(dir.path(&format!("{name}.cache")))
        .args(["--timeout-secs", "3"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let a = Agent { child: cmd.spawn().unwrap(), addr, log };
    a.wait_listening();
    a
}

#[test]
#[ignore = "needs root and iproute2: tests/run.sh runs it as root (`-- --ignored netns`)"]
fn ring_across_network_namespaces_and_an_unplugged_cable_netns() {
    let (ns, ips) = Netns::create(2).unwrap_or_else(|e| panic!("network namespaces: {e}"));
    let dir = Scratch::new("netns");
    let model = deep_model(&dir, "c-llama-f16.gguf", 4);
    let slow = [("PRIMA_FAKE_DELAY_MS", "20")];
    let a1 = agent_in(&dir, &ns.spaces[0], &ips[0], "a1", &slow);
    let a2 = agent_in(&dir, &ns.spaces[1], &ips[1], "a2", &slow);
    let devices =
        [("head", "127.0.0.1:1", Some(2)), ("second", a1.addr.as_str(), Some(1)), ("third", a2.addr.as_str(), Some(1))];

    // Real engine across namespaces: same text as `prima run`.
    let cfg = write_config(&dir, "c.toml", &model, Some(1), &devices);
    let run = Command::new(BIN)
        .args(["run", "-m"])
        .arg(&model)
        .args(["-p", "Once upon a time", "-n", "8", "--temp", "0", "-t", "1", "-c", "256"])
        .output()
        .unwrap();
    let o = up(&cfg, &["-p", "Once upon a time", "-n", "8", "--temp", "0"], &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), text(&run.stdout), "{}", text(&o.stderr));

    // Unplug the third device mid-generation: no FIN arrives, heartbeats must notice.
    let mut head = Command::new(BIN)
        .arg("up")
        .arg(&cfg)
        .args(["-p", "a prompt", "-n", "100000", "--temp", "0"])
        .env("PRIMA_FAKE_ENGINE", "1")
        .env("XDG_CACHE_HOME", dir.path("head-cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while a2.log().matches("loaded layers").count() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(20), "ring never formed: {}", a2.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(700));
    let err = stderr_of(&mut head);
    ns.unplug(1);
    let cut = Instant::now();
    // Heartbeats find the cut; the ring forms again without the third device and goes on.
    let e = wait_said(&err, "lost device `third`", cut, Duration::from_secs(10));
    assert!(e.contains("stopped answering"), "{e}");
    eprintln!("cable cut detected after {:?}", cut.elapsed());
    let e = wait_said(&err, "resumed", cut, Duration::from_secs(15));
    assert!(e.contains("ring ready: head → second\n"), "{e}");
    assert!(head.try_wait().unwrap().is_none(), "{e}");
    let _ = head.kill();
    let _ = head.wait();
    drop(a1);
    drop(a2);
}

/// Every cached `profile.json` under `dir`.
fn cached_profiles(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            cached_profiles(&p, out);
        } else if p.file_name().is_some_and(|n| n == "profile.json") {
            out.push(p);
        }
    }
}

/// The windows of the Halda plan `prima up -v` prints (`… k = K rounds of windows a:b:c`).
fn halda_windows(err: &str) -> (u32, Vec<u32>) {
    let line = err.lines().find(|l| l.contains(" of windows ")).unwrap_or_else(|| panic!("no plan line: {err}"));
    let k = line.split("k = ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    let w = line.rsplit(' ').next().unwrap().split(':').map(|x| x.parse().unwrap()).collect();
    (k, w)
}

#[test]
fn without_windows_the_halda_plan_splits_the_layers() {
    let dir = Scratch::new("halda");
    let model = deep_model(&dir, "c-llama-f16.gguf", 6);
    let a1 = Agent::start(&dir, "a1", &[]);
    let a2 = Agent::start(&dir, "a2", &[]);
    let cfg = write_config(
        &dir,
        "c.toml",
        &model,
        None,
        &[("head", "127.0.0.1:1", None), ("second", &a1.addr, None), ("third", &a2.addr, None)],
    );
    // The default schedule: Halda.
    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap().replace("schedule = \"even\"\n", "")).unwrap();
    let args = ["-p", "Once upon a time", "-n", "8", "--temp", "0"];
    let o = up(&cfg, &args, &[]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("plan (Halda)"), "{err}");
    let run = Command::new(BIN)
        .args(["run", "-m"])
        .arg(&model)
        .args(["-p", "Once upon a time", "-n", "8", "--temp", "0", "-t", "1", "-c", "256"])
        .output()
        .unwrap();
    assert_eq!(text(&o.stdout), text(&run.stdout), "{err}");
    // On loopback the three devices are one CPU, so Halda may keep the head alone. Make the
    // head's cached profile 1000× slower at compute: the plan must now give layers to the others.
    let mut profiles = Vec::new();
    cached_profiles(&dir.path(""), &mut profiles);
    assert_eq!(profiles.len(), 3, "one cached profile per device: {profiles:?}");
    let head = profiles.iter().find(|p| p.to_string_lossy().contains("head-cache")).expect("the head's profile");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(head).unwrap()).unwrap();
    for t in v["cpu"].as_array_mut().unwrap() {
        t["gflops"] = serde_json::json!(t["gflops"].as_f64().unwrap() / 1000.0);
    }
    std::fs::write(head, v.to_string()).unwrap();
    let o2 = up(&cfg, &args, &[]);
    let err2 = text(&o2.stderr);
    assert!(o2.status.success(), "{err2}");
    let (k, windows) = halda_windows(&err2);
    assert_eq!(windows.len(), 3, "{err2}");
    assert_eq!(k * windows.iter().sum::<u32>(), 6, "the windows cover the 6 layers: {err2}");
    assert!(windows[1] + windows[2] > 0, "the slow head kept every layer: {err2}");
    assert!(windows[0] < windows[1].max(windows[2]), "the slow head has the largest window: {err2}");
    // Split across devices, the text is still the one-device text.
    assert_eq!(text(&o2.stdout), text(&run.stdout), "{err2}");
}

#[test]
fn head_killed_mid_generation_sends_workers_back_to_idle() {
    let dir = Scratch::new("headkill");
    let (mut a1, mut a2, mut head, _, cfg) = endless_ring(&dir, "10", "prompt", Stdio::null());
    std::thread::sleep(Duration::from_millis(500));
    head.kill().unwrap();
    head.wait().unwrap();
    let killed = Instant::now();
    for a in [&a1, &a2] {
        while !a.log().contains("idle") {
            assert!(killed.elapsed() < Duration::from_secs(8), "agent not idle after the head died: {}", a.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(a1.alive() && a2.alive());
    // And both serve the next head.
    let o = up(&cfg, &["-p", "x", "-n", "3", "--temp", "0"], &[FAKE]);
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn prima_down_stops_a_running_ring_and_agents_stay_up() {
    let dir = Scratch::new("down");
    let model = deep_model(&dir, "c-llama-q4_k_m.gguf", 2);
    let slow = [("PRIMA_FAKE_DELAY_MS", "10")];
    let mut a1 = Agent::start(&dir, "a1", &slow);
    let cfg =
        write_config(&dir, "c.toml", &model, None, &[("head", "127.0.0.1:1", Some(1)), ("second", &a1.addr, Some(1))]);
    let mut head = Command::new(BIN)
        .arg("up")
        .arg(&cfg)
        .args(["-p", "prompt", "-n", "100000", "--temp", "0"])
        .env("PRIMA_FAKE_ENGINE", "1")
        .env("XDG_CACHE_HOME", dir.path("head-cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !a1.log().contains("loaded layers") {
        assert!(t0.elapsed() < Duration::from_secs(20), "ring never formed: {}", a1.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let o = Command::new(BIN).arg("down").arg(&cfg).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("stopped 1 ring session"), "{}", text(&o.stderr));
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = head.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "head still running after prima down");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    assert!(a1.alive());
    let o = up(&cfg, &["-p", "x", "-n", "3", "--temp", "0"], &[FAKE]);
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn chat_over_the_ring_reads_turns_from_stdin() {
    let dir = Scratch::new("chat");
    let model = deep_model(&dir, "c-qwen2-q4_k_m.gguf", 2);
    let a1 = Agent::start(&dir, "a1", &[]);
    let cfg =
        write_config(&dir, "c.toml", &model, None, &[("head", "127.0.0.1:1", Some(1)), ("second", &a1.addr, Some(1))]);
    let mut head = Command::new(BIN)
        .arg("up")
        .arg(&cfg)
        .args(["-n", "5", "--temp", "0"])
        .env("XDG_CACHE_HOME", dir.path("head-cache"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    head.stdin.take().unwrap().write_all(b"Hello there\nAnd again\n").unwrap();
    let o = head.wait_with_output().unwrap();
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    // Two turns ran (each reports its timing line), and the ring stopped cleanly afterwards.
    assert!(err.matches("generation:").count() >= 2, "{err}");
    assert!(err.contains("second"), "{err}");
}
