//! The configuration file: its types, the embedded default and validation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::plugin::{Isolation, IsolationPolicy, QuarantinePolicy, RuntimeConfig};

/// The configuration used when no file is given: listen on 127.0.0.1:8080, bundled plugins,
/// no services.
pub const DEFAULT: &str = r#"
listen = "127.0.0.1:8080"
"#;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration{}: {message}", origin(.path))]
    Parse {
        path: Option<PathBuf>,
        message: String,
    },
    #[error("invalid configuration{}: {message}", origin(.path))]
    Invalid {
        path: Option<PathBuf>,
        message: String,
    },
}

fn origin(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" in {}", p.display()))
        .unwrap_or_default()
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The address the proxy listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Threads serving requests, each with its own event loop and upstream connections;
    /// 0 means one per CPU.
    #[serde(default)]
    pub workers: usize,
    /// The services served under `/proxy/{id}/`.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Where plugins come from and how they run.
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Retries of upstream connection failures.
    #[serde(default)]
    pub retry: Retry,
    /// Forwarding limits and switches.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// Discovery of labelled Docker containers.
    #[serde(default)]
    pub docker: DockerConfig,
    /// What clients may send and hold: timeouts, connections, request target limits.
    #[serde(default)]
    pub client: ClientConfig,
    /// The admin listener: metrics and the full service listing, off the public port.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Passive health of upstreams: when a failing one is ejected.
    #[serde(default)]
    pub balance: BalanceConfig,
    /// What the command line set over the file (`--listen`, `--plugins-dir`), applied again to
    /// every edited version of the file.
    #[serde(skip)]
    pub overrides: Overrides,
    /// Forward authentication: who may open which service.
    #[serde(default)]
    pub auth: AuthConfig,
}

/// One `[[services]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The id in `/proxy/{id}`: letters, digits, `.`, `_` and `-`.
    pub id: String,
    /// The service type, which picks the plugin; unknown types use the generic plugin.
    #[serde(rename = "type", default = "default_type")]
    pub service_type: String,
    /// Upstream base URLs: each is a replica of the service.
    pub upstreams: Vec<String>,
    /// How requests are spread over the upstreams.
    #[serde(default)]
    pub balance: crate::registry::Balance,
    /// Pin each browser session to one upstream with a cookie; by default on for the
    /// frameworks that keep session state in one process (Streamlit, Dash, Panel, Gradio…).
    #[serde(default)]
    pub sticky: Option<bool>,
    /// A path that answers 2xx once the app is ready: an upstream takes traffic only after it
    /// did, probed with backoff.
    #[serde(default)]
    pub health_path: Option<String>,
    /// The app serves under `/proxy/{id}/` itself (Jupyter with `base_url`): keep the prefix
    /// on upstream paths. Passed to the plugin as the label `portico.keep_prefix`.
    #[serde(default)]
    pub keep_prefix: bool,
    /// Answer 502 instead of using the generic behaviour when the plugin fails.
    #[serde(default)]
    pub fail_closed: bool,
    /// Free-form labels passed to the plugin.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `"forward"` (the default: the service needs authentication when `[auth]` is on) or
    /// `"none"` (open to anyone).
    #[serde(default)]
    pub auth: ServiceAuth,
    /// The only users who may open the service (matched against `auth.user_header`); without
    /// it, every authenticated user may.
    #[serde(default)]
    pub allow_users: Option<Vec<String>>,
}

/// A service's `auth` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceAuth {
    /// Every request is checked with the auth service when `[auth]` is on.
    #[default]
    Forward,
    /// The service opted out: open to anyone.
    None,
}

/// The `[plugins]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// The plugins directory, watched for `.wasm` files.
    pub dir: PathBuf,
    /// Isolation of directory plugins.
    pub isolation: Isolation,
    /// Isolation per plugin name, overriding `isolation`.
    pub isolation_by_name: HashMap<String, Isolation>,
    /// The longest one plugin call may run (every hook but `rewrite-body`).
    pub call_timeout_ms: u64,
    /// The longest one `rewrite-body` call may run.
    pub rewrite_timeout_ms: u64,
    /// The most memory one plugin instance may use.
    pub memory_limit_mb: usize,
    /// Idle instances kept per pooled plugin; 0 uses twice the number of cores.
    pub pool_size: usize,
    /// Failures (of any hook) within `quarantine_window_ms` that quarantine a plugin.
    #[serde(alias = "max_consecutive_failures")]
    pub quarantine_failures: u32,
    /// How far back failures count.
    pub quarantine_window_ms: u64,
    /// The first quarantine's length; each one that follows a short recovery doubles it.
    pub quarantine_backoff_ms: u64,
    /// The longest quarantine.
    pub quarantine_max_ms: u64,
    /// Calls of one plugin that may run at once; 0 uses the number of cores.
    pub max_calls_in_flight: usize,
    /// The most memory all plugin instances together may use.
    pub total_memory_mb: usize,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        let runtime = RuntimeConfig::default();
        Self {
            dir: PathBuf::from("./plugins.d"),
            isolation: Isolation::default(),
            isolation_by_name: HashMap::new(),
            call_timeout_ms: millis(runtime.call_timeout),
            rewrite_timeout_ms: millis(runtime.rewrite_timeout),
            memory_limit_mb: runtime.memory_limit / (1024 * 1024),
            pool_size: 0,
            quarantine_failures: runtime.quarantine.failures,
            quarantine_window_ms: millis(runtime.quarantine.window),
            quarantine_backoff_ms: millis(runtime.quarantine.backoff),
            quarantine_max_ms: millis(runtime.quarantine.max_backoff),
            max_calls_in_flight: 0,
            total_memory_mb: runtime.total_memory / (1024 * 1024),
        }
    }
}

