//! Keeping weights in the page cache instead of the process: advice to the kernel about which
//! ranges of the mapped model are needed next or no longer, and memory-pressure readings.

mod advice;
pub mod pager;
pub mod policy;
pub mod prefetch;
pub mod pressure;

pub use pager::Pager;
pub use policy::PrefetchMode;
pub use pressure::PressureMonitor;

use std::ops::Range;

use crate::gguf::GgufFile;

pub fn page_size() -> usize {
    crate::sys::page_size()
}

/// Widen a byte range to whole pages inside `len`.
fn page_align(r: &Range<usize>, len: usize) -> Range<usize> {
    let p = page_size();
    let start = r.start / p * p;
    let end = r.end.div_ceil(p).saturating_mul(p).min(len);
    start..end
}

/// Ask the kernel to start reading these ranges of the model (asynchronous, returns at once).
pub fn will_need(f: &GgufFile, ranges: &[Range<usize>]) {
    if let Some(map) = f.mmap() {
        for r in ranges {
            advice::will_need(map, &f.path, page_align(r, map.len()));
        }
    }
}

/// Drop these ranges from this process and from the page cache (other devices' layers, or a
/// window that will not be needed again before everything else has been read).
pub fn release(f: &GgufFile, ranges: &[Range<usize>]) {
    let Some(map) = f.mmap() else { return };
    for r in ranges {
        advice::leave_process(map, page_align(r, map.len()));
    }
    // Whole pages: the kernel keeps partial pages at the ends of an unaligned range, and
    // keeps a large folio (the page cache reads ahead in folios of up to megabytes) that a
    // range covers only in part, so neighbouring matrices are dropped as one span.
    let spans: Vec<Range<usize>> = merge_close(ranges, MERGE_GAP).iter().map(|r| page_align(r, map.len())).collect();
    advice::leave_page_cache(&f.path, &spans);
}

/// Ranges closer than this are dropped from the page cache as one: what lies between two
/// matrices of a layer is a norm vector (copied at load, 16–32 KiB).
const MERGE_GAP: usize = 64 << 10;

/// `ranges` sorted, with those less than `gap` bytes apart merged.
pub fn merge_close(ranges: &[Range<usize>], gap: usize) -> Vec<Range<usize>> {
    let mut v: Vec<Range<usize>> = ranges.iter().filter(|r| !r.is_empty()).cloned().collect();
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(gap) => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// A reading of system memory, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MemorySnapshot {
    pub total: u64,
    /// Free memory not counting reclaimable page cache (MemFree + Buffers... see `parse`).
    pub available: u64,
    pub page_cache: u64,
    pub swap_used: u64,
}

impl MemorySnapshot {
    /// From /proc/meminfo, or the OS's own call where there is none ([`crate::sys::os_memory`]).
    pub fn now() -> Option<MemorySnapshot> {
        if let Some(m) = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| Self::parse(&t)) {
            return Some(m);
        }
        crate::sys::os_memory().map(|m| MemorySnapshot {
            total: m.total,
            available: m.available,
            page_cache: m.page_cache,
            swap_used: m.swap_total.saturating_sub(m.swap_free),
        })
    }

    /// From /proc/meminfo text. `available` is MemAvailable: the kernel's estimate of memory
    /// that can be had without swapping, page cache counted as available.
    pub fn parse(meminfo: &str) -> Option<MemorySnapshot> {
        let field = |name: &str| -> Option<u64> {
            meminfo.lines().find_map(|l| {
                let rest = l.strip_prefix(name)?.strip_prefix(':')?;
                rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|kb| kb * 1024)
            })
        };
        Some(MemorySnapshot {
            total: field("MemTotal")?,
            available: field("MemAvailable")?,
            page_cache: field("Cached").unwrap_or(0),
            swap_used: field("SwapTotal").unwrap_or(0).saturating_sub(field("SwapFree").unwrap_or(0)),
        })
    }
}

/// The seed's metric: the drop in available memory (page cache excluded, since the kernel can
/// reclaim it at will) between two readings, as a fraction of the total, plus any swap growth.
pub fn memory_pressure(before: &MemorySnapshot, during: &MemorySnapshot) -> f64 {
    let drop = before.available.saturating_sub(during.available) + during.swap_used.saturating_sub(before.swap_used);
    drop as f64 / before.total.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_ranges_merge() {
        let r = merge_close(&[300..400, 0..100, 150..200, 100..120, 5000..6000, 7..7], 64);
        assert_eq!(r, vec![0..200, 300..400, 5000..6000]);
        assert_eq!(merge_close(&[0..10, 20..30], 5), vec![0..10, 20..30]);
    }
}
