//! Ring-link probe: round-trip time and one-way bandwidth over an already-connected stream.
//! One end calls [`probe`], the other [`respond`]; the cluster runs it on every ring hop
//! (set TCP_NODELAY on the stream first, or small pings wait for Nagle).
//!
//! Wire: `P` + u32 seq → echoed 5 bytes; `B` + u64 len + len bytes → `A`; `Q` ends.

use std::io::{Read, Write};
use std::time::Instant;

use super::Link;
use crate::error::{Error, Result};

pub const PINGS: usize = 21;
pub const BULK_BYTES: usize = 4 << 20;

/// Measure the link: median RTT of [`PINGS`] ping-pongs, then bandwidth of `bulk` bytes one way
/// (time to the acknowledgement, less one RTT).
pub fn probe<S: Read + Write>(s: &mut S, bulk: usize) -> Result<Link> {
    let mut rtts = Vec::with_capacity(PINGS);
    let mut echo = [0u8; 5];
    for seq in 0..PINGS as u32 {
        let mut msg = [b'P', 0, 0, 0, 0];
        msg[1..].copy_from_slice(&seq.to_le_bytes());
        let t = Instant::now();
        s.write_all(&msg)?;
        s.flush()?;
        s.read_exact(&mut echo)?;
        rtts.push(t.elapsed().as_secs_f64() * 1e3);
        if echo != msg {
            return Err(Error::msg("link probe: the peer echoed something else"));
        }
    }
    rtts.sort_by(f64::total_cmp);
    let rtt_ms = rtts[rtts.len() / 2];
    let mut head = [0u8; 9];
    head[0] = b'B';
    head[1..].copy_from_slice(&(bulk as u64).to_le_bytes());
    let chunk = vec![0x5au8; 64 << 10];
    let t = Instant::now();
    s.write_all(&head)?;
    let mut left = bulk;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n])?;
        left -= n;
    }
    s.flush()?;
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack)?;
    if ack[0] != b'A' {
        return Err(Error::msg("link probe: bad acknowledgement"));
    }
    let secs = (t.elapsed().as_secs_f64() - rtt_ms / 1e3).max(1e-6);
    s.write_all(b"Q")?;
    s.flush()?;
    Ok(Link { rtt_ms, gbps: bulk as f64 / secs / 1e9 })
}

/// The other end of [`probe`]: serve until `Q`.
pub fn respond<S: Read + Write>(s: &mut S) -> Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let mut tag = [0u8; 1];
        s.read_exact(&mut tag)?;
        match tag[0] {
            b'P' => {
                let mut seq = [0u8; 4];
                s.read_exact(&mut seq)?;
                s.write_all(&[b'P', seq[0], seq[1], seq[2], seq[3]])?;
                s.flush()?;
            }
            b'B' => {
                let mut len = [0u8; 8];
                s.read_exact(&mut len)?;
                let mut left = u64::from_le_bytes(len) as usize;
                if left > 1 << 30 {
                    return Err(Error::msg("link probe: bulk transfer over 1 GiB requested"));
                }
                while left > 0 {
                    let n = left.min(buf.len());
                    s.read_exact(&mut buf[..n])?;
                    left -= n;
                }
                s.write_all(b"A")?;
                s.flush()?;
            }
            b'Q' => return Ok(()),
            t => return Err(Error::msg(format!("link probe: unexpected byte {t:#x}"))),
        }
    }
}
