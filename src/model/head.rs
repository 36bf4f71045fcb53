//! The ends of the network: token embedding lookup, final norm and the output projection.

use std::sync::Arc;

use super::Model;
use super::pipeline::Ends;
use super::tensor_names::{OUTPUT, OUTPUT_NORM, TOKEN_EMBD};
use super::weights::{Weight, load_vector};
use crate::cpu::matmul::matmul;
use crate::cpu::ops;
use crate::cpu::pool::ThreadPool;
use crate::error::{Error, Result};

pub struct Head {
    n_embd: usize,
    n_vocab: usize,
    rms_eps: f32,
    token_embd: Weight,
    output_norm: Vec<f32>,
    /// `output.weight`, or the token embedding when the model ties them.
    output: Weight,
    pool: Arc<ThreadPool>,
    normed: Vec<f32>,
    act: Vec<u8>,
}

impl Head {
    pub fn new(m: &Model, pool: Arc<ThreadPool>) -> Result<Head> {
        let c = &m.config;
        let token_embd = Weight::load(&m.gguf, TOKEN_EMBD, c.n_embd, c.n_vocab)?;
        let output = if m.gguf.tensor(OUTPUT).is_some() {
            Weight::load(&m.gguf, OUTPUT, c.n_embd, c.n_vocab)?
        } else {
            token_embd.clone()
        };
        Ok(Head {
            n_embd: c.n_embd,
            n_vocab: c.n_vocab,
            rms_eps: c.rms_eps,
            output_norm: load_vector(&m.gguf, OUTPUT_NORM, c.n_embd)?,
            token_embd,
            output,
            pool,
            normed: Vec::new(),
            act: Vec::new(),
        })
    }

    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Hidden states for `tokens` (row-major into `out`, `n_embd` wide).
    pub fn embed(&self, tokens: &[u32], out: &mut [f32]) -> Result<()> {
        for (&tok, row) in tokens.iter().zip(out.chunks_exact_mut(self.n_embd)) {
            if tok as usize >= self.n_vocab {
                return Err(Error::msg(format!("token id {tok} is outside the vocabulary ({})", self.n_vocab)));
            }
            self.token_embd.dequantize_row(tok as usize, row);
        }
        Ok(())
    }

    /// Logits for each of the `n_embd`-wide rows of `hidden` (row-major into `out`).
    pub fn logits_batch(&mut self, hidden: &[f32], out: &mut [f32]) {
        let n = hidden.len() / self.n_embd;
        if self.normed.len() < hidden.len() {
            self.normed.resize(hidden.len(), 0.0);
        }
        let normed = &mut self.normed[..hidden.len()];
        ops::rms_norm_into(normed, hidden, &self.output_norm, self.rms_eps);
        matmul(&self.pool, &self.output, normed, n, &mut out[..n * self.n_vocab], &mut self.act);
    }

    /// Logits of one hidden state.
    pub fn logits(&mut self, hidden_row: &[f32], out: &mut [f32]) {
        self.logits_batch(&hidden_row[..self.n_embd], out)
    }
}

impl Ends for Head {
    fn n_embd(&self) -> usize {
        self.n_embd
    }
    fn n_vocab(&self) -> usize {
        self.n_vocab
    }
    fn embed(&self, tokens: &[u32], out: &mut [f32]) -> Result<()> {
        Head::embed(self, tokens, out)
    }
    fn logits(&mut self, hidden: &[f32], out: &mut [f32]) {
        self.logits_batch(hidden, out)
    }
}
