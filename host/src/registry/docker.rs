//! Docker discovery: containers labelled `portico.enable=true` become services, kept current
//! by following Docker's events, reconnecting with backoff when the engine goes away.

mod container;
mod swarm;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, ListContainersOptions};
use futures_util::StreamExt as _;

use crate::config::{DockerConfig, DockerMode};
use crate::registry::rules::{self, Rules, TypeHints};
use crate::registry::workload::Workload;
use crate::registry::{ServiceTable, Source};

pub use container::COMPOSE_SERVICE;
use container::Container;
pub use rules::ENABLE;
use swarm::SwarmView;

/// How long one Docker API call may take before the engine counts as unreachable.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// Docker's default socket (`DOCKER_HOST` unset).
const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";
/// The first pause before reconnecting.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// What went wrong talking to Docker.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach Docker at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: bollard::errors::Error,
    },
    #[error("Docker at {endpoint} failed: {source}")]
    Api {
        endpoint: String,
        source: bollard::errors::Error,
    },
    #[error("Docker's event stream at {endpoint} ended")]
    StreamEnded { endpoint: String },
}

/// Keeps discovery running while alive.
#[derive(Debug)]
pub struct Discovery {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts discovery into `table` unless `config` turns it off.
pub fn spawn(
    config: DockerConfig,
    table: Arc<ServiceTable>,
    plugins: Arc<dyn TypeHints>,
) -> Option<Discovery> {
    if config.enabled == DockerMode::Off {
        tracing::info!("Docker discovery is off");
        return None;
    }
    table.set_hold(config.starting_wait());
    let task = tokio::spawn(run(config, table, plugins));
    Some(Discovery { task })
}

/// Connects, synchronises and follows events, forever. An outage is logged once; Docker's
/// services stay as last seen until the engine is back and a full resync replaces them.
async fn run(config: DockerConfig, table: Arc<ServiceTable>, plugins: Arc<dyn TypeHints>) {
    let mut backoff = FIRST_BACKOFF;
    let mut ever_connected = false;
    let mut outage_reported = false;
    loop {
        match connect(&config.endpoints).await {
            Ok((docker, endpoint)) => {
                tracing::info!(%endpoint, "Docker discovery connected");
                ever_connected = true;
                outage_reported = false;
                backoff = FIRST_BACKOFF;
                let mut follower = Follower::new(&config, docker, endpoint, &table, &*plugins);
                let err = follower.follow().await;
                tracing::warn!(error = %err, "Docker discovery lost the engine; reconnecting with backoff");
            }
            Err(err) if !outage_reported => {
                outage_reported = true;
                if !ever_connected && config.enabled == DockerMode::Auto {
                    tracing::info!(error = %err, "Docker is not reachable; serving the configuration file's services only");
                } else {
                    tracing::warn!(error = %err, "Docker is not reachable; retrying in the background");
                }
            }
            Err(err) => tracing::debug!(error = %err, "Docker still not reachable"),
        }
        // Jitter spreads reconnections of several Porticos after a daemon restart.
        tokio::time::sleep(backoff.mul_f64(0.5 + fastrand::f64())).await;
        backoff = (backoff * 2).min(config.reconnect_max_backoff());
    }
}

/// The endpoints to try, in order.
fn endpoints(configured: &[String]) -> Vec<String> {
    if !configured.is_empty() {
        return configured.to_vec();
    }
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => vec![host],
        _ => vec![DEFAULT_SOCKET.to_owned()],
    }
}

/// The first endpoint that answers, with the API version agreed with it.
async fn connect(configured: &[String]) -> Result<(Docker, String), DockerError> {
    let mut last = None;
    for endpoint in endpoints(configured) {
        let attempt = async {
            let docker = Docker::connect_with_host(&endpoint)?.with_timeout(API_TIMEOUT);
            // Older engines refuse newer API versions: agree on the engine's when it is older.
            docker.negotiate_version().await
        };
        match attempt.await {
            Ok(docker) => return Ok((docker, endpoint)),
            Err(source) => {
                tracing::debug!(%endpoint, error = %source, "Docker endpoint did not answer");
                last = Some(DockerError::Connect { endpoint, source });
            }
        }
    }
    Err(last.unwrap_or_else(|| DockerError::StreamEnded {
        endpoint: "(none)".to_owned(),
    }))
}

/// The host of a `tcp://` or `http://` endpoint, where published ports are also reachable.
fn endpoint_host(endpoint: &str) -> Option<String> {
    let url = url::Url::parse(&endpoint.replacen("tcp://", "http://", 1)).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    url.host_str()
        .map(|h| h.trim_matches(['[', ']']).to_owned())
}

