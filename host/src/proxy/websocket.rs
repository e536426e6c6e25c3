//! WebSocket forwarding: the upstream handshake first (so the client gets the upstream's
//! subprotocol, or its refusal), then a relay of every frame both ways.
//!
//! The relay is written over `Stream`/`Sink` of tungstenite messages, so it runs the same over
//! real sockets and over channels in tests.

use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRequestParts as _;
use axum::extract::ws::{self as client_ws, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, Method, Request, header};
use axum::response::{IntoResponse as _, Response};
use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use super::retry::{self, Backoff, Failure};
use super::{Context, Live, Proxy, ProxyError, headers, upstream_uri, with_fallback};
use crate::metrics::UpstreamFailure;
use crate::plugin::{Subprotocols, UpstreamWebsocket, fallback};
use crate::registry::Status;

/// How long the second direction may take to finish once the first has closed.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The largest message relayed.
const MAX_MESSAGE: usize = 64 << 20;

/// The most one read takes from a socket. tungstenite zero-fills this much of its buffer before
/// every read, so its 128 KiB default costs microseconds on each small message, and keeps the
/// buffer for the life of the socket: a relay holds two, one per side, even while idle. At
/// 4 KiB an idle relay stays small; a large message takes a few more reads instead.
const READ_BUFFER: usize = 4 << 10;

/// Headers that belong to one handshake and are generated anew for the upstream.
const HANDSHAKE: [&str; 5] = [
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "sec-websocket-accept",
];

/// True for an HTTP/1.1 WebSocket upgrade request.
pub fn is_upgrade<B>(request: &Request<B>) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|item| item.trim().eq_ignore_ascii_case(token))
    };
    request.method() == Method::GET
        && has_token(header::UPGRADE, "websocket")
        && has_token(header::CONNECTION, "upgrade")
}

/// The client's offered subprotocols, in order.
fn offered(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

pub(super) async fn forward(
    proxy: &Proxy,
    live: &Live,
    ctx: Context,
    request: axum::extract::Request,
) -> Result<Response, ProxyError> {
    let (mut parts, _) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let offered = offered(&parts.headers);
    let plan = with_fallback(
        &ctx.service,
        ctx.plugin.on_websocket(&ctx.request, &offered),
        || fallback::on_websocket(&ctx.request, ctx.keeps_prefix()),
    )
    .await?;
    let protocols = match &plan.protocols {
        Subprotocols::PassThrough => offered,
        Subprotocols::Replace(list) => list.clone(),
    };
    let mut handshake_headers = parts.headers;
    for name in HANDSHAKE {
        handshake_headers.remove(name);
    }
    headers::upstream_request(
        &mut handshake_headers,
        &ctx.view,
        live.proxy.rewrite_host,
        &plan.headers,
        ctx.granted(),
    );
    if !protocols.is_empty() {
        let list = HeaderValue::from_str(&protocols.join(", "))
            .map_err(|_| ProxyError::BadRequest("invalid Sec-WebSocket-Protocol".to_owned()))?;
        handshake_headers.insert(header::SEC_WEBSOCKET_PROTOCOL, list);
    }
    let ((upstream, answer), replica) =
        match connect(proxy, live, &ctx, &plan, &handshake_headers).await? {
            Ok(connected) => connected,
            Err(refusal) => return Ok(refusal),
        };
    // A relayed WebSocket counts as a request in flight to its replica while it lasts.
    let in_flight = (ctx.service.replicas.len() > 1).then(|| ctx.service.state(replica).start());
    let mut upgrade = upgrade
        .read_buffer_size(READ_BUFFER)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE);
    if let Some(chosen) = answer.headers().get(header::SEC_WEBSOCKET_PROTOCOL) {
        upgrade.set_selected_protocol(chosen.clone());
    }
    let metrics = proxy.metrics.service(&ctx.service.id);
    let service = ctx.service.id.clone();
    let options = RelayOptions {
        ping: live.client.websocket_ping(),
        stop: proxy.stop.subscribe(),
    };
    Ok(upgrade
        .on_failed_upgrade(move |err| tracing::debug!(%err, "client WebSocket upgrade failed"))
        .on_upgrade(move |client| async move {
            let _open = metrics.websocket();
            let _in_flight = in_flight;
            tracing::debug!(%service, "WebSocket relay started");
            relay_sockets(client, upstream, options).await;
            tracing::debug!(%service, "WebSocket relay ended");
        }))
}

type Upstream = WebSocketStream<TcpStream>;

