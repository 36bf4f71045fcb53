//! `prima up cluster.toml [-p PROMPT]`: bring the cluster up from the head and generate on it.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use argh::FromArgs;

use crate::chat::ChatTemplate;
use crate::chat_loop::Conversation;
use crate::cluster::bootstrap::{UpOptions, up};
use crate::cluster::config::ClusterConfig;
use crate::cluster::messages::{EngineKind, WorkerStats};
use crate::cluster::ring::fmt_ranges;
use crate::error::{Error, Result};
use crate::generate::{GenParams, generate, generate_tokens};
use crate::gguf::GgufFile;
use crate::sampler::SamplerConfig;
use crate::tokenizer::Tokenizer;

/// bring up the cluster described by a cluster.toml (connect, upgrade, send layers, form the
/// ring) and generate: with -p, print the continuation of PROMPT; without, chat
#[derive(FromArgs)]
#[argh(subcommand, name = "up")]
pub struct UpArgs {
    /// the cluster file (see cluster.example.toml); without it, the built-in example: three
    /// devices on this machine running the demo model (fetched into models/ if absent)
    #[argh(positional)]
    pub config: Option<PathBuf>,
    /// start agents for loopback devices that nothing is serving (implied without a cluster file)
    #[argh(switch)]
    pub local_agents: bool,
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
    /// (without end-of-text checks: no tokenizer is read)
    #[argh(switch)]
    pub ids: bool,
    /// keep generating past end-of-text tokens (benchmarks, goldens)
    #[argh(switch)]
    pub ignore_eos: bool,
    /// page-cache prefetch of the head's windows: auto (per memory case), off, advise, touch
    /// (default auto, or PRIMA_PREFETCH); agents take their own `--prefetch`
    #[argh(option)]
    pub prefetch: Option<String>,
    /// measure every device's profile again instead of using the cached ones
    #[argh(switch)]
    pub reprofile: bool,
    /// serve the OpenAI-compatible API and web page from the ring's head at ADDR (host:port)
    /// instead of generating; without it, `[serve] listen` of the cluster file (when set and
    /// no -p is given)
    #[argh(option)]
    pub serve: Option<String>,
}

/// `PRIMA_FAKE_ENGINE=1`: run the deterministic fake engine (protocol tests); prompts are bytes
/// and the output is token ids.
fn engine() -> EngineKind {
    if std::env::var("PRIMA_FAKE_ENGINE").is_ok_and(|v| v == "1") { EngineKind::Fake } else { EngineKind::Real }
}

