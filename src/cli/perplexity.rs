//! `prima perplexity`: llama-perplexity's estimate on a text file.

use argh::FromArgs;

use super::common::Loaded;
use crate::error::{Context, Result};

/// compute perplexity over a text file the way llama-perplexity does (same chunking)
#[derive(FromArgs)]
#[argh(subcommand, name = "perplexity")]
pub struct PerplexityArgs {
    /// the GGUF model
    #[argh(option, short = 'm')]
    pub model: String,
    /// the text file
    #[argh(option, short = 'f')]
    pub file: String,
    /// tokens per chunk (default 128)
    #[argh(option, short = 'c', default = "128")]
    pub ctx: usize,
    /// worker threads (default: physical cores)
    #[argh(option, short = 't')]
    pub threads: Option<usize>,
    /// layers run on the GPU, the last ones (also -ngl N, as in llama.cpp; default 0)
    #[argh(option, default = "0")]
    pub gpu_layers: usize,
}

pub fn run(a: PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file))?;
    let mut l = Loaded::open(&a.model, Some(a.ctx), a.threads, a.gpu_layers)?;
    let tokens = l.tokenizer.encode(&text, true, false);
    let bos = if l.tokenizer.add_bos() { l.tokenizer.bos() } else { None };
    eprintln!("{} tokens, {} chunks of {}", tokens.len(), tokens.len() / a.ctx, a.ctx);
    let t0 = std::time::Instant::now();
    let r = crate::perplexity::perplexity(&mut l.pipeline, &tokens, a.ctx, bos, |i, p| eprint!("[{i}]{p:.4},"))?;
    eprintln!();
    eprintln!(
        "{:.2} s, {:.1} tokens/s",
        t0.elapsed().as_secs_f64(),
        (r.n_chunks * a.ctx) as f64 / t0.elapsed().as_secs_f64()
    );
    println!("Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, r.plus_minus);
    Ok(())
}
