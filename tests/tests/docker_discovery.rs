//! Docker discovery against this machine's Docker Engine: labelled containers become services
//! beside the file's, every addressing form reaches them, unlabelled ones stay hidden, shared
//! names are a 409, `portico.network` picks the network of a container on two, and
//! `portico.auth`/`portico.allow_users` pick who may open a container.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use portico_tests::auth::{AuthServer, session};
use portico_tests::docker::{Run, app_image, available, docker, wait_for};
use portico_tests::proxy::{ADMIN, Portico, service, upstream};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// The full listing (the admin listener's: it shows sources and upstreams).
async fn listing(portico: &Portico) -> anyhow::Result<Value> {
    portico.admin_listing().await
}

/// The listing's entry for `id`, once it is there.
async fn entry(portico: &Portico, id: &str) -> anyhow::Result<Value> {
    wait_for(&format!("{id} in /proxy"), LIMIT, || async {
        let doc = listing(portico).await.ok()?;
        doc["services"]
            .as_array()?
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
    })
    .await
}

#[tokio::test]
async fn labelled_containers_are_served_under_every_name() -> anyhow::Result<()> {
    if !available("labelled_containers_are_served_under_every_name") {
        return Ok(());
    }
    let run = Run::new();
    let image = app_image()?;
    let net = run.network("net")?;
    let name = run.name("shop");
    let friendly = run.name("store");
    let compose = run.name("web");
    let id = run.run(&[
        "--name",
        &name,
        "--network",
        &net,
        "-e",
        "APP=alpha",
        "--label",
        "portico.enable=true",
        "--label",
        &format!("portico.id={friendly}"),
        "--label",
        &format!("com.docker.compose.service={compose}"),
        image,
    ])?;
    let hidden = run.name("hidden");
    run.run(&[
        "--name",
        &hidden,
        "--network",
        &net,
        "-e",
        "APP=beta",
        image,
    ])?;
    let disabled = run.name("disabled");
    run.run(&[
        "--name",
        &disabled,
        "--network",
        &net,
        "--label",
        "portico.enable=false",
        image,
    ])?;
    let file_app = upstream(Router::new().route("/", get(|| async { "from the file" }))).await?;
    let body = format!(
        "{}{}",
        service("filed", "generic", file_app),
        run.docker_config()
    );
    let portico = Portico::start(&(body + ADMIN)).await?;

    let shown = entry(&portico, &friendly).await?;
    assert_eq!(shown["source"], "docker");
    assert_eq!(
        shown["type"], "generic",
        "busybox matches no plugin's hints"
    );
    let ip = run.ip(&name, &net)?;
    assert_eq!(
        shown["upstream"],
        format!("http://{ip}:8080"),
        "the lowest exposed port on the container's network"
    );
    let filed = entry(&portico, "filed").await?;
    assert_eq!(filed["source"], "static");

    let short = &id[..12];
    for x in [
        id.as_str(),
        short,
        name.as_str(),
        friendly.as_str(),
        compose.as_str(),
    ] {
        let (status, text) = wait_for(&format!("/proxy/{x}/ answering"), LIMIT, || async {
            portico
                .fetch(&format!("/proxy/{x}/"))
                .await
                .ok()
                .filter(|(s, _)| s.is_success())
        })
        .await?;
        assert_eq!(status, StatusCode::OK, "/proxy/{x}/");
        assert_eq!(text.trim(), "alpha", "/proxy/{x}/");
        let redirect = portico
            .client
            .get(portico.url(&format!("/proxy/{x}")))
            .send()
            .await?;
        assert_eq!(redirect.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            redirect.headers()["location"],
            format!("/proxy/{x}/").as_str(),
            "the name the client used is kept"
        );
    }
    assert_eq!(
        portico.fetch("/proxy/filed/").await?,
        (StatusCode::OK, "from the file".to_owned())
    );
    for x in [&hidden, &disabled] {
        let (status, text) = portico.fetch(&format!("/proxy/{x}/")).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{x} is not labelled: {text}");
    }
    let ids: Vec<String> = listing(&portico).await?["services"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut expected = vec![friendly.clone(), "filed".to_owned()];
    expected.sort();
    assert_eq!(ids, expected, "nothing unlabelled is listed");
    portico.running.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn access_labels_pick_who_may_open_a_container() -> anyhow::Result<()> {
    if !available("access_labels_pick_who_may_open_a_container") {
        return Ok(());
    }
    let run = Run::new();
    let image = app_image()?;
    let net = run.network("net")?;
    let owned = run.name("owned");
    let public = run.name("public");
    for (name, app, label) in [
        (&owned, "alice's", "portico.allow_users=carol, alice"),
        (&public, "anyone's", "portico.auth=none"),
    ] {
        run.run(&[
            "--name",
            name,
            "--network",
            &net,
            "-e",
            &format!("APP={app}"),
            "--label",
            "portico.enable=true",
            "--label",
            label,
            image,
        ])?;
    }
    let auth = AuthServer::start().await?;
    let portico = Portico::start(&(run.docker_config() + &auth.config("") + ADMIN)).await?;
    let shown = entry(&portico, &owned).await?;
    assert_eq!(shown["allow_users"], serde_json::json!(["carol", "alice"]));
    let status_of = |x: String, cookie: String| {
        let portico = &portico;
        async move {
            let response = portico
                .client
                .get(portico.url(&format!("/proxy/{x}/")))
                .header("cookie", cookie)
                .send()
                .await?;
            anyhow::Ok((response.status(), response.text().await?))
        }
    };
    let (status, text) = wait_for("the owner's container answering", LIMIT, || async {
        status_of(owned.clone(), session("alice"))
            .await
            .ok()
            .filter(|(status, _)| *status != StatusCode::BAD_GATEWAY)
    })
    .await?;
    assert_eq!((status, text.trim()), (StatusCode::OK, "alice's"));
    let (status, _) = status_of(owned.clone(), session("bob")).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = status_of(owned.clone(), String::new()).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, text) = wait_for("the open container answering", LIMIT, || async {
        status_of(public.clone(), String::new())
            .await
            .ok()
            .filter(|(status, _)| *status != StatusCode::BAD_GATEWAY)
    })
    .await?;
    assert_eq!((status, text.trim()), (StatusCode::OK, "anyone's"));
    portico.running.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_shared_name_is_a_409_listing_the_candidates() -> anyhow::Result<()> {
    if !available("a_shared_name_is_a_409_listing_the_candidates") {
        return Ok(());
    }
    let run = Run::new();
    let image = app_image()?;
    let net = run.network("net")?;
    let compose = run.name("worker");
    let friendly = run.name("twin");
    let mut names = Vec::new();
    for (n, app) in ["one", "two"].iter().enumerate() {
        let name = run.name(&format!("replica{n}"));
        run.run(&[
            "--name",
            &name,
            "--network",
            &net,
            "-e",
            &format!("APP={app}"),
            "--label",
            "portico.enable=true",
            "--label",
            &format!("com.docker.compose.service={compose}"),
            "--label",
            &format!("portico.id={friendly}"),
            image,
        ])?;
        names.push(name);
    }
    let portico = Portico::start(&(run.docker_config() + ADMIN)).await?;
    for name in &names {
        entry(&portico, name).await?;
    }
    for x in [&compose, &friendly] {
        let response = portico
            .client
            .get(portico.url(&format!("/proxy/{x}/")))
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::CONFLICT, "/proxy/{x}/");
        let doc: Value = serde_json::from_slice(&response.bytes().await?)?;
        let message = doc["message"].as_str().unwrap_or_default();
        for name in &names {
            assert!(message.contains(name.as_str()), "{message} lists {name}");
        }
    }
    let (status, text) = wait_for("replica0 answering", LIMIT, || async {
        portico
            .fetch(&format!("/proxy/{}/", names[0]))
            .await
            .ok()
            .filter(|(s, _)| s.is_success())
    })
    .await?;
    assert_eq!(
        (status, text.trim()),
        (StatusCode::OK, "one"),
        "each is still reachable by its name"
    );
    portico.running.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn the_network_label_picks_the_address_of_a_container_on_two_networks() -> anyhow::Result<()>
{
    if !available("the_network_label_picks_the_address_of_a_container_on_two_networks") {
        return Ok(());
    }
    let run = Run::new();
    let image = app_image()?;
    let front = run.network("front")?;
    let back = run.network("back")?;
    let name = run.name("multi");
    // Created on `front`, then connected to `back`: the label names the second one.
    docker([
        "create",
        "--name",
        &name,
        "--network",
        &front,
        "--label",
        &format!("portico.test-run={}", run.id),
        "--label",
        "portico.enable=true",
        "--label",
        &format!("portico.network={back}"),
        "--label",
        "portico.port=8080",
        "-e",
        "APP=multi",
        image,
    ])?;
    docker(["network", "connect", &back, &name])?;
    docker(["start", &name])?;
    let back_ip = run.ip(&name, &back)?;
    let front_ip = run.ip(&name, &front)?;
    assert_ne!(back_ip, front_ip);
    let portico = Portico::start(&(run.docker_config() + ADMIN)).await?;
    let shown = entry(&portico, &name).await?;
    assert_eq!(shown["upstream"], format!("http://{back_ip}:8080"));
    let (status, text) = portico.fetch(&format!("/proxy/{name}/")).await?;
    assert_eq!((status, text.trim()), (StatusCode::OK, "multi"));
    portico.running.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn without_docker_the_file_is_served() -> anyhow::Result<()> {
    // No engine needed: the endpoint is a socket that does not exist.
    let file_app = upstream(Router::new().route("/", get(|| async { "still here" }))).await?;
    let body = format!(
        "{}\n[docker]\nendpoints = [\"unix:///nonexistent/docker.sock\"]\n",
        service("filed", "generic", file_app)
    );
    let portico = Portico::start(&(body + ADMIN)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        portico.fetch("/proxy/filed/").await?,
        (StatusCode::OK, "still here".to_owned())
    );
    let doc = listing(&portico).await?;
    assert_eq!(doc["services"].as_array().map(Vec::len), Some(1));
    assert_eq!(doc["services"][0]["source"], "static");
    portico.running.shutdown().await?;
    Ok(())
}

#[test]
fn the_compose_example_configuration_is_valid() -> anyhow::Result<()> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/compose/portico.toml");
    let config = portico::config::Config::load(&path)?;
    assert_eq!(config.docker.enabled, portico::config::DockerMode::On);
    Ok(())
}
