//! `prima serve`: the OpenAI-compatible API and web page for a model on this device.

use std::path::Path;

use argh::FromArgs;

use crate::cpu::default_threads;
use crate::error::{Context, Result};
use crate::gguf::GgufFile;
use crate::gpu::Offload;
use crate::model::{Model, pipeline::default_context};
use crate::serve::{PipelineEngine, ServeModel, ServeOptions, read_api_key, serve, text_side};

/// serve a model on this device over an OpenAI-compatible HTTP API, with a web page at /
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
pub struct ServeArgs {
    /// the GGUF model
    #[argh(option, short = 'm')]
    pub model: String,
    /// address to listen on (default 127.0.0.1:8080)
    #[argh(option, default = "String::from(\"127.0.0.1:8080\")")]
    pub listen: String,
    /// file whose first line is the API key clients must send
    #[argh(option)]
    pub api_key_file: Option<String>,
    /// context length per sequence (default: the model's, capped by memory)
    #[argh(option, short = 'c')]
    pub ctx: Option<usize>,
    /// sequences served at once (default 4)
    #[argh(option, default = "4")]
    pub parallel: usize,
    /// requests that may wait for a free sequence before the server answers 503 (default 16)
    #[argh(option, default = "16")]
    pub queue: usize,
    /// worker threads (default: physical cores)
    #[argh(option, short = 't')]
    pub threads: Option<usize>,
    /// layers run on the GPU, the last ones (also -ngl N, as in llama.cpp; default 0)
    #[argh(option, default = "0")]
    pub gpu_layers: usize,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let mut opts = ServeOptions::new(&a.listen);
    opts.api_key = a.api_key_file.as_deref().map(|f| read_api_key(Path::new(f))).transpose()?;
    opts.queue = a.queue;
    if a.parallel == 0 {
        return Err(crate::error::Error::msg("--parallel 0: serve at least 1 sequence"));
    }
    let id =
        Path::new(&a.model).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| a.model.clone());
    let (path, ctx, parallel, gpu_layers) = (a.model.clone(), a.ctx, a.parallel, a.gpu_layers);
    let threads = a.threads.unwrap_or_else(default_threads);
    serve(opts, &id, move || {
        let (tokenizer, template) = text_side(Path::new(&path))?;
        let model = Model::from_gguf(GgufFile::open_weights(&path)?).with_context(|| path.clone())?;
        let n_ctx = ctx.unwrap_or_else(|| default_context(&model));
        let engine = PipelineEngine::local(&model, n_ctx, threads, parallel, &Offload::open(gpu_layers))?;
        eprintln!(
            "loaded {path}: {} layers, ctx {n_ctx} x {parallel} sequences, {threads} threads",
            model.config.n_layer
        );
        Ok(ServeModel { engine: Box::new(engine), tokenizer, template })
    })
}
