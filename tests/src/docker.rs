//! Helpers for the Docker tests: the engine check (skip loudly, or fail under
//! `PORTICO_REQUIRE_DOCKER=1`), locally built images, and containers and networks that are
//! removed when the test ends, however it ends.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// The app image: Debian's static busybox on `scratch`, serving `$APP` on port 8080.
pub const APP_IMAGE: &str = "portico-test-busybox:latest";
/// Portico itself on `scratch`, with the glibc it links against (tagged with the binary's
/// modification time).
pub const PORTICO_IMAGE: &str = "portico-test-portico";
/// The label every test object carries, valued with the run id.
pub const RUN_LABEL: &str = "portico.test-run";

/// Runs `docker args...` and returns its trimmed stdout.
pub fn docker<I, S>(args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let output = Command::new("docker")
        .args(&args)
        // The classic builder: this machine has no buildx, and nothing here needs BuildKit.
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .context("running the docker CLI")?;
    if !output.status.success() {
        bail!(
            "docker {:?} failed: {}",
            args,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// True when a Docker Engine answers. When none does, prints a SKIP line and returns false,
/// or panics when `PORTICO_REQUIRE_DOCKER=1` (CI), so a skip cannot pass unnoticed there.
pub fn available(test: &str) -> bool {
    match docker(["version", "--format", "{{.Server.Version}}"]) {
        Ok(_) => true,
        Err(err) => {
            if std::env::var("PORTICO_REQUIRE_DOCKER").as_deref() == Ok("1") {
                panic!(
                    "{test}: PORTICO_REQUIRE_DOCKER=1 but no Docker Engine is reachable: {err:#}"
                );
            }
            // Straight to the process's stderr: eprintln! is captured for a passing test,
            // and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIP {test}: no Docker Engine is reachable ({err:#}); set PORTICO_REQUIRE_DOCKER=1 to make this a failure"
            );
            false
        }
    }
}

/// Serialises image builds inside one test binary; `docker build` of one tag from several
/// binaries at once is harmless (same content, last one wins).
static BUILDS: Mutex<()> = Mutex::new(());

/// Builds `tag` from `dockerfile` and `files` (name in the context, source; `None` makes an
/// empty file) unless the image exists already.
pub(crate) fn build_once(
    tag: &str,
    dockerfile: &str,
    files: &[(&str, Option<&Path>)],
) -> anyhow::Result<()> {
    let _guard = BUILDS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if docker(["image", "inspect", "--format", "{{.Id}}", tag]).is_ok() {
        return Ok(());
    }
    let dir = tempfile::tempdir().context("creating the build context")?;
    for (name, source) in files {
        let target = dir.path().join(name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match source {
            Some(source) => {
                std::fs::copy(source, &target).with_context(|| {
                    format!("copying {} into the build context", source.display())
                })?;
            }
            None => std::fs::write(&target, b"")?,
        }
    }
    std::fs::write(dir.path().join("Dockerfile"), dockerfile)?;
    docker([
        "build".as_ref(),
        "-q".as_ref(),
        "-t".as_ref(),
        tag.as_ref(),
        dir.path().as_os_str(),
    ])
    .with_context(|| format!("building {tag}"))?;
    Ok(())
}

/// The app image, built from `/bin/busybox` (Debian's busybox-static) on first use.
pub fn app_image() -> anyhow::Result<&'static str> {
    let busybox = Path::new("/bin/busybox");
    anyhow::ensure!(
        busybox.exists(),
        "/bin/busybox is missing: install Debian's busybox-static"
    );
    let dockerfile = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /tmp
EXPOSE 8080
CMD ["/bin/sh", "-c", "mkdir -p /tmp/www && echo \"${APP:-app}\" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
"#;
    build_once(APP_IMAGE, dockerfile, &[("busybox", Some(busybox))])?;
    Ok(APP_IMAGE)
}

/// The Portico binary of this build: next to the test binary's `deps` directory, built with
/// cargo when missing.
fn portico_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test binary has no profile directory")?;
    let binary = profile_dir.join("portico");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "-p", "portico", "--bin", "portico"])
            .status()
            .context("building the portico binary")?;
        anyhow::ensure!(status.success(), "cargo build -p portico failed");
    }
    Ok(binary)
}

