//! Readiness probes: a replica that nothing else vouches for takes traffic only once its
//! service's health path answers 2xx. Probes repeat with backoff until it does, or until the
//! replica is gone.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::ServiceTable;
use super::balance::{Replica, ReplicaState};

/// The first pause between probes; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts probing `replica` of service `id` at `path`; `state` turns ready when it answers.
pub(super) fn spawn(
    table: &ServiceTable,
    id: &str,
    replica: &Replica,
    path: &str,
    state: &Arc<ReplicaState>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // No runtime to probe from (a unit test of the table): trust the provider.
        state.mark_ready();
        return;
    };
    let targets: Vec<String> = replica
        .urls
        .iter()
        .map(|base| format!("{}{path}", base.as_str().trim_end_matches('/')))
        .collect();
    let probe = Probe {
        id: id.to_owned(),
        key: replica.key.clone(),
        targets,
        state: Arc::downgrade(state),
        changed: Arc::clone(&table.changed),
    };
    runtime.spawn(probe.run());
}

struct Probe {
    id: String,
    key: String,
    targets: Vec<String>,
    state: Weak<ReplicaState>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Probe {
    async fn run(self) {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_connect_timeout(Some(PROBE_TIMEOUT));
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build::<_, axum::body::Body>(connector);
        let mut pause = FIRST_PAUSE;
        let mut last = String::new();
        loop {
            for target in &self.targets {
                // The replica is gone (redeclared without it): stop.
                if self.state.strong_count() == 0 {
                    return;
                }
                let Ok(uri) = target.parse::<hyper::Uri>() else {
                    continue;
                };
                let answer = tokio::time::timeout(PROBE_TIMEOUT, client.get(uri)).await;
                match answer {
                    Ok(Ok(response)) if response.status().is_success() => {
                        if let Some(state) = self.state.upgrade() {
                            state.mark_ready();
                            tracing::info!(service = %self.id, replica = %self.key, "replica ready: its health path answered");
                            self.changed.send_modify(|generation| *generation += 1);
                        }
                        return;
                    }
                    Ok(Ok(response)) => last = format!("{target} answered {}", response.status()),
                    Ok(Err(err)) => last = format!("{target}: {err}"),
                    Err(_) => last = format!("{target}: no answer within {PROBE_TIMEOUT:?}"),
                }
            }
            tracing::debug!(service = %self.id, replica = %self.key, probe = %last, "replica not ready yet");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
}
