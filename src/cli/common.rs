//! What several subcommands share: loading a model with its tokenizer, sampling flags.

use crate::chat::ChatTemplate;
use crate::cpu::default_threads;
use crate::error::{Context, Error, Result};
use crate::gguf::GgufFile;
use crate::gpu::Offload;
use crate::model::pipeline::default_context;
use crate::model::{Model, Pipeline};
use crate::sampler::SamplerConfig;
use crate::tokenizer::Tokenizer;

pub struct SamplingArgs {
    pub temp: f32,
    pub seed: u64,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
}

impl SamplingArgs {
    pub fn config(&self) -> Result<SamplerConfig> {
        let c = SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            ..SamplerConfig::default()
        };
        c.check()?;
        Ok(c)
    }
}

/// Largest context accepted at all (positions are u32 on the wire; far beyond any model).
const MAX_CTX: usize = 1 << 24;

/// A context the KV cache can hold: a clear error instead of an allocation that aborts.
fn check_context(model: &Model, n_ctx: usize) -> Result<()> {
    let c = &model.config;
    if !(1..=MAX_CTX).contains(&n_ctx) {
        return Err(Error::msg(format!(
            "context size {n_ctx}: use 1 to {MAX_CTX} (the model was trained on {})",
            c.n_ctx_train
        )));
    }
    let per_pos = ((c.kv_dim_k() + c.kv_dim_v()) * 4 * c.n_layer) as u64;
    let need = per_pos.saturating_mul(n_ctx as u64);
    if let Some(avail) = crate::sys::available_memory()
        && need > avail
    {
        return Err(Error::msg(format!(
            "context size {n_ctx} needs {:.1} GiB of KV cache; {:.1} GiB of memory is available (the model was trained on {} positions; try -c {})",
            need as f64 / (1u64 << 30) as f64,
            avail as f64 / (1u64 << 30) as f64,
            c.n_ctx_train,
            (avail / per_pos.max(1)).min(c.n_ctx_train as u64).max(1)
        )));
    }
    Ok(())
}

/// A model ready to run on this device.
pub struct Loaded {
    pub tokenizer: Tokenizer,
    /// The chat template (the file's, else ChatML), when opened with [`Loaded::open_chat`].
    pub template: Option<ChatTemplate>,
    pub pipeline: Pipeline,
}

impl Loaded {
    /// `gpu_layers`: the last layers that run on the GPU (`-ngl`).
    pub fn open(path: &str, ctx: Option<usize>, threads: Option<usize>, gpu_layers: usize) -> Result<Loaded> {
        Self::open_with(path, ctx, threads, gpu_layers, false)
    }

    /// [`Loaded::open`] with the chat template.
    pub fn open_chat(path: &str, ctx: Option<usize>, threads: Option<usize>, gpu_layers: usize) -> Result<Loaded> {
        Self::open_with(path, ctx, threads, gpu_layers, true)
    }

    fn open_with(
        path: &str,
        ctx: Option<usize>,
        threads: Option<usize>,
        gpu_layers: usize,
        chat: bool,
    ) -> Result<Loaded> {
        let t0 = std::time::Instant::now();
        // The tokenizer (and template) from a full parse of the header, which then goes; the
        // model keeps a header without the vocabulary arrays (~24 MiB at 128k tokens).
        let header = GgufFile::open(path)?;
        let tokenizer = Tokenizer::from_gguf(&header).with_context(|| path.to_string())?;
        let template = match chat {
            true => Some(ChatTemplate::from_gguf(&header)?.unwrap_or_else(ChatTemplate::chatml)),
            false => None,
        };
        drop(header);
        let model = Model::from_gguf(GgufFile::open_weights(path)?).with_context(|| path.to_string())?;
        crate::sys::release_free_heap();
        let n_ctx = ctx.unwrap_or_else(|| default_context(&model));
        check_context(&model, n_ctx)?;
        let threads = threads.unwrap_or_else(default_threads);
        if !(1..=1024).contains(&threads) {
            return Err(Error::msg(format!("{threads} threads: use 1 to 1024")));
        }
        let n_layer = model.config.n_layer;
        let pipeline = Offload::open(gpu_layers).pipeline(&model, n_ctx, 1, threads, &[n_layer])?;
        let c = &model.config;
        eprintln!(
            "loaded {path}: {} {} layers, {} embd, {} vocab, {} | ctx {n_ctx}, {threads} threads, {} kernels ({:.0} ms)",
            c.arch_name,
            c.n_layer,
            c.n_embd,
            c.n_vocab,
            crate::model::file_type_name(&model),
            crate::cpu::kernel_summary(),
            t0.elapsed().as_secs_f64() * 1e3
        );
        Ok(Loaded { tokenizer, template, pipeline })
    }
}