impl PluginsConfig {
    /// The runtime settings this section describes.
    pub fn runtime(&self) -> RuntimeConfig {
        let mut runtime = RuntimeConfig {
            call_timeout: Duration::from_millis(self.call_timeout_ms),
            rewrite_timeout: Duration::from_millis(self.rewrite_timeout_ms),
            memory_limit: self.memory_limit_mb.saturating_mul(1024 * 1024),
            quarantine: QuarantinePolicy {
                failures: self.quarantine_failures,
                window: Duration::from_millis(self.quarantine_window_ms),
                backoff: Duration::from_millis(self.quarantine_backoff_ms),
                max_backoff: Duration::from_millis(self.quarantine_max_ms),
            },
            total_memory: self.total_memory_mb.saturating_mul(1024 * 1024),
            ..RuntimeConfig::default()
        };
        if self.pool_size > 0 {
            runtime.pool_size = self.pool_size;
        }
        if self.max_calls_in_flight > 0 {
            runtime.max_calls_in_flight = self.max_calls_in_flight;
        }
        runtime
    }

    /// The isolation policy this section describes.
    pub fn isolation_policy(&self) -> IsolationPolicy {
        IsolationPolicy {
            directory: self.isolation,
            by_name: self.isolation_by_name.clone(),
        }
    }
}

/// The `[timeouts]` section. Defaults are long: streaming apps keep requests open for hours.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Opening a TCP connection to an upstream.
    pub connect_ms: u64,
    /// From the end of the request body to the response headers.
    pub first_byte_ms: u64,
    /// The longest pause between two reads of a response body.
    pub idle_ms: u64,
    /// How long an unused upstream connection stays in the pool.
    pub pool_idle_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_ms: 5_000,
            first_byte_ms: 300_000,
            idle_ms: 3_600_000,
            pool_idle_ms: 90_000,
        }
    }
}

impl Timeouts {
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }

    pub fn first_byte(&self) -> Duration {
        Duration::from_millis(self.first_byte_ms)
    }

    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }

    pub fn pool_idle(&self) -> Duration {
        Duration::from_millis(self.pool_idle_ms)
    }
}

/// The `[retry]` section: how long a request waits for an upstream that does not answer yet.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// The time after which a connection failure becomes a 502 (covers a 10 s app start).
    pub budget_ms: u64,
    /// The first pause between two rounds over the upstream list.
    pub initial_backoff_ms: u64,
    /// The longest pause.
    pub max_backoff_ms: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            budget_ms: 15_000,
            initial_backoff_ms: 50,
            max_backoff_ms: 1_000,
        }
    }
}

impl Retry {
    pub fn budget(&self) -> Duration {
        Duration::from_millis(self.budget_ms)
    }
}

/// Settings the command line gives over the file's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub plugins_dir: Option<PathBuf>,
    pub admin_listen: Option<SocketAddr>,
}

impl Config {
    /// Applies the command line's settings over the file's, and remembers them.
    pub fn override_with(&mut self, overrides: Overrides) {
        if let Some(listen) = overrides.listen {
            self.listen = listen;
        }
        if let Some(dir) = &overrides.plugins_dir {
            self.plugins.dir.clone_from(dir);
        }
        if let Some(admin) = overrides.admin_listen {
            self.admin.listen = Some(admin);
        }
        self.overrides = overrides;
    }
}

