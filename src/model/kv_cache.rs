//! The key/value cache of one layer window: `[layer][sequence][position][kv_dim]`, f32,
//! allocated once. Pages are only touched as positions fill, so a large context costs memory
//! only when used. Each sequence has its own slot of `n_ctx` positions and its own length.

use crate::error::{Error, Result};

pub struct KvCache {
    n_layers: usize,
    n_ctx: usize,
    n_seq: usize,
    kv_dim_k: usize,
    kv_dim_v: usize,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Per sequence: positions `0..len` hold valid entries.
    len: Vec<usize>,
}

impl KvCache {
    /// An empty cache, or an error naming its size when the host cannot give that much memory
    /// (never an abort: a too-large `-c` or `n_ctx` from a peer is bad input).
    pub fn new(n_layers: usize, n_ctx: usize, n_seq: usize, kv_dim_k: usize, kv_dim_v: usize) -> Result<KvCache> {
        let n_seq = n_seq.max(1);
        let rows = n_layers.checked_mul(n_seq).and_then(|r| r.checked_mul(n_ctx));
        let len = |dim: usize| rows.and_then(|r| r.checked_mul(dim));
        let (Some(nk), Some(nv)) = (len(kv_dim_k), len(kv_dim_v)) else {
            return Err(too_large(n_layers, n_ctx, n_seq, None));
        };
        let bytes = (nk as u128 + nv as u128) * 4;
        let alloc = |n| zeroed(n).ok_or_else(|| too_large(n_layers, n_ctx, n_seq, Some(bytes)));
        Ok(KvCache { n_layers, n_ctx, n_seq, kv_dim_k, kv_dim_v, k: alloc(nk)?, v: alloc(nv)?, len: vec![0; n_seq] })
    }

    pub fn bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * 4
    }

    /// Positions each sequence can hold.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    pub fn n_seq(&self) -> usize {
        self.n_seq
    }

    /// Positions held for sequence `seq`.
    pub fn len(&self, seq: usize) -> usize {
        self.len[seq]
    }

    pub fn set_len(&mut self, seq: usize, len: usize) {
        self.len[seq] = len;
    }

    /// Forget every position of `seq` from `len` on (0 clears the sequence).
    pub fn truncate(&mut self, seq: usize, len: usize) {
        self.len[seq] = self.len[seq].min(len);
    }

    /// Forget every sequence.
    pub fn reset(&mut self) {
        self.len.fill(0);
    }

    fn slot(&self, layer: usize, seq: usize) -> usize {
        (layer * self.n_seq + seq) * self.n_ctx
    }

    pub fn k_row_mut(&mut self, layer: usize, seq: usize, pos: usize) -> &mut [f32] {
        let start = (self.slot(layer, seq) + pos) * self.kv_dim_k;
        &mut self.k[start..start + self.kv_dim_k]
    }

    pub fn v_row_mut(&mut self, layer: usize, seq: usize, pos: usize) -> &mut [f32] {
        let start = (self.slot(layer, seq) + pos) * self.kv_dim_v;
        &mut self.v[start..start + self.kv_dim_v]
    }

    /// Keys of `layer` and sequence `seq` for positions `0..n`.
    pub fn k_seq(&self, layer: usize, seq: usize, n: usize) -> &[f32] {
        let start = self.slot(layer, seq) * self.kv_dim_k;
        &self.k[start..start + n * self.kv_dim_k]
    }

    pub fn v_seq(&self, layer: usize, seq: usize, n: usize) -> &[f32] {
        let start = self.slot(layer, seq) * self.kv_dim_v;
        &self.v[start..start + n * self.kv_dim_v]
    }

    pub fn n_layers(&self) -> usize {
        self.n_layers
    }
}

fn too_large(n_layers: usize, n_ctx: usize, n_seq: usize, bytes: Option<u128>) -> Error {
    let size = bytes.map(|b| format!(" ({:.1} GiB)", b as f64 / (1u64 << 30) as f64)).unwrap_or_default();
    Error::msg(format!(
        "cannot allocate the KV cache of {n_layers} layer(s) × {n_seq} sequence(s) × {n_ctx} positions{size}: \
         not enough memory; use a smaller context (-c / ctx_size) or fewer parallel sequences"
    ))
}

/// `n` zeroed floats, or None when the allocator refuses. The pages come from the allocator
/// already zeroed (calloc, mmap), so a large cache costs memory only as positions fill.
fn zeroed(n: usize) -> Option<Vec<f32>> {
    if n == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<f32>(n).ok()?;
    // SAFETY: the layout has a non-zero size; a non-null result is a zeroed allocation of
    // exactly `n` f32s with the global allocator's alignment for f32, which is what
    // `Vec::from_raw_parts` requires (length = capacity = n, every element initialised to 0.0).
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut f32;
        if p.is_null() { None } else { Some(Vec::from_raw_parts(p, n, n)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_larger_than_any_memory_is_an_error_not_an_abort() {
        // 2^46 floats per side: far beyond what any allocator grants.
        let e = KvCache::new(32, 1 << 28, 4, 4096, 4096).err().expect("allocation refused");
        assert!(e.to_string().contains("cannot allocate the KV cache"), "{e}");
        // Sizes whose product overflows usize are refused too.
        assert!(KvCache::new(usize::MAX / 2, 4, 4, 4, 4).is_err());
        let c = KvCache::new(2, 8, 2, 4, 4).unwrap();
        assert_eq!(c.bytes(), 2 * 2 * 2 * 8 * 4 * 4);
    }
}
