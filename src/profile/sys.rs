//! Reading the running host for a profile: memory (cgroup-aware, by [`crate::sys`]'s rule),
//! CPU, OS, name. Thin glue over the pure parsers in the parent module and [`crate::sys`].

use super::{Memory, Os};

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn memory(os: Os) -> Memory {
    if matches!(os, Os::Linux | Os::Android) {
        let mut m = super::memory_from(&read("/proc/meminfo"), crate::sys::cgroup().as_ref());
        if os == Os::Android {
            // Anonymous memory of other apps the OS may swap out for us (upstream: active +
            // inactive anon, less a reserve). A coarse system-wide estimate.
            let mi = super::parse_meminfo(&read("/proc/meminfo"));
            let anon = mi.get("Active(anon)").copied().unwrap_or(0) + mi.get("Inactive(anon)").copied().unwrap_or(0);
            m.can_swap = anon.saturating_sub(128 << 20).min(m.swap_free);
        }
        return m;
    }
    fallback_memory()
}

/// macOS and Windows: the OS's own call ([`crate::sys::os_memory`]).
fn fallback_memory() -> Memory {
    match crate::sys::os_memory() {
        Some(m) => Memory {
            total: m.total,
            available: m.available,
            swap_total: m.swap_total,
            swap_free: m.swap_free,
            can_swap: 0,
            source: m.source.into(),
        },
        None => Memory { source: "unknown".into(), ..Memory::default() },
    }
}

pub fn os() -> Os {
    super::detect_os(std::env::consts::OS, &|k| std::env::var(k).ok(), &|p| std::path::Path::new(p).exists())
}

/// Usable cores: the affinity mask on Linux/Android, else the OS's count.
pub fn cores() -> u32 {
    crate::sys::logical_cpus() as u32
}

pub fn cpu_model() -> String {
    let (model, _) = super::parse_cpuinfo(&read("/proc/cpuinfo"));
    if model == "unknown CPU" { crate::sys::os_cpu_model().unwrap_or(model) } else { model }
}

pub fn hostname() -> String {
    crate::sys::hostname().unwrap_or_else(|| "device".into())
}
