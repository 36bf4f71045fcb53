//! `prima run`: generate a continuation of a prompt on this device.

use std::io::Write;

use argh::FromArgs;

use super::common::{Loaded, SamplingArgs};
use crate::error::Result;
use crate::generate::{GenParams, generate};

/// generate text from a prompt on this device: the text goes to stdout, logs and timings to stderr
#[derive(FromArgs)]
#[argh(subcommand, name = "run")]
pub struct RunArgs {
    /// the GGUF model
    #[argh(option, short = 'm')]
    pub model: String,
    /// the prompt
    #[argh(option, short = 'p')]
    pub prompt: String,
    /// tokens to generate at most (default 128)
    #[argh(option, short = 'n', default = "128")]
    pub n_predict: usize,
    /// context length (default: the model's, capped by memory)
    #[argh(option, short = 'c')]
    pub ctx: Option<usize>,
    /// worker threads (default: physical cores)
    #[argh(option, short = 't')]
    pub threads: Option<usize>,
    /// layers run on the GPU, the last ones (also -ngl N, as in llama.cpp; default 0)
    #[argh(option, default = "0")]
    pub gpu_layers: usize,
    /// read special tokens such as <|im_start|> in the prompt as tokens
    #[argh(switch)]
    pub special: bool,
    /// keep generating past end-of-text tokens
    #[argh(switch)]
    pub ignore_eos: bool,
    #[argh(option, default = "0.8")]
    /// sampling temperature; 0 is greedy (default 0.8)
    pub temp: f32,
    #[argh(option, default = "0x5eed")]
    /// random seed (default fixed, so runs repeat)
    pub seed: u64,
    /// top-k (default 40, 0 = off)
    #[argh(option, default = "40")]
    pub top_k: usize,
    /// top-p (default 0.95, 1 = off)
    #[argh(option, default = "0.95")]
    pub top_p: f32,
    /// min-p (default 0.05, 0 = off)
    #[argh(option, default = "0.05")]
    pub min_p: f32,
    /// repetition penalty (default 1.0 = off)
    #[argh(option, default = "1.0")]
    pub repeat_penalty: f32,
}

pub fn run(a: RunArgs) -> Result<()> {
    let sampling = SamplingArgs {
        temp: a.temp,
        seed: a.seed,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repeat_penalty: a.repeat_penalty,
    };
    let mut l = Loaded::open(&a.model, a.ctx, a.threads, a.gpu_layers)?;
    let prompt = l.tokenizer.encode(&a.prompt, true, a.special);
    let params = GenParams { n_predict: a.n_predict, sampler: sampling.config()?, ignore_eog: a.ignore_eos };
    let mut stdout = std::io::stdout().lock();
    let (_, stats) = generate(&mut l.pipeline, &l.tokenizer, &prompt, &params, &mut |text| {
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    })?;
    let _ = writeln!(stdout);
    eprintln!("{}", stats.summary());
    Ok(())
}