pub fn run(a: UpArgs) -> Result<()> {
    if a.reprofile {
        crate::profile::cache::request_reprofile();
    }
    let cfg = match &a.config {
        Some(path) => ClusterConfig::load(path)?,
        None => crate::cluster::local::default_cluster(&std::env::current_dir()?)?,
    };
    let _local_agents = if a.local_agents || a.config.is_none() {
        let root = cfg.path.parent().unwrap_or(std::path::Path::new(".")).join(".prima-local");
        Some(crate::cluster::local::start_missing_agents(&cfg, &root)?)
    } else {
        None
    };
    if let Some(m) = &a.prefetch {
        crate::memory::pager::set_mode(crate::memory::PrefetchMode::parse(m)?);
    }
    // Baseline before anything is loaded: the KV cache and buffers are what we measure.
    let monitor = crate::memory::PressureMonitor::start();
    let kind = engine();
    let listen = a.serve.clone().or_else(|| if a.prompt.is_none() { cfg.serve.listen.clone() } else { None });
    if let Some(listen) = listen {
        if kind != EngineKind::Real || a.ids {
            return Err(Error::msg("--serve needs the real engine and text (not --ids or the fake engine)"));
        }
        return serve_ring(cfg, listen);
    }
    let n = a.n_predict.unwrap_or(cfg.generate.n_predict) as usize;
    let seed = match a.seed.unwrap_or(cfg.generate.seed) {
        0 => u64::from_le_bytes(crate::cluster::auth::nonce()?[..8].try_into().expect("8 bytes")),
        s => s,
    };
    let sampler = SamplerConfig {
        temperature: a.temp.unwrap_or(cfg.generate.temperature),
        top_k: cfg.generate.top_k as usize,
        top_p: cfg.generate.top_p,
        seed,
        ..SamplerConfig::default()
    };
    sampler.check()?;
    // Text in, text out with the real engine; token ids with --ids or the fake engine.
    let text_mode = kind == EngineKind::Real && !a.ids;
    // The tokenizer and the chat template, then the parsed metadata goes (its 128k-entry
    // vocabulary arrays would otherwise stay allocated on the head for the whole run).
    let (tokenizer, template) = if text_mode {
        let g = GgufFile::open(&cfg.model)?;
        let template = match a.prompt {
            None => Some(ChatTemplate::from_gguf(&g)?.unwrap_or_else(ChatTemplate::chatml)),
            Some(_) => None,
        };
        (Some(Tokenizer::from_gguf(&g)?), template)
    } else {
        (None, None)
    };
    if a.prompt.is_none() && !text_mode {
        return Err(Error::msg("chat needs text: pass -p with --ids or the fake engine"));
    }

    let (mut ring, report) = up(&cfg, &UpOptions { engine: kind, ..UpOptions::default() })?;
    for line in report.lines() {
        eprintln!("up: {line}");
    }
    // The pressure of running the model: what loading left allocated (KV cache, buffers, the
    // tokenizer) still counts against the baseline, the profile's freed RAM probe does not.
    monitor.reset_peak();
    let t0 = Instant::now();
    let params = GenParams { n_predict: n, sampler, ignore_eog: a.ignore_eos };
    let n_out = match (&a.prompt, &tokenizer, template) {
        (None, Some(tok), Some(template)) => {
            Conversation::new(ring.pipeline(), tok, template, params, None).repl()?;
            0
        }
        (Some(p), Some(tok), _) => {
            let prompt = tok.encode(p, true, false);
            let mut so = std::io::stdout().lock();
            let (out, stats) = generate(ring.pipeline(), tok, &prompt, &params, &mut |t| {
                let _ = so.write_all(t.as_bytes());
                let _ = so.flush();
            })?;
            let _ = writeln!(so);
            eprintln!("up: {}", stats.summary());
            out.len()
        }
        (Some(p), _, _) => {
            let tokens: Vec<u32> = if a.ids {
                p.split(|c: char| c.is_whitespace() || c == ',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().map_err(|_| Error::msg(format!("--ids: `{s}` is not a token id"))))
                    .collect::<Result<_>>()?
            } else {
                p.bytes().map(u32::from).collect()
            };
            let (out, _) = generate_tokens(ring.pipeline(), &tokens, &params, &|_| false, &mut |tok| {
                let mut so = std::io::stdout().lock();
                let _ = write!(so, "{tok} ");
                let _ = so.flush();
            })?;
            println!();
            out.len()
        }
        (None, _, _) => unreachable!("checked above"),
    };
    let secs = t0.elapsed().as_secs_f64();
    let head_stats = ring.head_stats();
    let members = ring.members();
    let head_ranges = ring.head_ranges();
    let plan = ring.plan();
    let stats = ring.stop()?;
    if n_out > 0 {
        eprintln!("up: {n_out} tokens in {secs:.2} s; per device and generated token:");
    }
    let head = WorkerStats {
        decode_steps: head_stats.decode_steps,
        compute_ns: head_stats.compute_ns,
        wait_ns: head_stats.wait_ns,
        send_ns: head_stats.send_ns,
        batches: 0,
        mem_pressure_ppm: (monitor.peak() * 1e6) as u32,
    };
    print_stats(&cfg.devices[0].name, "head", &fmt_ranges(&head_ranges), &head);
    for (m, s) in members.iter().zip(&stats) {
        print_stats(&m.name, &m.addr, &fmt_ranges(&m.ranges), s);
    }
    if let Some(hp) = plan.filter(|_| head.decode_steps > 0) {
        use crate::sched::calibrate;
        let measured: Vec<(&str, Option<f64>)> = std::iter::once((cfg.devices[0].name.as_str(), &head))
            .chain(members.iter().map(|m| m.name.as_str()).zip(&stats))
            .map(|(n, s)| (n, calibrate::measured_ms(s.decode_steps, s.compute_ns, s.send_ns)))
            .collect();
        eprint!("{}", calibrate::report(&hp, &measured, secs * 1e3 / n_out.max(1) as f64));
    }
    Ok(())
}

fn print_stats(name: &str, addr: &str, layers: &str, s: &WorkerStats) {
    let per = |ns: u64| ns as f64 / 1e6 / s.decode_steps.max(1) as f64;
    eprintln!(
        "  {name:12} {addr:22} layers {layers:16} per token: {:7.2} ms computing {:7.2} ms waiting {:7.2} ms sending; memory pressure {:.1}%",
        per(s.compute_ns),
        per(s.wait_ns),
        per(s.send_ns),
        s.mem_pressure_ppm as f64 / 1e4
    );
}

/// stop every ring running on the agents of a cluster.toml (the agents stay up); a head that
/// exits or is interrupted stops its ring by itself
#[derive(FromArgs)]
#[argh(subcommand, name = "down")]
pub struct DownArgs {
    /// the cluster file
    #[argh(positional)]
    pub config: PathBuf,
}

pub fn down(a: DownArgs) -> Result<()> {
    crate::cluster::bootstrap::down(&ClusterConfig::load(&a.config)?)
}

/// `prima up --serve`: the ring comes up while the server already answers (/health 503), then
/// its head pipeline serves `[serve] parallel` sequences, batched through the ring.
fn serve_ring(cfg: ClusterConfig, listen: String) -> Result<()> {
    use crate::serve::{PipelineEngine, ServeModel, ServeOptions, read_api_key, ring_devices, serve, text_side};
    let mut opts = ServeOptions::new(&listen);
    opts.api_key = cfg.serve.api_key_file.as_deref().map(read_api_key).transpose()?;
    let id = cfg.model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    serve(opts, &id, move || {
        let (tokenizer, template) = text_side(&cfg.model)?;
        let n_seq = cfg.serve.parallel as usize;
        let (ring, report) = up(&cfg, &UpOptions { n_seq, ..UpOptions::default() })?;
        for line in report.lines() {
            eprintln!("up: {line}");
        }
        let devices = ring_devices(&ring, &cfg.devices[0].name);
        let engine = PipelineEngine::new(ring, Box::new(move || devices.clone()));
        Ok(ServeModel { engine: Box::new(engine), tokenizer, template })
    })
}
