//! Helpers for the proxy tests: a Portico started in-process on 127.0.0.1:0 with the real
//! bundled plugins, and small upstream servers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
        Self::start_with_plugins(body, &[]).await
    }

    /// As [`Portico::start`], with the `.wasm` files `plugins` copied into the plugins
    /// directory first.
    pub async fn start_with_plugins(body: &str, plugins: &[&Path]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let plugin_dir = dir.path().join("plugins");
        std::fs::create_dir_all(&plugin_dir).context("creating the plugins directory")?;
        for plugin in plugins {
            let name = plugin.file_name().context("a plugin file name")?;
            std::fs::copy(plugin, plugin_dir.join(name)).context("copying a plugin")?;
        }
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

    /// `http://{admin listener}{path}`; an error without an admin listener (see [`ADMIN`]).
    pub fn admin_url(&self, path: &str) -> anyhow::Result<String> {
        let addr = self
            .running
            .admin_addr
            .context("no admin listener: add proxy::ADMIN to the configuration")?;
        Ok(format!("http://{addr}{path}"))
    }

    /// The full service listing, from the admin listener.
    pub async fn admin_listing(&self) -> anyhow::Result<serde_json::Value> {
        let response = self.client.get(self.admin_url("/proxy")?).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "the admin listing answered {}",
            response.status()
        );
        Ok(serde_json::from_slice(&response.bytes().await?)?)
    }

    /// Where `/metrics` is served: the admin listener when there is one, else the public one.
    pub fn metrics_url(&self) -> String {
        self.admin_url("/metrics")
            .unwrap_or_else(|_| self.url("/metrics"))
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let response = self.client.get(self.metrics_url()).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "/metrics answered {}",
            response.status()
        );
        Ok(response.text().await?)
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

/// The configuration: `body` after `listen`, with the plugins directory set in the body's
/// own `[plugins]` section or in one added at the end.
fn config_text(dir: &tempfile::TempDir, body: &str) -> String {
    let plugins = dir.path().join("plugins");
    let dir_line = format!("dir = {:?}\n", plugins.display().to_string());
    let body = if body.contains("[plugins]\n") {
        body.replacen("[plugins]\n", &format!("[plugins]\n{dir_line}"), 1)
    } else {
        format!("{body}\n\n[plugins]\n{dir_line}")
    };
    format!("listen = \"127.0.0.1:0\"\n{body}")
}

/// The `[admin]` section that puts the admin listener (metrics, the full listing) on a free
/// port of 127.0.0.1; append it after the services.
pub const ADMIN: &str = "\n[admin]\nlisten = \"127.0.0.1:0\"\n";

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

/// Sends `request` (raw bytes, as written) on a new connection and reads until the server
/// closes it or `Connection: close` ends the answer; the status code and the whole answer.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .context("the answer did not end")??;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status line in {text:?}"))?;
    Ok((status, text))
}

/// How a [`RawUpstream`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `200 ok`, kept alive, with a `Set-Cookie` whose `Path` is spaced out.
    Ok,
    /// Closes the connection without answering.
    Close,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// Answers the first request of each connection, closes on the second without answering
    /// (a keep-alive connection the upstream dropped just as a request went out).
    CloseSecond,
}

/// An upstream written on raw sockets that records every request head exactly as received.
#[derive(Debug, Clone)]
pub struct RawUpstream {
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl RawUpstream {
    pub async fn start(answer: Answer) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&heads);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(raw_connection(stream, answer, Arc::clone(&seen)));
            }
        });
        Ok(Self { addr, heads })
    }

    /// The request heads received so far, in order.
    pub fn heads(&self) -> Vec<String> {
        self.heads
            .lock()
            .map(|heads| heads.clone())
            .unwrap_or_default()
    }

    /// The request targets received so far (`GET /x HTTP/1.1` gives `/x`).
    pub fn targets(&self) -> Vec<String> {
        self.heads()
            .iter()
            .filter_map(|head| head.split(' ').nth(1).map(str::to_owned))
            .collect()
    }
}

async fn raw_connection(
    mut stream: tokio::net::TcpStream,
    answer: Answer,
    seen: Arc<Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buffer = Vec::new();
    let mut served = 0;
    loop {
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        while chunked && !buffer[head_end..].windows(5).any(|w| w == b"0\r\n\r\n") {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let length = if chunked {
            buffer.len() - head_end
        } else {
            length
        };
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..head_end + length);
        if let Ok(mut heads) = seen.lock() {
            heads.push(head);
        }
        served += 1;
        let reply: &[u8] = match answer {
            Answer::Ok => {
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nset-cookie: s=1;Path = /\r\n\r\nok"
            }
            Answer::CloseSecond if served == 1 => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            Answer::Close | Answer::CloseSecond => return,
            Answer::Garbage => b"garbage, not HTTP\r\n\r\n",
        };
        if stream.write_all(reply).await.is_err() || answer == Answer::Garbage {
            return;
        }
    }
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
