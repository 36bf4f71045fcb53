//! Framed, timed, heart-beating, encrypted TCP connections.
//!
//! A connection starts raw: only the Noise handshake ([`super::auth`]) may use it, through
//! [`Conn::write_raw`] and [`Conn::read_raw`], under one absolute deadline. The handshake then
//! installs its session ([`Conn::secure`]) and from there on every byte in both directions is a
//! sealed record ([`super::record`]): messages are refused before that. Every read has a timeout;
//! once authenticated both ends send a `Heartbeat` whenever they have been silent for a while, so
//! a silent peer is a dead peer. A frame's length is checked against a hard limit before anything
//! is allocated, and an undecodable or unauthentic frame is an error: a hostile or broken peer
//! costs one dropped connection, never a panic.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::messages::{Msg, PROTOCOL_VERSION};
use super::record::{IntegrityError, Opener, Sealer, Session, TAG};
use crate::error::{Error, Result};

/// Largest frame accepted once authenticated (a 4 MiB tensor chunk, a prefill batch, a header).
pub const MAX_FRAME: usize = 64 << 20;
/// Largest handshake message accepted from a peer that has not authenticated yet.
pub const AUTH_MAX_FRAME: usize = 256;
/// Bytes of binary or tensor data per chunk frame.
pub const CHUNK: usize = 4 << 20;

/// How long a peer may stay silent, and how often we speak when idle.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub io: Duration,
    pub heartbeat: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { io: Duration::from_secs(6), heartbeat: Duration::from_millis(1000) }
    }
}

/// Serialise a message into a complete frame.
pub fn encode(msg: &Msg) -> Vec<u8> {
    if *msg == Msg::Heartbeat {
        // A frame with no payload: understood by every version.
        return vec![1, 0, 0, 0, PROTOCOL_VERSION];
    }
    // Sized first, so a 4 MiB chunk is copied once instead of through every doubling.
    let size = postcard::serialize_with_flavor(msg, postcard::ser_flavors::Size::default())
        .expect("postcard sizing cannot fail");
    let mut out = Vec::with_capacity(5 + size);
    out.extend_from_slice(&[0, 0, 0, 0, PROTOCOL_VERSION]);
    let mut out = postcard::to_extend(msg, out).expect("postcard encoding into a Vec cannot fail");
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    out
}

/// Decode the body of a frame (version byte + payload). A peer of another protocol version is
/// understood only for the frozen bootstrap messages (authentication, hello, binary shipping),
/// which is exactly what a head needs to upgrade it.
pub fn decode(body: &[u8]) -> Result<Msg> {
    let Some(&v) = body.first() else { return Err(Error::msg("empty frame")) };
    if body.len() == 1 {
        return Ok(Msg::Heartbeat);
    }
    let m: Msg = postcard::from_bytes(&body[1..]).map_err(|e| {
        if v == PROTOCOL_VERSION { Error::msg(format!("malformed frame: {e}")) } else { other_version(v) }
    })?;
    if v != PROTOCOL_VERSION && !m.is_frozen() {
        return Err(other_version(v));
    }
    Ok(m)
}

fn other_version(v: u8) -> Error {
    Error::msg(format!(
        "peer speaks protocol version {v}, this prima speaks {PROTOCOL_VERSION} (run `prima up` from the newer head to upgrade the agents)"
    ))
}

fn io_err(e: std::io::Error, peer: &str, what: &str) -> Error {
    use std::io::ErrorKind::*;
    match e.kind() {
        WouldBlock | TimedOut => Error::msg(format!("{peer}: no answer for too long while {what} (timed out)")),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe => {
            Error::msg(format!("{peer}: connection closed while {what}"))
        }
        InvalidData if e.get_ref().is_some_and(|i| i.is::<IntegrityError>()) => Error::msg(format!(
            "{peer}: {} while {what}; link closed (someone on the network path, or a broken link)",
            IntegrityError
        )),
        _ => Error::msg(format!("{peer}: {what}: {e}")),
    }
}

/// Read one frame; `max` bounds its size before any allocation.
pub fn read_frame(r: &mut impl Read, max: usize, peer: &str) -> Result<Msg> {
    read_frame_into(r, max, peer, &mut Vec::new())
}

