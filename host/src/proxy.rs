//! Forwarding: a request for a service is shaped by the service's plugin and sent to one of its
//! upstreams, over HTTP ([`http`]) or as a relayed WebSocket ([`websocket`]).

pub mod assets;
pub mod auth;
mod body;
mod connector;
pub mod headers;
mod http;
mod retry;
pub mod websocket;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::config::{ClientConfig, Config, ProxyConfig, Retry, Timeouts};
use crate::metrics::Metrics;
use crate::plugin::{self, Plugin, PluginError, PluginRegistry};
use crate::registry::{Availability, Service, ServiceTable};

use headers::ClientView;

/// Why a request could not be forwarded. Each variant maps to one status code.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `known` is `None` when the ids are not for everyone to see (forward authentication).
    #[error("no service with id {id:?}{}", known_list(.known))]
    UnknownService {
        id: String,
        known: Option<Vec<String>>,
    },
    #[error("{0}")]
    NoRoute(String),
    /// `candidates` is empty when the ids are not for everyone to see.
    #[error("{id:?} names several services{}", candidate_list(.candidates))]
    Ambiguous { id: String, candidates: Vec<String> },
    #[error("sign in to open service {service:?}")]
    Unauthenticated { service: String },
    #[error("you may not open service {service:?}")]
    Forbidden { service: String },
    #[error("the authentication service did not answer ({detail})")]
    AuthUnavailable { detail: String },
    #[error("service {service:?} is unavailable: {reason}")]
    Unavailable { service: String, reason: String },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("the request target is too long: {0}")]
    UriTooLong(String),
    #[error("the request body did not arrive in time: {0}")]
    RequestTimeout(String),
    #[error("service {service:?}: no upstream accepted the connection ({detail})")]
    Refused { service: String, detail: String },
    #[error("service {service:?}: the upstream closed the connection before answering ({detail})")]
    Reset { service: String, detail: String },
    #[error("service {service:?}: the upstream did not answer in time ({detail})")]
    Timeout { service: String, detail: String },
    #[error("service {service:?}: the upstream's answer was not valid HTTP ({detail})")]
    Invalid { service: String, detail: String },
    #[error("service {service:?}: the plugin failed and the service is fail-closed: {error}")]
    Plugin { service: String, error: PluginError },
}

fn known_list(known: &Option<Vec<String>>) -> String {
    match known {
        None => String::new(),
        Some(known) if known.is_empty() => "; known services: none".to_owned(),
        Some(known) => format!("; known services: {}", known.join(", ")),
    }
}

fn candidate_list(candidates: &[String]) -> String {
    if candidates.is_empty() {
        String::new()
    } else {
        format!("; use one of: {}", candidates.join(", "))
    }
}

impl ProxyError {
    /// The status code this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownService { .. } | Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Ambiguous { .. } => StatusCode::CONFLICT,
            Self::Unavailable { .. } | Self::AuthUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Refused { .. }
            | Self::Reset { .. }
            | Self::Invalid { .. }
            | Self::Plugin { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The error as a response: HTML for a browser, JSON otherwise. Upstream and plugin
    /// errors are told without their detail (OS error text, internal addresses, plugin
    /// messages), which goes to the log instead.
    pub fn render(&self, html: bool) -> Response {
        error_response(self.status(), &self.public_message(), html)
    }

    /// What the client is told.
    fn public_message(&self) -> String {
        match self {
            Self::Refused { service, .. } => {
                format!("service {service:?}: no upstream accepted the connection")
            }
            Self::Reset { service, .. } => {
                format!("service {service:?}: the upstream closed the connection before answering")
            }
            Self::Timeout { service, .. } => {
                format!("service {service:?}: the upstream did not answer in time")
            }
            Self::Invalid { service, .. } => {
                format!("service {service:?}: the upstream's answer was not valid HTTP")
            }
            Self::Plugin { service, .. } => {
                format!("service {service:?}: its plugin failed and the service is fail-closed")
            }
            Self::AuthUnavailable { .. } => {
                "authentication is unavailable at the moment; try again shortly".to_owned()
            }
            other => other.to_string(),
        }
    }
}

/// A short error page or JSON document.
pub fn error_response(status: StatusCode, message: &str, html: bool) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let (content_type, body) = if html {
        let message = escape_html(message);
        let code = status.as_u16();
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\n<body><h1>{code} {reason}</h1>\n<p>{message}</p>\n<p><small>Portico</small></p></body></html>\n"
            ),
        )
    } else {
        let doc =
            serde_json::json!({ "status": status.as_u16(), "error": reason, "message": message });
        ("application/json", format!("{doc}\n"))
    };
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

