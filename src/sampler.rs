//! Token sampling: greedy, or llama.cpp's chain — repetition penalty → top-k → top-p → min-p →
//! temperature → draw — with a seeded generator so runs repeat exactly.

/// Sampling settings (llama.cpp's defaults).
#[derive(Clone, Debug)]
pub struct SamplerConfig {
    /// 0 (or less) means greedy.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0.0 disables.
    pub min_p: f32,
    /// 1.0 disables.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl SamplerConfig {
    /// Settings a run can use: no NaN or infinity, probabilities within 0..=1.
    pub fn check(&self) -> crate::error::Result<()> {
        let bad = |what: &str, v: f32, range: &str| {
            Err(crate::error::Error::msg(format!("{what} = {v} is not a valid setting; use {range}")))
        };
        if !self.temperature.is_finite() {
            return bad("temperature", self.temperature, "a finite number (0 = greedy)");
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad("top_p", self.top_p, "a number from 0 to 1");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", self.min_p, "a number from 0 to 1");
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad("repeat_penalty", self.repeat_penalty, "a positive number (1 = off)");
        }
        Ok(())
    }
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0x5eed,
        }
    }
}

/// xorshift64*: tiny, fast, and identical on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Spread the seed (splitmix64) so small seeds do not start in a weak state.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

pub struct Sampler {
    pub config: SamplerConfig,
    rng: Rng,
    recent: Vec<u32>,
    candidates: Vec<(u32, f32)>,
}

/// Index of the largest logit (lowest id on ties, like llama.cpp's greedy sampler).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Sampler {
        Sampler { rng: Rng::new(config.seed), config, recent: Vec::new(), candidates: Vec::new() }
    }

    /// Record a token that is now part of the context (prompt or generated).
    pub fn accept(&mut self, token: u32) {
        self.recent.push(token);
        let keep = self.config.repeat_last_n.max(1);
        if self.recent.len() > 4 * keep {
            self.recent.drain(..self.recent.len() - keep);
        }
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let c = self.config.clone();
        let mut logits_view: std::borrow::Cow<[f32]> = std::borrow::Cow::Borrowed(logits);
        if c.repeat_penalty != 1.0 && c.repeat_last_n > 0 {
            let l = logits_view.to_mut();
            let start = self.recent.len().saturating_sub(c.repeat_last_n);
            let mut seen = std::collections::HashSet::new();
            for &t in &self.recent[start..] {
                if seen.insert(t)
                    && let Some(v) = l.get_mut(t as usize)
                {
                    *v = if *v > 0.0 { *v / c.repeat_penalty } else { *v * c.repeat_penalty };
                }
            }
        }
        if c.temperature <= 0.0 {
            return argmax(&logits_view);
        }
        let cand = &mut self.candidates;
        cand.clear();
        cand.extend(logits_view.iter().enumerate().map(|(i, &v)| (i as u32, v)));
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if c.top_k > 0 && c.top_k < cand.len() {
            cand.select_nth_unstable_by(c.top_k - 1, by_logit);
            cand.truncate(c.top_k);
        }
        cand.sort_by(by_logit);
        // Probabilities before temperature, as llama.cpp's top-p/min-p see them.
        let softmax = |cand: &[(u32, f32)], temp: f32| -> Vec<f32> {
            let max = cand[0].1;
            let e: Vec<f32> = cand.iter().map(|&(_, v)| ((v - max) / temp).exp()).collect();
            let s: f32 = e.iter().sum();
            e.into_iter().map(|x| x / s).collect()
        };
        if c.top_p < 1.0 {
            let p = softmax(cand, 1.0);
            let mut cum = 0.0;
            let mut keep = cand.len();
            for (i, pi) in p.iter().enumerate() {
                cum += pi;
                if cum >= c.top_p {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep.max(1));
        }
        if c.min_p > 0.0 {
            let p = softmax(cand, 1.0);
            let threshold = p[0] * c.min_p;
            let keep = p.iter().take_while(|&&pi| pi >= threshold).count();
            cand.truncate(keep.max(1));
        }
        let p = softmax(cand, c.temperature);
        let r = self.rng.next_f32();
        let mut cum = 0.0;
        for (i, pi) in p.iter().enumerate() {
            cum += pi;
            if r < cum {
                return cand[i].0;
            }
        }
        cand[cand.len() - 1].0
    }
}