/// [`read_frame`] through a body buffer the caller keeps: a stream of 4 MiB chunks then
/// allocates (and zeroes, and faults in) its buffer once instead of once per frame.
fn read_frame_into(r: &mut impl Read, max: usize, peer: &str, body: &mut Vec<u8>) -> Result<Msg> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(|e| io_err(e, peer, "waiting for a message"))?;
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > max {
        return Err(Error::msg(format!("{peer}: frame of {len} bytes rejected (limit {max})")));
    }
    // A buffer grown by one large frame is not kept for a stream of small ones.
    if body.capacity() > KEEP_BODY && len < body.capacity() / 4 {
        *body = Vec::new();
    }
    body.resize(len, 0);
    r.read_exact(body).map_err(|e| io_err(e, peer, "reading a message"))?;
    decode(body).map_err(|e| e.context(peer))
}

/// Body buffers up to this size stay allocated between frames.
const KEEP_BODY: usize = 8 << 20;

/// The socket's sending side and the sealer that must stay in step with it.
struct Wire {
    sock: BufWriter<TcpStream>,
    sealer: Option<Sealer>,
    buf: Vec<u8>,
}

struct SendInner {
    stream: Mutex<Wire>,
    last: Mutex<Instant>,
    closed: AtomicBool,
    peer: String,
    /// The peer's static public key, once the handshake proved it.
    remote_key: std::sync::OnceLock<[u8; 32]>,
}

impl Drop for SendInner {
    /// The last sender gone closes the connection, even while a reader thread still holds it.
    fn drop(&mut self) {
        if let Ok(w) = self.stream.get_mut() {
            let _ = w.sock.flush();
            let _ = w.sock.get_ref().shutdown(Shutdown::Both);
        }
    }
}

/// The sending half; cheap to clone, shared with the heartbeat thread.
#[derive(Clone)]
pub struct Sender {
    inner: Arc<SendInner>,
}

impl Sender {
    pub fn send(&self, msg: &Msg) -> Result<()> {
        self.send_frame(&encode(msg), msg.name())
    }

    fn send_frame(&self, frame: &[u8], what: &str) -> Result<()> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(Error::msg(format!("{}: connection already closed", self.inner.peer)));
        }
        let mut guard = self.inner.stream.lock().unwrap_or_else(|p| p.into_inner());
        let w = &mut *guard;
        let Some(sealer) = w.sealer.as_mut() else {
            return Err(Error::msg(format!("{}: not authenticated, {what} not sent", self.inner.peer)));
        };
        let n = Sealer::sealed_len(frame.len());
        if w.buf.capacity() > KEEP_BODY && n < w.buf.capacity() / 4 {
            w.buf = Vec::new();
        }
        if w.buf.len() < n {
            w.buf.resize(n, 0);
        }
        sealer.seal_into(frame, &mut w.buf[..n]);
        let r = w.sock.write_all(&w.buf[..n]).and_then(|_| w.sock.flush());
        *self.inner.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        r.map_err(|e| {
            self.inner.closed.store(true, Ordering::Relaxed);
            io_err(e, &self.inner.peer, &format!("sending {what}"))
        })
    }

    /// Send `Heartbeat` whenever nothing was sent for `every`; stops when the connection closes
    /// or every `Sender` clone is gone.
    pub fn start_heartbeat(&self, every: Duration) {
        let weak: Weak<SendInner> = Arc::downgrade(&self.inner);
        let frame = encode(&Msg::Heartbeat);
        // Without the thread the link still works; an idle peer then times out, as it would
        // on a dead link: no reason to panic.
        let _ = std::thread::Builder::new().name("heartbeat".into()).spawn(move || {
            loop {
                std::thread::sleep(every / 4);
                let Some(inner) = weak.upgrade() else { return };
                if inner.closed.load(Ordering::Relaxed) {
                    return;
                }
                let idle = inner.last.lock().map(|l| l.elapsed()).unwrap_or_default();
                if idle >= every && (Sender { inner }).send_frame(&frame, "heartbeat").is_err() {
                    return;
                }
            }
        });
    }

    /// Close both directions (wakes a reader blocked on this connection).
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Relaxed);
        if let Ok(w) = self.inner.stream.lock() {
            let _ = w.sock.get_ref().shutdown(Shutdown::Both);
        }
    }

    pub fn peer(&self) -> &str {
        &self.inner.peer
    }

    /// The peer's proven static key (None before the handshake).
    pub fn remote_key(&self) -> Option<[u8; 32]> {
        self.inner.remote_key.get().copied()
    }
}

