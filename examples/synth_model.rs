//! Write a random-weight model with a real shape, for the home-cluster benchmark
//! (`bench/homecluster.sh`), until the `prima synth` CLI lands:
//!
//!     cargo run --release --example synth_model -- llama3-8b 16 q4_k_m VOCAB.gguf OUT.gguf

use prima::gguf::GgufFile;
use prima::synth::{Mix, SHAPES, write_model};

fn main() -> prima::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [shape, n_layer, mix, vocab, out] = a.as_slice() else {
        return Err(prima::Error::msg("usage: synth_model SHAPE N_LAYER MIX VOCAB.gguf OUT.gguf"));
    };
    let shape =
        SHAPES.iter().find(|s| s.name == shape).ok_or_else(|| prima::Error::msg(format!("unknown shape {shape}")))?;
    let n_layer: usize = n_layer.parse().map_err(|_| prima::Error::msg("N_LAYER is not a number"))?;
    write_model(shape, n_layer, Mix::parse(mix)?, &GgufFile::open(vocab)?, std::path::Path::new(out))
}
