//! Which bytes of a device's windows stay resident, which are streamed, and what is prefetched
//! when: a pure function of the windows' sizes, their number k and the memory budget
//! (prima-reference §3.5–3.6).
//!
//! A device whose share fits (case M4) only needs the first token's reads hidden. A device whose
//! share S exceeds its budget B (M1/M3) keeps the first bytes of every window resident and
//! streams each window's tail: it drops the tail right after use and reads the next window's
//! tail while the other devices compute. One tail is in memory at a time, so the resident bytes
//! plus the room r for a tail must fit in B, and a tail larger than r is partly read while the
//! device computes. With k windows the tails hold S − B + r bytes, and the bytes read while the
//! device computes are S − B − (k − 1)·r: a room of (S − B)/(k − 1) hides the whole overflow
//! (if the disk reads it during the other devices' turns), at the price of reading k·r bytes per
//! token. Keeping whole windows instead (streaming the others through what is left) puts the
//! whole overflow on the critical path. Under plain LRU a cyclic pass over more than the budget
//! misses on every page, and prefetched-but-unused pages are the first eviction candidates, so
//! prefetching more than one tail would evict the window about to run (the prefetch-release
//! conflict).

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

/// What a device does with its windows' pages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The device's windows do not all fit in its budget: it re-reads part of them every token.
    pub streams: bool,
    /// Per window, how many of its first bytes stay resident; the rest (its tail) is streamed.
    pub keep: Vec<u64>,
    /// After a window, prefetch the next one (when nothing streams) or the next window's tail.
    pub prefetch: bool,
    /// Prefetch at most this many bytes of each tail (the room beside the resident bytes).
    pub cap: u64,
    /// Touch the prefetched pages from a background thread (reads done before compute).
    pub touch: bool,
    /// Drop each window's tail from the page cache right after use.
    pub release_done: bool,
}

impl Policy {
    /// Bytes of window `j` (of `window_bytes`) re-read every token.
    pub fn tail(&self, window_bytes: &[u64], j: usize) -> u64 {
        window_bytes[j].saturating_sub(self.keep.get(j).copied().unwrap_or(u64::MAX))
    }
}

/// The policy for windows of `window_bytes` (in run order) on a device with `budget` bytes for
/// weights, with the largest useful room (see [`max_room`]).
pub fn plan(window_bytes: &[u64], budget: u64, mode: PrefetchMode) -> Policy {
    plan_with_room(window_bytes, budget, mode, max_room(window_bytes, budget))
}

/// The room that hides the whole overflow behind the other devices' turns, (S − B)/(k − 1);
/// with one window there are no turns to hide behind, and a little slack keeps the tail from
/// evicting the rest.
pub fn max_room(window_bytes: &[u64], budget: u64) -> u64 {
    let k = window_bytes.len() as u64;
    let over = window_bytes.iter().sum::<u64>().saturating_sub(budget);
    let room = if k > 1 { (over / (k - 1)).max(MIN_ROOM) } else { MIN_ROOM };
    room.min(budget.saturating_sub(MIN_ROOM))
}

/// As [`plan`], streaming through a room of `room` bytes (clamped to what is useful).
pub fn plan_with_room(window_bytes: &[u64], budget: u64, mode: PrefetchMode, room: u64) -> Policy {
    let k = window_bytes.len();
    let total: u64 = window_bytes.iter().sum();
    let streams = total > budget;
    let all = window_bytes.to_vec();
    if k == 0 || mode == PrefetchMode::Off || (streams && budget < 2 * MIN_ROOM) {
        // Nothing to manage, told not to, or no room to manage: the OS alone.
        return Policy { streams, keep: all, ..Policy::default() };
    }
    if !streams {
        // Everything stays resident after the first token; advice warms the next window.
        let touch = matches!(mode, PrefetchMode::Touch);
        return Policy { streams, keep: all, prefetch: true, cap: u64::MAX, touch, release_done: false };
    }
    let room = room.clamp(MIN_ROOM.min(budget - MIN_ROOM), max_room(window_bytes, budget));
    let tails = level_split(window_bytes, total - budget + room);
    let keep = window_bytes.iter().zip(&tails).map(|(w, t)| w - t).collect();
    let touch = !matches!(mode, PrefetchMode::Advise);
    Policy { streams, keep, prefetch: k > 1, cap: room, touch, release_done: true }
}

/// The room worth streaming through, from what the device measured over the last token: a room
/// is read while the token is elsewhere (`wait_s`, the mean time between sending a window's
/// output and the next window's input) at the disk's rate (`read_bps`, bytes/s). A bigger room
/// would hide nothing more, only make every token read more (S − B + room bytes), and a disk that
/// cannot keep up makes the whole ring wait.
pub fn measured_room(window_bytes: &[u64], budget: u64, read_bps: f64, wait_s: f64) -> u64 {
    let fits = (read_bps.max(0.0) * wait_s.max(0.0)) as u64;
    fits.clamp(MIN_ROOM.min(max_room(window_bytes, budget)), max_room(window_bytes, budget))
}