/// One connection's worth of discovery: the containers seen, and the table they feed.
struct Follower<'a> {
    config: &'a DockerConfig,
    docker: Docker,
    endpoint: String,
    table: &'a ServiceTable,
    plugins: &'a dyn TypeHints,
    containers: HashMap<String, Container>,
    /// Portico's own container (id, networks), when it runs in one.
    own: Option<(String, Vec<String>)>,
    /// The swarm's labelled services, when the engine is a manager and `docker.swarm` allows.
    swarm: Option<SwarmView>,
    /// Polls since the swarm view was opened or last found missing.
    polls: u32,
    /// The last read of the swarm failed (told once, until one succeeds).
    swarm_failing: bool,
}

/// Every how many polls the services and nodes are listed again even without an event, and a
/// missing swarm view is tried again.
const SWARM_REFRESH_POLLS: u32 = 20;

impl<'a> Follower<'a> {
    fn new(
        config: &'a DockerConfig,
        docker: Docker,
        endpoint: String,
        table: &'a ServiceTable,
        plugins: &'a dyn TypeHints,
    ) -> Self {
        Self {
            config,
            docker,
            endpoint,
            table,
            plugins,
            containers: HashMap::new(),
            own: None,
            swarm: None,
            polls: 0,
            swarm_failing: false,
        }
    }

