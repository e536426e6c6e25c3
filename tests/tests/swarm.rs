//! Swarm services on this machine's engine as a single-node swarm (made for the tests when the
//! engine is in none, and left again by the last test): replicas found, balanced and pinned,
//! scaled to zero and back, updated under load without a failed request, and Portico itself
//! as a Swarm service reaching its apps over an overlay network.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use portico_tests::docker::{docker, portico_image, socket_path, wait_for};
use portico_tests::proxy::{ADMIN, Portico};
use portico_tests::swarm::{Swarm, replica_image};

/// How long a swarm operation (tasks starting, an update) may take here.
const LIMIT: Duration = Duration::from_secs(120);

/// The labels of a served service, as `docker service create` options.
fn portico_labels(extra: &[&str]) -> Vec<String> {
    let mut labels = vec!["portico.enable=true", "portico.port=8080"];
    labels.extend_from_slice(extra);
    labels
        .iter()
        .flat_map(|label| ["--label".to_owned(), (*label).to_owned()])
        .collect()
}

/// The replica that answered (the `$HOSTNAME` part of the replica image's page).
fn replica_of(body: &str) -> String {
    body.split_whitespace()
        .last()
        .unwrap_or_default()
        .to_owned()
}

/// Waits until `/proxy/{id}/` answers `status`; returns the body.
async fn wait_status(portico: &Portico, id: &str, status: u16) -> anyhow::Result<String> {
    let path = format!("/proxy/{id}/");
    wait_for(&format!("{path} to answer {status}"), LIMIT, || async {
        match portico.fetch(&path).await {
            Ok((got, body)) if got.as_u16() == status => Some(body),
            _ => None,
        }
    })
    .await
}

/// The `name=value` of the replica cookie `response` sets.
fn replica_cookie(response: &reqwest::Response) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("portico_replica_"))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .expect("the replica cookie")
}

/// Waits until `url` answers `status`.
async fn wait_status_at(client: &reqwest::Client, url: &str, status: u16) -> anyhow::Result<()> {
    wait_for(&format!("{url} to answer {status}"), LIMIT, || async {
        let response = client.get(url).send().await.ok()?;
        (response.status().as_u16() == status).then_some(())
    })
    .await
}

/// Replicas seen in `n` requests.
async fn replicas_seen(portico: &Portico, id: &str, n: usize) -> anyhow::Result<BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let (status, body) = portico.fetch(&format!("/proxy/{id}/")).await?;
        anyhow::ensure!(status == 200, "{status}: {body}");
        seen.insert(replica_of(&body));
    }
    Ok(seen)
}

