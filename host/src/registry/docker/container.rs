//! What Portico keeps of a container, and how it reads as a neutral [`Workload`] for the
//! shared rules.

use std::collections::BTreeMap;

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};

use crate::registry::Source;
use crate::registry::rules::ENABLE;
use crate::registry::workload::{Address, Readiness, Unit, Workload};
/// The label Docker Compose puts on every container of a service.
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";

/// One network a container is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub network: String,
    /// Empty while the container is not running.
    pub ip: String,
}

/// A container as discovery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    pub image: String,
    /// Entrypoint and arguments, joined by spaces.
    pub command: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    /// For people: "exited (code 137)", "created", "paused".
    pub state: String,
    /// The health check's status (`starting`, `healthy`, `unhealthy`), when there is one.
    pub health: Option<String>,
    /// Sorted by network name.
    pub networks: Vec<Attachment>,
    /// Exposed TCP ports, sorted.
    pub exposed: Vec<u16>,
    /// Published TCP ports: (container port, host IP, host port).
    pub published: Vec<(u16, String, u16)>,
}

impl Container {
    /// Reads what discovery needs from an inspection; `None` without an id.
    pub fn from_inspect(inspect: ContainerInspectResponse) -> Option<Self> {
        let id = inspect.id.filter(|id| !id.is_empty())?;
        let name = inspect
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned();
        let config = inspect.config.unwrap_or_default();
        let labels: BTreeMap<String, String> =
            config.labels.unwrap_or_default().into_iter().collect();
        let image = config.image.unwrap_or_default();
        let mut command = inspect.path.unwrap_or_default();
        for arg in inspect.args.unwrap_or_default() {
            command.push(' ');
            command.push_str(&arg);
        }
        let state = inspect.state.unwrap_or_default();
        let running = state.running.unwrap_or(false)
            && !state.paused.unwrap_or(false)
            && !state.restarting.unwrap_or(false);
        let state_text = match state.status {
            Some(ContainerStateStatusEnum::EXITED) => {
                format!("exited (code {})", state.exit_code.unwrap_or_default())
            }
            Some(status) => status.to_string(),
            None => "unknown".to_owned(),
        };
        let health = state
            .health
            .and_then(|health| health.status)
            .filter(|status| !matches!(status, HealthStatusEnum::EMPTY | HealthStatusEnum::NONE))
            .map(|status| status.to_string());
        let mut exposed: Vec<u16> = config
            .exposed_ports
            .unwrap_or_default()
            .iter()
            .filter_map(|port| tcp_port(port))
            .collect();
        exposed.sort_unstable();
        exposed.dedup();
        let settings = inspect.network_settings.unwrap_or_default();
        let mut networks: Vec<Attachment> = settings
            .networks
            .unwrap_or_default()
            .into_iter()
            .map(|(network, endpoint)| Attachment {
                network,
                ip: endpoint.ip_address.unwrap_or_default(),
            })
            .collect();
        networks.sort_by(|a, b| a.network.cmp(&b.network));
        let mut published = Vec::new();
        for (port, bindings) in settings.ports.unwrap_or_default() {
            let Some(port) = tcp_port(&port) else {
                continue;
            };
            for binding in bindings.unwrap_or_default() {
                let host_port = binding
                    .host_port
                    .as_deref()
                    .and_then(|p| p.parse::<u16>().ok());
                if let Some(host_port) = host_port {
                    published.push((port, binding.host_ip.unwrap_or_default(), host_port));
                }
            }
        }
        published.sort();
        Some(Self {
            id,
            name,
            image,
            command,
            labels,
            running,
            state: state_text,
            health,
            networks,
            exposed,
            published,
        })
    }

    /// True when the labels opt it in and carry every required label.
    pub fn selected(&self, required: &BTreeMap<String, String>) -> bool {
        self.labels.get(ENABLE).map(String::as_str) == Some("true")
            && required
                .iter()
                .all(|(key, value)| self.labels.get(key) == Some(value))
    }

    fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

/// `"8080/tcp"` (or a bare `"8080"`) as a port; other protocols are not HTTP.
fn tcp_port(text: &str) -> Option<u16> {
    let (port, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
    (protocol == "tcp").then(|| port.parse().ok()).flatten()
}

impl Container {
    /// The container as a neutral workload. A published port bound to every interface is
    /// reachable at each of `published_hosts`.
    pub fn workload(&self, published_hosts: &[String]) -> Workload {
        let mut addresses: Vec<Address> = self
            .networks
            .iter()
            .map(|attachment| Address::Network {
                network: attachment.network.clone(),
                ip: attachment.ip.clone(),
            })
            .collect();
        addresses.extend(
            self.labels
                .get(COMPOSE_SERVICE)
                .map(|service| Address::Name(service.clone())),
        );
        for (target, host_ip, port) in &self.published {
            let hosts: &[String] = if matches!(host_ip.as_str(), "" | "0.0.0.0" | "::") {
                published_hosts
            } else {
                std::slice::from_ref(host_ip)
            };
            addresses.extend(hosts.iter().map(|host| Address::Published {
                host: host.clone(),
                port: *port,
                target: *target,
            }));
        }
        let readiness = if !self.running {
            Readiness::Stopped(self.state.clone())
        } else if self.health.as_deref() == Some("starting") {
            Readiness::Starting
        } else {
            Readiness::Ready
        };
        Workload {
            source: Source::Docker,
            uid: self.id.clone(),
            name: self.name.clone(),
            aliases: [
                Some(self.short_id()),
                self.labels.get(COMPOSE_SERVICE).map(String::as_str),
            ]
            .into_iter()
            .flatten()
            .map(str::to_owned)
            .collect(),
            labels: self.labels.clone(),
            facts: [("docker.container".to_owned(), self.name.clone())].into(),
            image: self.image.clone(),
            command: self.command.clone(),
            ports: self.exposed.clone(),
            units: vec![Unit {
                key: self.id.clone(),
                addresses,
                readiness,
                checked: self.health.is_some(),
            }],
            unit_noun: "container",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AddressKind;
    use crate::registry::rules::{self, ID, Rules};
    use crate::registry::{Availability, ServiceSpec};

    fn container(name: &str, labels: &[(&str, &str)]) -> Container {
        Container {
            id: format!("{name:0<64}"),
            name: name.to_owned(),
            image: "portico-test-busybox:latest".to_owned(),
            command: "/bin/busybox httpd -f -p 8080".to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .chain([(ENABLE.to_owned(), "true".to_owned())])
                .collect(),
            running: true,
            state: "running".to_owned(),
            health: None,
            networks: vec![
                Attachment {
                    network: "bridge".to_owned(),
                    ip: "172.17.0.2".to_owned(),
                },
                Attachment {
                    network: "proj_back".to_owned(),
                    ip: "172.20.0.3".to_owned(),
                },
            ],
            exposed: vec![8080, 9090],
            published: vec![
                (8080, "0.0.0.0".to_owned(), 32768),
                (9090, "10.0.0.1".to_owned(), 32769),
            ],
        }
    }

    fn build(container: &Container) -> ServiceSpec {
        let hosts = vec!["127.0.0.1".to_owned(), "h2".to_owned()];
        let mut services = rules::services(
            &[container.workload(&hosts)],
            &Rules {
                hints: &[],
                address_order: &[
                    AddressKind::Network,
                    AddressKind::ComposeService,
                    AddressKind::Published,
                ],
                own_networks: &[],
            },
        );
        services.remove(0)
    }

    #[test]
    fn a_container_reads_as_a_workload() {
        let c = container("shop", &[(COMPOSE_SERVICE, "web")]);
        let w = c.workload(&["127.0.0.1".to_owned(), "h2".to_owned()]);
        assert_eq!(w.source, Source::Docker);
        assert_eq!(w.uid, c.id);
        assert_eq!(w.aliases, vec![c.id[..12].to_owned(), "web".to_owned()]);
        assert_eq!(w.ports, vec![8080, 9090]);
        let published = |host: &str, port, target| Address::Published {
            host: host.to_owned(),
            port,
            target,
        };
        assert_eq!(
            w.units[0].addresses[2..],
            [
                Address::Name("web".to_owned()),
                published("127.0.0.1", 32768, 8080),
                published("h2", 32768, 8080),
                published("10.0.0.1", 32769, 9090),
            ],
            "a wildcard binding is reachable at every published host, a bound one at its IP"
        );
        assert_eq!(
            w.facts.get("docker.container").map(String::as_str),
            Some("shop")
        );
        assert_eq!(w.units[0].readiness, Readiness::Ready);
    }

    #[test]
    fn a_container_becomes_a_service() {
        let c = container("shop", &[(COMPOSE_SERVICE, "web"), (ID, "store")]);
        let s = build(&c);
        assert_eq!(s.id, "store");
        let mut expected = vec![
            c.id.clone(),
            c.id[..12].to_owned(),
            "shop".to_owned(),
            "web".to_owned(),
        ];
        expected.sort();
        assert_eq!(s.aliases, expected);
        assert_eq!(
            s.upstreams().map(url::Url::as_str).collect::<Vec<_>>(),
            vec![
                "http://172.17.0.2:8080/",
                "http://web:8080/",
                "http://127.0.0.1:32768/",
                "http://h2:32768/"
            ],
        );
        assert_eq!(
            s.labels.get("docker.container").map(String::as_str),
            Some("shop")
        );
    }

    #[test]
    fn state_and_health_give_readiness() {
        let mut c = container("h", &[]);
        c.health = Some("starting".to_owned());
        assert_eq!(build(&c).availability, Availability::Starting);
        c.health = Some("healthy".to_owned());
        assert_eq!(build(&c).availability, Availability::Ready);
        c.running = false;
        c.state = "exited (code 0)".to_owned();
        assert_eq!(
            build(&c).availability,
            Availability::Unavailable("container h is not running: exited (code 0)".to_owned())
        );
    }

    #[test]
    fn selection_needs_the_labels() {
        let mut c = container("s", &[("portico.instance", "a")]);
        let mut required = BTreeMap::new();
        assert!(c.selected(&required));
        required.insert("portico.instance".to_owned(), "a".to_owned());
        assert!(c.selected(&required));
        required.insert("portico.instance".to_owned(), "b".to_owned());
        assert!(!c.selected(&required));
        c.labels.insert(ENABLE.to_owned(), "false".to_owned());
        assert!(!c.selected(&BTreeMap::new()));
        assert_eq!(tcp_port("8080/tcp"), Some(8080));
        assert_eq!(tcp_port("53/udp"), None);
    }
}
