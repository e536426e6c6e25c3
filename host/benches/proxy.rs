//! Side-by-side proxy benchmark: the same upstream reached directly, through Portico (release
//! binary, generic plugin hooks on every request) and through nginx when it is installed, in one
//! run, so the machine's noise hits all three alike. Prints a table and writes
//! `target/bench/proxy.json`.
//!
//! Needs `wrk` for the HTTP loads; `target/release/portico` must be built first (`just bench`
//! does both).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::routing::get;
use futures_util::{SinkExt as _, StreamExt as _};

/// Serving threads (Portico) and worker processes (nginx): the same for both.
const WORKERS: usize = 2;
const SMALL_CONNECTIONS: usize = 32;
const LARGE_CONNECTIONS: usize = 8;
const DURATION: &str = "8s";
const WS_ROUND_TRIPS: usize = 3000;

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|arg| arg == "--list") {
        return Ok(());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace")?
        .to_owned();
    let portico_bin = workspace.join("target/release/portico");
    if !portico_bin.is_file() {
        bail!(
            "{} is missing: run `cargo build --release -p portico` first",
            portico_bin.display()
        );
    }
    if Command::new("wrk").arg("--version").output().is_err() {
        bail!("wrk is not installed (Debian package `wrk`)");
    }
    let out_dir = workspace.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;

    let upstream_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let upstream = free_port()?;
    upstream_rt.spawn(serve_upstream(upstream));

    let portico_port = free_port()?;
    let portico = start_portico(&portico_bin, &out_dir, upstream, portico_port)?;
    let nginx_port = free_port()?;
    let nginx = start_nginx(&out_dir, upstream, nginx_port)?;

    let mut targets = vec![
        (
            "direct",
            format!("127.0.0.1:{}", upstream.port()),
            String::new(),
        ),
        (
            "portico",
            format!("127.0.0.1:{}", portico_port.port()),
            "/proxy/bench".to_owned(),
        ),
    ];
    if nginx.is_some() {
        targets.push((
            "nginx",
            format!("127.0.0.1:{}", nginx_port.port()),
            "/proxy/bench".to_owned(),
        ));
    } else {
        eprintln!("nginx not found: measuring direct and Portico only");
    }
    for (_, addr, prefix) in &targets {
        wait_ready(&format!("http://{addr}{prefix}/small"))?;
    }

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for (name, addr, prefix) in &targets {
        let small = wrk(&format!("http://{addr}{prefix}/small"), SMALL_CONNECTIONS)?;
        let large = wrk(&format!("http://{addr}{prefix}/large"), LARGE_CONNECTIONS)?;
        let ws = client_rt.block_on(ws_round_trips(&format!("ws://{addr}{prefix}/ws")))?;
        rows.push((name.to_string(), small, large, ws));
    }
    drop(portico);
    drop(nginx);
    report(&rows, &out_dir.join("proxy.json"))
}

/// One wrk run: requests/s and latency percentiles in microseconds.
#[derive(Debug, Clone, Copy)]
struct Load {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

/// WebSocket echo: round trips per second and latency percentiles in microseconds.
#[derive(Debug, Clone, Copy)]
struct Echo {
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

async fn serve_upstream(addr: SocketAddr) {
    let small = get(|| async { "hello, world\n" });
    let body = vec![b'x'; 1024 * 1024];
    let large = get(move || {
        let body = body.clone();
        async move { body }
    });
    let ws = get(|upgrade: WebSocketUpgrade| async move { upgrade.on_upgrade(echo) });
    let app = Router::new()
        .route("/small", small)
        .route("/large", large)
        .route("/ws", ws);
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            let _ = axum::serve(listener, app).await;
        }
        Err(err) => eprintln!("upstream cannot bind {addr}: {err}"),
    }
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        if matches!(message, Message::Text(_) | Message::Binary(_))
            && socket.send(message).await.is_err()
        {
            return;
        }
    }
}

/// Stops the child when dropped: SIGTERM first, so that a master process (nginx) takes its
/// workers down with it, then SIGKILL if it lingers.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..50 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_portico(
    bin: &Path,
    dir: &Path,
    upstream: SocketAddr,
    listen: SocketAddr,
) -> anyhow::Result<Running> {
    let config = dir.join("portico.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\nworkers = {WORKERS}\n[plugins]\ndir = \"{}\"\n[[services]]\nid = \"bench\"\ntype = \"generic\"\nupstreams = [\"http://{upstream}\"]\n",
            dir.join("plugins.d").display()
        ),
    )?;
    let child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting portico")?;
    Ok(Running(child))
}

