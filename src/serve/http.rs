//! hyper on smol: hyper parses HTTP and drives each connection; this file only adapts smol's
//! sockets and timers to hyper's I/O and timer traits, and gives responses a body type that is
//! either whole or a channel of chunks (server-sent events).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::rt::{ReadBufCursor, Sleep, Timer};
use smol::channel::Receiver;
use smol::io::{AsyncRead, AsyncWrite};
use smol::stream::Stream;

/// A smol TCP stream as hyper's I/O.
pub struct Io(pub smol::net::TcpStream);

impl hyper::rt::Read for Io {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, mut buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        // Read through a small initialised buffer: no unsafe, and requests are small.
        let mut tmp = [0u8; 8192];
        let want = buf.remaining().min(tmp.len());
        match Pin::new(&mut self.0).poll_read(cx, &mut tmp[..want]) {
            Poll::Ready(Ok(n)) => {
                buf.put_slice(&tmp[..n]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// smol's timer for hyper's header-read timeout.
#[derive(Clone)]
pub struct SmolTimer;

struct SmolSleep(smol::Timer);

impl Future for SmolSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Sleep for SmolSleep {}

impl Timer for SmolTimer {
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Sleep>> {
        Box::pin(SmolSleep(smol::Timer::after(d)))
    }
    fn sleep_until(&self, at: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(SmolSleep(smol::Timer::at(at)))
    }
}

/// A response body: all at once, or chunks as they are produced. When the client goes away,
/// hyper drops the body and with it the receiver, which the producer notices.
pub enum Body {
    Full(Option<Bytes>),
    Stream(Pin<Box<Receiver<Bytes>>>),
}

impl Body {
    pub fn full(b: impl Into<Bytes>) -> Body {
        Body::Full(Some(b.into()))
    }
    pub fn stream(rx: Receiver<Bytes>) -> Body {
        Body::Stream(Box::pin(rx))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.as_mut().poll_next(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

/// Why a request body could not be read.
pub enum ReadError {
    TooLarge,
    TimedOut,
    Broken(String),
}

/// The whole request body, refusing more than `limit` bytes or a client slower than `timeout`.
pub async fn read_body(mut body: hyper::body::Incoming, limit: usize, timeout: Duration) -> Result<Vec<u8>, ReadError> {
    use http_body::Body as _;
    let read = async {
        let mut out = Vec::new();
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            match frame {
                None => return Ok(out),
                Some(Err(e)) => return Err(ReadError::Broken(e.to_string())),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        if out.len() + data.len() > limit {
                            return Err(ReadError::TooLarge);
                        }
                        out.extend_from_slice(&data);
                    }
                }
            }
        }
    };
    let late = async {
        smol::Timer::after(timeout).await;
        Err(ReadError::TimedOut)
    };
    smol::future::or(read, late).await
}
