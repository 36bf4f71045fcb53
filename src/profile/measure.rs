//! Measuring this device: CPU kernels per weight format, RAM read bandwidth, KV append, disk.
//! Each probe is time-boxed; the whole profile takes a few seconds. Progress goes to a callback
//! (the CLI prints it on stderr).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{DeviceProfile, Disk, KvAppend, Throughput};
use crate::error::{Context, Result};
use crate::quant::{self, GgmlType};

/// Weight formats the profiler measures by default: every one the engine's kernels support
/// (activation-only and integer types excluded).
pub fn default_formats() -> Vec<GgmlType> {
    use GgmlType::*;
    GgmlType::ALL
        .iter()
        .copied()
        .filter(|t| !matches!(t, Q8_1 | Q8_K | I8 | I16 | I32 | I64 | F64) && quant::is_supported(*t))
        .collect()
}

/// The RAM probe's buffer: several times the largest last-level caches (105 MiB on big Xeons).
pub const RAM_BUFFER_MIB: usize = 512;

#[derive(Clone, Debug)]
pub struct Options {
    /// Directory for the disk test file (the filesystem the models or the layer cache live on);
    /// its largest file of at least [`DISK_MIN_BYTES`] (the model, a cached layer file) is read
    /// in place instead, where there is one.
    pub disk_dir: PathBuf,
    /// Size of the test file written when no file in `disk_dir` is large enough.
    pub disk_file_mib: usize,
    /// The disk test reads for at least this long and at least `disk_file_mib` (one pass over
    /// a short burst measures the device's cache, not the rate a window's tail is re-read at).
    pub disk_min_time: Duration,
    pub ram_buffer_mib: usize,
    /// Thread counts to measure the CPU kernels with (empty = 1 and all cores).
    pub threads: Vec<u32>,
    /// Restrict CPU formats (empty = [`default_formats`]).
    pub formats: Vec<GgmlType>,
    /// Measure the GPU, if there is one.
    pub gpu: bool,
    /// The GPU memory to plan with (`gpu_memory`; wgpu cannot tell free memory).
    pub gpu_memory: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            disk_dir: PathBuf::from("."),
            disk_file_mib: 512,
            disk_min_time: Duration::from_secs(1),
            ram_buffer_mib: RAM_BUFFER_MIB,
            threads: Vec::new(),
            formats: Vec::new(),
            gpu: true,
            gpu_memory: None,
        }
    }
}

/// A dot-product kernel: `(weight format, n, weight row bytes, activation row bytes) -> f32`.
pub type DotFn = dyn Fn(GgmlType, usize, &[u8], &[u8]) -> f32 + Sync;

/// Measure everything. `progress` receives one line per step.
pub fn measure(opt: &Options, progress: &mut dyn FnMut(&str)) -> Result<DeviceProfile> {
    let os = super::sys::os();
    let mut p = DeviceProfile::new(&super::sys::hostname(), os);
    p.arch = std::env::consts::ARCH.to_string();
    p.cpu_model = super::sys::cpu_model();
    p.cores = super::sys::cores();
    p.kernels = crate::cpu::kernel_summary();
    p.memory = super::sys::memory(os);
    p.cpu_quota = crate::sys::cpu_quota();
    progress(&format!(
        "{}: {os}, {} cores, {:.1} GiB available of {:.1} GiB ({})",
        p.name,
        p.cores,
        gib(p.memory.available),
        gib(p.memory.total),
        p.memory.source
    ));

    let threads: Vec<u32> = if opt.threads.is_empty() {
        let mut t = vec![1, crate::sys::default_threads() as u32];
        t.dedup();
        t
    } else {
        opt.threads.clone()
    };
    let formats: Vec<GgmlType> = if opt.formats.is_empty() { default_formats() } else { opt.formats.clone() };
    for ty in formats.into_iter().filter(|t| quant::is_supported(*t)) {
        for &t in &threads {
            // A sample (≈ 7 ms) fits inside one quota period, so the kernel never throttles
            // it: scale by the share of the threads the quota lets run.
            let g = cpu_gflops(ty, t as usize, Duration::from_millis(40), &crate::cpu::kernels::vec_dot)
                * quota_share(p.cpu_quota, t as usize);
            progress(&format!("cpu {:>8} × {t:>2} threads: {g:8.2} GFLOPS", ty.name()));
            p.cpu.push(Throughput { format: ty.name().to_string(), threads: t, gflops: g });
        }
    }
    let probe = ram_probe_bytes(opt.ram_buffer_mib << 20, p.memory.available);
    let ram_threads = crate::sys::default_threads();
    p.ram_read_gbps = ram_read_gbps(probe, ram_threads, Some(&opt.disk_dir)) * quota_share(p.cpu_quota, ram_threads);
    progress(&format!("ram read: {:.2} GB/s", p.ram_read_gbps));
    p.kv_append = kv_append();
    progress(&format!("kv append: {:.2} µs + {:.2} GB/s", p.kv_append.fixed_us, p.kv_append.gbps));
    match disk(&opt.disk_dir, opt.disk_file_mib << 20, opt.disk_min_time) {
        Ok(d) => {
            progress(&format!("disk: sequential {:.2} GB/s, random {:.3} GB/s ({})", d.seq_gbps, d.rnd_gbps, d.method));
            p.disk = d;
        }
        Err(e) => progress(&format!("disk: not measured ({e})")),
    }
    if opt.gpu {
        p.gpu = crate::gpu::profile(opt.gpu_memory, progress);
    }
    Ok(p)
}

