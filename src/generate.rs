//! The generation loop of every front end (`prima run`, `prima chat`, `prima up`): feed the
//! prompt, then sample, stream and feed back one token at a time, on sequence 0 of a
//! [`Pipeline`] — one device's or the head of a ring.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::model::Pipeline;
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::{StreamDecoder, Tokenizer};

#[derive(Clone, Debug)]
pub struct GenParams {
    /// Tokens to generate at most (generation also stops at end-of-generation tokens).
    pub n_predict: usize,
    pub sampler: SamplerConfig,
    /// Keep going past end-of-generation tokens (benchmarks, goldens).
    pub ignore_eog: bool,
}

#[derive(Clone, Debug, Default)]
pub struct GenStats {
    pub n_prompt: usize,
    pub prompt_time: Duration,
    pub n_gen: usize,
    pub gen_time: Duration,
}

impl GenStats {
    pub fn summary(&self) -> String {
        let pp = self.n_prompt as f64 / self.prompt_time.as_secs_f64().max(1e-9);
        // The first generated token comes with the prompt pass; the rest are timed as decode.
        let ms = if self.n_gen > 1 { self.gen_time.as_secs_f64() * 1e3 / (self.n_gen - 1) as f64 } else { 0.0 };
        format!(
            "prompt: {} tokens, {pp:.1} tok/s | generation: {} tokens, {ms:.2} ms/token ({:.1} tok/s)",
            self.n_prompt,
            self.n_gen,
            if ms > 0.0 { 1e3 / ms } else { 0.0 }
        )
    }
}

/// Generate after `prompt` (which is appended to whatever sequence 0 already holds).
/// Text is passed to `on_text` as soon as it forms whole UTF-8 characters.
pub fn generate(
    dec: &mut Pipeline,
    tok: &Tokenizer,
    prompt: &[u32],
    params: &GenParams,
    on_text: &mut dyn FnMut(&str),
) -> Result<(Vec<u32>, GenStats)> {
    let mut stream = StreamDecoder::default();
    let r = generate_tokens(dec, prompt, params, &|t| tok.is_eog(t), &mut |t| on_text(&stream.push(tok, t)));
    on_text(&stream.finish());
    r
}

/// The loop itself, on token ids: `is_eog` says which tokens end the generation (unless
/// `params.ignore_eog`), `on_token` receives each generated token as it is sampled.
pub fn generate_tokens(
    dec: &mut Pipeline,
    prompt: &[u32],
    params: &GenParams,
    is_eog: &dyn Fn(u32) -> bool,
    on_token: &mut dyn FnMut(u32),
) -> Result<(Vec<u32>, GenStats)> {
    if prompt.is_empty() {
        return Err(Error::msg("the prompt is empty: nothing to continue from"));
    }
    if dec.pos() + prompt.len() + 1 > dec.n_ctx() {
        return Err(Error::msg(format!(
            "the prompt needs {} positions but the context holds {} (raise -c)",
            dec.pos() + prompt.len() + 1,
            dec.n_ctx()
        )));
    }
    let mut sampler = Sampler::new(params.sampler.clone());
    for &t in prompt {
        sampler.accept(t);
    }
    let mut stats = GenStats { n_prompt: prompt.len(), ..Default::default() };
    let t0 = Instant::now();
    let mut next = sampler.sample(dec.decode(prompt)?);
    stats.prompt_time = t0.elapsed();
    let t1 = Instant::now();
    let mut out = Vec::new();
    loop {
        if !params.ignore_eog && is_eog(next) {
            break;
        }
        out.push(next);
        sampler.accept(next);
        on_token(next);
        if out.len() >= params.n_predict || dec.pos() + 1 >= dec.n_ctx() {
            break;
        }
        next = sampler.sample(dec.decode(&[next])?);
    }
    stats.n_gen = out.len();
    stats.gen_time = t1.elapsed();
    Ok((out, stats))
}