fn start_nginx(
    dir: &Path,
    upstream: SocketAddr,
    listen: SocketAddr,
) -> anyhow::Result<Option<Running>> {
    let Some(nginx) = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    else {
        return Ok(None);
    };
    let root = dir.join("nginx");
    std::fs::create_dir_all(root.join("logs"))?;
    let conf = root.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            r#"worker_processes {WORKERS};
daemon off;
user root;
pid {root}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream app {{ server {upstream}; keepalive 64; }}
    server {{
        listen {listen};
        location /proxy/bench/ {{
            proxy_pass http://app/;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Prefix /proxy/bench;
            proxy_read_timeout 3600s;
        }}
    }}
}}
"#,
            root = root.display()
        ),
    )?;
    let child = Command::new(nginx)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&root)
        .stdout(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    Ok(Some(Running(child)))
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn wait_ready(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let ok = Command::new("wrk")
            .args(["-t1", "-c1", "-d1s", url])
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout).contains("Requests/sec")
                    && !String::from_utf8_lossy(&out.stdout).contains("Non-2xx")
            })
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{url} did not answer within 30 s")
}

fn wrk(url: &str, connections: usize) -> anyhow::Result<Load> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{DURATION}"),
            "--latency",
            url,
        ])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        eprintln!("warning: errors during the load on {url}:\n{text}");
    }
    let field = |prefix: &str| -> anyhow::Result<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(prefix))
            .map(str::trim)
            .with_context(|| format!("wrk printed no {prefix:?} for {url}:\n{text}"))
    };
    Ok(Load {
        rps: field("Requests/sec:")?.parse()?,
        p50_us: duration_us(field("50%")?)?,
        p99_us: duration_us(field("99%")?)?,
    })
}

/// wrk's `123.45us`, `1.20ms` or `2.00s` in microseconds.
fn duration_us(text: &str) -> anyhow::Result<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .context("no unit")?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse()?;
    Ok(match unit {
        "us" => value,
        "ms" => value * 1e3,
        "s" => value * 1e6,
        other => bail!("unknown unit {other}"),
    })
}

async fn ws_round_trips(url: &str) -> anyhow::Result<Echo> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("connecting {url}"))?;
    let payload = "x".repeat(64);
    let mut samples = Vec::with_capacity(WS_ROUND_TRIPS);
    let started = Instant::now();
    for _ in 0..WS_ROUND_TRIPS {
        let sent = Instant::now();
        socket
            .send(tokio_tungstenite::tungstenite::Message::text(
                payload.clone(),
            ))
            .await?;
        match socket.next().await {
            Some(Ok(_)) => samples.push(sent.elapsed().as_secs_f64() * 1e6),
            other => bail!("echo failed on {url}: {other:?}"),
        }
    }
    let total = started.elapsed().as_secs_f64();
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    Ok(Echo {
        per_sec: WS_ROUND_TRIPS as f64 / total,
        p50_us: pick(0.5),
        p99_us: pick(0.99),
    })
}

fn report(rows: &[(String, Load, Load, Echo)], json_path: &Path) -> anyhow::Result<()> {
    let base = rows
        .iter()
        .find(|row| row.0 == "direct")
        .context("direct row")?;
    println!(
        "\n{:<8} | {:>10} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9}",
        "",
        "small r/s",
        "p50 us",
        "p99 us",
        "1MiB r/s",
        "p50 us",
        "p99 us",
        "ws rt/s",
        "p50 us",
        "p99 us"
    );
    let mut json = Vec::new();
    for (name, small, large, ws) in rows {
        println!(
            "{name:<8} | {:>10.0} {:>9.0} {:>9.0} | {:>9.0} {:>9.0} {:>9.0} | {:>9.0} {:>9.0} {:>9.0}",
            small.rps,
            small.p50_us,
            small.p99_us,
            large.rps,
            large.p50_us,
            large.p99_us,
            ws.per_sec,
            ws.p50_us,
            ws.p99_us
        );
        json.push(serde_json::json!({
            "name": name,
            "small": {"rps": small.rps, "p50_us": small.p50_us, "p99_us": small.p99_us},
            "large_1mib": {"rps": large.rps, "p50_us": large.p50_us, "p99_us": large.p99_us},
            "websocket_echo": {"round_trips_per_s": ws.per_sec, "p50_us": ws.p50_us, "p99_us": ws.p99_us},
        }));
    }
    println!("\nratios to direct (throughput: higher is better; latency: lower is better)");
    for (name, small, large, ws) in rows.iter().filter(|row| row.0 != "direct") {
        println!(
            "{name:<8} small r/s {:.2}x  small p99 {:.2}x  1MiB r/s {:.2}x  ws p50 {:.2}x  ws p99 {:.2}x",
            small.rps / base.1.rps,
            small.p99_us / base.1.p99_us,
            large.rps / base.2.rps,
            ws.p50_us / base.3.p50_us,
            ws.p99_us / base.3.p99_us
        );
    }
    if let (Some(p), Some(n)) = (
        rows.iter().find(|r| r.0 == "portico"),
        rows.iter().find(|r| r.0 == "nginx"),
    ) {
        println!(
            "portico vs nginx: small r/s {:.2}x  small p99 {:.2}x  1MiB r/s {:.2}x  ws p50 {:.2}x",
            p.1.rps / n.1.rps,
            p.1.p99_us / n.1.p99_us,
            p.2.rps / n.2.rps,
            p.3.p50_us / n.3.p50_us
        );
    }
    std::fs::write(json_path, serde_json::to_string_pretty(&json)?)?;
    println!("\nsaved {}", json_path.display());
    Ok(())
}
