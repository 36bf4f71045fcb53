//! An interactive chat on a [`Pipeline`]: the conversation is re-rendered through the
//! model's chat template each turn, and only the tokens after the longest prefix already in
//! the KV cache are evaluated.

use std::io::{BufRead, Write};

use crate::chat::{ChatTemplate, Message};
use crate::error::Result;
use crate::generate::{GenParams, generate};
use crate::model::Pipeline;
use crate::tokenizer::Tokenizer;

pub struct Conversation<'a> {
    pub decoder: &'a mut Pipeline,
    pub tokenizer: &'a Tokenizer,
    pub template: ChatTemplate,
    pub params: GenParams,
    pub messages: Vec<Message>,
    /// Tokens whose keys and values are in the decoder's cache.
    cached: Vec<u32>,
}

impl<'a> Conversation<'a> {
    pub fn new(
        decoder: &'a mut Pipeline,
        tokenizer: &'a Tokenizer,
        template: ChatTemplate,
        params: GenParams,
        system: Option<String>,
    ) -> Self {
        let messages = system.into_iter().map(|content| Message { role: "system".into(), content }).collect();
        Conversation { decoder, tokenizer, template, params, messages, cached: Vec::new() }
    }

    /// Add a user turn, stream the reply to `on_text`, and return it.
    pub fn turn(&mut self, user: &str, on_text: &mut dyn FnMut(&str)) -> Result<String> {
        self.messages.push(Message { role: "user".into(), content: user.to_string() });
        let text = self.template.render(&self.messages, true)?;
        let tokens = self.tokenizer.encode(&text, true, true);
        let common = self.cached.iter().zip(&tokens).take_while(|(a, b)| a == b).count();
        // Keep at least one token to evaluate, so there are logits to sample from.
        let keep = common.min(tokens.len() - 1);
        self.decoder.truncate(keep)?;
        self.cached.truncate(keep);
        let mut reply = String::new();
        let (generated, stats) = generate(self.decoder, self.tokenizer, &tokens[keep..], &self.params, &mut |t| {
            reply.push_str(t);
            on_text(t)
        })?;
        self.cached.extend_from_slice(&tokens[keep..]);
        // The last sampled token was never fed back; the cache holds the others.
        self.cached.extend_from_slice(&generated[..generated.len().saturating_sub(1)]);
        eprintln!("\n[{}]", stats.summary());
        self.messages.push(Message { role: "assistant".into(), content: reply.clone() });
        Ok(reply)
    }

    /// Read turns from stdin until EOF or `/exit`; `/reset` starts over.
    pub fn repl(&mut self) -> Result<()> {
        let stdin = std::io::stdin();
        let mut out = std::io::stdout();
        loop {
            eprint!("> ");
            let mut line = String::new();
            if stdin.lock().read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end_matches(['\n', '\r']);
            match line.trim() {
                "" => continue,
                "/exit" | "/quit" => return Ok(()),
                "/reset" => {
                    self.messages.retain(|m| m.role == "system");
                    continue;
                }
                _ => {}
            }
            self.turn(line, &mut |t| {
                let _ = out.write_all(t.as_bytes());
                let _ = out.flush();
            })?;
            println!();
        }
    }
}
