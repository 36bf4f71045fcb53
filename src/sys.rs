//! Facts about the host, read without external tools, each with one rule for the whole crate:
//! which cgroup this process is in, how much memory is available, how many CPUs it may use,
//! and how many threads to run by default. The parsers are pure functions over the kernel's
//! text (unit-tested on samples); the readers glue them to the running host. Where there is no
//! /proc (macOS, Windows) the same facts come from the OS's own calls (`macos`, `windows`), and
//! the few file calls that differ by OS (positional I/O, owner-only files) have one helper here.

use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// cgroups

/// This process's cgroup paths from `/proc/self/cgroup` (paths relative to each hierarchy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupPaths {
    /// The v2 unified hierarchy's path (`0::/path`).
    pub unified: Option<String>,
    /// The v1 memory controller's path.
    pub memory: Option<String>,
    /// The v1 cpu controller's path (often mounted together with cpuacct).
    pub cpu: Option<String>,
    /// The v1 blkio controller's path.
    pub blkio: Option<String>,
}

pub fn parse_proc_cgroup(text: &str) -> CgroupPaths {
    let mut p = CgroupPaths::default();
    for l in text.lines() {
        let mut it = l.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (it.next(), it.next(), it.next()) else { continue };
        if ctrl.is_empty() {
            p.unified = Some(path.to_string());
        }
        for c in ctrl.split(',') {
            match c {
                "memory" => p.memory = Some(path.to_string()),
                "cpu" => p.cpu = Some(path.to_string()),
                "blkio" => p.blkio = Some(path.to_string()),
                _ => {}
            }
        }
    }
    p
}

/// The calling thread's cgroups (threads of one process share them unless moved one by one,
/// as cgroup v1 allows).
pub fn cgroup_paths() -> CgroupPaths {
    let mut text = read("/proc/thread-self/cgroup");
    if text.is_empty() {
        text = read("/proc/self/cgroup");
    }
    parse_proc_cgroup(&text)
}

/// Memory limits of a cgroup, as read from its files (bytes).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cgroup {
    pub version: u8,
    /// None = no limit ("max", or v1's near-2⁶³ sentinel).
    pub limit: Option<u64>,
    pub usage: u64,
    /// Page cache charged to the cgroup (active + inactive file pages): the kernel reclaims it
    /// before anything else, so it counts as available, as in MemAvailable.
    pub file: u64,
    pub swap_limit: Option<u64>,
}

impl Cgroup {
    /// The one rule for a limited cgroup: the limit less what is used by anything but page cache.
    pub fn available(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.usage.saturating_sub(self.file)))
    }
}

fn parse_limit(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "max" {
        return None;
    }
    s.parse::<u64>().ok().filter(|&v| v < (1u64 << 60))
}

