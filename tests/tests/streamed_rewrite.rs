//! Streamed body rewrites (`body: streamed`, `rewrite-chunk`) against a real Portico, the real
//! bundled plugins and the hostile fixture: the upstream sends a page in pieces and holds back
//! the next piece until the client has read the previous one through Portico, so every test
//! also proves that nothing waits for the end of the body.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::header;
use axum::response::IntoResponse as _;
use axum::routing::get;
use bytes::Bytes;
use portico_tests::proxy::{ADMIN, Portico, service, upstream};
use tokio::sync::mpsc;

const HOSTILE: &str = env!("PORTICO_HOSTILE_WASM");

/// How long a test waits for a piece before it gives up (a hang guard, not a timing check).
const PATIENCE: Duration = Duration::from_secs(20);

/// The upstream's side of one streamed response: the test sends each piece when it chooses.
type Pieces = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// An upstream whose `GET /page` answers with `headers` and a body the test feeds piece by
/// piece; each request's feeder arrives on the returned channel.
async fn gated_upstream(
    headers: &'static [(&'static str, &'static str)],
) -> anyhow::Result<(SocketAddr, mpsc::Receiver<Pieces>)> {
    let (feeders, requests) = mpsc::channel::<Pieces>(4);
    let app = Router::new().route(
        "/page",
        get(move || {
            let feeders = feeders.clone();
            async move {
                let (pieces, body) = mpsc::channel(4);
                let _ = feeders.send(pieces).await;
                let body = futures_util::stream::unfold(body, |mut body| async move {
                    body.recv().await.map(|piece| (piece, body))
                });
                let mut response = Body::from_stream(body).into_response();
                for (name, value) in headers {
                    response.headers_mut().insert(
                        header::HeaderName::from_static(name),
                        header::HeaderValue::from_static(value),
                    );
                }
                response
            }
        }),
    );
    Ok((upstream(app).await?, requests))
}

/// The client's side: reads until `want` has arrived (or the body ends) and returns everything
/// read so far as text.
struct Reader {
    response: reqwest::Response,
    seen: Vec<u8>,
}

impl Reader {
    async fn until(&mut self, want: &str) -> anyhow::Result<String> {
        while !String::from_utf8_lossy(&self.seen).contains(want) {
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk()).await??;
            match chunk {
                Some(chunk) => self.seen.extend_from_slice(&chunk),
                None => anyhow::bail!(
                    "the body ended before {want:?}: {}",
                    String::from_utf8_lossy(&self.seen)
                ),
            }
        }
        Ok(String::from_utf8_lossy(&self.seen).into_owned())
    }

    /// Reads to the end; an error when the body is cut off.
    async fn rest(mut self) -> anyhow::Result<String> {
        while let Some(chunk) = tokio::time::timeout(PATIENCE, self.response.chunk()).await?? {
            self.seen.extend_from_slice(&chunk);
        }
        Ok(String::from_utf8_lossy(&self.seen).into_owned())
    }
}

