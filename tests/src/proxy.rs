//! Helpers for the proxy tests: a Portico started in-process on 127.0.0.1:0 with the real
//! bundled plugins, and small upstream servers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use portico::config::Config;
use portico::server::{Running, start};

/// A running Portico with its configuration file in a temporary directory.
#[derive(Debug)]
pub struct Portico {
    pub running: Running,
    pub config_path: PathBuf,
    pub dir: tempfile::TempDir,
    /// A client that follows no redirects.
    pub client: reqwest::Client,
}

impl Portico {
    /// Starts Portico with `body` (TOML: services and sections other than `[plugins]`) after
    /// `listen = "127.0.0.1:0"`.
    pub async fn start(body: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let config_path = dir.path().join("portico.toml");
        std::fs::write(&config_path, config_text(&dir, body))
            .context("writing the configuration")?;
        let config = Config::load(&config_path)?;
        let running = start(config, Some(config_path.clone())).await?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Self {
            running,
            config_path,
            dir,
            client,
        })
    }

    /// Replaces the configuration file's body (same listen address and plugins directory).
    pub fn rewrite_config(&self, body: &str) -> anyhow::Result<()> {
        // Write then rename, as editors do, so the watcher never reads half a file.
        let temp = self.dir.path().join("portico.toml.new");
        std::fs::write(&temp, config_text(&self.dir, body))?;
        std::fs::rename(&temp, &self.config_path)?;
        Ok(())
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.addr)
    }

    /// GETs `path` and returns the status and the body as text.
    pub async fn fetch(&self, path: &str) -> anyhow::Result<(reqwest::StatusCode, String)> {
        let response = self.client.get(self.url(path)).send().await?;
        Ok((response.status(), response.text().await?))
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    /// Waits until `check` holds, polling; fails after a generous deadline (a hang guard, not
    /// a timing assertion).
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if check().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("gave up waiting: {what}")
    }
}

fn config_text(dir: &tempfile::TempDir, body: &str) -> String {
    let plugins = dir.path().join("plugins");
    format!(
        "listen = \"127.0.0.1:0\"\n{body}\n\n[plugins]\ndir = {:?}\n",
        plugins.display().to_string()
    )
}

/// A `[[services]]` entry.
pub fn service(id: &str, service_type: &str, upstream: SocketAddr) -> String {
    format!(
        "\n[[services]]\nid = \"{id}\"\ntype = \"{service_type}\"\nupstreams = [\"http://{upstream}\"]\n"
    )
}

/// Serves `router` on 127.0.0.1:0 in the background.
pub async fn upstream(router: axum::Router) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

/// An address where nothing listens (bound, then released).
pub async fn closed_port() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?)
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|line| line.starts_with(&format!("{field}:")))
        .with_context(|| format!("{field} missing from /proc/self/status"))?;
    let value = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("no value in {line:?}"))?;
    Ok(value.parse()?)
}
