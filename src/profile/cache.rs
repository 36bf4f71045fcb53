//! A device's profile, kept between runs: measuring takes seconds, so the head and every agent
//! keep their last profile in their cache directory, keyed by the build and by the host facts
//! the figures depend on (CPUs, quota, memory limit, disk limits, the disk itself). A change
//! of any of them, or `--reprofile`, measures again. Available memory changes from run to run
//! and is cheap to read: it is refreshed on every use.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{DeviceProfile, measure};
use crate::error::{Context, Result};

const PROFILE_FILE: &str = "profile.json";
const KEY_FILE: &str = "profile.key";

static REPROFILE: AtomicBool = AtomicBool::new(false);

/// Measure again on the next profile request in this process (`--reprofile`).
pub fn request_reprofile() {
    REPROFILE.store(true, Ordering::Relaxed);
}

/// Whether `--reprofile` was given in this process.
pub fn reprofile_requested() -> bool {
    REPROFILE.load(Ordering::Relaxed)
}

/// What a cached profile's figures depend on, besides the build: a change re-measures.
pub fn environment_key(disk_dir: &Path) -> String {
    let mem_total = super::parse_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default())
        .get("MemTotal")
        .copied()
        .unwrap_or(0);
    let limit = crate::sys::cgroup().and_then(|c| c.limit);
    #[cfg(unix)]
    let disk = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(disk_dir).map(|m| m.dev()).unwrap_or(0)
    };
    #[cfg(not(unix))]
    let disk = {
        let _ = disk_dir;
        0
    };
    format!(
        "cpus={} physical={:?} quota={:?} mem_total={mem_total} mem_limit={limit:?} disk_dev={disk} io=[{}]",
        crate::sys::logical_cpus(),
        crate::sys::parse_physical_cores(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()),
        crate::sys::cpu_quota(),
        crate::sys::io_limits(),
    )
}

/// This device's profile from `dir`, measured with `opt` when the build `build` or the
/// [`environment_key`] changed since it was kept, or when `fresh`. Returns whether it measured.
pub fn cached(dir: &Path, opt: &measure::Options, build: &str, fresh: bool) -> Result<(DeviceProfile, bool)> {
    let path = dir.join(PROFILE_FILE);
    let key_path = dir.join(KEY_FILE);
    // The key names the disk device holding the directory: it must exist before the key is
    // taken, or the first run keys "no device" and the next one measures again.
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::create_dir_all(&opt.disk_dir).with_context(|| format!("creating {}", opt.disk_dir.display()))?;
    let key = format!("build={build} {}", environment_key(&opt.disk_dir));
    if !fresh
        && std::fs::read_to_string(&key_path).is_ok_and(|s| s.trim() == key)
        && let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(mut p) = DeviceProfile::from_json(&text)
    {
        p.memory = super::sys::memory(p.os);
        return Ok((p, false));
    }
    let p = measure::measure(opt, &mut |line| eprintln!("profile: {line}"))?;
    std::fs::write(&path, p.to_json()).with_context(|| format!("writing {}", path.display()))?;
    std::fs::write(&key_path, key)?;
    Ok((p, true))
}
