//! A fixed pool of worker threads for data-parallel kernels.
//!
//! `run(n, f)` calls `f(i)` for every `i < n`, spread over the workers and the calling thread,
//! and returns when all are done. Workers spin briefly before sleeping: a token issues a few
//! hundred small jobs, and waking a sleeping thread (tens of µs) would cost more than the job.
//! No allocation per job.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps on the condition variable.
const SPIN: Duration = Duration::from_micros(200);
/// Spins before a waiting thread starts yielding its core (a few µs).
const YIELD_AFTER_SPINS: u32 = 2000;

type Job = dyn Fn(usize) + Sync;

/// The job being run: its generation, the closure (lifetime erased), its task count.
#[derive(Clone, Copy)]
struct Current {
    generation: u32,
    job: *const Job,
    n_tasks: usize,
}
// SAFETY: the closure is `Sync`, and it is only called through a claim that proves its job is
// still running (see `work_on`), so it is alive.
unsafe impl Send for Current {}

struct Shared {
    /// The newest generation; workers compare it with the last one they ran.
    generation: AtomicUsize,
    /// `generation << 32 | next task index`: claiming a task and checking that it belongs to
    /// the job we hold is one compare-exchange, so a slow worker can never run a stale job.
    claim: AtomicU64,
    /// Tasks finished in the current job.
    done: AtomicUsize,
    current: Mutex<Option<Current>>,
    /// Workers asleep on `wake` (or about to be): `run` skips the wake-up system call when
    /// none is, the common case while a token's jobs follow each other.
    sleepers: AtomicUsize,
    wake: Condvar,
    sleep_lock: Mutex<()>,
    /// Serialises `run` calls from different threads.
    run_lock: Mutex<()>,
}

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

const STOP: usize = usize::MAX;

impl ThreadPool {
    /// A pool with `n_threads` threads in total, the caller included.
    pub fn new(n_threads: usize) -> Self {
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            claim: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            current: Mutex::new(None),
            sleepers: AtomicUsize::new(0),
            wake: Condvar::new(),
            sleep_lock: Mutex::new(()),
            run_lock: Mutex::new(()),
        });
        let workers = (1..n_threads.max(1))
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("prima-worker-{i}"))
                    .spawn(move || worker(&s))
                    .expect("spawning a worker thread")
            })
            .collect();
        ThreadPool { shared, workers }
    }

    pub fn n_threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Run `f(0..n)` in parallel; returns when every call has returned.
    pub fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || n <= 1 {
            (0..n).for_each(f);
            return;
        }
        let s = &*self.shared;
        let _serial = s.run_lock.lock().unwrap();
        let generation = (s.generation.load(Ordering::Relaxed) as u32).wrapping_add(1).max(1);
        // SAFETY: only the lifetime is erased; we do not return before `done == n`, and no
        // task of this generation can be claimed after that.
        let job = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const Job>(f as *const _) };
        let cur = Current { generation, job, n_tasks: n };
        *s.current.lock().unwrap() = Some(cur);
        s.done.store(0, Ordering::Relaxed);
        s.claim.store((generation as u64) << 32, Ordering::Release);
        // SeqCst pairs with the worker's `sleepers` increment: either it sees this generation
        // before it sleeps, or we see it counted and wake it.
        s.generation.store(generation as usize, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.sleep_lock.lock().unwrap();
            s.wake.notify_all();
        }
        work_on(s, cur);
        // A task still running elsewhere: spin briefly, then yield, so that on a busy machine a
        // worker preempted in the middle of its task gets the core back instead of watching us
        // spin.
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) < n {
            spins += 1;
            if spins < YIELD_AFTER_SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Split `0..len` into about one contiguous chunk per thread and run `f(range)` on each.
    pub fn for_chunks(&self, len: usize, min_chunk: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
        let n_chunks = self.n_threads().min(len.div_ceil(min_chunk.max(1))).max(1);
        let per = len.div_ceil(n_chunks);
        self.run(n_chunks, &|i| {
            let start = i * per;
            let end = ((i + 1) * per).min(len);
            if start < end {
                f(start..end)
            }
        });
    }
}

fn work_on(s: &Shared, cur: Current) {
    let tag = (cur.generation as u64) << 32;
    loop {
        let c = s.claim.load(Ordering::Acquire);
        let i = (c & 0xffff_ffff) as usize;
        if c & !0xffff_ffff != tag || i >= cur.n_tasks {
            return;
        }
        if s.claim.compare_exchange_weak(c, c + 1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            // SAFETY: task `i` of this generation is unfinished, so `run` has not returned.
            unsafe { (*cur.job)(i) };
            s.done.fetch_add(1, Ordering::Release);
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0usize;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let g = s.generation.load(Ordering::Acquire);
            if g == STOP {
                return;
            }
            if g != seen {
                seen = g;
                break;
            }
            spins += 1;
            if spins > YIELD_AFTER_SPINS {
                std::thread::yield_now();
            }
            if spins.is_multiple_of(64) && start.elapsed() > SPIN {
                let guard = s.sleep_lock.lock().unwrap();
                s.sleepers.fetch_add(1, Ordering::SeqCst);
                if s.generation.load(Ordering::SeqCst) == seen {
                    let _timeout = s.wake.wait_timeout(guard, Duration::from_millis(50)).unwrap();
                }
                s.sleepers.fetch_sub(1, Ordering::SeqCst);
            } else {
                std::hint::spin_loop();
            }
        }
        let cur = *s.current.lock().unwrap();
        if let Some(cur) = cur {
            work_on(s, cur);
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.generation.store(STOP, Ordering::Release);
        {
            let _g = self.shared.sleep_lock.lock().unwrap();
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Physical cores, within the affinity mask and the cgroup's CPU quota ([`crate::sys`]'s rule).
pub fn default_threads() -> usize {
    crate::sys::default_threads()
}
