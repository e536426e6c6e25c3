//! Side-by-side proxy benchmark: the same upstream reached directly, through Portico (release
//! binary, generic plugin hooks on every request), through Portico balancing over two replicas
//! of it (`portico-2-replicas`, small GETs only), through Portico with forward authentication
//! on (`fwdauth`, the auth service answering from memory) and through nginx when it is
//! installed, in one run, so the machine's noise hits them alike. Then the memory run: Portico and nginx each
//! hold thousands of idle keep-alive connections, then idle relayed WebSockets, and the growth
//! of their resident memory is divided among them. Last, the fair share: a healthy service's
//! throughput through Portico alone, then while four clients drive a plugin that spins to its
//! deadline on every call. Prints tables and writes `target/bench/proxy.json`.
//!
//! Needs `wrk` for the HTTP loads; `target/release/portico` must be built first (`just bench`
//! does both).

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use futures_util::{SinkExt as _, StreamExt as _};
use hyper::body::Body as _;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Serving threads (Portico) and worker processes (nginx): the same for both.
const WORKERS: usize = 2;
const SMALL_CONNECTIONS: usize = 32;
const LARGE_CONNECTIONS: usize = 8;
const DURATION: &str = "8s";
const WS_ROUND_TRIPS: usize = 3000;
/// Idle keep-alive connections held open at once by the memory run, each used for one GET.
const IDLE_KEEPALIVE: usize = 5000;
/// Idle relayed WebSockets held open at once by the memory run, each used for one echo.
const IDLE_WEBSOCKETS: usize = 1000;
/// Connections opened and closed before the baseline is read, so that what a proxy allocates
/// once (upstream pools, caches, its first buffers) is not counted per connection.
const WARM_UP: usize = 32;
/// Connections being opened at once: well under both proxies' listen backlogs, so that none
/// waits for a SYN retry.
const OPENING: usize = 64;
/// The longest one connection may take to open and answer, or all of them to close.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Left to a proxy between opening or closing connections and reading its memory, for the
/// allocators' deferred work.
const SETTLE: Duration = Duration::from_millis(500);
/// Each proxy's client timeouts in the memory run: long enough that nothing is closed while
/// it is measured.
const IDLE_TIMEOUT_MS: u64 = 600_000;

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|arg| arg == "--list") {
        return Ok(());
    }
    // The memory run holds thousands of sockets in this process (clients, and the upstream's
    // side of each relayed WebSocket).
    let descriptors =
        rlimit::increase_nofile_limit(u64::MAX).context("raising the open file limit")?;
    let needed = (IDLE_KEEPALIVE.max(2 * IDLE_WEBSOCKETS) + 1024) as u64;
    if descriptors < needed {
        bail!("the open file limit is {descriptors}; the memory run needs {needed}");
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
    // The proxies' files are private to this run: Portico reloads a config file that changes
    // under it, and nginx's pid file would be shared, so a second run at the same time must
    // not write the same paths.
    let run = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&out_dir)
        .context("creating the run's directory")?;

    let upstream_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let upstream = free_port()?;
    upstream_rt.spawn(serve_upstream(upstream));

    // `cargo bench --bench proxy -- fair-share` measures the fair share alone.
    if std::env::args().any(|arg| arg == "fair-share") {
        print_fair_share(fair_share(&workspace, &portico_bin, run.path(), upstream)?);
        return Ok(());
    }
    // `cargo bench --bench proxy -- replicas` measures the small GETs direct, through Portico
    // and across two replicas alone.
    let replicas_only = std::env::args().any(|arg| arg == "replicas");

    // The second replica is the same server on the same single thread: two replicas have no
    // more capacity than one, so their row shows what balancing costs Portico, not what a
    // second upstream adds.
    let replica = free_port()?;
    upstream_rt.spawn(serve_upstream(replica));
    let portico_port = free_port()?;
    let portico = start_portico(&portico_bin, run.path(), &[upstream], portico_port, "", "")?;
    let replicas_port = free_port()?;
    let replicas_dir = run.path().join("replicas");
    std::fs::create_dir_all(&replicas_dir)?;
    let with_replicas = start_portico(
        &portico_bin,
        &replicas_dir,
        &[upstream, replica],
        replicas_port,
        "",
        "",
    )?;
    let mut targets = vec![
        Target {
            name: "direct",
            addr: format!("127.0.0.1:{}", upstream.port()),
            prefix: "",
            small_only: replicas_only,
        },
        Target {
            name: "portico",
            addr: format!("127.0.0.1:{}", portico_port.port()),
            prefix: "/proxy/bench",
            small_only: replicas_only,
        },
        Target {
            name: "portico-2-replicas",
            addr: format!("127.0.0.1:{}", replicas_port.port()),
            prefix: "/proxy/bench",
            small_only: true,
        },
    ];
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if replicas_only {
        print_throughput(&throughput(&targets, &client_rt)?)?;
        return Ok(());
    }

    // The same with forward authentication on, the auth service answering from memory.
    let auth_port = free_port()?;
    let auth_dir = run.path().join("auth");
    std::fs::create_dir_all(&auth_dir)?;
    let with_auth = start_portico(
        &portico_bin,
        &auth_dir,
        &[upstream],
        auth_port,
        "",
        &format!("[auth]\nforward_url = \"http://{upstream}/auth\"\n"),
    )?;
    let nginx_port = free_port()?;
    let nginx = start_nginx(run.path(), upstream, nginx_port)?;

    targets.push(Target {
        name: "fwdauth",
        addr: format!("127.0.0.1:{}", auth_port.port()),
        prefix: "/proxy/bench",
        small_only: false,
    });
    if nginx.is_some() {
        targets.push(Target {
            name: "nginx",
            addr: format!("127.0.0.1:{}", nginx_port.port()),
            prefix: "/proxy/bench",
            small_only: false,
        });
    } else {
        eprintln!("nginx not found: measuring direct and Portico only");
    }
    let rows = throughput(&targets, &client_rt)?;
    drop(portico);
    drop(with_replicas);
    drop(with_auth);
    drop(nginx);

    let measured = [
        (
            "portico",
            idle_memory(&client_rt, |listen| {
                start_portico(&portico_bin, run.path(), &[upstream], listen, "", "").map(Some)
            })?,
        ),
        (
            "nginx",
            idle_memory(&client_rt, |listen| {
                start_nginx(run.path(), upstream, listen)
            })?,
        ),
    ];
    let memory: Vec<(&str, Memory)> = measured
        .into_iter()
        .filter_map(|(name, figures)| Some((name, figures?)))
        .collect();
    let fair = fair_share(&workspace, &portico_bin, run.path(), upstream)?;
    report(&rows, &memory, fair, &out_dir.join("proxy.json"))
}

