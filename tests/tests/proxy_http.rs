//! HTTP forwarding through a real Portico with the bundled plugins, against upstreams written
//! here: headers, redirects, listings, plugin rewrites, SSE, asset routing, retries, errors,
//! configuration reloads and hostile requests.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::routing::get;
use portico_tests::proxy::{ADMIN, Portico, closed_port, service, upstream};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Answers every request with what it received, tagged with `name`.
fn echo(name: &'static str) -> Router {
    Router::new().fallback(move |request: Request| async move {
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, value) in request.headers() {
            headers
                .entry(key.as_str().to_owned())
                .or_default()
                .push(value.to_str().unwrap_or("<binary>").to_owned());
        }
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().map(str::to_owned);
        let body = axum::body::to_bytes(request.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        axum::Json(serde_json::json!({
            "upstream": name,
            "method": method,
            "path": path,
            "query": query,
            "headers": headers,
            "body_len": body.len(),
        }))
    })
}

async fn json(response: reqwest::Response) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(&response.bytes().await?)?)
}

fn header_of<'a>(doc: &'a Value, name: &str) -> Option<&'a str> {
    doc["headers"][name][0].as_str()
}

#[tokio::test]
async fn forwards_path_query_and_headers() -> anyhow::Result<()> {
    let up = upstream(echo("app")).await?;
    let portico = Portico::start(&service("app", "generic", up)).await?;
    let response = portico
        .client
        .get(portico.url("/proxy/app/a/b%20c?x=1&y=%2F"))
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("te", "trailers")
        .header("x-forwarded-for", "10.0.0.1")
        .header("cookie", "a=1; portico_affinity=app; b=2")
        .header("x-large", "v".repeat(16 * 1024))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let doc = json(response).await?;
    assert_eq!(doc["path"], "/a/b%20c", "prefix stripped, encoding kept");
    assert_eq!(doc["query"], "x=1&y=%2F");
    let public = portico.addr().to_string();
    assert_eq!(
        header_of(&doc, "host"),
        Some(public.as_str()),
        "client Host kept"
    );
    assert_eq!(header_of(&doc, "x-forwarded-host"), Some(public.as_str()));
    assert_eq!(header_of(&doc, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        header_of(&doc, "x-forwarded-for"),
        Some("10.0.0.1, 127.0.0.1")
    );
    assert_eq!(header_of(&doc, "x-forwarded-prefix"), Some("/proxy/app"));
    assert_eq!(
        header_of(&doc, "cookie"),
        Some("a=1; b=2"),
        "Portico's own cookie stays home"
    );
    assert_eq!(header_of(&doc, "x-large").map(str::len), Some(16 * 1024));
    for hop in ["x-private", "te"] {
        assert_eq!(header_of(&doc, hop), None, "{hop} must not be forwarded");
    }
    Ok(())
}

#[tokio::test]
async fn streams_request_bodies_and_answers_head() -> anyhow::Result<()> {
    let up = upstream(echo("app")).await?;
    let portico = Portico::start(&service("app", "generic", up)).await?;
    let chunks =
        futures_util::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![7u8; 1000])));
    let response = portico
        .client
        .post(portico.url("/proxy/app/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await?;
    let doc = json(response).await?;
    assert_eq!(doc["method"], "POST");
    assert_eq!(doc["body_len"], 64_000, "a chunked upload arrives whole");

    let head = portico
        .client
        .head(portico.url("/proxy/app/x"))
        .send()
        .await?;
    assert_eq!(head.status(), StatusCode::OK);
    assert!(head.bytes().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn redirects_to_the_trailing_slash_keeping_the_query() -> anyhow::Result<()> {
    let up = upstream(echo("app")).await?;
    let portico = Portico::start(&service("app", "streamlit", up)).await?;
    let response = portico
        .client
        .get(portico.url("/proxy/app?embed=true&x=%20"))
        .send()
        .await?;
    assert!(
        matches!(response.status().as_u16(), 307 | 308),
        "{}",
        response.status()
    );
    assert_eq!(
        response.headers()[header::LOCATION],
        "/proxy/app/?embed=true&x=%20"
    );
    let response = portico.client.get(portico.url("/proxy/app")).send().await?;
    assert_eq!(response.headers()[header::LOCATION], "/proxy/app/");
    Ok(())
}

#[tokio::test]
async fn unknown_service_is_a_clear_404() -> anyhow::Result<()> {
    let up = upstream(echo("app")).await?;
    let portico = Portico::start(&service("app", "generic", up)).await?;
    let response = portico
        .client
        .get(portico.url("/proxy/nope/x"))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let doc = json(response).await?;
    let message = doc["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("\"nope\"") && message.contains("app"),
        "{message}"
    );

    let response = portico
        .client
        .get(portico.url("/proxy/nope"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()?
            .starts_with("text/html")
    );
    assert!(response.text().await?.contains("nope"));
    Ok(())
}

#[tokio::test]
async fn lists_services_as_json_and_html() -> anyhow::Result<()> {
    let up = upstream(echo("app")).await?;
    let portico =
        Portico::start(&(service("app", "dash", up) + &service("other", "mystery", up) + ADMIN))
            .await?;
    // The public listing says what a visitor may know, and nothing of where services run.
    let response = portico.client.get(portico.url("/proxy")).send().await?;
    assert_eq!(response.headers()["cache-control"], "no-store");
    let doc = json(response).await?;
    let services = doc["services"].as_array().cloned().unwrap_or_default();
    assert_eq!(services.len(), 2);
    assert_eq!(
        services[0],
        serde_json::json!({ "id": "app", "type": "dash", "status": "unknown", "url": "/proxy/app/" })
    );
    let html = portico
        .client
        .get(portico.url("/proxy"))
        .header("accept", "text/html")
        .send()
        .await?
        .text()
        .await?;
    assert!(
        html.contains("<table") && html.contains("href=\"/proxy/app/\""),
        "{html}"
    );
    assert!(!html.contains(&up.to_string()), "{html}");

    // The admin listener has everything.
    let doc = portico.admin_listing().await?;
    let services = doc["services"].as_array().cloned().unwrap_or_default();
    assert_eq!(services[0]["id"], "app");
    assert_eq!(services[0]["type"], "dash");
    assert_eq!(services[0]["plugin"], "dash");
    assert_eq!(services[0]["upstream"], format!("http://{up}"));
    assert_eq!(services[0]["source"], "static");
    assert_eq!(services[0]["status"], "unknown");
    assert_eq!(services[0]["auth"], "forward");
    assert_eq!(
        services[1]["plugin"], "generic",
        "unknown types use generic"
    );
    let html = portico
        .client
        .get(portico.admin_url("/proxy")?)
        .header("accept", "text/html")
        .send()
        .await?
        .text()
        .await?;
    assert!(html.contains(&format!("http://{up}")), "{html}");

    let health = portico.client.get(portico.url("/healthz")).send().await?;
    assert_eq!(health.status(), StatusCode::OK);
    Ok(())
}

fn redirecting_app() -> Router {
    Router::new()
        .route(
            "/go",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/login?next=%2F")]) }),
        )
        .route(
            "/page",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    "<html><body><a href=\"/about\">about</a> <a href=\"rel\">rel</a></body></html>",
                )
            }),
        )
}

