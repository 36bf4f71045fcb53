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
    let tokens: Vec<u32> = match kind {
        EngineKind::Fake => prompt.bytes().map(u32::from).collect(),
        EngineKind::Real => return Err(Error::msg("this build of prima has no tokenizer yet")),
    };
    let t0 = Instant::now();
    let out = generate(&mut ring, &tokens, n, temp, seed, |tok| {
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

/// Evaluate the prompt, then sample `n` tokens (greedy when `temp` <= 0).
pub fn generate(
    ring: &mut Ring,
    prompt: &[u32],
    n: usize,
    temp: f32,
    seed: u64,
    mut emit: impl FnMut(u32),
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(Error::msg("empty prompt"));
    }
    let mut logits = vec![0f32; ring.head.n_vocab()];
    let mut rng = seed | 1;
    ring.eval(prompt, 0, &mut logits)?;
    let mut out = Vec::new();
    for pos in prompt.len()..prompt.len() + n {
        let tok = sample(&logits, temp, &mut rng);
        emit(tok);
        out.push(tok);
        ring.eval(&[tok], pos, &mut logits)?;
    }
    Ok(out)
}

fn sample(logits: &[f32], temp: f32, rng: &mut u64) -> u32 {
    let argmax =
        logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0;
    if temp <= 0.0 {
        return argmax as u32;
    }
    let max = logits[argmax];
    let p: Vec<f64> = logits.iter().map(|&l| (((l - max) / temp) as f64).exp()).collect();
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let mut r = (*rng >> 11) as f64 / (1u64 << 53) as f64 * p.iter().sum::<f64>();
    for (i, &q) in p.iter().enumerate() {
        r -= q;
        if r <= 0.0 {
            return i as u32;
        }
    }
    argmax as u32
}