/// A healthy service's small-GET throughput through Portico, alone and beside four clients
/// that drive the hostile test plugin's endless loop (each call spins to its deadline).
#[derive(Debug, Clone, Copy)]
struct FairShare {
    alone: f64,
    beside_spinner: f64,
}

/// Clients driving the spinning plugin in the fair-share run.
const SPINNING_CLIENTS: usize = 4;

fn fair_share(
    workspace: &Path,
    bin: &Path,
    dir: &Path,
    upstream: SocketAddr,
) -> anyhow::Result<FairShare> {
    let hostile = portico_wasm_build::build_components(workspace, &["portico-fixture-hostile"])
        .map_err(anyhow::Error::msg)
        .context("building the hostile test plugin")?;
    let plugins = dir.join("plugins.d");
    std::fs::create_dir_all(&plugins)?;
    std::fs::copy(&hostile[0], plugins.join("hostile.wasm"))?;
    let listen = free_port()?;
    // Never quarantined, so that the plugin spins to its deadline on every call.
    let _portico = start_portico(
        bin,
        dir,
        &[upstream],
        listen,
        "quarantine_failures = 1000000000\n",
        &format!(
            "[[services]]\nid = \"spin\"\ntype = \"hostile\"\nupstreams = [\"http://{upstream}\"]\n"
        ),
    )?;
    let healthy = format!("http://{listen}/proxy/bench/small");
    wait_ready(&healthy)?;
    let alone = wrk(&healthy, SMALL_CONNECTIONS)?.rps;
    let mut spinners = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{SPINNING_CLIENTS}"),
            &format!("-d{DURATION}"),
            &format!("http://{listen}/proxy/spin/loop"),
        ])
        .stdout(Stdio::null())
        .spawn()
        .context("running wrk")?;
    let beside_spinner = wrk(&healthy, SMALL_CONNECTIONS);
    let _ = spinners.wait();
    Ok(FairShare {
        alone,
        beside_spinner: beside_spinner?.rps,
    })
}

