//! A plugin's health across all of its calls: failures counted over a sliding window, a
//! quarantine with exponential backoff past a threshold, then probes with real traffic.
//!
//! Every hook counts against the same window, and a success never erases a failure: only time
//! does. So a plugin cannot stay in service by alternating a good call with a bad one, nor by
//! failing in one hook while succeeding in another.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When a plugin is quarantined and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures within `window` that quarantine the plugin.
    pub failures: u32,
    /// How far back failures count.
    pub window: Duration,
    /// The first quarantine's length; each one that follows a short recovery doubles it.
    pub backoff: Duration,
    /// The longest quarantine.
    pub max_backoff: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            failures: 10,
            window: Duration::from_secs(30),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// Where a plugin stands, as reported in metrics and in the service listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go to the plugin.
    Healthy,
    /// Calls get the generic behaviour (or 502 on fail-closed services) until the backoff ends.
    Quarantined,
    /// The backoff ended: one real call at a time is sent to the plugin; a success ends the
    /// quarantine, a failure starts a longer one.
    Probing,
}

impl State {
    pub const ALL: [Self; 3] = [Self::Healthy, Self::Quarantined, Self::Probing];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Quarantined => "quarantined",
            Self::Probing => "probing",
        }
    }
}

/// How one call is let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// An ordinary call.
    Call,
    /// The probe that decides whether the quarantine ends.
    Probe,
    /// Not let through: the plugin is quarantined.
    Refuse,
}

/// What a failure did to the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Counted; the plugin stays in service.
    Counted,
    /// The plugin was quarantined for this long.
    Quarantined(Duration),
    /// The plugin was already out of service (a call that was running when it was quarantined).
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Healthy,
    Quarantined { until: Instant },
    Probing { probe_out: bool },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// When the failures still in the window happened, oldest first.
    failures: VecDeque<Instant>,
    /// Quarantines in a row without a lasting recovery: the backoff's exponent.
    level: u32,
    recovered_at: Option<Instant>,
}

/// One plugin's health.
#[derive(Debug)]
pub struct Health {
    policy: Policy,
    /// True while healthy: the one load on every call's path.
    healthy: AtomicBool,
    inner: Mutex<Inner>,
    quarantines: AtomicU64,
}

impl Health {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            healthy: AtomicBool::new(true),
            inner: Mutex::new(Inner {
                phase: Phase::Healthy,
                failures: VecDeque::new(),
                level: 0,
                recovered_at: None,
            }),
            quarantines: AtomicU64::new(0),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves `Inner` consistent before anything that could panic.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a call starting at `now` may go to the plugin.
    pub fn admit(&self, now: Instant) -> Admit {
        if self.healthy.load(Ordering::Acquire) {
            return Admit::Call;
        }
        let mut inner = self.inner();
        match inner.phase {
            Phase::Healthy => Admit::Call,
            Phase::Quarantined { until } if now < until => Admit::Refuse,
            Phase::Quarantined { .. } | Phase::Probing { probe_out: false } => {
                inner.phase = Phase::Probing { probe_out: true };
                Admit::Probe
            }
            Phase::Probing { probe_out: true } => Admit::Refuse,
        }
    }

    /// A call let through by `admit` succeeded; true when it ended a quarantine.
    pub fn succeeded(&self, admit: Admit, now: Instant) -> bool {
        if admit != Admit::Probe {
            return false;
        }
        let mut inner = self.inner();
        inner.phase = Phase::Healthy;
        inner.failures.clear();
        inner.recovered_at = Some(now);
        self.healthy.store(true, Ordering::Release);
        true
    }

