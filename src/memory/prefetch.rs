//! Background prefetch: a thread that reads the ranges it is given into the page cache, so the
//! disk reads finish before the compute needs them. Advice alone (WILLNEED) is a hint Linux caps
//! at one read-ahead window per call (`force_page_cache_ra`), so the thread reads: large
//! sequential `pread`s of the model file into a scratch buffer, which the kernel serves with its
//! biggest requests and streaming read-ahead, at little CPU per byte (no page faults, no page
//! tables; a device on a one-core quota shares that core with its compute; Windows and macOS
//! run the same thread). Where the file cannot be opened it
//! touches one byte per page of the mapping instead.
//!
//! A request goes stale once the compute has passed it (`progress` reached its `stale_at`):
//! touching a window that was already used and released would read it back for nothing and
//! evict the windows still ahead.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use crate::gguf::GgufFile;

enum Request {
    /// Read `ranges` in.
    Read { ranges: Vec<Range<usize>>, stale_at: u64 },
    /// Follow a window's compute through its tail (see [`Follow`]).
    Follow(Follow),
}

/// A streaming window's tail, read just ahead of its compute and dropped right behind it, so
/// at most `room` bytes of tail are in memory beside the resident head (the budget holds the
/// head plus one room; a whole tail on top of the head would push the cgroup into reclaim,
/// which evicts resident heads and reads them back). Offsets are in window bytes: the
/// window's `units` (its ranges, in the order the compute reports progress through them,
/// [`Prefetcher::progress`]) laid end to end.
#[derive(Clone, Debug, PartialEq)]
pub struct Follow {
    pub units: Vec<Range<usize>>,
    /// Bytes of the resident head (the tail starts here).
    pub keep: u64,
    /// Offset up to which the tail has been read already (the prefetched room).
    pub read_from: u64,
    /// Tail bytes allowed in memory ahead of the compute.
    pub room: u64,
    /// Stop once [`Prefetcher::advance`] reaches this (the window is done).
    pub stale_at: u64,
}

pub struct Prefetcher {
    tx: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    progress: Arc<AtomicU64>,
    units_done: Arc<AtomicUsize>,
    rate: Arc<Rate>,
}

/// Bytes read and the time spent reading them: the disk's read rate as prefetch sees it.
#[derive(Default)]
struct Rate {
    bytes: AtomicU64,
    ns: AtomicU64,
}

impl Prefetcher {
    pub fn new(file: GgufFile) -> Prefetcher {
        let (tx, rx) = channel();
        let progress = Arc::new(AtomicU64::new(0));
        let units_done = Arc::new(AtomicUsize::new(0));
        let rate = Arc::new(Rate::default());
        let (p, u, r) = (progress.clone(), units_done.clone(), rate.clone());
        let thread = std::thread::Builder::new()
            .name("prima-prefetch".into())
            .spawn(move || read_loop(&file, rx, &p, &u, &r))
            .expect("spawning the prefetch thread");
        Prefetcher { tx: Some(tx), thread: Some(thread), progress, units_done, rate }
    }

    /// Where the running window reports how many of its units it is done with ([`Follow`]).
    pub fn units_done(&self) -> Arc<AtomicUsize> {
        self.units_done.clone()
    }

    /// Queue a [`Follow`] (after what is queued already).
    pub fn follow(&self, f: Follow) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Request::Follow(f));
        }
    }

    /// Queue ranges to be read into the page cache; returns at once.
    pub fn request(&self, ranges: Vec<Range<usize>>) {
        self.request_until(ranges, u64::MAX);
    }

    /// Queue ranges, to be skipped once [`Prefetcher::advance`] has reached `stale_at`.
    pub fn request_until(&self, ranges: Vec<Range<usize>>, stale_at: u64) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Request::Read { ranges, stale_at });
        }
    }

    /// The compute's progress counter (the caller's own numbering).
    pub fn advance(&self, to: u64) {
        self.progress.store(to, Ordering::Relaxed);
    }

    /// Bytes per second read so far (pages already cached count too), once 1 MiB was.
    pub fn read_rate(&self) -> Option<f64> {
        let (b, ns) = (self.rate.bytes.load(Ordering::Relaxed), self.rate.ns.load(Ordering::Relaxed));
        (b >= 1 << 20 && ns > 0).then(|| b as f64 * 1e9 / ns as f64)
    }
}

/// Bytes per `pread` (and between staleness checks): large enough for the kernel's biggest
/// requests, small enough to stop soon after a request goes stale.
const CHUNK: usize = 1 << 20;