/// A server the throughput run loads.
#[derive(Debug)]
struct Target {
    name: &'static str,
    addr: String,
    /// What comes before the upstream's own paths (`/small`, `/large`, `/ws`).
    prefix: &'static str,
    /// Only the small GETs: the 1 MiB GETs and the WebSocket echo are left out.
    small_only: bool,
}

impl Target {
    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{}{path}", self.addr, self.prefix)
    }
}

/// A target's figures; `None` for the loads it left out.
#[derive(Debug)]
struct Row {
    name: &'static str,
    small: Load,
    large: Option<Load>,
    ws: Option<Echo>,
}

/// Loads the targets one after the other, once all of them answer.
fn throughput(targets: &[Target], rt: &tokio::runtime::Runtime) -> anyhow::Result<Vec<Row>> {
    for target in targets {
        wait_ready(&target.url("http", "/small"))?;
    }
    let mut rows = Vec::new();
    for target in targets {
        let small = wrk(&target.url("http", "/small"), SMALL_CONNECTIONS)?;
        let (large, ws) = if target.small_only {
            (None, None)
        } else {
            let large = wrk(&target.url("http", "/large"), LARGE_CONNECTIONS)?;
            let ws = rt.block_on(ws_round_trips(&target.url("ws", "/ws")))?;
            (Some(large), Some(ws))
        };
        rows.push(Row {
            name: target.name,
            small,
            large,
            ws,
        });
    }
    Ok(rows)
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
    // The auth service of the forward-authentication run: everyone is user `bench`.
    let auth = get(|| async { (StatusCode::ACCEPTED, [("x-auth-request-user", "bench")]) });
    let app = Router::new()
        .route("/auth", auth)
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

/// Starts Portico with client limits and timeouts that let the memory run hold all its idle
/// connections. Service `bench` has `upstreams` as its replicas, balanced by the default
/// policy.
fn start_portico(
    bin: &Path,
    dir: &Path,
    upstreams: &[SocketAddr],
    listen: SocketAddr,
    more_plugins: &str,
    more_services: &str,
) -> anyhow::Result<Running> {
    let config = dir.join("portico.toml");
    let upstreams = upstreams
        .iter()
        .map(|upstream| format!("\"http://{upstream}\""))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\nworkers = {WORKERS}\n[plugins]\ndir = \"{}\"\n{more_plugins}[client]\nmax_connections = 20000\nheader_timeout_ms = {IDLE_TIMEOUT_MS}\nkeepalive_timeout_ms = {IDLE_TIMEOUT_MS}\nwebsocket_ping_ms = {IDLE_TIMEOUT_MS}\n[[services]]\nid = \"bench\"\ntype = \"generic\"\nupstreams = [{upstreams}]\n{more_services}",
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

/// Starts nginx, when installed, with as many workers as Portico and room for the memory run's
/// idle connections.
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
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_timeout {idle_s}s;
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
            root = root.display(),
            idle_s = IDLE_TIMEOUT_MS / 1000
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

/// Resident memory added by each idle connection, in KiB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    keepalive_kib: f64,
    websocket_kib: f64,
}

/// The idle connections the memory run holds open.
#[derive(Debug, Clone, Copy)]
enum Idle {
    KeepAlive,
    WebSocket,
}

impl Idle {
    fn count(self) -> usize {
        match self {
            Self::KeepAlive => IDLE_KEEPALIVE,
            Self::WebSocket => IDLE_WEBSOCKETS,
        }
    }
}

/// Measures both kinds of idle connection through a proxy that `start` launches on a given
/// address; `None` when `start` finds no proxy to launch. Each kind gets a fresh process, so
/// that memory freed by one measurement and kept by the allocator cannot absorb the next.
fn idle_memory(
    rt: &tokio::runtime::Runtime,
    start: impl Fn(SocketAddr) -> anyhow::Result<Option<Running>>,
) -> anyhow::Result<Option<Memory>> {
    let per_connection = |kind: Idle| -> anyhow::Result<Option<f64>> {
        let listen = free_port()?;
        let Some(proxy) = start(listen)? else {
            return Ok(None);
        };
        let addr = format!("127.0.0.1:{}", listen.port());
        wait_ready(&format!("http://{addr}/proxy/bench/small"))?;
        rt.block_on(idle_cost(kind, &addr, proxy.0.id())).map(Some)
    };
    let Some(keepalive_kib) = per_connection(Idle::KeepAlive)? else {
        return Ok(None);
    };
    let Some(websocket_kib) = per_connection(Idle::WebSocket)? else {
        return Ok(None);
    };
    Ok(Some(Memory {
        keepalive_kib,
        websocket_kib,
    }))
}

/// The growth of the resident memory of process `pid` (with its children) per idle
/// connection of `kind` held through it, in KiB. Only user-space memory counts: the kernel's
/// socket buffers are the same for any proxy and are not in a process's RSS.
async fn idle_cost(kind: Idle, addr: &str, pid: u32) -> anyhow::Result<f64> {
    Held::open(kind, addr, WARM_UP).await?.close().await;
    tokio::time::sleep(SETTLE).await;
    let before = rss_kib(pid)?;
    let count = kind.count();
    let mut held = Held::open(kind, addr, count).await?;
    tokio::time::sleep(SETTLE).await;
    let after = rss_kib(pid)?;
    // Used once more after the reading, so that a connection the proxy closed while idle
    // cannot pass for one it held.
    let alive = held.use_each(addr).await;
    held.close().await;
    if alive < count {
        bail!("only {alive} of {count} idle {kind:?} connections through {addr} were still open");
    }
    Ok((after as f64 - before as f64) / count as f64)
}

/// A client's HTTP/1 connection and the task that drives it.
#[derive(Debug)]
struct KeepAlive {
    sender: SendRequest<Body>,
    driver: tokio::task::JoinHandle<()>,
}

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Client connections held open through a proxy, each already used once.
#[derive(Debug)]
enum Held {
    KeepAlive(Vec<KeepAlive>),
    WebSocket(Vec<Socket>),
}

impl Held {
    async fn open(kind: Idle, addr: &str, count: usize) -> anyhow::Result<Self> {
        Ok(match kind {
            Idle::KeepAlive => Self::KeepAlive(open_all(count, || open_keepalive(addr)).await?),
            Idle::WebSocket => {
                let url = format!("ws://{addr}/proxy/bench/ws");
                Self::WebSocket(open_all(count, || open_websocket(&url)).await?)
            }
        })
    }

    /// Sends one more request or message on each connection; returns how many answered.
    async fn use_each(&mut self, addr: &str) -> usize {
        match self {
            Self::KeepAlive(connections) => {
                answered(
                    connections
                        .iter_mut()
                        .map(|connection| get_small(&mut connection.sender, addr)),
                )
                .await
            }
            Self::WebSocket(sockets) => answered(sockets.iter_mut().map(echo_once)).await,
        }
    }

    /// Closes every connection, and waits (a bounded time) for the HTTP/1 ones to finish.
    async fn close(self) {
        match self {
            Self::KeepAlive(connections) => {
                // Dropping its sender tells an idle connection to close.
                let drivers: Vec<_> = connections.into_iter().map(|c| c.driver).collect();
                let _ = tokio::time::timeout(OPEN_TIMEOUT, async {
                    for driver in drivers {
                        let _ = driver.await;
                    }
                })
                .await;
            }
            Self::WebSocket(sockets) => drop(sockets),
        }
    }
}

/// Opens `count` connections with `open`, [`OPENING`] at a time.
async fn open_all<T, F>(count: usize, open: impl Fn() -> F) -> anyhow::Result<Vec<T>>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let open = &open;
    futures_util::stream::iter(0..count)
        .map(|_| async move {
            tokio::time::timeout(OPEN_TIMEOUT, open())
                .await
                .context("opening an idle connection timed out")?
        })
        .buffer_unordered(OPENING)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Runs `uses`, [`OPENING`] at a time, and counts those that succeed in time.
async fn answered(uses: impl Iterator<Item = impl Future<Output = anyhow::Result<()>>>) -> usize {
    futures_util::stream::iter(uses)
        .map(|use_once| tokio::time::timeout(OPEN_TIMEOUT, use_once))
        .buffer_unordered(OPENING)
        .filter(|outcome| std::future::ready(matches!(outcome, Ok(Ok(())))))
        .count()
        .await
}

async fn open_keepalive(addr: &str) -> anyhow::Result<KeepAlive> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting {addr}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1 handshake")?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    get_small(&mut sender, addr).await?;
    Ok(KeepAlive { sender, driver })
}

