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

#[test]
fn window_uses_the_map_in_place_and_touches_only_its_layers() {
    let dir = std::env::temp_dir().join(format!("prima-it-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mini.gguf");
    let vocab = GgufFile::open(fixtures().join("vocab/c-2048.vocab-only.gguf")).unwrap();
    write_model(&SHAPE, 4, Mix::Q4KM, &vocab, &path).unwrap();

    let m = Model::open(&path).unwrap();
    let f = m.gguf.clone();
    // The kernel's read-around (8 MiB on some disks) would read neighbours we never touch.
    // Parsing the header already read ahead: start from a cold cache.
    f.mmap().unwrap().advise(memmap2::Advice::Random).unwrap();
    drop_cache(&path);
    let pool = Arc::new(ThreadPool::new(1));
    let mut w = LayerWindow::new(&m, 1..2, 8, pool).unwrap();
    // In place: every matrix is a slice of the file map, not a heap copy.
    let map = f.bytes().as_ptr_range();
    for l in w.layer_weights() {
        for mat in l.matrices() {
            assert!(map.contains(&mat.data().as_ptr()), "{} is not read from the map", mat.name);
        }
    }
    let mut h = vec![0.01f32; SHAPE.n_embd];
    w.forward(&mut h, 1, 0).unwrap();

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