#[tokio::test]
async fn location_is_kept_under_the_prefix() -> anyhow::Result<()> {
    let up = upstream(redirecting_app()).await?;
    let portico =
        Portico::start(&(service("gen", "generic", up) + &service("fl", "flask", up))).await?;
    for id in ["gen", "fl"] {
        let response = portico
            .client
            .get(portico.url(&format!("/proxy/{id}/go")))
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(
            response.headers()[header::LOCATION],
            format!("/proxy/{id}/login?next=%2F")
        );
    }
    // Flask also moves root-relative links in pages under the prefix, with a right length.
    let response = portico
        .client
        .get(portico.url("/proxy/fl/page"))
        .send()
        .await?;
    let length: usize = response.headers()[header::CONTENT_LENGTH]
        .to_str()?
        .parse()?;
    let cookies: Vec<String> = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .collect();
    let body = response.text().await?;
    assert!(
        body.contains("href=\"/proxy/fl/about\"") && body.contains("href=\"rel\""),
        "{body}"
    );
    assert_eq!(length, body.len());
    assert!(
        cookies
            .iter()
            .any(|c| c == "portico_affinity=fl; Path=/; HttpOnly; SameSite=Lax"),
        "{cookies:?}"
    );
    // The generic plugin leaves bodies alone.
    let body = portico
        .client
        .get(portico.url("/proxy/gen/page"))
        .send()
        .await?
        .text()
        .await?;
    assert!(body.contains("href=\"/about\""), "{body}");
    Ok(())
}

