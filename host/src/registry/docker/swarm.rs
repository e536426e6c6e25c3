//! Swarm services: on an engine that is a Swarm manager, each service labelled
//! `portico.enable=true` (service labels, under `deploy.labels` in a stack file) is one
//! workload, and each of its tasks that should be running is one unit.
//!
//! Docker sends no events for tasks, so their list is polled (`docker.swarm_poll_ms`), and
//! read again at once on service, node and local task-container events. The engine API's task
//! list carries each task's network addresses (`NetworksAttachments`), which bollard's model
//! leaves out: that one call is made here directly.

use std::collections::{BTreeMap, HashMap, HashSet};

use bollard::Docker;
use bollard::models::{EndpointPortConfigPublishModeEnum, NodeState};
use bollard::query_parameters::{InspectContainerOptions, ListNodesOptions, ListServicesOptions};
use serde_json::Value;

use crate::registry::Source;
use crate::registry::rules::ENABLE;
use crate::registry::workload::{Address, Readiness, Unit, Workload};

/// The label stack deploy puts on a stack's services; their names start with `{stack}_`.
const STACK: &str = "com.docker.stack.namespace";
/// The network of the routing mesh: its addresses are not the tasks' own.
const INGRESS: &str = "ingress";

/// What Portico knows of the swarm: the labelled services, their tasks, and the nodes.
#[derive(Debug, Default)]
pub struct SwarmView {
    /// This engine's node id.
    local_node: String,
    services: Vec<SwarmService>,
    tasks: Vec<SwarmTask>,
    /// Node id -> (ready, address).
    nodes: HashMap<String, (bool, String)>,
    /// A swarm-scoped bridge network gives its tasks no address in the task list: the IP is
    /// read from the local container once (container id -> network -> IP).
    local_ips: HashMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Clone)]
struct SwarmService {
    id: String,
    name: String,
    labels: BTreeMap<String, String>,
    image: String,
    command: String,
    /// The target ports it publishes, sorted.
    ports: Vec<u16>,
    /// True when its tasks run a health check (then `running` means healthy).
    checked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SwarmTask {
    id: String,
    service: String,
    node: String,
    state: String,
    desired: String,
    container: Option<String>,
    /// Network name -> IP (without the prefix length); empty for a network that lists none.
    networks: Vec<(String, String)>,
    /// (published, target) host-mode ports.
    ports: Vec<(u16, u16)>,
}

/// What went wrong asking the swarm.
pub type SwarmError = String;

/// True when the engine's answer says it is not (or no longer) a manager of a swarm, rather
/// than a passing failure.
pub fn not_a_manager(error: &str) -> bool {
    error.contains("not a swarm manager") || error.contains("not part of a swarm")
}

impl SwarmView {
    /// Starts a view when the engine is a manager of an active swarm, else says why not.
    pub async fn open(docker: &Docker) -> Result<Self, SwarmError> {
        let info = docker.info().await.map_err(|err| err.to_string())?;
        let swarm = info.swarm.unwrap_or_default();
        let active = swarm
            .local_node_state
            .is_some_and(|state| state.to_string() == "active");
        if !active {
            return Err("the engine is not in a swarm".to_owned());
        }
        if swarm.control_available != Some(true) {
            return Err("the engine is a swarm worker; only managers know services".to_owned());
        }
        Ok(Self {
            local_node: swarm.node_id.unwrap_or_default(),
            ..Self::default()
        })
    }

    /// Lists the labelled services (with `require` labels too) and the nodes anew.
    pub async fn refresh_services(
        &mut self,
        docker: &Docker,
        require: &BTreeMap<String, String>,
    ) -> Result<(), SwarmError> {
        let mut labels = vec![format!("{ENABLE}=true")];
        labels.extend(require.iter().map(|(key, value)| format!("{key}={value}")));
        let filters = HashMap::from([("label".to_owned(), labels)]);
        let listed = docker
            .list_services(Some(ListServicesOptions {
                filters: Some(filters),
                ..ListServicesOptions::default()
            }))
            .await
            .map_err(|err| err.to_string())?;
        self.services = listed.into_iter().filter_map(service_of).collect();
        self.services.sort_by(|a, b| a.name.cmp(&b.name));
        let nodes = docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(|err| err.to_string())?;
        self.nodes = nodes
            .into_iter()
            .filter_map(|node| {
                let status = node.status.unwrap_or_default();
                let ready = status.state == Some(NodeState::READY);
                Some((node.id?, (ready, status.addr.unwrap_or_default())))
            })
            .collect();
        Ok(())
    }