/// The `[balance]` section: outlier ejection of the replicas of a service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceConfig {
    /// Connection failures in a row that eject a replica from its service's rotation.
    pub eject_after_failures: u32,
    /// How long the first ejection lasts; each further one without a success in between
    /// doubles it.
    pub eject_ms: u64,
    /// The longest ejection.
    pub max_eject_ms: u64,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        let outliers = crate::registry::balance::Outliers::default();
        Self {
            eject_after_failures: outliers.failures,
            eject_ms: u64::try_from(outliers.base.as_millis()).unwrap_or(u64::MAX),
            max_eject_ms: u64::try_from(outliers.max.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl BalanceConfig {
    /// The settings in the form the balancer uses.
    pub fn outliers(&self) -> crate::registry::balance::Outliers {
        crate::registry::balance::Outliers {
            failures: self.eject_after_failures,
            base: Duration::from_millis(self.eject_ms),
            max: Duration::from_millis(self.max_eject_ms.max(self.eject_ms)),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.eject_after_failures == 0 || self.eject_ms == 0 {
            return Err(
                "balance.eject_after_failures and balance.eject_ms must be above 0".to_owned(),
            );
        }
        Ok(())
    }
}

/// The `[proxy]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// The largest body buffered for a plugin's body rewrite (plugins may ask for less).
    pub max_rewrite_bytes: usize,
    /// Keep `X-Forwarded-Proto`/`-Host` sent by the client (behind a trusted front proxy)
    /// instead of replacing them.
    pub trust_forwarded_headers: bool,
    /// Send the upstream's host as `Host` instead of the client's.
    pub rewrite_host: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            max_rewrite_bytes: 8 * 1024 * 1024,
            trust_forwarded_headers: false,
            rewrite_host: false,
        }
    }
}

/// The `[client]` section. The defaults follow nginx's habits: a client that does not finish
/// its request headers in time, or keeps an idle connection open too long, is cut off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// From a new connection, or from the first byte of a request on a kept-alive one, to the
    /// end of the request headers.
    pub header_timeout_ms: u64,
    /// How long a kept-alive connection may wait idle for its next request.
    pub keepalive_timeout_ms: u64,
    /// The longest pause between two reads of a request body.
    pub body_timeout_ms: u64,
    /// Open client connections (WebSockets included); 0 derives it from the file descriptor
    /// limit. A connection past it evicts the oldest idle one, or is closed at once.
    pub max_connections: usize,
    /// The longest request path (the whole path, prefix included); longer ones get 414.
    pub max_path_bytes: usize,
    /// The longest query string; longer ones get 414.
    pub max_query_bytes: usize,
    /// A WebSocket whose client has sent nothing for this long is pinged, and closed (1001)
    /// when it still sends nothing for as long again; 0 turns this off.
    pub websocket_ping_ms: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            header_timeout_ms: 15_000,
            keepalive_timeout_ms: 75_000,
            body_timeout_ms: 60_000,
            max_connections: 0,
            max_path_bytes: MAX_CLIENT_PATH,
            max_query_bytes: crate::plugin::guard::MAX_URL_PART,
            websocket_ping_ms: 30_000,
        }
    }
}

/// The longest client path: what a plugin may return ([`crate::plugin::guard::MAX_URL_PART`])
/// with room for a prefix, so a plugin that passes the path through is never refused for it.
pub const MAX_CLIENT_PATH: usize = crate::plugin::guard::MAX_URL_PART - 1024;

impl ClientConfig {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.keepalive_timeout_ms)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    /// The WebSocket ping interval, if pings are on.
    pub fn websocket_ping(&self) -> Option<Duration> {
        (self.websocket_ping_ms > 0).then(|| Duration::from_millis(self.websocket_ping_ms))
    }

    fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("client.header_timeout_ms", self.header_timeout_ms),
            ("client.keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("client.body_timeout_ms", self.body_timeout_ms),
        ] {
            if value == 0 {
                return Err(format!("{name} must be above 0"));
            }
        }
        if !(1..=MAX_CLIENT_PATH).contains(&self.max_path_bytes) {
            return Err(format!(
                "client.max_path_bytes must be between 1 and {MAX_CLIENT_PATH}"
            ));
        }
        let max_query = crate::plugin::guard::MAX_URL_PART;
        if !(1..=max_query).contains(&self.max_query_bytes) {
            return Err(format!(
                "client.max_query_bytes must be between 1 and {max_query}"
            ));
        }
        Ok(())
    }
}

/// The `[admin]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Where `/metrics` and the full service listing are served; while it is unset, `/metrics`
    /// stays on the public listener and the full listing is not served at all.
    pub listen: Option<SocketAddr>,
}

