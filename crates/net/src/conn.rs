//! One connection's head and idle deadlines, and the wrapper around its socket.
//!
//! hyper closes a connection whose request head does not arrive in time, using a timer it is
//! given, and it asks that timer for a sleep each time it starts waiting for a head: when the
//! connection opens, and after each response on a kept-alive connection. [`HeadTimer`] gives it
//! a sleep whose deadline follows what the socket saw ([`Io`] notes the first byte read while a
//! head is awaited):
//!
//! ```text
//!  waiting for the first head        deadline = opened + header_read_timeout
//!  waiting, kept alive, no byte yet  deadline = waiting since + idle_timeout       (idle)
//!  a later head has started          deadline = its first byte + header_read_timeout
//! ```
//!
//! [`Io`] also holds the connection's slot (so an upgraded WebSocket keeps it until it closes)
//! and turns hyper's own error answers (`400`, `414`, `431`, written with an empty body) into
//! the server's JSON shape.

use crate::errors::{self, ErrorShape};
use crate::{Limits, Stats};
use axum::http::StatusCode;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

/// What the socket wrapper and the head timer share.
pub(crate) struct State {
    opened: Instant,
    header: Duration,
    idle: Duration,
    stats: Arc<Stats>,
    /// The generation of the live head sleep; 0 before the first.
    waiting: AtomicU64,
    /// Whether a head sleep is live (hyper waits for a head).
    awaiting_head: AtomicBool,
    /// Nanoseconds after `opened` (plus one) of the first byte read while awaiting a head; 0:
    /// none yet.
    head_started: AtomicU64,
}

impl State {
    pub(crate) fn new(limits: &Limits, stats: Arc<Stats>) -> State {
        State {
            opened: Instant::now(),
            header: limits.header_read_timeout,
            idle: limits.idle_timeout,
            stats,
            waiting: AtomicU64::new(0),
            awaiting_head: AtomicBool::new(false),
            head_started: AtomicU64::new(0),
        }
    }

    fn note_read(&self) {
        if self.awaiting_head.load(Ordering::Relaxed)
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            let at = self.opened.elapsed().as_nanos() as u64 + 1;
            let _ = self
                .head_started
                .compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn head_started(&self) -> Option<Instant> {
        match self.head_started.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.opened + Duration::from_nanos(n - 1)),
        }
    }
}

/// The timer handed to hyper for its header read timeout; see the module docs.
#[derive(Clone)]
pub(crate) struct HeadTimer(Arc<State>);

impl HeadTimer {
    pub(crate) fn new(state: Arc<State>) -> HeadTimer {
        HeadTimer(state)
    }
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, _deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        // hyper's deadline is now + header_read_timeout; ours depends on what arrives.
        let state = &self.0;
        let generation = state.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        state.head_started.store(0, Ordering::Relaxed);
        state.awaiting_head.store(true, Ordering::Relaxed);
        let since = Instant::now();
        let first = generation == 1;
        let deadline = if first {
            state.opened + state.header
        } else {
            since + state.idle
        };
        Box::pin(HeadSleep {
            state: state.clone(),
            generation,
            first,
            since,
            armed: deadline,
            sleep: Box::pin(tokio::time::sleep_until(deadline.into())),
        })
    }
}

struct HeadSleep {
    state: Arc<State>,
    generation: u64,
    first: bool,
    since: Instant,
    armed: Instant,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl HeadSleep {
    /// The deadline now, and whether passing it is an idle close (else a slow head).
    fn deadline(&self) -> (Instant, bool) {
        let s = &self.state;
        if self.first {
            return (s.opened + s.header, false);
        }
        match s.head_started() {
            Some(at) => (at + s.header, false),
            None => (self.since + s.idle, true),
        }
    }
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // hyper polls this after every read that did not complete the head, so a head that
        // starts moves the deadline in time.
        let (deadline, idle) = self.deadline();
        if deadline != self.armed {
            self.armed = deadline;
            self.sleep.as_mut().reset(deadline.into());
        }
        ready!(self.sleep.as_mut().poll(cx));
        let stats = &self.state.stats;
        if idle {
            stats.idle_closed.fetch_add(1, Ordering::Relaxed);
            debug!("kept-alive connection idle past idle_timeout: closed");
        } else {
            stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
            debug!("request head not complete within header_read_timeout: closed");
        }
        Poll::Ready(())
    }
}

impl hyper::rt::Sleep for HeadSleep {}

impl Drop for HeadSleep {
    fn drop(&mut self) {
        // hyper may make the next sleep before it drops this one.
        if self.state.waiting.load(Ordering::Relaxed) == self.generation {
            self.state.awaiting_head.store(false, Ordering::Relaxed);
        }
    }
}

/// A connection's socket: notes reads for [`HeadTimer`], holds the connection's slot, and
/// rewrites hyper's empty error answers as JSON.
pub(crate) struct Io<T> {
    inner: T,
    state: Arc<State>,
    _slot: OwnedSemaphorePermit,
    shape: ErrorShape,
    max_uri: usize,
    max_header: usize,
    /// A rewritten answer being written: its bytes, how many are written, and how many bytes
    /// of hyper's to report written once it is out.
    rewrite: Option<(Vec<u8>, usize, usize)>,
}

impl<T> Io<T> {
    pub(crate) fn new(
        inner: T,
        state: Arc<State>,
        slot: OwnedSemaphorePermit,
        shape: ErrorShape,
        limits: &Limits,
    ) -> Io<T> {
        Io {
            inner,
            state,
            _slot: slot,
            shape,
            max_uri: limits.max_uri_bytes,
            max_header: limits.max_header_bytes,
            rewrite: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> Io<T> {
    /// Writes out a pending rewritten answer; `Ready(Ok(n))` with hyper's byte count once done.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<usize>>> {
        let Some((bytes, written, claimed)) = &mut self.rewrite else {
            return Poll::Ready(Ok(None));
        };
        while *written < bytes.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        let claimed = *claimed;
        self.rewrite = None;
        Poll::Ready(Ok(Some(claimed)))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Io<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.state.note_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Io<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.rewrite.is_none()
            && let Some(status) = errors::hyper_error_answer(buf)
        {
            let message = match status {
                StatusCode::URI_TOO_LONG => "the request target is too long".to_owned(),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => format!(
                    "the request head is larger than {} bytes or has too many headers (request target at most {} bytes)",
                    self.max_header, self.max_uri
                ),
                _ => "the request could not be parsed as HTTP/1.1".to_owned(),
            };
            let answer = errors::canned(self.shape, status, &message);
            self.rewrite = Some((answer, 0, buf.len()));
        }
        if let Some(n) = ready!(self.drain(cx))? {
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.rewrite.is_some() {
            // hyper reported its bytes written only once the rewrite was out; nothing pending.
            ready!(self.drain(cx))?;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