    /// Lists the tasks of the labelled services anew; true when they changed.
    pub async fn refresh_tasks(
        &mut self,
        docker: &Docker,
        endpoint: &str,
    ) -> Result<bool, SwarmError> {
        if self.services.is_empty() {
            let changed = !self.tasks.is_empty();
            self.tasks.clear();
            return Ok(changed);
        }
        let ids: Vec<&str> = self.services.iter().map(|s| s.id.as_str()).collect();
        let filters = serde_json::json!({ "service": ids });
        let query: String =
            url::form_urlencoded::byte_serialize(filters.to_string().as_bytes()).collect();
        let version = docker.client_version();
        let path = format!(
            "/v{}.{}/tasks?filters={query}",
            version.major_version, version.minor_version
        );
        let listed = api::get(endpoint, &path).await?;
        let mut tasks: Vec<SwarmTask> = listed
            .as_array()
            .map(|tasks| tasks.iter().filter_map(task_of).collect())
            .unwrap_or_default();
        tasks.sort_by(|a, b| a.id.cmp(&b.id));
        for task in &mut tasks {
            self.fill_local_ips(docker, task).await;
        }
        let changed = tasks != self.tasks;
        self.tasks = tasks;
        Ok(changed)
    }

    /// Fills the addresses a task's attachments leave empty from its container, when it runs
    /// on this engine.
    async fn fill_local_ips(&mut self, docker: &Docker, task: &mut SwarmTask) {
        if task.node != self.local_node || task.networks.iter().all(|(_, ip)| !ip.is_empty()) {
            return;
        }
        let Some(container) = task.container.clone() else {
            return;
        };
        if !self.local_ips.contains_key(&container) {
            let Ok(inspect) = docker
                .inspect_container(&container, None::<InspectContainerOptions>)
                .await
            else {
                return;
            };
            let ips: BTreeMap<String, String> = inspect
                .network_settings
                .and_then(|settings| settings.networks)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(name, endpoint)| {
                    Some((name, endpoint.ip_address.filter(|ip| !ip.is_empty())?))
                })
                .collect();
            if ips.is_empty() {
                return;
            }
            self.local_ips.insert(container.clone(), ips);
        }
        if let Some(ips) = self.local_ips.get(&container) {
            for (network, ip) in &mut task.networks {
                if ip.is_empty()
                    && let Some(found) = ips.get(network)
                {
                    ip.clone_from(found);
                }
            }
        }
    }

    /// Forgets container addresses of containers that no task names any more.
    pub fn prune(&mut self) {
        let live: HashSet<&str> = self
            .tasks
            .iter()
            .filter_map(|task| task.container.as_deref())
            .collect();
        self.local_ips
            .retain(|container, _| live.contains(container.as_str()));
    }

    /// One workload per labelled service. `published_hosts` are where this engine's
    /// host-mode ports are reached; another node's are reached at its address.
    pub fn workloads(&self, published_hosts: &[String]) -> Vec<Workload> {
        self.services
            .iter()
            .map(|service| {
                let units = self
                    .tasks
                    .iter()
                    .filter(|task| task.service == service.id)
                    .filter_map(|task| self.unit(service, task, published_hosts))
                    .collect();
                let mut aliases = Vec::new();
                if let Some(stack) = service.labels.get(STACK)
                    && let Some(short) = service.name.strip_prefix(&format!("{stack}_"))
                {
                    aliases.push(short.to_owned());
                }
                Workload {
                    source: Source::Swarm,
                    uid: service.id.clone(),
                    name: service.name.clone(),
                    aliases,
                    labels: service.labels.clone(),
                    facts: [("docker.swarm.service".to_owned(), service.name.clone())].into(),
                    image: service.image.clone(),
                    command: service.command.clone(),
                    ports: service.ports.clone(),
                    units,
                    unit_noun: "task",
                }
            })
            .collect()
    }

