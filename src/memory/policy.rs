//! How far ahead a device prefetches, and whether it drops a window after using it: a pure
//! function of its windows' sizes and its memory budget (prima-reference §3.5–3.6).
//!
//! A device whose share fits (case M4) only needs the first token's reads hidden. A device that
//! streams from disk (M1/M3) keeps as many windows resident as its budget allows (every resident
//! byte is a byte not re-read per token) and streams the others through what is left: it drops
//! each streamed window right after use and prefetches the next ones, as far as the room left. Under plain LRU a cyclic pass over more than the budget
//! misses on every page, and prefetched-but-unused pages are the first eviction candidates, so
//! prefetching too far evicts the window about to run (the prefetch-release conflict).

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
    /// Windows `0..keep` stay resident; the others are streamed (re-read every token).
    pub keep: usize,
    /// Prefetch this many upcoming streamed windows (or, when nothing streams, the next window).
    pub depth: usize,
    /// Prefetch at most this many bytes of each (the room left beside the resident windows).
    pub cap: u64,
    /// Touch the prefetched pages from a background thread (reads done before compute).
    pub touch: bool,
    /// Drop streamed windows from the page cache right after use.
    pub release_done: bool,
}

/// The policy for windows of `window_bytes` (in run order) on a device with `budget` bytes for
/// weights.
pub fn plan(window_bytes: &[u64], budget: u64, mode: PrefetchMode) -> Policy {
    let k = window_bytes.len();
    let total: u64 = window_bytes.iter().sum();
    let streams = total > budget;
    if k == 0 || mode == PrefetchMode::Off {
        return Policy { streams, keep: k, ..Policy::default() };
    }
    if !streams {
        // Everything stays resident after the first token; advice warms the first one.
        let touch = matches!(mode, PrefetchMode::Touch);
        return Policy { streams, keep: k, depth: 1, cap: u64::MAX, touch, release_done: false };
    }
    // Streamed windows in flight at once: the one running or just read, plus d - 1 ahead.
    let inflight = |keep: usize, d: usize| {
        let mut s: Vec<u64> = window_bytes[keep..].to_vec();
        s.sort_unstable_by(|a, b| b.cmp(a));
        s.iter().take(d).sum::<u64>()
    };
    let resident = |keep: usize| window_bytes[..keep].iter().sum::<u64>();
    // Most resident windows that leave some room to stream the rest through.
    let keep = (0..k).rev().find(|&r| resident(r) + MIN_ROOM <= budget).unwrap_or(0);
    let room = budget.saturating_sub(resident(keep));
    if room < MIN_ROOM || k == 1 {
        // No room, or the only window is the one just used: the OS alone.
        return Policy { streams, keep, ..Policy::default() };
    }
    let depth = (1..=k - keep).take_while(|&d| inflight(keep, d) <= room).last().unwrap_or(1);
    let cap = if inflight(keep, 1) <= room { u64::MAX } else { room };
    let touch = !matches!(mode, PrefetchMode::Advise);
    Policy { streams, keep, depth, cap, touch, release_done: true }
}

/// Less room than this beside the resident windows is not worth prefetching into.
const MIN_ROOM: u64 = 8 << 20;

/// Windows to prefetch after window `i` of `k`, with how many windows later each runs: the next
/// `depth` streamed windows (`keep..k`), or the next window when none streams.
pub fn ahead(i: usize, k: usize, keep: usize, depth: usize) -> Vec<(usize, usize)> {
    let streamed = |j: usize| j >= keep || keep >= k;
    (1..=k).map(|d| ((i + d) % k, d)).filter(|&(j, _)| streamed(j)).take(depth).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;

    #[test]
    fn fitting_share_prefetches_one_window_and_keeps_everything() {
        let p = plan(&[100 * M; 4], 1000 * M, PrefetchMode::Auto);
        assert_eq!(p, Policy { streams: false, keep: 4, depth: 1, cap: u64::MAX, touch: false, release_done: false });
        assert!(plan(&[100 * M; 4], 1000 * M, PrefetchMode::Touch).touch);
    }

    #[test]
    fn streaming_share_keeps_most_and_streams_the_rest_through_the_room_left() {
        // 4 windows of 100 MiB, 250 MiB budget: two resident, 50 MiB of room for the others.
        let p = plan(&[100 * M; 4], 250 * M, PrefetchMode::Auto);
        assert_eq!(p, Policy { streams: true, keep: 2, depth: 1, cap: 50 * M, touch: true, release_done: true });
        let p = plan(&[100 * M; 4], 210 * M, PrefetchMode::Auto);
        assert_eq!((p.keep, p.depth, p.cap), (2, 1, 10 * M));
        let p = plan(&[100 * M; 4], 320 * M, PrefetchMode::Auto);
        assert_eq!((p.keep, p.depth, p.cap), (3, 1, 20 * M));
        // Two windows, the first resident: the second streams through what is left.
        let p = plan(&[100 * M; 2], 150 * M, PrefetchMode::Auto);
        assert_eq!((p.keep, p.depth, p.cap), (1, 1, 50 * M));
        // Room for a whole streamed window.
        let p = plan(&[100 * M, 10 * M, 10 * M, 10 * M], 125 * M, PrefetchMode::Auto);
        assert_eq!((p.keep, p.depth, p.cap), (2, 1, u64::MAX));
        assert!(!plan(&[100 * M; 4], 250 * M, PrefetchMode::Advise).touch);
    }

    #[test]
    fn no_prefetch_without_room() {
        let p = plan(&[300 * M; 4], 4 * M, PrefetchMode::Auto);
        assert_eq!((p.keep, p.depth), (0, 0));
        // k = 1 and streaming: the only window is the one just used.
        let p = plan(&[300 * M], 250 * M, PrefetchMode::Auto);
        assert_eq!((p.depth, p.release_done), (0, false));
    }

    #[test]
    fn off_does_nothing() {
        let p = plan(&[100 * M; 4], 250 * M, PrefetchMode::Off);
        assert_eq!(p, Policy { streams: true, keep: 4, ..Policy::default() });
    }

    #[test]
    fn ahead_is_cyclic_and_skips_resident_windows() {
        // Nothing streams: the next window.
        assert_eq!(ahead(3, 4, 4, 1), vec![(0, 1)]);
        assert_eq!(ahead(0, 1, 1, 1), vec![(0, 1)]);
        // Windows 0, 1 resident: after 3 comes 2 (three windows later).
        assert_eq!(ahead(3, 4, 2, 1), vec![(2, 3)]);
        assert_eq!(ahead(2, 4, 2, 2), vec![(3, 1), (2, 4)]);
        assert!(ahead(1, 4, 0, 0).is_empty());
    }

    #[test]
    fn modes_parse() {
        assert_eq!(PrefetchMode::parse("OFF").unwrap(), PrefetchMode::Off);
        assert_eq!(PrefetchMode::parse("touch").unwrap(), PrefetchMode::Touch);
        assert!(PrefetchMode::parse("sometimes").is_err());
    }
}