/// The `[auth]` section. Forward authentication is on when `forward_url` is set: every service
/// that did not opt out (`auth = "none"`) is then opened only after the auth service said yes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The auth service's check endpoint (`http://oauth2-proxy:4180/oauth2/auth`): 2xx lets
    /// a request through, 401 asks for a sign-in, 403 refuses.
    pub forward_url: Option<String>,
    /// Where a browser that must sign in is sent, with the page it asked for as `rd`: an
    /// absolute URL, or a path on Portico's own host.
    pub signin_url: Option<String>,
    /// The header of the auth service's answer that names the user, for `allow_users`.
    pub user_header: String,
    /// Headers of the auth service's answer copied onto the upstream request; the client's
    /// own headers of these names are removed first. Unset, `[user_header]`.
    pub copy_headers: Option<Vec<String>>,
    /// The client's headers sent to the auth service (its credentials), besides the
    /// `X-Forwarded-*` headers Portico sets itself.
    pub forward_headers: Vec<String>,
    /// Cookies removed from requests before they go upstream: the auth service's session
    /// cookie is its business, not the apps'. A name ending in `*` is a prefix.
    pub strip_cookies: Vec<String>,
    /// The longest the auth service may take to answer; past it the request is a 503.
    pub timeout_ms: u64,
    /// How long a positive answer is reused for the same credentials; 0 asks every time.
    pub cache_ms: u64,
    /// The most answers cached.
    pub cache_size: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            forward_url: None,
            signin_url: None,
            user_header: "x-auth-request-user".to_owned(),
            copy_headers: None,
            forward_headers: vec!["cookie".to_owned(), "authorization".to_owned()],
            strip_cookies: vec!["_oauth2_proxy*".to_owned()],
            timeout_ms: 2_000,
            cache_ms: 0,
            cache_size: 10_000,
        }
    }
}

/// Headers of a request only Portico sets: a client's or an auth service's would be spoofed.
const RESERVED_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "forwarded",
];

impl AuthConfig {
    /// True when forward authentication is on.
    pub fn enabled(&self) -> bool {
        self.forward_url.is_some()
    }

    /// The headers copied from the auth service's answer onto upstream requests.
    pub fn copied_headers(&self) -> Vec<String> {
        self.copy_headers
            .clone()
            .unwrap_or_else(|| vec![self.user_header.clone()])
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn cache_ttl(&self) -> Duration {
        Duration::from_millis(self.cache_ms)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.forward_url {
            parse_forward_url(url)?;
        }
        if let Some(url) = &self.signin_url {
            validate_signin_url(url)?;
        }
        header_name("auth.user_header", &self.user_header)?;
        for name in self.copied_headers() {
            let lower = header_name("auth.copy_headers", &name)?;
            if lower == "cookie" || is_reserved(&lower) {
                return Err(format!(
                    "auth.copy_headers: {name:?} cannot be copied onto a request"
                ));
            }
        }
        for name in &self.forward_headers {
            let lower = header_name("auth.forward_headers", name)?;
            if is_reserved(&lower) {
                return Err(format!(
                    "auth.forward_headers: {name:?} is set by Portico, not taken from the client"
                ));
            }
        }
        for cookie in &self.strip_cookies {
            let name = cookie.strip_suffix('*').unwrap_or(cookie);
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}*".contains(&b));
            if !valid {
                return Err(format!(
                    "auth.strip_cookies: {cookie:?} is not a cookie name (or a prefix ending in *)"
                ));
            }
        }
        if self.timeout_ms == 0 {
            return Err("auth.timeout_ms must be above 0".to_owned());
        }
        if self.cache_ms > 0 && self.cache_size == 0 {
            return Err("auth.cache_size must be above 0 when auth.cache_ms is set".to_owned());
        }
        Ok(())
    }
}

/// A header name of the `[auth]` section, lower case, or why it is not one.
fn header_name(key: &str, name: &str) -> Result<String, String> {
    axum::http::HeaderName::from_bytes(name.as_bytes())
        .map(|name| name.as_str().to_owned())
        .map_err(|_| format!("{key}: {name:?} is not a header name"))
}

fn is_reserved(lower: &str) -> bool {
    RESERVED_HEADERS.contains(&lower)
        || lower.starts_with("x-forwarded-")
        || lower.starts_with("proxy-")
}

/// Parses `auth.forward_url`: `http` (Portico has no TLS client), a host, no credentials or
/// fragment. A query is kept (oauth2-proxy reads `allowed_groups` from it).
pub fn parse_forward_url(text: &str) -> Result<axum::http::Uri, String> {
    let url = url::Url::parse(text)
        .map_err(|err| format!("auth.forward_url {text:?} is not a URL: {err}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "auth.forward_url {text:?} must be an http:// URL: Portico reaches the auth service over plain http on its network"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("auth.forward_url {text:?} has no host"));
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "auth.forward_url {text:?} must not carry a fragment or credentials"
        ));
    }
    url.as_str()
        .parse()
        .map_err(|err| format!("auth.forward_url {text:?}: {err}"))
}

