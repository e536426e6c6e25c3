//! What Portico keeps of a container, and the pure rules that turn labelled containers into
//! services: id and aliases, type, port, availability and the address candidates.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};

use crate::config::{AddressKind, validate_id};
use crate::registry::{Access, Availability, Service, Source};

/// The label that opts a container in.
pub const ENABLE: &str = "portico.enable";
const TYPE: &str = "portico.type";
const PORT: &str = "portico.port";
const NETWORK: &str = "portico.network";
const ID: &str = "portico.id";
const AUTH: &str = "portico.auth";
const ALLOW_USERS: &str = "portico.allow_users";
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

/// What one plugin says about detecting its framework.
#[derive(Debug, Clone)]
pub struct TypeHint {
    pub service_type: String,
    pub default_port: Option<u16>,
    /// Substrings of an image name or command line (`"streamlit"`, `"flask run"`).
    pub detect: Vec<String>,
}

/// Everything besides the containers that the rules need.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    pub hints: &'a [TypeHint],
    pub address_order: &'a [AddressKind],
    /// Hosts for published ports, `docker-host` already resolved.
    pub published_hosts: &'a [String],
    /// The networks of the container Portico runs in; empty outside a container.
    pub own_networks: &'a [String],
}

/// The services the containers make, sorted by id. A `portico.id` that several containers
/// carry becomes an (ambiguous) alias of each, and each is known by its name instead.
pub fn services(containers: &[Container], rules: &Rules<'_>) -> Vec<Service> {
    let mut friendly: HashMap<&str, usize> = HashMap::new();
    for container in containers {
        if let Some(id) = friendly_id(container) {
            *friendly.entry(id).or_default() += 1;
        }
    }
    let mut services: Vec<Service> = containers
        .iter()
        .map(|container| {
            let unique_friendly =
                friendly_id(container).filter(|id| friendly.get(id).copied() == Some(1));
            service(container, unique_friendly, rules)
        })
        .collect();
    services.sort_by(|a, b| a.id.cmp(&b.id));
    services
}

fn friendly_id(container: &Container) -> Option<&str> {
    let id = container.labels.get(ID)?;
    match validate_id(id) {
        Ok(()) => Some(id.as_str()),
        Err(why) => {
            tracing::debug!(container = %container.name, %why, "portico.id ignored");
            None
        }
    }
}

fn service(container: &Container, id: Option<&str>, rules: &Rules<'_>) -> Service {
    let id = id.map_or_else(|| container.name.clone(), str::to_owned);
    let mut aliases: Vec<String> = [
        Some(container.id.as_str()),
        Some(container.short_id()),
        Some(container.name.as_str()),
        container.labels.get(ID).map(String::as_str),
        container.labels.get(COMPOSE_SERVICE).map(String::as_str),
    ]
    .into_iter()
    .flatten()
    .filter(|alias| *alias != id && validate_id(alias).is_ok())
    .map(str::to_owned)
    .collect();
    aliases.sort();
    aliases.dedup();
    let service_type = service_type(container, rules.hints);
    let port = port(container, &service_type, rules.hints);
    let (upstreams, unreachable) = match port {
        Ok(port) => match candidates(container, port, rules) {
            Ok(upstreams) => (upstreams, None),
            Err(why) => (Vec::new(), Some(why)),
        },
        Err(why) => (Vec::new(), Some(why)),
    };
    let availability = if !container.running {
        Availability::Unavailable(format!(
            "container {} is not running: {}",
            container.name, container.state
        ))
    } else if let Some(why) = unreachable {
        Availability::Unavailable(format!("container {}: {why}", container.name))
    } else if container.health.as_deref() == Some("starting") {
        Availability::Starting
    } else {
        Availability::Ready
    };
    let mut labels: BTreeMap<String, String> = container
        .labels
        .iter()
        .filter(|(key, _)| key.starts_with("portico."))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    labels.insert("docker.container".to_owned(), container.name.clone());
    Service {
        access: access(container),
        id,
        service_type,
        upstreams,
        fail_closed: false,
        labels,
        source: Source::Docker,
        health: Arc::default(),
        aliases,
        availability,
        preferred: Arc::default(),
    }
}

