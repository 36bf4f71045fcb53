//! `prima synth`: write a random-weight model of a real large-model shape (benchmarks).

use argh::FromArgs;

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::synth::{self, Mix};

/// write a random-weight GGUF model with a real model's shape (for speed benchmarks)
#[derive(FromArgs)]
#[argh(subcommand, name = "synth")]
pub struct SynthArgs {
    /// shape: llama3-8b, llama3-70b or qwen25-32b (default llama3-8b)
    #[argh(option, default = "String::from(\"llama3-8b\")")]
    pub shape: String,
    /// weight formats: q4_k_m, or one ggml type for every matrix (default q4_k_m)
    #[argh(option, default = "String::from(\"q4_k_m\")")]
    pub mix: String,
    /// layers (default: the shape's own count)
    #[argh(option)]
    pub layers: Option<usize>,
    /// a GGUF file whose tokenizer is borrowed (padded to the shape's vocabulary)
    #[argh(option)]
    pub vocab_from: String,
    /// output file
    #[argh(option, short = 'o')]
    pub output: String,
}

pub fn run(a: SynthArgs) -> Result<()> {
    let shape = synth::SHAPES.iter().find(|s| s.name == a.shape).ok_or_else(|| {
        let names: Vec<&str> = synth::SHAPES.iter().map(|s| s.name).collect();
        Error::msg(format!("unknown shape `{}` (known: {})", a.shape, names.join(", ")))
    })?;
    let mix = Mix::parse(&a.mix)?;
    let vocab = GgufFile::open(&a.vocab_from)?;
    let n_layer = a.layers.unwrap_or(shape.n_layer);
    let start = std::time::Instant::now();
    synth::write_model(shape, n_layer, mix, &vocab, std::path::Path::new(&a.output))?;
    eprintln!("wrote {} ({} layers, {:?}) in {:.1}s", a.output, n_layer, mix, start.elapsed().as_secs_f64());
    Ok(())
}