/// The socket's receiving side as a plaintext stream: records are read and opened on demand.
struct Unsealing {
    sock: BufReader<TcpStream>,
    opener: Option<Opener>,
    record: Vec<u8>,
    plain: Vec<u8>,
    pos: usize,
}

impl Read for Unsealing {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.plain.len() {
            let Some(opener) = self.opener.as_mut() else {
                return Err(std::io::Error::other("not authenticated"));
            };
            let mut len = [0u8; 2];
            self.sock.read_exact(&mut len)?;
            self.record.resize(u16::from_be_bytes(len) as usize, 0);
            self.sock.read_exact(&mut self.record)?;
            let bad = |e| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
            // A caller that wants the whole record gets it decrypted in place of a copy.
            if out.len() + TAG >= self.record.len() {
                return opener.open_into(&self.record, out).map_err(bad);
            }
            opener.open(&self.record, &mut self.plain).map_err(bad)?;
            self.pos = 0;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The receiving half.
pub struct Receiver {
    stream: Unsealing,
    body: Vec<u8>,
    peer: String,
    pub max_frame: usize,
}

impl Receiver {
    /// The next message that is not a heartbeat.
    pub fn recv(&mut self) -> Result<Msg> {
        if self.stream.opener.is_none() {
            return Err(Error::msg(format!("{}: not authenticated, no message accepted", self.peer)));
        }
        loop {
            match read_frame_into(&mut self.stream, self.max_frame, &self.peer, &mut self.body)? {
                Msg::Heartbeat => continue,
                m => return Ok(m),
            }
        }
    }

    pub fn set_timeout(&self, t: Duration) {
        let _ = self.stream.sock.get_ref().set_read_timeout(Some(t));
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }
}

/// A connection split into its two halves.
pub struct Conn {
    pub tx: Sender,
    pub rx: Receiver,
}

impl Conn {
    /// Wrap an accepted or connected stream: no Nagle, read and write timeouts, pre-auth limit.
    pub fn new(stream: TcpStream, peer: impl Into<String>, t: Timeouts) -> Result<Conn> {
        let peer = peer.into();
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(t.io))?;
        stream.set_write_timeout(Some(t.io))?;
        let read = stream.try_clone()?;
        Ok(Conn {
            tx: Sender {
                inner: Arc::new(SendInner {
                    stream: Mutex::new(Wire {
                        sock: BufWriter::with_capacity(1 << 16, stream),
                        sealer: None,
                        buf: Vec::new(),
                    }),
                    last: Mutex::new(Instant::now()),
                    closed: AtomicBool::new(false),
                    peer: peer.clone(),
                    remote_key: Default::default(),
                }),
            },
            rx: Receiver {
                stream: Unsealing {
                    // Smaller than a record: full records are read past the buffer, straight
                    // into `record` (one copy less); lengths and small frames stay buffered.
                    sock: BufReader::with_capacity(1 << 14, read),
                    opener: None,
                    record: Vec::new(),
                    plain: Vec::new(),
                    pos: 0,
                },
                body: Vec::new(),
                peer,
                max_frame: AUTH_MAX_FRAME,
            },
        })
    }

    /// Connect to `addr` within the io timeout.
    pub fn connect(addr: &str, peer: impl Into<String>, t: Timeouts) -> Result<Conn> {
        let peer = peer.into();
        let mut last = Error::msg(format!("{peer}: `{addr}` resolves to no address"));
        let addrs = addr.to_socket_addrs().map_err(|e| Error::msg(format!("{peer}: bad address `{addr}`: {e}")))?;
        for a in addrs {
            match TcpStream::connect_timeout(&a, t.io) {
                Ok(s) => return Conn::new(s, peer, t),
                Err(e) => last = Error::msg(format!("{peer}: cannot connect to {addr}: {e}")),
            }
        }
        Err(last)
    }

