//! Weights stay in the page cache: a window reads its matrices in place from the map, touches
//! no other layer's pages, and `release` drops pages it no longer needs.

use std::ops::Range;
use std::sync::Arc;

use prima::cpu::ThreadPool;
use prima::gguf::GgufFile;
use prima::memory::pager::{layer_ranges, unused_ranges};
use prima::model::{LayerWindow, Model};
use prima::synth::{Mix, Shape, write_model};

use super::common::fixtures;

const SHAPE: Shape = Shape {
    name: "mini",
    n_layer: 4,
    n_embd: 512,
    n_ff: 2048,
    n_head: 8,
    n_head_kv: 4,
    n_vocab: 2048,
    rope_base: 10000.0,
};

/// Fraction of the pages of `ranges` that are in the page cache.
fn resident(f: &GgufFile, ranges: &[Range<usize>]) -> f64 {
    let page = prima::memory::page_size();
    let base = f.bytes().as_ptr() as usize;
    let (mut yes, mut all) = (0usize, 0usize);
    for r in ranges {
        let start = r.start / page * page;
        let n = (r.end - start).div_ceil(page);
        let mut v = vec![0u8; n];
        // SAFETY: the range lies inside the live mapping; mincore only reports residency.
        let rc = unsafe { nix::libc::mincore((base + start) as *mut _, n * page, v.as_mut_ptr()) };
        assert_eq!(rc, 0);
        yes += v.iter().filter(|&&b| b & 1 == 1).count();
        all += n;
    }
    yes as f64 / all.max(1) as f64
}

fn drop_cache(path: &std::path::Path) {
    let file = std::fs::File::open(path).unwrap();
    // Dirty pages (the file was just written) are not dropped.
    file.sync_all().unwrap();
    nix::fcntl::posix_fadvise(&file, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
}

/// A fresh `n_layer`-layer [`SHAPE`] model in its own temporary directory, opened, with no page
/// cached: (dir, model path, model).
fn cold_mini_model(test: &str, n_layer: usize) -> (std::path::PathBuf, std::path::PathBuf, Model) {
    let dir = std::env::temp_dir().join(format!("prima-it-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mini.gguf");
    let vocab = GgufFile::open(fixtures().join("vocab/c-2048.vocab-only.gguf")).unwrap();
    write_model(&Shape { n_layer, ..SHAPE }, n_layer, Mix::Q4KM, &vocab, &path).unwrap();
    let m = Model::open(&path).unwrap();
    // The kernel's read-around (8 MiB on some disks) would read neighbours we never touch.
    // Parsing the header already read ahead: start from a cold cache.
    m.gguf.mmap().unwrap().advise(memmap2::Advice::Random).unwrap();
    drop_cache(&path);
    (dir, path, m)
}

#[test]
fn window_uses_the_map_in_place_and_touches_only_its_layers() {
    let (dir, _, m) = cold_mini_model("memory", 4);
    let f = m.gguf.clone();
    let pool = Arc::new(ThreadPool::new(1));
    let mut w = LayerWindow::new(&m, 1..2, 8, 1, pool).unwrap();
    // In place: every matrix is a slice of the file map, not a heap copy.
    let map = f.bytes().as_ptr_range();
    for l in w.layer_weights() {
        for mat in l.matrices() {
            assert!(map.contains(&mat.data().as_ptr()), "{} is not read from the map", mat.name);
        }
    }
    let mut h = vec![0.01f32; SHAPE.n_embd];
    w.run(&[prima::model::SeqPos::new(0, 0)], &mut h).unwrap();

    let mine = layer_ranges(&f, 1..2);
    assert!(resident(&f, &mine) > 0.99, "own layer resident: {}", resident(&f, &mine));
    // Other layers: at most a page shared with ours.
    for l in [0, 2, 3] {
        let r = resident(&f, &layer_ranges(&f, l..l + 1));
        assert!(r < 0.01, "layer {l} resident: {r}");
    }

    // What a device never runs is everything but its layers and the shared tensors.
    let unused = unused_ranges(&f, std::slice::from_ref(&mine));
    let others = [layer_ranges(&f, 0..1), layer_ranges(&f, 2..4)].concat();
    let covered = |r: &Range<usize>| unused.iter().any(|u| u.start <= r.start + 4096 && r.end <= u.end + 4096);
    assert!(others.iter().all(covered));
    assert!(!mine.iter().any(|r| unused.iter().any(|u| u.start < r.end && r.start < u.end)));

    // Release drops this mapping's pages and the page cache's.
    prima::memory::release(&f, &mine);
    assert!(resident(&f, &mine) < 0.01, "after release: {}", resident(&f, &mine));
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Wait up to 5 s for `cond`.
fn eventually(cond: impl Fn() -> bool) -> bool {
    let t = std::time::Instant::now();
    while t.elapsed().as_secs() < 5 {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    cond()
}

#[test]
fn follow_reads_a_tail_ahead_of_the_compute_and_drops_it_behind() {
    use prima::memory::prefetch::{Follow, Prefetcher};
    use std::sync::atomic::Ordering;
    let (dir, path, m) = cold_mini_model("follow", 8);
    let f = m.gguf.clone();
    let pool = Arc::new(ThreadPool::new(1));
    // The window's ranges in compute order: seven matrices per layer.
    let w = LayerWindow::new(&m, 0..8, 8, 1, pool).unwrap();
    let units = w.file_ranges();
    assert_eq!(units.len(), 8 * prima::model::window::MATRICES_PER_LAYER);
    let layer = |l: usize| units[l * 7..(l + 1) * 7].to_vec();
    let bytes = |l: usize| layer(l).iter().map(|r| r.len() as u64).sum::<u64>();
    // Loading the window read some of its pages; unmap and drop them all.
    drop_cache(&path);
    prima::memory::release(&f, &units);
    assert!(
        resident(&f, &units) < 0.01,
        "after release: {:?}",
        (0..28).map(|u| resident(&f, &units[u..u + 1])).collect::<Vec<_>>()
    );

    // Layer 0 is the resident head, the rest the tail; one layer of room.
    let p = Prefetcher::new(f.clone());
    let done = p.units_done();
    done.store(0, Ordering::Release);
    let keep = bytes(0);
    p.follow(Follow { units: units.clone(), keep, read_from: keep, room: bytes(1), stale_at: 1 });
    // While the head runs, the first room of the tail is read and no more.
    assert!(eventually(|| resident(&f, &layer(1)) > 0.99), "layer 1: {}", resident(&f, &layer(1)));
    std::thread::sleep(std::time::Duration::from_millis(50));
    let far = units[3 * 7..].to_vec();
    assert!(resident(&f, &far) < 0.05, "layers 3-7 read too early: {}", resident(&f, &far));
    // The compute is in layer 2: layer 1 is dropped, layer 2 read.
    done.store(14, Ordering::Release);
    assert!(eventually(|| resident(&f, &layer(1)) < 0.01), "layer 1 kept: {}", resident(&f, &layer(1)));
    assert!(eventually(|| resident(&f, &layer(2)) > 0.99), "layer 2: {}", resident(&f, &layer(2)));
    // All done: everything behind the compute dropped, the head left alone.
    done.store(56, Ordering::Release);
    let tail = units[7..].to_vec();
    assert!(eventually(|| resident(&f, &tail) < 0.01), "tail kept: {}", resident(&f, &tail));
    // Once stale the thread takes the next request.
    p.advance(1);
    p.request(layer(7));
    assert!(eventually(|| resident(&f, &layer(7)) > 0.99));
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}
