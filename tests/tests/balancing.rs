//! Services with several upstreams (replicas): balancing, session affinity, outlier ejection,
//! readiness probes and retries on another replica, against real upstream servers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::routing::get;
use portico_tests::proxy::{ADMIN, Answer, Portico, RawUpstream, closed_port, upstream};

/// An upstream that answers its name at every path, with the `Cookie` header it received
/// after a `|`.
async fn named(name: &'static str) -> anyhow::Result<SocketAddr> {
    upstream(
        axum::Router::new().fallback(get(move |headers: axum::http::HeaderMap| async move {
            let cookie = headers
                .get("cookie")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            format!("{name}|{cookie}")
        })),
    )
    .await
}

fn service(id: &str, upstreams: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = upstreams
        .iter()
        .map(|a| format!("\"http://{a}\""))
        .collect();
    format!(
        "\n[[services]]\nid = \"{id}\"\nupstreams = [{}]\n{extra}\n",
        list.join(", ")
    )
}

async fn names(portico: &Portico, path: &str, n: usize) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let (status, body) = portico.fetch(path).await?;
        assert_eq!(status, 200, "{body}");
        let name = body.split('|').next().unwrap_or_default().to_owned();
        *seen.entry(name).or_default() += 1;
    }
    Ok(seen)
}

#[tokio::test]
async fn every_policy_spreads_or_keeps_as_it_says() -> anyhow::Result<()> {
    let a = named("a").await?;
    let b = named("b").await?;
    let body = [
        service("rr", &[a, b], "balance = \"round-robin\""),
        service("lr", &[a, b], ""),
        service("first", &[a, b], "balance = \"first\""),
    ]
    .concat();
    let portico = Portico::start(&body).await?;
    let rr = names(&portico, "/proxy/rr/", 10).await?;
    assert_eq!(rr.get("a"), Some(&5), "{rr:?}");
    assert_eq!(rr.get("b"), Some(&5), "{rr:?}");
    let lr = names(&portico, "/proxy/lr/", 10).await?;
    assert!(
        lr.get("a") >= Some(&3) && lr.get("b") >= Some(&3),
        "least-requests shares ties: {lr:?}"
    );
    let first = names(&portico, "/proxy/first/", 6).await?;
    assert_eq!(first.get("a"), Some(&6), "{first:?}");
    Ok(())
}

#[tokio::test]
async fn least_requests_avoids_the_busy_replica() -> anyhow::Result<()> {
    let (release, released) = tokio::sync::watch::channel(false);
    let slow = upstream(axum::Router::new().fallback(get(move || {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|go| *go).await;
            "slow"
        }
    })))
    .await?;
    let fast = named("fast").await?;
    let portico = Portico::start(&service("lr", &[slow, fast], "")).await?;
    // Hold a request at the slow replica (it lands there on a tie, within a few tries); then
    // every other request must go to the fast one, which has none in flight.
    let mut held = None;
    for _ in 0..20 {
        let url = portico.url("/proxy/lr/");
        let client = portico.client.clone();
        let request = tokio::spawn(async move { client.get(url).send().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !request.is_finished() {
            held = Some(request);
            break;
        }
    }
    let held = held.expect("a request reached the slow replica");
    let seen = names(&portico, "/proxy/lr/", 8).await?;
    assert_eq!(seen.get("fast"), Some(&8), "{seen:?}");
    release.send_replace(true);
    let response = held.await??;
    assert_eq!(response.text().await?, "slow");
    Ok(())
}

#[tokio::test]
async fn a_sticky_session_stays_on_its_replica_and_moves_when_it_is_gone() -> anyhow::Result<()> {
    let a = named("a").await?;
    let b = named("b").await?;
    let portico = Portico::start(&service(
        "app",
        &[a, b],
        "balance = \"round-robin\"\nsticky = true",
    ))
    .await?;
    let first = portico
        .client
        .get(portico.url("/proxy/app/"))
        .send()
        .await?;
    let cookie = first
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("portico_replica_app="))
        .expect("the affinity cookie is set")
        .to_owned();
    assert!(
        cookie.contains("Path=/") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap_or_default().to_owned();
    let pinned_to = first
        .text()
        .await?
        .split('|')
        .next()
        .unwrap_or_default()
        .to_owned();
    for _ in 0..6 {
        let response = portico
            .client
            .get(portico.url("/proxy/app/page"))
            .header("cookie", format!("theme=dark; {pair}"))
            .send()
            .await?;
        assert!(
            response.headers().get("set-cookie").is_none(),
            "a pinned request needs no new cookie"
        );
        let body = response.text().await?;
        let (name, upstream_cookie) = body.split_once('|').unwrap_or_default();
        assert_eq!(name, pinned_to);
        assert_eq!(
            upstream_cookie, "theme=dark",
            "the affinity cookie stays with Portico"
        );
    }
    // A session pinned to a replica that is no longer declared moves and is told so.
    let remaining = if pinned_to == "a" { b } else { a };
    portico.rewrite_config(&service("app", &[remaining], "sticky = true"))?;
    let request = || {
        portico
            .client
            .get(portico.url("/proxy/app/"))
            .header("cookie", pair.clone())
            .send()
    };
    portico
        .eventually("the reload to drop the replica", || async {
            match request().await {
                Ok(response) => response
                    .text()
                    .await
                    .is_ok_and(|body| !body.starts_with(&pinned_to)),
                Err(_) => false,
            }
        })
        .await?;
    let response = request().await?;
    let renewed = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        renewed.starts_with("portico_replica_app=") && !renewed.starts_with(&pair),
        "the cookie names the new replica: {renewed}"
    );
    Ok(())
}

