//! A hostile client against a real Portico: raw sockets, an upstream that records exactly the
//! bytes it receives, the real bundled plugins and the hostile fixture. One test per way a
//! client could escape a service, switch off its plugin, hold connections, or make Portico
//! send one request many times.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use portico::plugin::PluginState;
use portico_tests::proxy::{Answer, Portico, RawUpstream, closed_port, raw, service, upstream};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const HOSTILE: &str = env!("PORTICO_HOSTILE_WASM");

const PING: &[u8] = b"GET /proxy/c/ping HTTP/1.1\r\nHost: portal\r\n\r\n";

/// A service `c` of `service_type` whose upstream has a base path.
fn based(service_type: &str, up: SocketAddr) -> String {
    format!(
        "\n[[services]]\nid = \"c\"\ntype = \"{service_type}\"\nupstreams = [\"http://{up}/base/\"]\n"
    )
}

/// The plugin `name` of a running Portico.
fn plugin(portico: &Portico, name: &str) -> std::sync::Arc<portico::plugin::Plugin> {
    let plugin = portico.running.state.proxy().plugins().get(name);
    plugin.unwrap_or_else(|| panic!("plugin {name} is not loaded"))
}

/// The failures counted against `plugin`.
fn failures(plugin: &portico::plugin::Plugin) -> u64 {
    plugin
        .stats()
        .failures
        .load(std::sync::atomic::Ordering::Relaxed)
}

