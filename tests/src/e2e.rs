//! The end-to-end harness: the real Python apps of `tests/apps`, a real Portico in front of them
//! and headless Chromium driven over WebDriver, with the browser's network log checked for
//! requests that failed.
//!
//! A test opens a [`Session`] (which skips loudly when Chromium, chromedriver or Python is
//! missing, or panics when `PORTICO_REQUIRE_BROWSER=1`), drives its [`Browser`], and hands the
//! outcome to [`Session::finish`], which checks the network log and, on failure, saves a
//! screenshot and the logs under `target/e2e-artifacts/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, bail};
use fantoccini::wd::WebDriverCompatibleCommand;
use serde_json::{Value, json};

use crate::proxy::Portico;

/// Set to `1` to make a missing browser, driver or Python a failure instead of a skip.
pub const REQUIRE_ENV: &str = "PORTICO_REQUIRE_BROWSER";

/// How long an app, the driver or a page condition may take. Generous: these are hang guards on
/// a loaded 2-core machine, not timing assertions.
pub const APP_START: Duration = Duration::from_secs(180);
const CONDITION: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

/// The framework apps under `tests/apps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Streamlit,
    Dash,
    FastApi,
    Flask,
    Static,
    Jupyter,
    Voila,
    Bokeh,
    Panel,
    Solara,
    Gradio,
}

impl Kind {
    /// The service id and the directory under `tests/apps`.
    pub fn id(self) -> &'static str {
        match self {
            Self::Streamlit => "streamlit",
            Self::Dash => "dash",
            Self::FastApi => "fastapi",
            Self::Flask => "flask",
            Self::Static => "static",
            Self::Jupyter => "jupyter",
            Self::Voila => "voila",
            Self::Bokeh => "bokeh",
            Self::Panel => "panel",
            Self::Solara => "solara",
            Self::Gradio => "gradio",
        }
    }

    /// The service type, which picks the plugin.
    fn service_type(self) -> &'static str {
        match self {
            Self::Static => "generic",
            other => other.id(),
        }
    }

    /// The arguments after `python`, and a path that answers 2xx once the app is ready. None of
    /// them tells the app about the proxy: that is the plugins' job.
    fn command(self, port: u16) -> (Vec<String>, &'static str) {
        let port = port.to_string();
        let args: Vec<&str> = match self {
            Self::Streamlit => vec![
                "-m",
                "streamlit",
                "run",
                "app.py",
                "--server.address",
                "127.0.0.1",
                "--server.port",
                &port,
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
            ],
            Self::Dash | Self::Flask => vec!["app.py", &port],
            Self::FastApi => vec![
                "-m",
                "uvicorn",
                "main:app",
                "--host",
                "127.0.0.1",
                "--port",
                &port,
            ],
            Self::Static => vec!["-m", "http.server", &port, "--bind", "127.0.0.1"],
            // JupyterLab with no token or password. CI runs as root, which Jupyter refuses
            // without --allow-root. The machine is offline, and JupyterLab would otherwise
            // fetch its news feed and check PyPI for updates and extensions: all three off.
            // `settings/page_config.json5` turns off what would cover the page (see there).
            Self::Jupyter => vec![
                "-m",
                "jupyter",
                "lab",
                "--no-browser",
                "--ip",
                "127.0.0.1",
                "--port",
                &port,
                "--allow-root",
                "--IdentityProvider.token=",
                "--ServerApp.password=",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
                "--LabApp.extension_manager=readonly",
                "--LabApp.app_settings_dir=settings",
            ],
            Self::Voila => vec![
                "-m",
                "voila",
                "app.ipynb",
                "--no-browser",
                "--Voila.ip=127.0.0.1",
                "--port",
                &port,
            ],
            Self::Bokeh => vec![
                "-m",
                "bokeh",
                "serve",
                "app.py",
                "--address",
                "127.0.0.1",
                "--port",
                &port,
            ],
            Self::Panel => vec![
                "-m",
                "panel",
                "serve",
                "app.py",
                "--address",
                "127.0.0.1",
                "--port",
                &port,
            ],
            Self::Solara => vec![
                "-m",
                "solara",
                "run",
                "app.py",
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--production",
            ],
            Self::Gradio => vec!["app.py", &port],
        };
        let ready = match self {
            Self::Streamlit => "/_stcore/health",
            Self::FastApi => "/openapi.json",
            Self::Jupyter => "/api",
            Self::Bokeh | Self::Panel => "/app",
            // Solara keeps the root path of the first page it serves: probing `/` here would
            // fix it at `/` before Portico sends the prefix.
            Self::Solara => "/readyz",
            // Voila's `/` starts a kernel and runs the notebook; its static files do not.
            Self::Voila => "/voila/static/voila.js",
            _ => "/",
        };
        (args.into_iter().map(str::to_owned).collect(), ready)
    }
}

