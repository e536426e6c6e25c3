//! The axum server: routes, listeners, configuration reloads and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{any, get};

use crate::config::{Config, ConfigError};
use crate::metrics::{Metrics, Routed, UNROUTED};
use crate::plugin::{DirWatch, PluginError, PluginRegistry, Runtime};
use crate::proxy::{self, Proxy, ProxyError, Target, assets, headers};
use crate::registry::{Lookup, Service, ServiceTable, Source, docker, r#static};

mod confine;
mod conn;
mod listing;
mod workers;

use workers::Workers;

/// Options of `portico serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The configuration file (TOML), watched for changes. Without it, the embedded default
    /// is used: 127.0.0.1:8080, bundled plugins, no services.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The address to listen on, overriding `listen` in the configuration.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The plugins directory, overriding `plugins.dir` in the configuration.
    #[arg(long)]
    pub plugins_dir: Option<PathBuf>,
    /// The admin listener's address (metrics, the full listing), overriding `admin.listen`.
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot load the plugins: {0}")]
    Plugins(#[from] PluginError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot watch the configuration file {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// What the routes share.
#[derive(Debug, Clone)]
pub struct AppState {
    proxy: Arc<Proxy>,
    /// Whether an admin listener serves `/metrics` (then the public router does not).
    admin_listener: bool,
}

impl AppState {
    pub fn new(proxy: Arc<Proxy>, admin_listener: bool) -> Self {
        Self {
            proxy,
            admin_listener,
        }
    }

    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }
}

/// The public router: `/healthz`, `/metrics` (unless an admin listener serves it), `/proxy`
/// (what a visitor may know of the services they may open), `/proxy/{id}` (redirect to the
/// slash), `/proxy/{id}/...` (forwarded, HTTP or WebSocket), and everything else routed to a
/// service by Referer, affinity cookie or plugin claim.
pub fn app(state: AppState) -> Router {
    let metrics_route = if state.admin_listener {
        any(no_such_route)
    } else {
        get(metrics)
    };
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", metrics_route)
        .route("/proxy", get(listing::public))
        .route("/proxy/", get(listing::public))
        .route("/proxy/{id}", any(without_slash))
        .route("/proxy/{id}/", any(prefixed))
        .route("/proxy/{id}/{*path}", any(prefixed))
        .fallback(orphan)
        .with_state(state.clone());
    // The target is normalised before the inner router sees it, so routing uses the
    // normalised path.
    Router::new().fallback_service(confine::Confine::new(routes, state))
}

/// The admin router: `/healthz`, `/metrics` and `/proxy`, the full listing (upstreams,
/// sources, aliases, labels, access, plugin state). Nothing is proxied here.
pub fn admin_app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/proxy", get(listing::admin))
        .route("/proxy/", get(listing::admin))
        .fallback(no_such_route)
        .with_state(state)
}

/// A 404 for what a listener does not serve (`/metrics` on the public one when the admin
/// listener has it), without saying where else it might be.
async fn no_such_route(request: Request) -> Response {
    crate::proxy::error_response(
        StatusCode::NOT_FOUND,
        "no such route",
        headers::wants_html(request.headers()),
    )
}