/// The fraction of `threads` busy threads a CPU quota lets run (1 without a quota).
pub fn quota_share(quota: Option<f64>, threads: usize) -> f64 {
    quota.map_or(1.0, |q| (q / threads.max(1) as f64).min(1.0))
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Small deterministic byte generator for test data.
fn fill(buf: &mut [u8], mut seed: u64) {
    for b in buf {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = (seed >> 24) as u8;
    }
}

/// GFLOPS of a format's matvec kernel on a cache-resident matrix (compute, not memory):
/// each thread runs `dot` over its own rows; warm-up, then the fastest of 7 timed runs (other
/// processes and a spent quota period only ever slow a run down: with the median, one
/// device's figure moved 25% between two profiles on a busy machine, bench/README.md).
pub fn cpu_gflops(ty: GgmlType, threads: usize, budget: Duration, dot: &DotFn) -> f64 {
    let n = 4096usize;
    let Some(row_bytes) = ty.row_bytes(n) else { return 0.0 };
    // ≈ 256 KiB of weights per thread: stays in L2.
    let rows = ((256usize << 10) / row_bytes).clamp(4, 256);
    let act_ty = quant::vec_dot_type(ty);
    let Some(act_bytes) = act_ty.row_bytes(n) else { return 0.0 };
    let x: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
    let mut act = vec![0u8; act_bytes];
    quant::quantize_row(act_ty, &x, &mut act);
    let mats: Vec<Vec<u8>> = (0..threads)
        .map(|t| {
            let mut w = vec![0u8; rows * row_bytes];
            if ty == GgmlType::F32 || ty == GgmlType::F16 {
                // Real values: random bits could be NaN or denormal.
                for r in 0..rows {
                    quant::quantize_row(ty, &x, &mut w[r * row_bytes..(r + 1) * row_bytes]);
                }
            } else {
                // Block bytes: the kernels' speed does not depend on the values (scales are
                // f16, so random bits are never f32 denormals).
                fill(&mut w, 0x9e37 + t as u64);
            }
            w
        })
        .collect();
    let work = |w: &[u8], reps: usize| {
        let mut acc = 0.0f32;
        for _ in 0..reps {
            for r in 0..rows {
                acc += dot(ty, n, &w[r * row_bytes..(r + 1) * row_bytes], &act);
            }
        }
        std::hint::black_box(acc);
    };
    // Calibrate inline (no thread start-up in the timing): one sample ≈ budget / 6.
    let target = budget.as_secs_f64() / 6.0;
    let mut reps = 1usize;
    loop {
        let t = Instant::now();
        work(&mats[0], reps);
        let e = t.elapsed().as_secs_f64();
        if e >= target || reps >= 1 << 20 {
            break;
        }
        reps = if e > target / 64.0 { ((reps as f64 * target / e).ceil() as usize).max(reps + 1) } else { reps * 8 };
    }
    // Each thread times its own loop after a common start; the sample is the slowest thread.
    let run = || -> f64 {
        let barrier = std::sync::Barrier::new(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = mats
                .iter()
                .map(|w| {
                    let (barrier, work) = (&barrier, &work);
                    s.spawn(move || {
                        barrier.wait();
                        let t = Instant::now();
                        work(w, reps);
                        t.elapsed().as_secs_f64()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(f64::INFINITY)).fold(0.0, f64::max)
        })
    };
    let fastest = (0..7).map(|_| run()).fold(f64::INFINITY, f64::min);
    let flops = 2.0 * (n * rows * reps * threads) as f64;
    flops / fastest.max(1e-9) / 1e9
}

/// The RAM probe's buffer: `wanted` bytes, but at most a quarter of the available memory — a
/// device with a few hundred MiB (an emulated phone, a container) must not be OOM-killed by
/// its own profile — and at least [`RAM_PROBE_MIN`].
pub fn ram_probe_bytes(wanted: usize, available: u64) -> usize {
    let quarter = (available / 4).min(usize::MAX as u64) as usize;
    wanted.min(quarter).max(RAM_PROBE_MIN)
}

/// Smallest RAM probe buffer (still several times a core's L2).
pub const RAM_PROBE_MIN: usize = 16 << 20;

/// RAM read bandwidth: `threads` threads stream disjoint halves, thirds, … of a buffer much
/// larger than the last-level cache (pass at least 4× its size), the way a decode step streams
/// its weights. The threads start once and meet at a barrier around every pass, so a sample is
/// one pass's wall time with no thread start-up in it; one warm-up pass, then the best of
/// [`RAM_PASSES`] (interference from other processes only ever slows a pass down).
///
/// With `dir`, the buffer is a file there, written through a shared map and read back from the
/// page cache, not heap: file pages are what the kernel reclaims first and what the
/// memory-pressure metric leaves out (a heap buffer of a quarter of a 243 MiB device was 25%
/// start-up pressure), and RAM is RAM either way. Heap where no file can be made there.
pub fn ram_read_gbps(bytes: usize, threads: usize, dir: Option<&Path>) -> f64 {
    const LINE: usize = 64;
    let threads = threads.max(1);
    // Whole 64-byte lines per thread; u64 words so the buffer is 8-byte aligned.
    let lines_per = (bytes / LINE / threads).max(1);
    let words = lines_per * threads * (LINE / 8);
    let map = dir.and_then(|d| file_buffer(d, words * 8));
    let heap: Vec<u64> = if map.is_some() { Vec::new() } else { (0..words).map(probe_word).collect() };
    let buf: &[u64] = match &map {
        // SAFETY: a map is page-aligned and `words * 8` bytes long, every byte written, and
        // nothing else maps the (already unlinked) file.
        Some(m) => unsafe { std::slice::from_raw_parts(m.as_ptr().cast::<u64>(), words) },
        None => &heap,
    };
    // A buffer the last-level cache could partly hold reads partly from cache (a quarter of a
    // small device's memory is only a few times a server's L3): write its lines back and
    // evict them before every pass, untimed, so each pass reads RAM.
    let flush = words * 8 < 8 * last_level_cache();
    let barrier = std::sync::Barrier::new(threads + 1);
    let mut best = 0.0f64;
    std::thread::scope(|s| {
        for chunk in buf.chunks(words / threads) {
            let barrier = &barrier;
            s.spawn(move || {
                for _ in 0..=RAM_PASSES {
                    if flush {
                        evict(chunk);
                    }
                    barrier.wait(); // evicted
                    barrier.wait(); // go
                    std::hint::black_box(read_sum(chunk));
                    barrier.wait(); // done
                }
            });
        }
        for pass in 0..=RAM_PASSES {
            // The clock starts while every reader waits at "go": a main thread preempted
            // after it can only lengthen a pass (a start taken after the release could miss
            // the whole read on a loaded machine).
            barrier.wait();
            let start = Instant::now();
            barrier.wait();
            barrier.wait();
            if pass > 0 {
                best = best.max((words * 8) as f64 / start.elapsed().as_secs_f64() / 1e9);
            }
        }
    });
    best
}

/// Bytes of the largest CPU cache (sysfs; 32 MiB where it cannot be read).
pub fn last_level_cache() -> usize {
    let mut best = 0usize;
    for i in 0..8 {
        let path = format!("/sys/devices/system/cpu/cpu0/cache/index{i}/size");
        let Ok(t) = std::fs::read_to_string(path) else { break };
        let t = t.trim();
        let (num, mul) = match t.strip_suffix('K') {
            Some(n) => (n, 1 << 10),
            None => match t.strip_suffix('M') {
                Some(n) => (n, 1 << 20),
                None => (t, 1),
            },
        };
        best = best.max(num.parse::<usize>().unwrap_or(0) * mul);
    }
    if best == 0 { 32 << 20 } else { best }
}

/// Write back and evict every cache line of `words` (x86-64: clflush; aarch64: dc civac,
/// allowed at EL0 on Linux). Elsewhere a no-op: the buffer's size is the only defence.
fn evict(words: &[u64]) {
    #[cfg(target_arch = "x86_64")]
    {
        for line in words.chunks(8) {
            // SAFETY: clflush on an address inside a live slice (SSE2 is baseline on x86-64).
            unsafe { std::arch::x86_64::_mm_clflush(line.as_ptr().cast()) };
        }
        // SAFETY: a fence has no memory operands.
        unsafe { std::arch::x86_64::_mm_mfence() };
    }
    #[cfg(target_arch = "aarch64")]
    {
        for line in words.chunks(8) {
            // SAFETY: clean+invalidate by VA of an address inside a live slice.
            unsafe { std::arch::asm!("dc civac, {0}", in(reg) line.as_ptr(), options(nostack)) };
        }
        // SAFETY: a barrier has no operands.
        unsafe { std::arch::asm!("dsb ish", options(nostack)) };
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = words;
}

/// A `bytes`-long file in `dir`, filled with the probe's pattern through a shared map; the file
/// is unlinked at once (its pages live as long as the map).
fn file_buffer(dir: &Path, bytes: usize) -> Option<memmap2::MmapMut> {
    let path = dir.join(format!(".prima-ram-probe-{}", std::process::id()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).ok();
    let _ = std::fs::remove_file(&path);
    let file = file?;
    file.set_len(bytes as u64).ok()?;
    // SAFETY: the file is ours alone (created here, already unlinked).
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.ok()?;
    for (i, w) in map.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&probe_word(i).to_ne_bytes());
    }
    Some(map)
}

/// Word `i` of the probe's buffer (any values that are not all alike).
fn probe_word(i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9e37_79b9)
}

/// Timed passes of [`ram_read_gbps`] after its warm-up.
const RAM_PASSES: usize = 7;

/// A sum over `words` that the compiler cannot skip: every byte is loaded once, with 256-bit
/// loads where the CPU has AVX2 (128-bit loads alone can fall short of a core's read rate).
fn read_sum(words: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present.
        return unsafe { read_sum_avx2(words) };
    }
    read_sum_portable(words)
}

fn read_sum_portable(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    for line in words.chunks_exact(8) {
        for k in 0..8 {
            acc[k] = acc[k].wrapping_add(line[k]);
        }
    }
    acc.iter().fold(0, |a, &b| a.wrapping_add(b))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn read_sum_avx2(words: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_si256(); 4];
    let lines = words.chunks_exact(16);
    let rest = read_sum_portable(lines.remainder());
    for pair in lines {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: `pair` holds 16 words, 4 per load.
            let v = unsafe { _mm256_loadu_si256(pair.as_ptr().add(4 * k).cast()) };
            *a = _mm256_add_epi64(*a, v);
        }
    }
    let mut lanes = [0u64; 4];
    let sum = _mm256_add_epi64(_mm256_add_epi64(acc[0], acc[1]), _mm256_add_epi64(acc[2], acc[3]));
    // SAFETY: `lanes` has room for one 256-bit store.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), sum) };
    lanes.iter().fold(rest, |a, &b| a.wrapping_add(b))
}

