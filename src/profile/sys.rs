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
    crate::sys::logical_cpus() as u32
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