/// Split `total` bytes over windows as evenly as their sizes allow (no part above its window).
fn level_split(window_bytes: &[u64], total: u64) -> Vec<u64> {
    let mut order: Vec<usize> = (0..window_bytes.len()).collect();
    order.sort_by_key(|&j| window_bytes[j]);
    let mut parts = vec![0; window_bytes.len()];
    let mut left = total.min(window_bytes.iter().sum());
    for (n, &j) in order.iter().enumerate() {
        let share = left.div_ceil((order.len() - n) as u64);
        parts[j] = share.min(window_bytes[j]);
        left -= parts[j];
    }
    parts
}

/// Less room than this beside the resident bytes is not worth prefetching into.
const MIN_ROOM: u64 = 8 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;

    #[test]
    fn fitting_share_prefetches_the_next_window_and_keeps_everything() {
        let p = plan(&[100 * M; 4], 1000 * M, PrefetchMode::Auto);
        let want = Policy {
            streams: false,
            keep: vec![100 * M; 4],
            prefetch: true,
            cap: u64::MAX,
            touch: false,
            release_done: false,
        };
        assert_eq!(p, want);
        assert!(plan(&[100 * M; 4], 1000 * M, PrefetchMode::Touch).touch);
    }

    #[test]
    fn streaming_share_keeps_every_window_head_and_hides_the_overflow_in_k_tails() {
        // 2 windows of 366 MiB, 456 MiB budget: overflow 276 MiB, room 276 MiB, each window
        // keeps 90 MiB and streams a 276 MiB tail (the room: read while the others compute).
        let w = [366 * M, 366 * M];
        let p = plan(&w, 456 * M, PrefetchMode::Auto);
        let want = Policy {
            streams: true,
            keep: vec![90 * M; 2],
            prefetch: true,
            cap: 276 * M,
            touch: true,
            release_done: true,
        };
        assert_eq!(p, want);
        // Resident bytes plus one tail in flight fit the budget.
        assert_eq!(p.keep.iter().sum::<u64>() + p.cap, 456 * M);
        assert_eq!(p.tail(&w, 0), 276 * M);
        // 4 windows: the room is a third of the overflow.
        let p = plan(&[100 * M; 4], 250 * M, PrefetchMode::Auto);
        assert_eq!((p.keep.clone(), p.cap), (vec![50 * M; 4], 50 * M));
        assert!(!plan(&[100 * M; 4], 250 * M, PrefetchMode::Advise).touch);
    }

    #[test]
    fn measured_room_is_what_the_disk_reads_during_a_wait() {
        let w = [366 * M, 366 * M];
        // 0.4 s between windows at 250 MB/s: 100 MB of room, not the whole 276 MiB overflow.
        let r = measured_room(&w, 456 * M, 250e6, 0.4);
        assert_eq!(r, 100_000_000);
        let p = plan_with_room(&w, 456 * M, PrefetchMode::Auto, r);
        assert_eq!(p.cap, r);
        // Smaller room, more resident: the budget is still exactly used.
        assert_eq!(p.keep.iter().sum::<u64>() + p.cap, 456 * M);
        assert!(p.keep[0] > 90 * M);
        // Long waits: capped at the room that hides everything; none at all: the minimum.
        assert_eq!(measured_room(&w, 456 * M, 250e6, 10.0), 276 * M);
        assert_eq!(measured_room(&w, 456 * M, 250e6, 0.0), MIN_ROOM);
        assert_eq!(plan_with_room(&w, 456 * M, PrefetchMode::Auto, u64::MAX), plan(&w, 456 * M, PrefetchMode::Auto));
    }

    #[test]
    fn tails_are_as_even_as_the_windows_allow() {
        // 400 MiB of tails over windows of 50, 300, 300 MiB: the small one streams whole.
        assert_eq!(level_split(&[50 * M, 300 * M, 300 * M], 400 * M), vec![50 * M, 175 * M, 175 * M]);
        assert_eq!(level_split(&[10 * M, 20 * M], 100 * M), vec![10 * M, 20 * M]);
        // A budget too small for the ideal room: the room is what is left beside a little
        // slack, and the tails nearly whole windows.
        let p = plan(&[100 * M; 2], 60 * M, PrefetchMode::Auto);
        assert_eq!((p.keep.clone(), p.cap), (vec![4 * M, 4 * M], 52 * M));
    }

    #[test]
    fn one_window_streams_its_tail_without_prefetch() {
        // k = 1: no other turn to hide a read behind; keep all but the overflow and a little slack.
        let p = plan(&[300 * M], 250 * M, PrefetchMode::Auto);
        assert_eq!((p.keep.clone(), p.prefetch, p.release_done), (vec![242 * M], false, true));
    }

    #[test]
    fn no_management_without_room_or_when_off() {
        let p = plan(&[300 * M; 4], 4 * M, PrefetchMode::Auto);
        assert_eq!(p, Policy { streams: true, keep: vec![300 * M; 4], ..Policy::default() });
        let p = plan(&[100 * M; 4], 250 * M, PrefetchMode::Off);
        assert_eq!(p, Policy { streams: true, keep: vec![100 * M; 4], ..Policy::default() });
    }

    #[test]
    fn modes_parse() {
        assert_eq!(PrefetchMode::parse("OFF").unwrap(), PrefetchMode::Off);
        assert_eq!(PrefetchMode::parse("touch").unwrap(), PrefetchMode::Touch);
        assert!(PrefetchMode::parse("sometimes").is_err());
    }
}
