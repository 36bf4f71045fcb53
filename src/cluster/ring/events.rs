//! Every connection of a ring member is read by its own thread into one channel of events.

use std::sync::mpsc;

use crate::cluster::messages::Msg;
use crate::cluster::transport::Receiver;
use crate::error::{Error, Result};

pub enum Event {
    /// A message on the inbound ring link.
    Ring(Msg),
    /// The inbound ring link failed or closed.
    RingClosed(Error),
    /// A message on device `i`'s control connection.
    Control(usize, Msg),
    /// Device `i`'s control connection failed or closed.
    ControlClosed(usize, Error),
}

/// Read `rx` on a thread until it fails; `wrap` turns each message into an event.
pub fn pump(mut rx: Receiver, tx: mpsc::Sender<Event>, wrap: impl Fn(Result<Msg>) -> Event + Send + 'static) {
    std::thread::Builder::new()
        .name(format!("read {}", rx.peer()))
        .spawn(move || {
            loop {
                let r = rx.recv();
                let end = r.is_err();
                if tx.send(wrap(r)).is_err() || end {
                    return;
                }
            }
        })
        .expect("spawning a thread");
}
