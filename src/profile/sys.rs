//! Reading the running host: memory (cgroup-aware), CPU, OS, name. Thin glue over the pure
//! parsers in the parent module.

use super::{Cgroup, Memory, Os};

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// This process's memory cgroup, if any (v2 unified hierarchy first, then v1).
pub fn cgroup() -> Option<Cgroup> {
    let (v2, v1) = super::parse_proc_cgroup(&read("/proc/self/cgroup"));
    let root = "/sys/fs/cgroup";
    if let Some(p) = v2 {
        // Pure v2 only (hybrid systems mount v2 without the memory controller).
        for dir in [format!("{root}{p}"), root.to_string()] {
            if std::path::Path::new(&format!("{dir}/memory.max")).exists() {
                let f = |n: &str| read(&format!("{dir}/{n}"));
                return Some(super::parse_cgroup_v2(
                    &f("memory.max"),
                    &f("memory.current"),
                    &f("memory.stat"),
                    &f("memory.swap.max"),
                ));
            }
        }
    }
    if let Some(p) = v1 {
        for dir in [format!("{root}/memory{p}"), format!("{root}/memory")] {
            if std::path::Path::new(&format!("{dir}/memory.limit_in_bytes")).exists() {
                let f = |n: &str| read(&format!("{dir}/{n}"));
                return Some(super::parse_cgroup_v1(
                    &f("memory.limit_in_bytes"),
                    &f("memory.usage_in_bytes"),
                    &f("memory.stat"),
                    &f("memory.memsw.limit_in_bytes"),
                ));
            }
        }
    }
    None
}

pub fn memory(os: Os) -> Memory {
    if matches!(os, Os::Linux | Os::Android) {
        let mut m = super::memory_from(&read("/proc/meminfo"), cgroup().as_ref());
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

#[cfg(target_os = "macos")]
fn fallback_memory() -> Memory {
    // Without Mach bindings: total from sysconf, available estimated as half of it.
    // SAFETY: sysconf only reads a system constant.
    let (page, pages) =
        unsafe { (nix::libc::sysconf(nix::libc::_SC_PAGESIZE), nix::libc::sysconf(nix::libc::_SC_PHYS_PAGES)) };
    let total = page.max(0) as u64 * pages.max(0) as u64;
    Memory { total, available: total / 2, source: "sysconf (estimate: half of RAM)".into(), ..Memory::default() }
}

#[cfg(not(target_os = "macos"))]
fn fallback_memory() -> Memory {
    Memory { source: "unknown".into(), ..Memory::default() }
}

pub fn os() -> Os {
    super::detect_os(std::env::consts::OS, &|k| std::env::var(k).ok(), &|p| std::path::Path::new(p).exists())
}

/// Usable cores: the affinity mask on Linux/Android, else the OS's count.
pub fn cores() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}

pub fn cpu_model() -> String {
    let (model, _) = super::parse_cpuinfo(&read("/proc/cpuinfo"));
    model
}

pub fn hostname() -> String {
    // (nix's `hostname` feature is not enabled; the kernel exposes it as a file on Linux/Android.)
    let from_file = read("/proc/sys/kernel/hostname").trim().to_string();
    if !from_file.is_empty() {
        return from_file;
    }
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "device".into())
}