/// `auth.signin_url`: an absolute `http(s)` URL, or an absolute path on Portico's host.
fn validate_signin_url(text: &str) -> Result<(), String> {
    if text.starts_with('/') {
        if text.starts_with("//")
            || text.contains(['\\', '#'])
            || text.contains(char::is_whitespace)
        {
            return Err(format!(
                "auth.signin_url {text:?} must be a plain path (no //, backslash, fragment or space)"
            ));
        }
        return Ok(());
    }
    let url = url::Url::parse(text)
        .map_err(|err| format!("auth.signin_url {text:?} is neither a path nor a URL: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "auth.signin_url {text:?} must be an http:// or https:// URL with a host, or a path"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!("auth.signin_url {text:?} must not have a fragment"));
    }
    Ok(())
}

/// Checks a service's `auth` and `allow_users` against the `[auth]` section.
fn validate_access(service: &ServiceConfig, auth: &AuthConfig) -> Result<(), String> {
    let Some(users) = &service.allow_users else {
        return Ok(());
    };
    let id = &service.id;
    if !auth.enabled() {
        // Served without authentication, the service would be open to anyone: the operator
        // who wrote the list meant the opposite.
        return Err(format!(
            "service {id:?}: allow_users needs forward authentication ([auth] forward_url): without it there is no user to check"
        ));
    }
    if service.auth == ServiceAuth::None {
        return Err(format!(
            "service {id:?}: allow_users with auth = \"none\" contradicts itself"
        ));
    }
    if users.is_empty() {
        return Err(format!(
            "service {id:?}: allow_users is empty; leave it out to let every signed-in user in"
        ));
    }
    if let Some(bad) = users
        .iter()
        .find(|user| user.is_empty() || user.trim() != user.as_str() || user.contains(','))
    {
        return Err(format!(
            "service {id:?}: allow_users has {bad:?}; a user name is not empty, has no comma and no surrounding spaces"
        ));
    }
    Ok(())
}

/// Whether Docker discovery runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "DockerSwitch")]
pub enum DockerMode {
    /// Use Docker when it is reachable; without it, say so once and serve the file's services.
    #[default]
    Auto,
    /// Use Docker; an unreachable engine is a warning, retried in the background.
    On,
    /// Never contact Docker.
    Off,
}

/// `enabled = true | false | "auto"` as written.
#[derive(Deserialize)]
#[serde(untagged)]
enum DockerSwitch {
    Flag(bool),
    Word(String),
}

impl TryFrom<DockerSwitch> for DockerMode {
    type Error = String;

    fn try_from(value: DockerSwitch) -> Result<Self, Self::Error> {
        match value {
            DockerSwitch::Flag(true) => Ok(Self::On),
            DockerSwitch::Flag(false) => Ok(Self::Off),
            DockerSwitch::Word(word) if word == "auto" => Ok(Self::Auto),
            DockerSwitch::Word(word) => Err(format!(
                "docker.enabled must be true, false or \"auto\", not {word:?}"
            )),
        }
    }
}

/// A way of reaching a container, in `docker.address_order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressKind {
    /// The container's IP on its chosen network (`portico.network`, else the network Portico
    /// shares with it, else its first network).
    Network,
    /// The compose service name, resolved by Docker's DNS on a shared network.
    ComposeService,
    /// The published port on the Docker host, at each of `docker.published_hosts`.
    Published,
}

/// The `[docker]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// `"auto"` (the default), `true` or `false`.
    pub enabled: DockerMode,
    /// Swarm services: `"auto"` (the default: followed when the engine is a swarm manager),
    /// `true` (a warning when it is not) or `false`.
    pub swarm: DockerMode,
    /// How often the swarm's task list is read (Docker sends no task events); also read at
    /// once on service, node and task-container events.
    pub swarm_poll_ms: u64,
    /// Docker endpoints (`unix:///var/run/docker.sock`, `tcp://host:2375`), tried in order;
    /// empty means `DOCKER_HOST`, else the default socket.
    pub endpoints: Vec<String>,
    /// The order in which a container's addresses are tried.
    pub address_order: Vec<AddressKind>,
    /// Hosts at which published ports are tried, in order; `"docker-host"` stands for the host
    /// of a `tcp://` Docker endpoint.
    pub published_hosts: Vec<String>,
    /// Labels a container must also carry to be served, so several Porticos can share a host.
    pub require_labels: BTreeMap<String, String>,
    /// How long a request waits for a container whose health check has not passed yet.
    pub starting_wait_ms: u64,
    /// The longest pause between two attempts to reach Docker.
    pub reconnect_max_backoff_ms: u64,
    /// The container Portico runs in (name or id), to find the networks it shares with apps;
    /// by default detected from the hostname when `/.dockerenv` exists.
    pub self_container: Option<String>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            enabled: DockerMode::Auto,
            swarm: DockerMode::Auto,
            swarm_poll_ms: 500,
            endpoints: Vec::new(),
            address_order: vec![
                AddressKind::Network,
                AddressKind::ComposeService,
                AddressKind::Published,
            ],
            published_hosts: vec![
                "127.0.0.1".to_owned(),
                "host.docker.internal".to_owned(),
                "docker-host".to_owned(),
            ],
            require_labels: BTreeMap::new(),
            starting_wait_ms: 30_000,
            reconnect_max_backoff_ms: 10_000,
            self_container: None,
        }
    }
}

impl DockerConfig {
    pub fn starting_wait(&self) -> Duration {
        Duration::from_millis(self.starting_wait_ms)
    }