/// Opens the upstream WebSocket, retrying connection failures like HTTP requests. A refusal
/// (any HTTP answer other than 101) comes back as the response for the client.
async fn connect(
    proxy: &Proxy,
    live: &Live,
    ctx: &Context,
    plan: &UpstreamWebsocket,
    handshake_headers: &HeaderMap,
) -> Result<Result<(Connected, usize), Response>, ProxyError> {
    let metrics = proxy.metrics.service(&ctx.service.id);
    let mut backoff = Backoff::new(&live.retry, ctx.started);
    loop {
        let mut last = None;
        for attempt in ctx.service.attempts(ctx.pinned.as_deref()) {
            let url = upstream_uri(ctx.service.url(attempt), &plan.path, plan.query.as_deref())?;
            match self::attempt(proxy, &url, handshake_headers).await {
                Ok(Ok(connected)) => {
                    ctx.service.health.set(Status::Up);
                    ctx.service.succeeded(attempt);
                    return Ok(Ok((connected, attempt.replica)));
                }
                Ok(Err(refusal)) => {
                    ctx.service.health.set(Status::Up);
                    ctx.service.succeeded(attempt);
                    return Ok(Err(refusal));
                }
                Err(failure) => {
                    metrics.upstream_error(failure.kind);
                    if failure.kind == UpstreamFailure::Refused {
                        ctx.service.health.set(Status::Down);
                    }
                    if failure.kind != UpstreamFailure::Invalid
                        && ctx.service.failed(attempt, &live.outliers)
                    {
                        metrics.ejection();
                    }
                    // A handshake always goes out on a fresh connection: one that reached the
                    // upstream and failed is not sent again.
                    if !failure.retriable(&Method::GET, true, true, false) {
                        return Err(failure.into_error(&ctx.service.id));
                    }
                    last = Some(failure);
                }
            }
        }
        retry::next_round(&mut backoff, last, &ctx.service.id, &metrics).await?;
    }
}

/// An upstream WebSocket and the answer to its handshake.
type Connected = (Upstream, tungstenite::handshake::client::Response);

async fn attempt(
    proxy: &Proxy,
    url: &axum::http::Uri,
    handshake_headers: &HeaderMap,
) -> Result<Result<Connected, Response>, Failure> {
    let host = url.host().unwrap_or_default().to_owned();
    let port = url.port_u16().unwrap_or(80);
    let connect = TcpStream::connect((host.as_str(), port));
    let stream = match tokio::time::timeout(proxy.timeouts.connect(), connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            return Err(Failure::refused(format!(
                "connecting to {host}:{port}: {err}"
            )));
        }
        Err(_) => {
            return Err(Failure::refused(format!(
                "connecting to {host}:{port}: timed out"
            )));
        }
    };
    let _ = stream.set_nodelay(true);
    let mut request = Request::new(());
    let target = format!(
        "ws://{}{}",
        authority(url),
        url.path_and_query().map_or("/", |p| p.as_str())
    );
    *request.uri_mut() = target.parse().map_err(|err| {
        Failure::timeout(format!("invalid upstream WebSocket URL {target}: {err}"))
    })?;
    let headers = request.headers_mut();
    *headers = handshake_headers.clone();
    if !headers.contains_key(header::HOST)
        && let Ok(value) = HeaderValue::from_str(authority(url))
    {
        headers.insert(header::HOST, value);
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    if let Ok(key) = HeaderValue::from_str(&tungstenite::handshake::client::generate_key()) {
        headers.insert(header::SEC_WEBSOCKET_KEY, key);
    }
    let config = tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let handshake = tokio_tungstenite::client_async_with_config(request, stream, Some(config));
    match tokio::time::timeout(proxy.timeouts.first_byte(), handshake).await {
        Ok(Ok(connected)) => Ok(Ok(connected)),
        Ok(Err(tungstenite::Error::Http(answer))) => Ok(Err(refusal(*answer))),
        Ok(Err(tungstenite::Error::Protocol(err))) => Err(Failure::after_send(
            UpstreamFailure::Invalid,
            format!("WebSocket handshake with {url} failed: {err}"),
        )),
        Ok(Err(err)) => Err(Failure::after_send(
            UpstreamFailure::Reset,
            format!("WebSocket handshake with {url}: {err}"),
        )),
        Err(_) => Err(Failure::timeout(format!(
            "WebSocket handshake with {url}: no answer"
        ))),
    }
}

fn authority(url: &axum::http::Uri) -> &str {
    url.authority().map_or("", |authority| authority.as_str())
}

