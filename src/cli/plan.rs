//! `prima plan --profiles DIR [--model M] [-c CTX]`: the Halda plan for saved device profiles.

use std::path::Path;

use argh::FromArgs;

use crate::error::{Context, Error, Result};
use crate::gguf::GgufFile;
use crate::quant::GgmlType;
use crate::sched::{self, ModelCost, ModelShape, halda};

/// plan which device runs which layers (Halda) from saved device profiles
#[derive(FromArgs)]
#[argh(subcommand, name = "plan")]
pub struct PlanArgs {
    /// a cluster.toml: profile its devices (agents must be running) and plan for its model
    #[argh(positional)]
    pub cluster: Option<String>,
    /// the GGUF model (only its header is read), or a built-in shape: llama3-8b, qwen2.5-32b,
    /// llama3-70b (Q4_K)
    #[argh(option, short = 'm')]
    pub model: Option<String>,
    /// context length the KV cache is sized for (default 4096)
    #[argh(option, short = 'c', default = "4096")]
    pub ctx: u64,
    /// directory of device profiles, one JSON file per device (`prima bench --profile -o NAME.json`);
    /// devices are ordered by file name
    #[argh(option)]
    pub profiles: Option<String>,
    /// KV cache type: f16 (default) or f32
    #[argh(option, default = "String::from(\"f16\")")]
    pub kv_type: String,
    /// pin the number of rounds per token
    #[argh(option, short = 'k')]
    pub k: Option<u32>,
    /// pin the head device (its profile's name)
    #[argh(option)]
    pub head: Option<String>,
    /// time the planner on 32 synthetic devices instead (a benchmark)
    #[argh(switch)]
    pub bench: bool,
    /// with a cluster.toml: measure every device's profile again instead of using the cached ones
    #[argh(switch)]
    pub reprofile: bool,
    /// predict this split instead of planning one: a window per device in profile order,
    /// colon-separated (0 = not in the ring), rounds from -k (default 1)
    #[argh(option)]
    pub windows: Option<String>,
    /// also list the N fastest splits of the cost model (brute force over k and windows with
    /// the same head; small clusters), one `split k=K windows=W:W:.. ms=MS` line each
    #[argh(option)]
    pub search: Option<usize>,
    /// write the devices' profiles to this directory (NAME.json, readable by --profiles)
    #[argh(option)]
    pub save_profiles: Option<String>,
    /// correct the profiles from a measured run first: "K W:W:.. NAME=MS,NAME=MS" (its rounds,
    /// windows, and each device's measured ms per decode token, as `prima up` prints them)
    #[argh(option)]
    pub calibrate: Option<String>,
}

fn model_cost(m: Option<&str>) -> Result<ModelCost> {
    let m = m.unwrap_or("llama3-8b");
    if !Path::new(m).exists() {
        let shape = match m.to_ascii_lowercase().as_str() {
            "llama3-8b" => Some(ModelShape::llama3_8b_q4k()),
            "qwen2.5-32b" => Some(ModelShape::qwen25_32b_q4k()),
            "llama3-70b" => Some(ModelShape::llama3_70b_q4k()),
            _ => None,
        };
        if let Some(s) = shape {
            return s.cost();
        }
    }
    let f = GgufFile::open(m)?;
    ModelCost::from_gguf(&f).with_context(|| m.to_string())
}

