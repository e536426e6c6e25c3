//! Services declared in the configuration file, and the watch that reloads the file.

use crate::config::{Config, ServiceAuth, parse_upstream};
use std::path::{Path, PathBuf};

use super::{Access, Availability, Replica, ServiceSpec, rules};

/// The services of a (validated) configuration.
pub fn services(config: &Config) -> Vec<ServiceSpec> {
    config
        .services
        .iter()
        .map(|service| ServiceSpec {
            id: service.id.clone(),
            service_type: service.service_type.clone(),
            // Validation already parsed every URL; a failure here cannot happen, and is skipped.
            replicas: service
                .upstreams
                .iter()
                .filter_map(|u| parse_upstream(u).ok())
                .map(|url| Replica {
                    probe: service.health_path.is_some(),
                    ..Replica::at(url)
                })
                .collect(),
            balance: service.balance,
            sticky: service
                .sticky
                .unwrap_or_else(|| rules::sticky_by_default(&service.service_type)),
            health_path: service.health_path.clone(),
            keep_prefix: service.keep_prefix,
            fail_closed: service.fail_closed,
            labels: {
                let mut labels = service.labels.clone();
                if service.keep_prefix {
                    labels.insert(rules::KEEP_PREFIX.to_owned(), "true".to_owned());
                }
                labels
            },
            access: match (&service.auth, &service.allow_users) {
                (ServiceAuth::None, _) => Access::Open,
                (ServiceAuth::Forward, Some(users)) => Access::Users(users.as_slice().into()),
                (ServiceAuth::Forward, None) => Access::SignedIn,
            },
            aliases: Vec::new(),
            availability: Availability::Ready,
        })
        .collect()
}

/// Keeps the configuration file watched while alive.
#[derive(Debug)]
pub struct ConfigWatch {
    _watcher: notify::RecommendedWatcher,
    trigger: tokio::sync::mpsc::UnboundedSender<()>,
}

impl ConfigWatch {
    /// Reads the file again now, as if it had changed (SIGHUP).
    pub fn reload(&self) {
        let _ = self.trigger.send(());
    }
}

/// Watches `path` and calls `apply` with every valid new version of it. An invalid version is
/// refused with an error log line, `rejected` is called, and the running configuration stays.
///
/// The directory is watched rather than the file, because editors save by replacing it.
pub fn watch(
    path: PathBuf,
    apply: impl Fn(Config) + Send + Sync + 'static,
    rejected: impl Fn() + Send + Sync + 'static,
) -> Result<ConfigWatch, notify::Error> {
    use notify::Watcher as _;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(ToOwned::to_owned);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let trigger = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !crate::watch::is_change(&event.kind) {
            return;
        }
        if event.paths.iter().any(|p| p.file_name() == name.as_deref()) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    // Read now, not in the task: an edit made before the task first runs must count.
    let mut last: Option<String> = std::fs::read_to_string(&path).ok();
    tokio::spawn(async move {
        while crate::watch::next_change(&mut rx).await {
            reload(&path, &mut last, &apply, &rejected);
        }
    });
    Ok(ConfigWatch {
        _watcher: watcher,
        trigger,
    })
}

fn reload(path: &Path, last: &mut Option<String>, apply: &impl Fn(Config), rejected: &impl Fn()) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            tracing::error!(path = %path.display(), %err, "configuration edit refused: cannot read the file; the running configuration stays");
            rejected();
            return;
        }
    };
    if last.as_deref() == Some(text.as_str()) {
        return;
    }
    *last = Some(text.clone());
    match Config::parse(&text, Some(path)) {
        Ok(config) => {
            tracing::info!(path = %path.display(), services = config.services.len(), "configuration reloaded");
            apply(config);
        }
        Err(err) => {
            tracing::error!(error = %err, "configuration edit refused; the running configuration stays");
            rejected();
        }
    }
}
