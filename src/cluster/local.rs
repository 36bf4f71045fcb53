//! Devices on this machine: the embedded default cluster (`prima up` with no file) and agents
//! the head starts itself for loopback devices nobody is serving — so one command runs a real
//! ring on one computer, and tests and demos need no hand-started processes.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::config::ClusterConfig;
use crate::error::{Context, Error, Result};

/// The example cluster, compiled in: three devices on 127.0.0.1 with the demo model.
pub const EXAMPLE_TOML: &str = include_str!("../../cluster.example.toml");

/// The embedded default cluster, with paths relative to `dir`; the demo model is fetched and a
/// secret created there when absent.
pub fn default_cluster(dir: &Path) -> Result<ClusterConfig> {
    let cfg = ClusterConfig::parse(EXAMPLE_TOML, &dir.join("cluster.example.toml"))?;
    if !cfg.model.exists() && cfg.model.file_name().is_some_and(|n| n == crate::fetch::SMOLLM2_FILE) {
        crate::fetch::ensure_smollm2(cfg.model.parent().unwrap_or(dir))?;
    }
    if !cfg.secret_file.exists() {
        let bytes = super::auth::nonce()?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&cfg.secret_file, &hex).with_context(|| format!("creating {}", cfg.secret_file.display()))?;
        eprintln!("created a new cluster secret in {}", cfg.secret_file.display());
    }
    Ok(cfg)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = crate::sys::with_mode(std::fs::OpenOptions::new().write(true).create_new(true), 0o600).open(path)?;
    f.write_all(text.as_bytes())
}

/// Agents started by the head; killed when dropped.
#[derive(Default)]
pub struct LocalAgents {
    children: Vec<(String, Child)>,
}

impl Drop for LocalAgents {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn is_loopback(addr: &str) -> Option<SocketAddr> {
    addr.parse::<SocketAddr>().ok().filter(|a| a.ip().is_loopback())
}

fn listening(addr: &SocketAddr) -> bool {
    TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok()
}

/// Start `prima agent` for every loopback device (the head excepted) that nothing listens on.
/// Their caches go to `cache_root/<device name>`, their logs next to them.
pub fn start_missing_agents(cfg: &ClusterConfig, cache_root: &Path) -> Result<LocalAgents> {
    let exe = std::env::current_exe().context("finding this program to start local agents")?;
    let mut agents = LocalAgents::default();
    for d in cfg.devices.iter().skip(1) {
        let Some(addr) = is_loopback(&d.addr) else { continue };
        if listening(&addr) {
            continue;
        }
        let dir: PathBuf = cache_root.join(&d.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = std::fs::File::create(dir.join("agent.log"))?;
        let child = Command::new(&exe)
            .args(["agent", "--exit-with-stdin", "--listen", &d.addr, "--secret-file"])
            .arg(&cfg.secret_file)
            .arg("--cache-dir")
            .arg(&dir)
            // Our end of this pipe closes when we exit, however we exit: the agent follows.
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting a local agent for {}", d.name))?;
        eprintln!("started a local agent for {} on {} (log: {})", d.name, d.addr, dir.join("agent.log").display());
        agents.children.push((d.name.clone(), child));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (name, child) in &mut agents.children {
        let addr = is_loopback(&cfg.devices.iter().find(|d| &d.name == name).expect("started from cfg").addr)
            .expect("loopback");
        while !listening(&addr) {
            if let Some(status) = child.try_wait()? {
                return Err(Error::msg(format!("the local agent for {name} exited at start ({status}); see its log")));
            }
            if Instant::now() > deadline {
                return Err(Error::msg(format!("the local agent for {name} did not start listening on {addr}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(agents)
}
