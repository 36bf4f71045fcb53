//! Many short strings in one buffer — a vocabulary, a BPE merge list — found by position or by
//! text. Llama 3's 128k tokens and 280k merges as `Vec<String>` + `HashMap<String, u32>` took
//! about 40 MiB of heap, one block per string; packed they take their bytes plus a few bytes
//! per string, which is memory pressure the head of a cluster does not pay.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use crate::{Result, bail};

/// Byte strings back to back: string `i` is `bytes[ends[i - 1]..ends[i]]`.
#[derive(Default)]
pub struct Packed {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Packed {
    pub fn push(&mut self, s: &[u8]) {
        self.bytes.extend_from_slice(s);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.bytes[start..end])
    }

    fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
    }
}

/// Which position a text that occurs more than once is found at.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Repeated {
    /// The first (BPE merges: a repeated pair keeps its lowest rank).
    First,
    /// The last (vocabularies, as llama.cpp's `token_to_id` map).
    Last,
}

/// UTF-8 strings, [`Packed`], with a hash index from text to position.
pub struct StrTable {
    packed: Packed,
    /// Open addressing with linear probing, at most half full: position + 1, 0 when empty.
    slots: Vec<u32>,
    hasher: RandomState,
}

impl StrTable {
    pub fn new<S: AsRef<str>>(items: impl IntoIterator<Item = S>, repeated: Repeated) -> Result<StrTable> {
        let mut packed = Packed::default();
        for s in items {
            packed.push(s.as_ref().as_bytes());
        }
        packed.shrink_to_fit();
        let n = packed.len();
        if n >= u32::MAX as usize / 2 {
            bail!("{n} strings are more than a string table holds");
        }
        let mut table =
            StrTable { packed, slots: vec![0; (2 * n).next_power_of_two().max(8)], hasher: RandomState::new() };
        for i in 0..n {
            let s = table.get(i).expect("i < n");
            let slot = table.slot(s);
            match table.slots[slot] {
                0 => table.slots[slot] = i as u32 + 1,
                _ if repeated == Repeated::Last => table.slots[slot] = i as u32 + 1,
                _ => {}
            }
        }
        Ok(table)
    }

    pub fn len(&self) -> usize {
        self.packed.len()
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        // Every string was pushed as a whole `&str`, so each range is valid UTF-8.
        self.packed.get(i).map(|b| std::str::from_utf8(b).expect("pushed as str"))
    }

    /// The position of `text` (see [`Repeated`] for texts that occur more than once).
    pub fn find(&self, text: &str) -> Option<u32> {
        match self.slots[self.slot(text)] {
            0 => None,
            p => Some(p - 1),
        }
    }

    /// The slot holding `text`, or the empty slot where it would go.
    fn slot(&self, text: &str) -> usize {
        let mask = self.slots.len() - 1;
        let mut j = self.hasher.hash_one(text) as usize & mask;
        loop {
            match self.slots[j] {
                0 => return j,
                p if self.packed.get(p as usize - 1) == Some(text.as_bytes()) => return j,
                _ => j = (j + 1) & mask,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_string_and_keeps_the_chosen_repeat() {
        let items = ["a", "bb", "", "a", "ccc", "bb"];
        let first = StrTable::new(items, Repeated::First).unwrap();
        let last = StrTable::new(items, Repeated::Last).unwrap();
        assert_eq!(first.len(), 6);
        assert_eq!((0..6).map(|i| first.get(i).unwrap()).collect::<Vec<_>>(), items);
        assert_eq!((first.find("a"), last.find("a")), (Some(0), Some(3)));
        assert_eq!((first.find("bb"), last.find("bb")), (Some(1), Some(5)));
        assert_eq!((first.find(""), first.find("ccc")), (Some(2), Some(4)));
        assert_eq!((first.find("b"), first.find("cc"), first.get(6)), (None, None, None));
        // Enough strings to wrap the probe sequence many times.
        let many: Vec<String> = (0..5000).map(|i| format!("t{i}")).collect();
        let t = StrTable::new(&many, Repeated::Last).unwrap();
        assert!(many.iter().enumerate().all(|(i, s)| t.find(s) == Some(i as u32)));
        assert_eq!(t.find("t5000"), None);
    }
}
