//! One device's page-cache management for its windows: applies [`super::policy`] around the ring.
//!
//! At start it drops the parts of the mapped file it will never run (other devices' layers)
//! and prefetches its first window and the resident heads of the others; after each window's
//! output is sent ([`Pager::done`]) it drops that window's streamed tail (when streaming) and
//! prefetches the next window's tail (or, when everything fits, the next window); when a
//! window's input arrives ([`Pager::arrived`]) it reads the rest of that window's tail.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::policy::{self, Policy, PrefetchMode};
use super::prefetch::{Follow, Prefetcher};
use super::pressure::{self, PressureMonitor};
use crate::gguf::GgufFile;
use crate::model::Paging;
use crate::model::tensor_names as names;

static MODE: std::sync::OnceLock<PrefetchMode> = std::sync::OnceLock::new();

/// Set the process-wide prefetch mode (the `--prefetch` flag); first call wins.
pub fn set_mode(m: PrefetchMode) {
    let _ = MODE.set(m);
}

/// `--prefetch`, else `PRIMA_PREFETCH`, else auto.
pub fn mode() -> PrefetchMode {
    *MODE.get_or_init(|| {
        std::env::var("PRIMA_PREFETCH").ok().and_then(|v| PrefetchMode::parse(&v).ok()).unwrap_or_default()
    })
}

/// Memory kept out of the weight budget: KV cache and scratch grow into it (a few MiB at small
/// contexts), and the kernel needs slack to reclaim without stalling. The planner budgets the
/// same (`sched::halda`), so a share it plans as fitting is one the pager keeps resident.
pub fn reserve(total: u64) -> u64 {
    (24 << 20) + total / 64
}

pub struct Pager {
    file: Option<GgufFile>,
    windows: Vec<Vec<Range<usize>>>,
    window_bytes: Vec<u64>,
    mode: PrefetchMode,
    /// When the last window's output was sent, and the waits (s) since then in this token.
    sent: Option<Instant>,
    waits: Vec<f64>,
    pub policy: Policy,
    pub budget: u64,
    prefetcher: Option<Prefetcher>,
    monitor: PressureMonitor,
    steps: u64,
    /// Units of the running window's ranges done (see [`Pager::progress`]).
    progress: Arc<AtomicUsize>,
}

impl Pager {
    /// `windows`: for each window in run order, its mapped file and weight ranges (None for a
    /// window without mapped weights, e.g. the fake engine).
    pub fn new(windows: impl IntoIterator<Item = Option<(GgufFile, Vec<Range<usize>>)>>) -> Pager {
        let monitor = PressureMonitor::start();
        let mut file = None;
        let windows: Vec<Vec<Range<usize>>> = windows
            .into_iter()
            .map(|w| match w {
                Some((f, r)) => {
                    file.get_or_insert(f);
                    r
                }
                None => Vec::new(),
            })
            .collect();
        let Some(f) = file.filter(|f| f.mmap().is_some()) else {
            return Pager {
                file: None,
                window_bytes: Vec::new(),
                mode: mode(),
                sent: None,
                waits: Vec::new(),
                windows,
                policy: Policy::default(),
                budget: 0,
                prefetcher: None,
                monitor,
                steps: 0,
                progress: Arc::new(AtomicUsize::new(0)),
            };
        };
        let snap = monitor.baseline.or_else(pressure::snapshot).unwrap_or_default();
        let hot = hot_head_bytes(&f);
        let budget = snap.available.saturating_sub(reserve(snap.total) + hot);
        let bytes: Vec<u64> = windows.iter().map(|w| w.iter().map(|r| r.len() as u64).sum()).collect();
        let mode = mode();
        let policy = policy::plan(&bytes, budget, mode);
        super::release(&f, &unused_ranges(&f, &windows));
        let prefetcher = policy.touch.then(|| Prefetcher::new(f.clone()));
        let progress = prefetcher.as_ref().map(|p| p.units_done()).unwrap_or_default();
        let p = Pager {
            file: Some(f),
            windows,
            window_bytes: bytes,
            mode,
            sent: None,
            waits: Vec::new(),
            policy,
            budget,
            prefetcher,
            monitor,
            steps: 0,
            progress,
        };
        eprintln!("memory: {}", p.describe());
        if p.policy.prefetch && !p.windows.is_empty() {
            // Cold start: what the first token reads, the first window first.
            p.prefetch(p.windows[0].clone(), u64::MAX);
            for j in 1..p.windows.len() {
                p.prefetch(p.head(j), u64::MAX);
            }
        }
        p
    }

