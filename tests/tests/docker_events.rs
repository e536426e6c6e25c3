//! Live updates from Docker events against this machine's Docker Engine: start, stop, rename,
//! network disconnect and connect, removal; requests held while a health check is starting;
//! reconnection and resynchronisation after the engine connection breaks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use portico::registry::{Availability, ServiceTable};
use portico_tests::docker::{Run, app_image, available, docker, socket_path, wait_for};
use portico_tests::proxy::Portico;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

fn table(portico: &Portico) -> Arc<ServiceTable> {
    Arc::clone(portico.running.state.proxy().services())
}

/// Runs `change` (a docker command), then waits until `holds` is true of the table; prints how
/// long that took from just before the command.
async fn after(
    what: &str,
    table: &ServiceTable,
    change: impl FnOnce() -> anyhow::Result<String>,
    holds: impl Fn(&ServiceTable) -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    change()?;
    let command_done = started.elapsed();
    wait_for(what, LIMIT, || async { holds(table).then_some(()) }).await?;
    let seen = started.elapsed();
    eprintln!(
        "event latency: {what}: visible {} ms after the docker command started ({} ms after it returned)",
        seen.as_millis(),
        seen.saturating_sub(command_done).as_millis()
    );
    Ok(seen)
}

fn availability(table: &ServiceTable, x: &str) -> Option<Availability> {
    table.get(x).map(|s| s.availability.clone())
}

#[tokio::test]
async fn events_keep_the_table_current() -> anyhow::Result<()> {
    if !available("events_keep_the_table_current") {
        return Ok(());
    }
    let run = Run::new();
    let image = app_image()?;
    let net = run.network("net")?;
    let portico = Portico::start(&run.docker_config()).await?;
    let table = table(&portico);
    // Let discovery connect before the first event, so the start below is seen as an event.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let name = run.name("live");
    after(
        "started container listed",
        &table,
        || {
            run.run(&[
                "--name",
                &name,
                "--network",
                &net,
                "-e",
                "APP=live",
                "--label",
                "portico.enable=true",
                image,
            ])
        },
        |t| availability(t, &name) == Some(Availability::Ready),
    )
    .await?;
    let (status, text) = wait_for("the app answering", LIMIT, || async {
        portico
            .fetch(&format!("/proxy/{name}/"))
            .await
            .ok()
            .filter(|(s, _)| s.is_success())
    })
    .await?;
    assert_eq!((status, text.trim()), (StatusCode::OK, "live"));

    after(
        "stopped container unavailable",
        &table,
        || docker(["stop", "-t", "1", &name]),
        |t| matches!(availability(t, &name), Some(Availability::Unavailable(_))),
    )
    .await?;
    let response = portico
        .client
        .get(portico.url(&format!("/proxy/{name}/")))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let doc: Value = serde_json::from_slice(&response.bytes().await?)?;
    let message = doc["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not running") && message.contains("exited"),
        "a clear message: {message}"
    );

    after(
        "restarted container ready",
        &table,
        || docker(["start", &name]),
        |t| availability(t, &name) == Some(Availability::Ready),
    )
    .await?;

    let renamed = run.name("renamed");
    after(
        "renamed container under its new name",
        &table,
        || docker(["rename", &name, &renamed]),
        |t| t.get(&renamed).is_some() && t.get(&name).is_none(),
    )
    .await?;
    let (status, text) = wait_for("the renamed app answering", LIMIT, || async {
        portico
            .fetch(&format!("/proxy/{renamed}/"))
            .await
            .ok()
            .filter(|(s, _)| s.is_success())
    })
    .await?;
    assert_eq!((status, text.trim()), (StatusCode::OK, "live"));
    assert_eq!(
        portico.fetch(&format!("/proxy/{name}/")).await?.0,
        StatusCode::NOT_FOUND
    );

    after(
        "disconnected container has no address",
        &table,
        || docker(["network", "disconnect", &net, &renamed]),
        |t| matches!(availability(t, &renamed), Some(Availability::Unavailable(why)) if why.contains("no address")),
    )
    .await?;
    after(
        "reconnected container ready",
        &table,
        || docker(["network", "connect", &net, &renamed]),
        |t| availability(t, &renamed) == Some(Availability::Ready),
    )
    .await?;
    let ip = run.ip(&renamed, &net)?;
    assert_eq!(
        table.get(&renamed).map(|s| s.primary_upstream()),
        Some(format!("http://{ip}:8080"))
    );

    after(
        "removed container gone",
        &table,
        || docker(["rm", "-f", &renamed]),
        |t| t.get(&renamed).is_none(),
    )
    .await?;
    assert_eq!(
        portico.fetch(&format!("/proxy/{renamed}/")).await?.0,
        StatusCode::NOT_FOUND
    );
    portico.running.shutdown().await?;
    Ok(())
}