fn get(target: &str, extra: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: portal\r\n{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test]
async fn no_path_climbs_above_the_upstream_base() -> anyhow::Result<()> {
    let up = RawUpstream::start(Answer::Ok).await?;
    let portico = Portico::start(&based("generic", up.addr)).await?;
    for target in [
        "/proxy/c/../../secret",
        "/proxy/c/%2e%2e/secret",
        "/proxy/c/%2E%2e/%2e%2E/secret",
        "/proxy/c/.%2e/secret",
        "/proxy/c/x/../../secret",
        "/proxy/c/..\\..\\secret",
        "/proxy/c/a%5c..%5c..%5csecret",
        "/proxy/c/a/..%2F..%2Fsecret",
    ] {
        let (status, answer) = raw(portico.addr(), &get(target, "")).await?;
        assert_eq!(status, 400, "{target}: {answer}");
    }
    // The same through an un-prefixed path that the Referer would route to the service.
    for target in ["/../../secret", "/%2e%2e/secret", "/a/../../secret"] {
        let (status, answer) = raw(
            portico.addr(),
            &get(target, "Referer: http://portal/proxy/c/\r\n"),
        )
        .await?;
        assert_eq!(status, 400, "{target}: {answer}");
    }
    assert!(
        up.targets().is_empty(),
        "reached the upstream: {:?}",
        up.targets()
    );

    // Dot segments that stay inside the service resolve; `%2F` stays encoded.
    raw(portico.addr(), &get("/proxy/c/a/./b/../d", "")).await?;
    raw(portico.addr(), &get("/proxy/c/a%2Fb", "")).await?;
    raw(
        portico.addr(),
        &get("/x/../static/app.js", "Referer: /proxy/c/\r\n"),
    )
    .await?;
    assert_eq!(
        up.targets(),
        ["/base/a/d", "/base/a%2Fb", "/base/static/app.js"]
    );
    Ok(())
}

#[tokio::test]
async fn a_plugin_path_with_dot_segments_is_refused() -> anyhow::Result<()> {
    let up = RawUpstream::start(Answer::Ok).await?;
    let portico =
        Portico::start_with_plugins(&based("hostile", up.addr), &[Path::new(HOSTILE)]).await?;
    let (status, _) = raw(portico.addr(), &get("/proxy/c/dots", "")).await?;
    // The plugin's answer is refused and the generic behaviour serves the request instead.
    assert_eq!(status, 200);
    assert_eq!(up.targets(), ["/base/dots"]);
    let hostile = plugin(&portico, "hostile");
    assert_eq!(failures(&hostile), 1);
    Ok(())
}

#[tokio::test]
async fn client_input_is_not_charged_to_the_plugin() -> anyhow::Result<()> {
    let up = RawUpstream::start(Answer::Ok).await?;
    let portico = Portico::start(&based("dash", up.addr)).await?;
    let long_path = format!("/proxy/c/{}", "a".repeat(9 * 1024));
    let long_query = format!("/proxy/c/?q={}", "a".repeat(9 * 1024));
    for _ in 0..12 {
        let (status, _) = raw(portico.addr(), &get(&long_path, "")).await?;
        assert_eq!(status, 414);
        let (status, _) = raw(portico.addr(), &get(&long_query, "")).await?;
        assert_eq!(status, 414);
        let mut utf8 = b"GET /proxy/c/caf".to_vec();
        utf8.extend_from_slice(&[0xc3, 0xa9]);
        utf8.extend_from_slice(b" HTTP/1.1\r\nHost: portal\r\nConnection: close\r\n\r\n");
        let (status, answer) = raw(portico.addr(), &utf8).await?;
        assert_eq!(status, 400, "{answer}");
    }
    let dash = plugin(&portico, "dash");
    assert_eq!(dash.state(), PluginState::Healthy);
    assert_eq!(failures(&dash), 0);
    assert!(up.targets().is_empty());
    let (status, _) = raw(portico.addr(), &get("/proxy/c/_dash-layout", "")).await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test]
async fn one_hook_succeeding_does_not_hide_another_failing() -> anyhow::Result<()> {
    // `on-request` traps on every request; `on-response` (called for the Set-Cookie the
    // upstream sends) succeeds in between.
    let up = RawUpstream::start(Answer::Ok).await?;
    let body = format!(
        "{}\n[plugins]\nquarantine_failures = 3\n",
        based("hostile", up.addr)
    );
    let portico = Portico::start_with_plugins(&body, &[Path::new(HOSTILE)]).await?;
    for _ in 0..3 {
        let (status, _) = raw(portico.addr(), &get("/proxy/c/trap", "")).await?;
        assert_eq!(status, 200, "the generic behaviour serves it");
    }
    let hostile = plugin(&portico, "hostile");
    assert_eq!(hostile.state(), PluginState::Quarantined);
    Ok(())
}

#[tokio::test]
async fn silent_and_slow_clients_are_cut_off() -> anyhow::Result<()> {
    let up = RawUpstream::start(Answer::Ok).await?;
    let body = format!(
        "{}\n[client]\nheader_timeout_ms = 300\nkeepalive_timeout_ms = 600\nbody_timeout_ms = 300\n",
        based("generic", up.addr)
    );
    let portico = Portico::start(&body).await?;

    // A connection that sends nothing is closed.
    let mut silent = TcpStream::connect(portico.addr()).await?;
    assert_eq!(read_until_closed(&mut silent).await.context("silent")?, "");

    // A slowloris client, one header line every 100 ms, is closed while still sending.
    let mut slow = TcpStream::connect(portico.addr()).await?;
    slow.write_all(b"GET /proxy/c/ HTTP/1.1\r\nHost: portal\r\n")
        .await?;
    let mut cut = false;
    for index in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow
            .write_all(format!("x-slow-{index}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "a slowloris client kept its connection for 10 s");

    // A kept-alive connection that keeps asking stays open past the keep-alive timeout;
    // left idle, it is closed.
    let mut kept = Answers::connect(portico.addr()).await?;
    for _ in 0..10 {
        kept.send(PING).await?;
        let answer = kept.next().await?;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        read_until_closed(&mut kept.stream)
            .await
            .context("kept alive")?,
        ""
    );

    // A body that stalls gets 408.
    let mut stalled = TcpStream::connect(portico.addr()).await?;
    stalled
        .write_all(b"POST /proxy/c/upload HTTP/1.1\r\nHost: portal\r\nContent-Length: 100\r\n\r\n0123456789")
        .await?;
    let answer = read_until_closed(&mut stalled)
        .await
        .context("stalled body")?;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    Ok(())
}

/// Between requests a kept-alive connection is parked, holding no buffer: pipelined bytes,
/// answers still being sent, the header timeout of the next request and a drain all survive it.
#[tokio::test]
async fn kept_alive_connections_keep_their_bytes_and_timeouts_between_requests()
-> anyhow::Result<()> {
    const BIG: usize = 4 << 20;
    let up = upstream(
        axum::Router::new()
            .route("/ping", axum::routing::get(|| async { "pong" }))
            .route("/big", axum::routing::get(|| async { vec![b'x'; BIG] })),
    )
    .await?;
    let body = format!(
        "{}\n[client]\nheader_timeout_ms = 300\nkeepalive_timeout_ms = 20000\n",
        service("c", "generic", up)
    );
    let portico = Portico::start(&body).await?;

    // Two requests in one write, then a request and the start of the next.
    let mut pipelined = Answers::connect(portico.addr()).await?;
    pipelined.send(&[PING, PING].concat()).await?;
    for _ in 0..2 {
        let answer = pipelined.next().await?;
        assert!(answer.ends_with("\r\n\r\npong"), "{answer}");
    }
    let (start, rest) = PING.split_at(20);
    pipelined.send(&[PING, start].concat()).await?;
    assert!(pipelined.next().await?.ends_with("pong"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    pipelined.send(rest).await?;
    assert!(pipelined.next().await?.ends_with("pong"));

    // An answer larger than the socket buffers, read late, arrives whole; the connection then
    // serves the next request.
    let mut slow = Answers::connect(portico.addr()).await?;
    slow.send(b"GET /proxy/c/big HTTP/1.1\r\nHost: portal\r\n\r\n")
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = slow.next().await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{}", &answer[..100]);
    assert!(answer.ends_with(&"x".repeat(1000)));
    slow.send(PING).await?;
    assert!(slow.next().await?.ends_with("pong"));

    // After a kept-alive wait, the next request's head is held to the header timeout, not to
    // the (longer) keep-alive timeout.
    tokio::time::sleep(Duration::from_millis(100)).await;
    slow.send(b"GET /proxy/c/ping HTTP/1.1\r\n").await?;
    assert_eq!(
        read_until_closed(&mut slow.stream).await.context("head")?,
        ""
    );

    // HTTP/2 with prior knowledge.
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build()?;
    for _ in 0..2 {
        let response = h2.get(portico.url("/proxy/c/ping")).send().await?;
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.text().await?, "pong");
    }

    // A drain closes a waiting connection at once rather than after its keep-alive timeout.
    let mut waiting = Answers::connect(portico.addr()).await?;
    waiting.send(PING).await?;
    assert!(waiting.next().await?.ends_with("pong"));
    tokio::time::timeout(Duration::from_secs(10), portico.running.shutdown())
        .await
        .context("the drain waited for an idle connection")??;
    assert_eq!(read_until_closed(&mut waiting.stream).await?, "");
    Ok(())
}

#[tokio::test]
async fn failed_upstreams_get_the_request_once() -> anyhow::Result<()> {
    for answer in [Answer::Close, Answer::Garbage] {
        let up = RawUpstream::start(answer).await?;
        // A long retry budget: were the request retried, the test would show it.
        let body = format!(
            "{}\n[retry]\nbudget_ms = 60000\n",
            based("generic", up.addr)
        );
        let portico = Portico::start(&body).await?;
        let (status, text) = raw(portico.addr(), &get("/proxy/c/once", "")).await?;
        assert_eq!(status, 502, "{answer:?}: {text}");
        assert_eq!(up.targets(), ["/base/once"], "{answer:?}");
        assert!(
            !text.contains("127.0.0.1") && !text.contains("os error"),
            "the error page tells internals: {text}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_stale_keep_alive_connection_is_retried_once() -> anyhow::Result<()> {
    let up = RawUpstream::start(Answer::CloseSecond).await?;
    // One worker, so one pool of upstream connections: the second request finds the first's.
    let portico = Portico::start(&format!("workers = 1\n{}", based("generic", up.addr))).await?;
    let (status, _) = raw(portico.addr(), &get("/proxy/c/first", "")).await?;
    assert_eq!(status, 200);
    // Goes out on the kept-alive upstream connection, which closes without answering: sent
    // again once, on a new connection.
    let (status, _) = raw(portico.addr(), &get("/proxy/c/second", "")).await?;
    assert_eq!(status, 200);
    assert_eq!(
        up.targets(),
        ["/base/first", "/base/second", "/base/second"]
    );
    // Never for a POST: each is sent once, and the one that meets the stale connection fails.
    let mut statuses = Vec::new();
    for target in ["/proxy/c/post1", "/proxy/c/post2"] {
        let post = format!(
            "POST {target} HTTP/1.1\r\nHost: portal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        statuses.push(raw(portico.addr(), post.as_bytes()).await?.0);
    }
    assert!(statuses.contains(&502), "{statuses:?}");
    for sent in ["/base/post1", "/base/post2"] {
        assert_eq!(
            up.targets().iter().filter(|t| *t == sent).count(),
            1,
            "{sent}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn malformed_requests_are_the_clients_error() -> anyhow::Result<()> {
    let up = RawUpstream::start(Answer::Ok).await?;
    let portico = Portico::start(&based("generic", up.addr)).await?;
    let two_hosts =
        b"GET /proxy/c/ HTTP/1.1\r\nHost: portal\r\nHost: evil\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(portico.addr(), two_hosts).await?.0, 400);
    let bad_host = b"GET /proxy/c/ HTTP/1.1\r\nHost: user@evil\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(portico.addr(), bad_host).await?.0, 400);
    let no_host = b"GET /proxy/c/ HTTP/1.1\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(portico.addr(), no_host).await?.0, 400);
    let http10 = b"GET /proxy/c/ HTTP/1.0\r\n\r\n";
    assert_eq!(raw(portico.addr(), http10).await?.0, 200);
    let chunked = b"POST /proxy/c/up HTTP/1.1\r\nHost: portal\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\nzz\r\n";
    let (status, text) = raw(portico.addr(), chunked).await?;
    assert_eq!(status, 400, "{text}");
    let metrics = portico.fetch("/metrics").await?.1;
    assert!(
        !metrics.lines().any(|line| line
            .starts_with("portico_upstream_errors_total{service=\"c\"")
            && !line.ends_with(" 0")),
        "counted as an upstream error:\n{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn cookies_are_scoped_to_the_service_that_set_them() -> anyhow::Result<()> {
    let up = RawUpstream::start(Answer::Ok).await?;
    let portico = Portico::start(&based("generic", up.addr)).await?;
    let (_, prefixed) = raw(portico.addr(), &get("/proxy/c/page", "")).await?;
    assert!(
        prefixed
            .to_ascii_lowercase()
            .contains("set-cookie: s=1;path=/proxy/c\r\n"),
        "{prefixed}"
    );
    let (_, orphan) = raw(
        portico.addr(),
        &get("/_stcore/x", "Referer: http://portal/proxy/c/\r\n"),
    )
    .await?;
    assert!(
        orphan
            .to_ascii_lowercase()
            .contains("set-cookie: s=1;path=/proxy/c\r\n"),
        "{orphan}"
    );
    Ok(())
}

#[tokio::test]
async fn a_dead_upstream_is_reported_without_internals() -> anyhow::Result<()> {
    let dead = closed_port().await?;
    let body = format!("{}\n[retry]\nbudget_ms = 100\n", based("generic", dead));
    let portico = Portico::start(&body).await?;
    let (status, text) = raw(portico.addr(), &get("/proxy/c/", "")).await?;
    assert_eq!(status, 502);
    assert!(!text.contains(&dead.to_string()), "{text}");
    assert!(
        !text.contains("os error") && !text.contains("refused ("),
        "{text}"
    );
    Ok(())
}

/// A kept-alive connection's answers (with `content-length` bodies), read one at a time:
/// bytes of the next answer read with one are kept for it.
struct Answers {
    stream: TcpStream,
    buffered: Vec<u8>,
}

impl Answers {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self {
            stream: TcpStream::connect(addr).await?,
            buffered: Vec::new(),
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        Ok(self.stream.write_all(bytes).await?)
    }

    async fn next(&mut self) -> anyhow::Result<String> {
        loop {
            if let Some(end) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffered[..end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if self.buffered.len() >= end + 4 + length {
                    let answer: Vec<u8> = self.buffered.drain(..end + 4 + length).collect();
                    return Ok(String::from_utf8_lossy(&answer).into_owned());
                }
            }
            let mut chunk = [0u8; 16 << 10];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await??;
            anyhow::ensure!(n > 0, "closed mid-answer");
            self.buffered.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Reads until the server closes the connection (a hang guard of 10 s, not a timing check).
async fn read_until_closed(stream: &mut TcpStream) -> anyhow::Result<String> {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await??;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn an_empty_configuration_file_is_refused() -> anyhow::Result<()> {
    let up = RawUpstream::start(Answer::Ok).await?;
    let portico = Portico::start(&based("generic", up.addr)).await?;
    // What an editor leaves for a moment while it saves.
    std::fs::write(&portico.config_path, "")?;
    portico
        .eventually("the empty file is refused", || async {
            portico.fetch("/metrics").await.is_ok_and(|(_, text)| {
                text.contains("portico_config_reloads_total{result=\"rejected\"} 1")
            })
        })
        .await?;
    let (status, _) = raw(portico.addr(), &get("/proxy/c/still", "")).await?;
    assert_eq!(status, 200);
    Ok(())
}
