//! Counters of the proxy's traffic and the plugins' calls, rendered in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::plugin::{Hook, Plugin, PluginError, PluginState};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The label used for requests that matched no service.
pub const UNROUTED: &str = "_unrouted";

/// Kinds of upstream failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No connection could be made.
    Refused,
    /// The connection closed before a response.
    Reset,
    /// No response in time.
    Timeout,
    /// The answer was not valid HTTP.
    Invalid,
}

impl UpstreamFailure {
    const ALL: [Self; 4] = [Self::Refused, Self::Reset, Self::Timeout, Self::Invalid];

    fn label(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
            Self::Invalid => "invalid",
        }
    }
}

/// What forward authentication decided for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The auth service accepted the caller, and the service lets them in.
    Allowed,
    /// The auth service refused the caller (403), or the service's `allow_users` does.
    Denied,
    /// The caller must sign in (the auth service answered 401).
    Unauthenticated,
    /// The auth service could not be asked: unreachable, too slow, or an unexpected answer.
    Error,
}

impl AuthOutcome {
    const ALL: [Self; 4] = [
        Self::Allowed,
        Self::Denied,
        Self::Unauthenticated,
        Self::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Unauthenticated => "unauthenticated",
            Self::Error => "error",
        }
    }
}

/// Everything counted for one service.
#[derive(Debug)]
pub struct ServiceMetrics {
    /// Responses by status code (index = code).
    statuses: Box<[AtomicU64]>,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_micros: AtomicU64,
    upstream_errors: [AtomicU64; UpstreamFailure::ALL.len()],
    retries: AtomicU64,
    websockets_open: AtomicI64,
    websockets_total: AtomicU64,
    /// Requests that arrived without the prefix, by how they were routed here.
    unprefixed: [AtomicU64; Routed::ALL.len()],
    /// Replicas taken out of the rotation after connection failures.
    ejections: AtomicU64,
}

/// How a request that arrived without `/proxy/{id}/` found its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// The `Referer` named the service's page.
    Referer,
    /// The affinity cookie named the service.
    Cookie,
    /// A plugin claimed the path.
    Claim,
}

impl Routed {
    pub const ALL: [Self; 3] = [Self::Referer, Self::Cookie, Self::Claim];

    pub fn label(self) -> &'static str {
        match self {
            Self::Referer => "referer",
            Self::Cookie => "cookie",
            Self::Claim => "claim",
        }
    }
}

/// How many (path, service) pairs of un-prefixed requests are remembered for the log: the
/// first of each is logged at info level, so a plugin author sees what escaped the prefix.
/// Paths are the client's, so the memory is bounded.
const ESCAPES_REMEMBERED: usize = 4096;

impl Default for ServiceMetrics {
    fn default() -> Self {
        Self {
            statuses: (0..600).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_micros: AtomicU64::new(0),
            upstream_errors: Default::default(),
            retries: AtomicU64::new(0),
            websockets_open: AtomicI64::new(0),
            websockets_total: AtomicU64::new(0),
            unprefixed: Default::default(),
            ejections: AtomicU64::new(0),
        }
    }
}