const DASH_PAGE: &str = r#"<!DOCTYPE html><html><head><link rel="icon" href="/_favicon.ico?v=2.18.0"></head><body>
<script id="_dash-config" type="application/json">{"url_base_pathname":null,"requests_pathname_prefix":"/","ui":false}</script>
<script src="/_dash-component-suites/dash/deps/polyfill@7.v2_18_0m1.min.js"></script></body></html>"#;

#[tokio::test]
async fn dash_index_page_is_rewritten_even_when_gzipped() -> anyhow::Result<()> {
    let app = Router::new().route(
        "/",
        get(|| async {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            let _ = gz.write_all(DASH_PAGE.as_bytes());
            let body = gz.finish().unwrap_or_default();
            (
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (header::CONTENT_ENCODING, "gzip"),
                ],
                body,
            )
        }),
    );
    let up = upstream(app).await?;
    let portico = Portico::start(&service("dash", "dash", up)).await?;
    let response = portico
        .client
        .get(portico.url("/proxy/dash/"))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers().get(header::CONTENT_ENCODING).is_none(),
        "decoded for the rewrite"
    );
    let length: usize = response.headers()[header::CONTENT_LENGTH]
        .to_str()?
        .parse()?;
    let body = response.text().await?;
    assert_eq!(length, body.len());
    assert!(
        body.contains(r#""requests_pathname_prefix":"/proxy/dash/""#),
        "{body}"
    );
    assert!(
        body.contains(r#"src="/proxy/dash/_dash-component-suites/dash/"#),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one() -> anyhow::Result<()> {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
    let app = Router::new().route(
        "/events",
        get(move || {
            let released = Arc::clone(&released);
            async move {
                let wait = released.lock().await.take();
                let events = async_stream(wait);
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    Body::from_stream(events),
                )
            }
        }),
    );
    let up = upstream(app).await?;
    let portico = Portico::start(&service("api", "fastapi", up)).await?;
    let mut response = portico
        .client
        .get(portico.url("/proxy/api/events"))
        .send()
        .await?;
    // The second event is only sent once the first has been received: a buffering proxy
    // would hang here (the timeout only guards against that hang).
    let first = tokio::time::timeout(Duration::from_secs(30), response.chunk())
        .await
        .map_err(|_| anyhow::anyhow!("the first event did not arrive before the stream ended"))??;
    assert_eq!(first.as_deref(), Some(&b"data: one\n\n"[..]));
    let _ = release.send(());
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"data: two\n\n");
    Ok(())
}

/// One event, then a second once `wait` resolves.
fn async_stream(
    wait: Option<tokio::sync::oneshot::Receiver<()>>,
) -> impl futures_util::Stream<Item = Result<&'static str, std::io::Error>> {
    futures_util::stream::unfold((0, wait), |(step, wait)| async move {
        match step {
            0 => Some((Ok("data: one\n\n"), (1, wait))),
            1 => {
                if let Some(wait) = wait {
                    let _ = wait.await;
                }
                Some((Ok("data: two\n\n"), (2, None)))
            }
            _ => None,
        }
    })
}