fn read_loop(file: &GgufFile, rx: Receiver<Request>, progress: &AtomicU64, units_done: &AtomicUsize, rate: &Rate) {
    // Exactly the bytes asked for: the kernel's read-ahead past a range would fill memory the
    // budget does not have (and pages still in flight survive a release).
    let fd = super::advice::open_without_read_ahead(&file.path);
    let mut r = Reader { file, fd, buf: Vec::new() };
    while let Ok(req) = rx.recv() {
        match req {
            Request::Read { ranges, stale_at } => {
                let start = std::time::Instant::now();
                let stale = || progress.load(Ordering::Relaxed) >= stale_at;
                let mut read = 0u64;
                for range in ranges {
                    let (n, done) = r.read(range, &stale);
                    read += n;
                    if !done {
                        break;
                    }
                }
                rate.bytes.fetch_add(read, Ordering::Relaxed);
                rate.ns.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            // Paced by the compute: its time is not the disk's read rate.
            Request::Follow(f) => follow(&mut r, &f, progress, units_done),
        }
    }
}

/// Run a [`Follow`] until its window is done.
fn follow(r: &mut Reader, f: &Follow, progress: &AtomicU64, units_done: &AtomicUsize) {
    let starts: Vec<u64> = std::iter::once(0)
        .chain(f.units.iter().scan(0u64, |at, u| {
            *at += u.len() as u64;
            Some(*at)
        }))
        .collect();
    let end = *starts.last().unwrap_or(&0);
    let stale = || progress.load(Ordering::Relaxed) >= f.stale_at;
    let (mut read_to, mut released) = (f.read_from.max(f.keep).min(end), f.keep.min(end));
    while !stale() {
        // Units before the one running are done with: drop their tail bytes.
        let done_at = starts[units_done.load(Ordering::Acquire).min(f.units.len())].max(f.keep);
        if done_at > released {
            super::release(r.file, &window_ranges(&f.units, &starts, released..done_at));
            released = done_at;
        }
        // What the compute has passed is not worth reading any more.
        read_to = read_to.max(done_at);
        let allowed = (done_at + f.room).min(end);
        if read_to < allowed {
            let to = (read_to + CHUNK as u64).min(allowed);
            for range in window_ranges(&f.units, &starts, read_to..to) {
                r.read(range, &stale);
            }
            read_to = to;
        } else if released >= end {
            break;
        } else {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// The file ranges of window bytes `w` (offsets into `units` laid end to end; `starts` are
/// the units' offsets, one more than units).
pub fn window_ranges(units: &[Range<usize>], starts: &[u64], w: Range<u64>) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    for (u, r) in units.iter().enumerate() {
        let (a, b) = (starts[u].max(w.start), starts[u + 1].min(w.end));
        if a < b {
            let base = r.start as u64 - starts[u];
            out.push((base + a) as usize..(base + b) as usize);
        }
    }
    out
}

/// Reads file ranges into the page cache: `pread` into a scratch buffer, or touching the
/// mapping where the file could not be opened.
struct Reader<'a> {
    file: &'a GgufFile,
    fd: Option<std::fs::File>,
    buf: Vec<u8>,
}

impl Reader<'_> {
    /// Read `range` in [`CHUNK`]s until done or `stale`; (bytes read, finished).
    fn read(&mut self, range: Range<usize>, stale: &dyn Fn() -> bool) -> (u64, bool) {
        let end = range.end.min(self.file.bytes().len());
        let mut i = range.start;
        let mut read = 0u64;
        while i < end {
            if stale() {
                return (read, false);
            }
            let n = (end - i).min(CHUNK);
            let got = match &self.fd {
                Some(f) => {
                    self.buf.resize(CHUNK, 0);
                    read_at(f, &mut self.buf[..n], i as u64).unwrap_or_else(|| touch(self.file, i..i + n))
                }
                None => touch(self.file, i..i + n),
            };
            i += got.max(1);
            read += got as u64;
        }
        (read, true)
    }
}

/// `pread` all of `buf` at `offset`; None on an error or an early end of file.
fn read_at(f: &std::fs::File, buf: &mut [u8], offset: u64) -> Option<usize> {
    crate::sys::read_exact_at(f, buf, offset).ok().map(|_| buf.len())
}

/// Read one byte per page of `r` through the mapping; returns the bytes covered.
fn touch(file: &GgufFile, r: Range<usize>) -> usize {
    let page = super::page_size();
    let bytes = file.bytes();
    let end = r.end.min(bytes.len());
    let mut sum = 0u8;
    let mut i = r.start;
    while i < end {
        // A volatile read so the compiler cannot drop the touch.
        sum ^= unsafe { std::ptr::read_volatile(bytes.as_ptr().add(i)) };
        i += page;
    }
    std::hint::black_box(sum);
    end.saturating_sub(r.start)
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.tx.take();
        self.progress.store(u64::MAX, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bytes_map_back_to_file_ranges() {
        // Units of 10, 20 and 5 bytes at scattered file offsets.
        let units = [100..110, 500..520, 50..55];
        let starts = [0, 10, 30, 35];
        assert_eq!(window_ranges(&units, &starts, 0..35), units.to_vec());
        assert_eq!(window_ranges(&units, &starts, 5..12), vec![105..110, 500..502]);
        assert_eq!(window_ranges(&units, &starts, 12..33), vec![502..520, 50..53]);
        assert_eq!(window_ranges(&units, &starts, 10..10), Vec::<Range<usize>>::new());
        assert_eq!(window_ranges(&units, &starts, 34..99), vec![54..55]);
    }
}
