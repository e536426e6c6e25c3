//! A misbehaving plugin governed as a whole, through a real Portico with the real hostile
//! fixture: failures quarantine it with a backoff and probes bring it back, it cannot take
//! more than its share of calls, and the memory its failed instances used goes back.

use std::path::Path as FilePath;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::Path;
use portico::plugin::{Hook, Plugin, PluginError, PluginState};
use portico_tests::proxy::{ADMIN, Portico, proc_status_kib, service, upstream};

const HOSTILE: &str = env!("PORTICO_HOSTILE_WASM");

/// A Portico with service `c` of type `hostile` in front of an upstream that answers `ok`
/// (and, under `/x-hostile/{kind}`, an HTML page with `x-hostile: {kind}`), and `plugins`
/// settings.
async fn start(plugins: &str) -> anyhow::Result<Portico> {
    let hostile_page = |Path(kind): Path<String>| async move {
        (
            [
                ("x-hostile", kind),
                ("content-type", "text/html".to_owned()),
            ],
            "<p>original</p>",
        )
    };
    let up = upstream(
        axum::Router::new()
            .route("/x-hostile/{kind}", axum::routing::get(hostile_page))
            .fallback(|| async { "ok" }),
    )
    .await?;
    let body = format!(
        "{}{ADMIN}\n[plugins]\n{plugins}\n",
        service("c", "hostile", up)
    );
    Portico::start_with_plugins(&body, &[FilePath::new(HOSTILE)]).await
}

fn hostile(portico: &Portico) -> Arc<Plugin> {
    portico
        .running
        .state
        .proxy()
        .plugins()
        .get("hostile")
        .expect("the hostile plugin is loaded")
}

/// Fetches `path` and checks that it was served (by the plugin or the generic behaviour).
async fn served(portico: &Portico, path: &str) -> anyhow::Result<()> {
    let (status, body) = portico.fetch(path).await?;
    anyhow::ensure!(status == 200 && body == "ok", "{path}: {status} {body}");
    Ok(())
}