/// One GET of the small response on a kept-alive connection, body read to its end.
async fn get_small(sender: &mut SendRequest<Body>, addr: &str) -> anyhow::Result<()> {
    sender.ready().await.context("connection closed")?;
    let request = Request::get("/proxy/bench/small")
        .header(header::HOST, addr)
        .body(Body::empty())?;
    let response = sender
        .send_request(request)
        .await
        .context("sending a GET")?;
    if response.status() != StatusCode::OK {
        bail!("GET through {addr} answered {}", response.status());
    }
    let mut body = response.into_body();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        frame.context("reading a response body")?;
    }
    Ok(())
}

async fn open_websocket(url: &str) -> anyhow::Result<Socket> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("connecting {url}"))?;
    echo_once(&mut socket).await?;
    Ok(socket)
}

async fn echo_once(socket: &mut Socket) -> anyhow::Result<()> {
    socket
        .send(tokio_tungstenite::tungstenite::Message::text("idle"))
        .await?;
    match socket.next().await {
        Some(Ok(message)) if message.is_text() => Ok(()),
        other => bail!("no echo: {other:?}"),
    }
}

/// Resident memory of process `pid` and of its children (nginx's workers), in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let mut total = vm_rss_kib(pid).with_context(|| format!("reading the RSS of {pid}"))?;
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let Some(child) = entry?
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        // A process that ends while /proc is read has no memory left to count.
        if parent_pid(child) == Some(pid) {
            total += vm_rss_kib(child).unwrap_or(0);
        }
    }
    Ok(total)
}

