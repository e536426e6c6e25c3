//! The serving threads. Each worker is an OS thread with its own single-threaded tokio runtime,
//! its own listening socket on the shared address (`SO_REUSEPORT`, so the kernel spreads new
//! connections across them) and its own upstream connection pool (see
//! [`crate::proxy::enter_worker`]). A request is accepted, forwarded and answered on one thread:
//! no task migrates and no wake-up crosses threads, which is where a work-stealing runtime
//! spends much of a small proxied request.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::{mpsc, oneshot, watch};

use super::conn::{Admission, ClientIo, InFlight, Shared, Start, Table, Timeouts};

/// What the workers are told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Serve,
    /// Stop accepting; finish the requests in flight.
    Drain,
    /// Stop now, dropping connections.
    Stop,
}

/// How the workers treat client connections.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    pub timeouts: Timeouts,
    /// Open connections allowed per worker.
    pub cap: usize,
}

/// The largest request head (request line and headers) a client may send; hyper answers 431
/// past it. nginx's default allows 4 buffers of 8 KiB.
const MAX_HEAD: usize = 64 << 10;

/// The running workers. Dropping them stops them at once.
#[derive(Debug)]
pub(super) struct Workers {
    order: watch::Sender<Order>,
    done: Vec<oneshot::Receiver<std::io::Result<()>>>,
}

/// Binds `count` listening sockets to `addr`; with port 0 the first picks the port and the
/// others share it.
///
/// `SO_REUSEPORT` would also let a second process of the same user bind the address and take a
/// share of the connections, so the address is first claimed without it: an address already
/// in use (by another Portico too) is an error, as with a single socket.
pub(super) fn bind(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut bound = addr;
    if count > 1 {
        bound = std::net::TcpListener::bind(addr)?.local_addr()?;
    }
    for _ in 0..count.max(1) {
        let socket = match bound {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        #[cfg(unix)]
        if count > 1 {
            socket.set_reuseport(true)?;
        }
        socket.set_nodelay(true)?;
        socket.bind(bound)?;
        bound = socket.local_addr()?;
        let listener = socket.listen(1024)?;
        listeners.push(listener.into_std()?);
    }
    Ok(listeners)
}

impl Workers {
    /// Starts one worker thread per listener, each serving `router`.
    pub(super) fn spawn(
        listeners: Vec<std::net::TcpListener>,
        router: &axum::Router,
        settings: Settings,
    ) -> std::io::Result<Self> {
        let (order, orders) = watch::channel(Order::Serve);
        let mut workers = Self {
            order,
            done: Vec::with_capacity(listeners.len()),
        };
        for (index, listener) in listeners.into_iter().enumerate() {
            let router = router.clone();
            let orders = orders.clone();
            let (report, done) = oneshot::channel();
            std::thread::Builder::new()
                .name(format!("portico-worker-{index}"))
                .spawn(move || {
                    let _ = report.send(run(index, listener, router, settings, orders));
                })?;
            workers.done.push(done);
        }
        Ok(workers)
    }

    /// Stops accepting and waits for the requests in flight; the first error a worker met,
    /// if any.
    pub(super) async fn drain(&mut self) -> std::io::Result<()> {
        self.order.send_replace(Order::Drain);
        let mut result = Ok(());
        for done in self.done.drain(..) {
            if let Ok(Err(err)) = done.await
                && result.is_ok()
            {
                result = Err(err);
            }
        }
        result
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.order.send_replace(Order::Stop);
    }
}

/// One worker: its runtime, its listener, until told to stop.
fn run(
    index: usize,
    listener: std::net::TcpListener,
    router: axum::Router,
    settings: Settings,
    mut orders: watch::Receiver<Order>,
) -> std::io::Result<()> {
    crate::proxy::enter_worker(index);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let worker = Arc::new(Worker {
            table: Table::new(settings.cap),
            http1: http1_builder(),
            http2: http2::Builder::new(TokioExecutor::new()),
            router,
            timeouts: settings.timeouts,
            orders: orders.clone(),
        });
        // Each connection's task holds a sender: the channel closes when the last one ends.
        let (alive, mut all_ended) = mpsc::channel::<()>(1);
        while *orders.borrow_and_update() == Order::Serve {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => serve(stream, peer, &worker, &alive),
                    Err(err) => accept_failed(&err, &worker.table).await,
                },
                _ = orders.changed() => {}
            }
        }
        drop(listener);
        drop(alive);
        if *orders.borrow() == Order::Stop {
            return Ok(());
        }
        tokio::select! {
            _ = all_ended.recv() => {}
            _ = orders.wait_for(|order| *order == Order::Stop) => {}
        }
        Ok(())
    })
}

/// What a worker's connections share.
#[derive(Debug)]
struct Worker {
    table: Arc<Table>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    router: axum::Router,
    timeouts: Timeouts,
    orders: watch::Receiver<Order>,
}

fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The header and keep-alive timeouts are kept by the socket (see `conn`).
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD);
    builder
}

/// Serves one accepted connection in its own task, unless the table is full of busy ones.
fn serve(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    worker: &Arc<Worker>,
    alive: &mpsc::Sender<()>,
) {
    if worker.table.admit() == Admission::Full {
        tracing::debug!(%peer, open = worker.table.len(), "connection refused: every connection is busy");
        return;
    }
    let _ = stream.set_nodelay(true);
    let (io, shared) = ClientIo::new(stream, &worker.table, worker.timeouts);
    let handler = Handler {
        router: worker.router.clone(),
        shared: Arc::clone(&shared),
        peer,
    };
    tokio::spawn(connection(
        io,
        shared,
        handler,
        Arc::clone(worker),
        alive.clone(),
    ));
}