    pub fn send(&self, msg: &Msg) -> Result<()> {
        self.tx.send(msg)
    }

    pub fn recv(&mut self) -> Result<Msg> {
        self.rx.recv()
    }

    /// Receive and turn an `Error` message from the peer into an error.
    pub fn recv_ok(&mut self) -> Result<Msg> {
        match self.rx.recv()? {
            Msg::Error { msg } => Err(Error::msg(format!("{}: {msg}", self.rx.peer))),
            m => Ok(m),
        }
    }

    /// Handshake only: write bytes in the clear.
    pub fn write_raw(&self, bytes: &[u8]) -> Result<()> {
        let mut w = self.tx.inner.stream.lock().unwrap_or_else(|p| p.into_inner());
        w.sock.write_all(bytes).and_then(|_| w.sock.flush()).map_err(|e| io_err(e, &self.rx.peer, "handshaking"))
    }

    /// Handshake only: fill `buf` in the clear, all of it by `deadline` (each read waits only
    /// for what is left, so a peer trickling bytes cannot stretch the handshake).
    pub fn read_raw(&mut self, buf: &mut [u8], deadline: Instant) -> Result<()> {
        let peer = &self.rx.peer;
        let s = &mut self.rx.stream.sock;
        let mut got = 0;
        while got < buf.len() {
            let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero());
            let Some(left) = left else {
                return Err(Error::msg(format!("{peer}: handshake not finished in time")));
            };
            let _ = s.get_ref().set_read_timeout(Some(left));
            match s.read(&mut buf[got..]) {
                Ok(0) => return Err(Error::msg(format!("{peer}: connection closed during the handshake"))),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(e, peer, "handshaking")),
            }
        }
        Ok(())
    }

    /// Handshake done: from now on every frame in both directions is sealed with `session`.
    pub fn secure(&mut self, session: snow::StatelessTransportState, remote_key: [u8; 32]) {
        let session: Session = Arc::new(session);
        self.tx.inner.stream.lock().unwrap_or_else(|p| p.into_inner()).sealer = Some(Sealer::new(session.clone()));
        self.rx.stream.opener = Some(Opener::new(session));
        let _ = self.tx.inner.remote_key.set(remote_key);
    }

    /// The peer's proven static key (None before the handshake).
    pub fn remote_key(&self) -> Option<[u8; 32]> {
        self.tx.remote_key()
    }

    /// After authentication: full frame size and heartbeats.
    pub fn authenticated(&mut self, t: Timeouts) {
        self.rx.max_frame = MAX_FRAME;
        self.tx.start_heartbeat(t.heartbeat);
    }

    pub fn peer(&self) -> &str {
        &self.rx.peer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_roundtrip_and_limits() {
        let m = Msg::Activations { round: 2, rows: vec![crate::model::SeqPos::new(0, 7)], data: vec![1.0, -2.5] };
        let f = encode(&m);
        assert_eq!(u32::from_le_bytes(f[..4].try_into().unwrap()) as usize, f.len() - 4);
        assert_eq!(read_frame(&mut &f[..], MAX_FRAME, "t").unwrap(), m);
        // Oversized: rejected from the length alone.
        let big = [0xff, 0xff, 0xff, 0x7f, PROTOCOL_VERSION];
        assert!(read_frame(&mut &big[..], MAX_FRAME, "t").unwrap_err().to_string().contains("rejected"));
        // Another version: only the frozen bootstrap messages are understood.
        let mut bad = f.clone();
        bad[4] = 99;
        assert!(read_frame(&mut &bad[..], MAX_FRAME, "t").unwrap_err().to_string().contains("protocol version"));
        let mut hello = encode(&Msg::Hello);
        hello[4] = 99;
        assert_eq!(read_frame(&mut &hello[..], MAX_FRAME, "t").unwrap(), Msg::Hello);
        let mut hb = encode(&Msg::Heartbeat);
        assert_eq!(hb.len(), 5);
        hb[4] = 99;
        assert_eq!(read_frame(&mut &hb[..], MAX_FRAME, "t").unwrap(), Msg::Heartbeat);
        // Garbage payload and truncation: errors, not panics.
        for n in 0..f.len() {
            assert!(read_frame(&mut &f[..n], MAX_FRAME, "t").is_err(), "frame truncated to {n} of {} bytes", f.len());
        }
        let junk = [6, 0, 0, 0, PROTOCOL_VERSION, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(read_frame(&mut &junk[..], MAX_FRAME, "t").is_err());
        // Byte fields are blocks (serde_bytes), encoded exactly as the byte-by-byte sequence
        // they replaced: older peers read them unchanged.
        assert_eq!(
            postcard::to_stdvec(&serde_bytes::Bytes::new(&[1, 2, 200])).unwrap(),
            postcard::to_stdvec(&vec![1u8, 2, 200]).unwrap()
        );
        // A huge Vec length inside a small frame does not allocate it.
        let lie = [7, 0, 0, 0, PROTOCOL_VERSION, 7, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(read_frame(&mut &lie[..], MAX_FRAME, "t").is_err());
    }
}

#[cfg(test)]
mod bench {
    use super::*;
    use std::net::TcpListener;

    /// Round trips of a decode-sized activation frame over loopback: a benchmark, not a test.
    #[test]
    #[ignore = "benchmark: cargo test --release --lib loopback_round_trip -- --ignored --nocapture"]
    fn loopback_round_trip() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = Timeouts::default();
        let secret = crate::cluster::auth::Secret::from_bytes(b"0123456789abcdef").unwrap();
        let s2 = secret.clone();
        let echo = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut c = Conn::new(s, "head", t).unwrap();
            crate::cluster::auth::server(&mut c, &s2, t).unwrap();
            while let Ok(m) = c.recv() {
                if c.send(&m).is_err() {
                    break;
                }
            }
        });
        let mut c = Conn::connect(&addr, "echo", t).unwrap();
        crate::cluster::auth::client(&mut c, &secret, t).unwrap();
        let msg = Msg::Activations { round: 0, rows: vec![crate::model::SeqPos::new(0, 0)], data: vec![0.5; 576] };
        let n = 300;
        let (mut send, mut total) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..n {
            let t0 = Instant::now();
            c.send(&msg).unwrap();
            send += t0.elapsed();
            assert!(matches!(c.recv().unwrap(), Msg::Activations { .. }));
            total += t0.elapsed();
        }
        eprintln!("loopback: send {:?}, round trip {:?} per 576-float frame", send / n, total / n);
        c.tx.close();
        echo.join().unwrap();
    }
}

