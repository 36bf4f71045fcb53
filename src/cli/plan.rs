//! `prima plan --profiles DIR [--model M] [-c CTX]`: the Halda plan for saved device profiles.

use std::path::Path;

use argh::FromArgs;

use crate::error::{Context, Error, Result};
use crate::gguf::GgufFile;
use crate::profile::{DeviceProfile, Gpu, KvAppend, Link, Memory, Os, Throughput};
use crate::quant::GgmlType;
use crate::sched::{self, ModelCost, ModelShape, halda};

/// plan which device runs which layers (Halda) from saved device profiles
#[derive(FromArgs)]
#[argh(subcommand, name = "plan")]
pub struct PlanArgs {
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

/// Every `*.json` in `dir`, sorted by file name.
pub fn read_profiles(dir: &str) -> Result<Vec<DeviceProfile>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading profile directory {dir}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::msg(format!(
            "no device profiles (*.json) in {dir}: run `prima bench --profile -o DEVICE.json` on each device"
        )));
    }
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).with_context(|| f.display())?;
            DeviceProfile::from_json(&text).with_context(|| f.display())
        })
        .collect()
}

pub fn run(a: PlanArgs) -> Result<()> {
    let cost = model_cost(a.model.as_deref())?;
    let kv_ty = match a.kv_type.to_ascii_lowercase().as_str() {
        "f16" => GgmlType::F16,
        "f32" => GgmlType::F32,
        other => return Err(Error::msg(format!("--kv-type {other}: expected f16 or f32"))),
    };
    let mut opt = halda::Options { n_ctx: a.ctx, kv_ty, k: a.k, ..halda::Options::default() };
    if a.bench {
        return bench(&cost, &opt);
    }
    let dir = a.profiles.as_deref().ok_or_else(|| Error::msg("--profiles DIR is required (or --bench)"))?;
    let profiles = read_profiles(dir)?;
    if let Some(h) = &a.head {
        opt.head = Some(
            profiles
                .iter()
                .position(|p| &p.name == h)
                .ok_or_else(|| Error::msg(format!("--head {h}: no profile has that name")))?,
        );
    }
    let plan = halda::plan(&profiles, &cost, &opt)?;
    print!("{}", sched::render(&plan));
    Ok(())
}

/// `n` synthetic, varied devices (phones, laptops, desktops with and without GPUs, Macs).
pub fn synthetic_devices(n: usize) -> Vec<DeviceProfile> {
    let gib = |g: f64| (g * (1u64 << 30) as f64) as u64;
    (0..n)
        .map(|i| {
            let kind = i % 4;
            let os = [Os::Linux, Os::MacOs, Os::Android, Os::Linux][kind];
            let mut p = DeviceProfile::new(&format!("dev{i:02}"), os);
            let q4k = [150.0, 60.0, 40.0, 250.0][kind] * (1.0 + (i % 5) as f64 * 0.1);
            p.cores = [8, 8, 8, 16][kind];
            p.cpu = [("f32", 0.6), ("f16", 0.8), ("q4_K", 1.0), ("q6_K", 0.8)]
                .iter()
                .map(|&(f, s)| Throughput { format: f.into(), threads: p.cores, gflops: q4k * s })
                .collect();
            p.ram_read_gbps = [40.0, 60.0, 20.0, 50.0][kind];
            p.kv_append = KvAppend { fixed_us: 2.0, gbps: 10.0 };
            p.disk.seq_gbps = [3.0, 2.5, 1.4, 3.2][kind];
            p.disk.rnd_gbps = [0.4, 0.7, 0.2, 0.5][kind];
            p.memory = Memory {
                total: gib(16.0),
                available: gib([4.1, 2.4, 1.9, 9.7][kind] + (i % 3) as f64),
                ..Memory::default()
            };
            p.link = Some(Link { rtt_ms: 3.0 + (i % 5) as f64, gbps: 0.05 });
            if kind == 0 || kind == 3 || kind == 1 {
                let uma = kind == 1;
                p.gpu = Some(Gpu {
                    name: "gpu".into(),
                    backend: if uma { "metal" } else { "vulkan" }.into(),
                    uma,
                    mem_total: gib(8.0),
                    mem_free: gib([8.0, 5.3, 0.0, 11.0][kind]),
                    read_gbps: [380.0, 60.0, 0.0, 550.0][kind],
                    flops: p.cpu.iter().map(|t| Throughput { gflops: t.gflops * 10.0, ..t.clone() }).collect(),
                    kv_append: KvAppend { fixed_us: 10.0, gbps: 50.0 },
                    upload_ms: 0.05,
                    download_ms: 0.05,
                });
            }
            p
        })
        .collect()
}

fn bench(cost: &ModelCost, opt: &halda::Options) -> Result<()> {
    for n in [4usize, 8, 16, 32] {
        let devs = synthetic_devices(n);
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
