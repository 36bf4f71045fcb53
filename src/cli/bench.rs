//! `prima bench`: `-m MODEL` measures prompt (pp) and generation (tg) throughput like
//! llama-bench; `--profile` measures this device for the scheduler.

use argh::FromArgs;

use crate::error::{Context, Error, Result};
use crate::profile::{self, measure};
use crate::quant::GgmlType;

/// benchmark a model (-m: llama-bench-style pp/tg tok/s) or this device (--profile: what the scheduler needs)
#[derive(FromArgs)]
#[argh(subcommand, name = "bench")]
pub struct BenchArgs {
    /// the GGUF model to benchmark
    #[argh(option, short = 'm')]
    pub model: Option<String>,
    /// prompt tokens for the pp test (default 64; 0 skips it)
    #[argh(option, short = 'p', default = "64")]
    pub n_prompt: usize,
    /// generated tokens for the tg test (default 32; 0 skips it)
    #[argh(option, short = 'n', default = "32")]
    pub n_gen: usize,
    /// repetitions (default 5)
    #[argh(option, short = 'r', default = "5")]
    pub reps: usize,
    /// measure this device's profile: CPU kernels per weight format, RAM bandwidth, KV append,
    /// disk reads, memory and swap (a few seconds; progress on stderr)
    #[argh(switch)]
    pub profile: bool,
    /// print the profile as JSON (the format `prima plan --profiles DIR` reads)
    #[argh(switch)]
    pub json: bool,
    /// also write the JSON profile to this file
    #[argh(option, short = 'o')]
    pub output: Option<String>,
    /// directory for the temporary disk-test file: the filesystem holding the models (default .)
    #[argh(option)]
    pub disk_dir: Option<String>,
    /// threads: for -m one count (default: physical cores); for --profile a comma-separated
    /// list (default: 1 and all cores)
    #[argh(option, short = 't')]
    pub threads: Option<String>,
    /// layers run on the GPU with -m, the last ones (also -ngl N, as in llama-bench; default 0)
    #[argh(option, default = "0")]
    pub gpu_layers: usize,
    /// with --profile: the GPU memory to plan with, e.g. 6GiB (wgpu cannot tell free memory)
    #[argh(option)]
    pub gpu_memory: Option<String>,
    /// weight formats to measure, comma-separated ggml names such as q4_K,q6_K (default: all supported)
    #[argh(option)]
    pub formats: Option<String>,
}

pub fn run(a: BenchArgs) -> Result<()> {
    if let Some(model) = &a.model {
        return run_model(&a, model);
    }
    if !a.profile {
        return Err(Error::msg(
            "nothing to benchmark: pass -m MODEL for pp/tg throughput, or --profile to measure this device",
        ));
    }
    let mut opt = measure::Options::default();
    if let Some(d) = &a.disk_dir {
        opt.disk_dir = d.into();
    }
    opt.gpu_memory = a.gpu_memory.as_deref().map(profile::parse_memory_size).transpose()?;
    if let Some(t) = &a.threads {
        opt.threads = t
            .split(',')
            .map(|s| s.trim().parse::<u32>().ok().filter(|&n| n > 0))
            .collect::<Option<_>>()
            .ok_or_else(|| Error::msg(format!("--threads {t}: expected positive numbers separated by commas")))?;
    }
    if let Some(f) = &a.formats {
        opt.formats = f
            .split(',')
            .map(|s| {
                let s = s.trim();
                GgmlType::ALL
                    .iter()
                    .copied()
                    .find(|t| t.name().eq_ignore_ascii_case(s))
                    .ok_or_else(|| Error::msg(format!("--formats: unknown weight format `{s}`")))
            })
            .collect::<Result<_>>()?;
    }
    let start = std::time::Instant::now();
    let p = measure::measure(&opt, &mut |line| eprintln!("[{:5.1}s] {line}", start.elapsed().as_secs_f64()))?;
    if let Some(path) = &a.output {
        std::fs::write(path, p.to_json() + "\n").with_context(|| format!("writing {path}"))?;
        eprintln!("profile written to {path}");
    }
    if a.json {
        println!("{}", p.to_json());
    } else {
        print!("{}", profile::render(&p));
    }
    Ok(())
}

fn run_model(a: &BenchArgs, model: &str) -> Result<()> {
    let threads = match &a.threads {
        None => crate::cpu::default_threads(),
        Some(t) => t
            .trim()
            .parse()
            .ok()
            .filter(|&n: &usize| n > 0)
            .ok_or_else(|| Error::msg(format!("-t {t}: with -m, give one thread count")))?,
    };
    let params = crate::bench::BenchParams {
        n_prompt: a.n_prompt,
        n_gen: a.n_gen,
        threads,
        reps: a.reps.max(1),
        gpu_layers: a.gpu_layers,
    };
    eprintln!("kernels: {}", crate::cpu::kernel_summary());
    let results = crate::bench::run(model, &params, |line| eprintln!("{line}"))?;
    if let Some(tg) = results.iter().find(|r| r.n_gen > 0) {
        let gbps = measure::ram_read_gbps(measure::RAM_BUFFER_MIB << 20, threads, None);
        eprintln!("{}", crate::bench::bandwidth_bound_line(tg, gbps));
    }
    if a.json {
        println!("{}", crate::bench::render_json(&results));
    } else {
        print!("{}", crate::bench::render_table(&results));
    }
    Ok(())
}