#[cfg(test)]
mod stream_bench {
    use super::*;
    use std::net::TcpListener;

    /// Layer-streaming rate of the link alone (sealing, framing, postcard, loopback TCP): 512 MiB
    /// of 4 MiB `TensorChunk`s. `cargo test --release --lib loopback_stream_rate -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn loopback_stream_rate() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = Timeouts::default();
        let secret = crate::cluster::auth::Secret::from_bytes(b"0123456789abcdef").unwrap();
        let s2 = secret.clone();
        let n = 128usize;
        let sink = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut c = Conn::new(s, "head", t).unwrap();
            crate::cluster::auth::server(&mut c, &s2, t).unwrap();
            let mut bytes = 0usize;
            for _ in 0..n {
                match c.recv().unwrap() {
                    Msg::TensorChunk { data, .. } => bytes += data.len(),
                    m => panic!("{}", m.name()),
                }
            }
            c.send(&Msg::StreamEnd).unwrap();
            bytes
        });
        let mut c = Conn::connect(&addr, "sink", t).unwrap();
        crate::cluster::auth::client(&mut c, &secret, t).unwrap();
        let data = vec![0x5au8; CHUNK];
        let t0 = Instant::now();
        for i in 0..n {
            c.send(&Msg::TensorChunk { index: 0, offset: (i * CHUNK) as u64, data: data.clone() }).unwrap();
        }
        assert_eq!(c.recv().unwrap(), Msg::StreamEnd);
        let s = t0.elapsed().as_secs_f64();
        let bytes = sink.join().unwrap();
        eprintln!("loopback stream: {:.0} MB in {s:.2} s = {:.0} MB/s", bytes as f64 / 1e6, bytes as f64 / 1e6 / s);
    }
}