/// KV append: convert one token's K and V rows (f32) to f16 into a cache slot, as the engine
/// does, at two sizes; fit `fixed + bytes / bandwidth`.
pub fn kv_append() -> KvAppend {
    let time = |elems: usize| -> f64 {
        let slots = 256;
        let src: Vec<f32> = (0..elems).map(|i| i as f32 * 1e-3).collect();
        let mut cache = vec![half::f16::ZERO; elems * slots];
        let mut samples = Vec::new();
        for _ in 0..7 {
            let start = Instant::now();
            for s in 0..slots {
                use half::slice::HalfFloatSliceExt;
                cache[s * elems..(s + 1) * elems].convert_from_f32_slice(&src);
                std::hint::black_box(&cache);
            }
            samples.push(start.elapsed().as_secs_f64() / slots as f64);
        }
        median(samples)
    };
    let (small, large) = (256usize, 16384usize);
    let (ts, tl) = (time(small), time(large));
    let slope = ((tl - ts) / ((large - small) * 2) as f64).max(1e-15); // s per byte
    KvAppend { fixed_us: ((ts - slope * (small * 2) as f64) * 1e6).max(0.0), gbps: 1.0 / slope / 1e9 }
}

/// A test file removed on drop (also on error and panic).
struct TempFile(PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A heap buffer aligned for O_DIRECT (4096 bytes: the logical block size of every disk
/// prima meets; 512-byte devices accept it too).
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, 4096).expect("valid layout");
        // SAFETY: a non-zero size; the pointer is checked below.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Aligned { ptr, layout }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` owns `layout.size()` initialised bytes.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `new`.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// The largest regular file directly in `dir` of at least `min` bytes (the model, a cached
/// layer file): reading it costs no disk space and no writes.
fn largest_file(dir: &Path, min: u64) -> Option<(PathBuf, u64)> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            (m.is_file() && m.len() >= min).then(|| (e.path(), m.len()))
        })
        .max_by_key(|(_, len)| *len)
}