/// The programs the browser tests run.
#[derive(Debug, Clone)]
pub struct Tools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
    /// The virtualenv's interpreter, with `tests/apps/requirements.txt` installed.
    pub python: PathBuf,
}

/// The tools, found and installed once per test process; or why they are missing.
fn tools() -> &'static Result<Tools, String> {
    static TOOLS: OnceLock<Result<Tools, String>> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"])
            .ok_or("Chromium is not installed (apt-get install chromium)")?;
        let chromedriver = find_program(&["chromedriver"])
            .ok_or("chromedriver is not installed (apt-get install chromium-driver)")?;
        let python = find_program(&["python3"]).ok_or("python3 is not installed")?;
        let python = venv(&python)?;
        Ok(Tools {
            chromium,
            chromedriver,
            python,
        })
    })
}

/// The tools, or `None` after a SKIP line naming what is missing; a panic instead when
/// `PORTICO_REQUIRE_BROWSER=1`.
pub fn tools_or_skip(test: &str) -> Option<&'static Tools> {
    match tools() {
        Ok(tools) => Some(tools),
        Err(reason) => {
            if std::env::var(REQUIRE_ENV).is_ok_and(|value| value == "1") {
                panic!("{test}: {reason} ({REQUIRE_ENV}=1 requires the browser tests)");
            }
            // Written to the process's stderr, not through eprintln!, which the test
            // harness captures and hides for a test that passes.
            let _ = writeln!(
                std::io::stderr(),
                "SKIP {test}: {reason} (set {REQUIRE_ENV}=1 to make this a failure)"
            );
            None
        }
    }
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

/// `tests/apps`.
pub fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("apps")
}

/// Where failing tests leave screenshots and logs.
pub fn artifacts_dir() -> PathBuf {
    target_dir().join("e2e-artifacts")
}

/// Creates `target/e2e-venv` with the apps' requirements, or reuses it when a marker says the
/// same requirements were installed. A file lock keeps concurrent test processes (several test
/// binaries, or two `cargo test` runs) from installing over each other.
fn venv(system_python: &Path) -> Result<PathBuf, String> {
    let target = target_dir();
    let dir = target.join("e2e-venv");
    let python = dir.join("bin/python");
    let requirements_path = apps_dir().join("requirements.txt");
    let requirements = std::fs::read(&requirements_path)
        .map_err(|error| format!("cannot read {}: {error}", requirements_path.display()))?;
    std::fs::create_dir_all(&target)
        .map_err(|error| format!("cannot create {target:?}: {error}"))?;
    let lock = File::create(target.join("e2e-venv.lock"))
        .map_err(|error| format!("cannot create the virtualenv lock: {error}"))?;
    lock.lock()
        .map_err(|error| format!("cannot lock the virtualenv: {error}"))?;
    // The marker holds the requirements it was installed from, so an edit reinstalls.
    let marker = dir.join("portico-requirements.txt");
    if std::fs::read(&marker).ok().as_deref() == Some(requirements.as_slice()) && python.is_file() {
        return Ok(python);
    }
    eprintln!(
        "e2e: creating {} and installing {} (first run only)",
        dir.display(),
        requirements_path.display()
    );
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|error| format!("cannot remove the stale {dir:?}: {error}"))?;
    }
    run_quietly(
        Command::new(system_python).arg("-m").arg("venv").arg(&dir),
        "python3 -m venv (Debian: apt-get install python3-venv)",
    )?;
    run_quietly(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(&requirements_path),
        "pip install of tests/apps/requirements.txt",
    )?;
    std::fs::write(&marker, &requirements)
        .map_err(|error| format!("cannot write {marker:?}: {error}"))?;
    Ok(python)
}

