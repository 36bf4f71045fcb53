//! The engine's thread: continuous batching. Requests wait in a bounded queue (the channel);
//! up to one per slot run at once; every step advances each running sequence by one token, or
//! by one chunk of its prompt, so a long prompt never stalls the others' streams. A request
//! joins at the next step after a slot frees.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use smol::channel::{Receiver, Sender};

use super::engine::{DeviceView, Engine, SeqWork};
use super::request::Penalties;
use super::response::{Finish, Usage};
use super::stop::StopMatcher;
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// A request ready to run: its prompt tokenized and checked against the context.
pub struct Job {
    pub prompt: Vec<u32>,
    pub sampling: SamplerConfig,
    pub penalties: Penalties,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Never blocks the engine; a closed receiver cancels the request.
    pub events: Sender<Event>,
}

#[derive(Debug, PartialEq)]
pub enum Event {
    /// Prompt tokens evaluated so far (sent after each chunk but the last).
    Prompt {
        done: usize,
        total: usize,
    },
    Text(String),
    Done {
        finish: Finish,
        usage: Usage,
    },
    Failed(String),
}

/// What the scheduler has been doing, for the cluster view and /health.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    pub slots: usize,
    pub active: usize,
    pub queued: usize,
    /// Mean over recent steps that decoded at least one generated token.
    pub ms_per_step: f64,
    /// Sequences advanced per step, over the same steps.
    pub seqs_per_step: f64,
    pub requests: u64,
    pub cancelled: u64,
    pub completion_tokens: u64,
    /// Recent happenings, oldest first.
    pub events: VecDeque<String>,
    /// The engine's devices, refreshed about once a second.
    pub devices: Vec<DeviceView>,
}

const EVENTS_KEPT: usize = 50;

impl Stats {
    pub fn event(&mut self, what: String) {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        self.events.push_back(format!("{}:{:02}:{:02} {what}", t / 3600 % 24, t / 60 % 60, t % 60));
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }
}

pub struct Options {
    /// Prompt tokens per step while other sequences are generating.
    pub prefill_chunk: usize,
}

/// How many recent tokens the presence/frequency penalties look at (llama.cpp's penalty_last_n).
const PENALTY_WINDOW: usize = 64;

struct Seq {
    job: Job,
    /// Prompt tokens already in the cache (reused from the slot's previous request, then fed).
    fed: usize,
    sampler: Sampler,
    text: StreamDecoder,
    stop: StopMatcher,
    recent: VecDeque<u32>,
    generated: usize,
    /// The last sampled token, fed at the next step.
    next: Option<u32>,
}

impl Seq {
    fn new(job: Job, reused: usize) -> Seq {
        let mut sampler = Sampler::new(job.sampling.clone());
        let mut recent = VecDeque::new();
        for &t in &job.prompt {
            sampler.accept(t);
            remember(&mut recent, t);
        }
        let stop = StopMatcher::new(job.stop.clone());
        Seq { job, fed: reused, sampler, text: StreamDecoder::new(), stop, recent, generated: 0, next: None }
    }

    fn send(&self, e: Event) {
        let _ = self.job.events.try_send(e);
    }

    fn usage(&self) -> Usage {
        Usage { prompt_tokens: self.job.prompt.len(), completion_tokens: self.generated }
    }

    fn finish(&mut self, finish: Finish) {
        if !self.stop.stopped() {
            let tail = self.text.finish();
            let mut out = self.stop.push(&tail);
            if !self.stop.stopped() {
                out += &self.stop.finish();
            }
            if !out.is_empty() {
                self.send(Event::Text(out));
            }
        }
        self.send(Event::Done { finish, usage: self.usage() });
    }

