//! Access control through a real Portico: forward authentication against the tests' own auth
//! server (session cookies, slowed down, stopped), per-service `allow_users`, the admin
//! listener and the filtered public listing, with real upstreams behind.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::extract::ws::{Message as AxMessage, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::routing::get;
use futures_util::{SinkExt as _, StreamExt as _};
use portico_tests::auth::{AuthServer, COOKIE, session};
use portico_tests::proxy::{ADMIN, Portico, raw, service, upstream};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// An upstream that answers every request with what it received, counting them; `/ws` echoes
/// WebSocket messages.
async fn echo() -> anyhow::Result<(SocketAddr, Arc<AtomicUsize>)> {
    let hits = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&hits);
    let router = Router::new()
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(message)) = socket.recv().await {
                        if let AxMessage::Text(text) = message {
                            let _ = socket.send(AxMessage::Text(text)).await;
                        }
                    }
                })
            }),
        )
        .fallback(move |request: Request| {
            count.fetch_add(1, Ordering::Relaxed);
            async move {
                let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (name, value) in request.headers() {
                    headers
                        .entry(name.as_str().to_owned())
                        .or_default()
                        .push(value.to_str().unwrap_or("<binary>").to_owned());
                }
                axum::Json(serde_json::json!({
                    "path": request.uri().path(),
                    "headers": headers,
                }))
            }
        });
    Ok((upstream(router).await?, hits))
}

/// `alice-app` (alice only), `bob-app` (bob only), `shared` (anyone signed in) and `open`
/// (`auth = "none"`), all on `up`.
fn services(up: SocketAddr) -> String {
    format!(
        "{}allow_users = [\"alice\"]\n{}allow_users = [\"bob\"]\n{}{}auth = \"none\"\n",
        service("alice-app", "generic", up),
        service("bob-app", "generic", up),
        service("shared", "generic", up),
        service("open", "generic", up),
    )
}

/// Portico with [`services`], `auth`'s `[auth]` section plus `extra`, and an admin listener.
async fn start(auth: &AuthServer, up: SocketAddr, extra: &str) -> anyhow::Result<Portico> {
    Portico::start(&format!("{}{}{ADMIN}", services(up), auth.config(extra))).await
}