/// How a connection's task ends, or goes on.
#[expect(
    clippy::large_enum_variant,
    reason = "a value handed from one step of the loop to the next, never stored"
)]
enum Step {
    /// hyper finished with the connection (closed, failed or upgraded): the task ends.
    Ended,
    /// Parked between requests: hyper let go, the socket and the unread bytes are kept.
    Parked(ClientIo, Handler, bytes::Bytes),
}

/// One client connection, from accept to close. An HTTP/1 connection is served by hyper while
/// a request is on it and parked in between (see `conn`); one told to close by the table goes
/// at once; on drain, a parked connection closes and a busy one finishes its request first.
async fn connection(
    mut io: ClientIo,
    shared: Arc<Shared>,
    mut handler: Handler,
    worker: Arc<Worker>,
    _alive: mpsc::Sender<()>,
) {
    let peer = handler.peer;
    let mut orders = worker.orders.clone();
    let evicted = shared.evict.notified();
    let drained = orders.wait_for(|order| *order != Order::Serve);
    tokio::pin!(evicted, drained);
    let mut draining = false;
    let mut new = true;
    loop {
        let start = tokio::select! {
            start = io.wait_for_request(new) => start,
            () = &mut evicted => return,
            _ = &mut drained => return,
        };
        let step = match start {
            Start::Closed => return,
            Start::Http2 => {
                // Boxed, as HTTP/1 below: the task of a parked connection stays small.
                let conn = Box::pin(worker.http2.serve_connection(TokioIo::new(io), handler));
                serve_http2(conn, &mut evicted, &mut drained, draining).await
            }
            Start::Http1 => {
                let conn = worker
                    .http1
                    .serve_connection(TokioIo::new(io), handler)
                    .with_upgrades();
                let mut conn = Box::new(conn);
                let mut parking = false;
                let ended = std::future::poll_fn(|cx| {
                    loop {
                        if let Poll::Ready(result) = Pin::new(&mut *conn).poll(cx) {
                            return Poll::Ready(Some(result));
                        }
                        if evicted.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(None);
                        }
                        if !draining && drained.as_mut().poll(cx).is_ready() {
                            draining = true;
                            Pin::new(&mut *conn).graceful_shutdown();
                            continue;
                        }
                        if !draining && !parking && shared.parkable() {
                            parking = true;
                            shared.start_parking();
                            Pin::new(&mut *conn).graceful_shutdown();
                            continue;
                        }
                        return Poll::Pending;
                    }
                })
                .await;
                match ended {
                    None => Step::Ended,
                    Some(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "client connection ended with an error");
                        Step::Ended
                    }
                    Some(Ok(())) if parking && !draining => match (*conn).into_parts() {
                        Some(parts) => {
                            Step::Parked(parts.io.into_inner(), parts.service, parts.read_buf)
                        }
                        None => Step::Ended,
                    },
                    Some(Ok(())) => Step::Ended,
                }
            }
        };
        match step {
            Step::Ended => return,
            Step::Parked(parked, service, unread) => {
                io = parked;
                handler = service;
                io.park(&unread);
                new = false;
            }
        }
    }
}

/// Serves an HTTP/2 connection to its end; it is never parked.
async fn serve_http2<E, D>(
    mut conn: Pin<Box<http2::Connection<TokioIo<ClientIo>, Handler, TokioExecutor>>>,
    evicted: &mut Pin<&mut E>,
    drained: &mut Pin<&mut D>,
    mut draining: bool,
) -> Step
where
    E: Future<Output = ()>,
    D: Future,
{
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "HTTP/2 client connection ended with an error");
                }
                return Step::Ended;
            }
            () = evicted.as_mut() => return Step::Ended,
            _ = drained.as_mut(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Serves one connection's requests with the router: each request is told its peer and counted
/// until its response ends.
#[derive(Debug, Clone)]
struct Handler {
    router: axum::Router,
    shared: Arc<Shared>,
    peer: SocketAddr,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Handler {
    type Response = Response;
    type Error = Infallible;
    type Future = Respond;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let in_flight = self.shared.request();
        let call = tower_service::Service::call(&mut self.router.clone(), request);
        Respond {
            call,
            in_flight: Some(in_flight),
        }
    }
}

/// The router's answer to one request, tied to the request's accounting.
struct Respond {
    call: RouteFuture<Infallible>,
    in_flight: Option<InFlight>,
}

impl Future for Respond {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Ok(response) = ready!(Pin::new(&mut self.call).poll(cx));
        let in_flight = self.in_flight.take().expect("polled after completion");
        Poll::Ready(Ok(in_flight.attach(response)))
    }
}

/// An accept that failed. Out of file descriptors, the oldest idle connection is closed to
/// make room; any error pauses accepting briefly rather than spinning on it.
async fn accept_failed(err: &std::io::Error, table: &Table) {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    if matches!(err.raw_os_error(), Some(EMFILE | ENFILE)) {
        let evicted = table.evict_one();
        tracing::warn!(%err, evicted, "cannot accept a connection: out of file descriptors");
    } else {
        tracing::debug!(%err, "accept failed");
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_in_use_is_refused() {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let first = bind(any, 2).expect("bind");
        let addr = first[0].local_addr().expect("addr");
        assert_eq!(first[1].local_addr().expect("addr"), addr);
        let err = bind(addr, 2).expect_err("in use");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        let err = bind(addr, 1).expect_err("in use");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }
}