fn stat_value(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// cgroup v2: `memory.max`, `memory.current`, `memory.stat`, `memory.swap.max` (may be empty).
pub fn parse_cgroup_v2(max: &str, current: &str, stat: &str, swap_max: &str) -> Cgroup {
    let split = stat_value(stat, "active_file").zip(stat_value(stat, "inactive_file")).map(|(a, i)| a + i);
    Cgroup {
        version: 2,
        limit: parse_limit(max),
        usage: current.trim().parse().unwrap_or(0),
        file: split.or_else(|| stat_value(stat, "file")).unwrap_or(0),
        swap_limit: parse_limit(swap_max),
    }
}

/// cgroup v1: `memory.limit_in_bytes`, `memory.usage_in_bytes`, `memory.stat`,
/// `memory.memsw.limit_in_bytes` (may be empty). `hierarchical_memory_limit` in the stat file
/// (the tightest ancestor limit) wins over the group's own limit.
pub fn parse_cgroup_v1(limit: &str, usage: &str, stat: &str, memsw_limit: &str) -> Cgroup {
    let own = parse_limit(limit);
    let hier = stat_value(stat, "hierarchical_memory_limit").filter(|&v| v < (1u64 << 60));
    let limit = match (own, hier) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let split = stat_value(stat, "total_active_file").zip(stat_value(stat, "total_inactive_file")).map(|(a, i)| a + i);
    let file = split.or_else(|| stat_value(stat, "total_cache")).or_else(|| stat_value(stat, "cache")).unwrap_or(0);
    let memsw =
        parse_limit(memsw_limit).or_else(|| stat_value(stat, "hierarchical_memsw_limit").filter(|&v| v < (1u64 << 60)));
    Cgroup {
        version: 1,
        limit,
        usage: usage.trim().parse().unwrap_or(0),
        file,
        swap_limit: match (memsw, limit) {
            (Some(sw), Some(l)) => Some(sw.saturating_sub(l)),
            _ => None,
        },
    }
}

/// The directory of this process's memory cgroup and its version (v2 first, then v1).
pub fn memory_cgroup_dir() -> Option<(PathBuf, u8)> {
    let p = cgroup_paths();
    if let Some(u) = &p.unified {
        // Pure v2 only (hybrid systems mount v2 without the memory controller).
        for dir in [Path::new(CGROUP_ROOT).join(u.trim_start_matches('/')), PathBuf::from(CGROUP_ROOT)] {
            if dir.join("memory.max").exists() {
                return Some((dir, 2));
            }
        }
    }
    if let Some(m) = &p.memory {
        let base = Path::new(CGROUP_ROOT).join("memory");
        for dir in [base.join(m.trim_start_matches('/')), base] {
            if dir.join("memory.limit_in_bytes").exists() {
                return Some((dir, 1));
            }
        }
    }
    None
}

/// Read a memory cgroup's files.
pub fn read_cgroup(dir: &Path, version: u8) -> Cgroup {
    let f = |n: &str| read(dir.join(n));
    if version == 2 {
        parse_cgroup_v2(&f("memory.max"), &f("memory.current"), &f("memory.stat"), &f("memory.swap.max"))
    } else {
        parse_cgroup_v1(
            &f("memory.limit_in_bytes"),
            &f("memory.usage_in_bytes"),
            &f("memory.stat"),
            &f("memory.memsw.limit_in_bytes"),
        )
    }
}

/// This process's memory cgroup, if any.
pub fn cgroup() -> Option<Cgroup> {
    memory_cgroup_dir().map(|(d, v)| read_cgroup(&d, v))
}

// ---------------------------------------------------------------------------------------------
// Memory

/// `MemAvailable` from `/proc/meminfo` text, bytes.
pub fn parse_mem_available(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The one rule for available memory: the kernel's MemAvailable (page cache counted as
/// available), capped by the cgroup's [`Cgroup::available`] when it has a limit.
pub fn available_from(mem_available: u64, cgroup: Option<&Cgroup>) -> u64 {
    cgroup.and_then(Cgroup::available).map_or(mem_available, |c| c.min(mem_available))
}

/// Memory available to this process now, bytes (see [`available_from`]); from [`os_memory`]
/// where there is no /proc/meminfo.
pub fn available_memory() -> Option<u64> {
    let Some(avail) = parse_mem_available(&read("/proc/meminfo")) else {
        return os_memory().map(|m| m.available);
    };
    Some(available_from(avail, cgroup().as_ref()))
}

#[cfg(target_os = "macos")]
mod macos;
#[cfg(windows)]
mod windows;

/// System memory by the OS's own call, where there is no /proc/meminfo, bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OsMemory {
    pub total: u64,
    /// What can be had without swapping, page cache counted as available (as MemAvailable).
    pub available: u64,
    pub page_cache: u64,
    pub swap_total: u64,
    pub swap_free: u64,
    /// The call the figures came from.
    pub source: &'static str,
}

/// macOS: hw.memsize and host_statistics64; Windows: GlobalMemoryStatusEx; None elsewhere
/// (Linux and Android read /proc/meminfo).
pub fn os_memory() -> Option<OsMemory> {
    #[cfg(target_os = "macos")]
    return macos::memory();
    #[cfg(windows)]
    return windows::memory();
    #[cfg(not(any(target_os = "macos", windows)))]
    None
}

/// The virtual memory page size.
pub fn page_size() -> usize {
    #[cfg(unix)]
    return nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map(|v| v as usize).unwrap_or(4096);
    #[cfg(windows)]
    return windows::page_size();
    #[cfg(not(any(unix, windows)))]
    4096
}

// ---------------------------------------------------------------------------------------------
// Files

/// Read all of `buf` at `offset` without moving a shared cursor (`pread`; `ReadFile` with an
/// offset on Windows).
pub fn read_exact_at(f: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    return std::os::unix::fs::FileExt::read_exact_at(f, buf, offset);
    #[cfg(windows)]
    {
        let (mut buf, mut offset) = (buf, offset);
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_read(f, buf, offset)? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => (buf, offset) = (&mut buf[n..], offset + n as u64),
            }
        }
        Ok(())
    }
}

