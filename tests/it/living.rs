//! A ring that outlives its devices: a ring of four (the head and three agents, split evenly)
//! generating greedily on SmolLM2 loses agents mid-generation (killed, frozen) and still
//! prints exactly what `prima run` prints on one device, and exits 0.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};

use crate::cluster::{Agent, BIN, Scratch, text, write_config};

const PROMPT: &str = "The history of the city begins";
const N: &str = "40";

/// What `prima run` prints for PROMPT on one device.
fn one_device(model: &Path) -> String {
    let run = Command::new(BIN)
        .args(["run", "-m"])
        .arg(model)
        .args(["-p", PROMPT, "-n", N, "--temp", "0", "-t", "1", "-c", "256"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));
    text(&run.stdout)
}

/// A running `prima up` whose stdout and stderr are collected as they come.
struct Head {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
}

fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 256];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

impl Head {
    fn start(dir: &Scratch, cfg: &Path) -> Head {
        Head::start_with(dir, cfg, &["-p", PROMPT, "-n", N, "--temp", "0"], &[])
    }

    fn start_with(dir: &Scratch, cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> Head {
        let mut child = Command::new(BIN)
            .arg("up")
            .arg(cfg)
            .args(args)
            .envs(env.iter().copied())
            .env("XDG_CACHE_HOME", dir.path("head-cache"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = collect(child.stdout.take().unwrap());
        let err = collect(child.stderr.take().unwrap());
        Head { child, out, err }
    }

    fn out(&self) -> String {
        text(&self.out.lock().unwrap())
    }

    fn err(&self) -> String {
        text(&self.err.lock().unwrap())
    }

    /// Wait until the head has printed more than `bytes` of text (it is generating).
    fn wait_text(&mut self, bytes: usize) {
        let t0 = Instant::now();
        while self.out().len() <= bytes {
            assert!(self.child.try_wait().unwrap().is_none(), "head exited early: {}{}", self.out(), self.err());
            assert!(t0.elapsed() < Duration::from_secs(60), "no text from the head: {}", self.err());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait until stderr has said `what` `times` times.
    fn wait_err(&mut self, what: &str, times: usize) {
        let t0 = Instant::now();
        while self.err().matches(what).count() < times {
            assert!(self.child.try_wait().unwrap().is_none(), "head exited early: {}", self.err());
            assert!(t0.elapsed() < Duration::from_secs(60), "head never said `{what}`: {}", self.err());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the exit: (success, stdout, stderr).
    fn finish(mut self) -> (bool, String, String) {
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if t0.elapsed() > Duration::from_secs(90) {
                let _ = self.child.kill();
                panic!("head still running after 90 s: {}", self.err());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader threads end at EOF, right after the exit.
        std::thread::sleep(Duration::from_millis(100));
        (status.success(), self.out(), self.err())
    }
}

/// Three agents and the cluster.toml of a ring of four over SmolLM2, split evenly.
fn ring_of_four(dir: &Scratch) -> (Vec<Agent>, std::path::PathBuf, std::path::PathBuf) {
    let model = crate::model::smollm2();
    let agents: Vec<Agent> = ["second", "third", "fourth"].iter().map(|n| Agent::start(dir, n, &[])).collect();
    let cfg = write_config(
        dir,
        "c.toml",
        &model,
        None,
        &[
            ("head", "127.0.0.1:1", None),
            ("second", &agents[0].addr, None),
            ("third", &agents[1].addr, None),
            ("fourth", &agents[2].addr, None),
        ],
    );
    (agents, cfg, model)
}

#[test]
fn killed_agent_mid_generation_the_ring_recovers_with_identical_text() {
    let dir = Scratch::new("living-kill");
    let (mut agents, cfg, model) = ring_of_four(&dir);
    let want = one_device(&model);
    let mut head = Head::start(&dir, &cfg);
    head.wait_text(8);
    agents[1].kill();
    let (ok, out, err) = head.finish();
    eprintln!("{err}");
    assert!(ok, "{err}");
    assert!(err.contains("lost device `third`"), "{err}");
    assert!(err.contains("rebuilt the KV state") && err.contains("resumed"), "{err}");
    assert_eq!(out, want, "{err}");
    // The survivors ran the new ring: a second session was loaded on each.
    for a in [&agents[0], &agents[2]] {
        assert_eq!(a.log().matches("loaded layers").count(), 2, "{}", a.log());
    }
}

/// A frozen agent (SIGSTOP: the socket stays open, the kernel even ACKs) is found by the
/// missing heartbeats within the timeout, then the ring forms again without it.
#[test]
fn stopped_agent_mid_generation_the_ring_recovers_with_identical_text() {
    let dir = Scratch::new("living-stop");
    let (agents, cfg, model) = ring_of_four(&dir);
    let want = one_device(&model);
    let mut head = Head::start(&dir, &cfg);
    head.wait_text(8);
    let pid = agents[2].pid();
    kill(pid, Signal::SIGSTOP).unwrap();
    let stopped = Instant::now();
    head.wait_err("resumed", 1);
    let back = stopped.elapsed();
    let (ok, out, err) = head.finish();
    let _ = kill(pid, Signal::SIGCONT);
    assert!(ok, "{err}");
    assert!(err.contains("lost device `fourth`"), "{err}");
    assert_eq!(out, want, "{err}");
    // timeout_secs = 3: found by the heartbeats, then formed again, well within 3 timeouts.
    assert!(back < Duration::from_secs(9), "resumed {back:?} after the stop: {err}");
}

/// Two agents lost one after the other; then the head and one agent finish the text.
#[test]
fn two_agents_lost_one_after_the_other_the_ring_recovers_twice() {
    let dir = Scratch::new("living-two");
    let (mut agents, cfg, model) = ring_of_four(&dir);
    let want = one_device(&model);
    let mut head = Head::start(&dir, &cfg);
    head.wait_text(8);
    agents[0].kill();
    head.wait_err("resumed", 1);
    let at = head.out().len();
    head.wait_text(at + 4);
    agents[2].kill();
    let (ok, out, err) = head.finish();
    assert!(ok, "{err}");
    assert!(err.contains("lost device `second`") && err.contains("lost device `fourth`"), "{err}");
    assert_eq!(err.matches("resumed").count(), 2, "{err}");
    assert_eq!(out, want, "{err}");
}

/// Every agent lost: the head runs the whole model alone and still finishes.
#[test]
fn every_agent_lost_the_head_finishes_alone() {
    let dir = Scratch::new("living-alone");
    let (mut agents, cfg, model) = ring_of_four(&dir);
    let want = one_device(&model);
    let mut head = Head::start(&dir, &cfg);
    head.wait_text(8);
    for a in agents.iter_mut() {
        a.kill();
    }
    let (ok, out, err) = head.finish();
    assert!(ok, "{err}");
    assert!(err.contains("the head carries on alone"), "{err}");
    assert_eq!(out, want, "{err}");
}

/// Threads and open descriptors of a process, from /proc.
fn threads_and_fds(pid: nix::unistd::Pid) -> (usize, usize) {
    let count = |d: String| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
    (count(format!("/proc/{pid}/task")), count(format!("/proc/{pid}/fd")))
}

/// Every file under `d`, sorted.
fn files(d: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![d.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() { todo.push(p) } else { out.push(p) }
        }
    }
    out.sort();
    out
}

/// A bounded soak: runs that each lose the same agent mid-generation (killed, then started
/// again on its address) leave the survivors as they were after the first such run: no
/// leaked threads, descriptors or cache files.
#[test]
fn kill_and_restart_soak_leaks_no_threads_descriptors_or_cache_files() {
    let dir = Scratch::new("living-soak");
    let model = crate::cluster::deep_model(&dir, "c-llama-q4_k_m.gguf", 6);
    let slow = [("PRIMA_FAKE_DELAY_MS", "15")];
    let mut agents: Vec<Agent> = ["second", "third", "fourth"].iter().map(|n| Agent::start(&dir, n, &slow)).collect();
    let devices = [
        ("head", "127.0.0.1:1", None),
        ("second", agents[0].addr.as_str(), None),
        ("third", agents[1].addr.as_str(), None),
        ("fourth", agents[2].addr.as_str(), None),
    ];
    let cfg = write_config(&dir, "c.toml", &model, None, &devices);
    let mut after_first = None;
    for run in 0..4 {
        let mut head =
            Head::start_with(&dir, &cfg, &["-p", "soak", "-n", "80", "--temp", "0"], &[("PRIMA_FAKE_ENGINE", "1")]);
        head.wait_text(20);
        agents[2].kill();
        let (ok, _, err) = head.finish();
        assert!(ok, "run {run}: {err}");
        assert!(err.contains("lost device `fourth`") && err.contains("resumed"), "run {run}: {err}");
        agents[2].restart(&dir, "fourth", &slow);
        // Survivors back to idle: their heartbeat and reader threads end within a heartbeat.
        let state = |a: &Agent, name: &str| (threads_and_fds(a.pid()), files(&dir.path(&format!("{name}.cache"))));
        let now = || [state(&agents[0], "second"), state(&agents[1], "third")];
        let Some(want) = &after_first else {
            std::thread::sleep(Duration::from_secs(3));
            after_first = Some(now());
            continue;
        };
        let t0 = Instant::now();
        while &now() != want {
            assert!(
                t0.elapsed() < Duration::from_secs(8),
                "run {run}: survivors {:?}, after the first run {want:?}",
                now()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