async fn healthz() -> Response {
    let mut response = "ok\n".into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = state
        .proxy
        .metrics()
        .render(&state.proxy.plugins().plugins());
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The client's address, when the server was started with connect info.
fn peer(request: &Request) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// Splits `/proxy/{id}{rest}` as the client sent it (percent-encoding kept).
fn split_prefixed(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/proxy/")?;
    let end = rest.find('/').unwrap_or(rest.len());
    Some((&rest[..end], &rest[end..]))
}

fn unknown(state: &AppState, id: &str, html: bool, started: Instant) -> Response {
    let err = ProxyError::UnknownService {
        id: id.to_owned(),
        // With forward authentication, ids are shown only to those who may open them.
        known: (!state.proxy.auth_enabled()).then(|| state.proxy.services().ids()),
    };
    unrouted(state, &err, html, started)
}

fn unrouted(state: &AppState, err: &ProxyError, html: bool, started: Instant) -> Response {
    let response = err.render(html);
    state
        .proxy
        .metrics()
        .service(UNROUTED)
        .response(response.status().as_u16(), started.elapsed());
    response
}

/// The service `/proxy/{x}` names; with `hold`, a starting one is waited for (boundedly).
/// Unknown is a 404, ambiguous a 409 that lists the candidates.
async fn resolve(
    state: &AppState,
    x: &str,
    hold: bool,
    html: bool,
    started: Instant,
) -> Result<Arc<Service>, Response> {
    let services = state.proxy.services();
    let found = if hold {
        services.lookup_ready(x).await
    } else {
        services.lookup(x)
    };
    match found {
        Lookup::Found(service) => Ok(service),
        Lookup::Missing => Err(unknown(state, x, html, started)),
        Lookup::Ambiguous(candidates) => {
            let err = ProxyError::Ambiguous {
                id: x.to_owned(),
                candidates: if state.proxy.auth_enabled() {
                    Vec::new()
                } else {
                    candidates
                },
            };
            Err(unrouted(state, &err, html, started))
        }
    }
}

async fn without_slash(State(state): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let html = headers::wants_html(request.headers());
    let Some((id, _)) = split_prefixed(request.uri().path()) else {
        return unknown(&state, "", html, started);
    };
    let upgrade = proxy::websocket::is_upgrade(&request);
    let service = match resolve(&state, id, upgrade, html, started).await {
        Ok(service) => service,
        Err(response) => return response,
    };
    if upgrade {
        // A WebSocket client cannot follow a redirect: serve the root directly.
        let target = Target {
            service,
            address: id.to_owned(),
            path: "/".to_owned(),
            query: request.uri().query().map(str::to_owned),
            prefixed: true,
        };
        let peer = peer(&request);
        return state.proxy.handle(target, request, peer).await;
    }
    let location = match request.uri().query() {
        Some(query) => format!("/proxy/{id}/?{query}"),
        None => format!("/proxy/{id}/"),
    };
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    state
        .proxy
        .metrics()
        .service(id)
        .response(response.status().as_u16(), started.elapsed());
    response
}

async fn prefixed(State(state): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let html = headers::wants_html(request.headers());
    let Some((id, rest)) = split_prefixed(request.uri().path()) else {
        return unknown(&state, "", html, started);
    };
    let service = match resolve(&state, id, true, html, started).await {
        Ok(service) => service,
        Err(response) => return response,
    };
    let target = Target {
        service,
        address: id.to_owned(),
        path: rest.to_owned(),
        query: request.uri().query().map(str::to_owned),
        prefixed: true,
    };
    let peer = peer(&request);
    state.proxy.handle(target, request, peer).await
}

async fn orphan(State(state): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let html = headers::wants_html(request.headers());
    let path = request.uri().path().to_owned();
    if let Some((id, _)) = split_prefixed(&path) {
        return unknown(&state, id, html, started);
    }
    let query = request.uri().query().map(str::to_owned);
    let routed = assets::route(
        request.method().as_str(),
        &path,
        query.as_deref(),
        request.headers(),
        state.proxy.services(),
        state.proxy.plugins(),
    )
    .await;
    match routed {
        Ok((service, via)) => {
            tracing::debug!(%path, service = %service.id, ?via, "un-prefixed request routed");
            let routed = match via {
                assets::Via::Referer => Routed::Referer,
                assets::Via::Cookie => Routed::Cookie,
                assets::Via::Claim(_) => Routed::Claim,
            };
            state.proxy.metrics().unprefixed(&service.id, &path, routed);
            let peer = peer(&request);
            state
                .proxy
                .handle(
                    Target {
                        address: service.id.clone(),
                        service,
                        path,
                        query,
                        prefixed: false,
                    },
                    request,
                    peer,
                )
                .await
        }
        Err(why) => {
            state.proxy.metrics().unrouted();
            unrouted(&state, &ProxyError::NoRoute(why), html, started)
        }
    }
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The admin listener's address, when `[admin] listen` is set.
    pub admin_addr: Option<SocketAddr>,
    /// Its state (service table, plugins, metrics).
    pub state: AppState,
    workers: Workers,
    admin: Option<Admin>,
    _config_watch: Option<r#static::ConfigWatch>,
    _plugin_watch: Option<DirWatch>,
    _discovery: Option<docker::Discovery>,
}

impl Running {
    /// Reads the configuration file again (what SIGHUP does); false without one.
    pub fn reload(&self) -> bool {
        match &self._config_watch {
            Some(watch) => {
                watch.reload();
                true
            }
            None => false,
        }
    }

    /// Closes the WebSockets with `1001 Going Away`, stops accepting connections (on both
    /// listeners) and waits (boundedly) for requests in flight.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        self.state
            .proxy
            .close_websockets(Duration::from_secs(2))
            .await;
        let admin = self.admin.take();
        let drained = async {
            let workers = self.workers.drain().await;
            if let Some(admin) = admin {
                admin.stop().await;
            }
            workers
        };
        match tokio::time::timeout(Duration::from_secs(10), drained).await {
            Ok(result) => result.map_err(ServeError::Io),
            Err(_) => {
                tracing::warn!("requests still in flight after 10 s; stopping anyway");
                Ok(())
            }
        }
    }
}