/// The upstream's refusal, as the client's answer.
fn refusal(answer: tungstenite::http::Response<Option<Vec<u8>>>) -> Response {
    let (parts, body) = answer.into_parts();
    let mut response = Response::new(Body::from(body.unwrap_or_default()));
    *response.status_mut() = parts.status;
    *response.headers_mut() = parts.headers;
    headers::strip_hop_by_hop(response.headers_mut());
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response
}

/// Relays between the client's socket (axum) and the upstream's (tungstenite).
async fn relay_sockets(client: WebSocket, upstream: Upstream, options: RelayOptions) {
    let (client_tx, client_rx) = client.split();
    let (upstream_tx, upstream_rx) = upstream.split();
    let client_rx = client_rx.filter_map(|message| async move {
        match message {
            Ok(message) => from_client(message).map(Ok),
            Err(err) => Some(Err(err)),
        }
    });
    let client_tx =
        client_tx.with(|message: Message| async move { Ok::<_, axum::Error>(to_client(message)) });
    relay(
        Box::pin(client_rx),
        Box::pin(client_tx),
        upstream_rx,
        upstream_tx,
        options,
    )
    .await;
}

/// How a relay watches its client and when it stops.
#[derive(Debug)]
pub struct RelayOptions {
    /// A client silent for this long is pinged, and closed when it stays silent as long again.
    pub ping: Option<Duration>,
    /// Turns true when Portico shuts down: both sides get `1001 Going Away`.
    pub stop: watch::Receiver<bool>,
}

/// The payload of Portico's own pings; the client's pongs to them are not relayed.
const PING_PAYLOAD: &[u8] = b"portico";