fn run_quietly(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|error| format!("{what}: cannot run: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A free port on 127.0.0.1 (bound, then released for the child to take).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process killed when dropped, its output in a log file.
#[derive(Debug)]
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(command: &mut Command, log: PathBuf) -> anyhow::Result<Self> {
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        Ok(Self { child, log })
    }

    /// Fails with the process's output when it has exited.
    fn check_alive(&mut self, what: &str) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let output = std::fs::read_to_string(&self.log).unwrap_or_default();
            bail!("{what} exited ({status}) before it was ready; its output:\n{output}");
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `url` answers 2xx, while `process` is alive.
async fn wait_ready(process: &mut Process, what: &str, url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let deadline = tokio::time::Instant::now() + APP_START;
    loop {
        process.check_alive(what)?;
        if let Ok(response) = client.get(url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what} did not answer {url} within {APP_START:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A running app of `tests/apps`.
#[derive(Debug)]
pub struct App {
    pub kind: Kind,
    pub port: u16,
    process: Process,
}

impl App {
    /// Starts the app `spec` describes and waits until it is ready.
    async fn start(tools: &Tools, spec: &AppSpec<'_>, test: &str) -> anyhow::Result<Self> {
        let kind = spec.kind;
        let port = free_port()?;
        let (args, ready) = kind.command(port);
        let ready = spec.ready.as_deref().unwrap_or(ready);
        let log = artifacts_dir().join(format!("{test}-{}.log", kind.id()));
        let mut command = Command::new(&tools.python);
        command
            .args(&args)
            .args(&spec.args)
            .current_dir(apps_dir().join(kind.id()))
            .env("PYTHONUNBUFFERED", "1")
            // Streamlit writes to ~/.streamlit; a scratch home keeps runs independent.
            .env("HOME", target_dir().join("e2e-home"));
        let mut process = Process::spawn(&mut command, log)?;
        wait_ready(
            &mut process,
            kind.id(),
            &format!("http://127.0.0.1:{port}{ready}"),
        )
        .await?;
        Ok(Self {
            kind,
            port,
            process,
        })
    }
}

/// One app of a session: the id it is served under, its kind, and what changes in its command.
#[derive(Debug, Clone)]
pub struct AppSpec<'a> {
    pub id: &'a str,
    pub kind: Kind,
    /// Arguments after the kind's own (later ones win on most command lines): a base URL that
    /// names the id, say.
    pub args: Vec<String>,
    /// The path that answers 2xx once the app is ready, in place of the kind's (an app told to
    /// serve under a base path answers only there).
    pub ready: Option<String>,
}

impl<'a> AppSpec<'a> {
    /// `kind` under `id`, started as the kind says.
    pub fn new(id: &'a str, kind: Kind) -> Self {
        Self {
            id,
            kind,
            args: Vec::new(),
            ready: None,
        }
    }

    /// Adds `args` after the kind's arguments.
    pub fn args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Waits for `path` instead of the kind's ready path.
    pub fn ready(mut self, path: impl Into<String>) -> Self {
        self.ready = Some(path.into());
        self
    }
}

/// Serialises the browser tests of one process: each runs Chromium, an app or two and Portico,
/// and on two cores several at once would make them all slow and flaky.
static BROWSER_SLOT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One browser test: its apps, Portico in front of them, chromedriver and a browser session.
#[derive(Debug)]
pub struct Session {
    pub name: String,
    pub apps: Vec<App>,
    pub portico: Portico,
    pub browser: Browser,
    driver: Process,
    _slot: tokio::sync::MutexGuard<'static, ()>,
}

impl Session {
    /// Starts `kinds` behind a Portico (service ids are [`Kind::id`]) and a browser, or returns
    /// `None` after a SKIP line when the machine lacks what the test needs.
    pub async fn open(name: &str, kinds: &[Kind]) -> anyhow::Result<Option<Self>> {
        Self::open_with(name, kinds, "", "").await
    }

    /// As [`Session::open`], with `service_lines` added to every service's table (`allow_users
    /// = [...]`, say) and `sections` (`[auth]`, say) after the services.
    pub async fn open_with(
        name: &str,
        kinds: &[Kind],
        service_lines: &str,
        sections: &str,
    ) -> anyhow::Result<Option<Self>> {
        let named: Vec<(&str, Kind)> = kinds.iter().map(|&kind| (kind.id(), kind)).collect();
        Self::open_named(name, &named, service_lines, sections).await
    }

    /// As [`Session::open_with`], with each app served under the given id: two apps of one
    /// framework side by side, say.
    pub async fn open_named(
        name: &str,
        apps_by_id: &[(&str, Kind)],
        service_lines: &str,
        sections: &str,
    ) -> anyhow::Result<Option<Self>> {
        let specs: Vec<AppSpec<'_>> = apps_by_id
            .iter()
            .map(|&(id, kind)| AppSpec::new(id, kind))
            .collect();
        Self::open_apps(name, &specs, service_lines, sections).await
    }

    /// As [`Session::open_named`], with each app's command adjusted by its [`AppSpec`]. The
    /// apps start in parallel.
    pub async fn open_apps(
        name: &str,
        specs: &[AppSpec<'_>],
        service_lines: &str,
        sections: &str,
    ) -> anyhow::Result<Option<Self>> {
        Self::open_apps_with_plugins(name, specs, service_lines, sections, &[]).await
    }

    /// As [`Session::open_apps`], with the `.wasm` files `plugins` in Portico's plugins
    /// directory (one named like a bundled plugin replaces it).
    pub async fn open_apps_with_plugins(
        name: &str,
        specs: &[AppSpec<'_>],
        service_lines: &str,
        sections: &str,
        plugins: &[&Path],
    ) -> anyhow::Result<Option<Self>> {
        let Some(tools) = tools_or_skip(name) else {
            return Ok(None);
        };
        let slot = BROWSER_SLOT.lock().await;
        let logs: Vec<String> = specs
            .iter()
            .map(|spec| format!("{name}-{}", spec.id))
            .collect();
        let apps = futures_util::future::try_join_all(
            specs
                .iter()
                .zip(&logs)
                .map(|(spec, log)| App::start(tools, spec, log)),
        )
        .await?;
        let mut body = String::new();
        for (spec, app) in specs.iter().zip(&apps) {
            body.push_str(&crate::proxy::service(
                spec.id,
                spec.kind.service_type(),
                ([127, 0, 0, 1], app.port).into(),
            ));
            body.push_str(service_lines);
        }
        body.push_str(sections);
        Self::connect(name, tools, apps, &body, plugins, slot)
            .await
            .map(Some)
    }

    /// A session for apps started elsewhere (in containers, say): Portico runs with `body` as
    /// its configuration (see [`Portico::start`]) and the browser opens on it.
    pub async fn open_with_config(name: &str, tools: &Tools, body: &str) -> anyhow::Result<Self> {
        let slot = BROWSER_SLOT.lock().await;
        Self::connect(name, tools, Vec::new(), body, &[], slot).await
    }

    /// Starts Portico with `body`, chromedriver and the browser, once the apps run.
    async fn connect(
        name: &str,
        tools: &Tools,
        apps: Vec<App>,
        body: &str,
        plugins: &[&Path],
        slot: tokio::sync::MutexGuard<'static, ()>,
    ) -> anyhow::Result<Self> {
        let portico = Portico::start_with_plugins(body, plugins).await?;
        let driver_port = free_port()?;
        let mut driver = Process::spawn(
            Command::new(&tools.chromedriver).arg(format!("--port={driver_port}")),
            artifacts_dir().join(format!("{name}-chromedriver.log")),
        )?;
        let driver_url = format!("http://127.0.0.1:{driver_port}");
        wait_ready(&mut driver, "chromedriver", &format!("{driver_url}/status")).await?;
        let browser = Browser::connect(&driver_url, &tools.chromium, portico.url("")).await?;
        Ok(Self {
            name: name.to_owned(),
            apps,
            portico,
            browser,
            driver,
            _slot: slot,
        })
    }

    /// Checks the network log after the scenario's `outcome`; on any failure saves a screenshot
    /// and the logs under `target/e2e-artifacts/` and returns the error.
    pub async fn finish(mut self, outcome: anyhow::Result<()>) -> anyhow::Result<()> {
        let network = self.browser.network_failures().await;
        let outcome = match (outcome, network) {
            (Ok(()), Ok(failures)) if failures.is_empty() => Ok(()),
            (Ok(()), Ok(failures)) => Err(anyhow::anyhow!(
                "requests to the app failed:\n  {}",
                failures.join("\n  ")
            )),
            (Err(error), _) => Err(error),
            (Ok(()), Err(error)) => Err(error.context("reading the browser's network log")),
        };
        if let Err(error) = &outcome {
            let saved = self.save_artifacts().await;
            let _ = self.driver.check_alive("chromedriver");
            let _ = self.browser.client.clone().close().await;
            return Err(anyhow::anyhow!(
                "{}: {error:#}\n{saved}",
                self.name,
                error = error
            ));
        }
        // The request list of a passing run is kept too: it shows what a framework fetches.
        let log = artifacts_dir().join(format!("{}-browser.log", self.name));
        let _ = std::fs::write(&log, self.browser.log_text().await);
        self.browser
            .client
            .clone()
            .close()
            .await
            .context("closing the browser")?;
        Ok(())
    }

    /// Saves `{name}-failed.png`, `{name}-failed-browser.log` and copies of the apps' logs;
    /// named apart from a passing run's logs so that a later run does not overwrite them.
    async fn save_artifacts(&mut self) -> String {
        let dir = artifacts_dir();
        if let Err(error) = std::fs::create_dir_all(&dir) {
            return format!("(cannot create {}: {error})", dir.display());
        }
        let mut note = format!("artifacts in {}:", dir.display());
        let screenshot = dir.join(format!("{}-failed.png", self.name));
        match self.browser.client.screenshot().await {
            Ok(png) if std::fs::write(&screenshot, &png).is_ok() => {
                let _ = write!(note, " {}", screenshot.display());
            }
            Ok(_) => note.push_str(" (screenshot not written)"),
            Err(error) => {
                let _ = write!(note, " (no screenshot: {error})");
            }
        }
        let log = dir.join(format!("{}-failed-browser.log", self.name));
        if std::fs::write(&log, self.browser.log_text().await).is_ok() {
            let _ = write!(note, " {}", log.display());
        }
        // Portico's counters show upstream errors, retries and open WebSockets at the failure.
        let metrics = dir.join(format!("{}-failed-metrics.txt", self.name));
        if let Ok(text) = self.portico.metrics().await
            && std::fs::write(&metrics, text).is_ok()
        {
            let _ = write!(note, " {}", metrics.display());
        }
        for app in &self.apps {
            let copy = dir.join(format!("{}-failed-{}.log", self.name, app.kind.id()));
            if std::fs::copy(&app.process.log, &copy).is_ok() {
                let _ = write!(note, " {}", copy.display());
            }
        }
        note
    }
}

/// `POST /session/{id}/se/log`: chromedriver's command for the logs asked for with
/// `goog:loggingPrefs` (WebDriver itself has none). Each call drains what was logged.
#[derive(Debug)]
struct GetLog(&'static str);

impl WebDriverCompatibleCommand for GetLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(json!({ "type": self.0 }).to_string()),
        )
    }
}

/// What the network log says about one request.
#[derive(Debug, Default, Clone)]
struct Exchange {
    method: String,
    url: String,
    status: Option<u64>,
    failure: Option<String>,
    websocket: bool,
}

/// A WebDriver session of headless Chromium, with its logs gathered as it goes.
#[derive(Debug)]
pub struct Browser {
    pub client: fantoccini::Client,
    /// `http://127.0.0.1:port` of Portico.
    pub origin: String,
    /// Requests by (tab, request id), in the order first seen.
    exchanges: BTreeMap<(String, String), (usize, Exchange)>,
    console: Vec<String>,
}

impl Browser {
    async fn connect(driver_url: &str, chromium: &Path, origin: String) -> anyhow::Result<Self> {
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                // --no-sandbox: CI runs as root; /dev/shm is small in containers.
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--window-size=1280,1024", "--no-first-run", "--disable-gpu"],
            },
            "goog:loggingPrefs": { "performance": "ALL", "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let client = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(capabilities)
        .connect(driver_url)
        .await
        .context("starting a Chromium session through chromedriver")?;
        Ok(Self {
            client,
            origin: origin.trim_end_matches('/').to_owned(),
            exchanges: BTreeMap::new(),
            console: Vec::new(),
        })
    }

    /// Opens `path` on Portico.
    pub async fn goto(&self, path: &str) -> anyhow::Result<()> {
        self.client
            .goto(&format!("{}{path}", self.origin))
            .await
            .with_context(|| format!("opening {path}"))
    }

    /// The current page's path and query on Portico.
    pub async fn path(&self) -> anyhow::Result<String> {
        let url = self.client.current_url().await?;
        Ok(match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        })
    }

    /// Runs `script` (a function body; `arguments` holds `args`) until it returns something
    /// other than `null`, `false` or `""`, and returns that. Errors while a page loads are
    /// retried.
    pub async fn wait_for(
        &self,
        what: &str,
        script: &str,
        args: Vec<Value>,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + CONDITION;
        loop {
            let last = match self.client.execute(script, args.clone()).await {
                Ok(Value::Null | Value::Bool(false)) => "a falsy value".to_owned(),
                Ok(Value::String(text)) if text.is_empty() => "\"\"".to_owned(),
                Ok(value) => return Ok(value),
                Err(error) => error.to_string(),
            };
            if tokio::time::Instant::now() > deadline {
                bail!("gave up waiting for {what} after {CONDITION:?} (last: {last})");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the element `css` exists and its text contains `needle`.
    pub async fn wait_text(&self, css: &str, needle: &str) -> anyhow::Result<()> {
        self.wait_for(
            &format!("{css:?} to show {needle:?}"),
            "const el = document.querySelector(arguments[0]);
             return !!el && el.innerText.includes(arguments[1]);",
            vec![json!(css), json!(needle)],
        )
        .await
        .map(drop)
    }

    /// Waits until the page's path (and query) is `expected`.
    pub async fn wait_path(&self, expected: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + CONDITION;
        loop {
            let path = self.path().await?;
            if path == expected {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the page stayed at {path}, expected {expected}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The element `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
        self.wait_for(
            &format!("{css:?} to appear"),
            "return !!document.querySelector(arguments[0]);",
            vec![json!(css)],
        )
        .await?;
        self.client
            .find(fantoccini::Locator::Css(css))
            .await
            .with_context(|| format!("finding {css:?}"))
    }

    /// Clicks the element `css` (a real WebDriver click, as a user would).
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.find(css)
            .await?
            .click()
            .await
            .with_context(|| format!("clicking {css:?}"))
    }

    /// Types `text` into the element `css`.
    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        self.find(css)
            .await?
            .send_keys(text)
            .await
            .with_context(|| format!("typing into {css:?}"))
    }

    /// `fetch(path)` from the current page, as the page's own scripts would; returns the status
    /// and the body text.
    pub async fn fetch(&self, path: &str) -> anyhow::Result<(u64, String)> {
        let value = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 fetch(arguments[0]).then(async r => done([r.status, await r.text()]),
                                          e => done([0, String(e)]));",
                vec![json!(path)],
            )
            .await
            .with_context(|| format!("fetching {path} from the page"))?;
        let status = value[0].as_u64().unwrap_or(0);
        let body = value[1].as_str().unwrap_or_default().to_owned();
        Ok((status, body))
    }

    /// Drains chromedriver's logs into this value.
    async fn collect_logs(&mut self) -> anyhow::Result<()> {
        let console = self.client.issue_cmd(GetLog("browser")).await?;
        for entry in console.as_array().into_iter().flatten() {
            self.console.push(format!(
                "{} {}",
                entry["level"].as_str().unwrap_or("?"),
                entry["message"].as_str().unwrap_or("?")
            ));
        }
        let performance = self.client.issue_cmd(GetLog("performance")).await?;
        for entry in performance.as_array().into_iter().flatten() {
            let Some(text) = entry["message"].as_str() else {
                continue;
            };
            let Ok(message) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            self.record(&message);
        }
        Ok(())
    }

    /// Folds one DevTools network event into the exchanges.
    fn record(&mut self, message: &Value) {
        let tab = message["webview"].as_str().unwrap_or_default().to_owned();
        let event = &message["message"];
        let params = &event["params"];
        let Some(id) = params["requestId"].as_str() else {
            return;
        };
        let next = self.exchanges.len();
        let (_, exchange) = self
            .exchanges
            .entry((tab, id.to_owned()))
            .or_insert_with(|| (next, Exchange::default()));
        match event["method"].as_str().unwrap_or_default() {
            "Network.requestWillBeSent" => {
                exchange.method = params["request"]["method"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                exchange.url = params["request"]["url"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
            }
            "Network.responseReceived" => {
                exchange.status = params["response"]["status"].as_u64();
                if exchange.url.is_empty() {
                    exchange.url = params["response"]["url"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                }
            }
            // A response that arrived and that the page then closed itself is the page's
            // choice, not a failure: Gradio aborts its event stream when the server says
            // `close_stream`, racing the end of the body.
            "Network.loadingFailed"
                if params["canceled"].as_bool() == Some(true)
                    && exchange.status.is_some_and(|status| status < 400) => {}
            "Network.loadingFailed" => {
                let mut failure = params["errorText"].as_str().unwrap_or("failed").to_owned();
                if let Some(reason) = params["blockedReason"].as_str() {
                    let _ = write!(failure, " (blocked: {reason})");
                }
                exchange.failure = Some(failure);
            }
            "Network.webSocketCreated" => {
                exchange.websocket = true;
                exchange.method = "WS".to_owned();
                exchange.url = params["url"].as_str().unwrap_or_default().to_owned();
            }
            "Network.webSocketHandshakeResponseReceived" => {
                exchange.status = params["response"]["status"].as_u64();
            }
            "Network.webSocketFrameError" => {
                exchange.failure = Some(
                    params["errorMessage"]
                        .as_str()
                        .unwrap_or("frame error")
                        .to_owned(),
                );
            }
            _ => {}
        }
    }

    fn exchanges(&self) -> Vec<&Exchange> {
        let mut all: Vec<_> = self.exchanges.values().collect();
        all.sort_by_key(|(order, _)| *order);
        all.into_iter().map(|(_, exchange)| exchange).collect()
    }

    /// The requests to Portico that failed: a 4xx or 5xx, a load that failed, a WebSocket
    /// handshake that did not switch protocols.
    async fn network_failures(&mut self) -> anyhow::Result<Vec<String>> {
        self.collect_logs().await?;
        let ws_origin = self.origin.replacen("http://", "ws://", 1);
        // Chromium asks the origin for `/favicon.ico` by itself when a document (a JSON
        // response, say) names no icon: that is the browser's probe, not the app's resource.
        let favicon_probe = format!("{}/favicon.ico", self.origin);
        let ours: Vec<&Exchange> = self
            .exchanges()
            .into_iter()
            .filter(|exchange| {
                exchange.url.starts_with(&self.origin) || exchange.url.starts_with(&ws_origin)
            })
            .filter(|exchange| exchange.url != favicon_probe)
            .collect();
        // An empty log means the logging broke, not that nothing failed.
        if ours.is_empty() {
            bail!("the browser's network log shows no request to Portico at all");
        }
        Ok(ours
            .into_iter()
            .filter(|exchange| {
                // Chromium logs a fetch answered `204 No Content` without `Content-Length`
                // (Tornado's, Jupyter's workspace saves) as `net::ERR_ABORTED`, though the page
                // received the 204: the same happens without Portico in between.
                let no_content_aborted = exchange.status == Some(204)
                    && exchange.failure.as_deref() == Some("net::ERR_ABORTED");
                (exchange.failure.is_some() && !no_content_aborted)
                    || exchange.status.is_some_and(|status| status >= 400)
                    || (exchange.websocket && exchange.status.is_some_and(|status| status != 101))
            })
            .map(describe)
            .collect())
    }

    /// Every request seen and the console, for the artifacts.
    async fn log_text(&mut self) -> String {
        let mut text = String::new();
        if let Err(error) = self.collect_logs().await {
            let _ = writeln!(text, "(could not read the logs: {error:#})");
        }
        text.push_str("== network ==\n");
        for exchange in self.exchanges() {
            if exchange.url.is_empty() {
                continue;
            }
            let _ = writeln!(text, "{}", describe(exchange));
        }
        text.push_str("== console ==\n");
        for line in &self.console {
            let _ = writeln!(text, "{line}");
        }
        text
    }

    /// The browser console's errors so far (`SEVERE` entries: `console.error`, uncaught
    /// exceptions, resources that failed to load).
    pub async fn console_errors(&mut self) -> anyhow::Result<Vec<String>> {
        self.collect_logs().await?;
        Ok(self
            .console
            .iter()
            .filter(|line| line.starts_with("SEVERE "))
            .cloned()
            .collect())
    }

    /// The requests to Portico seen so far (WebSockets included) whose path is under none of
    /// `prefixes` (`/proxy/{id}/`): what escaped the apps' prefixes.
    pub async fn requests_outside(&mut self, prefixes: &[&str]) -> anyhow::Result<Vec<String>> {
        let origin = self.origin.clone();
        let ws_origin = origin.replacen("http://", "ws://", 1);
        let favicon_probe = format!("{origin}/favicon.ico");
        Ok(self
            .requested_urls()
            .await?
            .into_iter()
            .filter(|url| url != &favicon_probe)
            .filter_map(|url| {
                let path = url
                    .strip_prefix(&origin)
                    .or_else(|| url.strip_prefix(&ws_origin))?
                    .to_owned();
                (!prefixes.iter().any(|prefix| path.starts_with(prefix))).then_some(url)
            })
            .collect())
    }

    /// The URLs of the requests seen so far (drains the logs first).
    pub async fn requested_urls(&mut self) -> anyhow::Result<Vec<String>> {
        self.collect_logs().await?;
        Ok(self
            .exchanges()
            .into_iter()
            .map(|exchange| exchange.url.clone())
            .collect())
    }
}

fn describe(exchange: &Exchange) -> String {
    format!(
        "{} {} -> {}{}",
        exchange.method,
        exchange.url,
        exchange
            .status
            .map_or_else(|| "no response".to_owned(), |status| status.to_string()),
        exchange
            .failure
            .as_ref()
            .map(|failure| format!(" FAILED: {failure}"))
            .unwrap_or_default()
    )
}

/// The Streamlit scenario on the app of `tests/apps/streamlit` served under `prefix`
/// (`/proxy/{id}/`): the title renders, a text input and a button rerun the script, and a file
/// upload reaches it.
pub async fn streamlit_scenario(browser: &Browser, prefix: &str) -> anyhow::Result<()> {
    browser.goto(prefix).await?;
    // The title is sent by the script over the WebSocket: rendering it proves the connection.
    browser.wait_text("h1", "Portico Streamlit test").await?;

    let enter = char::from(fantoccini::key::Key::Enter);
    browser
        .type_into("input[aria-label='Your name']", &format!("Portico{enter}"))
        .await?;
    browser.click("[data-testid='stButton'] button").await?;
    browser.wait_text("body", "Hello, Portico!").await?;

    // The upload is a PUT with Streamlit's XSRF token, then a rerun that reads the file.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("upload.txt");
    std::fs::write(&file, "x".repeat(1234))?;
    let path = file
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("a UTF-8 temp path"))?;
    browser
        .find("input[type='file']")
        .await?
        .send_keys(path)
        .await?;
    browser
        .wait_text("body", "Received upload.txt: 1234 bytes")
        .await?;
    Ok(())
}