/// A container with a health check that passes once `/tmp/www/ready` exists. The start period
/// keeps it `starting` (not `unhealthy`) until then.
fn run_unready(run: &Run, name: &str) -> anyhow::Result<String> {
    run.run(&[
        "--name",
        name,
        "-e",
        "APP=healthy",
        "--label",
        "portico.enable=true",
        "--health-cmd",
        "test -f /tmp/www/ready",
        "--health-interval",
        "200ms",
        "--health-start-period",
        "60s",
        app_image()?,
    ])
}

#[tokio::test]
async fn requests_wait_for_a_starting_container() -> anyhow::Result<()> {
    if !available("requests_wait_for_a_starting_container") {
        return Ok(());
    }
    let run = Run::new();
    let name = run.name("slow");
    run_unready(&run, &name)?;
    let portico = Portico::start(&run.docker_config()).await?;
    let table = table(&portico);
    wait_for("the container listed as starting", LIMIT, || async {
        (availability(&table, &name) == Some(Availability::Starting)).then_some(())
    })
    .await?;
    let request = {
        let client = portico.client.clone();
        let url = portico.url(&format!("/proxy/{name}/"));
        tokio::spawn(async move {
            let response = client.get(url).send().await?;
            anyhow::Ok((response.status(), response.text().await?))
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !request.is_finished(),
        "the request is held, not refused, while the health check is starting"
    );
    let released = Instant::now();
    docker(["exec", &name, "touch", "/tmp/www/ready"])?;
    let (status, text) = tokio::time::timeout(LIMIT, request).await???;
    assert_eq!((status, text.trim()), (StatusCode::OK, "healthy"));
    eprintln!(
        "event latency: held request answered {} ms after the app became ready (health interval 200 ms)",
        released.elapsed().as_millis()
    );
    portico.running.shutdown().await?;

    // A bounded wait: with a short hold, a container that never gets healthy is a 503.
    let stuck = run.name("stuck");
    run_unready(&run, &stuck)?;
    let portico = Portico::start(&run.docker_config_with("starting_wait_ms = 300")).await?;
    let table = self::table(&portico);
    wait_for("the stuck container listed as starting", LIMIT, || async {
        (availability(&table, &stuck) == Some(Availability::Starting)).then_some(())
    })
    .await?;
    let (status, text) = portico.fetch(&format!("/proxy/{stuck}/")).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(text.contains("health check"), "{text}");
    portico.running.shutdown().await?;
    Ok(())
}

/// A TCP endpoint in front of the engine's Unix socket that the test can cut, as a daemon
/// restart or a broken network would.
struct Relay {
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(port: u16) -> anyhow::Result<(Self, u16)> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let socket = socket_path();
        let task = tokio::spawn(async move {
            // Connection tasks live in this set: aborting the relay drops them all.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let socket = socket.clone();
                connections.spawn(async move {
                    if let Ok(mut engine) = tokio::net::UnixStream::connect(&socket).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
            }
        });
        Ok((Self { task }, port))
    }

    fn cut(self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn discovery_reconnects_and_resyncs() -> anyhow::Result<()> {
    if !available("discovery_reconnects_and_resyncs") {
        return Ok(());
    }
    let run = Run::new();
    let image = app_image()?;
    let (relay, port) = Relay::start(0).await?;
    let first = run.name("before");
    run.run(&["--name", &first, "--label", "portico.enable=true", image])?;
    let extra = format!(
        "endpoints = [\"unix:///nonexistent/docker.sock\", \"tcp://127.0.0.1:{port}\"]\nreconnect_max_backoff_ms = 500"
    );
    let portico = Portico::start(&run.docker_config_with(&extra)).await?;
    let table = table(&portico);
    wait_for("discovery through the second endpoint", LIMIT, || async {
        table.get(&first).map(|_| ())
    })
    .await?;

    relay.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // While Portico cannot see the engine: one container goes, another comes.
    docker(["rm", "-f", &first])?;
    let second = run.name("during");
    run.run(&["--name", &second, "--label", "portico.enable=true", image])?;
    assert!(
        table.get(&first).is_some(),
        "kept as last seen during the outage"
    );

    let (relay, _) = Relay::start(port).await?;
    let started = Instant::now();
    wait_for("resynchronised after reconnecting", LIMIT, || async {
        (table.get(&second).is_some() && table.get(&first).is_none()).then_some(())
    })
    .await?;
    eprintln!(
        "event latency: resynchronised {} ms after the engine came back (backoff at most 500 ms)",
        started.elapsed().as_millis()
    );
    relay.cut();
    portico.running.shutdown().await?;
    Ok(())
}
