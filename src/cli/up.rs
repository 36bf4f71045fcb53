//! `prima up cluster.toml [-p PROMPT]`: bring the cluster up from the head and generate on it.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use argh::FromArgs;

use crate::cluster::bootstrap::{UpOptions, up};
use crate::cluster::config::ClusterConfig;
use crate::cluster::messages::{EngineKind, WorkerStats};
use crate::cluster::ring::{Ring, fmt_ranges};
use crate::error::{Error, Result};
use crate::sampler::{Sampler, SamplerConfig};

/// bring up the cluster described by a cluster.toml (connect, upgrade, send layers, form the
/// ring) and generate: with -p, print the continuation of PROMPT; without, chat
#[derive(FromArgs)]
#[argh(subcommand, name = "up")]
pub struct UpArgs {
    /// the cluster file (see cluster.example.toml)
    #[argh(positional)]
    pub config: PathBuf,
    /// prompt to continue
    #[argh(option, short = 'p')]
    pub prompt: Option<String>,
    /// tokens to generate (default from [generate] n_predict)
    #[argh(option, short = 'n')]
    pub n_predict: Option<u32>,
    /// sampling temperature, 0 = greedy (default from [generate] temperature)
    #[argh(option)]
    pub temp: Option<f32>,
    /// random seed (default from [generate] seed; 0 = random)
    #[argh(option)]
    pub seed: Option<u64>,
    /// the prompt is a list of token ids ("1 415 2234"), and the output is printed as ids
    #[argh(switch)]
    pub ids: bool,
}

/// `PRIMA_FAKE_ENGINE=1`: run the deterministic fake engine (protocol tests); prompts are bytes
/// and the output is token ids.
fn engine() -> EngineKind {
    if std::env::var("PRIMA_FAKE_ENGINE").is_ok_and(|v| v == "1") { EngineKind::Fake } else { EngineKind::Real }
}

pub fn run(a: UpArgs) -> Result<()> {
    let cfg = ClusterConfig::load(&a.config)?;
    let kind = engine();
    let mut ring = up(&cfg, &UpOptions { engine: kind, ..UpOptions::default() })?;
    let Some(prompt) = a.prompt else {
        return Err(Error::msg("chat is not available yet: pass -p PROMPT"));
    };
    let n = a.n_predict.unwrap_or(cfg.generate.n_predict) as usize;
    let temp = a.temp.unwrap_or(cfg.generate.temperature);
    let seed = match a.seed.unwrap_or(cfg.generate.seed) {
        0 => u64::from_le_bytes(crate::cluster::auth::nonce()?[..8].try_into().expect("8 bytes")),
        s => s,
    };
    let tokens: Vec<u32> = if a.ids {
        prompt
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|_| Error::msg(format!("--ids: `{s}` is not a token id"))))
            .collect::<Result<_>>()?
    } else {
        match kind {
            EngineKind::Fake => prompt.bytes().map(u32::from).collect(),
            EngineKind::Real => return Err(Error::msg("this build of prima has no tokenizer yet: pass --ids")),
        }
    };
    let sampler = SamplerConfig {
        temperature: temp,
        top_k: cfg.generate.top_k as usize,
        top_p: cfg.generate.top_p,
        seed,
        ..SamplerConfig::default()
    };
    let t0 = Instant::now();
    let out = generate(&mut ring, &tokens, n, sampler, |tok| {
        let mut so = std::io::stdout().lock();
        let _ = write!(so, "{tok} ");
        let _ = so.flush();
    })?;
    println!();
    let secs = t0.elapsed().as_secs_f64();
    let head_stats = ring.stats;
    let members = ring.members.clone();
    let head_ranges = ring.head_ranges.clone();
    let stats = ring.stop()?;
    eprintln!("up: {} tokens in {secs:.2} s ({:.1} tok/s)", out.len(), out.len() as f64 / secs.max(1e-9));
    let head = WorkerStats {
        decode_steps: head_stats.decode_steps,
        compute_ns: head_stats.compute_ns,
        wait_ns: head_stats.wait_ns,
        send_ns: head_stats.send_ns,
        batches: 0,
    };
    print_stats(&cfg.devices[0].name, "head", &fmt_ranges(&head_ranges), &head);
    for (m, s) in members.iter().zip(&stats) {
        print_stats(&m.name, &m.addr, &fmt_ranges(&m.ranges), s);
    }
    Ok(())
}

fn print_stats(name: &str, addr: &str, layers: &str, s: &WorkerStats) {
    let per = |ns: u64| ns as f64 / 1e6 / s.decode_steps.max(1) as f64;
    eprintln!(
        "  {name:12} {addr:22} layers {layers:16} per token: {:7.2} ms computing {:7.2} ms waiting {:7.2} ms sending",
        per(s.compute_ns),
        per(s.wait_ns),
        per(s.send_ns)
    );
}

/// Evaluate the prompt, then sample `n` tokens.
pub fn generate(
    ring: &mut Ring,
    prompt: &[u32],
    n: usize,
    cfg: SamplerConfig,
    mut emit: impl FnMut(u32),
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(Error::msg("empty prompt"));
    }
    let mut sampler = Sampler::new(cfg);
    for &t in prompt {
        sampler.accept(t);
    }
    let mut next = sampler.sample(ring.decode(prompt)?);
    let mut out = Vec::new();
    loop {
        emit(next);
        out.push(next);
        sampler.accept(next);
        if out.len() >= n || ring.pos() + 1 >= ring.n_ctx {
            return Ok(out);
        }
        next = sampler.sample(ring.decode(&[next])?);
    }
}