/// GETs `path` with `headers`; the status and the body as JSON (null when it is not JSON).
async fn get_as(
    portico: &Portico,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(StatusCode, Value)> {
    let mut request = portico.client.get(portico.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// The values of `name` the upstream received.
fn seen(doc: &Value, name: &str) -> Vec<String> {
    doc["headers"][name]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|value| value.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn owners_open_their_apps_and_nobody_else_does() -> anyhow::Result<()> {
    let auth = AuthServer::start().await?;
    let (up, hits) = echo().await?;
    let portico = start(&auth, up, "strip_cookies = [\"test_session\"]").await?;
    let alice = session("alice");
    let alice_and_app = format!("{alice}; app=1");

    let (status, doc) = get_as(&portico, "/proxy/alice-app/", &[]).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{doc}");
    // A program is told how to authenticate: the auth service's challenge is passed on.
    let challenge = portico
        .client
        .get(portico.url("/proxy/alice-app/"))
        .send()
        .await?
        .headers()
        .get("www-authenticate")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    assert_eq!(challenge.as_deref(), Some("Bearer realm=\"portico-test\""));
    assert!(
        doc["message"]
            .as_str()
            .unwrap_or_default()
            .contains("sign in"),
        "{doc}"
    );
    let (status, doc) = get_as(
        &portico,
        "/proxy/alice-app/x",
        &[("cookie", &alice_and_app)],
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "the owner: {doc}");
    assert_eq!(doc["path"], "/x");
    assert_eq!(seen(&doc, "x-auth-request-user"), vec!["alice"]);
    assert_eq!(
        seen(&doc, "cookie"),
        vec!["app=1"],
        "the auth session's cookie stays out of the app"
    );
    assert!(
        seen(&doc, "x-auth-request-email").is_empty(),
        "only copy_headers"
    );

    let bob = session("bob");
    let (status, _) = get_as(&portico, "/proxy/alice-app/", &[("cookie", &bob)]).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "another user");
    let (status, _) = get_as(&portico, "/proxy/bob-app/", &[("cookie", &bob)]).await?;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get_as(&portico, "/proxy/shared/", &[("cookie", &bob)]).await?;
    assert_eq!(status, StatusCode::OK, "any signed-in user");
    let (status, _) = get_as(
        &portico,
        "/proxy/shared/",
        &[("cookie", &session("mallory"))],
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "the auth service's 403");
    let (status, _) = get_as(
        &portico,
        "/proxy/shared/",
        &[("authorization", "Bearer alice-token")],
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "credentials in Authorization");

    // A user header sent by the client proves nothing and never reaches an app.
    let before = hits.load(Ordering::Relaxed);
    let (status, _) = get_as(
        &portico,
        "/proxy/alice-app/",
        &[("x-auth-request-user", "alice")],
    )
    .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "spoofed user header");
    let (status, _) = get_as(&portico, "/proxy/alice-app/", &[("cookie", &bob)]).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        hits.load(Ordering::Relaxed),
        before,
        "refused requests never reach the upstream"
    );
    let (status, doc) = get_as(
        &portico,
        "/proxy/shared/",
        &[("cookie", &alice), ("x-auth-request-user", "bob")],
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen(&doc, "x-auth-request-user"), vec!["alice"]);

    // An opted-out service is open, and spoofed identities are removed there too.
    let asked = auth.asked();
    let (status, doc) =
        get_as(&portico, "/proxy/open/", &[("x-auth-request-user", "root")]).await?;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert!(seen(&doc, "x-auth-request-user").is_empty(), "{doc}");
    assert_eq!(auth.asked(), asked, "the auth service is not asked");

    let metrics = portico.metrics().await?;
    for (result, count) in [
        ("allowed", 5),
        ("denied", 3),
        ("unauthenticated", 3),
        ("error", 0),
    ] {
        let line = format!("portico_auth_total{{result=\"{result}\"}} {count}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    assert!(
        metrics.contains("portico_requests_total{service=\"alice-app\",status=\"401\"} 3"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn browsers_are_sent_to_sign_in_and_come_back() -> anyhow::Result<()> {
    let auth = AuthServer::start().await?;
    let (up, _) = echo().await?;
    let portico = start(&auth, up, "").await?;
    let page = "/proxy/alice-app/page?q=1&r=2";
    let response = portico
        .client
        .get(portico.url(page))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let location = response.headers()["location"].to_str()?.to_owned();
    let rd = format!("http://{}{page}", portico.addr());
    let expected = format!(
        "{}?rd={}",
        auth.url("/signin"),
        url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
    );
    assert_eq!(location, expected);

    // Not a page load: a 401 the script can act on.
    for (method, accept) in [("POST", "text/html"), ("GET", "application/json")] {
        let response = portico
            .client
            .request(method.parse()?, portico.url(page))
            .header("accept", accept)
            .send()
            .await?;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {accept}"
        );
    }

    // The sign-in page sends the browser back to `rd` with the session cookie.
    let response = portico
        .client
        .post(auth.url("/signin"))
        .form(&[("user", "alice"), ("rd", rd.as_str())])
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], rd.as_str());
    let cookie = response.headers()["set-cookie"].to_str()?;
    assert!(cookie.starts_with(&format!("{COOKIE}=")), "{cookie}");
    let session = cookie.split(';').next().unwrap_or_default().to_owned();
    let response = portico
        .client
        .get(&rd)
        .header("accept", "text/html")
        .header("cookie", session)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn websockets_and_assets_of_a_protected_service_need_a_login() -> anyhow::Result<()> {
    let auth = AuthServer::start().await?;
    let (up, hits) = echo().await?;
    let portico = start(&auth, up, "").await?;
    let addr = portico.addr();

    // A WebSocket upgrade without a session: 401, not a redirect, and no upstream connection.
    let upgrade = |cookie: &str| {
        format!(
            "GET /proxy/alice-app/ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAccept: text/html\r\n{cookie}\r\n"
        )
    };
    let (status, answer) = raw(addr, upgrade("").as_bytes()).await?;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = raw(
        addr,
        upgrade(&format!("Cookie: {}\r\n", session("bob"))).as_bytes(),
    )
    .await?;
    assert_eq!(status, 403, "{answer}");

    let mut request = format!("ws://{addr}/proxy/alice-app/ws").into_client_request()?;
    request
        .headers_mut()
        .insert("cookie", session("alice").parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    socket.send(Message::text("hello")).await?;
    let echoed = tokio::time::timeout(Duration::from_secs(10), socket.next()).await?;
    assert_eq!(echoed.transpose()?, Some(Message::text("hello")));
    socket.close(None).await?;

    // An un-prefixed asset routed to the protected service (by its Referer).
    let referer = format!("http://{addr}/proxy/alice-app/");
    let before = hits.load(Ordering::Relaxed);
    let (status, _) = get_as(&portico, "/static/app.js", &[("referer", &referer)]).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(hits.load(Ordering::Relaxed), before);
    let alice = session("alice");
    let (status, doc) = get_as(
        &portico,
        "/static/app.js",
        &[("referer", &referer), ("cookie", &alice)],
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["path"], "/static/app.js");
    Ok(())
}

#[tokio::test]
async fn an_auth_service_down_or_slow_closes_the_door() -> anyhow::Result<()> {
    let mut auth = AuthServer::start().await?;
    let (up, hits) = echo().await?;
    let portico = start(&auth, up, "timeout_ms = 300").await?;
    let alice = session("alice");
    let (status, _) = get_as(&portico, "/proxy/shared/", &[("cookie", &alice)]).await?;
    assert_eq!(status, StatusCode::OK);

    auth.slow_down(Duration::from_secs(3));
    let before = hits.load(Ordering::Relaxed);
    let (status, doc) = get_as(&portico, "/proxy/shared/", &[("cookie", &alice)]).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "slow: {doc}");
    let message = doc["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("authentication is unavailable") && !message.contains("127.0.0.1"),
        "{doc}"
    );
    assert_eq!(hits.load(Ordering::Relaxed), before);
    auth.slow_down(Duration::ZERO);
    let (status, _) = get_as(&portico, "/proxy/shared/", &[("cookie", &alice)]).await?;
    assert_eq!(status, StatusCode::OK, "back once it answers in time");

    auth.stop().await?;
    for path in ["/proxy/shared/", "/proxy/alice-app/"] {
        let (status, doc) = get_as(&portico, path, &[("cookie", &alice)]).await?;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "down: {path} {doc}"
        );
    }
    let (status, _) = get_as(&portico, "/proxy/open/", &[]).await?;
    assert_eq!(
        status,
        StatusCode::OK,
        "an opted-out service does not need it"
    );
    let (status, _) = get_as(&portico, "/proxy", &[("cookie", &alice)]).await?;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "nor is the listing guessed"
    );
    let metrics = portico.metrics().await?;
    assert!(
        metrics.contains("portico_auth_total{result=\"error\"} 4"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn admin_routes_live_on_the_admin_listener_only() -> anyhow::Result<()> {
    let auth = AuthServer::start().await?;
    let (up, _) = echo().await?;
    let portico = start(&auth, up, "").await?;
    let (status, _) = get_as(&portico, "/metrics", &[]).await?;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no metrics on the public port"
    );
    let (status, _) = get_as(&portico, "/metrics", &[("referer", "/proxy/open/")]).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "not even routed to an app");
    for url in [portico.url("/healthz"), portico.admin_url("/healthz")?] {
        assert_eq!(
            portico.client.get(&url).send().await?.status(),
            StatusCode::OK
        );
    }
    let metrics = portico.metrics().await?;
    assert!(metrics.contains("portico_auth_total"), "{metrics}");

    let listing = portico.admin_listing().await?;
    let alice_app = &listing["services"][0];
    assert_eq!(alice_app["id"], "alice-app");
    assert_eq!(alice_app["upstream"], format!("http://{up}"));
    assert_eq!(alice_app["allow_users"], serde_json::json!(["alice"]));
    assert_eq!(listing["services"][2]["auth"], "none");
    let proxied = portico
        .client
        .get(portico.admin_url("/proxy/open/")?)
        .send()
        .await?;
    assert_eq!(
        proxied.status(),
        StatusCode::NOT_FOUND,
        "nothing is proxied there"
    );

    let (_, public) = portico.fetch("/proxy").await?;
    assert!(!public.contains(&up.to_string()), "{public}");
    assert!(
        !public.contains("upstream") && !public.contains("labels"),
        "{public}"
    );
    Ok(())
}

#[tokio::test]
async fn the_listing_shows_what_the_caller_may_open() -> anyhow::Result<()> {
    let auth = AuthServer::start().await?;
    let (up, _) = echo().await?;
    let portico = start(&auth, up, "").await?;
    let ids = |doc: &Value| -> Vec<String> {
        doc["services"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|service| service["id"].as_str().map(str::to_owned))
            .collect()
    };
    for (cookie, expected) in [
        (String::new(), vec!["open"]),
        (session("mallory"), vec!["open"]),
        (session("alice"), vec!["alice-app", "open", "shared"]),
        (session("bob"), vec!["bob-app", "open", "shared"]),
    ] {
        let (status, doc) = get_as(&portico, "/proxy", &[("cookie", &cookie)]).await?;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ids(&doc), expected, "{cookie:?}");
        let first = &doc["services"][0];
        let mut keys: Vec<&str> = first
            .as_object()
            .into_iter()
            .flat_map(|object| object.keys().map(String::as_str))
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, vec!["id", "status", "type", "url"]);
    }
    let html = portico
        .client
        .get(portico.url("/proxy"))
        .header("accept", "text/html")
        .send()
        .await?
        .text()
        .await?;
    assert!(
        html.contains(">Sign in</a>") && !html.contains("alice-app"),
        "{html}"
    );

    // An unknown id does not list the others either.
    let (status, doc) = get_as(&portico, "/proxy/nope/", &[]).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        !doc["message"]
            .as_str()
            .unwrap_or_default()
            .contains("alice-app"),
        "{doc}"
    );
    Ok(())
}

