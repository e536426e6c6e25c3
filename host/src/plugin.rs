//! Framework plugins: WebAssembly components that tell the proxy how to serve each framework.
//!
//! [`Runtime`] holds the engine; a [`Plugin`] is one loaded component with its pool of
//! instances; the [`PluginRegistry`] maps names and service types to plugins and follows the
//! plugins directory. Every answer a plugin gives passes [`guard`] before the proxy sees it,
//! and [`fallback`] is the generic behaviour used when a plugin fails.

mod bindings;
mod bundled;
pub mod fallback;
pub mod guard;
mod health;
mod log;
mod registry;
mod runtime;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use bindings::VERSION as CONTRACT_VERSION;
pub use bindings::{
    BodyRewrite, ChunkRewrite, Header, HeaderEdits, OrphanRequest, PluginInfo, Request, Response,
    ResponsePlan, Service, Subprotocols, UpstreamRequest, UpstreamWebsocket,
};
pub use bundled::bundled;
pub use health::{Policy as QuarantinePolicy, State as PluginState};
pub use registry::{
    DirWatch, IsolationPolicy, PluginRegistry, PluginSource, check, load_for_trial,
};
pub use runtime::{Runtime, RuntimeConfig};

use bindings::WorldPre;
use health::{Admit, Health, Outcome};
use log::PluginLog;
use runtime::{HostState, Instance};

/// How a plugin's instances are shared between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Instances are kept in a bounded pool and reused: fast, for trusted plugins.
    #[default]
    Pooled,
    /// Every call gets a fresh instance, so nothing a call leaves behind is seen by another.
    PerCall,
}

/// What went wrong with a plugin.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error("the plugin runtime could not start: {0}")]
    Engine(String),
    #[error("not a valid Portico plugin: {0}")]
    Invalid(String),
    #[error("the plugin trapped: {0}")]
    Trap(String),
    #[error("the plugin ran past its {0:?} deadline")]
    Timeout(Duration),
    #[error("the plugin ran out of memory")]
    OutOfMemory,
    #[error("the plugin returned an invalid answer: {0}")]
    Refused(#[from] guard::GuardError),
    #[error("the plugin is quarantined after repeated failures")]
    Quarantined,
    /// The plugin already has its share of calls running: this one gets the generic behaviour
    /// at once. Not a failure of the plugin.
    #[error("the plugin has too many calls running")]
    Busy,
    /// The answer was refused, but it only repeats what the client sent (its path or query):
    /// the request is at fault, not the plugin, and the failure is not counted.
    #[error("the request cannot be forwarded: {0}")]
    ClientInput(guard::GuardError),
}

impl PluginError {
    fn engine(err: wasmtime::Error) -> Self {
        Self::Engine(format!("{err:#}"))
    }

    fn invalid(err: wasmtime::Error) -> Self {
        Self::Invalid(format!("{err:#}"))
    }

    fn from_call(err: wasmtime::Error) -> Self {
        match err.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => Self::Timeout(Duration::ZERO),
            _ if format!("{err:#}").contains("memory") => Self::OutOfMemory,
            _ => Self::Trap(format!("{err:#}")),
        }
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Engine(_) => "engine",
            Self::Invalid(_) => "invalid",
            Self::Trap(_) => "trap",
            Self::Timeout(_) => "timeout",
            Self::OutOfMemory => "memory",
            Self::Refused(_) => "refused",
            Self::Quarantined => "quarantined",
            Self::Busy => "busy",
            Self::ClientInput(_) => "client-input",
        }
    }

    /// The kinds of failure counted against a plugin, for metrics.
    pub const FAILURE_KINDS: [&'static str; 5] =
        ["trap", "timeout", "memory", "refused", "invalid"];

    fn failure_index(&self) -> usize {
        match self {
            Self::Trap(_) | Self::Engine(_) => 0,
            Self::Timeout(_) => 1,
            Self::OutOfMemory => 2,
            Self::Refused(_) => 3,
            Self::Invalid(_) | Self::Quarantined | Self::Busy | Self::ClientInput(_) => 4,
        }
    }
}

