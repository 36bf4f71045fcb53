//! The generation loop shared by `prima run`, `prima chat` and `prima up`: feed the prompt,
//! then sample, stream and feed back one token at a time. It drives any [`Decoder`] — one
//! device's [`Session`](crate::model::Session) or the head of a ring.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Something that appends tokens to a sequence and returns the next-token logits.
pub trait Decoder {
    /// Append `tokens` (at positions `pos()..`) and return the logits after the last one.
    fn decode(&mut self, tokens: &[u32]) -> Result<&[f32]>;
    /// Tokens already in the KV cache.
    fn pos(&self) -> usize;
    /// Forget the cache from `pos` on.
    fn truncate(&mut self, pos: usize) -> Result<()>;
    fn n_ctx(&self) -> usize;
}

impl Decoder for crate::model::Session {
    fn decode(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        crate::model::Session::decode(self, tokens)
    }
    fn pos(&self) -> usize {
        crate::model::Session::pos(self)
    }
    fn truncate(&mut self, pos: usize) -> Result<()> {
        crate::model::Session::truncate(self, pos);
        Ok(())
    }
    fn n_ctx(&self) -> usize {
        crate::model::Session::n_ctx(self)
    }
}

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

/// Generate after `prompt` (which is appended to whatever the decoder already holds).
/// Text is passed to `on_text` as soon as it forms whole UTF-8 characters.
pub fn generate(
    dec: &mut dyn Decoder,
    tok: &Tokenizer,
    prompt: &[u32],
    params: &GenParams,
    on_text: &mut dyn FnMut(&str),
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
    let mut stream = StreamDecoder::default();
    let t0 = Instant::now();
    let mut next = sampler.sample(dec.decode(prompt)?);
    stats.prompt_time = t0.elapsed();
    let t1 = Instant::now();
    let mut out = Vec::new();
    loop {
        if !params.ignore_eog && tok.is_eog(next) {
            break;
        }
        out.push(next);
        sampler.accept(next);
        on_text(&stream.push(tok, next));
        if out.len() >= params.n_predict || dec.pos() + 1 >= dec.n_ctx() {
            break;
        }
        next = sampler.sample(dec.decode(&[next])?);
    }
    on_text(&stream.finish());
    stats.n_gen = out.len();
    stats.gen_time = t1.elapsed();
    Ok((out, stats))
}
