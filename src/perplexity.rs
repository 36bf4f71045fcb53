//! Perplexity the way llama-perplexity computes it, so the numbers compare: the text is cut
//! into chunks of `n_ctx` tokens, each evaluated from an empty cache (first token replaced by
//! BOS when the model adds one), and only the second half of each chunk is scored.

use crate::error::{Error, Result};
use crate::model::Pipeline;

#[derive(Clone, Debug)]
pub struct PerplexityResult {
    pub n_tokens: usize,
    pub n_chunks: usize,
    /// Perplexity after each chunk, like llama-perplexity's `[1]x,[2]y` line.
    pub running: Vec<f64>,
    pub ppl: f64,
    pub plus_minus: f64,
}

/// `log Σ exp(logits) - logits[target]` in f64.
fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    sum.ln() + max - logits[target as usize] as f64
}

pub fn perplexity(
    s: &mut Pipeline,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    mut progress: impl FnMut(usize, f64),
) -> Result<PerplexityResult> {
    let n_chunks = tokens.len() / n_ctx;
    if n_chunks == 0 || n_ctx < 4 {
        return Err(Error::msg(format!(
            "the text has {} tokens; at least {} (2 × the context) are needed",
            tokens.len(),
            2 * n_ctx
        )));
    }
    let n_vocab = s.n_vocab();
    let first = n_ctx / 2;
    let (mut sum, mut sum2, mut count) = (0f64, 0f64, 0usize);
    let mut running = Vec::new();
    for c in 0..n_chunks {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        s.truncate(0)?;
        let logits = s.decode_all(&chunk)?;
        for j in first..n_ctx - 1 {
            let v = nll(&logits[j * n_vocab..(j + 1) * n_vocab], chunk[j + 1]);
            sum += v;
            sum2 += v * v;
            count += 1;
        }
        let ppl = (sum / count as f64).exp();
        running.push(ppl);
        progress(c + 1, ppl);
    }
    let mean = sum / count as f64;
    let var = (sum2 / count as f64 - mean * mean).max(0.0);
    let ppl = mean.exp();
    let plus_minus = if count > 1 { ppl * (var / (count - 1) as f64).sqrt() } else { 0.0 };
    Ok(PerplexityResult { n_tokens: tokens.len(), n_chunks, running, ppl, plus_minus })
}