/// The hooks of the contract, for per-hook accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    OnRequest,
    OnWebsocket,
    Claim,
    OnResponse,
    RewriteBody,
    RewriteChunk,
}

impl Hook {
    pub const ALL: [Self; 6] = [
        Self::OnRequest,
        Self::OnWebsocket,
        Self::Claim,
        Self::OnResponse,
        Self::RewriteBody,
        Self::RewriteChunk,
    ];

    /// The hook's name in the WIT contract.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnRequest => "on-request",
            Self::OnWebsocket => "on-websocket",
            Self::Claim => "claim",
            Self::OnResponse => "on-response",
            Self::RewriteBody => "rewrite-body",
            Self::RewriteChunk => "rewrite-chunk",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A refused `on-request`/`on-websocket` answer is the client's fault when its path and query
/// are the client's own (below or with the prefix): the plugin passed the request through
/// unchanged and the request itself cannot be forwarded.
fn blame(req: &Request, path: &str, query: Option<&str>, err: guard::GuardError) -> PluginError {
    let echoed_path = path == req.path
        || path
            .strip_prefix(req.prefix.as_str())
            .is_some_and(|rest| rest == req.path);
    if echoed_path && query == req.query.as_deref() && guard::target(path, query).is_err() {
        PluginError::ClientInput(err)
    } else {
        PluginError::Refused(err)
    }
}

/// Counters of one plugin's calls.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Calls made.
    pub calls: AtomicU64,
    /// Calls that failed (trap, timeout, memory, refused answer).
    pub failures: AtomicU64,
    /// Time spent in calls, in nanoseconds.
    pub nanos: AtomicU64,
    /// Instances created because the pool was empty or an instance was replaced.
    pub instantiations: AtomicU64,
    /// Calls not made because the plugin had its share of calls running.
    pub busy: AtomicU64,
    /// Calls not made because the plugin was quarantined.
    pub quarantined: AtomicU64,
    /// The same, per hook (indexed like [`Hook::ALL`]).
    pub hooks: [HookStats; Hook::ALL.len()],
}

/// Counters of one hook of one plugin.
#[derive(Debug, Default)]
pub struct HookStats {
    pub calls: AtomicU64,
    pub nanos: AtomicU64,
    /// Failures by kind (indexed like [`PluginError::FAILURE_KINDS`]).
    pub failures: [AtomicU64; PluginError::FAILURE_KINDS.len()],
}

/// A loaded plugin: its info, its linked component and its instances.
pub struct Plugin {
    info: PluginInfo,
    source: PluginSource,
    runtime: Arc<Runtime>,
    pre: WorldPre<HostState>,
    isolation: Isolation,
    idle: Mutex<Vec<Instance>>,
    log: Arc<PluginLog>,
    health: Health,
    /// Calls running now, for the fair share.
    in_flight: AtomicUsize,
    stats: PluginStats,
    /// The plugin itself, for the task that replaces a failed instance.
    me: std::sync::Weak<Plugin>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .field("source", &self.source)
            .field("isolation", &self.isolation)
            .finish_non_exhaustive()
    }
}

