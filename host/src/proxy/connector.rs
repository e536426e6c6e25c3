//! The upstream connector: hyper-util's HTTP connector, with a use count attached to each
//! connection, so that a failed attempt can tell a reused keep-alive connection (which the
//! upstream may have closed just as the request went out) from a fresh one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::http::{Extensions, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How many responses a connection has carried; travels with each response.
#[derive(Debug, Clone, Default)]
pub(super) struct Uses(Arc<AtomicU64>);

impl Uses {
    /// Counts a response received on the connection `extensions` came from.
    pub fn count(extensions: &Extensions) {
        if let Some(uses) = extensions.get::<Self>() {
            uses.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// True when the connection a client error happened on had carried a response before.
    pub fn reused(err: &hyper_util::client::legacy::Error) -> bool {
        let Some(info) = err.connect_info() else {
            return false;
        };
        let mut extensions = Extensions::new();
        info.get_extras(&mut extensions);
        extensions
            .get::<Self>()
            .is_some_and(|uses| uses.0.load(Ordering::Relaxed) > 0)
    }
}

/// [`HttpConnector`] whose connections carry their [`Uses`].
#[derive(Debug, Clone)]
pub(super) struct Connector(pub HttpConnector);

impl tower_service::Service<Uri> for Connector {
    type Response = Counted;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Counted, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            Ok(Counted {
                io: connecting.await?,
                uses: Uses::default(),
            })
        })
    }
}

/// An upstream connection and its use count.
#[derive(Debug)]
pub(super) struct Counted {
    io: TokioIo<TcpStream>,
    uses: Uses,
}

impl Connection for Counted {
    fn connected(&self) -> Connected {
        self.io.connected().extra(self.uses.clone())
    }
}

impl hyper::rt::Read for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