    /// The input of window `i` has arrived (`decode`: of a decode step, one token per sequence): the wait since the last
    /// output was sent is time the prefetch had. A streaming device's tail is then followed
    /// ([`Follow`]): read ahead of the compute beyond the prefetched room, never more than a
    /// room ahead, and dropped behind it, so the head plus what is in flight stays within the
    /// budget.
    pub fn arrived(&mut self, i: usize, decode: bool) {
        if !decode {
            return;
        }
        if let Some(t) = self.sent.take() {
            self.waits.push(t.elapsed().as_secs_f64());
        }
        self.progress.store(0, Ordering::Release);
        if let Some(p) = &self.prefetcher
            && i < self.windows.len()
            && self.policy.streams
            && self.policy.release_done
        {
            let keep = self.policy.keep.get(i).copied().unwrap_or(u64::MAX);
            let room = self.policy.cap;
            let read_from = keep.saturating_add(if self.policy.prefetch { room } else { 0 });
            // Stale once window i is done (the next `done` call).
            p.follow(Follow { units: self.windows[i].clone(), keep, read_from, room, stale_at: self.steps + 1 });
        }
    }

    /// Where the windows report their progress (units of their mapped ranges done) while they
    /// run, for the tail streaming of [`Pager::arrived`].
    pub fn progress(&self) -> Arc<AtomicUsize> {
        self.progress.clone()
    }

    /// Window `i`'s output (`decode`: of a decode step) has been sent: drop its tail, prefetch what
    /// comes next. Only decode steps visit the windows in cyclic order; a pipelined prompt
    /// revisits a window for the next batch, so batches leave the cache alone.
    pub fn done(&mut self, i: usize, decode: bool) {
        let k = self.windows.len();
        if k == 0 || i >= k || !decode {
            return;
        }
        self.steps += 1;
        if let Some(p) = &self.prefetcher {
            p.advance(self.steps);
        }
        if self.file.is_none() {
            return;
        }
        if i + 1 == k {
            self.resize_room();
        }
        let Some(f) = &self.file else { return };
        if self.policy.release_done {
            super::release(f, &self.tail(i));
        }
        self.sent = Some(Instant::now());
        if self.policy.prefetch {
            let j = (i + 1) % k;
            let next =
                if self.policy.streams { head_bytes(&self.tail(j), self.policy.cap) } else { self.windows[j].clone() };
            // Window j runs after one more `done`; touching it after that is wasted.
            self.prefetch(next, self.steps + 1);
        }
    }

    /// After each token (from the second on), stream through the room the disk can fill while
    /// the token is elsewhere ([`policy::measured_room`]); the bytes the room gives back stay
    /// resident.
    fn resize_room(&mut self) {
        let waits = std::mem::take(&mut self.waits);
        let rate = self.prefetcher.as_ref().and_then(|p| p.read_rate());
        let k = self.windows.len();
        if !(self.policy.streams && self.policy.prefetch) || self.steps <= k as u64 || waits.len() < k - 1 {
            return;
        }
        let Some(rate) = rate else { return };
        let wait = waits.iter().sum::<f64>() / waits.len() as f64;
        let room = policy::measured_room(&self.window_bytes, self.budget, rate, wait);
        if room.abs_diff(self.policy.cap) * 10 > self.policy.cap {
            self.policy = policy::plan_with_room(&self.window_bytes, self.budget, self.mode, room);
            eprintln!(
                "memory: room {} MiB ({:.0} ms between windows at {:.0} MB/s): {}",
                room >> 20,
                wait * 1e3,
                rate / 1e6,
                self.describe()
            );
        }
    }

    /// Window `j`'s ranges split at its resident bytes: (head, tail).
    fn split(&self, j: usize) -> (Vec<Range<usize>>, Vec<Range<usize>>) {
        let keep = self.policy.keep.get(j).copied().unwrap_or(u64::MAX);
        split_ranges(&self.windows[j], keep)
    }

    fn head(&self, j: usize) -> Vec<Range<usize>> {
        self.split(j).0
    }

    fn tail(&self, j: usize) -> Vec<Range<usize>> {
        self.split(j).1
    }

    fn prefetch(&self, ranges: Vec<Range<usize>>, stale_at: u64) {
        let Some(f) = &self.file else { return };
        if ranges.is_empty() {
            return;
        }
        super::will_need(f, &ranges);
        if let Some(p) = &self.prefetcher {
            p.request_until(ranges, stale_at);
        }
    }

