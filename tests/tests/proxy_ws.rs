//! WebSocket relay through a real Portico: subprotocols, every frame kind, close codes both
//! ways, refusals and dropped connections.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message as AxMessage, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use futures_util::{SinkExt as _, StreamExt as _};
use portico_tests::proxy::{Portico, service, upstream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

/// What the upstream saw when the client closed.
type Closed = Option<(u16, String)>;

async fn ws_echo(
    ws: WebSocketUpgrade,
    headers: HeaderMap,
    State(closed): State<mpsc::UnboundedSender<Closed>>,
) -> Response {
    let offered = headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let origin = headers
        .get("origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    ws.protocols(["streamlit", "bokeh"])
        .on_upgrade(move |mut socket| async move {
            let _ = socket
                .send(AxMessage::Text(format!("offered:{offered}").into()))
                .await;
            let _ = socket
                .send(AxMessage::Text(format!("origin:{origin}").into()))
                .await;
            while let Some(Ok(message)) = socket.recv().await {
                match message {
                    AxMessage::Text(text) if text.as_str() == "close-me" => {
                        let frame = CloseFrame {
                            code: 4000,
                            reason: "done".into(),
                        };
                        let _ = socket.send(AxMessage::Close(Some(frame))).await;
                    }
                    AxMessage::Text(text) => {
                        let _ = socket.send(AxMessage::Text(text)).await;
                    }
                    AxMessage::Binary(data) => {
                        let _ = socket.send(AxMessage::Binary(data)).await;
                    }
                    AxMessage::Close(frame) => {
                        let _ = closed.send(frame.map(|f| (f.code, f.reason.to_string())));
                        break;
                    }
                    AxMessage::Ping(_) | AxMessage::Pong(_) => {}
                }
            }
        })
}

async fn ws_drop(ws: WebSocketUpgrade) -> Response {
    // Accepts, then goes away without a close frame.
    ws.on_upgrade(|socket| async move { drop(socket) })
}

async fn start() -> anyhow::Result<(Portico, mpsc::UnboundedReceiver<Closed>)> {
    let (closed_tx, closed_rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/ws", get(ws_echo))
        .route("/drop", get(ws_drop))
        .route(
            "/forbidden",
            get(|| async { (StatusCode::FORBIDDEN, "origin not allowed").into_response() }),
        )
        .with_state(closed_tx);
    let up = upstream(app).await?;
    Ok((
        Portico::start(&service("st", "streamlit", up)).await?,
        closed_rx,
    ))
}

fn ws_url(portico: &Portico, path: &str) -> String {
    format!("ws://{}{path}", portico.addr())
}

async fn next_message<S>(socket: &mut S) -> anyhow::Result<Message>
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    match tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
        Ok(Some(message)) => Ok(message?),
        Ok(None) => anyhow::bail!("the socket ended"),
        Err(_) => anyhow::bail!("no message"),
    }
}

#[tokio::test]
async fn relays_subprotocols_frames_and_the_clients_close() -> anyhow::Result<()> {
    let (portico, mut closed) = start().await?;
    let mut request = ws_url(&portico, "/proxy/st/ws").into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "streamlit, xsrf-token-abc, session-1".parse()?,
    );
    request
        .headers_mut()
        .insert("origin", format!("http://{}", portico.addr()).parse()?);
    let (mut socket, answer) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(
        answer.headers()["sec-websocket-protocol"],
        "streamlit",
        "the upstream's choice is echoed"
    );
    assert_eq!(
        next_message(&mut socket).await?,
        Message::text("offered:streamlit, xsrf-token-abc, session-1"),
        "the whole list is forwarded unchanged"
    );
    assert_eq!(
        next_message(&mut socket).await?,
        Message::text(format!("origin:http://{}", portico.addr()))
    );

    socket.send(Message::text("hello")).await?;
    assert_eq!(next_message(&mut socket).await?, Message::text("hello"));
    let binary = vec![0u8, 1, 2, 255];
    socket.send(Message::binary(binary.clone())).await?;
    assert_eq!(next_message(&mut socket).await?, Message::binary(binary));
    let big = "x".repeat(1 << 20);
    socket.send(Message::text(big.clone())).await?;
    assert_eq!(next_message(&mut socket).await?, Message::text(big));
    socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await?;
    assert_eq!(
        next_message(&mut socket).await?,
        Message::Pong(b"are you there".to_vec().into())
    );

    let frame = tungstenite::protocol::CloseFrame {
        code: CloseCode::from(4001),
        reason: "bye".into(),
    };
    socket.send(Message::Close(Some(frame))).await?;
    let seen = tokio::time::timeout(Duration::from_secs(30), closed.recv()).await?;
    assert_eq!(
        seen,
        Some(Some((4001, "bye".to_owned()))),
        "code and reason reach the upstream"
    );
    Ok(())
}

#[tokio::test]
async fn the_upstreams_close_code_reaches_the_client() -> anyhow::Result<()> {
    let (portico, _closed) = start().await?;
    let mut request = ws_url(&portico, "/proxy/st/ws").into_client_request()?;
    let token = format!("bokeh, {}", "t".repeat(6000));
    request
        .headers_mut()
        .insert("sec-websocket-protocol", token.parse()?);
    let (mut socket, answer) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(answer.headers()["sec-websocket-protocol"], "bokeh");
    assert_eq!(
        next_message(&mut socket).await?,
        Message::text(format!("offered:{token}"))
    );
    let _origin = next_message(&mut socket).await?;
    socket.send(Message::text("close-me")).await?;
    match next_message(&mut socket).await? {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4000);
            assert_eq!(frame.reason.as_str(), "done");
        }
        other => anyhow::bail!("expected a close frame, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn an_upstream_refusal_reaches_the_client() -> anyhow::Result<()> {
    let (portico, _closed) = start().await?;
    match tokio_tungstenite::connect_async(ws_url(&portico, "/proxy/st/forbidden")).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            let body = response.body().clone().unwrap_or_default();
            assert_eq!(String::from_utf8_lossy(&body), "origin not allowed");
        }
        other => anyhow::bail!("expected the upstream's 403, got {other:?}"),
    }
    match tokio_tungstenite::connect_async(ws_url(&portico, "/proxy/unknown/ws")).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::NOT_FOUND)
        }
        other => anyhow::bail!("expected 404, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_dropped_upstream_closes_the_client_properly() -> anyhow::Result<()> {
    let (portico, _closed) = start().await?;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(ws_url(&portico, "/proxy/st/drop")).await?;
    match next_message(&mut socket).await? {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => anyhow::bail!("expected 1001 Going Away, got {other:?}"),
    }
    let metrics = std::sync::Arc::clone(portico.running.state.proxy().metrics());
    portico
        .eventually("the open WebSocket gauge to return to 0", || {
            let text = metrics.render(&[]);
            async move {
                text.contains("portico_websockets_open{service=\"st\"} 0")
                    && text.contains("portico_websockets_total{service=\"st\"} 1")
            }
        })
        .await?;
    Ok(())
}