    /// A call let through by `admit` failed.
    pub fn failed(&self, admit: Admit, now: Instant) -> Outcome {
        let mut inner = self.inner();
        if admit == Admit::Probe {
            return Outcome::Quarantined(self.quarantine(&mut inner, now));
        }
        if inner.phase != Phase::Healthy {
            return Outcome::Ignored;
        }
        while inner
            .failures
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= self.policy.window)
        {
            inner.failures.pop_front();
        }
        inner.failures.push_back(now);
        if inner.failures.len() >= self.policy.failures as usize {
            Outcome::Quarantined(self.quarantine(&mut inner, now))
        } else {
            Outcome::Counted
        }
    }

    /// A probe that neither succeeded nor failed (its request went away): the next call probes.
    pub fn abandoned(&self, admit: Admit) {
        if admit != Admit::Probe {
            return;
        }
        let mut inner = self.inner();
        if inner.phase == (Phase::Probing { probe_out: true }) {
            inner.phase = Phase::Probing { probe_out: false };
        }
    }

    fn quarantine(&self, inner: &mut Inner, now: Instant) -> Duration {
        // A plugin that stayed healthy longer than the longest backoff starts over.
        if inner
            .recovered_at
            .is_some_and(|at| now.saturating_duration_since(at) > self.policy.max_backoff)
        {
            inner.level = 0;
        }
        let period = self
            .policy
            .backoff
            .saturating_mul(1 << inner.level.min(20))
            .min(self.policy.max_backoff);
        inner.level = inner.level.saturating_add(1);
        inner.phase = Phase::Quarantined {
            until: now + period,
        };
        inner.failures.clear();
        self.healthy.store(false, Ordering::Release);
        self.quarantines.fetch_add(1, Ordering::Relaxed);
        period
    }

    /// Where the plugin stands.
    pub fn state(&self) -> State {
        if self.healthy.load(Ordering::Acquire) {
            return State::Healthy;
        }
        match self.inner().phase {
            Phase::Healthy => State::Healthy,
            Phase::Quarantined { .. } => State::Quarantined,
            Phase::Probing { .. } => State::Probing,
        }
    }

    /// Quarantines so far.
    pub fn quarantines(&self) -> u64 {
        self.quarantines.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            failures: 3,
            window: Duration::from_secs(10),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
        }
    }

    fn fail(health: &Health, at: Instant) -> Outcome {
        let admit = health.admit(at);
        assert_ne!(admit, Admit::Refuse);
        health.failed(admit, at)
    }

    #[test]
    fn successes_in_between_do_not_reset_failures() {
        let health = Health::new(policy());
        let start = Instant::now();
        for step in 0..2 {
            let at = start + Duration::from_millis(step);
            assert_eq!(fail(&health, at), Outcome::Counted);
            assert!(!health.succeeded(health.admit(at), at));
        }
        assert_eq!(
            fail(&health, start + Duration::from_millis(5)),
            Outcome::Quarantined(Duration::from_secs(1))
        );
        assert_eq!(health.state(), State::Quarantined);
        assert_eq!(
            health.admit(start + Duration::from_millis(500)),
            Admit::Refuse
        );
    }

    #[test]
    fn old_failures_leave_the_window() {
        let health = Health::new(policy());
        let start = Instant::now();
        for step in 0..10 {
            let at = start + Duration::from_secs(6 * step);
            assert_eq!(fail(&health, at), Outcome::Counted);
        }
        assert_eq!(health.state(), State::Healthy);
    }

    #[test]
    fn backoff_doubles_until_a_probe_succeeds() {
        let health = Health::new(policy());
        let mut now = Instant::now();
        for _ in 0..3 {
            fail(&health, now);
        }
        let mut periods = Vec::new();
        for _ in 0..5 {
            now += Duration::from_secs(9);
            assert_eq!(health.admit(now), Admit::Probe);
            // Only one probe at a time.
            assert_eq!(health.admit(now), Admit::Refuse);
            match health.failed(Admit::Probe, now) {
                Outcome::Quarantined(period) => periods.push(period.as_secs()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(periods, [2, 4, 8, 8, 8]);
        now += Duration::from_secs(9);
        let probe = health.admit(now);
        assert_eq!(probe, Admit::Probe);
        assert!(health.succeeded(probe, now));
        assert_eq!(health.state(), State::Healthy);
        assert_eq!(health.quarantines(), 6);
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let health = Health::new(policy());
        let now = Instant::now();
        for _ in 0..3 {
            fail(&health, now);
        }
        let later = now + Duration::from_secs(2);
        let probe = health.admit(later);
        assert_eq!(probe, Admit::Probe);
        health.abandoned(probe);
        assert_eq!(health.admit(later), Admit::Probe);
    }

    #[test]
    fn a_lasting_recovery_resets_the_backoff() {
        let health = Health::new(policy());
        let mut now = Instant::now();
        for _ in 0..3 {
            fail(&health, now);
        }
        now += Duration::from_secs(2);
        health.succeeded(health.admit(now), now);
        now += Duration::from_secs(60);
        fail(&health, now);
        fail(&health, now);
        assert_eq!(
            fail(&health, now),
            Outcome::Quarantined(Duration::from_secs(1))
        );
    }
}