/// A Portico image: the binary, stripped of debug info, and the shared libraries `ldd` names,
/// on `scratch`. Rebuilt whenever the binary changed (the tag carries its modification time).
pub fn portico_image() -> anyhow::Result<String> {
    let binary = portico_binary()?;
    let stamp = std::fs::metadata(&binary)?
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let tag = format!("{PORTICO_IMAGE}:{stamp}");
    let stripped = tempfile::tempdir()?;
    let small = stripped.path().join("portico");
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(&binary)
        .arg(&small)
        .status();
    let binary_in_context = match status {
        Ok(status) if status.success() => small,
        // Without binutils the full binary works too, only slower to send to the engine.
        _ => binary.clone(),
    };
    let ldd = Command::new("ldd")
        .arg(&binary)
        .output()
        .context("running ldd")?;
    let mut files: Vec<(String, Option<PathBuf>)> = vec![
        ("rootfs/portico".to_owned(), Some(binary_in_context)),
        // Portico caches compiled plugins under $HOME; scratch has no /tmp of its own.
        ("rootfs/tmp/.keep".to_owned(), None),
    ];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
        let path = line
            .split("=>")
            .last()
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(path) = path {
            files.push((format!("rootfs{path}"), Some(PathBuf::from(path))));
        }
    }
    let dockerfile = "FROM scratch\nCOPY rootfs/ /\nENV HOME=/tmp\nENTRYPOINT [\"/portico\"]\n";
    let borrowed: Vec<(&str, Option<&Path>)> = files
        .iter()
        .map(|(name, path)| (name.as_str(), path.as_deref()))
        .collect();
    build_once(&tag, dockerfile, &borrowed)?;
    // Images of earlier builds of the binary are of no further use.
    if let Ok(tags) = docker(["images", PORTICO_IMAGE, "--format", "{{.Tag}}"]) {
        for old in tags.lines().filter(|t| *t != stamp.to_string()) {
            let _ = docker(["rmi", &format!("{PORTICO_IMAGE}:{old}")]);
        }
    }
    Ok(tag)
}

/// A test's Docker objects: everything created through it carries `portico.test-run=<id>`
/// and is removed on drop, also when the test panics.
#[derive(Debug)]
pub struct Run {
    pub id: String,
    networks: Mutex<Vec<String>>,
}

impl Run {
    /// A run with an id unique on this machine (pid, counter, time), usable in names.
    pub fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let id = format!(
            "t{}-{}-{:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        Self {
            id,
            networks: Mutex::new(Vec::new()),
        }
    }

    /// A name unique to this run.
    pub fn name(&self, what: &str) -> String {
        format!("{what}-{}", self.id)
    }

    /// `[docker]` settings that make a Portico see only this run's containers.
    pub fn docker_config(&self) -> String {
        self.docker_config_with("")
    }

    /// [`docker_config`](Self::docker_config) plus `extra` lines of the `[docker]` section.
    pub fn docker_config_with(&self, extra: &str) -> String {
        format!(
            "\n[docker]\nenabled = true\nrequire_labels = {{ \"{RUN_LABEL}\" = \"{}\" }}\n{extra}\n",
            self.id
        )
    }

    /// Creates a bridge network; returns its name.
    pub fn network(&self, what: &str) -> anyhow::Result<String> {
        self.network_with(what, &[])
    }

    /// Creates a bridge network with `docker network create` `options` (`--internal`, say);
    /// returns its name.
    pub fn network_with(&self, what: &str, options: &[&str]) -> anyhow::Result<String> {
        let name = self.name(what);
        let label = format!("{RUN_LABEL}={}", self.id);
        let mut args = vec!["network", "create", "--label", &label];
        args.extend_from_slice(options);
        args.push(&name);
        docker(args)?;
        self.networks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(name.clone());
        Ok(name)
    }

    /// `docker run -d` with this run's label, then `args` (options, image and command);
    /// returns the container id.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let label = format!("{RUN_LABEL}={}", self.id);
        let mut all = vec!["run", "-d", "--label", &label];
        all.extend_from_slice(args);
        docker(all)
    }

    /// The container's IP on `network`.
    pub fn ip(&self, container: &str, network: &str) -> anyhow::Result<String> {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        let ip = docker(["inspect", "--format", &format, container])?;
        anyhow::ensure!(!ip.is_empty(), "{container} has no IP on {network}");
        Ok(ip)
    }
}

