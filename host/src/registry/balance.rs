//! Choosing a replica for each request: the balancing policy, the affinity that pins a browser
//! session to one replica, passive health (outlier ejection) and readiness.
//!
//! A service has one or more replicas (a Swarm task, a container, an upstream of a file
//! service); a replica has one or more URLs, which are ways of reaching the same process and
//! are tried in order. The state here belongs to the table and survives a redeclaration of
//! the service, replica by replica (by key).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sha2::Digest as _;

/// How requests are spread over a service's replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// The replica with the fewest requests in flight; ties go round.
    #[default]
    LeastRequests,
    /// Each replica in turn.
    RoundRobin,
    /// The first replica that can take requests, in declaration order; the others are
    /// failovers.
    First,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LeastRequests => "least-requests",
            Self::RoundRobin => "round-robin",
            Self::First => "first",
        }
    }

    /// The policy a label or file value names.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "least-requests" => Some(Self::LeastRequests),
            "round-robin" => Some(Self::RoundRobin),
            "first" => Some(Self::First),
            _ => None,
        }
    }
}

/// One replica as a provider declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// A name that stays the same while the replica lives (a task or container id, the URL
    /// of a file upstream): what its state is kept under and what the affinity cookie names
    /// (hashed).
    pub key: String,
    /// Ways of reaching it, tried in order.
    pub urls: Vec<url::Url>,
    /// True when it takes traffic only once its health path answered 2xx: nothing else (no
    /// container health check) vouches for it.
    pub probe: bool,
}

impl Replica {
    /// A replica reached at one URL, named by it.
    pub fn at(url: url::Url) -> Self {
        Self {
            key: url.as_str().to_owned(),
            urls: vec![url],
            probe: false,
        }
    }

    /// What the affinity cookie holds for this replica: a digest of its key, so the cookie
    /// says nothing about addresses, and a cookie made by one Portico works at any other.
    pub fn tag(&self) -> String {
        tag_of(&self.key)
    }
}

