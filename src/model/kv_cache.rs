//! The key/value cache of one layer window: `[layer][sequence][position][kv_dim]`, f32,
//! allocated once. Pages are only touched as positions fill, so a large context costs memory
//! only when used. Each sequence has its own slot of `n_ctx` positions and its own length.

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
    pub fn new(n_layers: usize, n_ctx: usize, n_seq: usize, kv_dim_k: usize, kv_dim_v: usize) -> KvCache {
        let n_seq = n_seq.max(1);
        KvCache {
            n_layers,
            n_ctx,
            n_seq,
            kv_dim_k,
            kv_dim_v,
            k: vec![0.0; n_layers * n_seq * n_ctx * kv_dim_k],
            v: vec![0.0; n_layers * n_seq * n_ctx * kv_dim_v],
            len: vec![0; n_seq],
        }
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
