//! Background prefetch: a thread that reads one byte per page of the ranges it is given, so
//! the disk reads finish before the compute needs them. Advice alone (WILLNEED) is a hint the
//! kernel may cap at its read-ahead window; touching makes the read happen.

use std::ops::Range;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use crate::gguf::GgufFile;

pub struct Prefetcher {
    tx: Option<Sender<Vec<Range<usize>>>>,
    thread: Option<JoinHandle<()>>,
}

impl Prefetcher {
    pub fn new(file: GgufFile) -> Prefetcher {
        let (tx, rx) = channel();
        let thread = std::thread::Builder::new()
            .name("prima-prefetch".into())
            .spawn(move || touch_loop(&file, rx))
            .expect("spawning the prefetch thread");
        Prefetcher { tx: Some(tx), thread: Some(thread) }
    }

    /// Queue ranges to be read in; returns at once.
    pub fn request(&self, ranges: Vec<Range<usize>>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(ranges);
        }
    }
}

fn touch_loop(file: &GgufFile, rx: Receiver<Vec<Range<usize>>>) {
    let page = super::page_size();
    let bytes = file.bytes();
    while let Ok(ranges) = rx.recv() {
        let mut sum = 0u8;
        for r in ranges {
            let end = r.end.min(bytes.len());
            let mut i = r.start;
            while i < end {
                // A volatile read so the compiler cannot drop the touch.
                sum ^= unsafe { std::ptr::read_volatile(bytes.as_ptr().add(i)) };
                i += page;
            }
        }
        std::hint::black_box(sum);
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