impl ServiceMetrics {
    /// Counts a response and the time to its headers.
    pub fn response(&self, status: u16, elapsed: Duration) {
        if let Some(counter) = self.statuses.get(usize::from(status)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = elapsed.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn upstream_error(&self, kind: UpstreamFailure) {
        let index = UpstreamFailure::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        self.upstream_errors[index].fetch_add(1, Ordering::Relaxed);
    }

    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a replica ejected after connection failures.
    pub fn ejection(&self) {
        self.ejections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a WebSocket as open until the guard is dropped.
    pub fn websocket(self: &Arc<Self>) -> WebsocketGuard {
        self.websockets_open.fetch_add(1, Ordering::Relaxed);
        self.websockets_total.fetch_add(1, Ordering::Relaxed);
        WebsocketGuard(Arc::clone(self))
    }
}

/// Decrements the open WebSocket gauge when dropped.
#[derive(Debug)]
pub struct WebsocketGuard(Arc<ServiceMetrics>);

impl Drop for WebsocketGuard {
    fn drop(&mut self) {
        self.0.websockets_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// All the proxy's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    services: RwLock<BTreeMap<String, Arc<ServiceMetrics>>>,
    config_reloads: AtomicU64,
    config_rejections: AtomicU64,
    auth: [AtomicU64; AuthOutcome::ALL.len()],
    auth_cache_hits: AtomicU64,
    /// Un-prefixed requests no service took.
    unrouted: AtomicU64,
    /// The (path, service) pairs of un-prefixed requests logged so far.
    escapes: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

impl Metrics {
    /// The counters of service `id`, created on first use.
    pub fn service(&self, id: &str) -> Arc<ServiceMetrics> {
        if let Some(found) = self.read().get(id) {
            return Arc::clone(found);
        }
        let mut services = self
            .services
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(services.entry(id.to_owned()).or_default())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<ServiceMetrics>>> {
        self.services
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn config_reloaded(&self) {
        self.config_reloads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn config_rejected(&self) {
        self.config_rejections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request that arrived without the prefix and was routed to service `id`; the
    /// first one of each path and service is logged at info level.
    pub fn unprefixed(&self, id: &str, path: &str, routed: Routed) {
        let index = Routed::ALL.iter().position(|r| *r == routed).unwrap_or(0);
        self.service(id).unprefixed[index].fetch_add(1, Ordering::Relaxed);
        let first = {
            let mut escapes = self
                .escapes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            escapes.len() < ESCAPES_REMEMBERED && escapes.insert((path.to_owned(), id.to_owned()))
        };
        if first {
            tracing::info!(service = %id, %path, via = routed.label(), "a request arrived without the service's prefix; its page or plugin let the URL escape");
        }
    }

    /// Counts a request that arrived without the prefix and that no service took.
    pub fn unrouted(&self) {
        self.unrouted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one decision of forward authentication.
    pub fn auth(&self, outcome: AuthOutcome) {
        self.auth[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an answer of the auth service reused from the cache.
    pub fn auth_cache_hit(&self) {
        self.auth_cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Configuration edits applied so far.
    pub fn config_reloads(&self) -> u64 {
        self.config_reloads.load(Ordering::Relaxed)
    }

    /// Configuration edits refused so far.
    pub fn config_rejections(&self) -> u64 {
        self.config_rejections.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, plugins: &[Arc<Plugin>]) -> String {
        let mut out = String::with_capacity(4096);
        let services = self.read();
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);

        header(
            &mut out,
            "portico_requests_total",
            "counter",
            "Responses sent, by service and status.",
        );
        for (id, m) in services.iter() {
            for (code, counter) in m.statuses.iter().enumerate() {
                let count = load(counter);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "portico_requests_total{{service=\"{id}\",status=\"{code}\"}} {count}"
                    );
                }
            }
        }

        header(
            &mut out,
            "portico_request_duration_seconds",
            "histogram",
            "Time to the response headers.",
        );
        for (id, m) in services.iter() {
            let mut cumulative = 0;
            for (bound, bucket) in BUCKETS.iter().zip(&m.buckets) {
                cumulative += load(bucket);
                let _ = writeln!(
                    out,
                    "portico_request_duration_seconds_bucket{{service=\"{id}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = load(&m.latency_count);
            let sum = load(&m.latency_micros) as f64 / 1e6;
            let _ = writeln!(
                out,
                "portico_request_duration_seconds_bucket{{service=\"{id}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "portico_request_duration_seconds_sum{{service=\"{id}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "portico_request_duration_seconds_count{{service=\"{id}\"}} {count}"
            );
        }

        header(
            &mut out,
            "portico_upstream_errors_total",
            "counter",
            "Failed upstream attempts, by kind.",
        );
        for (id, m) in services.iter() {
            for (kind, counter) in UpstreamFailure::ALL.iter().zip(&m.upstream_errors) {
                let _ = writeln!(
                    out,
                    "portico_upstream_errors_total{{service=\"{id}\",kind=\"{}\"}} {}",
                    kind.label(),
                    load(counter)
                );
            }
        }

        header(
            &mut out,
            "portico_upstream_retries_total",
            "counter",
            "Upstream attempts retried after a connection failure.",
        );
        for (id, m) in services.iter() {
            let _ = writeln!(
                out,
                "portico_upstream_retries_total{{service=\"{id}\"}} {}",
                load(&m.retries)
            );
        }

        header(
            &mut out,
            "portico_websockets_open",
            "gauge",
            "WebSockets being relayed.",
        );
        for (id, m) in services.iter() {
            let _ = writeln!(
                out,
                "portico_websockets_open{{service=\"{id}\"}} {}",
                m.websockets_open.load(Ordering::Relaxed)
            );
        }
        header(
            &mut out,
            "portico_websockets_total",
            "counter",
            "WebSockets relayed.",
        );
        for (id, m) in services.iter() {
            let _ = writeln!(
                out,
                "portico_websockets_total{{service=\"{id}\"}} {}",
                load(&m.websockets_total)
            );
        }

        header(
            &mut out,
            "portico_unprefixed_requests_total",
            "counter",
            "Requests that arrived without /proxy/{id}/, by the service they were routed to and how (referer, cookie, claim); via=\"none\" counts those no service took.",
        );
        for (id, m) in services.iter() {
            for (routed, counter) in Routed::ALL.iter().zip(&m.unprefixed) {
                let count = load(counter);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "portico_unprefixed_requests_total{{service=\"{id}\",via=\"{}\"}} {count}",
                        routed.label()
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "portico_unprefixed_requests_total{{service=\"\",via=\"none\"}} {}",
            load(&self.unrouted)
        );

        header(
            &mut out,
            "portico_replica_ejections_total",
            "counter",
            "Replicas taken out of a service's rotation after connection failures.",
        );
        for (id, m) in services.iter() {
            let _ = writeln!(
                out,
                "portico_replica_ejections_total{{service=\"{id}\"}} {}",
                load(&m.ejections)
            );
        }

        plugin_metrics(&mut out, plugins);

        header(
            &mut out,
            "portico_auth_total",
            "counter",
            "Forward authentication decisions, by result.",
        );
        for (outcome, counter) in AuthOutcome::ALL.iter().zip(&self.auth) {
            let _ = writeln!(
                out,
                "portico_auth_total{{result=\"{}\"}} {}",
                outcome.label(),
                load(counter)
            );
        }
        header(
            &mut out,
            "portico_auth_cache_hits_total",
            "counter",
            "Positive answers of the auth service reused from the cache.",
        );
        let _ = writeln!(
            out,
            "portico_auth_cache_hits_total {}",
            load(&self.auth_cache_hits)
        );

        header(
            &mut out,
            "portico_config_reloads_total",
            "counter",
            "Configuration edits, by result.",
        );
        let _ = writeln!(
            out,
            "portico_config_reloads_total{{result=\"applied\"}} {}",
            self.config_reloads()
        );
        let _ = writeln!(
            out,
            "portico_config_reloads_total{{result=\"rejected\"}} {}",
            self.config_rejections()
        );
        out
    }
}

/// Per plugin and hook: calls, time, failures by kind; per plugin: calls turned away and the
/// quarantine state.
fn plugin_metrics(out: &mut String, plugins: &[Arc<Plugin>]) {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    header(
        out,
        "portico_plugin_calls_total",
        "counter",
        "Plugin hook calls.",
    );
    for plugin in plugins {
        for hook in Hook::ALL {
            let _ = writeln!(
                out,
                "portico_plugin_calls_total{{plugin=\"{}\",hook=\"{}\"}} {}",
                plugin.name(),
                hook.as_str(),
                load(&plugin.stats().hooks[hook as usize].calls)
            );
        }
    }
    header(
        out,
        "portico_plugin_call_seconds_total",
        "counter",
        "Time spent in plugin hook calls.",
    );
    for plugin in plugins {
        for hook in Hook::ALL {
            let seconds = load(&plugin.stats().hooks[hook as usize].nanos) as f64 / 1e9;
            let _ = writeln!(
                out,
                "portico_plugin_call_seconds_total{{plugin=\"{}\",hook=\"{}\"}} {seconds}",
                plugin.name(),
                hook.as_str(),
            );
        }
    }
    header(
        out,
        "portico_plugin_failures_total",
        "counter",
        "Plugin hook calls that failed, by kind (trap, timeout, memory, refused answer).",
    );
    for plugin in plugins {
        for hook in Hook::ALL {
            let failures = &plugin.stats().hooks[hook as usize].failures;
            for (kind, count) in PluginError::FAILURE_KINDS.iter().zip(failures) {
                let _ = writeln!(
                    out,
                    "portico_plugin_failures_total{{plugin=\"{}\",hook=\"{}\",kind=\"{kind}\"}} {}",
                    plugin.name(),
                    hook.as_str(),
                    load(count)
                );
            }
        }
    }
    header(
        out,
        "portico_plugin_rejected_total",
        "counter",
        "Plugin calls not made: the plugin had its share of calls running (busy) or was quarantined; the request got the generic behaviour.",
    );
    for plugin in plugins {
        for (reason, count) in [
            ("busy", &plugin.stats().busy),
            ("quarantined", &plugin.stats().quarantined),
        ] {
            let _ = writeln!(
                out,
                "portico_plugin_rejected_total{{plugin=\"{}\",reason=\"{reason}\"}} {}",
                plugin.name(),
                load(count)
            );
        }
    }
    header(
        out,
        "portico_plugin_instantiations_total",
        "counter",
        "Plugin instances created.",
    );
    for plugin in plugins {
        let _ = writeln!(
            out,
            "portico_plugin_instantiations_total{{plugin=\"{}\"}} {}",
            plugin.name(),
            load(&plugin.stats().instantiations)
        );
    }
    header(
        out,
        "portico_plugin_quarantines_total",
        "counter",
        "Times a plugin was quarantined after repeated failures.",
    );
    for plugin in plugins {
        let _ = writeln!(
            out,
            "portico_plugin_quarantines_total{{plugin=\"{}\"}} {}",
            plugin.name(),
            plugin.quarantines()
        );
    }
    header(
        out,
        "portico_plugin_state",
        "gauge",
        "1 for the state each plugin is in: healthy, quarantined or probing.",
    );
    for plugin in plugins {
        let current = plugin.state();
        for state in PluginState::ALL {
            let _ = writeln!(
                out,
                "portico_plugin_state{{plugin=\"{}\",state=\"{}\"}} {}",
                plugin.name(),
                state.as_str(),
                u8::from(state == current)
            );
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprefixed_requests_are_counted_and_logged_once() {
        let metrics = Metrics::default();
        metrics.unprefixed("a", "/static/x.js", Routed::Referer);
        metrics.unprefixed("a", "/static/x.js", Routed::Referer);
        metrics.unprefixed("a", "/_stcore/health", Routed::Claim);
        metrics.unrouted();
        let text = metrics.render(&[]);
        assert!(
            text.contains("portico_unprefixed_requests_total{service=\"a\",via=\"referer\"} 2"),
            "{text}"
        );
        assert!(text.contains("portico_unprefixed_requests_total{service=\"a\",via=\"claim\"} 1"));
        assert!(text.contains("portico_unprefixed_requests_total{service=\"\",via=\"none\"} 1"));
        let remembered = metrics
            .escapes
            .lock()
            .map(|escapes| escapes.len())
            .unwrap_or_default();
        assert_eq!(remembered, 2, "one per path and service");
    }

    #[test]
    fn renders_counts_and_buckets() {
        let metrics = Metrics::default();
        let svc = metrics.service("a");
        svc.response(200, Duration::from_millis(3));
        svc.response(502, Duration::from_secs(60));
        svc.upstream_error(UpstreamFailure::Refused);
        let guard = svc.websocket();
        let text = metrics.render(&[]);
        assert!(
            text.contains("portico_requests_total{service=\"a\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("portico_requests_total{service=\"a\",status=\"502\"} 1"),
            "{text}"
        );
        assert!(text.contains("le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("kind=\"refused\"} 1"), "{text}");
        assert!(
            text.contains("portico_websockets_open{service=\"a\"} 1"),
            "{text}"
        );
        metrics.auth(AuthOutcome::Denied);
        assert!(
            metrics
                .render(&[])
                .contains("portico_auth_total{result=\"denied\"} 1")
        );
        drop(guard);
        assert!(
            metrics
                .render(&[])
                .contains("portico_websockets_open{service=\"a\"} 0")
        );
    }
}
