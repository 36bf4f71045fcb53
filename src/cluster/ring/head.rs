//! The head's end of the ring link: the remote windows of its pipeline. A remote window for
//! round `r` sends a chunk's activations to the first worker and waits for them to come back
//! from the last, after every worker ran its window of round `r`. Links are FIFO and every
//! chunk takes the same path, so chunks come back in the order they were sent.

use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::events::Event;
use super::{Member, fmt_ranges};
use crate::cluster::messages::{Msg, STOPPED_BY_DOWN};
use crate::cluster::transport::Sender;
use crate::error::{Error, Result};
use crate::model::batch::one_per_sequence;
use crate::model::{KvOp, SeqPos, Window};

/// Time the head spent on the link in decode steps.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkStats {
    pub send_ns: u64,
    pub wait_ns: u64,
}

/// The outbound link to the first worker and every event the head receives.
pub struct RingLink {
    out: Sender,
    events: mpsc::Receiver<Event>,
    members: Vec<Member>,
    rounds: usize,
    timeout: Duration,
    stats: LinkStats,
    /// When the last decode chunk finished sending (its wait starts there).
    sent_at: Option<Instant>,
    /// Set when a step failed on the ring: `Some(device)` when a worker is known lost (its
    /// control connection closed or timed out), for whoever forms the ring again.
    failure: Option<Option<usize>>,
}

impl RingLink {
    pub fn new(
        out: Sender,
        events: mpsc::Receiver<Event>,
        members: Vec<Member>,
        rounds: usize,
        timeout: Duration,
    ) -> RingLink {
        RingLink { out, events, members, rounds, timeout, stats: LinkStats::default(), sent_at: None, failure: None }
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    pub fn events(&self) -> &mpsc::Receiver<Event> {
        &self.events
    }

    pub fn out(&self) -> &Sender {
        &self.out
    }

    /// Whether a step failed on the ring, and which worker (index into the members) was lost
    /// if one is known.
    pub fn failure(&self) -> Option<Option<usize>> {
        self.failure
    }

    fn what(&self, round: usize, rows: &[SeqPos]) -> String {
        let at = rows.first().map_or(String::new(), |r| format!(" at position {} of sequence {}", r.pos, r.seq));
        format!("the ring was running round {} of {} for {} token(s){at}", round + 1, self.rounds, rows.len())
    }

    /// Turn a failure event into the clearest error: a device that went away beats a device
    /// that reported a broken link, which beats our own broken ring link.
    fn fail(&mut self, first: Event, doing: &str) -> Error {
        let wait = if matches!(first, Event::ControlClosed(..)) { Duration::ZERO } else { Duration::from_millis(700) };
        let mut evs = vec![first];
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                // A device that went away is the clearest cause there is: no need to wait on.
                Ok(e @ Event::ControlClosed(..)) => {
                    evs.push(e);
                    break;
                }
                Ok(e) => evs.push(e),
                Err(_) => break,
            }
        }
        let rank = |e: &Event| match e {
            Event::ControlClosed(..) => 0,
            Event::Control(_, Msg::Error { .. }) => 1,
            Event::RingClosed(_) => 2,
            _ => 3,
        };
        evs.sort_by_key(rank);
        let lost = match &evs[0] {
            Event::ControlClosed(i, _) => Some(*i),
            _ => None,
        };
        let down = evs.iter().any(|e| matches!(e, Event::Control(_, Msg::Error { msg }) if msg == STOPPED_BY_DOWN));
        // Stopped on purpose: not a failure to mend.
        self.failure = if down { None } else { Some(lost) };
        let dev = |i: usize| {
            let m = &self.members[i];
            format!("device `{}` ({}, layers {})", m.name, m.addr, fmt_ranges(&m.ranges))
        };
        match evs.swap_remove(0) {
            Event::ControlClosed(i, e) => Error::msg(format!("{} stopped answering while {doing}: {e}", dev(i))),
            Event::Control(i, Msg::Error { msg }) => Error::msg(format!("{} failed while {doing}: {msg}", dev(i))),
            Event::RingClosed(e) => {
                let last = self.members.len().saturating_sub(1);
                Error::msg(format!("ring link from {} broke while {doing}: {e}", dev(last)))
            }
            Event::Control(i, m) => Error::msg(format!("{} sent an unexpected {} while {doing}", dev(i), m.name())),
            Event::Ring(m) => Error::msg(format!("unexpected {} on the ring while {doing}", m.name())),
        }
    }

    fn send(&mut self, msg: &Msg, doing: impl Fn() -> String) -> Result<()> {
        match self.out.send(msg) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(Event::RingClosed(e), &doing())),
        }
    }

    /// Wait for the next ring message.
    fn recv(&mut self, doing: impl Fn() -> String) -> Result<Msg> {
        loop {
            match self.events.recv_timeout(self.timeout * 3) {
                Ok(Event::Ring(m)) => return Ok(m),
                Ok(Event::Control(_, Msg::Stopped { .. })) => continue,
                Ok(e) => return Err(self.fail(e, &doing())),
                Err(_) => {
                    self.failure = Some(None);
                    return Err(Error::msg(format!(
                        "no answer from the ring for {:?} while {}",
                        self.timeout * 3,
                        doing()
                    )));
                }
            }
        }
    }
}