    /// Peak memory pressure since the pager was made.
    pub fn peak_pressure(&self) -> f64 {
        self.monitor.peak()
    }

    pub fn describe(&self) -> String {
        let p = &self.policy;
        let total: u64 = self.windows.iter().flatten().map(|r| r.len() as u64).sum();
        let kept: u64 = (0..self.windows.len()).map(|j| self.head(j).iter().map(|r| r.len() as u64).sum::<u64>()).sum();
        let what = if !p.streams {
            "fits in memory".to_string()
        } else if p.release_done {
            format!(
                "streams from disk: {} MiB resident, {} MiB of tails re-read per token",
                kept >> 20,
                (total - kept) >> 20
            )
        } else {
            "streams from disk (the OS decides what stays)".to_string()
        };
        format!(
            "{what} ({} MiB budget for {} window(s) of {} MiB){}{}",
            self.budget >> 20,
            self.windows.len(),
            total >> 20,
            match (p.prefetch, p.streams) {
                (false, _) => String::new(),
                (true, false) => ", prefetch the next window".to_string(),
                (true, true) => format!(", prefetch the next tail (first {} MiB)", p.cap >> 20),
            },
            if p.touch { ", touched" } else { "" },
        )
    }
}

/// `ranges` split after their first `keep` bytes: (head, tail).
pub fn split_ranges(ranges: &[Range<usize>], keep: u64) -> (Vec<Range<usize>>, Vec<Range<usize>>) {
    let mut left = keep.min(usize::MAX as u64) as usize;
    let (mut head, mut tail) = (Vec::new(), Vec::new());
    for r in ranges {
        let n = r.len().min(left);
        if n > 0 {
            head.push(r.start..r.start + n);
        }
        if n < r.len() {
            tail.push(r.start + n..r.end);
        }
        left -= n;
    }
    (head, tail)
}

/// The first `cap` bytes of `ranges`.
fn head_bytes(ranges: &[Range<usize>], cap: u64) -> Vec<Range<usize>> {
    split_ranges(ranges, cap).0
}

/// The output matrix is read every token on the head (tied embeddings: the embedding).
fn hot_head_bytes(f: &GgufFile) -> u64 {
    f.tensor(names::OUTPUT).or_else(|| f.tensor(names::TOKEN_EMBD)).map(|t| t.size).unwrap_or(0)
}

/// Tensor data of the file that none of `windows` uses and that is not shared (embedding,
/// output, norms): other devices' layers when the file is the whole model.
pub fn unused_ranges(f: &GgufFile, windows: &[Vec<Range<usize>>]) -> Vec<Range<usize>> {
    let mut keep: Vec<Range<usize>> = windows.iter().flatten().cloned().collect();
    keep.extend(f.tensors.iter().filter(|t| !t.name.starts_with(names::LAYER_PREFIX)).map(|t| {
        let r = f.tensor_file_range(t);
        r.start as usize..r.end as usize
    }));
    keep.sort_by_key(|r| r.start);
    let page = super::page_size();
    let mut out = Vec::new();
    let mut at = f.data_offset as usize;
    for r in keep {
        // Only whole pages strictly between kept ranges: a shared page stays.
        let (s, e) = (at.div_ceil(page) * page, r.start / page * page);
        if e > s {
            out.push(s..e);
        }
        at = at.max(r.end);
    }
    let end = f.bytes().len() / page * page;
    let s = at.div_ceil(page) * page;
    if end > s {
        out.push(s..end);
    }
    out
}

/// Weight ranges of layers `layers` in `f` (every `blk.N.*` tensor).
pub fn layer_ranges(f: &GgufFile, layers: Range<usize>) -> Vec<Range<usize>> {
    let prefixes: Vec<String> = layers.map(names::layer_prefix).collect();
    f.tensors
        .iter()
        .filter(|t| prefixes.iter().any(|p| t.name.starts_with(p.as_str())))
        .map(|t| {
            let r = f.tensor_file_range(t);
            r.start as usize..r.end as usize
        })
        .collect()
}

impl Paging for Pager {
    fn arrived(&mut self, window: usize, decode: bool) {
        Pager::arrived(self, window, decode)
    }
    fn done(&mut self, window: usize, decode: bool) {
        Pager::done(self, window, decode)
    }
}