#[tokio::test]
async fn unprefixed_requests_follow_referer_cookie_then_claim() -> anyhow::Result<()> {
    let st = upstream(echo("streamlit")).await?;
    let page = echo("dash").route(
        "/",
        get(|| async { ([(header::CONTENT_TYPE, "text/html")], "<html></html>") }),
    );
    let dash = upstream(page).await?;
    let portico =
        Portico::start(&(service("st", "streamlit", st) + &service("dash", "dash", dash))).await?;
    let target = |doc: &Value| doc["upstream"].as_str().unwrap_or_default().to_owned();

    let by_referer = portico
        .client
        .get(portico.url("/static/app.js?v=1"))
        .header("referer", format!("http://{}/proxy/dash/", portico.addr()))
        .send()
        .await?;
    let doc = json(by_referer).await?;
    assert_eq!(
        target(&doc),
        "dash",
        "the Referer wins over Streamlit's claim on /static/"
    );
    assert_eq!(doc["path"], "/static/app.js");
    assert_eq!(doc["query"], "v=1");

    let page = portico
        .client
        .get(portico.url("/proxy/dash/"))
        .send()
        .await?;
    let cookie = page.headers()[header::SET_COOKIE].to_str()?.to_owned();
    assert_eq!(
        cookie,
        "portico_affinity=dash; Path=/; HttpOnly; SameSite=Lax"
    );
    let by_cookie = portico
        .client
        .get(portico.url("/static/app.js"))
        .header("cookie", "portico_affinity=dash")
        .send()
        .await?;
    assert_eq!(target(&json(by_cookie).await?), "dash");

    let claimed = portico
        .client
        .get(portico.url("/_stcore/host-config"))
        .send()
        .await?;
    assert_eq!(target(&json(claimed).await?), "streamlit");
    let claimed = portico
        .client
        .post(portico.url("/_dash-update-component"))
        .body("{}")
        .send()
        .await?;
    let doc = json(claimed).await?;
    assert_eq!(
        (target(&doc).as_str(), doc["method"].as_str()),
        ("dash", Some("POST"))
    );

    let lost = portico
        .client
        .get(portico.url("/nowhere.js"))
        .send()
        .await?;
    assert_eq!(lost.status(), StatusCode::NOT_FOUND);
    let message = json(lost).await?["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("no Referer") && message.contains("claims"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn waits_for_an_upstream_that_starts_late() -> anyhow::Result<()> {
    let addr = closed_port().await?;
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Ok(listener) = tokio::net::TcpListener::bind(addr).await {
            let _ = axum::serve(listener, echo("late")).await;
        }
    });
    let portico = Portico::start(&service("late", "streamlit", addr)).await?;
    let response = portico
        .client
        .get(portico.url("/proxy/late/_stcore/health"))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await?["upstream"], "late");
    let metrics = portico
        .client
        .get(portico.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let retries = metrics
        .lines()
        .find(|line| line.starts_with("portico_upstream_retries_total{service=\"late\"}"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|count| count.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(retries > 0, "{metrics}");
    Ok(())
}

#[tokio::test]
async fn tries_upstreams_in_order() -> anyhow::Result<()> {
    let dead = closed_port().await?;
    let live = upstream(echo("second")).await?;
    let body =
        format!("[[services]]\nid = \"two\"\nupstreams = [\"http://{dead}\", \"http://{live}\"]\n");
    let portico = Portico::start(&body).await?;
    let doc = json(
        portico
            .client
            .get(portico.url("/proxy/two/"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(doc["upstream"], "second");
    Ok(())
}

#[tokio::test]
async fn unreachable_upstream_is_a_502_for_programs_and_browsers() -> anyhow::Result<()> {
    let dead = closed_port().await?;
    let body = format!(
        "[retry]\nbudget_ms = 300\n{}",
        service("down", "generic", dead)
    );
    let portico = Portico::start(&body).await?;
    let response = portico
        .client
        .get(portico.url("/proxy/down/"))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let doc = json(response).await?;
    assert!(
        doc["message"].as_str().unwrap_or_default().contains("down"),
        "{doc}"
    );
    let response = portico
        .client
        .get(portico.url("/proxy/down/"))
        .header("accept", "text/html")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(response.text().await?.contains("<h1>502 Bad Gateway</h1>"));
    let listing = json(portico.client.get(portico.url("/proxy")).send().await?).await?;
    assert_eq!(listing["services"][0]["status"], "down");
    Ok(())
}

/// An upstream that reads each request and hangs up without answering; counts connections.
async fn hanging_up() -> anyhow::Result<(SocketAddr, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = vec![0; 65536];
                let mut seen = Vec::new();
                // Read the whole request head (and the small body), then hang up.
                while let Ok(read) = socket.read(&mut buffer).await {
                    if read == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buffer[..read]);
                    if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        break;
                    }
                }
            });
        }
    });
    Ok((addr, accepted))
}

