//! Device profiles: what Halda needs to know about a device, measured in-process by
//! [`measure`] (`prima bench --profile`), sent to the head with postcard, shown with `--json`.
//!
//! The parsers of `/proc/meminfo`, cgroup v1/v2 files and `/proc/cpuinfo` are pure functions
//! over text, so they are unit-tested on samples; [`sys`] glues them to the running host.

pub mod cache;
pub mod measure;
pub mod net;
pub mod sys;

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::quant::GgmlType;
pub use crate::sys::{Cgroup, CgroupPaths, parse_cgroup_v1, parse_cgroup_v2, parse_proc_cgroup};

/// Bump when a field changes meaning or layout; old profiles are then rejected with a clear error.
pub const PROFILE_VERSION: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Os {
    Linux,
    MacOs,
    /// Android, including Termux and HarmonyOS (upstream reports these as "Linux").
    Android,
    Windows,
    Other,
}

impl std::fmt::Display for Os {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Os::Linux => "Linux",
            Os::MacOs => "macOS",
            Os::Android => "Android",
            Os::Windows => "Windows",
            Os::Other => "other",
        })
    }
}

/// Measured throughput of one weight format's matrix-vector kernel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// ggml type name, e.g. "q4_K" (names survive enum renumbering).
    pub format: String,
    pub threads: u32,
    pub gflops: f64,
}

/// Cost of appending one token's K and V rows: `fixed_us + bytes / (gbps·1e3)` µs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KvAppend {
    pub fixed_us: f64,
    pub gbps: f64,
}

impl KvAppend {
    pub fn ms(&self, bytes: f64) -> f64 {
        let bw = if self.gbps > 0.0 { bytes / (self.gbps * 1e6) } else { 0.0 };
        self.fixed_us / 1e3 + bw
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// GB/s (1e9), reading a cold file in readahead-sized blocks.
    pub seq_gbps: f64,
    /// GB/s, page-sized reads at random offsets (what page faults on a cold mapping cost).
    pub rnd_gbps: f64,
    /// How the page cache was kept out of the measurement.
    pub method: String,
}

/// Memory in bytes. `available` already honours cgroup limits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub total: u64,
    pub available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
    /// Memory of other processes the OS could swap out for us (Android's budget extension).
    pub can_swap: u64,
    /// Where the numbers came from, e.g. "meminfo", "cgroup v1 limit".
    pub source: String,
}

/// A GPU, once the GPU path exists. Kept now so profiles need no version bump later.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    pub name: String,
    pub backend: String,
    /// Unified memory (Apple Silicon, integrated GPUs): GPU layers share the RAM budget.
    pub uma: bool,
    pub mem_total: u64,
    pub mem_free: u64,
    pub read_gbps: f64,
    pub flops: Vec<Throughput>,
    pub kv_append: KvAppend,
    /// Hidden-state copies per window, RAM → VRAM and back, ms.
    pub upload_ms: f64,
    pub download_ms: f64,
}

/// One ring link, measured on the live connection (see [`net`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub rtt_ms: f64,
    pub gbps: f64,
}

