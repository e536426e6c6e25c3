//! Helpers for the Docker Swarm tests: a single-node swarm that the test processes of this
//! machine share (made for them when the engine is in none, and left by the last one), and
//! services and networks that are removed when the test ends, however it ends.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::docker::{RUN_LABEL, Run, app_image, available, build_once, docker, wait_for};

/// The replica image: the [`app_image`] answering `$APP $HOSTNAME` on port 8080, so that each
/// response names the replica that sent it (a task's hostname is its container's short id).
pub const REPLICA_IMAGE: &str = "portico-test-replica:latest";

/// How long a dropped [`Swarm`] waits for the containers of its services to go.
const CLEANUP_LIMIT: Duration = Duration::from_secs(30);

/// The replica image, built on the app image on first use. PID 1 is a shell that exits at
/// SIGTERM: busybox `httpd` as PID 1 ignores it, and every stopped task (an update, a
/// scale-down) would then wait out the stop grace period for its SIGKILL.
pub fn replica_image() -> anyhow::Result<&'static str> {
    let base = app_image()?;
    let dockerfile = format!(
        r#"FROM {base}
CMD ["/bin/sh", "-c", "mkdir -p /tmp/www && echo \"${{APP:-app}} $HOSTNAME\" > /tmp/www/index.html || exit 1; httpd -f -p 8080 -h /tmp/www & trap 'kill $!; exit 0' TERM; wait $!"]
"#
    );
    build_once(REPLICA_IMAGE, &dockerfile, &[])?;
    Ok(REPLICA_IMAGE)
}

/// One task of a service, as the manager reports it (`docker inspect --type task`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    /// The replica's slot (`Slot`); none for a global service.
    pub slot: Option<u64>,
    /// `Status.State`: `new`, `pending`, `assigned`, `preparing`, `ready`, `starting` (also
    /// while a health check has not passed yet), `running`, then `complete`, `shutdown`,
    /// `failed`, `rejected` or `orphaned`.
    pub state: String,
    /// `DesiredState`: `running`, or `shutdown` as soon as the task is to stop (its state stays
    /// `running` until the container is gone), `ready` for a task made ahead of its start.
    pub desired_state: String,
    /// `Status.ContainerStatus.ContainerID`, once the task has a container.
    pub container: Option<String>,
    /// Network name to IP address (no prefix length). From the task's network attachments;
    /// a swarm-scoped bridge network's attachment has none (the node allocates it), so for
    /// those the address is read from the task's container on this engine.
    pub addresses: BTreeMap<String, String>,
    /// Host ports published in `mode=host` (`Status.PortStatus.Ports[].PublishedPort`).
    pub ports: Vec<u16>,
}

impl Task {
    /// True when the task runs and is meant to: a replica that may take requests.
    pub fn running(&self) -> bool {
        self.state == "running" && self.desired_state == "running"
    }

