//! The service table: every service Portico serves, from every source (the configuration file
//! now, container discovery later), with the health the proxy observed.

pub mod r#static;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// Where a service was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The configuration file; wins over discovery when both name an id.
    Static,
    /// Container discovery.
    Docker,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Docker => "docker",
        }
    }
}

/// What the proxy last saw of a service's upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// No request has reached it yet.
    Unknown,
    /// The last attempt got an answer.
    Up,
    /// The last attempt could not connect.
    Down,
}

/// The observed status, shared by every version of a service with the same id.
#[derive(Debug, Default)]
pub struct Health(AtomicU8);

impl Health {
    pub fn get(&self) -> Status {
        match self.0.load(Ordering::Relaxed) {
            1 => Status::Up,
            2 => Status::Down,
            _ => Status::Unknown,
        }
    }

    pub fn set(&self, status: Status) {
        let value = match status {
            Status::Unknown => 0,
            Status::Up => 1,
            Status::Down => 2,
        };
        self.0.store(value, Ordering::Relaxed);
    }
}

/// One service.
#[derive(Debug, Clone)]
pub struct Service {
    /// The id in `/proxy/{id}`.
    pub id: String,
    /// The type, which picks the plugin.
    pub service_type: String,
    /// Upstream base URLs, tried in order.
    pub upstreams: Vec<reqwest::Url>,
    /// Answer 502 when the plugin fails instead of using the generic behaviour.
    pub fail_closed: bool,
    /// Labels passed to the plugin.
    pub labels: BTreeMap<String, String>,
    /// Where it was declared.
    pub source: Source,
    /// Observed status; carried over when the service is redeclared.
    pub health: Arc<Health>,
}

impl Service {
    /// The primary upstream as text, for plugins and listings.
    pub fn primary_upstream(&self) -> String {
        self.upstreams
            .first()
            .map(|url| url.as_str().trim_end_matches('/').to_owned())
            .unwrap_or_default()
    }
}

/// Services by id, from all sources. Reads are lock-free; a source replaces its whole set.
#[derive(Debug, Default)]
pub struct ServiceTable {
    by_source: Mutex<BTreeMap<Source, Vec<Service>>>,
    merged: ArcSwap<BTreeMap<String, Arc<Service>>>,
}

impl ServiceTable {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Replaces every service of `source` with `services`. When two sources declare one id,
    /// the static one wins; the other is logged and ignored.
    pub fn replace_source(&self, source: Source, services: Vec<Service>) {
        let mut by_source = self
            .by_source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let previous = self.merged.load();
        let services = services
            .into_iter()
            .map(|mut service| {
                if let Some(old) = previous.get(&service.id) {
                    service.health = Arc::clone(&old.health);
                }
                service.source = source;
                service
            })
            .collect();
        by_source.insert(source, services);
        let mut merged = BTreeMap::new();
        for services in by_source.values() {
            for service in services {
                if let Some(kept) = merged.get(&service.id) {
                    let kept: &Arc<Service> = kept;
                    tracing::warn!(id = %service.id, kept = kept.source.as_str(), ignored = service.source.as_str(), "service declared by two sources");
                    continue;
                }
                merged.insert(service.id.clone(), Arc::new(service.clone()));
            }
        }
        self.merged.store(Arc::new(merged));
    }

    /// The service `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Service>> {
        self.merged.load().get(id).cloned()
    }

    /// Every service, by id.
    pub fn list(&self) -> Vec<Arc<Service>> {
        self.merged.load().values().cloned().collect()
    }

    /// The ids, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.merged.load().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(id: &str, upstream: &str) -> Service {
        Service {
            id: id.to_owned(),
            service_type: "generic".to_owned(),
            upstreams: vec![reqwest::Url::parse(upstream).expect("url")],
            fail_closed: false,
            labels: BTreeMap::new(),
            source: Source::Static,
            health: Arc::default(),
        }
    }

    #[test]
    fn sources_merge_and_static_wins() {
        let table = ServiceTable::default();
        table.replace_source(
            Source::Docker,
            vec![
                service("a", "http://docker:1"),
                service("b", "http://docker:2"),
            ],
        );
        table.replace_source(Source::Static, vec![service("a", "http://static:1")]);
        let a = table.get("a").expect("a");
        assert_eq!(a.source, Source::Static);
        assert_eq!(a.primary_upstream(), "http://static:1");
        assert_eq!(table.get("b").expect("b").source, Source::Docker);
        table.replace_source(Source::Docker, Vec::new());
        assert_eq!(table.ids(), vec!["a".to_owned()]);
    }

    #[test]
    fn health_survives_redeclaration() {
        let table = ServiceTable::default();
        table.replace_source(Source::Static, vec![service("a", "http://x:1")]);
        table.get("a").expect("a").health.set(Status::Up);
        table.replace_source(Source::Static, vec![service("a", "http://x:2")]);
        assert_eq!(table.get("a").expect("a").health.get(), Status::Up);
    }
}