impl Link {
    /// One-way time of a message of `bytes`.
    pub fn ms(&self, bytes: f64) -> f64 {
        self.rtt_ms / 2.0 + if self.gbps > 0.0 { bytes / (self.gbps * 1e6) } else { 0.0 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceProfile {
    /// Always [`PROFILE_VERSION`]; first so a decoder can check it before the rest.
    pub version: u32,
    pub name: String,
    pub os: Os,
    pub arch: String,
    pub cpu_model: String,
    /// Usable cores (affinity mask honoured).
    pub cores: u32,
    /// CPUs the cgroup's quota allows (cfs_quota/cfs_period, cpu.max), None without a quota.
    /// The CPU and RAM figures below are already scaled by it.
    pub cpu_quota: Option<f64>,
    /// Which CPU kernel table ran the throughput test.
    pub kernels: String,
    pub cpu: Vec<Throughput>,
    /// GB/s, all threads reading a buffer far larger than the caches.
    pub ram_read_gbps: f64,
    pub kv_append: KvAppend,
    pub disk: Disk,
    pub memory: Memory,
    pub gpu: Option<Gpu>,
    /// The link to this device's ring successor, filled in by the cluster when measured.
    pub link: Option<Link>,
}

impl DeviceProfile {
    /// An empty profile (every number zero) for the given name and OS.
    pub fn new(name: &str, os: Os) -> Self {
        DeviceProfile {
            version: PROFILE_VERSION,
            name: name.into(),
            os,
            arch: String::new(),
            cpu_model: String::new(),
            cores: 1,
            cpu_quota: None,
            kernels: String::new(),
            cpu: Vec::new(),
            ram_read_gbps: 0.0,
            kv_append: KvAppend::default(),
            disk: Disk::default(),
            memory: Memory::default(),
            gpu: None,
            link: None,
        }
    }

    /// Best measured CPU GFLOPS for a format (over thread counts).
    pub fn cpu_gflops(&self, ty: GgmlType) -> Option<f64> {
        best(&self.cpu, ty)
    }

    pub fn to_postcard(&self) -> Result<Vec<u8>> {
        postcard::to_stdvec(self).map_err(|e| Error::msg(format!("encoding profile: {e}")))
    }

    pub fn from_postcard(bytes: &[u8]) -> Result<Self> {
        // The version is the first field: check it alone before trusting the layout.
        let (v, _) = postcard::take_from_bytes::<u32>(bytes)
            .map_err(|e| Error::msg(format!("device profile: not a profile ({e})")))?;
        check_version(v)?;
        let p: Self = postcard::from_bytes(bytes).map_err(|e| Error::msg(format!("device profile: {e}")))?;
        p.validate()?;
        Ok(p)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("profiles always serialise")
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::msg(format!("device profile: invalid JSON ({e})")))?;
        let ver = v.get("version").and_then(|v| v.as_u64()).ok_or_else(|| {
            Error::msg("device profile: no `version` field (is this a `prima bench --profile --json` file?)")
        })?;
        check_version(ver as u32)?;
        let p: Self = serde_json::from_value(v).map_err(|e| Error::msg(format!("device profile: {e}")))?;
        p.validate()?;
        Ok(p)
    }

    /// Reject numbers that would poison the planner (negative, NaN, infinite).
    pub fn validate(&self) -> Result<()> {
        let mut nums = vec![
            ("ram_read_gbps", self.ram_read_gbps),
            ("kv_append.fixed_us", self.kv_append.fixed_us),
            ("kv_append.gbps", self.kv_append.gbps),
            ("disk.seq_gbps", self.disk.seq_gbps),
            ("disk.rnd_gbps", self.disk.rnd_gbps),
        ];
        nums.extend(self.cpu.iter().map(|t| ("cpu gflops", t.gflops)));
        if let Some(g) = &self.gpu {
            nums.extend([
                ("gpu.read_gbps", g.read_gbps),
                ("gpu.upload_ms", g.upload_ms),
                ("gpu.download_ms", g.download_ms),
            ]);
            nums.extend(g.flops.iter().map(|t| ("gpu gflops", t.gflops)));
        }
        if let Some(l) = &self.link {
            nums.extend([("link.rtt_ms", l.rtt_ms), ("link.gbps", l.gbps)]);
        }
        for (what, v) in nums {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::msg(format!("device profile `{}`: {what} = {v} is not a usable number", self.name)));
            }
        }
        if self.cpu_quota.is_some_and(|q| !q.is_finite() || q <= 0.0) {
            return Err(Error::msg(format!(
                "device profile `{}`: cpu_quota {:?} is not usable",
                self.name, self.cpu_quota
            )));
        }
        if self.cores == 0 {
            return Err(Error::msg(format!("device profile `{}`: zero cores", self.name)));
        }
        Ok(())
    }
}

fn check_version(v: u32) -> Result<()> {
    if v != PROFILE_VERSION {
        return Err(Error::msg(format!(
            "device profile version {v}, this prima reads version {PROFILE_VERSION}: re-run `prima bench --profile` there"
        )));
    }
    Ok(())
}

/// Best GFLOPS for a format in a throughput list.
pub fn best(list: &[Throughput], ty: GgmlType) -> Option<f64> {
    list.iter().filter(|t| t.format == ty.name()).map(|t| t.gflops).filter(|g| *g > 0.0).reduce(f64::max)
}

// ---------------------------------------------------------------------------------------------
// Pure parsers.

/// `/proc/meminfo` values in bytes, by key ("MemAvailable" → bytes).
pub fn parse_meminfo(text: &str) -> std::collections::HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let mut it = v.split_whitespace();
            let n: u64 = it.next()?.parse().ok()?;
            let mul = match it.next() {
                Some("kB") => 1024,
                None => 1,
                Some(_) => return None,
            };
            Some((k.trim().to_string(), n * mul))
        })
        .collect()
}

/// Combine `/proc/meminfo` with an optional cgroup: a limit caps both total and available.
pub fn memory_from(meminfo: &str, cgroup: Option<&Cgroup>) -> Memory {
    let mi = parse_meminfo(meminfo);
    let g = |k: &str| mi.get(k).copied().unwrap_or(0);
    let total = g("MemTotal");
    let available = mi.get("MemAvailable").copied().unwrap_or(g("MemFree") + g("Cached"));
    let mut m = Memory {
        total,
        available,
        swap_total: g("SwapTotal"),
        swap_free: g("SwapFree"),
        can_swap: 0,
        source: "meminfo".into(),
    };
    if let Some(cg) = cgroup {
        if let Some(limit) = cg.limit {
            m.total = m.total.min(limit);
            m.available = crate::sys::available_from(m.available, Some(cg));
            m.source = format!("cgroup v{} limit", cg.version);
        }
        if let Some(sw) = cg.swap_limit {
            m.swap_total = m.swap_total.min(sw);
            m.swap_free = m.swap_free.min(sw);
        }
    }
    m
}

