//! Byte-level BPE (GPT-2 style, `tokenizer.ggml.model = gpt2`).
//!
//! Text is cut into words by the pre-tokenizer, each word's UTF-8 bytes are spelled with GPT-2's
//! byte→char map (so every byte is a printable char and a vocabulary entry), and inside each word
//! adjacent symbols are merged, lowest merge rank first, until no pair has a rank. A priority queue
//! keeps this O(n log n) in the word length.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::strings::{Repeated, StrTable};
use crate::Result;

/// GPT-2's reversible byte↔char map: printable Latin-1 bytes stand for themselves, the other 68
/// bytes (controls, space, 0x7F-0xA0, 0xAD) become U+0100.. in byte order.
pub struct ByteMap {
    to_char: [char; 256],
    /// Bytes of the chars U+0100..=U+0143, in order.
    shifted: [u8; 68],
}

fn is_printable_byte(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

impl ByteMap {
    pub fn new() -> ByteMap {
        let mut to_char = ['\0'; 256];
        let mut shifted = [0u8; 68];
        let mut n = 0;
        for b in 0..=255u8 {
            if is_printable_byte(b) {
                to_char[b as usize] = b as char;
            } else {
                to_char[b as usize] = char::from_u32(256 + n as u32).unwrap();
                shifted[n] = b;
                n += 1;
            }
        }
        ByteMap { to_char, shifted }
    }

    pub fn encode(&self, text: &str, out: &mut String) {
        out.extend(text.bytes().map(|b| self.to_char[b as usize]));
    }

    pub fn byte_of(&self, c: char) -> Option<u8> {
        let cp = c as u32;
        if cp < 256 && is_printable_byte(cp as u8) {
            Some(cp as u8)
        } else if (256..256 + 68).contains(&cp) {
            Some(self.shifted[cp as usize - 256])
        } else {
            None
        }
    }
}

/// Merge ranks keyed by `"left right"` (neither side contains a plain space in byte-level BPE):
/// a line's rank is its position in the packed list.
pub struct Merges {
    ranks: StrTable,
}

impl Merges {
    /// Parse `tokenizer.ggml.merges` lines `"left right"`. As in llama.cpp the split is at the first
    /// space after the first byte, and a repeated pair keeps its first (lowest) rank.
    pub fn new<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Merges> {
        // Split at the first space after byte 0 and rejoin with one space: the line itself.
        // A line without such a space is the pair ("", ""), as in llama.cpp.
        let keys = lines.map(|line| if line.bytes().skip(1).any(|b| b == b' ') { line } else { " " });
        Ok(Merges { ranks: StrTable::new(keys, Repeated::First)? })
    }

    fn rank(&self, key: &mut String, left: &str, right: &str) -> Option<u32> {
        key.clear();
        key.push_str(left);
        key.push(' ');
        key.push_str(right);
        self.ranks.find(key)
    }

    /// Split one byte-encoded word into its merged symbols (byte ranges of `word`).
    pub fn apply(&self, word: &str, out: &mut Vec<std::ops::Range<usize>>) {
        struct Sym {
            start: usize,
            len: usize,
            prev: Option<usize>,
            next: Option<usize>,
        }
        let mut syms: Vec<Sym> = Vec::with_capacity(word.len());
        for (i, (start, c)) in word.char_indices().enumerate() {
            let len = c.len_utf8();
            let next = if start + len < word.len() { Some(i + 1) } else { None };
            syms.push(Sym { start, len, prev: i.checked_sub(1), next });
        }
        // (rank, left, right, left len, right len); lowest rank first, then leftmost.
        let mut queue = BinaryHeap::new();
        let mut key = String::new();
        let mut add_pair = |syms: &[Sym], queue: &mut BinaryHeap<_>, left: usize, right: usize| {
            let (l, r) = (&syms[left], &syms[right]);
            let ltext = &word[l.start..l.start + l.len];
            let rtext = &word[r.start..r.start + r.len];
            if let Some(rank) = self.rank(&mut key, ltext, rtext) {
                queue.push(Reverse((rank, left, right, l.len, r.len)));
            }
        };
        for i in 1..syms.len() {
            add_pair(&syms, &mut queue, i - 1, i);
        }
        while let Some(Reverse((_, left, right, llen, rlen))) = queue.pop() {
            // Skip pairs made stale by an earlier merge: a side that grew or was absorbed.
            if syms[left].len != llen || syms[right].len != rlen || syms[right].len == 0 {
                continue;
            }
            syms[left].len += syms[right].len;
            syms[right].len = 0;
            let after = syms[right].next;
            syms[left].next = after;
            if let Some(a) = after {
                syms[a].prev = Some(left);
            }
            if let Some(p) = syms[left].prev {
                add_pair(&syms, &mut queue, p, left);
            }
            if let Some(a) = after {
                add_pair(&syms, &mut queue, left, a);
            }
        }
        out.extend(syms.iter().filter(|s| s.len > 0).map(|s| s.start..s.start + s.len));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_round_trips() {
        let m = ByteMap::new();
        for b in 0..=255u8 {
            assert_eq!(m.byte_of(m.to_char[b as usize]), Some(b));
        }
        assert_eq!(m.to_char[b' ' as usize], 'Ġ');
        assert_eq!(m.to_char[b'\n' as usize], 'Ċ');
    }

    #[test]
    fn merges_lowest_rank_first() {
        let merges = Merges::new(["a b", "b c", "ab c"].into_iter()).unwrap();
        let mut out = Vec::new();
        merges.apply("abc", &mut out);
        assert_eq!((out.len(), &out[0]), (1, &(0..3)));
        out.clear();
        merges.apply("bca", &mut out);
        assert_eq!(out, [0..2, 2..3]);
    }
}
