//! The shared rules that turn workloads, from any provider, into services: id and aliases,
//! type, port, the addresses to try in order, availability and access, from `portico.*`
//! labels and the plugins' detection hints.

use std::collections::{BTreeMap, HashMap};

use crate::config::{AddressKind, validate_id};
use crate::plugin::PluginRegistry;

use super::workload::{Address, Readiness, Unit, Workload};
use super::{Access, Availability, Balance, Replica, ServiceSpec};

/// The label that opts a workload in.
pub const ENABLE: &str = "portico.enable";
/// The service type (the plugin); detected from the image and command when absent.
pub const TYPE: &str = "portico.type";
/// The port the app listens on.
pub const PORT: &str = "portico.port";
/// The network whose IP is used.
pub const NETWORK: &str = "portico.network";
/// The id in `/proxy/{id}`, when it is unique.
pub const ID: &str = "portico.id";
/// `none` opts out of forward authentication.
pub const AUTH: &str = "portico.auth";
/// The users who may open it (comma-separated).
pub const ALLOW_USERS: &str = "portico.allow_users";
/// How requests are spread over its replicas.
pub const BALANCE: &str = "portico.balance";
/// `true` or `false`: pin each browser session to one replica.
pub const STICKY: &str = "portico.sticky";
/// The path probed before a replica takes traffic; empty turns probing off.
pub const HEALTH_PATH: &str = "portico.health_path";
/// `true`: the app serves under `/proxy/{id}/` itself, so the prefix is kept.
pub const KEEP_PREFIX: &str = "portico.keep_prefix";

/// The frameworks that keep a browser session's state in the process that served its page:
/// their services pin sessions to a replica unless told otherwise.
pub const STICKY_TYPES: &[&str] = &[
    "streamlit",
    "dash",
    "panel",
    "bokeh",
    "gradio",
    "solara",
    "jupyter",
    "voila",
];

/// Whether services of `service_type` pin sessions by default.
pub fn sticky_by_default(service_type: &str) -> bool {
    STICKY_TYPES.contains(&service_type)
}

/// What one plugin says about spotting its framework.
#[derive(Debug, Clone)]
pub struct TypeHint {
    pub service_type: String,
    pub default_port: Option<u16>,
    /// Substrings of an image name or command line (`"streamlit"`, `"flask run"`).
    pub detect: Vec<String>,
    /// The path that answers 2xx once the app is ready.
    pub health_path: Option<String>,
}

/// The narrow view of the plugins the rules need. Asked again at every update, since plugins
/// can be reloaded.
pub trait TypeHints: Send + Sync {
    fn type_hints(&self) -> Vec<TypeHint>;
}

impl TypeHints for PluginRegistry {
    fn type_hints(&self) -> Vec<TypeHint> {
        self.plugins()
            .iter()
            .flat_map(|plugin| {
                let info = plugin.info();
                info.service_types.iter().map(|service_type| TypeHint {
                    service_type: service_type.clone(),
                    default_port: info.default_port,
                    detect: info.detect.clone(),
                    health_path: info.health_path.clone(),
                })
            })
            .collect()
    }
}

/// Everything besides the workloads that the rules need.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    pub hints: &'a [TypeHint],
    /// The order in which kinds of address are tried.
    pub address_order: &'a [AddressKind],
    /// The networks Portico itself is attached to; empty when it is not in a container.
    pub own_networks: &'a [String],
}

/// The services the workloads make, sorted by id. A `portico.id` that several workloads
/// carry becomes an (ambiguous) alias of each, and each is known by its name instead.
pub fn services(workloads: &[Workload], rules: &Rules<'_>) -> Vec<ServiceSpec> {
    let mut friendly: HashMap<&str, usize> = HashMap::new();
    for workload in workloads {
        if let Some(id) = friendly_id(workload) {
            *friendly.entry(id).or_default() += 1;
        }
    }
    let mut services: Vec<ServiceSpec> = workloads
        .iter()
        .map(|workload| {
            let unique_friendly =
                friendly_id(workload).filter(|id| friendly.get(id).copied() == Some(1));
            service(workload, unique_friendly, rules)
        })
        .collect();
    services.sort_by(|a, b| a.id.cmp(&b.id));
    services
}

fn friendly_id(workload: &Workload) -> Option<&str> {
    let id = workload.labels.get(ID)?;
    match validate_id(id) {
        Ok(()) => Some(id.as_str()),
        Err(why) => {
            tracing::debug!(workload = %workload.name, %why, "portico.id ignored");
            None
        }
    }
}

