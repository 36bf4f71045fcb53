//! The fake engine: a deterministic stand-in for the model, so the ring protocol is tested
//! without weights. Each layer mixes a running value with its index and the token position.

use std::ops::Range;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::model::window::check_rows;
use crate::model::{Ends, KvOp, SeqPos, Window};

const FAKE_MOD: u32 = 1021;

/// Stand-in for a layer window: row[0] ← (3·row[0] + layer + 1 + position) mod 1021 per layer,
/// in order; checks that every row arrives at the position its sequence's cache expects.
pub struct FakeWindow {
    layers: Range<usize>,
    n_embd: usize,
    n_ctx: usize,
    /// Per sequence: positions held.
    kv_len: Vec<usize>,
    /// Sleep per batch (from `PRIMA_FAKE_DELAY_MS`), to make a fake ring slow enough to break.
    delay: Duration,
}

impl FakeWindow {
    pub fn new(layers: Range<usize>, n_embd: usize, n_ctx: usize, n_seq: usize, delay: Duration) -> FakeWindow {
        FakeWindow { layers, n_embd, n_ctx, kv_len: vec![0; n_seq.max(1)], delay }
    }
}

impl Window for FakeWindow {
    fn forward(&mut self, rows: &[SeqPos], hidden: &mut Vec<f32>) -> Result<()> {
        let what = format!("layers {:?}", self.layers);
        check_rows(rows, &what, self.kv_len.len(), self.n_ctx, |s| self.kv_len[s])?;
        if hidden.len() != rows.len() * self.n_embd {
            return Err(Error::msg(format!("{what}: bad batch ({} rows, {} values)", rows.len(), hidden.len())));
        }
        for (r, row) in rows.iter().zip(hidden.chunks_exact_mut(self.n_embd)) {
            let mut v = row[0] as u32;
            for l in self.layers.clone() {
                v = (v * 3 + l as u32 + 1 + r.pos) % FAKE_MOD;
            }
            row[0] = v as f32;
            self.kv_len[r.seq as usize] = r.pos as usize + 1;
        }
        std::thread::sleep(self.delay);
        Ok(())
    }

    fn kv(&mut self, op: KvOp) -> Result<()> {
        match op {
            KvOp::Reset => self.kv_len.fill(0),
            KvOp::Truncate { seq, len } => {
                let l = self.kv_len.get_mut(seq as usize).ok_or_else(|| Error::msg(format!("no sequence {seq}")))?;
                *l = (*l).min(len as usize);
            }
        }
        Ok(())
    }
}

/// A window of no layers (a device that only forwards in some configuration).
pub struct EmptyWindow;

impl Window for EmptyWindow {
    fn forward(&mut self, _: &[SeqPos], _: &mut Vec<f32>) -> Result<()> {
        Ok(())
    }
    fn kv(&mut self, _: KvOp) -> Result<()> {
        Ok(())
    }
}

pub struct FakeEnds {
    pub n_embd: usize,
    pub n_vocab: usize,
}

impl Ends for FakeEnds {
    fn n_embd(&self) -> usize {
        self.n_embd
    }
    fn n_vocab(&self) -> usize {
        self.n_vocab
    }
    fn embed(&self, tokens: &[u32], out: &mut [f32]) -> Result<()> {
        out.fill(0.0);
        for (row, &t) in out.chunks_exact_mut(self.n_embd).zip(tokens) {
            row[0] = (t % FAKE_MOD) as f32;
        }
        Ok(())
    }
    fn logits(&mut self, hidden: &[f32], out: &mut [f32]) {
        out.fill(0.0);
        for (h, o) in hidden.chunks_exact(self.n_embd).zip(out.chunks_exact_mut(self.n_vocab)) {
            o[(h[0] as usize * 7 + 3) % self.n_vocab] = 1.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(layers: Range<usize>) -> FakeWindow {
        FakeWindow::new(layers, 2, 64, 2, Duration::ZERO)
    }

    fn rows(seq: u32, pos: usize, n: usize) -> Vec<SeqPos> {
        (0..n).map(|i| SeqPos::new(seq, pos + i)).collect()
    }

    #[test]
    fn fake_window_checks_positions_and_is_order_sensitive() {
        let (mut a, mut b, mut all) = (fake(0..2), fake(2..4), fake(0..4));
        let mut h1 = vec![5.0, 0.0, 6.0, 0.0];
        let mut h2 = h1.clone();
        a.forward(&rows(0, 0, 2), &mut h1).unwrap();
        b.forward(&rows(0, 0, 2), &mut h1).unwrap();
        all.forward(&rows(0, 0, 2), &mut h2).unwrap();
        assert_eq!(h1, h2);
        let mut h3 = vec![5.0, 0.0, 6.0, 0.0];
        let (mut a2, mut b2) = (fake(0..2), fake(2..4));
        b2.forward(&rows(0, 0, 2), &mut h3).unwrap();
        a2.forward(&rows(0, 0, 2), &mut h3).unwrap();
        assert_ne!(h1, h3);
        assert!(a.forward(&rows(0, 5, 1), &mut vec![0.0, 0.0]).is_err());
        a.kv(KvOp::Truncate { seq: 0, len: 1 }).unwrap();
        a.forward(&rows(0, 1, 1), &mut vec![0.0, 0.0]).unwrap();
        // Sequence 1 starts at 0 whatever sequence 0 holds; a third sequence does not exist.
        a.forward(&rows(1, 0, 1), &mut vec![0.0, 0.0]).unwrap();
        assert!(a.forward(&rows(2, 0, 1), &mut vec![0.0, 0.0]).is_err());
    }
}
