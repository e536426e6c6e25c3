//! The `portico` binary as an operator runs it: under a low file descriptor limit, with
//! signals, and with a broken plugin dropped into its directory.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};

/// A running `portico` with its configuration and log in a temporary directory.
struct Running {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Running {
    /// Starts `portico --config` with `body` after `listen`, under `ulimit -n {limit}` when
    /// given, and waits until `/healthz` answers.
    fn start(body: &str, limit: Option<u32>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = free_addr();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).expect("plugins dir");
        let config = dir.path().join("portico.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{addr}\"\nworkers = 2\n{body}\n[plugins]\ndir = {:?}\n",
                plugins.display().to_string()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.path().join("portico.log")).expect("log");
        let limit = limit.map_or_else(String::new, |n| format!("ulimit -n {n} && "));
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("{limit}exec \"$0\" --config \"$1\""))
            .arg(env!("CARGO_BIN_EXE_portico"))
            .arg(&config)
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("portico starts");
        let running = Self { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while get(addr, "/healthz").is_none_or(|answer| !answer.starts_with("HTTP/1.1 200")) {
            assert!(
                Instant::now() < deadline,
                "portico did not start: {}",
                running.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        running
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("portico.log")).unwrap_or_default()
    }

    fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// One GET on a new connection; the whole answer, or `None` when the connection failed.
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: portal\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// An upstream on a thread of its own: `200 up` on every path, and a WebSocket echo on `/ws`.
fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            listener.set_nonblocking(true).expect("nonblocking");
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let app = axum::Router::new()
                .route(
                    "/ws",
                    axum::routing::get(|ws: axum::extract::ws::WebSocketUpgrade| async move {
                        ws.on_upgrade(|mut socket| async move {
                            while let Some(Ok(message)) = socket.recv().await {
                                if socket.send(message).await.is_err() {
                                    break;
                                }
                            }
                        })
                    }),
                )
                .fallback(|| async { "up" });
            let _ = axum::serve(listener, app).await;
        });
    });
    addr
}

fn service(up: SocketAddr) -> String {
    format!("[[services]]\nid = \"app\"\nupstreams = [\"http://{up}\"]\n")
}

#[test]
fn silent_connections_past_the_descriptor_limit_do_not_starve_anyone() {
    // The test holds more sockets than Portico may open.
    rlimit::increase_nofile_limit(4096).expect("raise the test's own limit");
    let up = upstream();
    let body = format!(
        "[client]\nheader_timeout_ms = 120000\nkeepalive_timeout_ms = 120000\n{}",
        service(up)
    );
    let portico = Running::start(&body, Some(1024));
    let mut silent = Vec::new();
    for _ in 0..1100 {
        if let Ok(stream) = TcpStream::connect_timeout(&portico.addr, Duration::from_secs(5)) {
            silent.push(stream);
        }
    }
    assert!(
        silent.len() >= 1000,
        "only {} connections opened",
        silent.len()
    );
    for path in ["/healthz", "/proxy/app/"] {
        let answer = get(portico.addr, path).unwrap_or_default();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "{path} while 1,100 silent connections are held: {answer:?}\n{}",
            portico.log()
        );
    }
    drop(silent);
}

#[test]
fn sighup_reloads_and_sigterm_closes_websockets_with_going_away() {
    let up = upstream();
    let portico = Running::start(&service(up), None);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let url = format!("ws://{}/proxy/app/ws", portico.addr);
        let (mut socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WebSocket through Portico");
        socket
            .send(tokio_tungstenite::tungstenite::Message::text("hi"))
            .await
            .expect("send");
        let echoed = socket.next().await.expect("echo").expect("echo");
        assert_eq!(echoed.into_text().expect("text").as_str(), "hi");

        portico.signal("HUP");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            get(portico.addr, "/healthz").is_some_and(|a| a.starts_with("HTTP/1.1 200")),
            "SIGHUP stopped Portico: {}",
            portico.log()
        );
        assert!(portico.log().contains("SIGHUP"), "{}", portico.log());

        portico.signal("TERM");
        let closed = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("closed in time");
        match closed {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1001, "{frame:?}");
            }
            other => panic!("expected a 1001 close, got {other:?}"),
        }
    });
}

#[test]
fn a_broken_plugin_file_is_refused_once() {
    let portico = Running::start("", None);
    std::fs::write(
        portico.plugins_dir().join("broken.wasm"),
        b"\0asm\x01\0\0\0 not a component",
    )
    .expect("write");
    // Long enough for several rounds of the watcher if its own reads retriggered it.
    std::thread::sleep(Duration::from_secs(3));
    let log = portico.log();
    assert_eq!(log.matches("plugin refused").count(), 1, "{log}");
    assert!(Path::new(&portico.plugins_dir()).exists());
}