thread_local! {
    /// The index of the serving thread (see [`enter_worker`]); 0 elsewhere.
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as serving thread `index`, whose requests use the `index`th
/// HTTP client.
pub fn enter_worker(index: usize) {
    WORKER.with(|worker| worker.set(index));
}

/// Settings that a configuration reload changes in place.
#[derive(Debug, Clone)]
struct Live {
    retry: Retry,
    proxy: ProxyConfig,
    client: ClientConfig,
    /// Forward authentication, when on.
    auth: Option<Arc<auth::Auth>>,
    /// When a failing replica is ejected.
    outliers: crate::registry::balance::Outliers,
}

impl Live {
    /// The settings of `config`; the forward authentication of `previous` (and its cache) is
    /// kept when its section did not change.
    fn of(config: &Config, previous: Option<&Self>) -> Self {
        let auth = match previous.and_then(|live| live.auth.as_ref()) {
            Some(auth) if *auth.config() == config.auth => Some(Arc::clone(auth)),
            _ => auth::Auth::new(&config.auth),
        };
        Self {
            retry: config.retry.clone(),
            proxy: config.proxy.clone(),
            client: config.client.clone(),
            auth,
            outliers: config.balance.outliers(),
        }
    }
}

/// The forwarding engine: the HTTP client, the service table, the plugins and the metrics.
#[derive(Debug)]
pub struct Proxy {
    services: Arc<ServiceTable>,
    plugins: Arc<PluginRegistry>,
    metrics: Arc<Metrics>,
    /// One HTTP client (and so one upstream connection pool) per serving thread.
    clients: Vec<UpstreamClient>,
    timeouts: Timeouts,
    live: ArcSwap<Live>,
    /// Turned true at shutdown: every WebSocket relay closes both sides with `1001`.
    stop: tokio::sync::watch::Sender<bool>,
}

/// The client of the upstream connections: HTTP/1.1 with keep-alive pooling. Requests and
/// responses pass through as `http` types, bodies streaming, with nothing added: no default
/// headers, no redirects followed, no retries beyond a request that never left a pooled
/// connection closed under it (Portico's own retries are in [`retry`]).
type UpstreamClient = hyper_util::client::legacy::Client<connector::Connector, axum::body::Body>;

fn upstream_client(timeouts: &Timeouts) -> UpstreamClient {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_connect_timeout(Some(timeouts.connect()));
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(timeouts.pool_idle())
        .pool_max_idle_per_host(256)
        .build(connector::Connector(connector))
}

/// Where a request goes: the service, the path below its prefix, and the prefix.
#[derive(Debug, Clone)]
pub struct Target {
    pub service: Arc<Service>,
    /// The name the client used in `/proxy/{x}/` (the id or an alias), which makes the prefix
    /// the app must appear under.
    pub address: String,
    /// The path as the plugin sees it: below the prefix, or the whole path for un-prefixed
    /// requests.
    pub path: String,
    pub query: Option<String>,
    /// False for a request that arrived without `/proxy/{x}` and was routed by Referer,
    /// cookie or claim.
    pub prefixed: bool,
}

/// Per-request context: what every phase needs to know about the request.
#[derive(Debug)]
struct Context {
    service: Arc<Service>,
    plugin: Arc<Plugin>,
    request: plugin::Request,
    view: ClientView,
    started: Instant,
    prefixed: bool,
    /// Who the auth service said the caller is, when it was asked.
    identity: Option<Arc<auth::Identity>>,
    /// The replica the request's affinity cookie names (its tag), for a sticky service.
    pinned: Option<String>,
}

impl Context {
    /// Whether the prefix stays on upstream paths in the generic behaviour: the plugin says so
    /// for all its services, or the service does (Jupyter with `base_url`).
    fn keeps_prefix(&self) -> bool {
        self.plugin.info().keep_prefix || self.service.keep_prefix
    }

    /// The headers the auth service granted, set last on the upstream request.
    fn granted(&self) -> &[(axum::http::HeaderName, HeaderValue)] {
        self.identity
            .as_deref()
            .map_or(&[], auth::Identity::headers)
    }
}

impl Proxy {
    /// Builds the engine; the upstream clients take their timeouts from `config`.
    pub fn new(
        config: &Config,
        services: Arc<ServiceTable>,
        plugins: Arc<PluginRegistry>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let timeouts = config.timeouts.clone();
        let clients = (0..config.workers())
            .map(|_| upstream_client(&timeouts))
            .collect();
        Self {
            services,
            plugins,
            metrics,
            clients,
            timeouts,
            live: ArcSwap::from_pointee(Live::of(config, None)),
            stop: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Closes every relayed WebSocket with `1001 Going Away` and waits (up to `grace`) for the
    /// relays to end.
    pub async fn close_websockets(&self, grace: std::time::Duration) {
        self.stop.send_replace(true);
        let deadline = Instant::now() + grace;
        while self.stop.receiver_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Applies the parts of a new configuration that change without a restart.
    pub fn reconfigure(&self, config: &Config) {
        if config.timeouts != self.timeouts {
            tracing::warn!("changed [timeouts] take effect at the next start");
        }
        let live = Live::of(config, Some(&self.live.load()));
        self.live.store(Arc::new(live));
    }

    /// True when forward authentication is on: then service ids are shown only to those who
    /// may open them.
    pub fn auth_enabled(&self) -> bool {
        self.live.load().auth.is_some()
    }

    /// Who the caller of `request` is, for showing them what they may open; the auth service
    /// is asked only when `needed` (some service is not open). With a sign-in link for a caller
    /// it did not accept, when `auth.signin_url` is set.
    pub async fn caller(
        &self,
        request: auth::Head<'_>,
        peer: Option<std::net::IpAddr>,
        needed: bool,
    ) -> Result<(auth::Caller, Option<String>), ProxyError> {
        let live = self.live.load_full();
        let view = ClientView::of(
            request.headers,
            request.uri.host(),
            peer,
            live.proxy.trust_forwarded_headers,
        );
        let caller = auth::caller(self, &live, request, &view, needed).await?;
        let signin = match caller {
            auth::Caller::Anonymous => auth::signin_link(&live, request.uri, &view),
            auth::Caller::Anyone | auth::Caller::Known(_) => None,
        };
        Ok((caller, signin))
    }

    /// The longest path and query a client may send (`[client]`, changed by a reload).
    pub fn target_limits(&self) -> (usize, usize) {
        let live = self.live.load();
        (live.client.max_path_bytes, live.client.max_query_bytes)
    }

    /// The HTTP client of the serving thread this runs on. A pooled upstream connection is
    /// driven by the runtime that opened it, so each worker keeps its own.
    fn client(&self) -> &UpstreamClient {
        let index = WORKER.with(std::cell::Cell::get);
        &self.clients[index % self.clients.len()]
    }

    pub fn services(&self) -> &Arc<ServiceTable> {
        &self.services
    }

    pub fn plugins(&self) -> &Arc<PluginRegistry> {
        &self.plugins
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Forwards a request (HTTP or WebSocket upgrade) to `target` and answers it. Errors are
    /// rendered here, once, and every response is counted.
    pub async fn handle(
        self: &Arc<Self>,
        target: Target,
        mut request: axum::extract::Request,
        peer: Option<std::net::IpAddr>,
    ) -> Response {
        let started = Instant::now();
        let live = self.live.load_full();
        let html = headers::wants_html(request.headers());
        let view = ClientView::of(
            request.headers(),
            request.uri().host(),
            peer,
            live.proxy.trust_forwarded_headers,
        );
        // The auth phase first: before the service's state (which may name its container) is
        // told, and before any plugin call or upstream connection. Boxed like the forwarding
        // below, and skipped altogether when there is nothing to check.
        let identity = if auth::applies(&live, &target.service) {
            let admitted = auth::admit(self, &live, &target.service, &mut request, &view);
            match Box::pin(admitted).await {
                Ok(identity) => identity,
                Err(refusal) => {
                    self.metrics
                        .service(&target.service.id)
                        .response(refusal.status().as_u16(), started.elapsed());
                    return refusal;
                }
            }
        } else {
            None
        };
        let unavailable = match target.service.current_availability() {
            Availability::Ready => None,
            Availability::Starting => Some("its health check has not passed yet".to_owned()),
            Availability::Unavailable(reason) => Some(reason),
        };
        if let Some(reason) = unavailable {
            let err = ProxyError::Unavailable {
                service: target.service.id.clone(),
                reason,
            };
            let response = err.render(html);
            self.metrics
                .service(&target.service.id)
                .response(response.status().as_u16(), started.elapsed());
            return response;
        }
        let plugin = self.plugins.for_type(&target.service.service_type);
        let plugin_request = plugin::Request {
            method: request.method().as_str().to_owned(),
            path: target.path,
            query: target.query,
            prefix: format!("/proxy/{}", target.address),
            public_host: view.host.clone(),
            scheme: view.scheme.clone(),
            headers: headers::for_plugin(request.headers(), |name| {
                plugin.wants_request_header(name)
            }),
            service: plugin::Service {
                id: target.service.id.clone(),
                service_type: target.service.service_type.clone(),
                labels: target.service.labels.clone().into_iter().collect(),
                upstream: target.service.primary_upstream(),
            },
        };
        let metrics = self.metrics.service(&target.service.id);
        let refreshed = identity
            .as_ref()
            .filter(|identity| identity.sets_cookies())
            .cloned();
        let pinned = if target.service.sticky {
            headers::cookie(
                request.headers(),
                &crate::registry::replica_cookie(&target.service.id),
            )
        } else {
            None
        };
        let ctx = Context {
            pinned,
            service: target.service,
            plugin,
            request: plugin_request,
            view,
            started,
            prefixed: target.prefixed,
            identity,
        };
        // Both futures are boxed: inline, they would make this one (and axum's boxed handler
        // future) kilobytes large, copied on every request.
        let result = if websocket::is_upgrade(&request) {
            Box::pin(websocket::forward(self, &live, ctx, request)).await
        } else {
            Box::pin(http::forward(self, &live, ctx, request)).await
        };
        let mut response = result.unwrap_or_else(|err| {
            tracing::debug!(error = %err, "request failed");
            err.render(html)
        });
        if let Some(identity) = refreshed {
            identity.pass_cookies(&mut response);
        }
        metrics.response(response.status().as_u16(), started.elapsed());
        response
    }
}

/// Calls a plugin hook and, when it fails, uses the generic behaviour, unless the service is
/// fail-closed.
async fn with_fallback<T>(
    ctx_service: &Service,
    call: impl Future<Output = Result<T, PluginError>>,
    fallback: impl FnOnce() -> T,
) -> Result<T, ProxyError> {
    match call.await {
        Ok(answer) => Ok(answer),
        Err(PluginError::ClientInput(err)) => Err(match err {
            plugin::guard::GuardError::TooLong { .. } => ProxyError::UriTooLong(err.to_string()),
            _ => ProxyError::BadRequest(err.to_string()),
        }),
        // Not asked at all (the plugin is at its share of calls, or quarantined): a passing
        // state of the plugin, not an answer from it, so 503 rather than 502.
        Err(PluginError::Busy | PluginError::Quarantined) if ctx_service.fail_closed => {
            Err(ProxyError::Unavailable {
                service: ctx_service.id.clone(),
                reason:
                    "its plugin cannot take requests at the moment and the service is fail-closed"
                        .to_owned(),
            })
        }
        Err(error) if ctx_service.fail_closed => Err(ProxyError::Plugin {
            service: ctx_service.id.clone(),
            error,
        }),
        Err(_) => Ok(fallback()),
    }
}

/// The upstream URI for `path` and `query` below `base` (see [`crate::path::join`]).
fn upstream_uri(
    base: &url::Url,
    path: &str,
    query: Option<&str>,
) -> Result<axum::http::Uri, ProxyError> {
    crate::path::join(base, path, query)
        .map_err(|err| ProxyError::BadRequest(format!("cannot build the upstream URI: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_render_for_browsers_and_programs() {
        let err = ProxyError::Refused {
            service: "a<b".to_owned(),
            detail: "connection refused".to_owned(),
        };
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        let html = err.render(true);
        assert_eq!(
            html.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let json = err.render(false);
        assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(escape_html("a<b&\""), "a&lt;b&amp;&quot;");
    }
}