#[tokio::test]
async fn the_auth_service_hears_what_portico_computed() -> anyhow::Result<()> {
    let auth = AuthServer::start().await?;
    let (up, _) = echo().await?;
    let portico = start(&auth, up, "").await?;
    let response = portico
        .client
        .post(portico.url("/proxy/shared/form?x=1"))
        .header("cookie", session("alice"))
        .header("x-forwarded-uri", "/elsewhere")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-method", "GET")
        .header("accept", "text/html")
        .body("payload")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let question = auth
        .last_question()
        .ok_or_else(|| anyhow::anyhow!("not asked"))?;
    assert_eq!(question.method, "POST");
    assert_eq!(question.target, "/auth");
    let header = |name: &str| {
        question
            .headers
            .get_all(name)
            .iter()
            .map(|value| value.to_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(header("x-forwarded-uri"), vec!["/proxy/shared/form?x=1"]);
    assert_eq!(header("x-forwarded-method"), vec!["POST"]);
    assert_eq!(header("x-forwarded-host"), vec![portico.addr().to_string()]);
    assert_eq!(header("x-forwarded-proto"), vec!["http"]);
    assert_eq!(header("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(header("cookie"), vec![session("alice")]);
    assert!(header("accept").is_empty(), "only the configured headers");
    assert!(
        header("transfer-encoding").is_empty()
            && matches!(header("content-length").as_slice(), [] | [_]),
        "no body: {:?}",
        question.headers
    );
    assert!(header("content-length").iter().all(|length| length == "0"));
    Ok(())
}

#[tokio::test]
async fn positive_answers_are_cached_per_credential() -> anyhow::Result<()> {
    let auth = AuthServer::start().await?;
    let (up, _) = echo().await?;
    let portico = start(&auth, up, "cache_ms = 60000").await?;
    let alice = session("alice");
    let bob = session("bob");
    for (cookie, status, asked) in [
        (alice.as_str(), StatusCode::OK, 1),
        (alice.as_str(), StatusCode::OK, 1),
        (bob.as_str(), StatusCode::FORBIDDEN, 2),
        (bob.as_str(), StatusCode::FORBIDDEN, 2),
        ("", StatusCode::UNAUTHORIZED, 3),
        ("", StatusCode::UNAUTHORIZED, 4),
    ] {
        let (got, _) = get_as(&portico, "/proxy/alice-app/", &[("cookie", cookie)]).await?;
        assert_eq!(got, status, "{cookie:?}");
        assert_eq!(auth.asked(), asked, "{cookie:?}: answers asked so far");
    }
    let metrics = portico.metrics().await?;
    assert!(
        metrics.contains("portico_auth_cache_hits_total 2"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn access_follows_configuration_reloads() -> anyhow::Result<()> {
    let auth = AuthServer::start().await?;
    let (up, _) = echo().await?;
    let portico = start(&auth, up, "").await?;
    let bob = session("bob");
    let (status, _) = get_as(&portico, "/proxy/alice-app/", &[("cookie", &bob)]).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let shared_with_bob = services(up).replace(
        "allow_users = [\"alice\"]",
        "allow_users = [\"alice\", \"bob\"]",
    );
    portico.rewrite_config(&format!("{shared_with_bob}{}{ADMIN}", auth.config("")))?;
    portico
        .eventually("bob may open alice-app", || async {
            get_as(&portico, "/proxy/alice-app/", &[("cookie", &bob)])
                .await
                .is_ok_and(|(status, _)| status == StatusCode::OK)
        })
        .await?;

    // Turning authentication off while services name users is refused: they would be open.
    let rejected = portico.running.state.proxy().metrics().config_rejections();
    portico.rewrite_config(&format!("{shared_with_bob}{ADMIN}"))?;
    portico
        .eventually("the edit refused", || async {
            portico.running.state.proxy().metrics().config_rejections() > rejected
        })
        .await?;
    let (status, _) = get_as(&portico, "/proxy/alice-app/", &[]).await?;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the running configuration stays"
    );
    Ok(())
}

#[tokio::test]
async fn a_docker_style_user_list_without_authentication_opens_to_nobody() -> anyhow::Result<()> {
    // The file refuses allow_users without [auth]; a container's label cannot be refused, so
    // the service it makes is closed. The table is filled here as discovery would fill it.
    let (up, hits) = echo().await?;
    let portico = Portico::start(&service("plain", "generic", up)).await?;
    let table = portico.running.state.proxy().services();
    let mut labelled = table.get("plain").ok_or_else(|| anyhow::anyhow!("plain"))?;
    let service = Arc::make_mut(&mut labelled);
    service.id = "owned".to_owned();
    service.access = portico::registry::Access::Users(vec!["alice".to_owned()].into());
    table.replace_source(portico::registry::Source::Docker, vec![service.clone()]);
    let (status, _) = get_as(&portico, "/proxy/owned/", &[]).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, doc) = get_as(&portico, "/proxy", &[]).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["services"].as_array().map(Vec::len), Some(1), "{doc}");
    assert_eq!(hits.load(Ordering::Relaxed), 0);
    let (status, _) = get_as(&portico, "/proxy/plain/", &[]).await?;
    assert_eq!(status, StatusCode::OK);
    Ok(())
}
