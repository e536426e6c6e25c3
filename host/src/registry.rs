//! The service table: every service Portico serves, from every source (the configuration file
//! and Docker discovery), the other names that address them, and the health the proxy observed.
//!
//! Sources declare [`ServiceSpec`]s: the file directly, discovery providers by describing
//! [`workload::Workload`]s that the shared [`rules`] turn into specs. The table adds the runtime
//! state it owns, making a [`Service`].

pub mod balance;
pub mod docker;
mod probe;
pub mod rules;
pub mod r#static;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use balance::{Attempt, Outliers, ReplicaState};
pub use balance::{Balance, Replica};

/// Where a service was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The configuration file; wins over discovery when both name an id.
    Static,
    /// Container discovery.
    Docker,
    /// Swarm services.
    Swarm,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Docker => "docker",
            Self::Swarm => "swarm",
        }
    }

    /// What one of its workloads is called in reasons given to people.
    pub fn workload_noun(self) -> &'static str {
        match self {
            Self::Static | Self::Swarm => "service",
            Self::Docker => "container",
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

/// Whether a service can take requests now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Availability {
    /// Requests are forwarded.
    #[default]
    Ready,
    /// Its health check has not passed yet: requests wait (boundedly) for it.
    Starting,
    /// It cannot take requests (stopped, or no address to reach it); the text says why.
    Unavailable(String),
}

impl Availability {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Starting => "starting",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// Who may open a service when forward authentication is on (`[auth]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Access {
    /// Every user the auth service accepts: the default.
    #[default]
    SignedIn,
    /// Only these users (by the auth answer's user header). An empty list lets nobody in: a
    /// `portico.allow_users` label left empty by mistake does not open the service.
    Users(Arc<[String]>),
    /// Anyone, without asking the auth service: the service opted out.
    Open,
}

/// What a provider declares about a service: everything but the state the table keeps.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// The id in `/proxy/{id}`.
    pub id: String,
    /// The type, which picks the plugin.
    pub service_type: String,
    /// Its replicas, each with the base URLs that reach it.
    pub replicas: Vec<Replica>,
    /// How requests are spread over the replicas.
    pub balance: Balance,
    /// Pins each browser session to one replica with a cookie (frameworks that keep a
    /// session's state in one process).
    pub sticky: bool,
    /// The path whose 2xx answer makes a probed replica ready.
    pub health_path: Option<String>,
    /// The app serves under `/proxy/{id}/` itself (Jupyter with `base_url`): the prefix stays
    /// on upstream paths, in the generic behaviour and in readiness probes too.
    pub keep_prefix: bool,
    /// Answer 502 when the plugin fails instead of using the generic behaviour.
    pub fail_closed: bool,
    /// Labels passed to the plugin.
    pub labels: BTreeMap<String, String>,
    /// Who may open it when forward authentication is on.
    pub access: Access,
    /// Other names that address it in `/proxy/{x}/` (container id, short id, name, compose
    /// service); a name several services share addresses none of them.
    pub aliases: Vec<String>,
    /// Whether it takes requests now, as its provider sees it (running, reachable, health
    /// check passed); what the proxy itself observed is [`Service::health`].
    pub availability: Availability,
}

impl ServiceSpec {
    /// The primary upstream as text, for plugins and listings.
    pub fn primary_upstream(&self) -> String {
        self.upstreams()
            .next()
            .map(|url| url.as_str().trim_end_matches('/').to_owned())
            .unwrap_or_default()
    }

    /// Every URL of every replica.
    pub fn upstreams(&self) -> impl Iterator<Item = &url::Url> {
        self.replicas.iter().flat_map(|replica| replica.urls.iter())
    }
}

/// One service as the table holds it: the spec its provider declared, with the runtime state
/// the table owns and carries over when the service is redeclared. It reads as its spec.
#[derive(Debug, Clone)]
pub struct Service {
    spec: ServiceSpec,
    /// Where it was declared.
    pub source: Source,
    /// Observed status; carried over when the service is redeclared.
    pub health: Arc<Health>,
    /// The state of each replica, in the order of `replicas`; a replica keeps its state (by
    /// key) when the service is redeclared.
    states: Arc<[Arc<ReplicaState>]>,
    /// Turns of round-robin and of least-requests ties.
    turn: Arc<AtomicUsize>,
    /// The affinity tag of each replica, in the order of `replicas`.
    tags: Arc<[String]>,
}

impl std::ops::Deref for Service {
    type Target = ServiceSpec;

    fn deref(&self) -> &ServiceSpec {
        &self.spec
    }
}

impl std::ops::DerefMut for Service {
    fn deref_mut(&mut self) -> &mut ServiceSpec {
        &mut self.spec
    }
}

/// A service's spec without its runtime state, to declare it again.
impl From<Service> for ServiceSpec {
    fn from(service: Service) -> Self {
        service.spec
    }
}