#[tokio::test]
async fn a_sent_body_is_never_replayed() -> anyhow::Result<()> {
    let (addr, accepted) = hanging_up().await?;
    let body = format!(
        "[retry]\nbudget_ms = 1000\n{}",
        service("flaky", "generic", addr)
    );
    let portico = Portico::start(&body).await?;
    let response = portico
        .client
        .post(portico.url("/proxy/flaky/order"))
        .body("buy one")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the POST reached the upstream once"
    );

    let response = portico
        .client
        .get(portico.url("/proxy/flaky/status"))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    // It reached the upstream on a fresh connection: sending it again could only multiply
    // what a failing upstream receives (the stale keep-alive case is in hostile_clients.rs).
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a GET that reached the upstream is not sent again"
    );
    Ok(())
}

#[tokio::test]
async fn a_silent_upstream_is_a_504() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let body = format!(
        "[timeouts]\nfirst_byte_ms = 300\n{}",
        service("slow", "generic", addr)
    );
    let portico = Portico::start(&body).await?;
    let response = portico
        .client
        .get(portico.url("/proxy/slow/"))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        json(response).await?["message"]
            .as_str()
            .unwrap_or_default()
            .contains("in time")
    );
    Ok(())
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_after_the_idle_timeout() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            // Answer only once the request has arrived: data sent before it is an answer to
            // nothing, which the client rightly refuses.
            let mut seen = Vec::new();
            let mut chunk = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match tokio::io::AsyncReadExt::read(&mut socket, &mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&chunk[..n]),
                }
            }
            let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst part;";
            if socket.write_all(head).await.is_ok() {
                held.push(socket);
            }
        }
    });
    let body = format!(
        "[timeouts]\nidle_ms = 300\n{}",
        service("stalled", "generic", addr)
    );
    let portico = Portico::start(&body).await?;
    let response = portico
        .client
        .get(portico.url("/proxy/stalled/"))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let read = tokio::time::timeout(Duration::from_secs(20), response.bytes()).await;
    let Ok(read) = read else {
        anyhow::bail!("the stalled body was never cut");
    };
    assert!(read.is_err(), "an incomplete body ends in an error");
    Ok(())
}

#[tokio::test]
async fn config_edits_apply_live_and_bad_ones_are_refused() -> anyhow::Result<()> {
    let up_a = upstream(echo("a")).await?;
    let up_b = upstream(echo("b")).await?;
    let portico = Portico::start(&service("a", "generic", up_a)).await?;
    let metrics = Arc::clone(portico.running.state.proxy().metrics());
    let status = |path: &'static str| {
        let client = portico.client.clone();
        let url = portico.url(path);
        async move { client.get(url).send().await.map(|r| r.status()).ok() }
    };
    assert_eq!(status("/proxy/a/").await, Some(StatusCode::OK));

    // A duplicate id: refused as a whole, the running configuration stays.
    let bad = service("a", "generic", up_a)
        + &service("b", "generic", up_b)
        + &service("b", "generic", up_b);
    portico.rewrite_config(&bad)?;
    portico
        .eventually("the bad edit to be refused", || async {
            metrics.config_rejections() == 1
        })
        .await?;
    assert_eq!(status("/proxy/a/").await, Some(StatusCode::OK));
    assert_eq!(status("/proxy/b/").await, Some(StatusCode::NOT_FOUND));

    let good = service("b", "generic", up_b);
    portico.rewrite_config(&good)?;
    portico
        .eventually("the good edit to apply", || async {
            metrics.config_reloads() == 1
        })
        .await?;
    assert_eq!(status("/proxy/b/").await, Some(StatusCode::OK));
    assert_eq!(
        status("/proxy/a/").await,
        Some(StatusCode::NOT_FOUND),
        "a was removed"
    );
    Ok(())
}