    /// Sample from `logits`; Some(finish) when the sequence is over.
    fn take(&mut self, tok: &Tokenizer, logits: &mut [f32], cached: usize, n_ctx: usize) -> Option<Finish> {
        apply_penalties(logits, &self.recent, self.job.penalties);
        let t = self.sampler.sample(logits);
        if tok.is_eog(t) {
            return Some(Finish::Stop);
        }
        self.generated += 1;
        self.sampler.accept(t);
        remember(&mut self.recent, t);
        let piece = self.text.push(tok, t);
        let out = self.stop.push(&piece);
        if !out.is_empty() {
            self.send(Event::Text(out));
        }
        if self.stop.stopped() {
            return Some(Finish::Stop);
        }
        if self.generated >= self.job.max_tokens || cached + 1 >= n_ctx {
            return Some(Finish::Length);
        }
        self.next = Some(t);
        None
    }
}

fn remember(recent: &mut VecDeque<u32>, t: u32) {
    recent.push_back(t);
    if recent.len() > PENALTY_WINDOW {
        recent.pop_front();
    }
}

/// OpenAI's presence (once per distinct token) and frequency (per occurrence) penalties.
fn apply_penalties(logits: &mut [f32], recent: &VecDeque<u32>, p: Penalties) {
    if p.presence == 0.0 && p.frequency == 0.0 {
        return;
    }
    let mut counts: Vec<(u32, u32)> = Vec::new();
    for &t in recent {
        match counts.iter_mut().find(|(id, _)| *id == t) {
            Some(c) => c.1 += 1,
            None => counts.push((t, 1)),
        }
    }
    for (t, n) in counts {
        if let Some(l) = logits.get_mut(t as usize) {
            *l -= p.presence + p.frequency * n as f32;
        }
    }
}