fn service(workload: &Workload, id: Option<&str>, rules: &Rules<'_>) -> ServiceSpec {
    let noun = workload.source.workload_noun();
    let id = id.map_or_else(|| workload.name.clone(), str::to_owned);
    let mut aliases: Vec<String> = [workload.uid.as_str(), workload.name.as_str()]
        .into_iter()
        .chain(workload.aliases.iter().map(String::as_str))
        .chain(workload.labels.get(ID).map(String::as_str))
        .filter(|alias| *alias != id && validate_id(alias).is_ok())
        .map(str::to_owned)
        .collect();
    aliases.sort();
    aliases.dedup();
    let service_type = service_type(workload, rules.hints);
    let hint = rules
        .hints
        .iter()
        .find(|hint| hint.service_type == service_type);
    let health_path = match workload.labels.get(HEALTH_PATH).map(|path| path.trim()) {
        Some("") => None,
        Some(path) if path.starts_with('/') => Some(path.to_owned()),
        Some(path) => {
            tracing::warn!(workload = %workload.name, path, "portico.health_path must start with /; the plugin's is used");
            hint.and_then(|hint| hint.health_path.clone())
        }
        None => hint.and_then(|hint| hint.health_path.clone()),
    };
    let mut replicas = Vec::new();
    let mut starting = false;
    let mut unreachable = None;
    match port(workload, &service_type, rules.hints) {
        Err(why) => unreachable = Some(why),
        Ok(port) => {
            for unit in &workload.units {
                if matches!(unit.readiness, Readiness::Stopped(_)) {
                    continue;
                }
                match candidates(workload, unit, port, rules) {
                    Err(why) => {
                        unreachable.get_or_insert(why);
                    }
                    Ok(_) if unit.readiness == Readiness::Starting => starting = true,
                    Ok(urls) => replicas.push(Replica {
                        key: unit.key.clone(),
                        urls,
                        probe: !unit.checked,
                    }),
                }
            }
        }
    }
    let availability = if !replicas.is_empty() {
        Availability::Ready
    } else if starting {
        Availability::Starting
    } else if let Some(why) = unreachable {
        Availability::Unavailable(format!("{noun} {}: {why}", workload.name))
    } else if let [unit] = workload.units.as_slice()
        && let Readiness::Stopped(state) = &unit.readiness
    {
        Availability::Unavailable(format!("{noun} {} is not running: {state}", workload.name))
    } else {
        Availability::Unavailable(format!(
            "{noun} {} has no running {}",
            workload.name, workload.unit_noun
        ))
    };
    let balance = match workload.labels.get(BALANCE) {
        None => Balance::default(),
        Some(text) => Balance::parse(text).unwrap_or_else(|| {
            tracing::warn!(workload = %workload.name, value = %text, "portico.balance must be least-requests, round-robin or first; least-requests is used");
            Balance::default()
        }),
    };
    let sticky = match workload.labels.get(STICKY).map(|value| value.trim()) {
        Some("true") => true,
        Some("false") => false,
        other => {
            if let Some(value) = other {
                tracing::warn!(workload = %workload.name, value, "portico.sticky must be true or false; the type's default is used");
            }
            sticky_by_default(&service_type)
        }
    };
    let mut labels: BTreeMap<String, String> = workload
        .labels
        .iter()
        .filter(|(key, _)| key.starts_with("portico."))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    labels.extend(workload.facts.clone());
    ServiceSpec {
        access: access(workload),
        id,
        service_type,
        replicas,
        balance,
        sticky,
        health_path,
        keep_prefix: workload
            .labels
            .get(KEEP_PREFIX)
            .is_some_and(|value| value.trim() == "true"),
        fail_closed: false,
        labels,
        aliases,
        availability,
    }
}

/// `portico.auth` and `portico.allow_users` (comma-separated). Whatever is unclear closes:
/// an unknown `portico.auth` value keeps authentication, an empty user list lets nobody in, and
/// a user list wins over `portico.auth=none`.
fn access(workload: &Workload) -> Access {
    let opted_out = match workload.labels.get(AUTH).map(|value| value.trim()) {
        None | Some("forward") => false,
        Some("none") => true,
        Some(other) => {
            tracing::warn!(workload = %workload.name, value = %other, "portico.auth must be \"none\" or \"forward\"; the workload keeps authentication");
            false
        }
    };
    let Some(list) = workload.labels.get(ALLOW_USERS) else {
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
        tracing::warn!(workload = %workload.name, "portico.allow_users is empty: nobody may open the workload");
    }
    if opted_out {
        tracing::warn!(workload = %workload.name, "portico.allow_users with portico.auth=none: the user list applies");
    }
    Access::Users(users.into())
}