    pub fn swarm_poll(&self) -> Duration {
        Duration::from_millis(self.swarm_poll_ms.max(50))
    }

    pub fn reconnect_max_backoff(&self) -> Duration {
        Duration::from_millis(self.reconnect_max_backoff_ms.max(100))
    }

    fn validate(&self) -> Result<(), String> {
        for endpoint in &self.endpoints {
            let known = ["unix://", "tcp://", "http://"]
                .iter()
                .any(|scheme| endpoint.starts_with(scheme));
            if !known {
                return Err(format!(
                    "docker.endpoints: {endpoint:?} must start with unix://, tcp:// or http://"
                ));
            }
        }
        if self.address_order.is_empty() {
            return Err("docker.address_order is empty".to_owned());
        }
        let distinct: HashSet<_> = self.address_order.iter().collect();
        if distinct.len() != self.address_order.len() {
            return Err("docker.address_order names a kind twice".to_owned());
        }
        if self.published_hosts.iter().any(String::is_empty) {
            return Err("docker.published_hosts has an empty host".to_owned());
        }
        Ok(())
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_type() -> String {
    "generic".to_owned()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            workers: 0,
            services: Vec::new(),
            plugins: PluginsConfig::default(),
            timeouts: Timeouts::default(),
            retry: Retry::default(),
            proxy: ProxyConfig::default(),
            docker: DockerConfig::default(),
            balance: BalanceConfig::default(),
            client: ClientConfig::default(),
            admin: AdminConfig::default(),
            overrides: Overrides::default(),
            auth: AuthConfig::default(),
        }
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, Some(path))
    }

    /// The number of serving threads: `workers`, or one per CPU.
    pub fn workers(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    /// The embedded default.
    pub fn embedded() -> Self {
        Self::default()
    }

    /// Parses and validates TOML; `path` only names the origin in errors.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Self, ConfigError> {
        // An empty file is what an editor or a copy leaves for a moment while it writes: taken
        // for a real configuration, it would drop every service.
        let blank = text
            .lines()
            .all(|line| line.trim().is_empty() || line.trim_start().starts_with('#'));
        if blank {
            return Err(ConfigError::Invalid {
                path: path.map(Path::to_owned),
                message: "the file is empty (use `listen = ...` at least)".to_owned(),
            });
        }
        let config: Self = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: path.map(Path::to_owned),
            message: err.to_string().trim_end().to_owned(),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.map(Path::to_owned),
            message,
        })?;
        Ok(config)
    }

    /// Checks a configuration built in code as a file is checked when it is parsed.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.validate().map_err(|message| ConfigError::Invalid {
            path: None,
            message,
        })
    }

    fn validate(&self) -> Result<(), String> {
        if self.workers > 256 {
            return Err(format!("workers = {} is more than 256", self.workers));
        }
        let mut seen = HashSet::new();
        for service in &self.services {
            validate_id(&service.id)?;
            if !seen.insert(service.id.as_str()) {
                return Err(format!("service id {:?} is used twice", service.id));
            }
            if service.service_type.is_empty() {
                return Err(format!("service {:?}: `type` is empty", service.id));
            }
            if service.upstreams.is_empty() {
                return Err(format!("service {:?}: `upstreams` is empty", service.id));
            }
            for upstream in &service.upstreams {
                parse_upstream(upstream)
                    .map_err(|why| format!("service {:?}: {why}", service.id))?;
            }
            if let Some(path) = &service.health_path
                && (!path.starts_with('/') || path.contains(['?', '#', ' ']))
            {
                return Err(format!(
                    "service {:?}: health_path {path:?} must be a path starting with /",
                    service.id
                ));
            }
            validate_access(service, &self.auth)?;
        }
        if let Some(admin) = self.admin.listen
            && admin == self.listen
            && admin.port() != 0
        {
            return Err(format!(
                "admin.listen {admin} is the public listen address; the admin listener needs its own"
            ));
        }
        self.auth.validate()?;
        if self.plugins.call_timeout_ms == 0 || self.plugins.rewrite_timeout_ms == 0 {
            return Err(
                "plugins.call_timeout_ms and plugins.rewrite_timeout_ms must be above 0".to_owned(),
            );
        }
        if self.plugins.memory_limit_mb == 0 {
            return Err("plugins.memory_limit_mb must be above 0".to_owned());
        }
        if self.plugins.total_memory_mb < self.plugins.memory_limit_mb {
            return Err("plugins.total_memory_mb is below plugins.memory_limit_mb".to_owned());
        }
        if self.plugins.quarantine_failures == 0 {
            return Err("plugins.quarantine_failures must be above 0".to_owned());
        }
        if self.plugins.quarantine_max_ms < self.plugins.quarantine_backoff_ms {
            return Err(
                "plugins.quarantine_max_ms is below plugins.quarantine_backoff_ms".to_owned(),
            );
        }
        for (name, value) in [
            ("timeouts.connect_ms", self.timeouts.connect_ms),
            ("timeouts.first_byte_ms", self.timeouts.first_byte_ms),
            ("timeouts.idle_ms", self.timeouts.idle_ms),
        ] {
            if value == 0 {
                return Err(format!("{name} must be above 0"));
            }
        }
        if self.retry.max_backoff_ms < self.retry.initial_backoff_ms {
            return Err("retry.max_backoff_ms is below retry.initial_backoff_ms".to_owned());
        }
        self.client.validate()?;
        self.balance.validate()?;
        self.docker.validate()
    }
}