/// Requests that succeed until the quarantine's probe brings the plugin back.
async fn until_healthy(portico: &Portico, plugin: &Plugin) -> anyhow::Result<()> {
    for _ in 0..200 {
        served(portico, "/proxy/c/fine").await?;
        if plugin.state() == PluginState::Healthy {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("the plugin stayed {:?}", plugin.state())
}

#[tokio::test]
async fn failures_quarantine_a_plugin_and_probes_bring_it_back() -> anyhow::Result<()> {
    let portico = start(
        // A deadline far above what a trap needs, even in a debug build on a busy machine:
        // every failure here is a trap.
        "quarantine_failures = 3\nquarantine_window_ms = 60000\nquarantine_backoff_ms = 300\nquarantine_max_ms = 5000\ncall_timeout_ms = 5000",
    )
    .await?;
    let plugin = hostile(&portico);

    // Successes in between do not reset the count: three traps in the window quarantine it.
    for _ in 0..3 {
        served(&portico, "/proxy/c/trap").await?;
        served(&portico, "/proxy/c/fine").await?;
    }
    assert_eq!(plugin.state(), PluginState::Quarantined);
    let metrics = portico.metrics().await?;
    assert!(
        metrics.contains("portico_plugin_state{plugin=\"hostile\",state=\"quarantined\"} 1"),
        "{metrics}"
    );
    let listing = portico.admin_listing().await?;
    assert_eq!(listing["services"][0]["plugin_state"], "quarantined");

    // Quarantined, the plugin is not called: its requests get the generic behaviour.
    let failures = plugin.stats().failures.load(Ordering::Relaxed);
    served(&portico, "/proxy/c/trap").await?;
    assert_eq!(plugin.stats().failures.load(Ordering::Relaxed), failures);
    assert!(plugin.stats().quarantined.load(Ordering::Relaxed) >= 1);

    // After the backoff, a real request probes it and brings it back.
    until_healthy(&portico, &plugin).await?;
    assert_eq!(plugin.quarantines(), 1);

    // Failing again soon after, it is quarantined again; a probe that fails starts another
    // quarantine at once.
    for _ in 0..3 {
        served(&portico, "/proxy/c/trap").await?;
    }
    assert_eq!(plugin.state(), PluginState::Quarantined);
    for _ in 0..200 {
        if plugin.quarantines() == 3 {
            break;
        }
        served(&portico, "/proxy/c/trap").await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        plugin.quarantines(),
        3,
        "the failed probe quarantined it again"
    );
    assert_eq!(plugin.state(), PluginState::Quarantined);
    let metrics = portico.metrics().await?;
    assert!(
        metrics.contains("portico_plugin_quarantines_total{plugin=\"hostile\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "portico_plugin_failures_total{plugin=\"hostile\",hook=\"on-request\",kind=\"trap\"} 7"
        ),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn a_plugin_past_its_share_of_calls_is_answered_by_the_fallback() -> anyhow::Result<()> {
    let portico = Arc::new(
        start("max_calls_in_flight = 1\ncall_timeout_ms = 600\nquarantine_failures = 100").await?,
    );
    let plugin = hostile(&portico);
    let spinning = tokio::spawn({
        let portico = Arc::clone(&portico);
        async move { served(&portico, "/proxy/c/loop").await }
    });
    // While the one call allowed spins, the next request does not wait for it.
    tokio::time::sleep(Duration::from_millis(150)).await;
    served(&portico, "/proxy/c/fine").await?;
    assert!(!spinning.is_finished(), "the spinning call ended early");
    assert!(plugin.stats().busy.load(Ordering::Relaxed) >= 1);
    spinning.await??;
    let metrics = portico.metrics().await?;
    assert!(
        !metrics.contains("portico_plugin_rejected_total{plugin=\"hostile\",reason=\"busy\"} 0"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn memory_exhausting_calls_give_their_memory_back() -> anyhow::Result<()> {
    const LIMIT_MIB: u64 = 64;
    let portico = start(&format!(
        "memory_limit_mb = {LIMIT_MIB}\ncall_timeout_ms = 5000\nquarantine_failures = 1000"
    ))
    .await?;
    let plugin = hostile(&portico);
    served(&portico, "/proxy/c/fine").await?;
    let baseline = proc_status_kib("VmRSS")?;
    for _ in 0..40 {
        served(&portico, "/proxy/c/grow").await?;
    }
    let after = proc_status_kib("VmRSS")?;
    let memory = plugin.stats().hooks[0].failures[2].load(Ordering::Relaxed);
    assert_eq!(memory, 40, "every call ran out of memory");
    let grown_mib = after.saturating_sub(baseline) / 1024;
    assert!(
        grown_mib <= 2 * LIMIT_MIB,
        "resident memory grew by {grown_mib} MiB after 40 calls that each filled {LIMIT_MIB} MiB"
    );
    Ok(())
}

/// Failures of `plugin`'s `hook` of `kind` (`trap`, `refused`...).
fn failures(plugin: &Plugin, hook: Hook, kind: &str) -> u64 {
    let index = PluginError::FAILURE_KINDS
        .iter()
        .position(|known| *known == kind)
        .expect("a failure kind");
    plugin.stats().hooks[hook as usize].failures[index].load(Ordering::Relaxed)
}

#[tokio::test]
async fn answers_past_their_bounds_are_refused_and_counted() -> anyhow::Result<()> {
    // Returning a 16 MiB body or 200 KiB of headers takes a debug build, throttled past its
    // first millisecond, longer than the default deadlines: these leave room, so that the
    // answers are refused for their size, not cut off for their time.
    let portico =
        start("quarantine_failures = 3\ncall_timeout_ms = 10000\nrewrite_timeout_ms = 10000")
            .await?;
    let plugin = hostile(&portico);

    // A rewritten body over the plugin's 1 MiB rewrite limit: the original is sent.
    let (status, body) = portico.fetch("/proxy/c/x-hostile/bloat").await?;
    assert_eq!((status.as_u16(), body.as_str()), (200, "<p>original</p>"));
    assert_eq!(failures(&plugin, Hook::RewriteBody, "refused"), 1);

    // About 200 KiB of added headers: refused, none of them reaches the client.
    let response = portico
        .client
        .get(portico.url("/proxy/c/x-hostile/headers"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-hostile-0").is_none());
    assert_eq!(failures(&plugin, Hook::OnResponse, "refused"), 1);
    assert_eq!(plugin.state(), PluginState::Healthy);

    // A hook that fails while another succeeds on every request still adds up: the third
    // failure in the window quarantines the plugin.
    served(&portico, "/proxy/c/fine").await?;
    let (status, _) = portico.fetch("/proxy/c/x-hostile/trap").await?;
    assert_eq!(status, 200);
    assert_eq!(failures(&plugin, Hook::OnResponse, "trap"), 1);
    assert_eq!(plugin.state(), PluginState::Quarantined);
    Ok(())
}

#[tokio::test]
async fn a_fail_closed_service_of_a_quarantined_plugin_answers_503() -> anyhow::Result<()> {
    let up = upstream(axum::Router::new().fallback(|| async { "ok" })).await?;
    let body = format!(
        "{}fail_closed = true\n{ADMIN}\n[plugins]\nquarantine_failures = 2\nquarantine_backoff_ms = 60000\ncall_timeout_ms = 5000\n",
        service("closed", "hostile", up)
    );
    let portico = Portico::start_with_plugins(&body, &[FilePath::new(HOSTILE)]).await?;
    // The plugin's failures are its answers: 502, as before.
    for _ in 0..2 {
        let (status, _) = portico.fetch("/proxy/closed/trap").await?;
        assert_eq!(status, 502);
    }
    assert_eq!(hostile(&portico).state(), PluginState::Quarantined);
    // Quarantined, it is not asked at all: the service is unavailable for now, not broken.
    let (status, body) = portico.fetch("/proxy/closed/fine").await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("its plugin cannot take requests"), "{body}");
    Ok(())
}