    fn api(&self, source: bollard::errors::Error) -> DockerError {
        DockerError::Api {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    /// Subscribes to events first, then lists, so that nothing that happens during the list is
    /// missed; then applies events until the stream breaks, which is returned.
    async fn follow(&mut self) -> DockerError {
        let mut filters = HashMap::new();
        let mut types = vec!["container".to_owned(), "network".to_owned()];
        if self.config.swarm != DockerMode::Off {
            types.extend(["service".to_owned(), "node".to_owned()]);
        }
        filters.insert("type".to_owned(), types);
        let options = EventsOptions {
            filters: Some(filters),
            ..EventsOptions::default()
        };
        let mut stream = self.docker.events(Some(options));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // The stream only sends its request when polled: a task polls it from now on.
        let pump = tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                let failed = event.is_err();
                if tx.send(event).is_err() || failed {
                    return;
                }
            }
        });
        let _pump = AbortOnDrop(pump);
        if let Err(err) = self.resync().await {
            return err;
        }
        let mut poll = tokio::time::interval(self.config.swarm_poll());
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                event = rx.recv() => event,
                _ = poll.tick(), if self.config.swarm != DockerMode::Off => {
                    self.poll_swarm().await;
                    continue;
                }
            };
            let Some(event) = event else { break };
            let mut batch = vec![event];
            // Apply a burst (a compose up) as one table update.
            while let Ok(event) = rx.try_recv() {
                batch.push(event);
            }
            let mut refresh = Vec::new();
            let mut own_changed = false;
            let mut swarm_services = false;
            let mut swarm_tasks = false;
            for event in batch {
                match event {
                    Ok(event) => {
                        match swarm_change(&event) {
                            Some(SwarmChange::Services) => swarm_services = true,
                            Some(SwarmChange::Tasks) => swarm_tasks = true,
                            None => {}
                        }
                        if let Some(id) = affected(&event) {
                            own_changed |= self.own.as_ref().is_some_and(|(own, _)| *own == id);
                            refresh.push(id);
                        }
                    }
                    Err(source) => return self.api(source),
                }
            }
            if own_changed {
                self.own = self.own_container().await;
            }
            refresh.sort();
            refresh.dedup();
            for id in refresh {
                if let Err(err) = self.refresh(&id).await {
                    return err;
                }
            }
            if swarm_services || swarm_tasks {
                self.refresh_swarm(swarm_services).await;
            }
            self.publish();
        }
        DockerError::StreamEnded {
            endpoint: self.endpoint.clone(),
        }
    }

    /// Lists every labelled container anew and replaces Docker's services.
    async fn resync(&mut self) -> Result<(), DockerError> {
        self.own = self.own_container().await;
        let mut label_filters = vec![format!("{ENABLE}=true")];
        label_filters.extend(
            self.config
                .require_labels
                .iter()
                .map(|(key, value)| format!("{key}={value}")),
        );
        let mut filters = HashMap::new();
        filters.insert("label".to_owned(), label_filters);
        let listed = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..ListContainersOptions::default()
            }))
            .await
            .map_err(|err| self.api(err))?;
        self.containers.clear();
        for summary in listed {
            if let Some(id) = summary.id {
                self.refresh(&id).await?;
            }
        }
        self.open_swarm().await;
        self.publish();
        Ok(())
    }

    /// Opens the swarm view when the engine is a manager and `docker.swarm` allows, with its
    /// services and tasks listed.
    async fn open_swarm(&mut self) {
        self.polls = 0;
        self.swarm = None;
        if self.config.swarm == DockerMode::Off {
            return;
        }
        match SwarmView::open(&self.docker).await {
            Ok(view) => {
                self.swarm = Some(view);
                self.refresh_swarm(true).await;
                if self.swarm.is_some() {
                    tracing::info!(endpoint = %self.endpoint, "following Swarm services");
                }
            }
            Err(why) if self.config.swarm == DockerMode::On => {
                tracing::warn!(endpoint = %self.endpoint, %why, "docker.swarm is on but Swarm services cannot be followed");
            }
            Err(why) => tracing::debug!(%why, "not following Swarm services"),
        }
    }

    /// Lists the swarm's tasks again (and its services and nodes when `services`); a swarm
    /// that stopped answering (the engine left it) is dropped with its services. True when
    /// something changed.
    async fn refresh_swarm(&mut self, services: bool) -> bool {
        let Some(view) = self.swarm.as_mut() else {
            return false;
        };
        let result = async {
            if services {
                view.refresh_services(&self.docker, &self.config.require_labels)
                    .await?;
            }
            view.refresh_tasks(&self.docker, &self.endpoint).await
        }
        .await;
        match result {
            Ok(changed) => {
                if std::mem::take(&mut self.swarm_failing) {
                    tracing::info!(endpoint = %self.endpoint, "Swarm services can be read again");
                }
                view.prune();
                changed || services
            }
            // The engine left the swarm or was demoted: its services are gone from here.
            Err(why) if swarm::not_a_manager(&why) => {
                tracing::warn!(endpoint = %self.endpoint, %why, "the engine is no longer a swarm manager; its services are dropped");
                self.swarm = None;
                true
            }
            // A passing failure (a leader election, a slow manager): the services stay as last
            // seen and the next poll tries again.
            Err(why) => {
                if !std::mem::replace(&mut self.swarm_failing, true) {
                    tracing::warn!(endpoint = %self.endpoint, %why, "Swarm services cannot be read; serving them as last seen");
                }
                false
            }
        }
    }

    /// One poll: the task list, the services now and then, and a missing swarm view tried
    /// again now and then.
    async fn poll_swarm(&mut self) {
        self.polls += 1;
        let due = self.polls.is_multiple_of(SWARM_REFRESH_POLLS);
        let changed = if self.swarm.is_some() {
            self.refresh_swarm(due).await
        } else if due {
            self.open_swarm().await;
            self.swarm.is_some()
        } else {
            false
        };
        if changed {
            self.publish();
        }
    }

    /// Inspects one container and keeps, updates or forgets it.
    async fn refresh(&mut self, id: &str) -> Result<(), DockerError> {
        match self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspect) => {
                match Container::from_inspect(inspect)
                    .filter(|c| c.selected(&self.config.require_labels))
                {
                    Some(container) => {
                        self.containers.insert(container.id.clone(), container);
                    }
                    None => {
                        self.containers.remove(id);
                    }
                }
                Ok(())
            }
            // Removed between the event and the inspection.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                self.containers.retain(|key, _| !key.starts_with(id));
                Ok(())
            }
            Err(err) => Err(self.api(err)),
        }
    }

    /// Portico's own container and its networks, when Portico runs in a container.
    async fn own_container(&self) -> Option<(String, Vec<String>)> {
        let name = match &self.config.self_container {
            Some(name) => name.clone(),
            None if std::path::Path::new("/.dockerenv").exists() => {
                std::fs::read_to_string("/etc/hostname")
                    .ok()?
                    .trim()
                    .to_owned()
            }
            None => return None,
        };
        let inspect = self
            .docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .inspect_err(|err| tracing::debug!(container = %name, error = %err, "Portico's own container not found"))
            .ok()?;
        let own = Container::from_inspect(inspect)?;
        let networks = own.networks.into_iter().map(|a| a.network).collect();
        Some((own.id, networks))
    }

    /// Turns the containers into services and hands them to the table.
    fn publish(&self) {
        let hints = self.plugins.type_hints();
        let docker_host = endpoint_host(&self.endpoint);
        let published_hosts: Vec<String> = self
            .config
            .published_hosts
            .iter()
            .filter_map(|host| match host.as_str() {
                "docker-host" => docker_host.clone(),
                other => Some(other.to_owned()),
            })
            .collect();
        let own_networks = self
            .own
            .as_ref()
            .map(|(_, n)| n.clone())
            .unwrap_or_default();
        let mut workloads: Vec<Workload> = self
            .containers
            .values()
            .map(|container| container.workload(&published_hosts))
            .collect();
        workloads.sort_by(|a, b| a.name.cmp(&b.name));
        let services = rules::services(
            &workloads,
            &Rules {
                hints: &hints,
                address_order: &self.config.address_order,
                own_networks: &own_networks,
            },
        );
        let summary: BTreeMap<&str, &str> = services
            .iter()
            .map(|s| (s.id.as_str(), s.availability.as_str()))
            .collect();
        tracing::debug!(?summary, "Docker services updated");
        self.table.replace_source(Source::Docker, services);
        let swarm = self
            .swarm
            .as_ref()
            .map(|view| view.workloads(&published_hosts))
            .unwrap_or_default();
        let services = rules::services(
            &swarm,
            &Rules {
                hints: &hints,
                address_order: &self.config.address_order,
                own_networks: &own_networks,
            },
        );
        self.table.replace_source(Source::Swarm, services);
    }
}

