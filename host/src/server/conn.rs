//! Client connections: the header and keep-alive timeouts enforced on the socket, the request
//! accounting that tells an idle connection from a busy one, and each worker's table of open
//! connections, which caps them and evicts the oldest idle one when a new client needs room.
//!
//! hyper's own header timeout also runs while a kept-alive connection waits for its next
//! request, so the two nginx-style timeouts are kept here instead: the keep-alive timeout until
//! the first byte of a request, then the header timeout until the request is handed over.
//!
//! Between requests an HTTP/1 connection is *parked*: hyper's connection (with its 8 KiB read
//! and write buffers) is taken apart and only the socket is kept, until the client sends its
//! next request. This is what lets an idle keep-alive connection cost a few KiB instead of
//! twenty.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// The timeouts a client connection is held to while it waits for a request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub header: Duration,
    pub keepalive: Duration,
}

/// What one connection's socket, requests and table entry share.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// Requests whose response has not finished.
    in_flight: AtomicUsize,
    /// Upgraded to another protocol (WebSocket): never idle, never evicted.
    upgraded: AtomicBool,
    /// Already told to close.
    evicting: AtomicBool,
    /// A request began since the connection was last (re)started.
    served: AtomicBool,
    /// The last read found nothing to read.
    read_blocked: AtomicBool,
    /// The last write found the socket full: hyper still holds bytes to send.
    write_blocked: AtomicBool,
    /// The connection is being taken apart to be parked: shutting the socket down is skipped.
    parking: AtomicBool,
    /// Told to close by the table, to make room.
    pub evict: Notify,
}

impl Shared {
    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && !self.upgraded.load(Ordering::Acquire)
    }

    /// Tells an idle connection to close; false when it is busy or was already told.
    fn try_evict(&self) -> bool {
        if !self.idle() || self.evicting.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.evict.notify_one();
        true
    }

    /// Counts a request from the moment its head was read until its response body ends (or
    /// is dropped).
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Whether the HTTP/1 connection may be parked now: it answered a request since it was
    /// started, every response was sent in full, and hyper is waiting for the next request.
    /// Checked by the connection's task right after it polled hyper, so nothing ran between.
    pub fn parkable(&self) -> bool {
        self.idle()
            && self.served.load(Ordering::Relaxed)
            && self.read_blocked.load(Ordering::Relaxed)
            && !self.write_blocked.load(Ordering::Relaxed)
    }

    /// Marks the connection as being parked: hyper's shutdown of the socket is skipped.
    pub fn start_parking(&self) {
        self.parking.store(true, Ordering::Relaxed);
    }
}

/// One request in flight on a connection; see [`Shared::request`].
#[derive(Debug)]
pub(super) struct InFlight(Arc<Shared>);

impl InFlight {
    /// Ties the request's end to the end of `response`'s body. A `101` response hands the
    /// connection to another protocol, which is then never taken for idle.
    pub fn attach(self, response: Response) -> Response {
        if response.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS {
            self.0.upgraded.store(true, Ordering::Release);
        }
        response.map(|inner| Body::new(Tracked { inner, _done: self }))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted until it is finished or dropped.
#[derive(Debug)]
struct Tracked {
    inner: Body,
    _done: InFlight,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A worker's open client connections, oldest first, and its share of the cap.
#[derive(Debug)]
pub(super) struct Table {
    cap: usize,
    next: AtomicUsize,
    open: Mutex<BTreeMap<usize, Weak<Shared>>>,
}

/// Whether a new connection may be served.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// There is room.
    Room,
    /// The table was full; the oldest idle connection was told to close.
    Evicted,
    /// The table is full of busy connections: close the new one.
    Full,
}

impl Table {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            next: AtomicUsize::new(0),
            open: Mutex::new(BTreeMap::new()),
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, Weak<Shared>>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The number of open connections.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Decides whether a new connection is served, evicting the oldest idle one when full.
    pub fn admit(&self) -> Admission {
        if self.len() < self.cap {
            Admission::Room
        } else if self.evict_one() {
            Admission::Evicted
        } else {
            Admission::Full
        }
    }

    /// Tells the oldest idle connection to close, if there is one; used when the process runs
    /// out of file descriptors.
    pub fn evict_one(&self) -> bool {
        self.entries()
            .values()
            .filter_map(Weak::upgrade)
            .any(|shared| shared.try_evict())
    }

    /// Registers a connection; it leaves the table when its socket is dropped.
    fn register(self: &Arc<Self>, shared: &Arc<Shared>) -> Entry {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.entries().insert(key, Arc::downgrade(shared));
        Entry {
            table: Arc::clone(self),
            key,
        }
    }
}

#[derive(Debug)]
struct Entry {
    table: Arc<Table>,
    key: usize,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.table.entries().remove(&self.key);
    }
}

/// Where the socket is in the request cycle, as far as the timeouts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request is in flight or the connection was upgraded: the socket has no deadline.
    Busy,
    /// Waiting for the first byte of the next request (keep-alive timeout).
    Idle,
    /// Reading a request head (header timeout).
    Head,
}