/// The name of the cookie that pins a browser session of service `id` to a replica.
pub fn replica_cookie(id: &str) -> String {
    format!("{REPLICA_COOKIE_PREFIX}{id}")
}

/// What every replica cookie's name starts with; they are never passed to apps.
pub const REPLICA_COOKIE_PREFIX: &str = "portico_replica_";

impl Service {
    /// Whether it can take requests now: the provider's view, and, when every replica is
    /// waiting for its health path to answer, starting.
    pub fn current_availability(&self) -> Availability {
        match &self.spec.availability {
            Availability::Ready if !self.states.iter().any(|state| state.is_ready()) => {
                if self.replicas.is_empty() {
                    Availability::Unavailable("it has no replica".to_owned())
                } else {
                    Availability::Starting
                }
            }
            other => other.clone(),
        }
    }

    /// The attempts of one round of a request, best first. `pinned` is the affinity tag
    /// the request carried.
    pub fn attempts(&self, pinned: Option<&str>) -> Vec<Attempt> {
        let pinned = pinned.and_then(|tag| self.tags.iter().position(|t| t == tag));
        let order = balance::order(
            self.balance,
            &self.states,
            pinned,
            &self.turn,
            std::time::Instant::now(),
        );
        balance::attempts(&order, &self.states, |i| self.replicas[i].urls.len())
    }

    /// The URL of an attempt.
    pub fn url(&self, attempt: Attempt) -> &url::Url {
        &self.replicas[attempt.replica].urls[attempt.url]
    }

    /// The affinity tag of a replica.
    pub fn tag(&self, replica: usize) -> &str {
        &self.tags[replica]
    }

    /// The runtime state of a replica.
    pub fn state(&self, replica: usize) -> &Arc<ReplicaState> {
        &self.states[replica]
    }

    /// Remembers that an attempt got an answer.
    pub fn succeeded(&self, attempt: Attempt) {
        self.states[attempt.replica].succeeded(attempt.url);
    }

    /// Records that an attempt could not connect, ejecting the replica when it keeps failing;
    /// true when this ejected it.
    pub fn failed(&self, attempt: Attempt, outliers: &Outliers) -> bool {
        if self.replicas.len() < 2 {
            return false;
        }
        let ejected = self.states[attempt.replica].failed(outliers, std::time::Instant::now());
        if let Some(length) = ejected {
            tracing::info!(service = %self.id, replica = %self.replicas[attempt.replica].key, ejected_for = ?length, "replica ejected after connection failures");
        }
        ejected.is_some()
    }
}

/// What a name in `/proxy/{x}/` designates.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// One service: by its id, or by an alias no other service has.
    Found(Arc<Service>),
    /// An alias that several services share: their ids.
    Ambiguous(Vec<String>),
    /// Nothing.
    Missing,
}

/// The merged view readers load: services by id, and alias -> ids.
#[derive(Debug, Default)]
struct Merged {
    by_id: BTreeMap<String, Arc<Service>>,
    aliases: HashMap<String, BTreeSet<String>>,
}

/// How long a request waits for a starting service by default.
const DEFAULT_HOLD: Duration = Duration::from_secs(30);

/// Services by id, from all sources. Reads are lock-free; a source replaces its whole set.
#[derive(Debug)]
pub struct ServiceTable {
    by_source: Mutex<BTreeMap<Source, Vec<Service>>>,
    merged: ArcSwap<Merged>,
    /// Bumped on every change, so requests held for a starting service wake up.
    changed: Arc<tokio::sync::watch::Sender<u64>>,
    /// How long a request waits for a starting service, in milliseconds.
    hold_ms: AtomicU64,
}

impl Default for ServiceTable {
    fn default() -> Self {
        Self {
            by_source: Mutex::default(),
            merged: ArcSwap::default(),
            changed: Arc::new(tokio::sync::watch::Sender::new(0)),
            hold_ms: AtomicU64::new(u64::try_from(DEFAULT_HOLD.as_millis()).unwrap_or(30_000)),
        }
    }
}

