//! Phase 4 of `prima up`: close the ring. Each worker connects to its successor; the head
//! connects to the first worker (its outbound link) and to the last (its inbound), so no device
//! ever connects to the head. Every connection is then read by a pump thread into one channel.

use std::sync::mpsc;

use super::dev_label;
use crate::cluster::auth::{self, Secret};
use crate::cluster::config::DeviceConfig;
use crate::cluster::messages::{Msg, RingRole};
use crate::cluster::ring::{self, Event, Member, RingLink};
use crate::cluster::transport::{Conn, Sender, Timeouts};
use crate::error::{Context, Error, Result};

/// The head's links of a closed ring.
pub(super) struct Links {
    pub link: RingLink,
    pub controls: Vec<Sender>,
    /// The inbound link from the last worker, kept open (and heart-beating).
    pub keep_open: Vec<Sender>,
}

pub(super) fn close_ring(
    mut conns: Vec<Conn>,
    devices: &[DeviceConfig],
    members: Vec<Member>,
    rounds: usize,
    session: u64,
    secret: &Secret,
    t: Timeouts,
) -> Result<Links> {
    let n = devices.len();
    let (etx, events) = mpsc::channel();
    // Every ring link is checked against the keys the head proved and pinned (devices that
    // hold the secret cannot stand in for each other).
    let head_key = secret.public_key();
    let key = |i: usize| -> Result<[u8; 32]> {
        conns[i]
            .tx
            .remote_key()
            .ok_or_else(|| Error::msg(format!("{}: no key after the handshake", dev_label(&devices[i + 1]))))
    };
    for (i, c) in conns.iter().enumerate() {
        let (next, next_key) =
            if i + 2 < n { (Some(devices[i + 2].addr.clone()), Some(key(i + 1)?)) } else { (None, None) };
        let prev_key = if i == 0 { head_key } else { key(i - 1)? };
        c.send(&Msg::Connect { next, next_key, prev_key, head_key })?;
    }
    let link = |d: &DeviceConfig, role| -> Result<Conn> {
        let mut c = Conn::connect(&d.addr, format!("{} (ring)", d.name), t)?;
        auth::client(&mut c, secret, t)?;
        super::connect::pin(&c, d, secret)?;
        c.send(&Msg::RingJoin { session, role })?;
        Ok(c)
    };
    let first =
        link(&devices[1], RingRole::Inbound).with_context(|| format!("ring link to {}", dev_label(&devices[1])))?;
    let last = link(&devices[n - 1], RingRole::Outbound)
        .with_context(|| format!("ring link from {}", dev_label(&devices[n - 1])))?;
    for (i, c) in conns.iter_mut().enumerate() {
        let d = &devices[i + 1];
        match c.recv_ok().with_context(|| format!("forming the ring at {}", dev_label(d)))? {
            Msg::RingReady => {}
            m => return Err(Error::msg(format!("{}: expected RingReady, got {}", dev_label(d), m.name()))),
        }
    }
    ring::pump(last.rx, etx.clone(), |r| match r {
        Ok(m) => Event::Ring(m),
        Err(e) => Event::RingClosed(e),
    });
    ring::pump(first.rx, etx.clone(), |r| match r {
        Ok(m) => Event::Ring(Msg::Error { msg: format!("unexpected {} from the first device", m.name()) }),
        Err(e) => Event::RingClosed(e.context("link to the first device")),
    });
    let mut controls = Vec::new();
    for (i, c) in conns.into_iter().enumerate() {
        let Conn { tx, rx } = c;
        controls.push(tx);
        ring::pump(rx, etx.clone(), move |r| match r {
            Ok(m) => Event::Control(i, m),
            Err(e) => Event::ControlClosed(i, e),
        });
    }
    drop(etx);
    let link = RingLink::new(first.tx, events, members, rounds, t.io);
    Ok(Links { link, controls, keep_open: vec![last.tx] })
}