/// The first bytes an HTTP/2 client with prior knowledge sends (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How a connection goes on once its client has sent something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// The client left, or its time ran out, before it sent anything.
    Closed,
    /// HTTP/2 with prior knowledge.
    Http2,
    /// Anything else, for hyper's HTTP/1 parser to read.
    Http1,
}

/// A client socket held to the header and keep-alive timeouts. It is moved into the upgraded
/// connection too, so a WebSocket keeps its place in the table.
#[derive(Debug)]
pub(super) struct ClientIo {
    stream: TcpStream,
    /// Bytes read but not yet handed to hyper: what hyper had read past its last request when
    /// the connection was parked, or an HTTP/2 preface.
    unread: Bytes,
    shared: Arc<Shared>,
    timeouts: Timeouts,
    phase: Phase,
    deadline: Pin<Box<Sleep>>,
    _entry: Entry,
}

impl ClientIo {
    /// Wraps a new connection: it has `timeouts.header` to send its first request head.
    pub fn new(stream: TcpStream, table: &Arc<Table>, timeouts: Timeouts) -> (Self, Arc<Shared>) {
        let shared = Arc::new(Shared::default());
        let entry = table.register(&shared);
        let io = Self {
            stream,
            unread: Bytes::new(),
            shared: Arc::clone(&shared),
            timeouts,
            phase: Phase::Head,
            deadline: Box::pin(tokio::time::sleep(timeouts.header)),
            _entry: entry,
        };
        (io, shared)
    }

    /// Parks the socket after hyper let go of it, keeping the bytes hyper had read past its
    /// last request; the keep-alive timeout starts now.
    pub fn park(&mut self, unread: &[u8]) {
        // Copied: hyper's leftover bytes share its whole read buffer, which is what parking
        // gives back.
        self.unread = Bytes::copy_from_slice(unread);
        self.phase = Phase::Idle;
        let deadline = Instant::now() + self.timeouts.keepalive;
        self.deadline.as_mut().reset(deadline);
        for flag in [
            &self.shared.served,
            &self.shared.read_blocked,
            &self.shared.write_blocked,
            &self.shared.parking,
        ] {
            flag.store(false, Ordering::Relaxed);
        }
    }

