//! `prima bench --profile [--json]`: measure this device for the scheduler. (Model benchmarks,
//! `-m MODEL` pp/tg, will join this subcommand.)

use argh::FromArgs;

use crate::error::{Context, Error, Result};
use crate::profile::{self, measure};
use crate::quant::GgmlType;

/// benchmark this device: `--profile` measures what the scheduler needs
#[derive(FromArgs)]
#[argh(subcommand, name = "bench")]
pub struct BenchArgs {
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
    /// thread counts for the CPU kernels, comma-separated (default: 1 and all cores)
    #[argh(option, short = 't')]
    pub threads: Option<String>,
    /// weight formats to measure, comma-separated ggml names such as q4_K,q6_K (default: all supported)
    #[argh(option)]
    pub formats: Option<String>,
}

pub fn run(a: BenchArgs) -> Result<()> {
    if !a.profile {
        return Err(Error::msg("nothing to benchmark: pass --profile to measure this device for the scheduler"));
    }
    let mut opt = measure::Options::default();
    if let Some(d) = &a.disk_dir {
        opt.disk_dir = d.into();
    }
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