/// The admin listener: a plain `axum::serve` on the control runtime (its traffic is a scrape
/// now and then, not the proxy's). Dropping it stops it at once.
#[derive(Debug)]
struct Admin {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Admin {
    /// Serves [`admin_app`] on `listener`.
    fn spawn(listener: tokio::net::TcpListener, state: AppState) -> Self {
        let stop = tokio::sync::watch::Sender::new(false);
        let mut stopped = stop.subscribe();
        let serve = axum::serve(listener, admin_app(state)).with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        });
        let task = tokio::spawn(async move {
            if let Err(err) = serve.await {
                tracing::error!(%err, "the admin listener failed");
            }
        });
        Self { stop, task }
    }

    /// Stops accepting and waits for the requests in flight.
    async fn stop(mut self) {
        self.stop.send_replace(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Loads the plugins, builds the service table, binds `config.listen` and serves in the
/// background. With `config_path`, the file is watched and valid edits are applied live.
pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Running, ServeError> {
    // A file was checked as it was read; command-line overrides and configurations built in
    // code are checked here (an `[auth]` that does not parse must never mean "no auth").
    config.check()?;
    let runtime = Runtime::new(config.plugins.runtime())?;
    let plugins = PluginRegistry::load(
        runtime,
        Some(config.plugins.dir.clone()),
        config.plugins.isolation_policy(),
    )
    .await?;
    let plugin_watch = match plugins.watch() {
        Ok(watch) => Some(watch),
        Err(err) => {
            tracing::warn!(dir = %config.plugins.dir.display(), %err, "cannot watch the plugins directory; plugins load only at start");
            None
        }
    };
    let services = ServiceTable::new();
    services.replace_source(Source::Static, r#static::services(&config));
    let metrics = Arc::new(Metrics::default());
    let proxy = Arc::new(Proxy::new(
        &config,
        Arc::clone(&services),
        plugins,
        Arc::clone(&metrics),
    ));
    let discovery = docker::spawn(
        config.docker.clone(),
        Arc::clone(&services),
        Arc::<PluginRegistry>::clone(proxy.plugins()),
    );
    let config_watch = match &config_path {
        Some(path) => Some(watch_config(path.clone(), &config, &proxy)?),
        None => None,
    };
    let listeners =
        workers::bind(config.listen, config.workers()).map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listeners[0].local_addr()?;
    let admin_listener = match config.admin.listen {
        Some(admin) => Some(
            tokio::net::TcpListener::bind(admin)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: admin,
                    source,
                })?,
        ),
        None => None,
    };
    let admin_addr = admin_listener
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()?;
    let state = AppState::new(proxy, admin_addr.is_some());
    let descriptors = conn::raise_descriptor_limit();
    let cap = match config.client.max_connections {
        0 => conn::default_cap(descriptors),
        n => n,
    };
    let settings = workers::Settings {
        timeouts: conn::Timeouts {
            header: config.client.header_timeout(),
            keepalive: config.client.keepalive_timeout(),
        },
        cap: cap.div_ceil(config.workers()),
    };
    let workers = Workers::spawn(listeners, &app(state.clone()), settings)?;
    let admin = admin_listener.map(|listener| Admin::spawn(listener, state.clone()));
    tracing::info!(%addr, workers = config.workers(), max_connections = cap, services = services.list().len(), auth = config.auth.enabled(), "Portico listening");
    if let Some(admin_addr) = admin_addr {
        tracing::info!(%admin_addr, "admin listener: /metrics and the full service listing");
    }
    Ok(Running {
        addr,
        admin_addr,
        state,
        workers,
        admin,
        _config_watch: config_watch,
        _plugin_watch: plugin_watch,
        _discovery: discovery,
    })
}

fn watch_config(
    path: PathBuf,
    initial: &Config,
    proxy: &Arc<Proxy>,
) -> Result<r#static::ConfigWatch, ServeError> {
    let applied = Arc::downgrade(proxy);
    let refused = Arc::downgrade(proxy);
    let running = initial.clone();
    r#static::watch(
        path.clone(),
        move |mut config| {
            let Some(proxy) = applied.upgrade() else {
                return;
            };
            // The command line's --listen and --plugins-dir still stand.
            config.override_with(running.overrides.clone());
            for what in restart_only_changes(&running, &config) {
                tracing::warn!("changed {what} take effect at the next start");
            }
            proxy
                .services()
                .replace_source(Source::Static, r#static::services(&config));
            proxy.reconfigure(&config);
            proxy.metrics().config_reloaded();
        },
        move || {
            if let Some(proxy) = refused.upgrade() {
                proxy.metrics().config_rejected();
            }
        },
    )
    .map_err(|source| ServeError::Watch { path, source })
}

