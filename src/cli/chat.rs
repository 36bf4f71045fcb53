//! `prima chat`: an interactive conversation with a model on this device.

use argh::FromArgs;

use super::common::{Loaded, SamplingArgs};
use crate::chat::ChatTemplate;
use crate::chat_loop::Conversation;
use crate::error::Result;
use crate::generate::GenParams;

/// chat with a model on this device, using its chat template (/reset starts over, /exit quits)
#[derive(FromArgs)]
#[argh(subcommand, name = "chat")]
pub struct ChatArgs {
    /// the GGUF model
    #[argh(option, short = 'm')]
    pub model: String,
    /// system prompt
    #[argh(option, short = 's')]
    pub system: Option<String>,
    /// tokens per reply at most (default 512)
    #[argh(option, short = 'n', default = "512")]
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
    #[argh(option, default = "0.8")]
    /// sampling temperature; 0 is greedy (default 0.8)
    pub temp: f32,
    #[argh(option, default = "0x5eed")]
    /// random seed
    pub seed: u64,
}

pub fn run(a: ChatArgs) -> Result<()> {
    let mut l = Loaded::open_chat(&a.model, a.ctx, a.threads, a.gpu_layers)?;
    let template = l.template.take().unwrap_or_else(ChatTemplate::chatml);
    let sampling =
        SamplingArgs { temp: a.temp, seed: a.seed, top_k: 40, top_p: 0.95, min_p: 0.05, repeat_penalty: 1.0 };
    let params = GenParams { n_predict: a.n_predict, sampler: sampling.config()?, ignore_eog: false };
    Conversation::new(&mut l.pipeline, &l.tokenizer, template, params, a.system).repl()
}