fn vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .context("no VmRSS line")?;
    let kib = line.trim().strip_suffix("kB").context("VmRSS not in kB")?;
    Ok(kib.trim().parse()?)
}

/// The parent in `/proc/PID/stat`: the second field after the command name, which is in
/// parentheses and may itself hold spaces and parentheses.
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(1)?.parse().ok()
}

fn report(
    rows: &[Row],
    memory: &[(&str, Memory)],
    fair: FairShare,
    json_path: &Path,
) -> anyhow::Result<()> {
    print_throughput(rows)?;
    let json: Vec<_> = rows
        .iter()
        .map(|row| {
            let Row {
                name,
                small,
                large,
                ws,
            } = row;
            let mut entry = serde_json::json!({
                "name": name,
                "small": {"rps": small.rps, "p50_us": small.p50_us, "p99_us": small.p99_us},
            });
            if let Some(large) = large {
                entry["large_1mib"] = serde_json::json!({"rps": large.rps, "p50_us": large.p50_us, "p99_us": large.p99_us});
            }
            if let Some(ws) = ws {
                entry["websocket_echo"] = serde_json::json!({"round_trips_per_s": ws.per_sec, "p50_us": ws.p50_us, "p99_us": ws.p99_us});
            }
            if let Some((_, m)) = memory.iter().find(|(proxy, _)| proxy == name) {
                entry["idle_memory"] = serde_json::json!({
                    "keepalive_connections": IDLE_KEEPALIVE,
                    "keepalive_kib_per_connection": m.keepalive_kib,
                    "websockets": IDLE_WEBSOCKETS,
                    "websocket_kib_per_connection": m.websocket_kib,
                });
            }
            entry
        })
        .collect();
    println!(
        "\nidle memory: RSS growth per connection, KiB\n{:<8} | {:>16} {:>16}",
        "",
        format!("{IDLE_KEEPALIVE} keep-alive"),
        format!("{IDLE_WEBSOCKETS} WebSockets")
    );
    for (name, m) in memory {
        println!(
            "{name:<8} | {:>16.2} {:>16.2}",
            m.keepalive_kib, m.websocket_kib
        );
    }
    if let (Some((_, p)), Some((_, n))) = (
        memory.iter().find(|m| m.0 == "portico"),
        memory.iter().find(|m| m.0 == "nginx"),
    ) {
        println!(
            "portico vs nginx: keep-alive {:.2}x  WebSocket {:.2}x",
            p.keepalive_kib / n.keepalive_kib,
            p.websocket_kib / n.websocket_kib
        );
    }
    print_fair_share(fair);
    let mut json = serde_json::json!({
        "proxies": json,
        "fair_share": {
            "spinning_clients": SPINNING_CLIENTS,
            "alone_rps": fair.alone,
            "beside_spinner_rps": fair.beside_spinner,
            "kept": fair.beside_spinner / fair.alone,
        },
    });
    let row = |name: &str| rows.iter().find(|row| row.name == name);
    if let (Some(two), Some(one)) = (row("portico-2-replicas"), row("portico")) {
        json["replicas"] = serde_json::json!({
            "upstreams": 2,
            "balance": portico::registry::Balance::default().as_str(),
            "small_rps_vs_one": two.small.rps / one.small.rps,
            "small_p99_vs_one": two.small.p99_us / one.small.p99_us,
        });
    }
    std::fs::write(json_path, serde_json::to_string_pretty(&json)?)?;
    println!("\nsaved {}", json_path.display());
    Ok(())
}

