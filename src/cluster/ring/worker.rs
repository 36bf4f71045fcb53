//! A worker's side of the ring: run the window of each round on the activations that arrive
//! and pass them on, until the head says stop.

use std::sync::mpsc;
use std::time::Instant;

use super::events::Event;
use crate::cluster::messages::{Msg, WorkerStats};
use crate::cluster::transport::Sender;
use crate::error::{Error, Result};
use crate::model::batch::one_per_sequence;
use crate::model::{KvOp, Window};

/// Serve the ring until the head says stop (Ok) or something fails (Err, to be reported).
/// `events` carries `Ring(..)` from the predecessor and `Control(0, ..)` from the head.
pub fn run_worker(
    windows: &mut [Box<dyn Window>],
    events: &mpsc::Receiver<Event>,
    out: &Sender,
) -> Result<WorkerStats> {
    let mut st = WorkerStats::default();
    let mut pager = crate::memory::Pager::new(windows.iter().map(|w| w.mapped()));
    for w in windows.iter_mut() {
        w.set_progress(pager.progress());
    }
    let mut last_send_end = Instant::now();
    loop {
        let ev = events.recv().map_err(|_| Error::msg("event channel closed"))?;
        let arrived = Instant::now();
        match ev {
            Event::Ring(Msg::Activations { round, rows, mut data }) => {
                let decode = one_per_sequence(&rows);
                pager.arrived(round as usize, decode);
                let nw = windows.len();
                let w = windows
                    .get_mut(round as usize)
                    .ok_or_else(|| Error::msg(format!("activations for round {round}, but we have {nw} windows")))?;
                w.forward(&rows, &mut data)?;
                let computed = Instant::now();
                out.send(&Msg::Activations { round, rows, data })?;
                let sent = Instant::now();
                pager.done(round as usize, decode);
                st.batches += 1;
                if decode {
                    if round == 0 {
                        st.decode_steps += 1;
                    } else {
                        st.wait_ns += (arrived - last_send_end).as_nanos() as u64;
                    }
                    st.compute_ns += (computed - arrived).as_nanos() as u64;
                    st.send_ns += (sent - computed).as_nanos() as u64;
                }
                last_send_end = sent;
            }
            Event::Ring(Msg::Kv(op)) => {
                apply(windows, op)?;
                out.send(&Msg::Kv(op))?;
            }
            Event::Ring(m) => return Err(Error::msg(format!("unexpected {} on the ring", m.name()))),
            Event::RingClosed(e) => return Err(e.context("ring link from the previous device")),
            Event::Control(_, Msg::Stop) => {
                st.mem_pressure_ppm = (pager.peak_pressure() * 1e6) as u32;
                return Ok(st);
            }
            Event::Control(_, m) => return Err(Error::msg(format!("unexpected {} from the head", m.name()))),
            Event::ControlClosed(_, e) => return Err(e.context("the head went away")),
        }
    }
}

fn apply(windows: &mut [Box<dyn Window>], op: KvOp) -> Result<()> {
    windows.iter_mut().try_for_each(|w| w.kv(op))
}