/// Sends raw bytes and returns the status line of the answer.
async fn raw(addr: SocketAddr, request: &[u8]) -> anyhow::Result<String> {
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    // The server may answer and close before the whole request is written.
    let _ = socket.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn hostile_requests_get_errors_not_panics() -> anyhow::Result<()> {
    let up = upstream(echo("app")).await?;
    let portico = Portico::start(&service("app", "dash", up)).await?;
    let addr = portico.addr();
    let close = "Connection: close\r\n\r\n";

    assert!(raw(addr, b"GARBAGE\r\n\r\n").await?.contains(" 400 "));
    let huge = format!(
        "GET /proxy/app/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n{close}",
        "a".repeat(1 << 20)
    );
    let line = raw(addr, huge.as_bytes()).await?;
    assert!(line.contains(" 431 ") || line.contains(" 400 "), "{line}");
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let line = raw(
        addr,
        format!("GET /proxy/app/ HTTP/1.1\r\nHost: x\r\n{many}{close}").as_bytes(),
    )
    .await?;
    assert!(line.contains(" 431 ") || line.contains(" 400 "), "{line}");

    for (request, expected) in [
        (
            format!("GET /proxy/%ff%00/ HTTP/1.1\r\nHost: x\r\n{close}"),
            " 404 ",
        ),
        (
            format!("GET /proxy/app/%zz?%%%&& HTTP/1.1\r\nHost: x\r\n{close}"),
            " 200 ",
        ),
        (
            format!("GET http://elsewhere.example/proxy/app/ HTTP/1.1\r\nHost: x\r\n{close}"),
            " 200 ",
        ),
        (
            format!(
                "GET /static/x.js HTTP/1.1\r\nHost: x\r\nReferer: http://[::1\r\nCookie: ;;=;portico_affinity\r\n{close}"
            ),
            " 404 ",
        ),
        (
            "GET /proxy/app/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade, close\r\n\r\n"
                .to_owned(),
            " 400 ",
        ),
        (
            format!(
                "POST /proxy/app/ HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n{close}0\r\n\r\n"
            ),
            " 200 ",
        ),
        (
            format!("GET /proxy/app/ HTTP/1.1\r\nHost: \r\nAccept: \u{7f}\r\n{close}"),
            "",
        ),
    ] {
        let line = raw(addr, request.as_bytes()).await?;
        assert!(line.contains(expected), "{request:?} -> {line:?}");
    }

    let health = portico.client.get(portico.url("/healthz")).send().await?;
    assert_eq!(health.status(), StatusCode::OK, "still serving");
    Ok(())
}

#[tokio::test]
async fn metrics_count_requests_and_plugin_calls() -> anyhow::Result<()> {
    let up = upstream(echo("app")).await?;
    let portico = Portico::start(&service("app", "streamlit", up)).await?;
    portico
        .client
        .get(portico.url("/proxy/app/"))
        .send()
        .await?;
    portico
        .client
        .get(portico.url("/proxy/nope/"))
        .send()
        .await?;
    let response = portico.client.get(portico.url("/metrics")).send().await?;
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()?
            .starts_with("text/plain")
    );
    let text = response.text().await?;
    for expected in [
        "portico_requests_total{service=\"app\",status=\"200\"} 1",
        "portico_requests_total{service=\"_unrouted\",status=\"404\"} 1",
        "portico_request_duration_seconds_count{service=\"app\"} 1",
        "# TYPE portico_upstream_errors_total counter",
        "portico_websockets_open{service=\"app\"} 0",
    ] {
        assert!(text.contains(expected), "{expected} missing from\n{text}");
    }
    let calls = text
        .lines()
        .find(|line| {
            line.starts_with("portico_plugin_calls_total{plugin=\"streamlit\",hook=\"on-request\"}")
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|count| count.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(calls >= 1, "{text}");
    Ok(())
}

#[tokio::test]
async fn unprefixed_requests_are_counted_by_how_they_were_routed() -> anyhow::Result<()> {
    let upstream = upstream(Router::new().fallback(|| async { "asset" })).await?;
    let portico =
        Portico::start(&format!("{}{}", service("app", "generic", upstream), ADMIN)).await?;
    for _ in 0..2 {
        let response = portico
            .client
            .get(portico.url("/static/app.js"))
            .header(header::REFERER, portico.url("/proxy/app/"))
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let unclaimed = portico
        .client
        .get(portico.url("/nowhere.js"))
        .send()
        .await?;
    assert_eq!(unclaimed.status(), StatusCode::NOT_FOUND);
    let metrics = portico.metrics().await?;
    assert!(
        metrics.contains("portico_unprefixed_requests_total{service=\"app\",via=\"referer\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portico_unprefixed_requests_total{service=\"\",via=\"none\"} 1"),
        "{metrics}"
    );
    Ok(())
}
