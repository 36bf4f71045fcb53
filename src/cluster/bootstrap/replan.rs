//! A ring that outlives its devices: when a step fails because a worker died, froze or was
//! cut off, the head hangs up the ring (every worker drops that session), reconnects to the
//! others, plans again over them (the profiles it already has, or the configured schedule),
//! streams each the layers it now lacks, loads and closes the new ring; the pipeline then
//! replays every sequence's tokens on it and retries the step ([`crate::model::Recovery`]).
//! With no worker left, the head carries on alone. Its own loss is the end of the run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Former, Progress, connect, dev_label};
use crate::cluster::ring::{RingState, lock};
use crate::cluster::transport::Conn;
use crate::error::{Error, Result};
use crate::model::{Rebuilt, Recovery};

/// Steps that fail without naming a device, in a row, before the head gives up.
const MAX_UNNAMED: usize = 3;

pub(super) struct Replanner {
    former: Former,
    /// Per device of cluster.toml: lost (no longer tried).
    lost: Vec<bool>,
    /// Per device of cluster.toml: in the current ring.
    in_ring: Vec<bool>,
    state: Arc<Mutex<RingState>>,
    unnamed: usize,
    /// Since when the ring is down (the failing step's start), until the next step succeeds.
    down_since: Option<Instant>,
}

impl Replanner {
    pub(super) fn new(former: Former, in_ring: Vec<bool>, state: Arc<Mutex<RingState>>) -> Replanner {
        let n = former.cfg.devices.len();
        Replanner { former, lost: vec![false; n], in_ring, state, unnamed: 0, down_since: None }
    }

    /// Connect to every device of the ring not known lost (marking lost those that do not
    /// answer): which devices answered, and their connections in ring order.
    fn reconnect(&mut self) -> (Vec<bool>, Vec<Conn>) {
        let cfg = &self.former.cfg;
        let n = cfg.devices.len();
        let mut candidates = vec![false; n];
        candidates[0] = true;
        let mut conns = Vec::new();
        let Some(secret) = &self.former.secret else { return (candidates, conns) };
        for (i, d) in cfg.devices.iter().enumerate().skip(1) {
            if self.lost[i] || !self.in_ring[i] {
                continue;
            }
            match connect::connect_current(d, secret, cfg.timeouts, &Progress(false)) {
                Ok(c) => {
                    candidates[i] = true;
                    conns.push(c);
                }
                Err(e) => {
                    self.lost[i] = true;
                    if self.former.opts.verbose {
                        eprintln!("up: lost {} too: {e}", dev_label(d));
                    }
                }
            }
        }
        (candidates, conns)
    }

    fn say(&self, s: impl std::fmt::Display) {
        if self.former.opts.verbose {
            eprintln!("up: {s}");
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Recovery for Replanner {
    fn recover(&mut self, err: Error, after: Duration) -> Result<Rebuilt> {
        let failure = {
            let st = lock(&self.state);
            st.link.as_ref().and_then(|l| lock(l).failure())
        };
        // A failure of the head's own (not the ring's) is not ours to mend.
        let Some(lost) = failure else { return Err(err) };
        let t0 = Instant::now();
        self.down_since.get_or_insert(t0 - after);
        let cfg = &self.former.cfg;
        let members = lock(&self.state).members.clone();
        let named = lost.and_then(|i| cfg.devices.iter().position(|d| d.name == members[i].name));
        match named {
            Some(i) => {
                self.lost[i] = true;
                self.unnamed = 0;
                self.say(format!(
                    "lost {}: {err}; detected {:.0} ms into the step; forming the ring again without it",
                    dev_label(&cfg.devices[i]),
                    ms(after)
                ));
            }
            None => {
                self.unnamed += 1;
                if self.unnamed > MAX_UNNAMED {
                    return Err(err.context(format!("the ring failed {MAX_UNNAMED} times in a row")));
                }
                self.say(format!(
                    "the ring failed: {err}; detected {:.0} ms into the step; forming it again",
                    ms(after)
                ));
            }
        }
        // Hang up: every worker of the old ring ends that session and frees its windows.
        lock(&self.state).close();

        // Reconnect to the devices still in the ring and form it again; a device that does not
        // answer, or fails while the ring forms, is lost too.
        let (formed, reconnected) = loop {
            let t1 = Instant::now();
            let (candidates, conns) = self.reconnect();
            let reconnected = t1.elapsed();
            if conns.is_empty() {
                self.say("no worker left: the head carries on alone (its memory policy pages what does not fit)");
            }
            let p = Progress(self.former.opts.verbose);
            match self.former.form(&candidates, conns, &p) {
                Ok(f) => break (f, reconnected),
                Err(e) => {
                    let before = self.lost.iter().filter(|l| **l).count();
                    self.say(format!("forming the ring again failed: {e}; checking the devices"));
                    let _ = self.reconnect();
                    if self.lost.iter().filter(|l| **l).count() == before {
                        return Err(e.context("forming the ring again"));
                    }
                }
            }
        };
        let [plan, stream, load] = formed.times;
        for line in formed.report.layout.lines().chain(formed.report.loads.iter().map(String::as_str)) {
            self.say(line);
        }
        self.say(format!(
            "ring formed again in {:.0} ms: detect {:.0} ms, reconnect {:.0} ms, plan {:.0} ms, stream {:.0} ms, \
             load and link {:.0} ms",
            ms(t0.elapsed()),
            ms(after),
            ms(reconnected),
            ms(plan),
            ms(stream),
            ms(load)
        ));
        if let Some(r) = &formed.report.ring {
            self.say(format!("ring ready: {}", r.join(" → ")));
        }
        self.in_ring = formed.in_ring;
        let max_in_flight = formed.state.members.len() + 1;
        let (windows, pager) = formed.state.pipeline_windows(formed.windows);
        *lock(&self.state) = formed.state;
        Ok(Rebuilt { windows, paging: Some(Box::new(pager)), max_in_flight })
    }

    fn replayed(&mut self, tokens: usize, took: Duration) {
        self.say(format!("rebuilt the KV state: replayed {tokens} token(s) in {:.0} ms", ms(took)));
    }

    fn resumed(&mut self) {
        if let Some(t) = self.down_since.take() {
            self.say(format!("resumed: the next token came {:.0} ms after the failing step began", ms(t.elapsed())));
        }
    }
}
