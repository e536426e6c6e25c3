//! A workload as a discovery provider describes it, in no provider's terms: what the shared
//! rules in [`rules`](super::rules) need to turn it into a service.
//!
//! Docker fills one per labelled container, with one unit; Swarm one per service, with a unit
//! per task; Kubernetes would fill one per Service, with a unit per ready endpoint. Nothing
//! here is runtime state: the table owns that.

use std::collections::BTreeMap;

use super::Source;

/// One unit a provider can route to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Where it was discovered; also names it in reasons ("container web is not running").
    pub source: Source,
    /// The provider's own id (a container id, a Kubernetes uid): unique, always an alias.
    pub uid: String,
    /// Its name in the provider (a container name): the service id unless `portico.id` says
    /// otherwise, and an alias when it does.
    pub name: String,
    /// Further names that address it in `/proxy/{x}/` (a short id, a compose service).
    pub aliases: Vec<String>,
    /// Labels in the `portico.*` namespace and any other the provider saw; the rules read
    /// `portico.*` and pass those on to the plugin.
    pub labels: BTreeMap<String, String>,
    /// Provider facts passed to the plugin as labels besides `portico.*`
    /// (`docker.container`).
    pub facts: BTreeMap<String, String>,
    /// The image it runs, for type detection.
    pub image: String,
    /// Its command line, for type detection.
    pub command: String,
    /// The TCP ports it declares (exposed ports), sorted: the last resort for the port.
    pub ports: Vec<u16>,
    /// The processes that serve it: each becomes a replica. A container is one; a Swarm
    /// service has one per task that should be running.
    pub units: Vec<Unit>,
    /// What a unit is called in reasons given to people ("task").
    pub unit_noun: &'static str,
}

/// One process serving a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The provider's id of it (a container or task id): what its replica is kept under.
    pub key: String,
    /// The ways to reach it, in the provider's order within each kind.
    pub addresses: Vec<Address>,
    /// Whether it can take requests, as far as the provider knows.
    pub readiness: Readiness,
    /// True when the provider runs a health check of its own (a Docker `HEALTHCHECK`), whose
    /// verdict `readiness` already carries; otherwise the unit is probed at the service's
    /// health path before it takes traffic.
    pub checked: bool,
}

/// One way to reach a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// An IP on a named network, where every port of the workload answers; the IP is empty
    /// while the workload is not running.
    Network { network: String, ip: String },
    /// A DNS name that resolves to the workload on a shared network (a compose service, a
    /// Kubernetes Service), where its ports answer under their own numbers.
    Name(String),
    /// A host port that forwards to the workload's port `target` (a published port, a
    /// NodePort).
    Published {
        host: String,
        port: u16,
        target: u16,
    },
}

/// What the provider knows of a workload's readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Running, and its health check (if any) passed.
    Ready,
    /// Running, but its health check has not passed yet.
    Starting,
    /// Not running; the text is its state, for people ("exited (code 137)").
    Stopped(String),
}
