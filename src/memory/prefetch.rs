//! Background prefetch: a thread that reads one byte per page of the ranges it is given, so
//! the disk reads finish before the compute needs them. Advice alone (WILLNEED) is a hint the
//! kernel may cap at its read-ahead window; touching makes the read happen.
//!
//! A request goes stale once the compute has passed it (`progress` reached its `stale_at`):
//! touching a window that was already used and released would read it back for nothing and
//! evict the windows still ahead.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use crate::gguf::GgufFile;

struct Request {
    ranges: Vec<Range<usize>>,
    stale_at: u64,
}

pub struct Prefetcher {
    tx: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    progress: Arc<AtomicU64>,
    rate: Arc<Rate>,
}

/// Bytes touched and the time spent touching them: the disk's read rate as prefetch sees it.
#[derive(Default)]
struct Rate {
    bytes: AtomicU64,
    ns: AtomicU64,
}

impl Prefetcher {
    pub fn new(file: GgufFile) -> Prefetcher {
        let (tx, rx) = channel();
        let progress = Arc::new(AtomicU64::new(0));
        let rate = Arc::new(Rate::default());
        let (p, r) = (progress.clone(), rate.clone());
        let thread = std::thread::Builder::new()
            .name("prima-prefetch".into())
            .spawn(move || touch_loop(&file, rx, &p, &r))
            .expect("spawning the prefetch thread");
        Prefetcher { tx: Some(tx), thread: Some(thread), progress, rate }
    }

    /// Queue ranges to be read in; returns at once.
    pub fn request(&self, ranges: Vec<Range<usize>>) {
        self.request_until(ranges, u64::MAX);
    }

    /// Queue ranges, to be skipped once [`Prefetcher::advance`] has reached `stale_at`.
    pub fn request_until(&self, ranges: Vec<Range<usize>>, stale_at: u64) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Request { ranges, stale_at });
        }
    }

    /// The compute's progress counter (the caller's own numbering).
    pub fn advance(&self, to: u64) {
        self.progress.store(to, Ordering::Relaxed);
    }

    /// Bytes per second touched so far (pages already cached count too), once 1 MiB was.
    pub fn read_rate(&self) -> Option<f64> {
        let (b, ns) = (self.rate.bytes.load(Ordering::Relaxed), self.rate.ns.load(Ordering::Relaxed));
        (b >= 1 << 20 && ns > 0).then(|| b as f64 * 1e9 / ns as f64)
    }
}

fn touch_loop(file: &GgufFile, rx: Receiver<Request>, progress: &AtomicU64, rate: &Rate) {
    let page = super::page_size();
    let bytes = file.bytes();
    let mut sum = 0u8;
    while let Ok(req) = rx.recv() {
        let start = std::time::Instant::now();
        let mut touched = 0u64;
        'req: for r in req.ranges {
            let end = r.end.min(bytes.len());
            let mut i = r.start;
            while i < end {
                if (i / page).is_multiple_of(256) && progress.load(Ordering::Relaxed) >= req.stale_at {
                    break 'req;
                }
                // A volatile read so the compiler cannot drop the touch.
                sum ^= unsafe { std::ptr::read_volatile(bytes.as_ptr().add(i)) };
                i += page;
                touched += page as u64;
            }
        }
        rate.bytes.fetch_add(touched, Ordering::Relaxed);
        rate.ns.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
    std::hint::black_box(sum);
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