    /// A task from the Engine's JSON for it.
    fn from_json(task: &Value) -> anyhow::Result<Self> {
        let text = |value: &Value| value.as_str().map(str::to_owned);
        let id = text(&task["ID"]).context("a task without an ID")?;
        let status = &task["Status"];
        let mut addresses = BTreeMap::new();
        let mut unaddressed = Vec::new();
        for attachment in task["NetworksAttachments"].as_array().into_iter().flatten() {
            let Some(network) = text(&attachment["Network"]["Spec"]["Name"]) else {
                continue;
            };
            let address = attachment["Addresses"]
                .as_array()
                .and_then(|all| all.first())
                .and_then(Value::as_str)
                .map(|cidr| cidr.split('/').next().unwrap_or(cidr).to_owned());
            match address {
                Some(address) => {
                    addresses.insert(network, address);
                }
                None => unaddressed.push(network),
            }
        }
        let container = text(&status["ContainerStatus"]["ContainerID"]);
        if let Some(container) = &container
            && !unaddressed.is_empty()
        {
            // Gone already when the task has ended: then it has no address to give.
            if let Ok(networks) = docker([
                "inspect",
                "--type",
                "container",
                "--format",
                "{{json .NetworkSettings.Networks}}",
                container,
            ]) {
                let networks: Value = serde_json::from_str(&networks)
                    .with_context(|| format!("reading the networks of container {container}"))?;
                for network in unaddressed {
                    if let Some(ip) =
                        text(&networks[&network]["IPAddress"]).filter(|ip| !ip.is_empty())
                    {
                        addresses.insert(network, ip);
                    }
                }
            }
        }
        let mut ports: Vec<u16> = status["PortStatus"]["Ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|port| port["PublishedPort"].as_u64())
            .filter_map(|port| u16::try_from(port).ok())
            .collect();
        // The engine lists a port once per address family it bound.
        ports.sort_unstable();
        ports.dedup();
        Ok(Self {
            id,
            slot: task["Slot"].as_u64(),
            state: text(&status["State"]).unwrap_or_default(),
            desired_state: text(&task["DesiredState"]).unwrap_or_default(),
            container,
            addresses,
            ports,
        })
    }
}

/// A test's share of the swarm: services created through it carry `portico.test-run=<id>`
/// (as service labels) and are removed on drop, also when the test panics, and so are the
/// networks and containers of its [`Run`]. The last `Swarm` of the machine to go leaves the
/// swarm again when the tests made it.
#[derive(Debug)]
pub struct Swarm {
    /// Taken on drop, after the services: its networks can go only when their tasks have.
    run: Option<Run>,
    /// A shared lock on the `users` file, held while this swarm is in use.
    user: Option<File>,
}

impl Swarm {
    /// Joins the engine's swarm, or makes a single-node one when the engine is in none. `None`
    /// when no engine answers (see [`available`]); an error when the engine is in a swarm but
    /// not as a manager, which the tests need to read services and tasks.
    pub fn join(test: &str) -> anyhow::Result<Option<Self>> {
        if !available(test) {
            return Ok(None);
        }
        let dir = state_dir()?;
        let _gate = lock_gate(&dir)?;
        let info: Value = serde_json::from_str(&docker(["info", "--format", "{{json .Swarm}}"])?)
            .context("reading the engine's swarm state")?;
        let owner_file = dir.join("owner");
        match info["LocalNodeState"].as_str().unwrap_or_default() {
            "active" => {
                anyhow::ensure!(
                    info["ControlAvailable"].as_bool() == Some(true),
                    "{test}: the engine is in a swarm but not a manager of it"
                );
                // An owner file of another swarm (this one was made by someone else since)
                // must not make the tests leave it.
                let node = info["NodeID"].as_str().unwrap_or_default();
                if Owner::read(&owner_file)?.is_some_and(|owner| owner.node != node) {
                    std::fs::remove_file(&owner_file).context("removing a stale owner file")?;
                }
            }
            "inactive" => {
                let gateway_existed = docker([
                    "network",
                    "inspect",
                    "--format",
                    "{{.Id}}",
                    "docker_gwbridge",
                ])
                .is_ok();
                // Loopback: offline, and the choice of address cannot be ambiguous on a machine
                // with several interfaces (a plain `swarm init` refuses then).
                docker([
                    "swarm",
                    "init",
                    "--advertise-addr",
                    "127.0.0.1",
                    "--listen-addr",
                    "127.0.0.1:2377",
                ])
                .context("making a single-node swarm")?;
                let node = docker(["info", "--format", "{{.Swarm.NodeID}}"])?;
                Owner {
                    node,
                    made_gateway: !gateway_existed,
                }
                .write(&owner_file)?;
            }
            other => bail!("{test}: the engine's swarm state is {other:?}: {info}"),
        }
        let user = open(&dir.join("users"))?;
        user.lock_shared()
            .context("registering as a user of the swarm")?;
        Ok(Some(Self {
            run: Some(Run::new()),
            user: Some(user),
        }))
    }

    /// The run whose id labels and names this swarm's objects; also for plain containers (a
    /// Portico on an attachable network, say), removed with the rest.
    pub fn run(&self) -> &Run {
        self.run
            .as_ref()
            .expect("a swarm keeps its run until it is dropped")
    }

    /// Creates an attachable, swarm-scoped network with `driver` (`overlay`, or `bridge`: a
    /// bridge on each node, whose task addresses the host can reach); returns its name.
    pub fn network(&self, what: &str, driver: &str) -> anyhow::Result<String> {
        self.run().network_with(
            what,
            &["--driver", driver, "--scope", "swarm", "--attachable"],
        )
    }

    /// `docker service create --detach` with this run's label and a name unique to the run,
    /// then `args` (options, image and command); returns the service's name. The image is
    /// not looked up in a registry: there is none.
    pub fn service(&self, what: &str, args: &[&str]) -> anyhow::Result<String> {
        let run = self.run();
        let name = run.name(what);
        let label = format!("{RUN_LABEL}={}", run.id);
        let mut all = vec![
            "service",
            "create",
            "--detach",
            "--no-resolve-image",
            "--label",
            &label,
            "--name",
            &name,
        ];
        all.extend_from_slice(args);
        docker(all).with_context(|| format!("creating service {name}"))?;
        Ok(name)
    }

    /// Sets the replica count of `service`, without waiting for the tasks.
    pub fn scale(&self, service: &str, replicas: usize) -> anyhow::Result<()> {
        docker([
            "service",
            "scale",
            "--detach",
            &format!("{service}={replicas}"),
        ])
        .with_context(|| format!("scaling {service} to {replicas}"))?;
        Ok(())
    }

    /// `docker service update --detach` of `service` with `args` (`--force` for a rolling
    /// restart, `--update-order start-first`, `--label-add`, ...), without waiting for it.
    pub fn update(&self, service: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["service", "update", "--detach", "--no-resolve-image"];
        all.extend_from_slice(args);
        all.push(service);
        docker(all).with_context(|| format!("updating {service}"))?;
        Ok(())
    }