    /// Waits, holding no buffer, until the client sends something, within the keep-alive
    /// timeout (or the header timeout of a new connection). Only a new connection may speak
    /// HTTP/2.
    pub async fn wait_for_request(&mut self, new: bool) -> Start {
        if !self.unread.is_empty() {
            self.start_head();
            return Start::Http1;
        }
        if !new {
            // Readiness alone, with no read: hyper reads the request (or the end of the
            // connection) itself.
            let ready = std::future::poll_fn(|cx| match self.stream.poll_read_ready(cx) {
                Poll::Pending if self.deadline.as_mut().poll(cx).is_ready() => {
                    Poll::Ready(Err(timed_out(self.phase)))
                }
                other => other,
            })
            .await;
            if let Err(err) = ready {
                tracing::debug!(error = %err, "client connection closed while waiting for a request");
                return Start::Closed;
            }
            self.start_head();
            return Start::Http1;
        }
        let mut first = [0; PREFACE.len()];
        let peeked = std::future::poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut first);
            match self.stream.poll_peek(cx, &mut buf) {
                Poll::Pending if self.deadline.as_mut().poll(cx).is_ready() => {
                    Poll::Ready(Err(timed_out(self.phase)))
                }
                other => other,
            }
        })
        .await;
        let peeked = match peeked {
            Ok(0) => return Start::Closed,
            Ok(peeked) => peeked,
            Err(err) => {
                tracing::debug!(error = %err, "client connection closed while waiting for a request");
                return Start::Closed;
            }
        };
        if !PREFACE.starts_with(&first[..peeked]) {
            return Start::Http1;
        }
        // A preface split across packets: read all of it (within the header timeout) and
        // hand it over with the rest.
        let mut preface = vec![0; PREFACE.len()];
        match tokio::io::AsyncReadExt::read_exact(self, &mut preface).await {
            Ok(_) => {
                let start = if preface == PREFACE {
                    Start::Http2
                } else {
                    Start::Http1
                };
                self.unread = Bytes::from(preface);
                start
            }
            Err(_) => Start::Closed,
        }
    }

    /// A request has begun: the header timeout runs from its first byte (from the connect,
    /// for a new connection's first request).
    fn start_head(&mut self) {
        if self.phase == Phase::Idle {
            self.phase = Phase::Head;
            let deadline = Instant::now() + self.timeouts.header;
            self.deadline.as_mut().reset(deadline);
        }
    }

    /// Moves between phases as the connection's requests come and go; called on every read,
    /// so a connection that just finished a response starts its keep-alive wait here.
    fn update_phase(&mut self) {
        if !self.shared.idle() {
            self.phase = Phase::Busy;
        } else if self.phase == Phase::Busy {
            self.phase = Phase::Idle;
            let deadline = Instant::now() + self.timeouts.keepalive;
            self.deadline.as_mut().reset(deadline);
        }
    }
}

fn timed_out(phase: Phase) -> io::Error {
    let what = match phase {
        Phase::Head => "the request headers did not arrive in time",
        Phase::Idle | Phase::Busy => "the kept-alive connection was idle too long",
    };
    io::Error::new(io::ErrorKind::TimedOut, what)
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.unread.is_empty() {
            let count = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread.split_to(count));
            return Poll::Ready(Ok(()));
        }
        this.update_phase();
        let before = buf.filled().len();
        let result = match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.phase == Phase::Idle && buf.filled().len() > before {
                    this.start_head();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                if this.phase != Phase::Busy && this.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(timed_out(this.phase)));
                }
                Poll::Pending
            }
        };
        this.shared
            .read_blocked
            .store(result.is_pending(), Ordering::Relaxed);
        result
    }
}

impl ClientIo {
    /// Notes whether a write found the socket full.
    fn wrote<T>(&self, result: Poll<T>) -> Poll<T> {
        self.shared
            .write_blocked
            .store(result.is_pending(), Ordering::Relaxed);
        result
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, data);
        self.wrote(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper shuts a connection down when it ends; one being parked goes on.
        if self.shared.parking.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The default cap on open client connections: what the file descriptor limit leaves after a
/// reserve for the process itself, halved because each proxied request may hold an upstream
/// connection too.
pub(super) fn default_cap(descriptors: u64) -> usize {
    const RESERVE: u64 = 64;
    let cap = descriptors.saturating_sub(RESERVE) / 2;
    usize::try_from(cap)
        .unwrap_or(usize::MAX)
        .clamp(16, 1 << 20)
}

/// Raises the soft limit on open files to the hard limit, as servers do at start, and returns
/// the limit in force.
pub(super) fn raise_descriptor_limit() -> u64 {
    #[cfg(unix)]
    {
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) => limit,
            Err(err) => {
                tracing::warn!(%err, "cannot raise the open file limit");
                rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
            }
        }
    }
    #[cfg(not(unix))]
    {
        1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_follows_the_descriptor_limit() {
        assert_eq!(default_cap(1024), 480);
        assert_eq!(default_cap(10), 16);
        assert_eq!(default_cap(u64::MAX), 1 << 20);
    }

    #[test]
    fn a_full_table_evicts_the_oldest_idle_connection() {
        let table = Table::new(2);
        let busy = Arc::new(Shared::default());
        let idle = Arc::new(Shared::default());
        let _busy_entry = table.register(&busy);
        let _request = busy.request();
        let _idle_entry = table.register(&idle);
        assert_eq!(table.len(), 2);
        assert_eq!(table.admit(), Admission::Evicted);
        // Told once: the next newcomer finds no other idle connection.
        assert_eq!(table.admit(), Admission::Full);
        drop(_idle_entry);
        assert_eq!(table.admit(), Admission::Room);
    }
}