fn going_away(reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// Tells one side `1001 Going Away` and closes its sink.
async fn close_away<W: Sink<Message> + Unpin>(tx: &mut W, reason: &'static str) {
    let _ = tx.send(going_away(reason)).await;
    let _ = tx.close().await;
}

/// Resolves once `stop` turns true; never when its sender is gone without that.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Relays messages both ways until both directions are closed. When one side goes away
/// without a close frame, the other gets `1001 Going Away`; once one direction has ended, the
/// other has [`CLOSE_GRACE`] to finish its close handshake. A client that stays silent is
/// pinged and then closed (see [`RelayOptions`]).
pub async fn relay<CR, CW, UR, UW, E1, E2>(
    client_rx: CR,
    client_tx: CW,
    upstream_rx: UR,
    upstream_tx: UW,
    options: RelayOptions,
) where
    CR: Stream<Item = Result<Message, E1>> + Unpin,
    CW: Sink<Message> + Unpin,
    UR: Stream<Item = Result<Message, E2>> + Unpin,
    UW: Sink<Message> + Unpin,
{
    let (ping_tx, ping_rx) = tokio::sync::mpsc::channel(1);
    let to_upstream = pump_client(
        client_rx,
        upstream_tx,
        options.ping,
        ping_tx,
        options.stop.clone(),
    );
    let to_client = pump_upstream(upstream_rx, client_tx, ping_rx, options.stop);
    tokio::pin!(to_upstream, to_client);
    tokio::select! {
        () = &mut to_upstream => { let _ = tokio::time::timeout(CLOSE_GRACE, to_client).await; }
        () = &mut to_client => { let _ = tokio::time::timeout(CLOSE_GRACE, to_upstream).await; }
    }
}

/// What one read from a side led to.
enum Step {
    Go,
    Done,
}

/// Forwards one read to `tx`; a side that errs or ends gets the other side a `1001`.
async fn relay_one<W, E>(item: Option<Result<Message, E>>, tx: &mut W, gone: &'static str) -> Step
where
    W: Sink<Message> + Unpin,
{
    match item {
        Some(Ok(Message::Frame(_))) => Step::Go,
        Some(Ok(message)) => {
            let close = matches!(message, Message::Close(_));
            if tx.send(message).await.is_err() || close {
                return Step::Done;
            }
            Step::Go
        }
        Some(Err(_)) | None => {
            close_away(tx, gone).await;
            Step::Done
        }
    }
}

/// Client to upstream. Each message is written (and flushed) before the next is read, so a
/// slow reader slows the writer instead of filling memory. The client's silence is watched:
/// after `ping` it is pinged (by the other direction, which owns its sink), after twice that
/// the upstream is told it went away.
async fn pump_client<R, W, E>(
    mut rx: R,
    mut tx: W,
    ping: Option<Duration>,
    ping_tx: tokio::sync::mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) where
    R: Stream<Item = Result<Message, E>> + Unpin,
    W: Sink<Message> + Unpin,
{
    let mut pinged = false;
    loop {
        let next = async {
            match ping {
                Some(ping) => tokio::time::timeout(ping, rx.next()).await.ok(),
                None => Some(rx.next().await),
            }
        };
        tokio::select! {
            () = stopped(&mut stop) => {
                close_away(&mut tx, "Portico is shutting down").await;
                return;
            }
            next = next => match next {
                None if pinged => {
                    close_away(&mut tx, "the client stopped answering").await;
                    return;
                }
                None => {
                    pinged = true;
                    let _ = ping_tx.try_send(());
                }
                Some(item) => {
                    pinged = false;
                    if let Some(Ok(Message::Pong(payload))) = &item
                        && payload.as_ref() == PING_PAYLOAD
                    {
                        continue;
                    }
                    if let Step::Done = relay_one(item, &mut tx, "the client went away").await {
                        return;
                    }
                }
            }
        }
    }
}

/// Upstream to client, and Portico's pings to the client.
async fn pump_upstream<R, W, E>(
    mut rx: R,
    mut tx: W,
    mut pings: tokio::sync::mpsc::Receiver<()>,
    mut stop: watch::Receiver<bool>,
) where
    R: Stream<Item = Result<Message, E>> + Unpin,
    W: Sink<Message> + Unpin,
{
    loop {
        tokio::select! {
            () = stopped(&mut stop) => {
                close_away(&mut tx, "Portico is shutting down").await;
                return;
            }
            Some(()) = pings.recv() => {
                let ping = Message::Ping(bytes::Bytes::from_static(PING_PAYLOAD));
                if tx.send(ping).await.is_err() {
                    return;
                }
            }
            item = rx.next() => {
                if let Step::Done = relay_one(item, &mut tx, "the upstream went away").await {
                    return;
                }
            }
        }
    }
}

/// An axum message as a tungstenite one; `None` for text that is not UTF-8 (cannot happen:
/// axum has already checked it).
fn from_client(message: client_ws::Message) -> Option<Message> {
    Some(match message {
        client_ws::Message::Text(text) => {
            Message::Text(Utf8Bytes::try_from(bytes::Bytes::from(text)).ok()?)
        }
        client_ws::Message::Binary(data) => Message::Binary(data),
        client_ws::Message::Ping(data) => Message::Ping(data),
        client_ws::Message::Pong(data) => Message::Pong(data),
        client_ws::Message::Close(frame) => Message::Close(frame.and_then(|frame| {
            Some(CloseFrame {
                code: CloseCode::from(frame.code),
                reason: Utf8Bytes::try_from(bytes::Bytes::from(frame.reason)).ok()?,
            })
        })),
    })
}

fn to_client(message: Message) -> client_ws::Message {
    match message {
        Message::Text(text) => match client_ws::Utf8Bytes::try_from(bytes::Bytes::from(text)) {
            Ok(text) => client_ws::Message::Text(text),
            Err(_) => client_ws::Message::Close(None),
        },
        Message::Binary(data) => client_ws::Message::Binary(data),
        Message::Ping(data) => client_ws::Message::Ping(data),
        Message::Pong(data) => client_ws::Message::Pong(data),
        Message::Close(frame) => client_ws::Message::Close(frame.map(|frame| {
            client_ws::CloseFrame {
                code: frame.code.into(),
                reason: client_ws::Utf8Bytes::try_from(bytes::Bytes::from(frame.reason))
                    .unwrap_or_default(),
            }
        })),
        Message::Frame(_) => client_ws::Message::Binary(bytes::Bytes::new()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures_util::{sink, stream};

    use super::*;

    fn recorder() -> (
        Arc<Mutex<Vec<Message>>>,
        impl Sink<Message, Error = std::convert::Infallible> + Unpin,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&seen);
        let sink = sink::unfold(into, |into, message: Message| async move {
            into.lock().expect("lock").push(message);
            Ok::<_, std::convert::Infallible>(into)
        });
        (seen, Box::pin(sink))
    }

    /// Options with no stop signal: its sender is gone at once.
    fn options(ping: Option<Duration>) -> RelayOptions {
        let (_, stop) = watch::channel(false);
        RelayOptions { ping, stop }
    }

    fn away(messages: &[Message]) -> bool {
        matches!(messages.last(), Some(Message::Close(Some(frame))) if frame.code == CloseCode::Away)
    }

    #[tokio::test]
    async fn a_silent_client_is_pinged_then_closed() {
        let from_client = stream::pending::<Result<Message, std::convert::Infallible>>();
        let from_upstream = stream::pending::<Result<Message, std::convert::Infallible>>();
        let (to_upstream, upstream_tx) = recorder();
        let (to_client, client_tx) = recorder();
        let relay = relay(
            from_client,
            client_tx,
            from_upstream,
            upstream_tx,
            options(Some(Duration::from_millis(30))),
        );
        // The upstream side never answers the close: the relay ends after the grace period,
        // which this test does not wait for.
        let _ = tokio::time::timeout(Duration::from_millis(500), relay).await;
        let down = to_client.lock().expect("lock").clone();
        assert_eq!(
            down.first(),
            Some(&Message::Ping(bytes::Bytes::from_static(PING_PAYLOAD))),
            "{down:?}"
        );
        let up = to_upstream.lock().expect("lock").clone();
        assert!(away(&up), "{up:?}");
    }

    #[tokio::test]
    async fn shutting_down_closes_both_sides_with_going_away() {
        let (stop, stop_rx) = watch::channel(false);
        let from_client = stream::pending::<Result<Message, std::convert::Infallible>>();
        let from_upstream = stream::pending::<Result<Message, std::convert::Infallible>>();
        let (to_upstream, upstream_tx) = recorder();
        let (to_client, client_tx) = recorder();
        let relay = relay(
            from_client,
            client_tx,
            from_upstream,
            upstream_tx,
            RelayOptions {
                ping: None,
                stop: stop_rx,
            },
        );
        stop.send_replace(true);
        relay.await;
        assert!(away(&to_client.lock().expect("lock")));
        assert!(away(&to_upstream.lock().expect("lock")));
    }

    fn close(code: u16, reason: &'static str) -> Message {
        Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from_static(reason),
        }))
    }

    #[tokio::test]
    async fn relays_every_kind_and_the_close_code() {
        let from_client = vec![
            Ok::<_, std::convert::Infallible>(Message::text("hi")),
            Ok(Message::binary(vec![1, 2, 3])),
            Ok(Message::Ping(bytes::Bytes::from_static(b"p"))),
            Ok(close(4001, "bye")),
            Ok(Message::text("after close: not relayed")),
        ];
        let from_upstream = vec![
            Ok::<_, std::convert::Infallible>(Message::Pong(bytes::Bytes::from_static(b"p"))),
            Ok(close(4001, "bye")),
        ];
        let (to_upstream, upstream_tx) = recorder();
        let (to_client, client_tx) = recorder();
        relay(
            stream::iter(from_client),
            client_tx,
            stream::iter(from_upstream),
            upstream_tx,
            options(None),
        )
        .await;
        let up = to_upstream.lock().expect("lock").clone();
        assert_eq!(
            up,
            vec![
                Message::text("hi"),
                Message::binary(vec![1, 2, 3]),
                Message::Ping(bytes::Bytes::from_static(b"p")),
                close(4001, "bye")
            ]
        );
        let down = to_client.lock().expect("lock").clone();
        assert_eq!(
            down,
            vec![
                Message::Pong(bytes::Bytes::from_static(b"p")),
                close(4001, "bye")
            ]
        );
    }

    #[tokio::test]
    async fn a_dropped_side_closes_the_other() {
        let from_client = stream::iter(Vec::<Result<Message, std::convert::Infallible>>::new());
        let from_upstream = stream::iter(Vec::<Result<Message, std::convert::Infallible>>::new());
        let (to_upstream, upstream_tx) = recorder();
        let (_to_client, client_tx) = recorder();
        relay(
            from_client,
            client_tx,
            from_upstream,
            upstream_tx,
            options(None),
        )
        .await;
        let up = to_upstream.lock().expect("lock").clone();
        assert!(
            matches!(&up[..], [Message::Close(Some(frame))] if frame.code == CloseCode::Away),
            "{up:?}"
        );
    }

    #[tokio::test]
    async fn a_slow_reader_holds_the_writer() {
        // A sink that never accepts: the pump must not read ahead of it.
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&reads);
        let from_client = stream::iter(0..1000).map(move |i| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(Message::text(i.to_string()))
        });
        let stuck = sink::unfold((), |(), _message: Message| {
            futures_util::future::pending::<Result<(), std::convert::Infallible>>()
        });
        let (ping_tx, _ping_rx) = tokio::sync::mpsc::channel(1);
        let pump = pump_client(
            Box::pin(from_client),
            Box::pin(stuck),
            None,
            ping_tx,
            options(None).stop,
        );
        let _ = tokio::time::timeout(Duration::from_millis(50), pump).await;
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