pub fn run(a: PlanArgs) -> Result<()> {
    if a.reprofile {
        crate::profile::cache::request_reprofile();
    }
    let mut cost = model_cost(a.model.as_deref())?;
    let kv_ty = match a.kv_type.to_ascii_lowercase().as_str() {
        "f16" => GgmlType::F16,
        "f32" => GgmlType::F32,
        other => return Err(Error::msg(format!("--kv-type {other}: expected f16 or f32"))),
    };
    let mut opt = halda::Options { n_ctx: a.ctx, kv_ty, k: a.k, ..halda::Options::default() };
    if a.bench {
        return bench(&cost, &opt);
    }
    let profiles = match (&a.cluster, a.profiles.as_deref()) {
        (Some(path), None) => {
            let cfg = crate::cluster::config::ClusterConfig::load(path)?;
            if a.model.is_none() {
                cost = ModelCost::from_gguf(&GgufFile::open(&cfg.model)?)?;
                opt.n_ctx = cfg.ctx_size as u64;
                // prima's KV cache is f32; the head (first device) runs embedding and output.
                opt.kv_ty = GgmlType::F32;
                opt.head = Some(0);
            }
            if cfg.devices.iter().any(|d| d.window.is_some()) {
                eprintln!("note: {path} sets manual windows, so `prima up` runs those instead of this plan");
            } else if cfg.schedule == crate::cluster::config::Schedule::Even {
                eprintln!("note: {path} sets schedule = \"even\", so `prima up` splits evenly instead of this plan");
            }
            crate::cluster::bootstrap::gather_profiles(&cfg, &Default::default())?
        }
        (None, Some(dir)) => crate::profile::read_dir(dir)?,
        _ => return Err(Error::msg("give either a cluster.toml or --profiles DIR (or --bench)")),
    };
    if let Some(h) = &a.head {
        opt.head = Some(
            profiles
                .iter()
                .position(|p| &p.name == h)
                .ok_or_else(|| Error::msg(format!("--head {h}: no profile has that name")))?,
        );
    }
    let profiles = match &a.calibrate {
        Some(run) => calibrated(&profiles, &cost, &opt, run)?,
        None => profiles,
    };
    if let Some(dir) = &a.save_profiles {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
        for p in &profiles {
            let f = Path::new(dir).join(format!("{}.json", p.name));
            std::fs::write(&f, p.to_json()).with_context(|| f.display())?;
        }
    }
    let plan = match &a.windows {
        Some(w) => {
            let w: Vec<u32> = w
                .split(':')
                .map(|x| x.trim().parse().map_err(|_| Error::msg(format!("--windows: `{x}` is not a window size"))))
                .collect::<Result<_>>()?;
            if w.len() != profiles.len() {
                return Err(Error::msg(format!("--windows: {} windows for {} devices", w.len(), profiles.len())));
            }
            let head = opt.head.unwrap_or(0);
            halda::evaluate(&profiles, &cost, &opt, head, a.k.unwrap_or(1), &w, &vec![0; w.len()])?
        }
        None => halda::plan(&profiles, &cost, &opt)?,
    };
    print!("{}", sched::render(&plan));
    if let Some(n) = a.search {
        for s in halda::search::best_splits(&profiles, &cost, &opt, plan.head, n)? {
            let w: Vec<String> = s.w.iter().map(|w| w.to_string()).collect();
            println!("split k={} windows={} ms={:.1}", s.k, w.join(":"), s.ms);
        }
    }
    Ok(())
}

/// The profiles corrected by [`sched::calibrate`] from one measured run (`--calibrate`).
fn calibrated(
    profiles: &[crate::profile::DeviceProfile],
    cost: &ModelCost,
    opt: &halda::Options,
    run: &str,
) -> Result<Vec<crate::profile::DeviceProfile>> {
    let bad = || Error::msg(format!("--calibrate `{run}`: expected \"K W:W:.. NAME=MS,NAME=MS\""));
    let mut parts = run.split_whitespace();
    let k: u32 = parts.next().and_then(|k| k.parse().ok()).ok_or_else(bad)?;
    let w: Vec<u32> =
        parts.next().ok_or_else(bad)?.split(':').map(|w| w.parse().map_err(|_| bad())).collect::<Result<_>>()?;
    let mut measured = vec![None; profiles.len()];
    for item in parts.next().ok_or_else(bad)?.split(',') {
        let (name, ms) = item.split_once('=').ok_or_else(bad)?;
        let i = profiles
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| Error::msg(format!("--calibrate: no device `{name}`")))?;
        measured[i] = Some(ms.parse::<f64>().map_err(|_| bad())?);
    }
    if w.len() != profiles.len() {
        return Err(Error::msg(format!("--calibrate: {} windows for {} devices", w.len(), profiles.len())));
    }
    let ran = halda::evaluate(profiles, cost, opt, opt.head.unwrap_or(0), k, &w, &vec![0; w.len()])?;
    let (out, corrections) = sched::calibrate::calibrate(profiles, &ran, &measured)?;
    for c in &corrections {
        let what = match c.disk_gbps {
            Some(g) => format!("disk {g:.3} GB/s while streaming (profiled {:.3})", profiles[c.device].disk.seq_gbps),
            None => format!("CPU and RAM figures ÷ {:.2}", c.compute_factor),
        };
        eprintln!(
            "calibrated {}: predicted {:.1} ms, measured {:.1}: {what}",
            profiles[c.device].name, c.predicted_ms, c.measured_ms
        );
    }
    Ok(out)
}

fn bench(cost: &ModelCost, opt: &halda::Options) -> Result<()> {
    for n in [4usize, 8, 16, 32] {
        let devs = halda::synthetic_devices(n);
        let mut times = Vec::new();
        let mut plan = None;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            plan = Some(halda::plan(&devs, cost, opt)?);
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        // Halda alone on the full set (no removal search).
        let t = std::time::Instant::now();
        halda::plan(&devs, cost, &halda::Options { allow_removal: false, ..opt.clone() })?;
        let single = t.elapsed().as_secs_f64() * 1e3;
        times.sort_by(f64::total_cmp);
        let p = plan.unwrap();
        println!(
            "{n:>2} devices, {}: one Halda solve {single:8.1} ms; with device removal {:8.1} ms (median of 3) -> k = {}, {} active, {:.1} ms/token",
            cost.name,
            times[1],
            p.k,
            p.active().len(),
            p.ms_per_token
        );
    }
    Ok(())
}
