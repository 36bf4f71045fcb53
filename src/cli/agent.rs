//! `prima agent --listen ADDR --secret-file F`: serve this device to clusters, forever.

use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;

use crate::cluster::agent::{AgentOptions, serve};
use crate::cluster::auth::Secret;
use crate::cluster::transport::Timeouts;
use crate::error::{Error, Result};

/// serve this device to a prima cluster: start it once on every device but the head; it stays
/// up, upgrades itself when the head runs a newer prima, and caches the layers it is sent
#[derive(FromArgs)]
#[argh(subcommand, name = "agent")]
pub struct AgentArgs {
    /// address to listen on, e.g. 0.0.0.0:7700 (the `addr` of this device in cluster.toml)
    #[argh(option)]
    pub listen: String,
    /// file holding the cluster's shared secret (the same file on every device)
    #[argh(option)]
    pub secret_file: PathBuf,
    /// where streamed layers are kept between runs (default ~/.cache/prima/agent-PORT)
    #[argh(option)]
    pub cache_dir: Option<PathBuf>,
    /// seconds of silence after which a peer is declared dead (default 6)
    #[argh(option)]
    pub timeout_secs: Option<f64>,
    /// install a binary shipped by a head even when it is an older prima than this one
    #[argh(switch)]
    pub allow_downgrade: bool,
    /// page-cache prefetch of this device's windows: auto (per memory case), off, advise,
    /// touch (default auto, or PRIMA_PREFETCH)
    #[argh(option)]
    pub prefetch: Option<String>,
    /// exit when standard input closes: how `prima up` ties the local agents it starts to its
    /// own life, however it ends (SIGTERM, SIGKILL, a crash)
    #[argh(switch)]
    pub exit_with_stdin: bool,
}

pub fn run(a: AgentArgs) -> Result<()> {
    if let Some(m) = &a.prefetch {
        crate::memory::pager::set_mode(crate::memory::PrefetchMode::parse(m)?);
    }
    if a.exit_with_stdin {
        exit_when_stdin_closes(&a.listen);
    }
    let secret = Secret::load(&a.secret_file)?;
    let cache_dir = match a.cache_dir {
        Some(d) => d,
        None => {
            let port = a.listen.rsplit(':').next().unwrap_or("0").to_string();
            crate::cluster::bootstrap::default_memo_dir()
                .ok_or_else(|| Error::msg("no HOME to put the cache in; pass --cache-dir"))?
                .join(format!("agent-{port}"))
        }
    };
    let mut timeouts = Timeouts::default();
    if let Some(s) = a.timeout_secs {
        if !(0.5..=3600.0).contains(&s) {
            return Err(Error::msg("--timeout-secs must be between 0.5 and 3600"));
        }
        timeouts = Timeouts { io: Duration::from_secs_f64(s), heartbeat: Duration::from_secs_f64(s / 5.0) };
    }
    serve(AgentOptions { listen: a.listen, secret, cache_dir, timeouts, allow_downgrade: a.allow_downgrade })
}

/// Watch standard input on a thread; at end of file (the parent is gone) exit.
fn exit_when_stdin_closes(listen: &str) {
    let listen = listen.to_string();
    let _ = std::thread::Builder::new().name("stdin watch".into()).spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 64];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
        eprintln!("agent {listen}: the process that started this agent is gone (stdin closed); exiting");
        std::process::exit(0);
    });
}