#[tokio::test]
async fn a_dead_replica_is_ejected_and_every_request_still_succeeds() -> anyhow::Result<()> {
    let live = named("live").await?;
    let dead = closed_port().await?;
    let body = format!(
        "{}{ADMIN}\n[balance]\neject_after_failures = 2\neject_ms = 60000\n",
        service("pair", &[dead, live], "balance = \"round-robin\"")
    );
    let portico = Portico::start(&body).await?;
    let seen = names(&portico, "/proxy/pair/", 20).await?;
    assert_eq!(seen.get("live"), Some(&20), "{seen:?}");
    let metrics = portico.metrics().await?;
    let refused = metrics
        .lines()
        .find(|line| {
            line.starts_with("portico_upstream_errors_total")
                && line.contains("service=\"pair\"")
                && line.contains("refused")
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_default();
    assert!(
        (2.0..=3.0).contains(&refused),
        "ejected after two failures, not tried again: {refused} refusals\n{metrics}"
    );
    let listing = portico.admin_listing().await?;
    let replicas = &listing["services"][0]["replicas"];
    assert_eq!(replicas[0]["ejected"], true, "{listing}");
    assert_eq!(replicas[1]["ejected"], false, "{listing}");
    Ok(())
}

#[tokio::test]
async fn a_get_cut_by_one_replica_is_answered_by_another() -> anyhow::Result<()> {
    let cutting = RawUpstream::start(Answer::Close).await?;
    let good = named("good").await?;
    let portico = Portico::start(&service(
        "cut",
        &[cutting.addr, good],
        "balance = \"first\"",
    ))
    .await?;
    let (status, body) = portico.fetch("/proxy/cut/x").await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("good"), "{body}");
    assert_eq!(
        cutting.targets(),
        vec!["/x".to_owned()],
        "the cut replica saw it once"
    );
    // A POST that reached a replica is not sent to a second one.
    let response = portico
        .client
        .post(portico.url("/proxy/cut/form"))
        .body("a=1")
        .send()
        .await?;
    assert_eq!(response.status(), 502);
    Ok(())
}

#[tokio::test]
async fn a_replica_takes_traffic_once_its_health_path_answers() -> anyhow::Result<()> {
    let ready = Arc::new(AtomicBool::new(false));
    let app = {
        let ready = Arc::clone(&ready);
        upstream(
            axum::Router::new()
                .route(
                    "/healthz",
                    get(move || {
                        let ok = ready.load(Ordering::SeqCst);
                        async move {
                            if ok {
                                axum::http::StatusCode::NO_CONTENT
                            } else {
                                axum::http::StatusCode::SERVICE_UNAVAILABLE
                            }
                        }
                    }),
                )
                .fallback(get(|| async { "app" })),
        )
        .await?
    };
    let portico = Portico::start(&format!(
        "{}{ADMIN}",
        service("slow-start", &[app], "health_path = \"/healthz\"")
    ))
    .await?;
    let listing = portico.admin_listing().await?;
    assert_eq!(
        listing["services"][0]["availability"], "starting",
        "{listing}"
    );
    let request = {
        let url = portico.url("/proxy/slow-start/");
        let client = portico.client.clone();
        tokio::spawn(async move { client.get(url).send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !request.is_finished(),
        "held while the health path answers 503"
    );
    ready.store(true, Ordering::SeqCst);
    let response = tokio::time::timeout(Duration::from_secs(10), request).await???;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await?, "app");
    Ok(())
}