/// Model name and logical processor count from `/proc/cpuinfo` (x86 "model name", ARM
/// "Hardware"/"CPU part" fallbacks).
pub fn parse_cpuinfo(text: &str) -> (String, usize) {
    let mut model = None;
    let mut n = 0;
    for l in text.lines() {
        let Some((k, v)) = l.split_once(':') else { continue };
        match k.trim() {
            "processor" => n += 1,
            "model name" | "Model" | "Hardware" if model.is_none() => model = Some(v.trim().to_string()),
            _ => {}
        }
    }
    (model.unwrap_or_else(|| "unknown CPU".into()), n)
}

/// Which OS this is. Android (Termux, HarmonyOS) runs a Linux kernel and Rust's `target_os`
/// may say "linux" there, so look for Android's own markers.
pub fn detect_os(target_os: &str, env: &dyn Fn(&str) -> Option<String>, exists: &dyn Fn(&str) -> bool) -> Os {
    match target_os {
        "android" => Os::Android,
        "macos" => Os::MacOs,
        "windows" => Os::Windows,
        "linux" => {
            let android_env = ["ANDROID_ROOT", "ANDROID_DATA", "TERMUX_VERSION"].iter().any(|k| env(k).is_some());
            if android_env || exists("/system/build.prop") { Os::Android } else { Os::Linux }
        }
        _ => Os::Other,
    }
}

/// A human-readable summary of a profile.
pub fn render(p: &DeviceProfile) -> String {
    use std::fmt::Write;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let mut s = String::new();
    let quota = p.cpu_quota.map(|q| format!(" (quota {q:.2} CPUs)")).unwrap_or_default();
    let _ = writeln!(
        s,
        "device {} ({} {}, {}), {} cores{quota}, kernels: {}",
        p.name, p.os, p.arch, p.cpu_model, p.cores, p.kernels
    );
    let m = &p.memory;
    let _ = writeln!(
        s,
        "memory: {:.2} GiB available of {:.2} GiB ({}), swap {:.2}/{:.2} GiB free, can swap out {:.2} GiB",
        gib(m.available),
        gib(m.total),
        m.source,
        gib(m.swap_free),
        gib(m.swap_total),
        gib(m.can_swap)
    );
    let _ = writeln!(
        s,
        "RAM read: {:.2} GB/s; KV append: {:.2} µs + {:.2} GB/s",
        p.ram_read_gbps, p.kv_append.fixed_us, p.kv_append.gbps
    );
    let _ = writeln!(
        s,
        "disk: sequential {:.2} GB/s, random {:.3} GB/s ({})",
        p.disk.seq_gbps, p.disk.rnd_gbps, p.disk.method
    );
    let _ = writeln!(s, "CPU matvec GFLOPS:");
    for t in &p.cpu {
        let _ = writeln!(s, "  {:>8} × {:>2} threads  {:9.2}", t.format, t.threads, t.gflops);
    }
    match &p.gpu {
        None => {
            let _ = writeln!(s, "GPU: none");
        }
        Some(g) => {
            let _ = writeln!(
                s,
                "GPU: {} ({}{}), {:.2}/{:.2} GiB free, read {:.1} GB/s",
                g.name,
                g.backend,
                if g.uma { ", unified memory" } else { "" },
                gib(g.mem_free),
                gib(g.mem_total),
                g.read_gbps
            );
            let _ =
                writeln!(s, "  hidden state in {:.3} ms, out {:.3} ms; GPU matvec GFLOPS:", g.upload_ms, g.download_ms);
            for t in &g.flops {
                let _ = writeln!(s, "  {:>8}  {:9.2}", t.format, t.gflops);
            }
        }
    }
    if let Some(l) = &p.link {
        let _ = writeln!(s, "link to next: RTT {:.2} ms, {:.3} GB/s", l.rtt_ms, l.gbps);
    }
    s
}

/// A memory size such as `6GiB`, `512 MiB`, `8G` or a plain byte count (`gpu_memory`).
pub fn parse_memory_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim());
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(Error::msg(format!("memory size `{text}`: unknown unit `{unit}` (use e.g. 6GiB or 512MiB)"))),
    };
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v * (scale as f64) < 1e18 => Ok((v * scale as f64) as u64),
        _ => Err(Error::msg(format!("memory size `{text}`: expected a positive number with a unit, e.g. 6GiB"))),
    }
}

/// Every `*.json` in `dir`, sorted by file name.
pub fn read_dir(dir: &str) -> Result<Vec<DeviceProfile>> {
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

#[cfg(test)]
mod tests {
    #[test]
    fn memory_sizes_parse_with_units() {
        assert_eq!(super::parse_memory_size("6GiB").unwrap(), 6 << 30);
        assert_eq!(super::parse_memory_size(" 512 MiB").unwrap(), 512 << 20);
        assert_eq!(super::parse_memory_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(super::parse_memory_size("4096").unwrap(), 4096);
        for bad in ["", "GiB", "6 parsecs", "-1GiB", "0"] {
            assert!(super::parse_memory_size(bad).is_err(), "{bad}");
        }
    }
}
