//! Portico itself in a container, as in a compose project: it finds the network it shares
//! with the apps, reaches one by its compose service name and another by its IP on the shared
//! network (not on a network only the app is on).

use std::time::Duration;

use axum::http::StatusCode;
use portico_tests::docker::{
    Run, app_image, available, docker, portico_image, socket_path, wait_for,
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn portico_in_a_container_reaches_apps_by_compose_service_and_shared_network()
-> anyhow::Result<()> {
    let test = "portico_in_a_container_reaches_apps_by_compose_service_and_shared_network";
    if !available(test) {
        return Ok(());
    }
    let run = Run::new();
    let image = app_image()?;
    let portico_image = portico_image()?;
    // "apps" sorts before "shared": picking the first network would pick the unreachable one.
    let apps = run.network("apps")?;
    let shared = run.network("shared")?;
    let web = run.name("web");
    run.run(&[
        "--name",
        &run.name("web-1"),
        "--network",
        &shared,
        "--network-alias",
        &web,
        "-e",
        "APP=by-service-name",
        "--label",
        "portico.enable=true",
        "--label",
        &format!("com.docker.compose.service={web}"),
        image,
    ])?;
    let other = run.name("other");
    docker([
        "create",
        "--name",
        &other,
        "--network",
        &apps,
        "-e",
        "APP=by-shared-network",
        "--label",
        &format!("portico.test-run={}", run.id),
        "--label",
        "portico.enable=true",
        image,
    ])?;
    docker(["network", "connect", &shared, &other])?;
    docker(["start", &other])?;

    let config_dir = tempfile::tempdir()?;
    std::fs::write(
        config_dir.path().join("portico.toml"),
        format!(
            "listen = \"0.0.0.0:8080\"\n[admin]\nlisten = \"0.0.0.0:9901\"\n[plugins]\ndir = \"/tmp/plugins\"\n{}",
            run.docker_config_with("address_order = [\"compose-service\", \"network\"]")
        ),
    )?;
    let socket = socket_path();
    let proxy_name = run.name("portico");
    run.run(&[
        "--name",
        &proxy_name,
        "--network",
        &shared,
        "-v",
        &format!("{socket}:/var/run/docker.sock"),
        "-v",
        &format!("{}:/etc/portico:ro", config_dir.path().display()),
        &portico_image,
        "--config",
        "/etc/portico/portico.toml",
    ])?;
    let proxy_ip = run.ip(&proxy_name, &shared)?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let base = format!("http://{proxy_ip}:8080");
    for (x, expected) in [(&web, "by-service-name"), (&other, "by-shared-network")] {
        let result = wait_for(
            &format!("/proxy/{x}/ through the containerised Portico"),
            LIMIT,
            || async {
                let response = client.get(format!("{base}/proxy/{x}/")).send().await.ok()?;
                let status = response.status();
                let text = response.text().await.ok()?;
                (status == StatusCode::OK).then_some(text)
            },
        )
        .await;
        let text = match result {
            Ok(text) => text,
            Err(err) => {
                let logs = docker(["logs", "--tail", "40", &proxy_name]).unwrap_or_default();
                anyhow::bail!("{err:#}\nPortico's logs:\n{logs}");
            }
        };
        assert_eq!(text.trim(), expected);
    }
    // The full listing, with upstreams, is the admin listener's.
    let listing: Value = serde_json::from_slice(
        &client
            .get(format!("http://{proxy_ip}:9901/proxy"))
            .send()
            .await?
            .bytes()
            .await?,
    )?;
    let services = listing["services"].as_array().cloned().unwrap_or_default();
    let upstream_of = |id: &str| {
        services
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["upstream"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        upstream_of(&run.name("web-1")),
        Some(format!("http://{web}:8080"))
    );
    let other_ip = run.ip(&other, &shared)?;
    assert_eq!(
        upstream_of(&other),
        Some(format!("http://{other_ip}:8080")),
        "the shared network's IP"
    );
    Ok(())
}
