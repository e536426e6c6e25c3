//! The serving threads. Each worker is an OS thread with its own single-threaded tokio runtime,
//! its own listening socket on the shared address (`SO_REUSEPORT`, so the kernel spreads new
//! connections across them) and its own upstream connection pool (see
//! [`crate::proxy::enter_worker`]). A request is accepted, forwarded and answered on one thread:
//! no task migrates and no wake-up crosses threads, which is where a work-stealing runtime
//! spends much of a small proxied request.

use std::net::SocketAddr;

use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use tokio::sync::{oneshot, watch};

/// What the workers are told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Serve,
    /// Stop accepting; finish the requests in flight.
    Drain,
    /// Stop now, dropping connections.
    Stop,
}

type Service = IntoMakeServiceWithConnectInfo<axum::Router, SocketAddr>;

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
    /// Starts one worker thread per listener, each serving `service`.
    pub(super) fn spawn(
        listeners: Vec<std::net::TcpListener>,
        service: &Service,
    ) -> std::io::Result<Self> {
        let (order, orders) = watch::channel(Order::Serve);
        let mut workers = Self {
            order,
            done: Vec::with_capacity(listeners.len()),
        };
        for (index, listener) in listeners.into_iter().enumerate() {
            let service = service.clone();
            let orders = orders.clone();
            let (report, done) = oneshot::channel();
            std::thread::Builder::new()
                .name(format!("portico-worker-{index}"))
                .spawn(move || {
                    let _ = report.send(run(index, listener, service, orders));
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
    service: Service,
    mut orders: watch::Receiver<Order>,
) -> std::io::Result<()> {
    crate::proxy::enter_worker(index);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let mut drain = orders.clone();
        let serve = axum::serve(listener, service).with_graceful_shutdown(async move {
            let _ = drain.wait_for(|order| *order != Order::Serve).await;
        });
        tokio::select! {
            result = serve => result,
            _ = orders.wait_for(|order| *order == Order::Stop) => Ok(()),
        }
    })
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
