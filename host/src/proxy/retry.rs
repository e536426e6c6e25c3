//! Upstream failures, which of them may be retried, and the backoff between rounds.

use std::time::{Duration, Instant};

use axum::http::Method;

use super::ProxyError;
use crate::config::Retry;
use crate::metrics::UpstreamFailure;

/// An attempt that got no response.
#[derive(Debug)]
pub(super) struct Failure {
    pub kind: UpstreamFailure,
    /// True when nothing reached the upstream (the connection was never made).
    pub before_send: bool,
    /// True when the connection had carried an earlier response: a keep-alive connection the
    /// upstream may have closed just as this request went out.
    pub reused: bool,
    pub detail: String,
}

impl Failure {
    pub fn refused(detail: impl Into<String>) -> Self {
        Self::after_send(UpstreamFailure::Refused, detail).before_send()
    }

    pub fn timeout(detail: impl Into<String>) -> Self {
        Self::after_send(UpstreamFailure::Timeout, detail)
    }

    /// A failure once the request may have reached the upstream.
    pub fn after_send(kind: UpstreamFailure, detail: impl Into<String>) -> Self {
        Self {
            kind,
            before_send: false,
            reused: false,
            detail: detail.into(),
        }
    }

    fn before_send(mut self) -> Self {
        self.before_send = true;
        self
    }

    /// Classifies an error of the HTTP client: no connection (refused, unreachable, or not
    /// made within the connect timeout), an answer that is not HTTP, or a connection lost
    /// before the response head.
    pub fn of(err: &hyper_util::client::legacy::Error) -> Self {
        let detail = chain(err);
        if err.is_connect() {
            return Self::refused(detail);
        }
        let hyper =
            std::error::Error::source(err).and_then(|source| source.downcast_ref::<hyper::Error>());
        if hyper.is_some_and(hyper::Error::is_parse) {
            return Self::after_send(UpstreamFailure::Invalid, detail);
        }
        let failure = Self {
            reused: super::connector::Uses::reused(err),
            ..Self::after_send(UpstreamFailure::Reset, detail)
        };
        // Canceled: the connection closed before the request was written, so the upstream
        // never saw it.
        if hyper.is_some_and(hyper::Error::is_canceled) {
            return failure.before_send();
        }
        failure
    }

    /// True when the attempt may be made again without the upstream seeing the request twice
    /// for nothing: a request that never left (no connection, or one that closed before the
    /// request was written) is retried while the budget lasts; a
    /// request that reached the upstream only once more (`resent` says whether that was
    /// used), when it is idempotent, its body can be sent again, and either the connection was
    /// a reused keep-alive one that closed before any response byte, or the next attempt goes
    /// to another replica (`elsewhere`: one that is stopping drops what it was sent, as nginx's
    /// `proxy_next_upstream error` assumes). A timeout or an invalid answer is final.
    pub fn retriable(
        &self,
        method: &Method,
        body_replayable: bool,
        resent: bool,
        elsewhere: bool,
    ) -> bool {
        match self.kind {
            UpstreamFailure::Refused => self.before_send || body_replayable,
            UpstreamFailure::Reset if self.before_send => body_replayable,
            UpstreamFailure::Reset => {
                (self.reused || elsewhere) && !resent && body_replayable && is_idempotent(method)
            }
            UpstreamFailure::Timeout | UpstreamFailure::Invalid => false,
        }
    }

    /// The error the client sees.
    pub fn into_error(self, service: &str) -> ProxyError {
        let service = service.to_owned();
        let detail = self.detail;
        match self.kind {
            UpstreamFailure::Refused => ProxyError::Refused { service, detail },
            UpstreamFailure::Reset => ProxyError::Reset { service, detail },
            UpstreamFailure::Timeout => ProxyError::Timeout { service, detail },
            UpstreamFailure::Invalid => ProxyError::Invalid { service, detail },
        }
    }
}