/// `portico.type`, else the plugin whose hint is the longest match in the image or command
/// (the most specific one: `flask run` before `flask`), else `generic`.
fn service_type(workload: &Workload, hints: &[TypeHint]) -> String {
    if let Some(declared) = workload.labels.get(TYPE).filter(|t| !t.is_empty()) {
        return declared.clone();
    }
    let haystack = format!("{} {}", workload.image, workload.command).to_lowercase();
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

/// `portico.port`, else the plugin's default port, else the lowest declared port.
fn port(workload: &Workload, service_type: &str, hints: &[TypeHint]) -> Result<u16, String> {
    if let Some(text) = workload.labels.get(PORT) {
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
        .or_else(|| workload.ports.first().copied())
        .ok_or_else(|| "no port: set the portico.port label or expose the app's port".to_owned())
}

/// The base URLs to try, in the configured order.
fn candidates(
    workload: &Workload,
    unit: &Unit,
    port: u16,
    rules: &Rules<'_>,
) -> Result<Vec<url::Url>, String> {
    let mut urls: Vec<String> = Vec::new();
    for kind in rules.address_order {
        match kind {
            AddressKind::Network => {
                if let Some(ip) = chosen_network(workload, unit, rules.own_networks)? {
                    urls.push(format!("http://{}:{port}", host_in_url(ip)));
                }
            }
            AddressKind::ComposeService => {
                for address in &unit.addresses {
                    if let Address::Name(name) = address
                        && validate_id(name).is_ok()
                    {
                        urls.push(format!("http://{name}:{port}"));
                    }
                }
            }
            AddressKind::Published => {
                for address in &unit.addresses {
                    if let Address::Published {
                        host,
                        port: host_port,
                        target,
                    } = address
                        && *target == port
                    {
                        urls.push(format!("http://{}:{host_port}", host_in_url(host)));
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

/// The IP to use: on the `portico.network` network (a compose project's prefix may be left
/// out), else on one Portico shares, else on the first network with an IP; `None` when that
/// network gives no IP.
fn chosen_network<'w>(
    workload: &Workload,
    unit: &'w Unit,
    own_networks: &[String],
) -> Result<Option<&'w str>, String> {
    let networks: Vec<(&str, &str)> = unit
        .addresses
        .iter()
        .filter_map(|address| match address {
            Address::Network { network, ip } => Some((network.as_str(), ip.as_str())),
            Address::Name(_) | Address::Published { .. } => None,
        })
        .collect();
    let with_ip = |ip: &&str| !ip.is_empty();
    if let Some(wanted) = workload.labels.get(NETWORK) {
        let suffix = format!("_{wanted}");
        let found = networks
            .iter()
            .find(|(network, _)| network == wanted)
            .or_else(|| {
                networks
                    .iter()
                    .find(|(network, _)| network.ends_with(&suffix))
            });
        return match found {
            Some((_, ip)) => Ok(Some(*ip).filter(with_ip)),
            None => Err(format!(
                "the portico.network label names {wanted:?}, a network the {} is not attached to",
                workload.source.workload_noun()
            )),
        };
    }
    let shared = networks
        .iter()
        .find(|(network, ip)| with_ip(ip) && own_networks.iter().any(|own| own == network))
        .map(|(_, ip)| *ip);
    if shared.is_some() || !own_networks.is_empty() {
        // Inside a container, only a shared network's IP is reachable.
        return Ok(shared);
    }
    Ok(networks.iter().map(|(_, ip)| *ip).find(with_ip))
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
    use crate::registry::Source;

    fn hints() -> Vec<TypeHint> {
        let hint = |t: &str, port: Option<u16>, detect: &[&str]| TypeHint {
            service_type: t.to_owned(),
            default_port: port,
            detect: detect.iter().map(|d| (*d).to_owned()).collect(),
            health_path: None,
        };
        vec![
            hint("streamlit", Some(8501), &["streamlit"]),
            hint("fastapi", Some(8000), &["uvicorn", "fastapi"]),
            hint("flask", Some(5000), &["flask run", "flask", "gunicorn"]),
            hint("generic", None, &[]),
        ]
    }

    fn network(network: &str, ip: &str) -> Address {
        Address::Network {
            network: network.to_owned(),
            ip: ip.to_owned(),
        }
    }

    fn workload(name: &str, labels: &[(&str, &str)]) -> Workload {
        Workload {
            source: Source::Docker,
            uid: format!("{name:0<64}"),
            name: name.to_owned(),
            aliases: Vec::new(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            facts: BTreeMap::new(),
            image: "portico-test-busybox:latest".to_owned(),
            command: "/bin/busybox httpd -f -p 8080".to_owned(),
            ports: vec![8080, 9090],
            units: vec![Unit {
                key: format!("{name:0<64}"),
                addresses: vec![
                    network("bridge", "172.17.0.2"),
                    network("proj_back", "172.20.0.3"),
                    Address::Name("web".to_owned()),
                    Address::Published {
                        host: "127.0.0.1".to_owned(),
                        port: 32768,
                        target: 8080,
                    },
                ],
                readiness: Readiness::Ready,
                checked: true,
            }],
            unit_noun: "container",
        }
    }

    const ORDER: [AddressKind; 3] = [
        AddressKind::Network,
        AddressKind::ComposeService,
        AddressKind::Published,
    ];

    fn build_with(workloads: &[Workload], own: &[String]) -> Vec<ServiceSpec> {
        services(
            workloads,
            &Rules {
                hints: &hints(),
                address_order: &ORDER,
                own_networks: own,
            },
        )
    }

    fn build(workload: &Workload) -> ServiceSpec {
        build_with(std::slice::from_ref(workload), &[]).remove(0)
    }

    fn urls(service: &ServiceSpec) -> Vec<&str> {
        service
            .replicas
            .iter()
            .flat_map(|r| r.urls.iter().map(url::Url::as_str))
            .collect()
    }

    #[test]
    fn id_from_label_and_every_other_name_an_alias() {
        let mut w = workload("shop", &[(ID, "store")]);
        w.aliases = vec![
            "shop0000".to_owned(),
            "web".to_owned(),
            "bad name".to_owned(),
        ];
        let s = build(&w);
        assert_eq!(s.id, "store");
        let mut expected = vec![
            w.uid.clone(),
            "shop".to_owned(),
            "shop0000".to_owned(),
            "web".to_owned(),
        ];
        expected.sort();
        assert_eq!(s.aliases, expected, "invalid names are no aliases");
        assert_eq!(build(&workload("shop", &[(ID, "no/slash")])).id, "shop");
    }

    #[test]
    fn shared_friendly_ids_become_ambiguous_aliases() {
        let a = workload("a1", &[(ID, "same")]);
        let b = workload("b1", &[(ID, "same")]);
        let services = build_with(&[a, b], &[]);
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
    fn type_from_label_else_the_longest_detection_match() {
        let mut w = workload("st", &[]);
        assert_eq!(build(&w).service_type, "generic");
        w.command = "streamlit run app.py".to_owned();
        assert_eq!(build(&w).service_type, "streamlit");
        w.command = "flask run --host 0.0.0.0".to_owned();
        w.image = "python:3.12".to_owned();
        assert_eq!(build(&w).service_type, "flask");
        w.image = "ghcr.io/acme/FastAPI-app".to_owned();
        w.command = String::new();
        assert_eq!(build(&w).service_type, "fastapi", "case does not matter");
        w.labels.insert(TYPE.to_owned(), "dash".to_owned());
        assert_eq!(build(&w).service_type, "dash", "the label beats detection");
    }

    #[test]
    fn port_from_label_else_plugin_default_else_lowest_declared() {
        let mut w = workload("p", &[]);
        assert_eq!(
            build(&w).replicas[0].urls[0].port(),
            Some(8080),
            "lowest declared"
        );
        w.command = "streamlit run app.py".to_owned();
        assert_eq!(
            build(&w).replicas[0].urls[0].port(),
            Some(8501),
            "plugin default"
        );
        w.labels.insert(PORT.to_owned(), "9090".to_owned());
        assert_eq!(build(&w).replicas[0].urls[0].port(), Some(9090), "label");
        w.labels.insert(PORT.to_owned(), "http".to_owned());
        assert!(
            matches!(&build(&w).availability, Availability::Unavailable(why) if why.contains("portico.port"))
        );
        let mut none = workload("n", &[]);
        none.ports.clear();
        assert!(
            matches!(&build(&none).availability, Availability::Unavailable(why) if why.contains("no port"))
        );
    }

    #[test]
    fn addresses_in_the_configured_order() {
        let w = workload("a", &[]);
        assert_eq!(
            urls(&build(&w)),
            vec![
                "http://172.17.0.2:8080/",
                "http://web:8080/",
                "http://127.0.0.1:32768/"
            ],
            "first network; name; published port for the chosen port"
        );
        let s = &services(
            std::slice::from_ref(&w),
            &Rules {
                hints: &[],
                address_order: &[AddressKind::Published, AddressKind::Network],
                own_networks: &[],
            },
        )[0];
        assert_eq!(
            urls(s),
            vec!["http://127.0.0.1:32768/", "http://172.17.0.2:8080/"]
        );
        let mut v6 = workload("v6", &[]);
        v6.units[0].addresses = vec![network("bridge", "fd00::2")];
        assert_eq!(urls(&build(&v6)), vec!["http://[fd00::2]:8080/"]);
    }

    #[test]
    fn network_from_label_else_shared_else_first() {
        let w = workload("n", &[(NETWORK, "back")]);
        assert_eq!(
            urls(&build(&w))[0],
            "http://172.20.0.3:8080/",
            "a compose prefix may be left out"
        );
        let w = workload("n", &[]);
        assert_eq!(
            urls(&build_with(std::slice::from_ref(&w), &["proj_back".to_owned()])[0])[0],
            "http://172.20.0.3:8080/",
            "the network Portico shares"
        );
        assert_eq!(
            urls(&build_with(std::slice::from_ref(&w), &["elsewhere".to_owned()])[0])[0],
            "http://web:8080/",
            "no unreachable IP"
        );
        let wrong = workload("w", &[(NETWORK, "nowhere")]);
        assert!(
            matches!(&build(&wrong).availability, Availability::Unavailable(why) if why.contains("nowhere"))
        );
    }

    #[test]
    fn availability_from_readiness_and_reachability() {
        let mut w = workload("h", &[]);
        w.units[0].readiness = Readiness::Starting;
        assert_eq!(build(&w).availability, Availability::Starting);
        w.units[0].addresses.clear();
        assert!(
            matches!(&build(&w).availability, Availability::Unavailable(why) if why.starts_with("container h: no address")),
            "unreachable beats starting"
        );
        w.units[0].readiness = Readiness::Stopped("exited (code 0)".to_owned());
        assert_eq!(
            build(&w).availability,
            Availability::Unavailable("container h is not running: exited (code 0)".to_owned()),
            "stopped beats unreachable"
        );
    }

    #[test]
    fn every_running_unit_is_a_replica() {
        let mut w = workload("svc", &[(BALANCE, "round-robin"), (HEALTH_PATH, "/ping")]);
        w.unit_noun = "task";
        let unit = |key: &str, ip: &str, readiness: Readiness| Unit {
            key: key.to_owned(),
            addresses: vec![network("apps", ip)],
            readiness,
            checked: false,
        };
        w.units = vec![
            unit("t1", "10.0.0.3", Readiness::Ready),
            unit("t2", "10.0.0.4", Readiness::Starting),
            unit("t3", "10.0.0.5", Readiness::Ready),
            unit("t4", "10.0.0.6", Readiness::Stopped("shutdown".to_owned())),
        ];
        let s = build(&w);
        let keys: Vec<&str> = s.replicas.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["t1", "t3"],
            "starting and stopped tasks take no traffic"
        );
        assert!(
            s.replicas.iter().all(|r| r.probe),
            "no health check: probed"
        );
        assert_eq!(s.availability, Availability::Ready);
        assert_eq!(s.balance, Balance::RoundRobin);
        assert_eq!(s.health_path.as_deref(), Some("/ping"));
        w.units.retain(|u| u.key == "t2");
        assert_eq!(build(&w).availability, Availability::Starting);
        w.units.clear();
        assert_eq!(
            build(&w).availability,
            Availability::Unavailable("container svc has no running task".to_owned())
        );
    }

    #[test]
    fn sticky_by_type_unless_labelled() {
        let streamlit = workload("s", &[(TYPE, "streamlit")]);
        assert!(build(&streamlit).sticky);
        assert!(!build(&workload("g", &[])).sticky);
        assert!(!build(&workload("s", &[(TYPE, "streamlit"), (STICKY, "false")])).sticky);
        assert!(build(&workload("g", &[(STICKY, "true")])).sticky);
        assert_eq!(
            build(&workload("b", &[(BALANCE, "random")])).balance,
            Balance::LeastRequests,
            "an unknown policy falls back to the default"
        );
        assert_eq!(
            build(&workload("h", &[(HEALTH_PATH, "")])).health_path,
            None
        );
    }

    #[test]
    fn labels_for_the_plugin() {
        let mut w = workload("l", &[(ID, "x"), ("com.example", "y")]);
        w.facts
            .insert("docker.container".to_owned(), "l".to_owned());
        let labels = build(&w).labels;
        assert_eq!(
            labels.keys().collect::<Vec<_>>(),
            vec!["docker.container", "portico.id"]
        );
    }

    #[test]
    fn access_from_labels_fails_closed() {
        let access = |labels: &[(&str, &str)]| build(&workload("a", labels)).access;
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
}
