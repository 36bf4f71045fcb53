//! How far ahead a device prefetches, and whether it drops a window after using it: a pure
//! function of its windows' sizes and its memory budget (prima-reference §3.5–3.6).
//!
//! A device whose share fits (case M4) only needs the first token's reads hidden. A device that
//! streams from disk (M1/M3) must not prefetch more than its budget holds: prefetched pages that
//! have not been used yet are the kernel's first eviction candidates, so prefetching too far
//! evicts the very window about to run (the prefetch-release conflict). It also drops each
//! window right after use, so the kernel makes room from the window needed last.

use crate::error::{Error, Result};

/// The `--prefetch` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PrefetchMode {
    /// Per memory case, the measured better policy (see [`plan`]).
    #[default]
    Auto,
    /// No advice, no touching, no release (the OS alone decides).
    Off,
    /// WILLNEED advice on the next windows.
    Advise,
    /// Advice plus a background thread touching every page.
    Touch,
}

impl PrefetchMode {
    pub fn parse(s: &str) -> Result<PrefetchMode> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(PrefetchMode::Auto),
            "off" | "none" | "0" => Ok(PrefetchMode::Off),
            "advise" | "willneed" => Ok(PrefetchMode::Advise),
            "touch" | "force" => Ok(PrefetchMode::Touch),
            _ => Err(Error::msg(format!("unknown prefetch mode `{s}` (auto, off, advise, touch)"))),
        }
    }
}

/// What a device does after finishing window `i` of its `k` windows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The device's windows do not all fit in its budget: it re-reads them every token.
    pub streams: bool,
    /// Prefetch windows i+1 ..= i+depth (cyclic; 0 = none).
    pub depth: usize,
    /// Touch the prefetched pages from a background thread (reads done before compute).
    pub touch: bool,
    /// Drop window i from the page cache right after use.
    pub release_done: bool,
}

/// The policy for windows of `window_bytes` (in run order) on a device with `budget` bytes for
/// weights.
pub fn plan(window_bytes: &[u64], budget: u64, mode: PrefetchMode) -> Policy {
    let k = window_bytes.len();
    let total: u64 = window_bytes.iter().sum();
    let streams = total > budget;
    if k == 0 || mode == PrefetchMode::Off {
        return Policy { streams, ..Policy::default() };
    }
    if !streams {
        // Everything stays resident after the first token; advice warms the first one.
        let touch = matches!(mode, PrefetchMode::Touch);
        return Policy { streams, depth: 1, touch, release_done: false };
    }
    // Deepest d such that any d consecutive upcoming windows fit together. Never the whole
    // cycle: the window after those is the one just used.
    let fits = |d: usize| (0..k).all(|i| (1..=d).map(|j| window_bytes[(i + j) % k]).sum::<u64>() <= budget);
    let depth = (1..k).take_while(|&d| fits(d)).last().unwrap_or(0);
    if depth == 0 {
        // One window exceeds the budget (or k = 1): prefetching would evict its own start.
        return Policy { streams, ..Policy::default() };
    }
    let touch = !matches!(mode, PrefetchMode::Advise);
    Policy { streams, depth, touch, release_done: true }
}

/// Indices of the windows to prefetch after window `i` of `k`.
pub fn ahead(i: usize, k: usize, depth: usize) -> impl Iterator<Item = usize> {
    (1..=depth.min(k)).map(move |j| (i + j) % k.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;

    #[test]
    fn fitting_share_prefetches_one_window_and_keeps_everything() {
        let p = plan(&[100 * M; 4], 1000 * M, PrefetchMode::Auto);
        assert_eq!(p, Policy { streams: false, depth: 1, touch: false, release_done: false });
        assert!(plan(&[100 * M; 4], 1000 * M, PrefetchMode::Touch).touch);
    }

    #[test]
    fn streaming_share_prefetches_only_what_fits() {
        // 4 windows of 100 MiB, 250 MiB budget: two upcoming windows fit, three do not.
        let p = plan(&[100 * M; 4], 250 * M, PrefetchMode::Auto);
        assert_eq!(p, Policy { streams: true, depth: 2, touch: true, release_done: true });
        // Uneven windows: the largest pair decides.
        let p = plan(&[50 * M, 150 * M, 50 * M, 50 * M], 180 * M, PrefetchMode::Auto);
        assert_eq!(p.depth, 1);
        assert!(!plan(&[100 * M; 4], 250 * M, PrefetchMode::Advise).touch);
    }

    #[test]
    fn never_prefetches_a_window_that_cannot_fit_or_the_whole_cycle() {
        assert_eq!(plan(&[300 * M; 4], 250 * M, PrefetchMode::Auto).depth, 0);
        // k = 1 and streaming: the only window is the one just used.
        assert_eq!(plan(&[300 * M], 250 * M, PrefetchMode::Auto).depth, 0);
        // Budget for 3 of 4 windows but the share does not fit: at most k - 1 ahead.
        assert_eq!(plan(&[100 * M; 4], 399 * M, PrefetchMode::Auto).depth, 3);
    }

    #[test]
    fn off_does_nothing() {
        let p = plan(&[100 * M; 4], 250 * M, PrefetchMode::Off);
        assert_eq!(p, Policy { streams: true, ..Policy::default() });
    }

    #[test]
    fn ahead_is_cyclic() {
        assert_eq!(ahead(2, 4, 2).collect::<Vec<_>>(), vec![3, 0]);
        assert_eq!(ahead(0, 1, 1).collect::<Vec<_>>(), vec![0]);
        assert_eq!(ahead(1, 4, 0).count(), 0);
    }

    #[test]
    fn modes_parse() {
        assert_eq!(PrefetchMode::parse("OFF").unwrap(), PrefetchMode::Off);
        assert_eq!(PrefetchMode::parse("touch").unwrap(), PrefetchMode::Touch);
        assert!(PrefetchMode::parse("sometimes").is_err());
    }
}
