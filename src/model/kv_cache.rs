//! The key/value cache of one layer window: `[layer][position][kv_dim]`, f32, allocated once.
//! Pages are only touched as positions fill, so a large context costs memory only when used.

pub struct KvCache {
    n_layers: usize,
    pub n_ctx: usize,
    kv_dim_k: usize,
    kv_dim_v: usize,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Positions `0..len` hold valid entries.
    pub len: usize,
}

impl KvCache {
    pub fn new(n_layers: usize, n_ctx: usize, kv_dim_k: usize, kv_dim_v: usize) -> KvCache {
        KvCache {
            n_layers,
            n_ctx,
            kv_dim_k,
            kv_dim_v,
            k: vec![0.0; n_layers * n_ctx * kv_dim_k],
            v: vec![0.0; n_layers * n_ctx * kv_dim_v],
            len: 0,
        }
    }

    pub fn bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * 4
    }

    /// Forget every position from `len` on (0 clears the cache).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub fn k_rows_mut(&mut self, layer: usize, pos: usize, n: usize) -> &mut [f32] {
        let start = (layer * self.n_ctx + pos) * self.kv_dim_k;
        &mut self.k[start..start + n * self.kv_dim_k]
    }

    pub fn v_rows_mut(&mut self, layer: usize, pos: usize, n: usize) -> &mut [f32] {
        let start = (layer * self.n_ctx + pos) * self.kv_dim_v;
        &mut self.v[start..start + n * self.kv_dim_v]
    }

    /// Keys of `layer` for positions `0..n`.
    pub fn k_layer(&self, layer: usize, n: usize) -> &[f32] {
        let start = layer * self.n_ctx * self.kv_dim_k;
        &self.k[start..start + n * self.kv_dim_k]
    }

    pub fn v_layer(&self, layer: usize, n: usize) -> &[f32] {
        let start = layer * self.n_ctx * self.kv_dim_v;
        &self.v[start..start + n * self.kv_dim_v]
    }

    pub fn n_layers(&self) -> usize {
        self.n_layers
    }
}