    /// Every task of `service` the manager still keeps, ended ones too (up to the swarm's
    /// task history limit per slot).
    pub fn tasks(&self, service: &str) -> anyhow::Result<Vec<Task>> {
        let ids = docker(["service", "ps", "-q", "--no-trunc", service])
            .with_context(|| format!("listing the tasks of {service}"))?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["inspect", "--type", "task"];
        args.extend(ids);
        let tasks: Value = serde_json::from_str(&docker(args)?)
            .with_context(|| format!("reading the tasks of {service}"))?;
        tasks
            .as_array()
            .into_iter()
            .flatten()
            .map(Task::from_json)
            .collect()
    }

    /// Waits until exactly `replicas` tasks of `service` are [running](Task::running) (during an
    /// update or a scale there are more or fewer for a while); returns them.
    pub async fn wait_running(
        &self,
        service: &str,
        replicas: usize,
        limit: Duration,
    ) -> anyhow::Result<Vec<Task>> {
        wait_for(
            &format!("{replicas} running tasks of {service}"),
            limit,
            || async {
                let running: Vec<Task> = self
                    .tasks(service)
                    .ok()?
                    .into_iter()
                    .filter(Task::running)
                    .collect();
                (running.len() == replicas).then_some(running)
            },
        )
        .await
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let id = self.run().id.clone();
        let filter = format!("label={RUN_LABEL}={id}");
        let services = docker([
            "service",
            "ls",
            "--filter",
            &filter,
            "--format",
            "{{.Name}}",
        ])
        .unwrap_or_default();
        let services: Vec<&str> = services.split_whitespace().collect();
        if !services.is_empty() {
            let mut args = vec!["service", "rm"];
            args.extend(&services);
            if let Err(err) = docker(args) {
                eprintln!("cleanup of swarm run {id}: {err:#}");
            }
            // A network removed while a task still holds it leaves the node's side of it in
            // an error state; the containers go once their tasks have stopped.
            let deadline = Instant::now() + CLEANUP_LIMIT;
            for service in &services {
                let label = format!("label=com.docker.swarm.service.name={service}");
                while docker(["ps", "-aq", "--filter", &label]).is_ok_and(|ids| !ids.is_empty()) {
                    if Instant::now() > deadline {
                        eprintln!("cleanup of swarm run {id}: {service} still has containers");
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        // Its containers, then its networks (the swarm's among them).
        drop(self.run.take());
        if let Some(user) = self.user.take()
            && let Err(err) = release(user)
        {
            eprintln!("cleanup of swarm run {id}: {err:#}");
        }
    }
}

/// The directory where the test processes of this machine agree on the swarm: `gate` (locked
/// while one of them joins or leaves), `users` (a shared lock per live [`Swarm`]; the OS drops
/// it with its process, so a test that crashed does not hold the swarm) and `owner` (present
/// while the swarm is one the tests made).
fn state_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join("portico-test-swarm");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Opens (or creates) one of the state directory's lock files.
fn open(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Locks the gate; it opens again when the returned file is dropped.
fn lock_gate(dir: &Path) -> anyhow::Result<File> {
    let gate = open(&dir.join("gate"))?;
    gate.lock().context("locking the swarm gate")?;
    Ok(gate)
}

/// Gives up `user`'s share of the swarm, and leaves the swarm when it was the last one and
/// the tests made the swarm.
fn release(user: File) -> anyhow::Result<()> {
    let dir = state_dir()?;
    let _gate = lock_gate(&dir)?;
    drop(user);
    let users = open(&dir.join("users"))?;
    match users.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(()),
        Err(TryLockError::Error(err)) => {
            return Err(err).context("checking for other users of the swarm");
        }
    }
    let owner_file = dir.join("owner");
    let Some(owner) = Owner::read(&owner_file)? else {
        return Ok(());
    };
    let node = docker(["info", "--format", "{{.Swarm.NodeID}}"])?;
    if node == owner.node {
        docker(["swarm", "leave", "--force"]).context("leaving the swarm")?;
        // Made by `swarm init` and kept by `swarm leave`.
        if owner.made_gateway {
            docker(["network", "rm", "docker_gwbridge"]).context("removing docker_gwbridge")?;
        }
    }
    std::fs::remove_file(&owner_file).context("removing the owner file")?;
    Ok(())
}

/// What the tests record about a swarm they made.
#[derive(Debug)]
struct Owner {
    /// The node id of the swarm: another swarm made since is not the tests' to leave.
    node: String,
    /// Whether `swarm init` also made the `docker_gwbridge` network.
    made_gateway: bool,
}

impl Owner {
    fn read(path: &Path) -> anyhow::Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        let mut lines = text.lines();
        let (Some(node), Some(made_gateway)) = (lines.next(), lines.next()) else {
            bail!("{} is not an owner file: {text:?}", path.display());
        };
        Ok(Some(Self {
            node: node.to_owned(),
            made_gateway: made_gateway == "made docker_gwbridge",
        }))
    }

    fn write(&self, path: &Path) -> anyhow::Result<()> {
        let gateway = if self.made_gateway {
            "made docker_gwbridge"
        } else {
            "found docker_gwbridge"
        };
        std::fs::write(path, format!("{}\n{gateway}\n", self.node))
            .with_context(|| format!("writing {}", path.display()))
    }
}
