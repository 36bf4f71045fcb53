//! Element-wise and normalisation kernels, written to round like ggml's CPU backend.

/// How rotary embedding pairs dimensions: adjacent (llama) or split halves (NEOX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    Normal,
    Neox,
}

/// RMSNorm of each `dim`-wide row in place, then scaled by `weight` (ggml: sum of squares in
/// f64, then `1/sqrtf(mean + eps)` in f32).
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) {
    let dim = weight.len();
    for row in x.chunks_exact_mut(dim) {
        let sum: f64 = row.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / dim as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for (v, w) in row.iter_mut().zip(weight) {
            *v = (*v * scale) * w;
        }
    }
}

/// Copy `src` to `dst`, then RMSNorm `dst` (the residual stream stays untouched).
pub fn rms_norm_into(dst: &mut [f32], src: &[f32], weight: &[f32], eps: f32) {
    dst.copy_from_slice(src);
    rms_norm(dst, weight, eps);
}

pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Add a bias to each `bias.len()`-wide row.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add_in_place(row, bias);
    }
}

/// `gate = silu(gate) * up`, the SwiGLU activation.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// Per-position rotary tables: `cos`/`sin` for each of the `dims/2` frequencies, computed the
/// way ggml does (theta multiplied up in f32, optional per-frequency divisors).
pub struct Rope {
    pub dims: usize,
    pub style: RopeStyle,
    theta_scale: f32,
    freq_scale: f32,
    freq_factors: Option<Vec<f32>>,
}

impl Rope {
    pub fn new(dims: usize, base: f32, freq_scale: f32, style: RopeStyle, freq_factors: Option<Vec<f32>>) -> Rope {
        Rope { dims, style, theta_scale: base.powf(-2.0 / dims as f32), freq_scale, freq_factors }
    }

    /// Fill `cs` with (cos, sin) pairs for position `pos`.
    pub fn table(&self, pos: usize, cs: &mut [(f32, f32)]) {
        let mut theta = pos as f32;
        for (i, slot) in cs.iter_mut().enumerate().take(self.dims / 2) {
            let ff = self.freq_factors.as_ref().map_or(1.0, |f| f[i]);
            let t = self.freq_scale * (theta / ff);
            *slot = (t.cos(), t.sin());
            theta *= self.theta_scale;
        }
    }

    /// Rotate each `head_dim`-wide head of `x` (one token) with a table from [`Rope::table`].
    pub fn apply(&self, x: &mut [f32], head_dim: usize, cs: &[(f32, f32)]) {
        let half = self.dims / 2;
        for head in x.chunks_exact_mut(head_dim) {
            for (i, &(c, s)) in cs.iter().enumerate().take(half) {
                let (a, b) = match self.style {
                    RopeStyle::Normal => (2 * i, 2 * i + 1),
                    RopeStyle::Neox => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * c - x1 * s;
                head[b] = x0 * s + x1 * c;
            }
        }
    }
}

/// Softmax in place (ggml: max-subtracted exps summed in f64).
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums: vectorises, and rounds closer to ggml's SIMD sum than a serial loop.
    dot8(a, b)
}

/// The cached keys and values one query head attends over: position `j`'s key starts at
/// `j * kstride` of `keys`, its value at `j * vstride` of `values`, for `j < seen`.
pub struct HeadCache<'a> {
    pub keys: &'a [f32],
    pub kstride: usize,
    pub values: &'a [f32],
    pub vstride: usize,
    pub seen: usize,
}

/// One query head's attention over its cache: scores `q·k_j · scale`, softmax, then
/// `out = Σ_j p_j v_j`; `scores` has room for `cache.seen` values. On x86 the same code is
/// compiled for AVX2+FMA when the CPU has it (prefill runs this for every token and head).
pub fn attend(q: &[f32], cache: &HeadCache, scale: f32, scores: &mut [f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features were just checked.
        return unsafe { attend_avx2(q, cache, scale, scores, out) };
    }
    attend_body(q, cache, scale, scores, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(q: &[f32], cache: &HeadCache, scale: f32, scores: &mut [f32], out: &mut [f32]) {
    attend_body(q, cache, scale, scores, out)
}

#[inline(always)]
fn attend_body(q: &[f32], cache: &HeadCache, scale: f32, scores: &mut [f32], out: &mut [f32]) {
    let (hk, hv) = (q.len(), out.len());
    let scores = &mut scores[..cache.seen];
    for (j, s) in scores.iter_mut().enumerate() {
        *s = dot8(q, &cache.keys[j * cache.kstride..][..hk]) * scale;
    }
    softmax(scores);
    out.fill(0.0);
    for (j, &p) in scores.iter().enumerate() {
        for (o, v) in out.iter_mut().zip(&cache.values[j * cache.vstride..][..hv]) {
            *o += p * v;
        }
    }
}

/// `dot_f32`'s eight partial sums, inlined into the caller's target features.
#[inline(always)]
fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}