/// `portico.auth` and `portico.allow_users` (comma-separated). Whatever is unclear closes:
/// an unknown `portico.auth` value keeps authentication, an empty user list lets nobody in, and
/// a user list wins over `portico.auth=none`.
fn access(container: &Container) -> Access {
    let opted_out = match container.labels.get(AUTH).map(|value| value.trim()) {
        None | Some("forward") => false,
        Some("none") => true,
        Some(other) => {
            tracing::warn!(container = %container.name, value = %other, "portico.auth must be \"none\" or \"forward\"; the container keeps authentication");
            false
        }
    };
    let Some(list) = container.labels.get(ALLOW_USERS) else {
        return if opted_out {
            Access::Open
        } else {
            Access::SignedIn
        };
    };
    let users: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|user| !user.is_empty())
        .map(str::to_owned)
        .collect();
    if users.is_empty() {
        tracing::warn!(container = %container.name, "portico.allow_users is empty: nobody may open the container");
    }
    if opted_out {
        tracing::warn!(container = %container.name, "portico.allow_users with portico.auth=none: the user list applies");
    }
    Access::Users(users.into())
}

/// `portico.type`, else the plugin whose hint is the longest match in the image or command
/// (the most specific one: `flask run` before `flask`), else `generic`.
fn service_type(container: &Container, hints: &[TypeHint]) -> String {
    if let Some(declared) = container.labels.get(TYPE).filter(|t| !t.is_empty()) {
        return declared.clone();
    }
    let haystack = format!("{} {}", container.image, container.command).to_lowercase();
    hints
        .iter()
        .flat_map(|hint| hint.detect.iter().map(move |needle| (needle, hint)))
        .filter(|(needle, _)| !needle.is_empty() && haystack.contains(&needle.to_lowercase()))
        .max_by_key(|(needle, _)| needle.len())
        .map_or_else(
            || "generic".to_owned(),
            |(_, hint)| hint.service_type.clone(),
        )
}

/// `portico.port`, else the plugin's default port, else the lowest exposed port.
fn port(container: &Container, service_type: &str, hints: &[TypeHint]) -> Result<u16, String> {
    if let Some(text) = container.labels.get(PORT) {
        return text
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(|| format!("the portico.port label {text:?} is not a port"));
    }
    let default = hints
        .iter()
        .find(|hint| hint.service_type == service_type)
        .and_then(|hint| hint.default_port);
    default
        .or_else(|| container.exposed.first().copied())
        .ok_or_else(|| "no port: set the portico.port label or expose the app's port".to_owned())
}

