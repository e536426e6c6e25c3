//! The serving threads. Each worker is an OS thread with its own single-threaded tokio runtime,
//! its own listening socket on the shared address (`SO_REUSEPORT`, so the kernel spreads new
//! connections across them) and its own upstream connection pool (see
//! [`crate::proxy::enter_worker`]). A request is accepted, forwarded and answered on one thread:
//! no task migrates and no wake-up crosses threads, which is where a work-stealing runtime
//! spends much of a small proxied request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::{oneshot, watch};

use super::conn::{Admission, ClientIo, Table, Timeouts};

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
        let table = Table::new(settings.cap);
        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // The header and keep-alive timeouts are kept by the socket (see `conn`).
            .header_read_timeout(None)
            .max_buf_size(MAX_HEAD);
        while *orders.borrow_and_update() == Order::Serve {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => serve(stream, peer, &table, &builder, &graceful, &router, settings),
                    Err(err) => accept_failed(&err, &table).await,
                },
                _ = orders.changed() => {}
            }
        }
        drop(listener);
        if *orders.borrow() == Order::Stop {
            return Ok(());
        }
        tokio::select! {
            () = graceful.shutdown() => {}
            _ = orders.wait_for(|order| *order == Order::Stop) => {}
        }
        Ok(())
    })
}

/// Serves one accepted connection in its own task, unless the table is full of busy ones.
fn serve(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    table: &Arc<Table>,
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    router: &axum::Router,
    settings: Settings,
) {
    if table.admit() == Admission::Full {
        tracing::debug!(%peer, open = table.len(), "connection refused: every connection is busy");
        return;
    }
    let _ = stream.set_nodelay(true);
    let (io, shared) = ClientIo::new(stream, table, settings.timeouts);
    let router = router.clone();
    let requests = Arc::clone(&shared);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let in_flight = requests.request();
        let call = tower_service::Service::call(&mut router.clone(), request);
        async move {
            let response = match call.await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(in_flight.attach(response))
        }
    });
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        tokio::select! {
            result = connection => {
                if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "client connection ended with an error");
                }
            }
            () = shared.evict.notified() => {
                tracing::debug!(%peer, "idle connection closed to make room for a new one");
            }
        }
    });
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