    /// A task as a unit, while it is meant to run: a task told to shut down leaves the
    /// rotation at once, while its container still serves what it was sent.
    fn unit(&self, service: &SwarmService, task: &SwarmTask, hosts: &[String]) -> Option<Unit> {
        if !matches!(task.desired.as_str(), "running" | "ready") {
            return None;
        }
        let node = self.nodes.get(&task.node);
        let readiness = match task.state.as_str() {
            _ if node.is_some_and(|(ready, _)| !ready) => {
                Readiness::Stopped("its node is down".to_owned())
            }
            "running" => Readiness::Ready,
            "new" | "allocated" | "pending" | "assigned" | "accepted" | "preparing" | "ready"
            | "starting" => Readiness::Starting,
            other => Readiness::Stopped(other.to_owned()),
        };
        let mut addresses: Vec<Address> = task
            .networks
            .iter()
            .filter(|(network, _)| network != INGRESS)
            .map(|(network, ip)| Address::Network {
                network: network.clone(),
                ip: ip.clone(),
            })
            .collect();
        let node_hosts: Vec<String> = if task.node == self.local_node {
            hosts.to_vec()
        } else {
            node.map(|(_, addr)| vec![addr.clone()]).unwrap_or_default()
        };
        for (published, target) in &task.ports {
            addresses.extend(node_hosts.iter().map(|host| Address::Published {
                host: host.clone(),
                port: *published,
                target: *target,
            }));
        }
        Some(Unit {
            key: task.id.clone(),
            addresses,
            readiness,
            checked: service.checked,
        })
    }
}