/// Checks a service id: 1 to 128 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_id(id: &str) -> Result<(), String> {
    let valid_chars = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if id.is_empty() || id.len() > 128 || !valid_chars || id == "." || id == ".." {
        return Err(format!(
            "service id {id:?} is invalid: use 1 to 128 of A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(())
}

/// Parses an upstream base URL: `http` (Portico has no TLS client), a host, no query,
/// fragment or credentials.
pub fn parse_upstream(text: &str) -> Result<url::Url, String> {
    let url =
        url::Url::parse(text).map_err(|err| format!("upstream {text:?} is not a URL: {err}"))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(format!(
                "upstream {text:?}: TLS to upstreams is not supported; containers are reached over plain http on their network"
            ));
        }
        _ => return Err(format!("upstream {text:?} must be an http:// URL")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("upstream {text:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "upstream {text:?} must not have a query or fragment"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("upstream {text:?} must not carry credentials"));
    }
    Ok(url)
}

/// A duration in whole milliseconds, as the configuration writes them.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let config = Config::parse(DEFAULT, None).expect("default is valid");
        assert_eq!(config.listen, default_listen());
        assert!(config.services.is_empty());
        assert_eq!(config.plugins.dir, PathBuf::from("./plugins.d"));
    }

    #[test]
    fn minimal_service() {
        let config = Config::parse(
            r#"
            [[services]]
            id = "sales-dashboard"
            type = "streamlit"
            upstreams = ["http://127.0.0.1:8501"]
            "#,
            None,
        )
        .expect("valid");
        assert_eq!(config.services[0].service_type, "streamlit");
        assert!(!config.services[0].fail_closed);
    }

    #[test]
    fn refuses_bad_services() {
        let dup = r#"
            [[services]]
            id = "a"
            upstreams = ["http://127.0.0.1:1"]
            [[services]]
            id = "a"
            upstreams = ["http://127.0.0.1:2"]
        "#;
        let err = Config::parse(dup, None).expect_err("duplicate");
        assert!(err.to_string().contains("used twice"), "{err}");
        let bad_id = "[[services]]\nid = \"a/b\"\nupstreams = [\"http://x\"]";
        assert!(Config::parse(bad_id, None).is_err());
        let bad_url = "[[services]]\nid = \"a\"\nupstreams = [\"nope\"]";
        assert!(
            Config::parse(bad_url, None)
                .expect_err("url")
                .to_string()
                .contains("not a URL")
        );
        let ftp = "[[services]]\nid = \"a\"\nupstreams = [\"ftp://x\"]";
        assert!(Config::parse(ftp, None).is_err());
        let tls = "[[services]]\nid = \"a\"\nupstreams = [\"https://x\"]";
        assert!(
            Config::parse(tls, None)
                .expect_err("https")
                .to_string()
                .contains("TLS to upstreams is not supported")
        );
        let unknown = "lisen = \"127.0.0.1:1\"";
        assert!(Config::parse(unknown, None).is_err());
    }

    #[test]
    fn an_empty_file_is_refused() {
        for empty in ["", "\n  \n", "# only a comment\n"] {
            let err = Config::parse(empty, None).expect_err("empty");
            assert!(err.to_string().contains("empty"), "{err}");
        }
    }

    #[test]
    fn client_section() {
        let config = Config::parse(DEFAULT, None).expect("default");
        assert_eq!(config.client.header_timeout_ms, 15_000);
        assert_eq!(config.client.keepalive_timeout_ms, 75_000);
        let set = Config::parse(
            "[client]\nheader_timeout_ms = 200\nmax_connections = 10",
            None,
        )
        .expect("valid");
        assert_eq!(set.client.header_timeout(), Duration::from_millis(200));
        for bad in [
            "[client]\nheader_timeout_ms = 0",
            "[client]\nmax_path_bytes = 100000",
            "[client]\nmax_query_bytes = 0",
            "[client]\nheader_timeout = 1",
        ] {
            assert!(Config::parse(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn workers_default_to_one_per_cpu() {
        let config = Config::parse(DEFAULT, None).expect("default");
        assert!(config.workers() >= 1);
        let config = Config::parse("workers = 3", None).expect("valid");
        assert_eq!(config.workers(), 3);
        let err = Config::parse("workers = 10000", None).expect_err("too many");
        assert!(err.to_string().contains("workers"), "{err}");
    }

    #[test]
    fn docker_section() {
        let config = Config::parse(DEFAULT, None).expect("default");
        assert_eq!(config.docker.enabled, DockerMode::Auto);
        let config = Config::parse(
            "[docker]\nenabled = true\nendpoints = [\"unix:///run/docker.sock\", \"tcp://10.0.0.2:2375\"]\naddress_order = [\"published\", \"network\"]\nrequire_labels = { \"portico.instance\" = \"a\" }",
            None,
        )
        .expect("valid");
        assert_eq!(config.docker.enabled, DockerMode::On);
        assert_eq!(
            config.docker.address_order,
            vec![AddressKind::Published, AddressKind::Network]
        );
        let off = Config::parse("[docker]\nenabled = false", None).expect("valid");
        assert_eq!(off.docker.enabled, DockerMode::Off);
        let auto = Config::parse("[docker]\nenabled = \"auto\"", None).expect("valid");
        assert_eq!(auto.docker.enabled, DockerMode::Auto);
        for bad in [
            "[docker]\nenabled = \"sometimes\"",
            "[docker]\nendpoints = [\"ftp://x\"]",
            "[docker]\naddress_order = []",
            "[docker]\naddress_order = [\"network\", \"network\"]",
            "[docker]\naddress_order = [\"dns\"]",
            "[docker]\nendpoint = []",
        ] {
            assert!(Config::parse(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn auth_section() {
        let config = Config::parse(DEFAULT, None).expect("default");
        assert!(!config.auth.enabled());
        assert_eq!(config.auth.copied_headers(), vec!["x-auth-request-user"]);
        assert!(config.admin.listen.is_none());
        let config = Config::parse(
            "[admin]\nlisten = \"127.0.0.1:9901\"\n[auth]\nforward_url = \"http://auth:4180/oauth2/auth?allowed_groups=dev\"\nsignin_url = \"/oauth2/start\"\nuser_header = \"X-User\"\n[[services]]\nid = \"a\"\nupstreams = [\"http://x\"]\nallow_users = [\"alice\"]\n[[services]]\nid = \"b\"\nupstreams = [\"http://x\"]\nauth = \"none\"",
            None,
        )
        .expect("valid");
        assert!(config.auth.enabled());
        assert_eq!(config.auth.copied_headers(), vec!["X-User"]);
        assert_eq!(
            config.services[0].allow_users,
            Some(vec!["alice".to_owned()])
        );
        assert_eq!(config.services[0].auth, ServiceAuth::Forward);
        assert_eq!(config.services[1].auth, ServiceAuth::None);
        let on = "[auth]\nforward_url = \"http://auth/check\"\n";
        for (bad, says) in [
            ("[auth]\nforward_url = \"https://auth/check\"", "http://"),
            ("[auth]\nforward_url = \"auth:4180\"", "forward_url"),
            ("[auth]\nforward_url = \"http://u:p@auth/\"", "credentials"),
            ("[auth]\nsignin_url = \"//evil.example/\"", "plain path"),
            ("[auth]\nsignin_url = \"ftp://x/\"", "signin_url"),
            ("[auth]\nuser_header = \"bad header\"", "not a header name"),
            ("[auth]\ncopy_headers = [\"host\"]", "cannot be copied"),
            ("[auth]\ncopy_headers = [\"cookie\"]", "cannot be copied"),
            (
                "[auth]\nforward_headers = [\"x-forwarded-host\"]",
                "set by Portico",
            ),
            ("[auth]\nstrip_cookies = [\"a*b\"]", "cookie name"),
            ("[auth]\ntimeout_ms = 0", "timeout_ms"),
            ("[auth]\ncache_ms = 10\ncache_size = 0", "cache_size"),
            (
                "[[services]]\nid = \"a\"\nupstreams = [\"http://x\"]\nallow_users = [\"alice\"]",
                "needs forward authentication",
            ),
            (
                &format!(
                    "{on}[[services]]\nid = \"a\"\nupstreams = [\"http://x\"]\nallow_users = []"
                ),
                "empty",
            ),
            (
                &format!(
                    "{on}[[services]]\nid = \"a\"\nupstreams = [\"http://x\"]\nauth = \"none\"\nallow_users = [\"a\"]"
                ),
                "contradicts",
            ),
            (
                &format!(
                    "{on}[[services]]\nid = \"a\"\nupstreams = [\"http://x\"]\nallow_users = [\" a\"]"
                ),
                "user name",
            ),
            (
                &format!(
                    "{on}[[services]]\nid = \"a\"\nupstreams = [\"http://x\"]\nauth = \"off\""
                ),
                "auth",
            ),
            (
                "listen = \"127.0.0.1:8080\"\n[admin]\nlisten = \"127.0.0.1:8080\"",
                "its own",
            ),
        ] {
            let err = Config::parse(bad, None).expect_err(bad);
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }
}