/// The error and its sources on one line, the way the operator wants to read them.
pub(super) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Exponential backoff with jitter, bounded by a total budget.
#[derive(Debug)]
pub(super) struct Backoff {
    next: Duration,
    max: Duration,
    deadline: Instant,
}

impl Backoff {
    pub fn new(retry: &Retry, started: Instant) -> Self {
        Self {
            next: Duration::from_millis(retry.initial_backoff_ms.max(1)),
            max: Duration::from_millis(retry.max_backoff_ms.max(1)),
            deadline: started + retry.budget(),
        }
    }

    /// The pause before the next round, or `None` once the budget is spent.
    pub fn pause(&mut self) -> Option<Duration> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return None;
        }
        // Jitter in [0.5, 1.5) spreads clients that failed together.
        let jittered = self.next.mul_f64(0.5 + fastrand::f64());
        self.next = (self.next * 2).min(self.max);
        Some(jittered.min(remaining))
    }
}

/// Ends one round over a service's upstream list: sleeps before the next round, or gives up
/// with the round's last failure once the retry budget is spent.
pub(super) async fn next_round(
    backoff: &mut Backoff,
    last: Option<Failure>,
    service: &str,
    metrics: &crate::metrics::ServiceMetrics,
) -> Result<(), ProxyError> {
    let Some(failure) = last else {
        return Err(ProxyError::Refused {
            service: service.to_owned(),
            detail: "the service has no upstream".to_owned(),
        });
    };
    match backoff.pause() {
        Some(pause) => {
            metrics.retry();
            tokio::time::sleep(pause).await;
            Ok(())
        }
        None => {
            tracing::warn!(service, error = %failure.detail, "upstream unreachable; retry budget spent");
            Err(failure.into_error(service))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stops_at_the_budget() {
        let retry = Retry {
            budget_ms: 60_000,
            initial_backoff_ms: 100,
            max_backoff_ms: 400,
        };
        let mut backoff = Backoff::new(&retry, Instant::now());
        let pauses: Vec<Duration> = (0..5).filter_map(|_| backoff.pause()).collect();
        assert_eq!(pauses.len(), 5);
        assert!(pauses[0] >= Duration::from_millis(50) && pauses[0] < Duration::from_millis(150));
        assert!(pauses[4] >= Duration::from_millis(200) && pauses[4] < Duration::from_millis(600));
        let spent = Retry {
            budget_ms: 0,
            ..retry
        };
        assert_eq!(Backoff::new(&spent, Instant::now()).pause(), None);
    }

    #[test]
    fn only_safe_attempts_are_retried() {
        let refused = Failure::refused("refused");
        assert!(refused.retriable(&Method::POST, false, true, false));
        let fresh = Failure::after_send(UpstreamFailure::Reset, "closed");
        assert!(!fresh.retriable(&Method::GET, true, false, false));
        let stale = Failure {
            reused: true,
            ..Failure::after_send(UpstreamFailure::Reset, "closed")
        };
        assert!(stale.retriable(&Method::GET, true, false, false));
        assert!(!stale.retriable(&Method::GET, true, true, false));
        assert!(!stale.retriable(&Method::POST, true, false, false));
        assert!(!stale.retriable(&Method::PUT, false, false, false));
        assert!(
            fresh.retriable(&Method::GET, true, false, true),
            "a fresh connection that broke is retried on another replica"
        );
        assert!(!fresh.retriable(&Method::GET, true, true, true), "once");
        assert!(!fresh.retriable(&Method::POST, true, false, true));
        assert!(!Failure::timeout("t").retriable(&Method::GET, true, false, false));
        let invalid = Failure::after_send(UpstreamFailure::Invalid, "garbage");
        assert!(!invalid.retriable(&Method::GET, true, false, false));
        let unsent = Failure::after_send(UpstreamFailure::Reset, "canceled").before_send();
        assert!(unsent.retriable(&Method::POST, true, true, false));
        assert!(!unsent.retriable(&Method::POST, false, true, false));
    }
}