/// The container an event concerns, when the event can change what Portico serves. Health
/// checks run as execs: their events are frequent and change nothing, so they are ignored.
fn affected(event: &EventMessage) -> Option<String> {
    let action = event.action.as_deref().unwrap_or_default();
    let actor = event.actor.as_ref()?;
    match event.typ {
        Some(EventMessageTypeEnum::CONTAINER) => {
            let relevant = matches!(
                action,
                "create"
                    | "start"
                    | "restart"
                    | "die"
                    | "stop"
                    | "kill"
                    | "destroy"
                    | "rename"
                    | "pause"
                    | "unpause"
                    | "update"
                    | "oom"
            ) || action.starts_with("health_status");
            relevant.then(|| actor.id.clone()).flatten()
        }
        Some(EventMessageTypeEnum::NETWORK) if matches!(action, "connect" | "disconnect") => {
            actor.attributes.as_ref()?.get("container").cloned()
        }
        _ => None,
    }
}

/// What a Swarm-related event calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SwarmChange {
    /// A service or node changed: list them and the tasks again.
    Services,
    /// A task's container on this engine changed: list the tasks again.
    Tasks,
}

fn swarm_change(event: &EventMessage) -> Option<SwarmChange> {
    match event.typ {
        Some(EventMessageTypeEnum::SERVICE | EventMessageTypeEnum::NODE) => {
            Some(SwarmChange::Services)
        }
        Some(EventMessageTypeEnum::CONTAINER) => event
            .actor
            .as_ref()?
            .attributes
            .as_ref()?
            .contains_key("com.docker.swarm.task.id")
            .then_some(SwarmChange::Tasks),
        _ => None,
    }
}

/// Aborts a task when dropped, so a broken connection leaves nothing running.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn event(
        typ: EventMessageTypeEnum,
        action: &str,
        id: &str,
        container: Option<&str>,
    ) -> EventMessage {
        EventMessage {
            typ: Some(typ),
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some(id.to_owned()),
                attributes: container.map(|c| {
                    [("container".to_owned(), c.to_owned())]
                        .into_iter()
                        .collect()
                }),
            }),
            ..EventMessage::default()
        }
    }

    #[test]
    fn events_that_matter() {
        use EventMessageTypeEnum::{CONTAINER, IMAGE, NETWORK};
        assert_eq!(
            affected(&event(CONTAINER, "die", "c1", None)).as_deref(),
            Some("c1")
        );
        assert_eq!(
            affected(&event(CONTAINER, "health_status: healthy", "c1", None)).as_deref(),
            Some("c1")
        );
        assert_eq!(
            affected(&event(CONTAINER, "exec_start: /bin/true", "c1", None)),
            None
        );
        assert_eq!(
            affected(&event(NETWORK, "connect", "n1", Some("c2"))).as_deref(),
            Some("c2")
        );
        assert_eq!(affected(&event(NETWORK, "create", "n1", None)), None);
        assert_eq!(affected(&event(IMAGE, "pull", "i", None)), None);
    }

    #[test]
    fn endpoints_and_hosts() {
        assert_eq!(
            endpoints(&["tcp://a:2375".to_owned()]),
            vec!["tcp://a:2375".to_owned()]
        );
        assert_eq!(
            endpoint_host("tcp://10.1.2.3:2375").as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(endpoint_host("unix:///var/run/docker.sock"), None);
    }
}