/// Write all of `buf` at `offset` (`pwrite`; `WriteFile` with an offset on Windows).
pub fn write_all_at(f: &std::fs::File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    return std::os::unix::fs::FileExt::write_all_at(f, buf, offset);
    #[cfg(windows)]
    {
        let (mut buf, mut offset) = (buf, offset);
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_write(f, buf, offset)? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n => (buf, offset) = (&buf[n..], offset + n as u64),
            }
        }
        Ok(())
    }
}

/// Create files with these permission bits (0o600 for secrets, 0o700 for an executable being
/// received). On Windows a new file takes its directory's ACL (the user's profile is private to
/// the user), which has no mode bits to set.
pub fn with_mode(o: &mut std::fs::OpenOptions, mode: u32) -> &mut std::fs::OpenOptions {
    #[cfg(unix)]
    return std::os::unix::fs::OpenOptionsExt::mode(o, mode);
    #[cfg(not(unix))]
    {
        let _ = mode;
        o
    }
}

/// Make the renames in directory `dir` durable (fsync of the directory). Windows cannot open a
/// directory as a file (Access denied) and journals NTFS metadata itself: a no-op there.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    return std::fs::File::open(dir)?.sync_all();
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Make an installed file executable (a no-op on Windows, where the `.exe` name is what counts).
pub fn make_executable(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    return std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Names

/// This host's name: the kernel's on Linux/Android, `gethostname` on other Unix, the
/// `COMPUTERNAME` variable on Windows.
pub fn hostname() -> Option<String> {
    let from_file = read("/proc/sys/kernel/hostname").trim().to_string();
    if !from_file.is_empty() {
        return Some(from_file);
    }
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
        if unsafe { nix::libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
            if !name.is_empty() {
                return Some(name);
            }
        }
    }
    ["COMPUTERNAME", "HOSTNAME"].iter().find_map(|k| std::env::var(k).ok().filter(|h| !h.is_empty()))
}

/// The CPU's model name where /proc/cpuinfo has none: `machdep.cpu.brand_string` on macOS,
/// `PROCESSOR_IDENTIFIER` on Windows.
pub fn os_cpu_model() -> Option<String> {
    #[cfg(target_os = "macos")]
    return macos::sysctl_string(c"machdep.cpu.brand_string").filter(|s| !s.is_empty());
    #[cfg(windows)]
    return std::env::var("PROCESSOR_IDENTIFIER").ok().filter(|s| !s.is_empty());
    #[cfg(not(any(target_os = "macos", windows)))]
    None
}

// ---------------------------------------------------------------------------------------------
// CPUs

/// CPUs a quota allows: cgroup v2 `cpu.max` ("max 100000" or "50000 100000").
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut it = text.split_whitespace();
    let (q, p) = (it.next()?, it.next().unwrap_or("100000"));
    quota_cpus(q.parse().ok()?, p.parse().ok()?)
}

/// CPUs a quota allows: cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` (quota −1: none).
pub fn parse_cfs(quota_us: &str, period_us: &str) -> Option<f64> {
    quota_cpus(quota_us.trim().parse().ok()?, period_us.trim().parse().ok()?)
}