fn service_of(service: bollard::models::Service) -> Option<SwarmService> {
    let spec = service.spec?;
    let container = spec
        .task_template
        .and_then(|template| template.container_spec)
        .unwrap_or_default();
    let image = container.image.unwrap_or_default();
    // A pinned image reads `name:tag@sha256:…`; the digest says nothing about the framework.
    let image = image.split('@').next().unwrap_or_default().to_owned();
    let command = container
        .command
        .unwrap_or_default()
        .into_iter()
        .chain(container.args.unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ");
    let checked = container
        .health_check
        .and_then(|check| check.test)
        .is_some_and(|test| test.first().is_some_and(|kind| kind != "NONE"));
    let mut ports: Vec<u16> = spec
        .endpoint_spec
        .and_then(|endpoint| endpoint.ports)
        .unwrap_or_default()
        .iter()
        .filter_map(|port| u16::try_from(port.target_port?).ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    Some(SwarmService {
        id: service.id?,
        name: spec.name?,
        labels: spec.labels.unwrap_or_default().into_iter().collect(),
        image,
        command,
        ports,
        checked,
    })
}

/// A task from the engine's JSON.
fn task_of(task: &Value) -> Option<SwarmTask> {
    let text = |value: &Value| value.as_str().map(str::to_owned);
    let status = task.get("Status")?;
    let networks = task
        .get("NetworksAttachments")
        .and_then(Value::as_array)
        .map(|attachments| {
            attachments
                .iter()
                .filter_map(|attachment| {
                    let name = text(attachment.pointer("/Network/Spec/Name")?)?;
                    let ip = attachment
                        .get("Addresses")
                        .and_then(Value::as_array)
                        .and_then(|list| list.first())
                        .and_then(Value::as_str)
                        .map(|cidr| cidr.split('/').next().unwrap_or_default().to_owned())
                        .unwrap_or_default();
                    Some((name, ip))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports: Vec<(u16, u16)> = status
        .pointer("/PortStatus/Ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter(|port| {
                    port.get("PublishMode").and_then(Value::as_str)
                        == Some(EndpointPortConfigPublishModeEnum::HOST.as_ref())
                        && port.get("Protocol").and_then(Value::as_str) != Some("udp")
                })
                .filter_map(|port| {
                    let published = u16::try_from(port.get("PublishedPort")?.as_u64()?).ok()?;
                    let target = u16::try_from(port.get("TargetPort")?.as_u64()?).ok()?;
                    Some((published, target))
                })
                .collect()
        })
        .unwrap_or_default();
    ports.sort_unstable();
    ports.dedup();
    Some(SwarmTask {
        id: text(task.get("ID")?)?,
        service: text(task.get("ServiceID")?)?,
        node: task.get("NodeID").and_then(text).unwrap_or_default(),
        state: status.get("State").and_then(text).unwrap_or_default(),
        desired: task.get("DesiredState").and_then(text).unwrap_or_default(),
        container: status
            .pointer("/ContainerStatus/ContainerID")
            .and_then(text)
            .filter(|id| !id.is_empty()),
        networks,
        ports,
    })
}

/// The one engine call made without bollard: `GET` of a JSON document.
mod api {
    use std::time::Duration;

    use serde_json::Value;

    use super::SwarmError;

    /// How long the call may take.
    const TIMEOUT: Duration = Duration::from_secs(10);
    /// The largest answer read (a task list of thousands of tasks fits).
    const MAX_BYTES: usize = 64 * 1024 * 1024;

    /// `GET path` at a `unix://`, `tcp://` or `http://` endpoint.
    pub async fn get(endpoint: &str, path: &str) -> Result<Value, SwarmError> {
        let call = async {
            if let Some(socket) = endpoint.strip_prefix("unix://") {
                let stream = tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(|err| format!("connecting to {endpoint}: {err}"))?;
                send(stream, "docker", path).await
            } else {
                let authority = endpoint
                    .strip_prefix("tcp://")
                    .or_else(|| endpoint.strip_prefix("http://"))
                    .ok_or_else(|| {
                        format!(
                            "Swarm discovery needs a unix:// or tcp:// endpoint, not {endpoint}"
                        )
                    })?
                    .trim_end_matches('/');
                let stream = tokio::net::TcpStream::connect(authority)
                    .await
                    .map_err(|err| format!("connecting to {endpoint}: {err}"))?;
                send(stream, authority, path).await
            }
        };
        tokio::time::timeout(TIMEOUT, call)
            .await
            .map_err(|_| format!("{endpoint} did not answer GET {path} within {TIMEOUT:?}"))?
    }

    async fn send<S>(stream: S, host: &str, path: &str) -> Result<Value, SwarmError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|err| err.to_string())?;
        tokio::spawn(connection);
        let request = axum::http::Request::get(path)
            .header(axum::http::header::HOST, host)
            .body(axum::body::Body::empty())
            .map_err(|err| err.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| err.to_string())?;
        let status = response.status();
        let body = axum::body::to_bytes(axum::body::Body::new(response.into_body()), MAX_BYTES)
            .await
            .map_err(|err| err.to_string())?;
        if !status.is_success() {
            return Err(format!(
                "GET {path} answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        serde_json::from_slice(&body).map_err(|err| format!("GET {path}: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(json: Value) -> SwarmTask {
        task_of(&json).expect("a task")
    }

    #[test]
    fn only_a_lost_manager_role_drops_the_services() {
        assert!(not_a_manager(
            "GET /v1.41/tasks answered 503 Service Unavailable: {\"message\":\"This node is not a swarm manager. Use \\\"docker swarm init\\\" ...\"}"
        ));
        assert!(not_a_manager("This node is not part of a swarm"));
        assert!(!not_a_manager(
            "unix:///var/run/docker.sock did not answer GET /tasks within 10s"
        ));
        assert!(!not_a_manager(
            "rpc error: code = Unknown desc = The swarm does not have a leader"
        ));
    }

    #[test]
    fn tasks_read_from_the_engine_json() {
        let t = task(serde_json::json!({
            "ID": "t1", "ServiceID": "s1", "NodeID": "n1", "DesiredState": "running",
            "Status": {
                "State": "running",
                "ContainerStatus": {"ContainerID": "c1"},
                "PortStatus": {"Ports": [
                    {"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": 32768, "PublishMode": "host"},
                    {"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": 32768, "PublishMode": "host"}
                ]}
            },
            "NetworksAttachments": [
                {"Network": {"Spec": {"Name": "ingress"}}, "Addresses": ["10.0.0.5/24"]},
                {"Network": {"Spec": {"Name": "stack_apps"}}, "Addresses": ["10.0.1.3/24"]},
                {"Network": {"Spec": {"Name": "local-bridge"}}}
            ]
        }));
        assert_eq!(t.container.as_deref(), Some("c1"));
        assert_eq!(t.ports, vec![(32768, 8080)], "one entry per address family");
        assert_eq!(
            t.networks,
            vec![
                ("ingress".to_owned(), "10.0.0.5".to_owned()),
                ("stack_apps".to_owned(), "10.0.1.3".to_owned()),
                ("local-bridge".to_owned(), String::new()),
            ]
        );
    }

    fn view() -> SwarmView {
        let service = SwarmService {
            id: "s1".to_owned(),
            name: "stack_web".to_owned(),
            labels: [
                (ENABLE.to_owned(), "true".to_owned()),
                (STACK.to_owned(), "stack".to_owned()),
            ]
            .into(),
            image: "app:local".to_owned(),
            command: String::new(),
            ports: Vec::new(),
            checked: true,
        };
        let task = |id: &str, node: &str, state: &str, desired: &str| SwarmTask {
            id: id.to_owned(),
            service: "s1".to_owned(),
            node: node.to_owned(),
            state: state.to_owned(),
            desired: desired.to_owned(),
            container: None,
            networks: vec![
                ("ingress".to_owned(), "10.0.0.9".to_owned()),
                ("stack_apps".to_owned(), format!("10.0.1.{}", id.len())),
            ],
            ports: vec![(30000, 8080)],
        };
        SwarmView {
            local_node: "n1".to_owned(),
            services: vec![service],
            tasks: vec![
                task("a", "n1", "running", "running"),
                task("bb", "n2", "running", "running"),
                task("ccc", "n1", "running", "shutdown"),
                task("dddd", "n1", "starting", "running"),
                task("eeeee", "n3", "running", "running"),
            ],
            nodes: [
                ("n1".to_owned(), (true, "192.0.2.1".to_owned())),
                ("n2".to_owned(), (true, "192.0.2.2".to_owned())),
                ("n3".to_owned(), (false, "192.0.2.3".to_owned())),
            ]
            .into(),
            local_ips: HashMap::new(),
        }
    }

    #[test]
    fn a_service_is_a_workload_and_its_tasks_units() {
        let workloads = view().workloads(&["127.0.0.1".to_owned()]);
        let [w] = workloads.as_slice() else {
            panic!("one workload: {workloads:?}")
        };
        assert_eq!(w.source, Source::Swarm);
        assert_eq!(
            w.aliases,
            vec!["web".to_owned()],
            "the stack prefix dropped"
        );
        let units: Vec<(&str, &Readiness)> = w
            .units
            .iter()
            .map(|u| (u.key.as_str(), &u.readiness))
            .collect();
        assert_eq!(
            units,
            vec![
                ("a", &Readiness::Ready),
                ("bb", &Readiness::Ready),
                ("dddd", &Readiness::Starting),
                ("eeeee", &Readiness::Stopped("its node is down".to_owned())),
            ],
            "a task told to shut down is gone at once"
        );
        let published = |unit: &Unit| -> Vec<String> {
            unit.addresses
                .iter()
                .filter_map(|a| match a {
                    Address::Published { host, port, .. } => Some(format!("{host}:{port}")),
                    Address::Network { network, .. } => {
                        assert_ne!(network, INGRESS, "the mesh's addresses are not the task's");
                        None
                    }
                    Address::Name(_) => None,
                })
                .collect()
        };
        assert_eq!(published(&w.units[0]), vec!["127.0.0.1:30000"]);
        assert_eq!(
            published(&w.units[1]),
            vec!["192.0.2.2:30000"],
            "another node's address"
        );
    }
}