/// Prints the throughput table, each row's ratios to the direct one, and the comparisons the
/// run is for, as far as their rows were measured.
fn print_throughput(rows: &[Row]) -> anyhow::Result<()> {
    let row = |name: &str| rows.iter().find(|row| row.name == name);
    let direct = row("direct").context("direct row")?;
    let width = rows.iter().map(|row| row.name.len()).max().unwrap_or(0);
    println!(
        "\n{:<width$} | {:>10} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9}",
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
    for Row {
        name,
        small,
        large,
        ws,
    } in rows
    {
        println!(
            "{name:<width$} | {:>10.0} {:>9.0} {:>9.0} | {} | {}",
            small.rps,
            small.p50_us,
            small.p99_us,
            columns(large.map(|l| [l.rps, l.p50_us, l.p99_us])),
            columns(ws.map(|w| [w.per_sec, w.p50_us, w.p99_us]))
        );
    }
    println!("\nratios to direct (throughput: higher is better; latency: lower is better)");
    for other in rows.iter().filter(|row| row.name != "direct") {
        println!("{:<width$} {}", other.name, ratios(other, direct));
    }
    for (label, measured, base) in [
        ("portico vs nginx", "portico", "nginx"),
        ("forward auth on vs off", "fwdauth", "portico"),
        ("2 replicas / 1 replica", "portico-2-replicas", "portico"),
    ] {
        if let (Some(measured), Some(base)) = (row(measured), row(base)) {
            println!("{label}: {}", ratios(measured, base));
        }
    }
    Ok(())
}

/// A load's three figures as table columns, or dashes when the load was left out.
fn columns(figures: Option<[f64; 3]>) -> String {
    match figures {
        Some([rate, p50, p99]) => format!("{rate:>9.0} {p50:>9.0} {p99:>9.0}"),
        None => format!("{:>9} {:>9} {:>9}", "-", "-", "-"),
    }
}

/// `row`'s figures over `base`'s, for the loads both of them took.
fn ratios(row: &Row, base: &Row) -> String {
    let mut text = format!(
        "small r/s {:.2}x  small p99 {:.2}x",
        row.small.rps / base.small.rps,
        row.small.p99_us / base.small.p99_us
    );
    if let (Some(large), Some(base)) = (row.large, base.large) {
        text.push_str(&format!("  1MiB r/s {:.2}x", large.rps / base.rps));
    }
    if let (Some(ws), Some(base)) = (row.ws, base.ws) {
        text.push_str(&format!(
            "  ws p50 {:.2}x  ws p99 {:.2}x",
            ws.p50_us / base.p50_us,
            ws.p99_us / base.p99_us
        ));
    }
    text
}

fn print_fair_share(fair: FairShare) {
    println!(
        "\nfair share: a healthy service's small GETs through Portico, r/s\nalone {:.0}  beside {SPINNING_CLIENTS} clients of a spinning plugin {:.0}  kept {:.2}x",
        fair.alone,
        fair.beside_spinner,
        fair.beside_spinner / fair.alone
    );
}