/// The base URLs to try, in the configured order.
fn candidates(
    container: &Container,
    port: u16,
    rules: &Rules<'_>,
) -> Result<Vec<url::Url>, String> {
    let mut urls: Vec<String> = Vec::new();
    for kind in rules.address_order {
        match kind {
            AddressKind::Network => {
                if let Some(attachment) = chosen_network(container, rules.own_networks)? {
                    urls.push(format!("http://{}:{port}", host_in_url(&attachment.ip)));
                }
            }
            AddressKind::ComposeService => {
                if let Some(service) = container.labels.get(COMPOSE_SERVICE)
                    && validate_id(service).is_ok()
                {
                    urls.push(format!("http://{service}:{port}"));
                }
            }
            AddressKind::Published => {
                for (_, host_ip, host_port) in
                    container.published.iter().filter(|(p, _, _)| *p == port)
                {
                    if matches!(host_ip.as_str(), "" | "0.0.0.0" | "::") {
                        for host in rules.published_hosts {
                            urls.push(format!("http://{}:{host_port}", host_in_url(host)));
                        }
                    } else {
                        urls.push(format!("http://{}:{host_port}", host_in_url(host_ip)));
                    }
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    let upstreams: Vec<url::Url> = urls
        .into_iter()
        .filter(|url| seen.insert(url.clone()))
        .filter_map(|url| url::Url::parse(&url).ok())
        .collect();
    if upstreams.is_empty() {
        return Err(format!(
            "no address to reach port {port}: no network IP, compose service or published port"
        ));
    }
    Ok(upstreams)
}

/// The network whose IP is used: `portico.network` (a compose project's prefix may be left
/// out), else one Portico's own container shares, else the first with an IP.
fn chosen_network<'c>(
    container: &'c Container,
    own_networks: &[String],
) -> Result<Option<&'c Attachment>, String> {
    let with_ip = |a: &&Attachment| !a.ip.is_empty();
    if let Some(wanted) = container.labels.get(NETWORK) {
        let suffix = format!("_{wanted}");
        let found = container
            .networks
            .iter()
            .find(|a| a.network == *wanted)
            .or_else(|| {
                container
                    .networks
                    .iter()
                    .find(|a| a.network.ends_with(&suffix))
            });
        return match found {
            Some(attachment) => Ok(Some(attachment).filter(with_ip)),
            None => Err(format!(
                "the portico.network label names {wanted:?}, a network the container is not attached to"
            )),
        };
    }
    let shared = container
        .networks
        .iter()
        .filter(with_ip)
        .find(|a| own_networks.contains(&a.network));
    if shared.is_some() || !own_networks.is_empty() {
        // Inside a container, only a shared network's IP is reachable.
        return Ok(shared);
    }
    Ok(container.networks.iter().find(with_ip))
}

/// An IPv6 literal needs brackets in a URL.
fn host_in_url(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints() -> Vec<TypeHint> {
        let hint = |t: &str, port: Option<u16>, detect: &[&str]| TypeHint {
            service_type: t.to_owned(),
            default_port: port,
            detect: detect.iter().map(|d| (*d).to_owned()).collect(),
        };
        vec![
            hint("streamlit", Some(8501), &["streamlit"]),
            hint("fastapi", Some(8000), &["uvicorn", "fastapi"]),
            hint("flask", Some(5000), &["flask run", "flask", "gunicorn"]),
            hint("generic", None, &[]),
        ]
    }

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
            published: vec![(8080, "0.0.0.0".to_owned(), 32768)],
        }
    }

    const ORDER: [AddressKind; 3] = [
        AddressKind::Network,
        AddressKind::ComposeService,
        AddressKind::Published,
    ];

    fn build(containers: &[Container], own: &[String]) -> Vec<Service> {
        let hints = hints();
        let hosts = vec!["127.0.0.1".to_owned()];
        services(
            containers,
            &Rules {
                hints: &hints,
                address_order: &ORDER,
                published_hosts: &hosts,
                own_networks: own,
            },
        )
    }

    fn urls(service: &Service) -> Vec<&str> {
        service.upstreams.iter().map(url::Url::as_str).collect()
    }

    #[test]
    fn ids_aliases_and_candidates() {
        let c = container("shop", &[(COMPOSE_SERVICE, "web"), (ID, "store")]);
        let services = build(std::slice::from_ref(&c), &[]);
        let s = &services[0];
        assert_eq!(s.id, "store");
        let mut expected = vec![
            c.id.clone(),
            c.id[..12].to_owned(),
            "shop".to_owned(),
            "web".to_owned(),
        ];
        expected.sort();
        assert_eq!(s.aliases, expected);
        assert_eq!(s.service_type, "generic");
        assert_eq!(
            urls(s),
            vec![
                "http://172.17.0.2:8080/",
                "http://web:8080/",
                "http://127.0.0.1:32768/"
            ],
            "lowest exposed port; first network; compose name; published port"
        );
        assert_eq!(s.availability, Availability::Ready);
        assert_eq!(
            s.labels.get("portico.id").map(String::as_str),
            Some("store")
        );
    }

    #[test]
    fn shared_friendly_ids_become_ambiguous_aliases() {
        let a = container("a1", &[(ID, "same")]);
        let b = container("b1", &[(ID, "same")]);
        let services = build(&[a, b], &[]);
        assert_eq!(
            services.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            vec!["a1", "b1"]
        );
        assert!(
            services
                .iter()
                .all(|s| s.aliases.contains(&"same".to_owned()))
        );
    }

    #[test]
    fn type_from_label_or_hints() {
        let mut c = container("st", &[]);
        c.command = "streamlit run app.py --server.port 8501".to_owned();
        let s = &build(&[c.clone()], &[])[0];
        assert_eq!(s.service_type, "streamlit");
        assert_eq!(
            s.upstreams[0].port(),
            Some(8501),
            "the plugin's default port"
        );
        c.command = "flask run --host 0.0.0.0".to_owned();
        c.image = "python:3.12".to_owned();
        assert_eq!(build(&[c.clone()], &[])[0].service_type, "flask");
        c.labels.insert(TYPE.to_owned(), "fastapi".to_owned());
        c.labels.insert(PORT.to_owned(), "9090".to_owned());
        let s = &build(&[c], &[])[0];
        assert_eq!(s.service_type, "fastapi");
        assert_eq!(
            s.upstreams[0].port(),
            Some(9090),
            "the label beats the default"
        );
    }

    #[test]
    fn network_label_and_own_networks() {
        let c = container("n", &[(NETWORK, "back")]);
        assert_eq!(
            urls(&build(&[c], &[])[0])[0],
            "http://172.20.0.3:8080/",
            "compose prefix may be left out"
        );
        let c = container("n", &[]);
        assert_eq!(
            urls(&build(std::slice::from_ref(&c), &["proj_back".to_owned()])[0])[0],
            "http://172.20.0.3:8080/",
            "the network Portico shares"
        );
        let none_shared = build(&[c], &["elsewhere".to_owned()]);
        assert_eq!(
            urls(&none_shared[0])[0],
            "http://127.0.0.1:32768/",
            "no unreachable IP"
        );
        let wrong = container("w", &[(NETWORK, "nowhere")]);
        assert!(
            matches!(&build(&[wrong], &[])[0].availability, Availability::Unavailable(why) if why.contains("nowhere"))
        );
    }

    #[test]
    fn availability_follows_state_and_health() {
        let mut c = container("h", &[]);
        c.health = Some("starting".to_owned());
        assert_eq!(
            build(&[c.clone()], &[])[0].availability,
            Availability::Starting
        );
        c.health = Some("healthy".to_owned());
        assert_eq!(
            build(&[c.clone()], &[])[0].availability,
            Availability::Ready
        );
        c.running = false;
        c.state = "exited (code 0)".to_owned();
        assert!(
            matches!(&build(&[c.clone()], &[])[0].availability, Availability::Unavailable(why) if why.contains("exited"))
        );
        let mut bad = container("p", &[(PORT, "http")]);
        bad.exposed.clear();
        assert!(
            matches!(&build(&[bad], &[])[0].availability, Availability::Unavailable(why) if why.contains("portico.port"))
        );
    }

    #[test]
    fn access_from_labels_fails_closed() {
        let access =
            |labels: &[(&str, &str)]| build(&[container("a", labels)], &[])[0].access.clone();
        assert_eq!(access(&[]), Access::SignedIn);
        assert_eq!(access(&[(AUTH, "none")]), Access::Open);
        assert_eq!(access(&[(AUTH, "forward")]), Access::SignedIn);
        assert_eq!(access(&[(AUTH, "off")]), Access::SignedIn, "unknown: kept");
        let users = |list: &[&str]| Access::Users(list.iter().map(|u| (*u).to_owned()).collect());
        assert_eq!(
            access(&[(ALLOW_USERS, " alice, bob ,,")]),
            users(&["alice", "bob"])
        );
        assert_eq!(access(&[(ALLOW_USERS, " ")]), users(&[]), "empty: nobody");
        assert_eq!(
            access(&[(ALLOW_USERS, "alice"), (AUTH, "none")]),
            users(&["alice"]),
            "the list wins over the opt-out"
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