fn quota_cpus(quota: i64, period: i64) -> Option<f64> {
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

/// The CPU quota of this process's cgroup and every ancestor (the tightest wins), in CPUs;
/// None without a quota.
pub fn cpu_quota() -> Option<f64> {
    let p = cgroup_paths();
    let mut best: Option<f64> = None;
    let mut take = |q: Option<f64>| {
        if let Some(q) = q {
            best = Some(best.map_or(q, |b: f64| b.min(q)));
        }
    };
    let walk = |base: PathBuf, rel: &str, f: &mut dyn FnMut(&Path)| {
        let mut dir = base.join(rel.trim_start_matches('/'));
        loop {
            f(&dir);
            if dir == base || !dir.pop() {
                break;
            }
        }
    };
    if let Some(u) = &p.unified {
        walk(PathBuf::from(CGROUP_ROOT), u, &mut |d| take(parse_cpu_max(&read(d.join("cpu.max")))));
    }
    if let Some(c) = &p.cpu {
        for mount in ["cpu", "cpu,cpuacct", "cpuacct,cpu"] {
            let base = Path::new(CGROUP_ROOT).join(mount);
            if base.join("cpu.cfs_period_us").exists() {
                walk(base, c, &mut |d| {
                    take(parse_cfs(&read(d.join("cpu.cfs_quota_us")), &read(d.join("cpu.cfs_period_us"))))
                });
                break;
            }
        }
    }
    best
}

/// The disk read limits of this process's cgroup, verbatim (v1 `blkio.throttle.read_bps_device`,
/// v2 `io.max`): part of what a profile's disk figure depends on.
pub fn io_limits() -> String {
    let p = cgroup_paths();
    let mut out = String::new();
    if let Some(b) = &p.blkio {
        out += &read(
            Path::new(CGROUP_ROOT).join("blkio").join(b.trim_start_matches('/')).join("blkio.throttle.read_bps_device"),
        );
    }
    if let Some(u) = &p.unified {
        out += &read(Path::new(CGROUP_ROOT).join(u.trim_start_matches('/')).join("io.max"));
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Logical CPUs this process may run on (the affinity mask).
pub fn logical_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Distinct (physical id, core id) pairs in `/proc/cpuinfo` text; None where it has none.
pub fn parse_physical_cores(cpuinfo: &str) -> Option<usize> {
    let mut pairs = std::collections::HashSet::new();
    for block in cpuinfo.split("\n\n") {
        let field = |name: &str| {
            block.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().parse::<u32>().ok()).flatten()
            })
        };
        if let (Some(p), Some(c)) = (field("physical id"), field("core id")) {
            pairs.insert((p, c));
        }
    }
    (!pairs.is_empty()).then_some(pairs.len())
}

/// The one rule for thread counts, on one device and in the ring: physical cores (hyperthreads
/// rarely help matmul), at most the logical CPUs of the affinity mask, at most the CPU quota
/// rounded up (more threads than the quota only take turns), at least one.
pub fn threads_for(logical: usize, physical: Option<usize>, quota: Option<f64>) -> usize {
    let logical = logical.max(1);
    let mut t = physical.unwrap_or(logical).clamp(1, logical);
    if let Some(q) = quota {
        t = t.min(q.ceil().max(1.0) as usize);
    }
    t
}

/// Default worker threads for this host ([`threads_for`]).
pub fn default_threads() -> usize {
    threads_for(logical_cpus(), parse_physical_cores(&read("/proc/cpuinfo")), cpu_quota())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_names_each_controller() {
        let v1 = "9:name=systemd:/\n4:memory:/a/b\n2:cpu,cpuacct:/c\n0::/\n";
        let p = parse_proc_cgroup(v1);
        assert_eq!(
            (p.memory.as_deref(), p.cpu.as_deref(), p.unified.as_deref()),
            (Some("/a/b"), Some("/c"), Some("/"))
        );
        let p = parse_proc_cgroup("0::/user.slice/x\n");
        assert_eq!((p.unified.as_deref(), p.memory, p.cpu), (Some("/user.slice/x"), None, None));
    }

    #[test]
    fn quotas_and_threads() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(0.5));
        assert_eq!(parse_cfs("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs("150000\n", "100000\n"), Some(1.5));
        assert_eq!(threads_for(16, Some(8), None), 8);
        assert_eq!(threads_for(16, Some(8), Some(1.5)), 2);
        assert_eq!(threads_for(2, None, Some(0.5)), 1);
        assert_eq!(threads_for(4, Some(8), None), 4);
        let info = "processor : 0\nphysical id : 0\ncore id : 0\n\nprocessor : 1\nphysical id : 0\ncore id : 0\n\n\
                    processor : 2\nphysical id : 0\ncore id : 1\n";
        assert_eq!(parse_physical_cores(info), Some(2));
        assert_eq!(parse_physical_cores("processor : 0\n"), None);
    }

    #[test]
    fn page_cache_counts_as_available() {
        let g = parse_cgroup_v1("1000", "900", "total_cache 700\ntotal_active_file 300\ntotal_inactive_file 400\n", "");
        assert_eq!((g.available(), g.file), (Some(800), 700));
        assert_eq!(available_from(500, Some(&g)), 500);
        assert_eq!(available_from(5000, Some(&g)), 800);
        let g = parse_cgroup_v2("1000", "900", "anon 200\nfile 650\nactive_file 300\ninactive_file 400\n", "max");
        assert_eq!(g.available(), Some(800));
        assert_eq!(available_from(5000, Some(&parse_cgroup_v2("max", "9", "", ""))), 5000);
    }
}
