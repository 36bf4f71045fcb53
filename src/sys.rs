//! Small facts about the host, read without external tools.

/// Memory available to this process in bytes: MemAvailable, capped by a cgroup limit.
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let avail = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())?
        * 1024;
    let limit = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|s| s.trim().parse::<u64>().ok())
        .min();
    Some(limit.map_or(avail, |l| l.min(avail)))
}

/// Hand freed heap pages back to the OS. glibc keeps small freed chunks mapped, so a parse that
/// allocated and freed tens of MB (a GGUF vocabulary) would stay resident as memory pressure.
/// A no-op where the C library has no `malloc_trim`.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