/// Round `round` of the ring's workers, as one window of the head's pipeline.
pub struct RemoteWindow {
    round: usize,
    link: Arc<Mutex<RingLink>>,
}

impl RemoteWindow {
    pub fn new(round: usize, link: Arc<Mutex<RingLink>>) -> RemoteWindow {
        RemoteWindow { round, link }
    }

    fn link(&self) -> std::sync::MutexGuard<'_, RingLink> {
        super::lock(&self.link)
    }
}

impl Window for RemoteWindow {
    fn forward(&mut self, rows: &[SeqPos], hidden: &mut Vec<f32>) -> Result<()> {
        if let Some(out) = self.submit(rows, std::mem::take(hidden))? {
            *hidden = out;
            return Ok(());
        }
        *hidden = self.collect(rows)?;
        Ok(())
    }

    fn submit(&mut self, rows: &[SeqPos], data: Vec<f32>) -> Result<Option<Vec<f32>>> {
        let round = self.round;
        let mut link = self.link();
        let t0 = Instant::now();
        let msg = Msg::Activations { round: round as u32, rows: rows.to_vec(), data };
        let what = link.what(round, rows);
        link.send(&msg, || what.clone())?;
        if one_per_sequence(rows) {
            let now = Instant::now();
            link.stats.send_ns += (now - t0).as_nanos() as u64;
            link.sent_at = Some(now);
        }
        Ok(None)
    }

    fn collect(&mut self, rows: &[SeqPos]) -> Result<Vec<f32>> {
        let round = self.round;
        let mut link = self.link();
        let what = link.what(round, rows);
        let m = link.recv(|| what.clone())?;
        if one_per_sequence(rows)
            && let Some(t) = link.sent_at.take()
        {
            link.stats.wait_ns += t.elapsed().as_nanos() as u64;
        }
        match m {
            Msg::Activations { round: r, rows: got, data } if r as usize == round && got == rows => Ok(data),
            m => {
                link.failure = Some(None);
                Err(Error::msg(format!("ring returned an unexpected {} while {what}", m.name())))
            }
        }
    }

    /// Round 0 relays the operation around the ring (every worker applies it to all its
    /// windows); the other rounds' windows are the same workers.
    fn kv(&mut self, op: KvOp) -> Result<()> {
        if self.round > 0 {
            return Ok(());
        }
        let mut link = self.link();
        let doing = || "relaying a KV cache operation".to_string();
        link.send(&Msg::Kv(op), doing)?;
        match link.recv(doing)? {
            Msg::Kv(o) if o == op => Ok(()),
            m => Err(Error::msg(format!("ring returned an unexpected {} for a KV operation", m.name()))),
        }
    }

    fn is_local(&self) -> bool {
        false
    }
}