async fn open(
    portico: &Portico,
    path: &str,
    requests: &mut mpsc::Receiver<Pieces>,
) -> anyhow::Result<(Reader, Pieces)> {
    let client = portico.client.clone();
    let url = portico.url(path);
    let response = tokio::spawn(async move { client.get(url).send().await });
    let feeder = tokio::time::timeout(PATIENCE, requests.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the upstream was never asked"))?;
    let response = tokio::time::timeout(PATIENCE, response).await???;
    Ok((
        Reader {
            response,
            seen: Vec::new(),
        },
        feeder,
    ))
}

async fn send(feeder: &Pieces, piece: &[u8]) -> anyhow::Result<()> {
    feeder
        .send(Ok(Bytes::copy_from_slice(piece)))
        .await
        .map_err(|_| anyhow::anyhow!("the upstream body was dropped"))
}

/// The head of a Voila page up to the middle of a `<link>` tag, then the rest of it after the
/// first cell has run.
const VOILA_HEAD: &str = concat!(
    "<!DOCTYPE html>\n<html><head>\n",
    r#"<script id="jupyter-config-data" type="application/json">{"baseUrl": "/", "fullStaticUrl": "/voila/static"}</script>"#,
    "\n",
    r#"<link rel="stylesheet" href="/voila/sta"#,
);
const VOILA_REST: &str = concat!(
    r#"tic/index.css">"#,
    "\n</head><body>\n<div>cell 1: 2</div>\n",
    r#"<script src="/voila/static/voila.js"></script>"#,
    "\n</body></html>\n",
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_page_is_rewritten_piece_by_piece_as_it_arrives() -> anyhow::Result<()> {
    let (up, mut requests) =
        gated_upstream(&[("content-type", "text/html; charset=utf-8")]).await?;
    let portico = Portico::start(&service("nb", "voila", up)).await?;
    let (mut reader, feeder) = open(&portico, "/proxy/nb/page", &mut requests).await?;
    assert_eq!(reader.response.status(), 200);
    assert!(
        reader
            .response
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_none(),
        "a streamed rewrite cannot know its length"
    );

    send(&feeder, VOILA_HEAD.as_bytes()).await?;
    // The config arrives rewritten while the upstream still holds the rest of the page: the
    // page streams through the rewrite.
    let head = reader
        .until(r#""fullStaticUrl": "/proxy/nb/voila/static""#)
        .await?;
    assert!(head.contains(r#""baseUrl": "/proxy/nb/""#), "{head}");
    assert!(
        !head.contains("<link"),
        "the cut tag is held back until its end arrives: {head}"
    );

    send(&feeder, VOILA_REST.as_bytes()).await?;
    drop(feeder);
    let page = reader.rest().await?;
    assert!(
        page.contains(r#"<link rel="stylesheet" href="/proxy/nb/voila/static/index.css">"#),
        "a URL cut between two pieces is rewritten whole: {page}"
    );
    assert!(
        page.contains(r#"<script src="/proxy/nb/voila/static/voila.js">"#),
        "{page}"
    );
    assert!(page.ends_with("</body></html>\n"), "{page}");
    assert!(
        !page.contains(r#""/voila/"#),
        "no URL left outside the prefix: {page}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_streamed_page_is_decoded_and_rewritten_as_it_arrives() -> anyhow::Result<()> {
    let (up, mut requests) = gated_upstream(&[
        ("content-type", "text/html"),
        ("content-encoding", "gzip"),
        ("etag", "\"v1\""),
    ])
    .await?;
    let portico = Portico::start(&service("nb", "voila", up)).await?;
    let (mut reader, feeder) = open(&portico, "/proxy/nb/page", &mut requests).await?;
    let headers = reader.response.headers();
    assert!(
        headers.get(header::CONTENT_ENCODING).is_none(),
        "the client gets the decoded page: {headers:?}"
    );
    assert_eq!(
        headers.get(header::ETAG).map(|v| v.as_bytes()),
        Some(&b"W/\"v1\""[..]),
        "the rewritten page is no longer byte-identical"
    );

    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(VOILA_HEAD.as_bytes())?;
    gzip.flush()?;
    send(&feeder, &std::mem::take(gzip.get_mut())).await?;
    reader.until(r#""baseUrl": "/proxy/nb/""#).await?;

    gzip.write_all(VOILA_REST.as_bytes())?;
    send(&feeder, &gzip.finish()?).await?;
    drop(feeder);
    let page = reader.rest().await?;
    assert!(
        page.contains(r#"href="/proxy/nb/voila/static/index.css""#),
        "{page}"
    );
    assert!(page.ends_with("</body></html>\n"), "{page}");
    Ok(())
}

fn rewrite_chunk_failures(portico: &Portico, kind: usize) -> u64 {
    let plugin = portico
        .running
        .state
        .proxy()
        .plugins()
        .get("hostile")
        .expect("the hostile plugin is loaded");
    let index = portico::plugin::Hook::RewriteChunk as usize;
    plugin.stats().hooks[index].failures[kind].load(std::sync::atomic::Ordering::Relaxed)
}

const TRAP: usize = 0;
const REFUSED: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_fails_mid_stream_leaves_the_rest_of_the_body_unchanged() -> anyhow::Result<()>
{
    let (up, mut requests) =
        gated_upstream(&[("content-type", "text/html"), ("x-hostile", "stream-trap")]).await?;
    let body = format!("{}{ADMIN}", service("h", "hostile", up));
    let portico = Portico::start_with_plugins(&body, &[Path::new(HOSTILE)]).await?;
    let (mut reader, feeder) = open(&portico, "/proxy/h/page", &mut requests).await?;

    send(&feeder, b"<p>first piece</p>\n").await?;
    // The plugin upper-cases its first chunk ...
    reader.until("<P>FIRST PIECE</P>").await?;
    // ... and traps on the second, which then arrives as the upstream sent it, as does the rest.
    send(&feeder, b"<p>second piece</p>\n").await?;
    reader.until("<p>second piece</p>").await?;
    send(&feeder, b"<p>third piece</p>\n").await?;
    drop(feeder);
    let page = reader.rest().await?;
    assert_eq!(
        page,
        "<P>FIRST PIECE</P>\n<p>second piece</p>\n<p>third piece</p>\n"
    );
    assert_eq!(rewrite_chunk_failures(&portico, TRAP), 1);
    let metrics = portico.metrics().await?;
    assert!(
        metrics
            .lines()
            .any(|line| line.contains("hook=\"rewrite-chunk\"")
                && line.contains("kind=\"trap\"")
                && line.ends_with(" 1")),
        "the failure is in /metrics"
    );

    // The plugin still serves: a fresh stream starts over.
    let (mut again, feeder) = open(&portico, "/proxy/h/page", &mut requests).await?;
    send(&feeder, b"<p>again</p>\n").await?;
    again.until("<P>AGAIN</P>").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_closed_service_cuts_the_body_off_rather_than_send_it_unrewritten()
-> anyhow::Result<()> {
    let (up, mut requests) =
        gated_upstream(&[("content-type", "text/html"), ("x-hostile", "stream-trap")]).await?;
    let body = format!("{}fail_closed = true\n", service("h", "hostile", up));
    let portico = Portico::start_with_plugins(&body, &[Path::new(HOSTILE)]).await?;
    let (mut reader, feeder) = open(&portico, "/proxy/h/page", &mut requests).await?;
    send(&feeder, b"<p>first piece</p>\n").await?;
    reader.until("<P>FIRST PIECE</P>").await?;
    send(&feeder, b"<p>second piece</p>\n").await?;
    let cut = reader.rest().await;
    assert!(
        cut.is_err(),
        "the body was completed after the plugin failed: {cut:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_holding_back_more_than_it_was_given_is_refused() -> anyhow::Result<()> {
    let (up, mut requests) =
        gated_upstream(&[("content-type", "text/html"), ("x-hostile", "stream-hold")]).await?;
    let portico =
        Portico::start_with_plugins(&service("h", "hostile", up), &[Path::new(HOSTILE)]).await?;
    let (mut reader, feeder) = open(&portico, "/proxy/h/page", &mut requests).await?;
    send(&feeder, b"<p>kept as sent</p>\n").await?;
    reader.until("<p>kept as sent</p>").await?;
    send(&feeder, b"<p>and the rest</p>\n").await?;
    drop(feeder);
    assert_eq!(
        reader.rest().await?,
        "<p>kept as sent</p>\n<p>and the rest</p>\n"
    );
    assert_eq!(rewrite_chunk_failures(&portico, REFUSED), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_over_the_rewrite_limit_is_rewritten_as_it_streams() -> anyhow::Result<()> {
    // A Flask page of 200 links, ten times the rewrite limit: buffered whole it would pass
    // unchanged; the Flask plugin's `rewrite-chunk` rewrites it piece by piece instead.
    let links: String = (0..200)
        .map(|n| format!("<li><a href=\"/item/{n}\">item {n}</a></li>\n"))
        .collect();
    let page = Arc::new(format!("<html><body><ul>\n{links}</ul></body></html>\n"));
    let served = Arc::clone(&page);
    let app = Router::new().route(
        "/",
        get(move || {
            let page = Arc::clone(&served);
            async move {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    page.as_str().to_owned(),
                )
            }
        }),
    );
    let up = upstream(app).await?;
    let limit = page.len() / 10;
    let body = format!(
        "{}\n[proxy]\nmax_rewrite_bytes = {limit}\n",
        service("shop", "flask", up)
    );
    let portico = Portico::start(&body).await?;
    let (status, text) = portico.fetch("/proxy/shop/").await?;
    assert_eq!(status, 200);
    assert_eq!(
        text.matches("href=\"/proxy/shop/item/").count(),
        200,
        "{text}"
    );
    assert_eq!(
        text,
        page.replace("href=\"/item/", "href=\"/proxy/shop/item/")
    );
    Ok(())
}

/// The figures a streamed rewrite is bounded by hold for a page of several megabytes sent in
/// one piece: it is passed in calls of bounded size and arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_piece_is_rewritten_in_bounded_calls() -> anyhow::Result<()> {
    let (up, mut requests) = gated_upstream(&[("content-type", "text/html")]).await?;
    let portico = Portico::start(&service("nb", "voila", up)).await?;
    let (reader, feeder) = open(&portico, "/proxy/nb/page", &mut requests).await?;
    // One 4 MiB line with no line end or `>` for the first 3 MiB, then tags.
    let mut piece = vec![b'x'; 3 * 1024 * 1024];
    let tags = "<script src=\"/voila/static/a.js\"></script>\n".repeat(20_000);
    piece.extend_from_slice(tags.as_bytes());
    let sent = piece.len();
    send(&feeder, &piece).await?;
    drop(feeder);
    let page = reader.rest().await?;
    assert_eq!(
        page.matches("src=\"/proxy/nb/voila/static/a.js\"").count(),
        20_000
    );
    assert_eq!(page.len(), sent + 20_000 * "/proxy/nb".len());
    let plugin = portico
        .running
        .state
        .proxy()
        .plugins()
        .get("voila")
        .expect("loaded");
    let index = portico::plugin::Hook::RewriteChunk as usize;
    let calls = plugin.stats().hooks[index]
        .calls
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        calls >= 16,
        "{calls} calls for {sent} bytes: calls are bounded in size"
    );
    Ok(())
}

/// A plugin that rewrites bodies gets them in an encoding Portico can decode: the upstream is
/// never offered brotli or zstd for its services, while other services see the client's list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_services_are_asked_only_for_decodable_encodings() -> anyhow::Result<()> {
    let app = Router::new().route(
        "/",
        get(|headers: axum::http::HeaderMap| async move {
            headers
                .get(header::ACCEPT_ENCODING)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("none")
                .to_owned()
        }),
    );
    let up = upstream(app).await?;
    let body = format!(
        "{}{}",
        service("shop", "flask", up),
        service("plain", "generic", up)
    );
    let portico = Portico::start(&body).await?;
    for (id, expected) in [
        ("shop", "gzip, deflate"),
        ("plain", "br, gzip, zstd, deflate"),
    ] {
        let seen = portico
            .client
            .get(portico.url(&format!("/proxy/{id}/")))
            .header(header::ACCEPT_ENCODING, "br, gzip, zstd, deflate")
            .send()
            .await?
            .text()
            .await?;
        assert_eq!(seen, expected, "{id}");
    }
    Ok(())
}
