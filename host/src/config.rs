//! The configuration file: its types, the embedded default and validation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::plugin::{Isolation, IsolationPolicy, RuntimeConfig};

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
    /// Upstream base URLs, tried in order.
    pub upstreams: Vec<String>,
    /// Answer 502 instead of using the generic behaviour when the plugin fails.
    #[serde(default)]
    pub fail_closed: bool,
    /// Free-form labels passed to the plugin.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
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
    /// The longest one plugin call may run.
    pub call_timeout_ms: u64,
    /// The most memory one plugin instance may use.
    pub memory_limit_mb: usize,
    /// Idle instances kept per pooled plugin; 0 uses twice the number of cores.
    pub pool_size: usize,
    /// Consecutive failures after which a plugin is disabled.
    pub max_consecutive_failures: u32,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        let runtime = RuntimeConfig::default();
        Self {
            dir: PathBuf::from("./plugins.d"),
            isolation: Isolation::default(),
            isolation_by_name: HashMap::new(),
            call_timeout_ms: u64::try_from(runtime.call_timeout.as_millis()).unwrap_or(100),
            memory_limit_mb: runtime.memory_limit / (1024 * 1024),
            pool_size: 0,
            max_consecutive_failures: runtime.max_consecutive_failures,
        }
    }
}

impl PluginsConfig {
    /// The runtime settings this section describes.
    pub fn runtime(&self) -> RuntimeConfig {
        let mut runtime = RuntimeConfig {
            call_timeout: Duration::from_millis(self.call_timeout_ms),
            memory_limit: self.memory_limit_mb.saturating_mul(1024 * 1024),
            max_consecutive_failures: self.max_consecutive_failures,
            ..RuntimeConfig::default()
        };
        if self.pool_size > 0 {
            runtime.pool_size = self.pool_size;
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
            services: Vec::new(),
            plugins: PluginsConfig::default(),
            timeouts: Timeouts::default(),
            retry: Retry::default(),
            proxy: ProxyConfig::default(),
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

    /// The embedded default.
    pub fn embedded() -> Self {
        Self::default()
    }

    /// Parses and validates TOML; `path` only names the origin in errors.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Self, ConfigError> {
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

    fn validate(&self) -> Result<(), String> {
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
        }
        if self.plugins.call_timeout_ms == 0 {
            return Err("plugins.call_timeout_ms must be above 0".to_owned());
        }
        if self.plugins.memory_limit_mb == 0 {
            return Err("plugins.memory_limit_mb must be above 0".to_owned());
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
        Ok(())
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

/// Parses an upstream base URL: `http` or `https`, a host, no query or fragment.
pub fn parse_upstream(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text)
        .map_err(|err| format!("upstream {text:?} is not a URL: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("upstream {text:?} must use http or https"));
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
        let unknown = "lisen = \"127.0.0.1:1\"";
        assert!(Config::parse(unknown, None).is_err());
    }
}