impl Default for Run {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let filter = format!("label={RUN_LABEL}={}", self.id);
        if let Ok(ids) = docker(["ps", "-aq", "--filter", &filter]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f", "-v"];
                args.extend(ids);
                if let Err(err) = docker(args) {
                    eprintln!("cleanup of run {}: {err:#}", self.id);
                }
            }
        }
        let networks = std::mem::take(
            &mut *self
                .networks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for network in networks {
            if let Err(err) = docker(["network", "rm", &network]) {
                eprintln!("cleanup of run {}: {err:#}", self.id);
            }
        }
    }
}

/// Waits until the host side of the bridge `network` (the bridge and its container ports) has
/// its IPv6 link-local addresses, which the kernel adds a second or two after a container
/// starts. Chromium aborts requests in flight with `ERR_NETWORK_CHANGED` when a host address
/// appears, so a browser test lets the network settle first. A hang guard of `limit`, after
/// which it carries on (a host without IPv6 never gets the addresses).
pub async fn settle(network: &str, limit: Duration) -> anyhow::Result<()> {
    let id = docker(["network", "inspect", "--format", "{{.Id}}", network])?;
    let bridge = format!("br-{}", id.get(..12).unwrap_or(&id));
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut interfaces = vec![bridge.clone()];
        if let Ok(ports) = std::fs::read_dir(format!("/sys/class/net/{bridge}/brif")) {
            interfaces.extend(
                ports
                    .flatten()
                    .map(|p| p.file_name().to_string_lossy().into()),
            );
        }
        let addresses = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
        let pending = interfaces.iter().find(|interface| {
            let disabled = std::fs::read_to_string(format!(
                "/proc/sys/net/ipv6/conf/{interface}/disable_ipv6"
            ))
            .map_or(true, |value| value.trim() == "1");
            // Fields: address, index, prefix length, scope, flags (0x40 tentative), name.
            let settled = addresses.lines().any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(5) == Some(&interface.as_str())
                    && fields
                        .get(4)
                        .and_then(|flags| u32::from_str_radix(flags, 16).ok())
                        .is_some_and(|flags| flags & 0x40 == 0)
            });
            !disabled && !settled
        });
        let Some(pending) = pending else {
            return Ok(());
        };
        if tokio::time::Instant::now() > deadline {
            let _ = writeln!(
                std::io::stderr(),
                "{network}: {pending} has no IPv6 link-local address after {limit:?}; going on"
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A container's output, stdout then stderr (`docker logs`).
pub fn logs(container: &str) -> anyhow::Result<String> {
    let output = Command::new("docker")
        .args(["logs", container])
        .output()
        .context("running docker logs")?;
    anyhow::ensure!(
        output.status.success(),
        "docker logs {container} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// How a container on the busybox [`app_image`] runs the host's `python` (a virtualenv's, say)
/// without a Python image: the interpreter to run inside, and `-v` read-only bind mounts of the
/// host paths it needs at the same paths (`/usr`, `/lib`, `/lib64`, the base installation when
/// outside `/usr` and the virtualenv).
pub fn host_python(python: &Path) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let output = Command::new(python)
        .args([
            "-c",
            "import sys; print(sys.prefix); print(sys.base_prefix)",
        ])
        .output()
        .with_context(|| format!("asking {} for its prefixes", python.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} failed: {}",
        python.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let text = String::from_utf8(output.stdout).context("the prefixes are not UTF-8")?;
    let mut lines = text.lines();
    let (Some(prefix), Some(base)) = (lines.next(), lines.next()) else {
        bail!("{} printed no prefixes: {text:?}", python.display());
    };
    let mut paths: Vec<&str> = ["/usr", "/lib", "/lib64"]
        .into_iter()
        .filter(|path| Path::new(path).exists())
        .collect();
    for path in [base, prefix] {
        if !paths
            .iter()
            .any(|mounted| Path::new(path).starts_with(mounted))
        {
            paths.push(path);
        }
    }
    let mounts = paths
        .iter()
        .flat_map(|path| ["-v".to_owned(), format!("{path}:{path}:ro")])
        .collect();
    Ok((Path::new(prefix).join("bin/python"), mounts))
}

/// The engine's Unix socket on this machine (`DOCKER_HOST=unix://...`, else the default).
pub fn socket_path() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if host.starts_with("unix://") => host.trim_start_matches("unix://").to_owned(),
        _ => "/var/run/docker.sock".to_owned(),
    }
}

/// Polls `check` until it returns `Some`, or fails after `limit` (a hang guard).
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("gave up waiting: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