/// Open `path` for reads that bypass the page cache: O_DIRECT on Linux/Android (None where the
/// filesystem refuses it, e.g. tmpfs), F_NOCACHE on macOS.
fn open_uncached(path: &Path) -> Option<(std::fs::File, &'static str)> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_DIRECT).open(path).ok()?;
        Some((f, "O_DIRECT"))
    }
    #[cfg(target_os = "macos")]
    {
        let f = std::fs::File::open(path).ok()?;
        (no_cache(&f) == "F_NOCACHE").then_some((f, "F_NOCACHE"))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "macos")))]
    {
        let _ = path;
        None
    }
}

/// Disk read speed on the filesystem holding `dir`, as a window's tail is re-read: the largest
/// file there of at least `bytes` (else a fresh test file of `bytes`, removed afterwards) read
/// without the page cache (O_DIRECT; where refused, fsync + POSIX_FADV_DONTNEED), sequentially
/// in 1 MiB blocks for at least `min_time` and at least `bytes` (wrapping round the file), then
/// page-sized reads at random offsets for a third of that.
pub fn disk(dir: &Path, bytes: usize, min_time: Duration) -> Result<Disk> {
    let mut guard = None;
    let (path, len) = match largest_file(dir, bytes as u64) {
        Some(found) => found,
        None => {
            let path = dir.join(format!(".prima-disk-test-{}", std::process::id()));
            guard = Some(TempFile(path.clone()));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut block = vec![0u8; 1 << 20];
            for i in 0..bytes.div_ceil(block.len()) {
                fill(&mut block, i as u64 + 1);
                f.write_all(&block)?;
            }
            f.sync_all()?;
            (path, (bytes.div_ceil(block.len()) * block.len()) as u64)
        }
    };
    let what = if guard.is_some() { "a test file" } else { "the largest file there" };
    let (mut f, method) = match open_uncached(&path) {
        Some((f, how)) => (f, format!("{how} reads of {what}")),
        None => {
            let f = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            (f, format!("POSIX_FADV_DONTNEED, then reads of {what}"))
        }
    };
    let cached = !method.starts_with('O') && !method.starts_with('F');
    if cached {
        drop_cache(&f, len as usize);
    }
    let mut block = Aligned::new(1 << 20);
    let block = block.as_mut();
    let start = Instant::now();
    let mut read = 0usize;
    let cap = min_time * 4;
    while (read < bytes || start.elapsed() < min_time) && start.elapsed() < cap {
        let n = f.read(block)?;
        if n == 0 {
            // Wrapped: the file is read again (uncached, so still from the disk).
            f.seek(SeekFrom::Start(0))?;
            if cached {
                drop_cache(&f, len as usize);
            }
            continue;
        }
        read += n;
    }
    let seq = read as f64 / start.elapsed().as_secs_f64() / 1e9;

    if cached {
        drop_cache(&f, len as usize);
    }
    let page = if cfg!(all(target_os = "macos", target_arch = "aarch64")) { 16384 } else { 4096 };
    let pages = (len as usize / page).max(1);
    let buf = &mut block[..page];
    let mut state = 0x2545_f491u64;
    let start = Instant::now();
    let mut n_reads = 0usize;
    while start.elapsed() < min_time / 3 && n_reads < pages {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        f.seek(SeekFrom::Start((state as usize % pages * page) as u64))?;
        if f.read(buf)? == 0 {
            break;
        }
        n_reads += 1;
    }
    let rnd = (n_reads * page) as f64 / start.elapsed().as_secs_f64().max(1e-9) / 1e9;
    drop(f);
    drop(guard);
    Ok(Disk { seq_gbps: seq, rnd_gbps: rnd, method })
}

#[cfg(target_os = "macos")]
fn no_cache(f: &std::fs::File) -> String {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on an open descriptor we own; F_NOCACHE takes an int flag.
    let r = unsafe { nix::libc::fcntl(f.as_raw_fd(), nix::libc::F_NOCACHE, 1) };
    if r == 0 { "F_NOCACHE".into() } else { "cached (F_NOCACHE failed)".into() }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn drop_cache(f: &std::fs::File, len: usize) {
    let _ = nix::fcntl::posix_fadvise(f, 0, len as i64, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn drop_cache(_f: &std::fs::File, _len: usize) {}
