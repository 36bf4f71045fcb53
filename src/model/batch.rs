//! What one pass of the pipeline carries: tokens of one or more sequences, each token with
//! its sequence, its position in that sequence, and whether its logits are wanted.

use serde::{Deserialize, Serialize};

/// A sequence's index, `0..n_seq` of the pipeline (its KV slot).
pub type SeqId = u32;

/// Where a token (a row of hidden state) sits: its sequence and its position in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqPos {
    pub seq: SeqId,
    pub pos: u32,
}

impl SeqPos {
    pub fn new(seq: SeqId, pos: usize) -> SeqPos {
        SeqPos { seq, pos: pos as u32 }
    }
}

/// True when no sequence has two tokens among `rows`: a decode step (timed as one).
pub fn one_per_sequence(rows: &[SeqPos]) -> bool {
    rows.len() <= 64 && rows.iter().enumerate().all(|(i, r)| rows[..i].iter().all(|q| q.seq != r.seq))
}

/// A KV cache operation on every window of a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    /// Forget every sequence.
    Reset,
    /// Keep only the first `len` positions of sequence `seq` (0 clears it).
    Truncate { seq: SeqId, len: u32 },
}

/// Tokens for one [`Pipeline::decode_batch`](super::Pipeline::decode_batch): parallel lists of
/// token, (sequence, position) and want-logits. Within a sequence, positions must follow each
/// other, starting at or before the sequence's length (a start before it overwrites the rest).
#[derive(Clone, Debug, Default)]
pub struct Batch {
    tokens: Vec<u32>,
    rows: Vec<SeqPos>,
    logits: Vec<bool>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Add `token` at position `pos` of sequence `seq`; `logits`: return its next-token logits.
    pub fn push(&mut self, token: u32, seq: SeqId, pos: usize, logits: bool) {
        self.tokens.push(token);
        self.rows.push(SeqPos::new(seq, pos));
        self.logits.push(logits);
    }

    /// Add `tokens` at positions `pos..` of `seq`, wanting the logits of the last one only.
    pub fn push_sequence(&mut self, seq: SeqId, pos: usize, tokens: &[u32]) {
        for (i, &t) in tokens.iter().enumerate() {
            self.push(t, seq, pos + i, i + 1 == tokens.len());
        }
    }

    pub fn clear(&mut self) {
        self.tokens.clear();
        self.rows.clear();
        self.logits.clear();
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn rows(&self) -> &[SeqPos] {
        &self.rows
    }

    /// Per token: are its logits returned?
    pub fn wants_logits(&self) -> &[bool] {
        &self.logits
    }

    /// Tokens whose logits are returned (rows of the result of `decode_batch`).
    pub fn n_logits(&self) -> usize {
        self.logits.iter().filter(|&&l| l).count()
    }
}
