//! Memory pressure as a device sees it, sampled on a background thread while the ring runs.
//!
//! Inside a memory cgroup with a limit (a container, or an emulated device of
//! `bench/homecluster.sh`) the limit is the device's RAM, so readings come from the cgroup:
//! total = limit, available = limit − non-file usage. Elsewhere from /proc/meminfo.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{MemorySnapshot, memory_pressure};

/// Where this process's memory cgroup lives, if it has a limit below the machine's RAM.
#[derive(Clone, Debug, PartialEq)]
pub enum CgroupMem {
    V1(PathBuf),
    V2(PathBuf),
}

impl CgroupMem {
    /// This process's memory cgroup ([`crate::sys::memory_cgroup_dir`]); None outside a
    /// cgroup whose limit is below the machine's RAM.
    pub fn current() -> Option<CgroupMem> {
        let (dir, version) = crate::sys::memory_cgroup_dir()?;
        let c = if version == 1 { CgroupMem::V1(dir) } else { CgroupMem::V2(dir) };
        let host = MemorySnapshot::now()?.total;
        c.read().limit.filter(|&l| l < host).map(|_| c)
    }

    fn read(&self) -> crate::sys::Cgroup {
        match self {
            CgroupMem::V1(d) => crate::sys::read_cgroup(d, 1),
            CgroupMem::V2(d) => crate::sys::read_cgroup(d, 2),
        }
    }

    pub fn snapshot(&self) -> Option<MemorySnapshot> {
        let dir = match self {
            CgroupMem::V1(d) | CgroupMem::V2(d) => d,
        };
        let stat = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
        snapshot_from_cgroup(&self.read(), &stat)
    }
}

/// Page cache (file pages) is reclaimable, so it counts as available (the rule of
/// [`crate::sys::Cgroup::available`], as in MemAvailable).
fn snapshot_from_cgroup(g: &crate::sys::Cgroup, stat: &str) -> Option<MemorySnapshot> {
    let swap = if g.version == 1 {
        stat.lines().find_map(|l| l.strip_prefix("total_swap ")?.trim().parse::<u64>().ok()).unwrap_or(0)
    } else {
        0
    };
    Some(MemorySnapshot { total: g.limit?, available: g.available()?, page_cache: g.file, swap_used: swap })
}

/// This process's view of memory: its cgroup's when limited, else the machine's.
pub fn snapshot() -> Option<MemorySnapshot> {
    match CgroupMem::current() {
        Some(c) => c.snapshot(),
        None => MemorySnapshot::now(),
    }
}

/// Samples [`snapshot`] every `period` and keeps the peak pressure against the first reading.
pub struct PressureMonitor {
    pub baseline: Option<MemorySnapshot>,
    peak_ppm: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PressureMonitor {
    pub fn start() -> PressureMonitor {
        Self::with_period(Duration::from_millis(50))
    }

    pub fn with_period(period: Duration) -> PressureMonitor {
        let cg = CgroupMem::current();
        Self::with_reader(period, move || match &cg {
            Some(c) => c.snapshot(),
            None => MemorySnapshot::now(),
        })
    }

    /// Sample `read` every `period` (the first reading is the baseline).
    pub fn with_reader(
        period: Duration,
        read: impl Fn() -> Option<MemorySnapshot> + Send + 'static,
    ) -> PressureMonitor {
        let baseline = read();
        let peak_ppm = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = baseline.map(|base| {
            let (peak, stop) = (peak_ppm.clone(), stop.clone());
            std::thread::Builder::new()
                .name("prima-mem-monitor".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(now) = read() {
                            peak.fetch_max((memory_pressure(&base, &now) * 1e6) as u64, Ordering::Relaxed);
                        }
                        std::thread::sleep(period);
                    }
                })
                .expect("spawning the memory monitor")
        });
        PressureMonitor { baseline, peak_ppm, stop, thread }
    }

    /// Forget the peak so far, keeping the baseline: what was allocated since the baseline and
    /// is still held counts from the next sample on, a transient that is gone does not (the
    /// profile's RAM probe before the ring runs).
    pub fn reset_peak(&self) {
        self.peak_ppm.store(0, Ordering::Relaxed);
    }

    /// Highest pressure seen so far (fraction of total memory).
    pub fn peak(&self) -> f64 {
        self.peak_ppm.load(Ordering::Relaxed) as f64 / 1e6
    }
}

impl Drop for PressureMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_page_cache_counts_as_available() {
        let stat = "cache 700\nrss 200\ntotal_active_file 300\ntotal_inactive_file 400\ntotal_swap 0\n";
        let g = crate::sys::parse_cgroup_v1("1000", "900", stat, "");
        let s = snapshot_from_cgroup(&g, stat).unwrap();
        assert_eq!((s.total, s.available, s.page_cache), (1000, 800, 700));
        let stat = "anon 200\nactive_file 300\ninactive_file 400\n";
        let s = snapshot_from_cgroup(&crate::sys::parse_cgroup_v2("1000", "900", stat, ""), stat).unwrap();
        assert_eq!(s.available, 800);
    }

    #[test]
    fn monitor_sees_an_allocation() {
        // The reading is the whole machine's: another process (or test) freeing memory while
        // this one allocates can hide the drop, so a fresh monitor tries again, up to 5 times.
        let mut peaks = Vec::new();
        for _ in 0..5 {
            let m = PressureMonitor::with_period(Duration::from_millis(5));
            let total = m.baseline.map(|b| b.total).unwrap_or(0);
            if total == 0 {
                return;
            }
            // 2% of memory, touched, held for a few samples.
            let v = vec![1u8; (total / 50) as usize];
            std::thread::sleep(Duration::from_millis(100));
            std::hint::black_box(&v);
            if m.peak() > 0.005 {
                return;
            }
            peaks.push(m.peak());
        }
        panic!("no attempt saw a 2% allocation: peaks {peaks:?}");
    }

    #[test]
    fn reset_peak_forgets_a_freed_transient() {
        use std::sync::atomic::AtomicU64;
        // A fake device of 1000 bytes: 900 available at the baseline.
        let avail = Arc::new(AtomicU64::new(900));
        let a = avail.clone();
        let read =
            move || Some(MemorySnapshot { total: 1000, available: a.load(Ordering::Relaxed), ..Default::default() });
        let m = PressureMonitor::with_reader(Duration::from_millis(1), read);
        let seen = |want: f64| {
            (0..2000).any(|_| {
                std::thread::sleep(Duration::from_millis(1));
                (m.peak() - want).abs() < 1e-9
            })
        };
        // A transient of 300 (the profile's probe), freed; then 50 held (KV cache).
        avail.store(600, Ordering::Relaxed);
        assert!(seen(0.3), "peak {}", m.peak());
        avail.store(850, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        assert!((m.peak() - 0.3).abs() < 1e-9, "the peak stays until reset");
        m.reset_peak();
        assert!(seen(0.05), "after reset: {}", m.peak());
        std::thread::sleep(Duration::from_millis(20));
        assert!((m.peak() - 0.05).abs() < 1e-9, "after reset: {}", m.peak());
    }
}