/// Defines a hook method: check out an instance, call, guard the answer, account for it.
macro_rules! hook {
    ($(#[$doc:meta])* $name:ident, $hook:expr, $call:ident, ($($arg:ident: $ty:ty),*) $([$($extra:ident: $extra_ty:ty),*])? -> $out:ty, $check:expr) => {
        $(#[$doc])*
        pub async fn $name(&self, $($arg: $ty),* $($(, $extra: $extra_ty)*)?) -> Result<$out, PluginError> {
            let mut ticket = self.admit()?;
            let mut instance = self.checkout().await?;
            let started = Instant::now();
            let config = self.runtime.config();
            instance.arm(started, config.timeout($hook), config.grace($hook));
            let result = instance.world.$call(&mut instance.store, $($arg),*).await;
            let result = result.map_err(|err| self.call_error(err, $hook)).and_then(|answer| {
                let check = $check;
                check(&answer)?;
                Ok(answer)
            });
            self.finish(&mut ticket, instance, started, $hook, result)
        }
    };
}

impl Plugin {
    /// Instantiates a component, asks for its info and fills the pool.
    pub(crate) async fn load(
        runtime: &Arc<Runtime>,
        wasm: &[u8],
        source: PluginSource,
        isolation: Isolation,
    ) -> Result<Arc<Self>, PluginError> {
        let component = runtime.compile(wasm)?;
        let pre = runtime.prepare(&component)?;
        let label = match &source {
            PluginSource::Bundled => "bundled plugin".to_owned(),
            PluginSource::File(path) => path.display().to_string(),
        };
        let log = PluginLog::new(&label);
        let mut instance = runtime.instantiate(&pre, &log).await?;
        let info = instance.info(runtime.config().call_timeout).await?;
        guard::info(&info)?;
        let plugin = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            log: PluginLog::new(&info.name),
            info,
            source,
            runtime: Arc::clone(runtime),
            pre,
            isolation,
            idle: Mutex::new(Vec::new()),
            health: Health::new(runtime.config().quarantine),
            in_flight: AtomicUsize::new(0),
            stats: PluginStats::default(),
        });
        if isolation == Isolation::Pooled {
            let mut instance = instance;
            if plugin.warm_up_request(&mut instance).await.is_err() {
                instance = plugin.warm_instance().await?;
            }
            let mut warm = vec![instance];
            for _ in 1..runtime.config().pool_size {
                warm.push(plugin.pooled_instance().await?);
            }
            plugin.idle_instances().extend(warm);
        }
        Ok(plugin)
    }

    /// What the plugin says about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// Where the plugin was loaded from.
    pub fn source(&self) -> &PluginSource {
        &self.source
    }

    /// How instances are shared.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// Call counters.
    pub fn stats(&self) -> &PluginStats {
        &self.stats
    }

    /// Whether calls go to the plugin, or it is quarantined after failing too often.
    pub fn state(&self) -> PluginState {
        self.health.state()
    }

    /// Quarantines so far.
    pub fn quarantines(&self) -> u64 {
        self.health.quarantines()
    }

    /// True when the plugin wants to read request header `name` (lower case).
    pub fn wants_request_header(&self, name: &str) -> bool {
        listed(&self.info.request_headers, name)
    }

    /// True when response header `name` (lower case) should trigger `on-response`.
    pub fn wants_response_header(&self, name: &str) -> bool {
        listed(&self.info.response_headers, name)
    }

    /// True when the plugin may rewrite bodies of `media_type` (lower case, no parameters).
    pub fn rewrites(&self, media_type: &str) -> bool {
        self.info
            .rewrite_content_types
            .iter()
            .any(|t| t == media_type)
    }

    hook!(
        /// The `on-request` hook: where and how an HTTP request goes upstream.
        on_request, Hook::OnRequest, call_on_request, (req: &Request) -> UpstreamRequest,
        |plan: &UpstreamRequest| {
            guard::upstream_request(plan)
                .map_err(|err| blame(req, &plan.path, plan.query.as_deref(), err))
        }
    );

    hook!(
        /// The `on-websocket` hook: where and how a WebSocket is opened upstream.
        on_websocket, Hook::OnWebsocket, call_on_websocket,
        (req: &Request, protocols: &[String]) -> UpstreamWebsocket,
        |plan: &UpstreamWebsocket| {
            guard::upstream_websocket(plan)
                .map_err(|err| blame(req, &plan.path, plan.query.as_deref(), err))
        }
    );

    hook!(
        /// The `claim` hook: how sure the plugin is that an un-prefixed path is its own.
        claim, Hook::Claim, call_claim, (req: &OrphanRequest) -> u32,
        |_: &u32| Ok::<(), PluginError>(())
    );

    hook!(
        /// The `on-response` hook: response header edits and whether to rewrite the body.
        on_response, Hook::OnResponse, call_on_response, (resp: &Response) -> ResponsePlan,
        |plan: &ResponsePlan| guard::response_plan(plan).map_err(PluginError::Refused)
    );

    hook!(
        /// The `rewrite-body` hook: the new body, or `None` to keep it. A new body longer than
        /// `limit` is refused.
        rewrite_body, Hook::RewriteBody, call_rewrite_body,
        (resp: &Response, body: &[u8]) [limit: usize] -> Option<Vec<u8>>,
        |new: &Option<Vec<u8>>| {
            new.as_deref()
                .map_or(Ok(()), |new| guard::body(new, limit))
                .map_err(PluginError::Refused)
        }
    );

    hook!(
        /// The `rewrite-chunk` hook: one step of a streamed body rewrite.
        rewrite_chunk, Hook::RewriteChunk, call_rewrite_chunk,
        (resp: &Response, chunk: &[u8], state: &[u8], last: bool) -> ChunkRewrite,
        |answer: &ChunkRewrite| guard::chunk(answer, chunk.len()).map_err(PluginError::Refused)
    );

    fn idle_instances(&self) -> std::sync::MutexGuard<'_, Vec<Instance>> {
        // A panic while holding the lock cannot leave the Vec inconsistent.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lets a call through, unless the plugin already runs its share of calls or is
    /// quarantined.
    fn admit(&self) -> Result<Ticket<'_>, PluginError> {
        let running = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let mut ticket = Ticket {
            plugin: self,
            admit: Admit::Refuse,
        };
        if running >= self.runtime.config().max_calls_in_flight {
            self.stats.busy.fetch_add(1, Ordering::Relaxed);
            return Err(PluginError::Busy);
        }
        ticket.admit = self.health.admit(Instant::now());
        match ticket.admit {
            Admit::Refuse => {
                self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
                Err(PluginError::Quarantined)
            }
            Admit::Probe => {
                tracing::info!(plugin = %self.info.name, "quarantine over: probing the plugin with a real call");
                Ok(ticket)
            }
            Admit::Call => Ok(ticket),
        }
    }

    /// Instantiates a pooled instance in the background in place of one that failed, so that
    /// the next call finds a warm one: a fresh instance of a plugin written in Python (a
    /// whole interpreter image) costs milliseconds, a call on a warm one microseconds.
    fn replace_instance(&self) {
        if self.isolation != Isolation::Pooled {
            return;
        }
        let (Some(plugin), Ok(runtime)) =
            (self.me.upgrade(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            if plugin.idle_instances().len() >= plugin.runtime.config().pool_size {
                return;
            }
            plugin.stats.instantiations.fetch_add(1, Ordering::Relaxed);
            if let Ok(instance) = plugin.pooled_instance().await {
                let mut idle = plugin.idle_instances();
                if idle.len() < plugin.runtime.config().pool_size {
                    idle.push(instance);
                }
            }
        });
    }

    /// A new instance, warmed by an `info` call with the start-up grace: the first call into an
    /// instance runs start-up work (a Python interpreter's, about 2 ms), which the hook that
    /// serves a request then does not do under its own, shorter grace.
    async fn warm_instance(&self) -> Result<Instance, PluginError> {
        let mut instance = self.runtime.instantiate(&self.pre, &self.log).await?;
        instance.info(self.runtime.config().call_timeout).await?;
        Ok(instance)
    }

    /// A pooled instance, warmed also by an `on-request` call with a made-up request: what a
    /// plugin sets up lazily on its hot path (a Python module compiling its patterns on first
    /// use) is then done before the instance serves, not in a request. A plugin
    /// that fails the made-up request gets an instance warmed by `info` only.
    async fn pooled_instance(&self) -> Result<Instance, PluginError> {
        let mut instance = self.warm_instance().await?;
        match self.warm_up_request(&mut instance).await {
            Ok(()) => Ok(instance),
            Err(_) => self.warm_instance().await,
        }
    }

    async fn warm_up_request(&self, instance: &mut Instance) -> Result<(), PluginError> {
        let service_type = self
            .info
            .service_types
            .first()
            .cloned()
            .unwrap_or_else(|| "generic".to_owned());
        let request = Request {
            method: "GET".to_owned(),
            path: "/".to_owned(),
            query: None,
            prefix: "/proxy/portico-warm-up".to_owned(),
            public_host: "localhost".to_owned(),
            scheme: "http".to_owned(),
            headers: Vec::new(),
            service: Service {
                id: "portico-warm-up".to_owned(),
                service_type,
                labels: Vec::new(),
                upstream: "http://127.0.0.1:9".to_owned(),
            },
        };
        // The hook's own one-tick grace, so that a plugin that spins in `on-request` is
        // throttled here too; the rewrite deadline, so that slow set-up still completes. No
        // request waits for it: it runs at load and for background replacements.
        let config = self.runtime.config();
        instance.arm(
            Instant::now(),
            config.rewrite_timeout,
            config.grace(Hook::OnRequest),
        );
        instance
            .world
            .call_on_request(&mut instance.store, &request)
            .await
            .map_err(PluginError::from_call)?;
        Ok(())
    }

    async fn checkout(&self) -> Result<Instance, PluginError> {
        if self.isolation == Isolation::Pooled
            && let Some(instance) = self.idle_instances().pop()
        {
            return Ok(instance);
        }
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        self.warm_instance().await
    }

    fn call_error(&self, err: wasmtime::Error, hook: Hook) -> PluginError {
        match PluginError::from_call(err) {
            PluginError::Timeout(_) => PluginError::Timeout(self.runtime.config().timeout(hook)),
            other => other,
        }
    }

    /// Accounts for a call, returns a healthy pooled instance to the pool and drops any other.
    fn finish<T>(
        &self,
        ticket: &mut Ticket<'_>,
        instance: Instance,
        started: Instant,
        hook: Hook,
        result: Result<T, PluginError>,
    ) -> Result<T, PluginError> {
        let now = Instant::now();
        let elapsed = u64::try_from(now.duration_since(started).as_nanos()).unwrap_or(u64::MAX);
        let stats = &self.stats.hooks[hook.index()];
        for (total, per_hook, add) in [
            (&self.stats.calls, &stats.calls, 1),
            (&self.stats.nanos, &stats.nanos, elapsed),
        ] {
            total.fetch_add(add, Ordering::Relaxed);
            per_hook.fetch_add(add, Ordering::Relaxed);
        }
        let admit = std::mem::replace(&mut ticket.admit, Admit::Refuse);
        match &result {
            // The instance did its work: the client's request is what cannot go on.
            Ok(_) | Err(PluginError::ClientInput(_)) => {
                if self.health.succeeded(admit, now) {
                    tracing::info!(plugin = %self.info.name, hook = hook.as_str(), "plugin back in service: the probe succeeded");
                }
                if self.isolation == Isolation::Pooled {
                    let mut idle = self.idle_instances();
                    if idle.len() < self.runtime.config().pool_size {
                        idle.push(instance);
                    }
                }
            }
            Err(err) => {
                // The instance may be in any state after a failure: it is dropped (its memory
                // goes back to the OS), and a fresh one takes its place on the next checkout.
                drop(instance);
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                stats.failures[err.failure_index()].fetch_add(1, Ordering::Relaxed);
                tracing::warn!(plugin = %self.info.name, hook = hook.as_str(), error = %err, "plugin call failed; using the generic behaviour");
                let quarantined = self.health.failed(admit, now);
                if matches!(quarantined, Outcome::Counted) {
                    self.replace_instance();
                }
                if let Outcome::Quarantined(period) = quarantined {
                    tracing::error!(
                        plugin = %self.info.name,
                        hook = hook.as_str(),
                        error = %err,
                        seconds = period.as_secs_f64(),
                        "plugin quarantined after repeated failures: its services get the generic behaviour (502 when fail-closed) until a probe succeeds"
                    );
                    self.idle_instances().clear();
                }
            }
        }
        result
    }
}

/// One call let through by [`Plugin::admit`]: counted in flight until dropped; a probe that
/// never reached [`Plugin::finish`] lets the next call probe.
struct Ticket<'a> {
    plugin: &'a Plugin,
    admit: Admit,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.plugin.health.abandoned(self.admit);
        self.plugin.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn listed(list: &[String], name: &str) -> bool {
    list.iter().any(|item| item == "*" || item == name)
}