impl ServiceTable {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Sets how long a request waits for a service whose health check has not passed yet.
    pub fn set_hold(&self, hold: Duration) {
        self.hold_ms.store(
            u64::try_from(hold.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Replaces every service of `source` with `services`. When two sources declare one id,
    /// the static one wins; the other is logged and ignored. A service keeps the runtime state
    /// of the one it replaces (by id): its health, and which upstream answered last while its
    /// upstreams are the same.
    pub fn replace_source<S: Into<ServiceSpec>>(
        &self,
        source: Source,
        services: impl IntoIterator<Item = S>,
    ) {
        let mut by_source = self
            .by_source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let previous = self.merged.load();
        let services = services
            .into_iter()
            .map(|spec| {
                let spec: ServiceSpec = spec.into();
                let old = previous.by_id.get(&spec.id);
                let states: Arc<[Arc<ReplicaState>]> = spec
                    .replicas
                    .iter()
                    .map(|replica| {
                        let kept = old.and_then(|old| {
                            old.replicas
                                .iter()
                                .position(|r| r.key == replica.key && r.urls == replica.urls)
                                .map(|i| Arc::clone(&old.states[i]))
                        });
                        kept.unwrap_or_else(|| {
                            let probing = replica.probe && spec.health_path.is_some();
                            let state = Arc::new(ReplicaState::new(probing));
                            if let Some(path) = spec.health_path.as_deref().filter(|_| probing) {
                                let path = if spec.keep_prefix {
                                    format!("/proxy/{}{path}", spec.id)
                                } else {
                                    path.to_owned()
                                };
                                probe::spawn(self, &spec.id, replica, &path, &state);
                            }
                            state
                        })
                    })
                    .collect();
                Service {
                    source,
                    health: old.map(|old| Arc::clone(&old.health)).unwrap_or_default(),
                    tags: spec.replicas.iter().map(Replica::tag).collect(),
                    turn: old.map(|old| Arc::clone(&old.turn)).unwrap_or_default(),
                    states,
                    spec,
                }
            })
            .collect();
        by_source.insert(source, services);
        let mut merged = Merged::default();
        for services in by_source.values() {
            for service in services {
                if let Some(kept) = merged.by_id.get(&service.id) {
                    tracing::warn!(id = %service.id, kept = kept.source.as_str(), ignored = service.source.as_str(), "service declared by two sources");
                    continue;
                }
                merged
                    .by_id
                    .insert(service.id.clone(), Arc::new(service.clone()));
            }
        }
        for service in merged.by_id.values() {
            for alias in &service.aliases {
                merged
                    .aliases
                    .entry(alias.clone())
                    .or_default()
                    .insert(service.id.clone());
            }
        }
        self.merged.store(Arc::new(merged));
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// What `x` designates: the service with that id, else the one service with that alias.
    pub fn lookup(&self, x: &str) -> Lookup {
        let merged = self.merged.load();
        if let Some(service) = merged.by_id.get(x) {
            return Lookup::Found(Arc::clone(service));
        }
        match merged.aliases.get(x) {
            Some(ids) if ids.len() == 1 => ids
                .first()
                .and_then(|id| merged.by_id.get(id))
                .map_or(Lookup::Missing, |service| {
                    Lookup::Found(Arc::clone(service))
                }),
            Some(ids) => Lookup::Ambiguous(ids.iter().cloned().collect()),
            None => Lookup::Missing,
        }
    }

    /// Like [`lookup`](Self::lookup), but while the service is starting, waits (up to the hold
    /// time) for it to become ready, stop or disappear.
    pub async fn lookup_ready(&self, x: &str) -> Lookup {
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.hold_ms.load(Ordering::Relaxed));
        let mut changes = self.changed.subscribe();
        loop {
            let found = self.lookup(x);
            let starting = matches!(&found, Lookup::Found(service) if service.current_availability() == Availability::Starting);
            if !starting {
                return found;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // The deadline passed (or the table is gone): answer with what there is.
                Ok(Err(_)) | Err(_) => return found,
            }
        }
    }

    /// The service `x` designates when it designates exactly one (id or unique alias).
    pub fn get(&self, x: &str) -> Option<Arc<Service>> {
        match self.lookup(x) {
            Lookup::Found(service) => Some(service),
            Lookup::Ambiguous(_) | Lookup::Missing => None,
        }
    }

    /// Every service, by id.
    pub fn list(&self) -> Vec<Arc<Service>> {
        self.merged.load().by_id.values().cloned().collect()
    }

    /// The ids, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.merged.load().by_id.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(id: &str, upstream: &str) -> ServiceSpec {
        ServiceSpec {
            id: id.to_owned(),
            service_type: "generic".to_owned(),
            replicas: vec![Replica::at(url::Url::parse(upstream).expect("url"))],
            balance: Balance::First,
            sticky: false,
            health_path: None,
            keep_prefix: false,
            fail_closed: false,
            labels: BTreeMap::new(),
            access: Access::SignedIn,
            aliases: Vec::new(),
            availability: Availability::Ready,
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
        table.replace_source(Source::Docker, Vec::<ServiceSpec>::new());
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

    #[test]
    fn aliases_resolve_when_unique() {
        let table = ServiceTable::default();
        let mut a = service("a", "http://x:1");
        a.aliases = vec!["web".to_owned(), "abc123".to_owned()];
        let mut b = service("b", "http://x:2");
        b.aliases = vec!["web".to_owned(), "a".to_owned()];
        table.replace_source(Source::Docker, vec![a, b]);
        assert!(matches!(table.lookup("abc123"), Lookup::Found(s) if s.id == "a"));
        assert!(
            matches!(table.lookup("a"), Lookup::Found(s) if s.id == "a"),
            "an id beats an alias"
        );
        match table.lookup("web") {
            Lookup::Ambiguous(ids) => assert_eq!(ids, vec!["a".to_owned(), "b".to_owned()]),
            other => panic!("expected ambiguity, got {other:?}"),
        }
        assert!(table.get("web").is_none());
        assert!(matches!(table.lookup("nope"), Lookup::Missing));
    }

    #[test]
    fn replicas_keep_their_state_across_redeclarations() {
        let mut s = service("a", "http://x:1");
        s.balance = Balance::RoundRobin;
        s.replicas
            .push(Replica::at(url::Url::parse("http://x:2").expect("url")));
        let table = ServiceTable::default();
        table.replace_source(Source::Static, vec![s.clone()]);
        let first = |table: &ServiceTable| table.get("a").expect("a").attempts(None)[0].replica;
        assert_eq!(first(&table), 0);
        let held = table.get("a").expect("a").state(1).start();
        table.replace_source(Source::Static, vec![s.clone()]);
        assert_eq!(first(&table), 1, "the turn carried over");
        assert_eq!(table.get("a").expect("a").state(1).in_flight(), 1);
        drop(held);
        s.replicas.remove(0);
        table.replace_source(Source::Static, vec![s]);
        let a = table.get("a").expect("a");
        assert_eq!(a.replicas.len(), 1);
        assert_eq!(a.state(0).in_flight(), 0, "kept by key, not by position");
    }

    #[test]
    fn a_pinned_session_stays_on_its_replica() {
        let mut s = service("a", "http://x:1");
        s.balance = Balance::RoundRobin;
        s.replicas
            .push(Replica::at(url::Url::parse("http://x:2").expect("url")));
        let table = ServiceTable::default();
        table.replace_source(Source::Static, vec![s]);
        let a = table.get("a").expect("a");
        let tag = a.tag(1).to_owned();
        for _ in 0..4 {
            assert_eq!(a.attempts(Some(&tag))[0].replica, 1);
        }
        assert_eq!(
            a.attempts(Some("gone"))[0].replica,
            0,
            "an unknown tag is ignored"
        );
    }

    #[tokio::test]
    async fn probed_replicas_wait_for_their_health_path() {
        use axum::routing::get;
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let app = {
            let ready = Arc::clone(&ready);
            axum::Router::new().route(
                "/health",
                get(move || {
                    let ready = ready.load(Ordering::SeqCst);
                    async move {
                        if ready {
                            axum::http::StatusCode::OK
                        } else {
                            axum::http::StatusCode::SERVICE_UNAVAILABLE
                        }
                    }
                }),
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let table = Arc::new(ServiceTable::default());
        let mut s = service("a", &format!("http://{addr}"));
        s.health_path = Some("/health".to_owned());
        s.replicas[0].probe = true;
        table.replace_source(Source::Static, vec![s]);
        let a = table.get("a").expect("a");
        assert_eq!(a.current_availability(), Availability::Starting);
        assert!(
            a.attempts(None).is_empty(),
            "no traffic before the probe passed"
        );
        let waiter = {
            let table = Arc::clone(&table);
            tokio::spawn(async move { table.lookup_ready("a").await })
        };
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(
            !waiter.is_finished(),
            "held while the health path answers 503"
        );
        ready.store(true, Ordering::SeqCst);
        let found = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken within the backoff")
            .expect("join");
        match found {
            Lookup::Found(service) => {
                assert_eq!(service.current_availability(), Availability::Ready);
                assert_eq!(service.attempts(None).len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn held_requests_wake_when_the_service_is_ready() {
        let table = Arc::new(ServiceTable::default());
        let mut starting = service("a", "http://x:1");
        starting.availability = Availability::Starting;
        table.replace_source(Source::Docker, vec![starting.clone()]);
        let waiter = {
            let table = Arc::clone(&table);
            tokio::spawn(async move { table.lookup_ready("a").await })
        };
        tokio::task::yield_now().await;
        starting.availability = Availability::Ready;
        table.replace_source(Source::Docker, vec![starting]);
        match waiter.await.expect("join") {
            Lookup::Found(s) => assert_eq!(s.availability, Availability::Ready),
            other => panic!("{other:?}"),
        }
        let mut stuck = service("b", "http://x:1");
        stuck.availability = Availability::Starting;
        table.replace_source(Source::Docker, vec![stuck]);
        table.set_hold(Duration::from_millis(20));
        assert!(
            matches!(table.lookup_ready("b").await, Lookup::Found(s) if s.availability == Availability::Starting)
        );
    }
}