/// The affinity tag of a replica key.
pub fn tag_of(key: &str) -> String {
    let digest = sha2::Sha256::digest(key.as_bytes());
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Passive health settings (`[balance]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outliers {
    /// Consecutive connection failures that eject a replica.
    pub failures: u32,
    /// How long the first ejection lasts; each further one doubles it, up to `max`.
    pub base: Duration,
    pub max: Duration,
}

impl Default for Outliers {
    fn default() -> Self {
        Self {
            failures: 3,
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

/// What the table keeps about one replica.
#[derive(Debug)]
pub struct ReplicaState {
    /// Requests (and WebSockets) in flight to it, for least-requests.
    in_flight: AtomicUsize,
    /// The index in its URLs that last answered, tried first next time.
    preferred: AtomicUsize,
    /// False until its health path answered 2xx, for a replica that is probed.
    ready: AtomicBool,
    /// Connection failures in a row.
    failures: AtomicU32,
    ejection: Mutex<Ejection>,
}

#[derive(Debug, Default)]
struct Ejection {
    until: Option<Instant>,
    /// Ejections since the last success: the next one lasts `base * 2^times`.
    times: u32,
}

impl ReplicaState {
    /// The state of a new replica: ready at once unless it is to be probed first.
    pub fn new(probe: bool) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            preferred: AtomicUsize::new(0),
            ready: AtomicBool::new(!probe),
            failures: AtomicU32::new(0),
            ejection: Mutex::new(Ejection::default()),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Records that its health path answered 2xx.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether it is ejected now.
    pub fn ejected(&self, now: Instant) -> bool {
        self.lock().until.is_some_and(|until| now < until)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ejection> {
        self.ejection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a request (or WebSocket) as in flight until the guard is dropped.
    pub fn start(self: &std::sync::Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(std::sync::Arc::clone(self))
    }

    /// Records an answer from it: it is healthy again.
    pub fn succeeded(&self, url_index: usize) {
        self.preferred.store(url_index, Ordering::Relaxed);
        if self.failures.swap(0, Ordering::Relaxed) != 0 {
            *self.lock() = Ejection::default();
        }
    }

    /// Records a connection failure; returns the ejection time when this one ejects it.
    pub fn failed(&self, outliers: &Outliers, now: Instant) -> Option<Duration> {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < outliers.failures.max(1) {
            return None;
        }
        let mut ejection = self.lock();
        if ejection.until.is_some_and(|until| now < until) {
            return None;
        }
        let length = outliers
            .base
            .saturating_mul(1 << ejection.times.min(16))
            .min(outliers.max);
        ejection.until = Some(now + length);
        ejection.times = ejection.times.saturating_add(1);
        Some(length)
    }

    /// The order of its URLs: the one that last answered first.
    fn url_start(&self, len: usize) -> usize {
        self.preferred
            .load(Ordering::Relaxed)
            .min(len.saturating_sub(1))
    }
}

/// A request in flight to a replica; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight(std::sync::Arc<ReplicaState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One attempt: a replica and one of its URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub replica: usize,
    pub url: usize,
}

/// The replicas to try for one request, best first: the pinned one when it can take
/// requests, else the policy's choice, then the others that can, in declaration order. A
/// replica that is not ready (probe pending) is never tried; an ejected one only when every
/// ready replica is ejected (then they all are tried, since refusing everything helps nobody).
pub fn order(
    policy: Balance,
    states: &[std::sync::Arc<ReplicaState>],
    pinned: Option<usize>,
    turn: &AtomicUsize,
    now: Instant,
) -> Vec<usize> {
    if let [only] = states {
        return if only.is_ready() { vec![0] } else { Vec::new() };
    }
    let ready: Vec<usize> = (0..states.len())
        .filter(|&i| states[i].is_ready())
        .collect();
    let healthy: Vec<usize> = ready
        .iter()
        .copied()
        .filter(|&i| !states[i].ejected(now))
        .collect();
    let mut pool = if healthy.is_empty() { ready } else { healthy };
    if pool.len() <= 1 {
        return pool;
    }
    let first = match pinned.filter(|p| pool.contains(p)) {
        Some(pinned) => pinned,
        None => match policy {
            Balance::First => pool[0],
            Balance::RoundRobin => pool[turn.fetch_add(1, Ordering::Relaxed) % pool.len()],
            Balance::LeastRequests => {
                // Ties are broken by a rotating start, so equal replicas share the load.
                let start = turn.fetch_add(1, Ordering::Relaxed) % pool.len();
                let rotated = pool[start..].iter().chain(&pool[..start]).copied();
                rotated
                    .min_by_key(|&i| states[i].in_flight())
                    .unwrap_or(pool[0])
            }
        },
    };
    pool.retain(|&i| i != first);
    pool.insert(0, first);
    pool
}

/// Every attempt of one round: each replica of `order` with its URLs, the one that last
/// answered first.
pub fn attempts(
    order: &[usize],
    states: &[std::sync::Arc<ReplicaState>],
    url_counts: impl Fn(usize) -> usize,
) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    for &replica in order {
        let len = url_counts(replica);
        let start = states[replica].url_start(len);
        attempts.extend((0..len).map(|i| Attempt {
            replica,
            url: (start + i) % len,
        }));
    }
    attempts
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn states(n: usize) -> Vec<Arc<ReplicaState>> {
        (0..n).map(|_| Arc::new(ReplicaState::new(false))).collect()
    }

    fn firsts(policy: Balance, states: &[Arc<ReplicaState>], n: usize) -> Vec<usize> {
        let turn = AtomicUsize::new(0);
        (0..n)
            .map(|_| order(policy, states, None, &turn, Instant::now())[0])
            .collect()
    }

    #[test]
    fn round_robin_takes_turns_and_first_stays() {
        let s = states(3);
        assert_eq!(firsts(Balance::RoundRobin, &s, 6), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(firsts(Balance::First, &s, 3), vec![0, 0, 0]);
        let turn = AtomicUsize::new(0);
        assert_eq!(
            order(Balance::RoundRobin, &s, None, &turn, Instant::now()),
            vec![0, 1, 2],
            "the others follow as failovers"
        );
    }

    #[test]
    fn least_requests_prefers_the_idle_replica_and_shares_ties() {
        let s = states(3);
        let _busy = [s[0].start(), s[0].start(), s[2].start()];
        assert_eq!(firsts(Balance::LeastRequests, &s, 4), vec![1, 1, 1, 1]);
        drop(_busy);
        let mut spread = firsts(Balance::LeastRequests, &s, 3);
        spread.sort_unstable();
        assert_eq!(spread, vec![0, 1, 2], "equal replicas take turns");
        assert_eq!(s[0].in_flight(), 0, "guards end the requests");
    }

    #[test]
    fn the_pinned_replica_wins_while_it_can_take_requests() {
        let s = states(3);
        let turn = AtomicUsize::new(0);
        let now = Instant::now();
        assert_eq!(order(Balance::LeastRequests, &s, Some(2), &turn, now)[0], 2);
        let outliers = Outliers {
            failures: 1,
            ..Outliers::default()
        };
        assert!(s[2].failed(&outliers, now).is_some());
        assert_eq!(
            order(Balance::LeastRequests, &s, Some(2), &turn, now),
            vec![0, 1],
            "an ejected pinned replica is passed over"
        );
    }

    #[test]
    fn ejection_backs_off_and_a_success_restores() {
        let s = ReplicaState::new(false);
        let outliers = Outliers::default();
        let now = Instant::now();
        assert_eq!(s.failed(&outliers, now), None);
        assert_eq!(s.failed(&outliers, now), None);
        assert_eq!(s.failed(&outliers, now), Some(Duration::from_secs(1)));
        assert!(s.ejected(now));
        assert_eq!(s.failed(&outliers, now), None, "already ejected");
        let later = now + Duration::from_secs(2);
        assert!(!s.ejected(later), "back for a trial after the backoff");
        assert_eq!(
            s.failed(&outliers, later),
            Some(Duration::from_secs(2)),
            "a failed trial doubles the ejection"
        );
        s.succeeded(0);
        assert!(!s.ejected(later));
        assert_eq!(s.failed(&outliers, later), None, "the count starts over");
        let capped = Outliers {
            failures: 1,
            base: Duration::from_secs(20),
            max: Duration::from_secs(30),
        };
        let t = ReplicaState::new(false);
        assert_eq!(t.failed(&capped, now), Some(Duration::from_secs(20)));
        let after = now + Duration::from_secs(21);
        assert_eq!(t.failed(&capped, after), Some(Duration::from_secs(30)));
    }

    #[test]
    fn everyone_ejected_means_everyone_tried_and_unready_never() {
        let s = states(2);
        let now = Instant::now();
        let outliers = Outliers {
            failures: 1,
            ..Outliers::default()
        };
        s[0].failed(&outliers, now);
        s[1].failed(&outliers, now);
        let turn = AtomicUsize::new(0);
        assert_eq!(order(Balance::First, &s, None, &turn, now), vec![0, 1]);
        let probing = vec![
            Arc::new(ReplicaState::new(true)),
            Arc::new(ReplicaState::new(false)),
        ];
        assert_eq!(order(Balance::First, &probing, None, &turn, now), vec![1]);
        probing[0].mark_ready();
        assert_eq!(
            order(Balance::First, &probing, None, &turn, now),
            vec![0, 1]
        );
    }

    #[test]
    fn attempts_start_with_the_url_that_answered() {
        let s = states(2);
        s[1].succeeded(1);
        let attempts = attempts(&[1, 0], &s, |_| 2);
        let pairs: Vec<(usize, usize)> = attempts.iter().map(|a| (a.replica, a.url)).collect();
        assert_eq!(pairs, vec![(1, 1), (1, 0), (0, 0), (0, 1)]);
    }

    #[test]
    fn tags_are_stable_and_reveal_nothing() {
        let replica = Replica::at(url::Url::parse("http://10.0.0.5:8080").expect("url"));
        assert_eq!(replica.tag(), tag_of("http://10.0.0.5:8080/"));
        assert_eq!(replica.tag().len(), 16);
        assert!(!replica.tag().contains("10.0"));
        assert_ne!(tag_of("a"), tag_of("b"));
    }
}
