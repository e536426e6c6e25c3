//! Streamlit, unmodified, in a Docker container that Portico finds by its labels alone: the type
//! is detected from the command (`streamlit run`) and the port is the plugin's default, and the
//! browser scenario of `e2e_streamlit` passes through `/proxy/{portico.id}/`.
//!
//! No image can be pulled here, so the container runs the host's Python and the e2e virtualenv
//! from read-only bind mounts on the busybox test image, on an internal network: the app
//! reaches nothing beyond it, while the host (and so Portico) reaches the app.

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use portico_tests::docker::{self, Run, app_image, host_python, wait_for};
use portico_tests::e2e::{APP_START, Session, apps_dir, artifacts_dir, streamlit_scenario};
use portico_tests::proxy::{ADMIN, Portico};
use serde_json::Value;

const NAME: &str = "streamlit-docker";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamlit_in_a_labelled_container_reruns_and_uploads() -> anyhow::Result<()> {
    if !docker::available(NAME) {
        return Ok(());
    }
    let Some(tools) = portico_tests::e2e::tools_or_skip(NAME) else {
        return Ok(());
    };
    // Declared first, dropped last: the container and the network go even when a step fails.
    let run = Run::new();
    let image = app_image()?;
    let (python, mounts) = host_python(&tools.python)?;
    let python = python.to_str().context("a UTF-8 virtualenv path")?;
    let app = apps_dir().join("streamlit");
    let app_mount = format!("{}:/app:ro", app.to_str().context("a UTF-8 app path")?);
    let network = run.network_with("net", &["--internal"])?;
    let container = run.name("app");
    let id = run.name("streamlit");
    let id_label = format!("portico.id={id}");
    let mut args = vec![
        "--name",
        &container,
        "--network",
        &network,
        // Only what opts it in and names it: no portico.type, no portico.port.
        "--label",
        "portico.enable=true",
        "--label",
        &id_label,
        "--read-only",
        "--tmpfs",
        "/tmp",
        // Streamlit writes to ~/.streamlit.
        "-e",
        "HOME=/tmp",
        "-e",
        "PYTHONUNBUFFERED=1",
        "-e",
        "PYTHONDONTWRITEBYTECODE=1",
        "-v",
        &app_mount,
        "-w",
        "/app",
    ];
    args.extend(mounts.iter().map(String::as_str));
    args.extend([
        image,
        python,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.address",
        "0.0.0.0",
        "--server.port",
        "8501",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        // On a wildcard address the banner asks checkip.amazonaws.com for the external IP,
        // blocking the server until DNS gives up on the internal network (some 20 s).
        "--logger.hideWelcomeMessage",
        "true",
    ]);
    run.run(&args)?;
    docker::settle(&network, Duration::from_secs(10)).await?;

    let session = Session::open_with_config(NAME, tools, &(run.docker_config() + ADMIN)).await?;
    let prefix = format!("/proxy/{id}/");
    let outcome = async {
        ready(&session.portico, &prefix, &container).await?;
        let ip = run.ip(&container, &network)?;
        let shown = discovered(&session.portico, &id).await?;
        ensure!(
            shown["source"] == "docker" && shown["type"] == "streamlit",
            "the type is detected from `streamlit run`: {shown}"
        );
        ensure!(
            shown["upstream"] == format!("http://{ip}:8501"),
            "the Streamlit plugin's default port on the container's network: {shown}"
        );
        streamlit_scenario(&session.browser, &prefix).await
    }
    .await;
    let result = session.finish(outcome).await;
    // The container's output is kept like a local app's log, apart when the run failed.
    let log = artifacts_dir().join(match &result {
        Ok(()) => format!("{NAME}-streamlit.log"),
        Err(_) => format!("{NAME}-failed-streamlit.log"),
    });
    let saved = docker::logs(&container).and_then(|text| Ok(std::fs::write(&log, text)?));
    result.map_err(|error| match saved {
        Ok(()) => anyhow::anyhow!("{error:#}\nthe container's output: {}", log.display()),
        Err(why) => anyhow::anyhow!("{error:#}\nthe container's output is lost: {why:#}"),
    })
}

/// The listing's entry for `id`, once Portico has seen the container.
async fn discovered(portico: &Portico, id: &str) -> anyhow::Result<Value> {
    wait_for(
        &format!("{id} in /proxy"),
        Duration::from_secs(30),
        || async {
            let doc = portico.admin_listing().await.ok()?;
            doc["services"]
                .as_array()?
                .iter()
                .find(|service| service["id"] == id)
                .cloned()
        },
    )
    .await
}

/// Waits until Streamlit answers its health check through Portico (so once Portico has found
/// the container), failing early with the container's output when it exits.
async fn ready(portico: &Portico, prefix: &str, container: &str) -> anyhow::Result<()> {
    let url = portico.url(&format!("{prefix}_stcore/health"));
    let deadline = tokio::time::Instant::now() + APP_START;
    loop {
        if let Ok(response) = portico.client.get(&url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        let running = docker::docker(["inspect", "--format", "{{.State.Running}}", container])?;
        if running != "true" {
            bail!(
                "the Streamlit container stopped before it was ready; its output:\n{}",
                docker::logs(container).unwrap_or_default()
            );
        }
        if tokio::time::Instant::now() > deadline {
            bail!("Streamlit did not answer {url} within {APP_START:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