#[tokio::test]
async fn replicas_are_served_balanced_pinned_and_scaled() -> anyhow::Result<()> {
    let Some(swarm) = Swarm::join("replicas_are_served_balanced_pinned_and_scaled")? else {
        return Ok(());
    };
    let image = replica_image()?;
    // A swarm-scoped bridge: the host (where this Portico runs) reaches its tasks' addresses.
    let network = swarm.network("apps", "bridge")?;
    let mut args: Vec<String> = vec!["--replicas".into(), "2".into(), "--network".into(), network];
    args.extend(portico_labels(&[
        "portico.balance=round-robin",
        "portico.sticky=true",
    ]));
    args.push(image.to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let name = swarm.service("web", &args)?;
    let portico = Portico::start(&format!("{}{ADMIN}", swarm.run().docker_config())).await?;
    swarm.wait_running(&name, 2, LIMIT).await?;
    wait_status(&portico, &name, 200).await?;
    let listing = portico.admin_listing().await?;
    let service = &listing["services"][0];
    assert_eq!(service["source"], "swarm", "{listing}");
    wait_for("both replicas in the table", LIMIT, || async {
        let listing = portico.admin_listing().await.ok()?;
        (listing["services"][0]["replicas"].as_array()?.len() == 2).then_some(())
    })
    .await?;

    // Both replicas take requests (round-robin); then a session stays on its replica.
    let seen = replicas_seen(&portico, &name, 10).await?;
    assert_eq!(seen.len(), 2, "both replicas answer: {seen:?}");
    let first = portico
        .client
        .get(portico.url(&format!("/proxy/{name}/")))
        .send()
        .await?;
    let cookie = replica_cookie(&first);
    let pinned = replica_of(&first.text().await?);
    for _ in 0..8 {
        let body = portico
            .client
            .get(portico.url(&format!("/proxy/{name}/")))
            .header("cookie", &cookie)
            .send()
            .await?
            .text()
            .await?;
        assert_eq!(replica_of(&body), pinned, "the cookie pins the session");
    }

    // No running task: 503 with a reason; two again: served again.
    swarm.scale(&name, 0)?;
    let body = wait_status(&portico, &name, 503).await?;
    assert!(body.contains("has no running task"), "{body}");
    swarm.scale(&name, 2)?;
    wait_for("a running task", LIMIT, || async {
        swarm
            .tasks(&name)
            .ok()?
            .iter()
            .any(|task| task.running())
            .then_some(())
    })
    .await?;
    let running = Instant::now();
    wait_status(&portico, &name, 200).await?;
    eprintln!(
        "scaled from 0 to 2: served {:?} after the first task was seen running",
        running.elapsed()
    );
    swarm.wait_running(&name, 2, LIMIT).await?;
    wait_for("both new replicas to answer", LIMIT, || async {
        (replicas_seen(&portico, &name, 10).await.ok()?.len() == 2).then_some(())
    })
    .await?;

    // A removed service is gone.
    docker(["service", "rm", &name])?;
    wait_status(&portico, &name, 404).await?;
    Ok(())
}

/// Clients requesting one service in loops until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` loops requesting `/proxy/{id}/`.
    fn start(portico: &Portico, id: &str, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let clients = (0..clients)
            .map(|_| {
                let client = portico.client.clone();
                let url = portico.url(&format!("/proxy/{id}/"));
                let (ok, failures, stop) =
                    (Arc::clone(&ok), Arc::clone(&failures), Arc::clone(&stop));
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let answer = match client.get(&url).send().await {
                            Ok(response) if response.status() == 200 => {
                                response.text().await.map_err(|err| err.to_string())
                            }
                            Ok(response) => Err(format!(
                                "{}: {}",
                                response.status(),
                                response.text().await.unwrap_or_default()
                            )),
                            Err(err) => Err(err.to_string()),
                        };
                        match answer {
                            Ok(_) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(failure) => failures
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push(failure),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failures,
            clients,
        }
    }

    /// Stops the clients; the answered count and the failures.
    async fn finish(self) -> anyhow::Result<(usize, Vec<String>)> {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await?;
        }
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Ok((self.ok.load(Ordering::Relaxed), failures))
    }
}

/// Waits until the service's update has completed and only `replicas` tasks are left running.
async fn wait_updated(swarm: &Swarm, name: &str, replicas: usize) -> anyhow::Result<()> {
    wait_for(
        &format!("the update of {name} to complete"),
        LIMIT,
        || async {
            let state = docker([
                "service",
                "inspect",
                "--format",
                "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
                name,
            ])
            .ok()?;
            (state == "completed").then_some(())
        },
    )
    .await?;
    // The old tasks' containers stop a little after the update says it is complete.
    wait_for("the replaced tasks to stop", LIMIT, || async {
        let tasks = swarm.tasks(name).ok()?;
        let live = tasks
            .iter()
            .filter(|task| task.state == "running" || task.state == "starting")
            .count();
        (live == replicas).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn rolling_updates_under_load_fail_no_request() -> anyhow::Result<()> {
    let Some(swarm) = Swarm::join("rolling_updates_under_load_fail_no_request")? else {
        return Ok(());
    };
    let image = replica_image()?;
    let network = swarm.network("apps", "bridge")?;
    let mut args: Vec<String> = vec![
        "--replicas".into(),
        "2".into(),
        "--network".into(),
        network,
        "--health-cmd".into(),
        "wget -q -O /dev/null http://127.0.0.1:8080/".into(),
        "--health-interval".into(),
        "1s".into(),
        "--health-start-period".into(),
        "1s".into(),
        "--update-parallelism".into(),
        "1".into(),
        "--update-delay".into(),
        "0s".into(),
        "--stop-grace-period".into(),
        "5s".into(),
    ];
    args.extend(portico_labels(&[]));
    args.push(image.to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let name = swarm.service("rolling", &args)?;
    let portico = Portico::start(&swarm.run().docker_config()).await?;
    swarm.wait_running(&name, 2, LIMIT).await?;
    wait_status(&portico, &name, 200).await?;
    for order in ["start-first", "stop-first"] {
        let before: BTreeSet<String> = swarm
            .tasks(&name)?
            .into_iter()
            .filter(|t| t.running())
            .map(|t| t.id)
            .collect();
        let load = Load::start(&portico, &name, 4);
        tokio::time::sleep(Duration::from_millis(500)).await;
        swarm.update(&name, &["--force", "--update-order", order])?;
        wait_updated(&swarm, &name, 2).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (ok, failures) = load.finish().await?;
        let after: BTreeSet<String> = swarm
            .tasks(&name)?
            .into_iter()
            .filter(|t| t.running())
            .map(|t| t.id)
            .collect();
        assert!(
            before.is_disjoint(&after),
            "{order}: every task was replaced"
        );
        eprintln!(
            "{order} update: {ok} requests answered, {} failed",
            failures.len()
        );
        assert!(ok > 20, "{order}: requests kept flowing ({ok})");
        assert!(
            failures.is_empty(),
            "{order}: {} failed: {failures:?}",
            failures.len()
        );
    }
    Ok(())
}

#[tokio::test]
async fn portico_as_a_swarm_service_reaches_apps_over_an_overlay() -> anyhow::Result<()> {
    let Some(swarm) = Swarm::join("portico_as_a_swarm_service_reaches_apps_over_an_overlay")?
    else {
        return Ok(());
    };
    let image = replica_image()?;
    let portico_image = portico_image()?;
    let network = swarm.network("overlay", "overlay")?;
    let mut args: Vec<String> = vec![
        "--replicas".into(),
        "2".into(),
        "--network".into(),
        network.clone(),
    ];
    args.extend(portico_labels(&["portico.id=hello", "portico.sticky=true"]));
    args.push(image.to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let app = swarm.service("hello", &args)?;

    let config_dir = tempfile::tempdir()?;
    std::fs::write(
        config_dir.path().join("portico.toml"),
        format!("listen = \"0.0.0.0:8080\"\n{}", swarm.run().docker_config()),
    )?;
    // Portico's service carries the run's label too, but not portico.enable: it serves only
    // the app.
    let socket = socket_path();
    let proxy = swarm.service(
        "portico",
        &[
            "--replicas",
            "2",
            "--network",
            &network,
            "--publish",
            "mode=host,target=8080",
            "--mount",
            &format!("type=bind,source={socket},target=/var/run/docker.sock,readonly"),
            "--mount",
            &format!(
                "type=bind,source={},target=/etc/portico,readonly",
                config_dir.path().display()
            ),
            &portico_image,
            "--config",
            "/etc/portico/portico.toml",
        ],
    )?;
    let tasks = swarm.wait_running(&proxy, 2, LIMIT).await?;
    let ports: Vec<u16> = tasks
        .iter()
        .map(|task| task.ports.first().copied().expect("a host-mode port"))
        .collect();
    swarm.wait_running(&app, 2, LIMIT).await?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let url = |port: u16| format!("http://127.0.0.1:{port}/proxy/hello/");
    let seen = wait_for("both app replicas through Portico", LIMIT, || async {
        let mut seen = BTreeSet::new();
        for _ in 0..10 {
            let response = client.get(url(ports[0])).send().await.ok()?;
            if response.status() != 200 {
                return None;
            }
            seen.insert(replica_of(&response.text().await.ok()?));
        }
        (seen.len() == 2).then_some(seen)
    })
    .await;
    if seen.is_err() {
        let logs = docker(["service", "logs", "--raw", &proxy]).unwrap_or_default();
        eprintln!("Portico's logs:\n{logs}");
    }
    seen?;
    // A session pinned by one Portico replica stays on its app replica through the other:
    // the cookie, not either Portico's memory, names it.
    let first = client.get(url(ports[0])).send().await?;
    let cookie = replica_cookie(&first);
    let pinned = replica_of(&first.text().await?);
    wait_status_at(&client, &url(ports[1]), 200).await?;
    for _ in 0..8 {
        let body = client
            .get(url(ports[1]))
            .header("cookie", &cookie)
            .send()
            .await?
            .text()
            .await?;
        assert_eq!(replica_of(&body), pinned, "pinned across Portico replicas");
    }
    Ok(())
}
