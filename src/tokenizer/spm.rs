//! SentencePiece BPE (`tokenizer.ggml.model = llama`: Llama 1/2, Mistral v0.1).
//!
//! Spaces have already become `▁`. Start from one symbol per char; repeatedly merge the adjacent
//! pair whose concatenation is a vocabulary token with the highest score (leftmost on ties). Chars
//! that never became a token are spelled with byte tokens `<0xXX>`. A priority queue keeps this
//! O(n log n); the whole fragment is one sequence (SentencePiece has no pre-tokenizer).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::Tokenizer;

struct Sym {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Pair {
    score: f32,
    left: usize,
    right: usize,
    /// Byte length of the merged text, to detect pairs made stale by earlier merges.
    size: usize,
}

impl Ord for Pair {
    /// Highest score first; on equal scores, the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}
impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pair {}

pub fn encode(tok: &Tokenizer, text: &str, out: &mut Vec<u32>) {
    let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
    for (i, (start, c)) in text.char_indices().enumerate() {
        let len = c.len_utf8();
        let next = if start + len < text.len() { Some(i + 1) } else { None };
        syms.push(Sym { start, len, prev: i.checked_sub(1), next });
    }
    let mut queue = BinaryHeap::new();
    let add_pair = |syms: &[Sym], queue: &mut BinaryHeap<Pair>, left: usize, right: usize| {
        let size = syms[left].len + syms[right].len;
        let start = syms[left].start;
        if let Some(id) = tok.token_id(&text[start..start + size]) {
            queue.push(Pair { score: tok.scores[id as usize], left, right, size });
        }
    };
    for i in 1..syms.len() {
        add_pair(&syms, &mut queue, i - 1, i);
    }
    while let Some(pair) = queue.pop() {
        let (l, r) = (&syms[pair.left], &syms[pair.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != pair.size {
            continue;
        }
        syms[pair.left].len = pair.size;
        syms[pair.right].len = 0;
        let after = syms[pair.right].next;
        syms[pair.left].next = after;
        if let Some(a) = after {
            syms[a].prev = Some(pair.left);
        }
        if let Some(p) = syms[pair.left].prev {
            add_pair(&syms, &mut queue, p, pair.left);
        }
        if let Some(a) = after {
            add_pair(&syms, &mut queue, pair.left, a);
        }
    }
    let mut i = if syms.is_empty() { None } else { Some(0) };
    while let Some(s) = i {
        let piece = &text[syms[s].start..syms[s].start + syms[s].len];
        match tok.token_id(piece) {
            Some(id) => out.push(id),
            // Only single chars can miss (merged text is always a token): spell their bytes.
            None => out.extend(piece.bytes().filter_map(|b| tok.byte_token(b))),
        }
        i = syms[s].next;
    }
}