/// Run until every sender of `jobs` is gone.
pub fn run(
    mut engine: Box<dyn Engine>,
    tok: Arc<Tokenizer>,
    jobs: Receiver<Job>,
    stats: Arc<Mutex<Stats>>,
    opts: Options,
) {
    let n_slots = engine.slots();
    let n_ctx = engine.n_ctx();
    let mut running: Vec<Option<Seq>> = (0..n_slots).map(|_| None).collect();
    // The tokens each slot's cache holds, so a request sharing a prefix (a chat's next turn)
    // skips evaluating it again.
    let mut cached: Vec<Vec<u32>> = vec![Vec::new(); n_slots];
    let mut recent_steps: VecDeque<(f64, usize)> = VecDeque::new();
    stats.lock().unwrap().slots = n_slots;
    let mut devices_at: Option<Instant> = None;
    loop {
        // About once a second, and before waiting idle (so the view shows the last numbers).
        let idle = running.iter().all(Option::is_none);
        if idle || devices_at.is_none_or(|t| t.elapsed().as_secs() >= 1) {
            let mut d = engine.devices();
            let mut st = stats.lock().unwrap();
            // An engine that does not time its devices: the whole step is this device computing.
            for dev in d.iter_mut().filter(|d| d.compute_ms.is_none() && st.ms_per_step > 0.0) {
                dev.compute_ms = Some(st.ms_per_step);
            }
            st.devices = d;
            devices_at = Some(Instant::now());
        }
        // Admit: block only when nothing runs.
        while running.iter().any(Option::is_none) {
            let job = if running.iter().all(Option::is_none) {
                match jobs.recv_blocking() {
                    Ok(j) => j,
                    Err(_) => return,
                }
            } else {
                match jobs.try_recv() {
                    Ok(j) => j,
                    Err(_) => break,
                }
            };
            if job.events.is_closed() {
                stats.lock().unwrap().cancelled += 1;
                continue;
            }
            let (slot, reused) = pick_slot(&running, &cached, &job.prompt);
            if let Err(e) = engine.truncate(slot, reused) {
                let _ = job.events.try_send(Event::Failed(e.to_string()));
                continue;
            }
            cached[slot].truncate(reused);
            running[slot] = Some(Seq::new(job, reused));
            let mut s = stats.lock().unwrap();
            s.requests += 1;
            if reused > 0 {
                s.event(format!("slot {slot}: reused {reused} cached prompt tokens"));
            }
        }
        // Cancel sequences whose clients went away.
        for r in running.iter_mut() {
            if let Some(seq) = r.take_if(|s| s.job.events.is_closed()) {
                let mut s = stats.lock().unwrap();
                s.cancelled += 1;
                s.completion_tokens += seq.generated as u64;
                s.active = s.active.saturating_sub(1);
                s.event(format!("a client disconnected after {} tokens; its generation stopped", seq.generated));
            }
        }
        let generating = running.iter().flatten().filter(|s| s.next.is_some()).count();
        // Alone, a prompt still goes in chunks (larger ones): progress events keep the client's
        // stream alive and a client gone during a long prompt is noticed between chunks.
        let chunk = opts.prefill_chunk.max(1) * if generating > 0 { 1 } else { 4 };
        let mut feeds: Vec<(usize, Vec<u32>, bool)> = Vec::new();
        for (slot, s) in running.iter().enumerate() {
            let Some(s) = s else { continue };
            match s.next {
                Some(t) => feeds.push((slot, vec![t], true)),
                None => {
                    let end = s.job.prompt.len().min(s.fed.saturating_add(chunk));
                    feeds.push((slot, s.job.prompt[s.fed..end].to_vec(), end == s.job.prompt.len()));
                }
            }
        }
        if feeds.is_empty() {
            continue;
        }
        let work: Vec<SeqWork> =
            feeds.iter().map(|(slot, t, l)| SeqWork { slot: *slot, tokens: t, logits: *l }).collect();
        let t0 = Instant::now();
        let rows = match engine.step(&work) {
            Ok(rows) => rows,
            Err(e) => {
                // The caches may be half-written: start every slot afresh, fail who was running.
                for (slot, r) in running.iter_mut().enumerate() {
                    if let Some(s) = r.take() {
                        s.send(Event::Failed(format!("the model failed: {e}")));
                    }
                    let _ = engine.truncate(slot, 0);
                    cached[slot].clear();
                }
                stats.lock().unwrap().event(format!("engine error: {e}"));
                continue;
            }
        };
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut s_done = Vec::new();
        for ((slot, tokens, _), mut row) in feeds.into_iter().zip(rows) {
            cached[slot].extend_from_slice(&tokens);
            let s = running[slot].as_mut().expect("fed slots run");
            if s.next.take().is_none() {
                s.fed += tokens.len();
                if s.fed < s.job.prompt.len() {
                    s.send(Event::Prompt { done: s.fed, total: s.job.prompt.len() });
                    continue;
                }
            }
            if let Some(finish) = s.take(&tok, &mut row, cached[slot].len(), n_ctx) {
                s.finish(finish);
                s_done.push((slot, s.generated));
            }
        }
        let mut st = stats.lock().unwrap();
        if generating > 0 {
            recent_steps.push_back((ms, generating));
            if recent_steps.len() > 32 {
                recent_steps.pop_front();
            }
            let n = recent_steps.len() as f64;
            st.ms_per_step = recent_steps.iter().map(|r| r.0).sum::<f64>() / n;
            st.seqs_per_step = recent_steps.iter().map(|r| r.1 as f64).sum::<f64>() / n;
        }
        for (slot, generated) in s_done {
            running[slot] = None;
            st.completion_tokens += generated as u64;
        }
        st.active = running.iter().flatten().count();
        st.queued = jobs.len();
    }
}

/// A free slot, preferring the one whose cache shares the longest prefix with `prompt`; and
/// how many of its cached tokens to keep (at least one prompt token is always evaluated, so
/// there are logits to sample from).
fn pick_slot(running: &[Option<Seq>], cached: &[Vec<u32>], prompt: &[u32]) -> (usize, usize) {
    let common = |c: &Vec<u32>| c.iter().zip(prompt).take_while(|(a, b)| a == b).count();
    let (slot, n) = (0..running.len())
        .filter(|&i| running[i].is_none())
        .map(|i| (i, common(&cached[i])))
        .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)))
        .expect("a slot is free");
    (slot, n.min(prompt.len().saturating_sub(1)))
}