/// The settings that differ between the running configuration and an edited one but apply
/// only at the next start, as people name them.
fn restart_only_changes(running: &Config, edited: &Config) -> Vec<&'static str> {
    let client = |c: &crate::config::ClientConfig| {
        (
            c.header_timeout_ms,
            c.keepalive_timeout_ms,
            c.max_connections,
        )
    };
    [
        (
            edited.listen != running.listen || edited.workers != running.workers,
            "listen or workers",
        ),
        (edited.admin != running.admin, "[admin] listen"),
        (edited.plugins != running.plugins, "[plugins] settings"),
        (edited.docker != running.docker, "[docker] settings"),
        (
            client(&edited.client) != client(&running.client),
            "[client] timeouts and max_connections",
        ),
    ]
    .into_iter()
    .filter_map(|(changed, what)| changed.then_some(what))
    .collect()
}

/// Runs the proxy until interrupted (Ctrl-C or SIGTERM).
pub async fn serve(args: ServeArgs) -> Result<(), ServeError> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    };
    config.override_with(crate::config::Overrides {
        listen: args.listen,
        plugins_dir: args.plugins_dir,
        admin_listen: args.admin_listen,
    });
    let mut signals = Signals::new();
    let running = start(config, args.config.clone()).await?;
    while let Signal::Reload = signals.next().await {
        if running.reload() {
            tracing::info!("SIGHUP: reading the configuration file again");
        } else {
            tracing::info!("SIGHUP: no configuration file to read again");
        }
    }
    tracing::info!("shutting down");
    running.shutdown().await
}

/// What a signal asks for.
enum Signal {
    /// Ctrl-C or SIGTERM.
    Stop,
    /// SIGHUP: read the configuration again, as nginx does.
    Reload,
}

/// The signals Portico answers, registered once so that none is lost between two waits.
struct Signals {
    terminate: Option<tokio::signal::unix::Signal>,
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self {
            terminate: signal(SignalKind::terminate()).ok(),
            hangup: signal(SignalKind::hangup()).ok(),
        }
    }

    async fn next(&mut self) -> Signal {
        async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Signal::Stop,
            () = recv(&mut self.terminate) => Signal::Stop,
            () = recv(&mut self.hangup) => Signal::Reload,
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::{restart_only_changes, split_prefixed};
    use crate::config::{Config, Overrides};

    #[test]
    fn prefixed_paths_split() {
        assert_eq!(split_prefixed("/proxy/a/b/c"), Some(("a", "/b/c")));
        assert_eq!(split_prefixed("/proxy/a/"), Some(("a", "/")));
        assert_eq!(split_prefixed("/proxy/a"), Some(("a", "")));
        assert_eq!(split_prefixed("/other"), None);
    }

    #[test]
    fn command_line_settings_are_no_edit() {
        let file = "listen = \"127.0.0.1:8080\"\n";
        let overrides = Overrides {
            listen: Some("127.0.0.1:9999".parse().expect("addr")),
            plugins_dir: Some("/opt/plugins".into()),
            admin_listen: Some("127.0.0.1:9901".parse().expect("addr")),
        };
        let mut running = Config::parse(file, None).expect("valid");
        running.override_with(overrides.clone());
        let mut edited = Config::parse(
            &format!("{file}[[services]]\nid = \"a\"\nupstreams = [\"http://127.0.0.1:1\"]\n"),
            None,
        )
        .expect("valid");
        edited.override_with(running.overrides.clone());
        assert_eq!(restart_only_changes(&running, &edited), Vec::<&str>::new());
        let moved = Config::parse(
            "listen = \"127.0.0.1:8081\"\n[plugins]\ncall_timeout_ms = 10\n",
            None,
        )
        .expect("valid");
        assert_eq!(
            restart_only_changes(&running, &moved),
            vec!["listen or workers", "[admin] listen", "[plugins] settings"],
            "without the overrides, the file's own values differ"
        );
    }
}
