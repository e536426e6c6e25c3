//! The wasmtime runtime shared by all plugins: one engine and linker, compiled-code caching,
//! the sandbox each instance runs in, and the epoch clock that bounds every call.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::PluginError;
use super::bindings::{PACKAGE, PluginInfo, VERSION, World, WorldPre};
use super::log::PluginLog;

/// How often the epoch clock ticks; a call's deadline is checked on each tick.
const TICK: Duration = Duration::from_millis(1);

/// How long a call that has run a whole tick waits at each later tick, so that it runs at most
/// a twentieth of the time. With it, a healthy service kept 94-97 % of its throughput while
/// four clients drove a plugin that spins to its deadline (`cargo bench --bench proxy --
/// fair-share`); with a 2 ms tick and 8 or 18 ms pauses, 63-77 %.
const THROTTLE: Duration = Duration::from_millis(19);

/// How long a body rewrite call runs before [`THROTTLE`] applies. Reading and writing a page is
/// real work: a bundled plugin's `rewrite-chunk` of 128 KiB takes about 2 ms, which throttled
/// from the first tick would take 40 ms and a page of a few megabytes seconds. A runaway
/// rewrite holds a worker this long per call at most, and the fair share bounds how many such
/// calls run at once.
const REWRITE_GRACE: Duration = Duration::from_millis(20);

/// The same for starting an instance, and for the `info` call that warms it before it
/// serves. A plugin written in Python runs its interpreter's start-up there (1-3 ms
/// at instantiation, about 2 ms in the first call, which refreshes the environment and reseeds
/// `random`): throttled from the first tick, that took 27-52 ms and ran past a 50 ms deadline.
/// Calls that serve requests never get it: a plugin that fails every call, each time on a new
/// instance, would otherwise spin this long unthrottled on each.
const START_GRACE: Duration = Duration::from_millis(10);

/// Limits and policies for running plugins.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The longest one call of a hook that answers about headers and paths may run before it
    /// is stopped.
    pub call_timeout: Duration,
    /// The same for `rewrite-body`, which reads a whole page, and `rewrite-chunk`.
    pub rewrite_timeout: Duration,
    /// The most linear memory one plugin instance may use, in bytes.
    pub memory_limit: usize,
    /// Idle instances kept per pooled plugin (and created at load).
    pub pool_size: usize,
    /// When a failing plugin is quarantined, and for how long.
    pub quarantine: super::QuarantinePolicy,
    /// Calls of one plugin that may run at once; more get the generic behaviour at once.
    pub max_calls_in_flight: usize,
    /// The most linear memory all plugin instances together may use, in bytes.
    pub total_memory: usize,
    /// Where compiled plugins are cached; `None` compiles at every start.
    pub cache_dir: Option<PathBuf>,
}

impl RuntimeConfig {
    /// The deadline of one call of `hook`.
    pub fn timeout(&self, hook: super::Hook) -> Duration {
        match hook {
            super::Hook::RewriteBody | super::Hook::RewriteChunk => self.rewrite_timeout,
            _ => self.call_timeout,
        }
    }

    /// How long one call of `hook` runs before it is throttled.
    pub fn grace(&self, hook: super::Hook) -> Duration {
        match hook {
            super::Hook::RewriteBody | super::Hook::RewriteChunk => REWRITE_GRACE,
            _ => TICK,
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            // The bundled plugins answer a header hook in 1-2 us (`cargo bench --bench
            // plugin_calls`). The deadline is wall time: 50 ms leaves room for a call that the
            // OS preempted past one tick, and that is then paused `THROTTLE`, to still finish,
            // while a plugin that spins holds a request up no longer than a slow upstream would.
            // `rewrite-body` reads and writes a whole page, up to `max_rewrite_bytes`.
            call_timeout: Duration::from_millis(50),
            rewrite_timeout: Duration::from_millis(250),
            memory_limit: 64 * 1024 * 1024,
            pool_size: threads * 2,
            quarantine: super::QuarantinePolicy::default(),
            max_calls_in_flight: threads,
            total_memory: 1024 * 1024 * 1024,
            cache_dir: default_cache_dir(),
        }
    }
}

/// `$XDG_CACHE_HOME/portico` or `~/.cache/portico`.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("portico").join("plugins"))
}

/// The per-instance state: an empty WASI context and the limits.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limits,
    /// The ticks the running call has been seen running through: one each time the epoch
    /// callback fires. A call that the OS preempted, or that waited in the executor's queue,
    /// sees at most one tick for the whole pause, so a short call on a loaded machine is not
    /// taken for a spinning one, as it would be by its wall time.
    ticks: u32,
    /// How long the running call may run before it is throttled.
    grace: Duration,
    /// When the running call must stop.
    pub(crate) deadline: Instant,
}

/// The linear memory all instances together hold, against `[plugins] total_memory_mb`.
#[derive(Debug)]
struct MemoryBudget {
    total: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    /// Takes `bytes` from the budget, or nothing when they are not left.
    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|after| *after <= self.total)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// One instance's limits: its own memory cap, its share of the total budget (given back when
/// the instance is dropped), and small caps on instances, tables and memories.
#[derive(Debug)]
struct Limits {
    memory_limit: usize,
    budget: Arc<MemoryBudget>,
    /// Bytes of linear memory this instance holds from the budget.
    held: usize,
}

/// The message of a refused memory growth: [`PluginError::from_call`] reads it as running out
/// of memory.
fn refused_growth(desired: usize, why: &str) -> wasmtime::Error {
    wasmtime::Error::msg(format!(
        "plugin memory cannot grow to {desired} bytes: {why}"
    ))
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            return Err(refused_growth(desired, "over the instance's memory limit"));
        }
        let more = desired.saturating_sub(current);
        if !self.budget.take(more) {
            return Err(refused_growth(
                desired,
                "plugins.total_memory_mb is used up",
            ));
        }
        self.held += more;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        16
    }

    fn tables(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        4
    }
}

impl Drop for Limits {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}

/// The largest table an instance may grow (function tables of ordinary plugins hold a few
/// hundred entries).
const MAX_TABLE_ELEMENTS: usize = 1 << 16;

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// One live plugin instance: its store and its exports.
pub(crate) struct Instance {
    pub(crate) store: Store<HostState>,
    pub(crate) world: World,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Instance")
    }
}

impl Instance {
    /// Starts the clock for one call that begins at `now`.
    /// Asks the instance for its info, as a warming call; a timeout names `timeout`.
    pub(crate) async fn info(&mut self, timeout: Duration) -> Result<PluginInfo, PluginError> {
        self.arm(Instant::now(), timeout, START_GRACE);
        self.world.call_info(&mut self.store).await.map_err(|err| {
            match PluginError::from_call(err) {
                PluginError::Timeout(_) => PluginError::Timeout(timeout),
                other => other,
            }
        })
    }

    pub(crate) fn arm(&mut self, now: Instant, timeout: Duration, grace: Duration) {
        let state = self.store.data_mut();
        state.ticks = 0;
        state.grace = grace;
        state.deadline = now + timeout;
        self.store.set_epoch_deadline(1);
    }
}

/// The engine, the linker and the epoch clock. Cheap to share behind an `Arc`.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    config: RuntimeConfig,
    memory: Arc<MemoryBudget>,
    stop_clock: Arc<AtomicBool>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_clock.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Builds the engine (epoch interruption, pooling allocator sized by `config`) and a linker
    /// that gives plugins WASI with no capabilities, and starts the epoch clock.
    pub fn new(config: RuntimeConfig) -> Result<Arc<Self>, PluginError> {
        let mut pool = PoolingAllocationConfig::default();
        let slots = 1000;
        pool.total_component_instances(slots)
            .total_core_instances(slots * 4)
            .total_memories(slots)
            .total_tables(slots * 2)
            .total_stacks(slots)
            .max_memory_size(config.memory_limit)
            // A freed slot's first pages of memory, its tables and its stack stay resident and
            // are reset by memset instead of page faults. The bundled plugins are linked with a
            // small stack so that the pages they touch are those first pages.
            .linear_memory_keep_resident(128 * 1024)
            .table_keep_resident(64 * 1024)
            // A freed slot's memory goes back to the kernel at once: batching the decommits
            // would make per-call isolation cheaper, but would leave up to a batch of slots
            // resident per core, each up to the instance's memory limit when it was a plugin
            // that ran out of memory.
            .decommit_batch_size(1)
            .async_stack_keep_resident(128 * 1024);
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .memory_reservation(config.memory_limit as u64)
            .memory_guard_size(64 * 1024)
            .max_wasm_stack(512 * 1024)
            .async_stack_size(1024 * 1024);
        let engine = Engine::new(&wasm).map_err(PluginError::engine)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(PluginError::engine)?;
        let stop_clock = Arc::new(AtomicBool::new(false));
        spawn_clock(engine.clone(), Arc::clone(&stop_clock));
        Ok(Arc::new(Self {
            engine,
            linker,
            memory: Arc::new(MemoryBudget {
                total: config.total_memory,
                used: AtomicUsize::new(0),
            }),
            config,
            stop_clock,
        }))
    }

    /// The limits in force.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Compiles a component, or loads its compiled form from the cache.
    pub(crate) fn compile(&self, wasm: &[u8]) -> Result<Component, PluginError> {
        let Some(path) = self.cache_path(wasm) else {
            return Component::new(&self.engine, wasm).map_err(PluginError::invalid);
        };
        if let Ok(compiled) = std::fs::read(&path)
            && let Some(component) = self.deserialize(&compiled)
        {
            return Ok(component);
        }
        let compiled = self
            .engine
            .precompile_component(wasm)
            .map_err(PluginError::invalid)?;
        if let Err(err) = write_atomically(&path, &compiled) {
            tracing::debug!(path = %path.display(), %err, "could not cache a compiled plugin");
        }
        self.deserialize(&compiled)
            .ok_or_else(|| PluginError::Invalid("compiled plugin did not load".to_owned()))
    }

    #[allow(unsafe_code)]
    fn deserialize(&self, compiled: &[u8]) -> Option<Component> {
        // SAFETY: the bytes are either what `precompile_component` just returned or a file in
        // Portico's own cache directory, named by the hash of the source and of this engine's
        // settings. wasmtime still checks the header and refuses an incompatible artifact.
        unsafe { Component::deserialize(&self.engine, compiled) }.ok()
    }

    /// The cache file for `wasm` compiled by this engine, if caching is on.
    fn cache_path(&self, wasm: &[u8]) -> Option<PathBuf> {
        let dir = self.config.cache_dir.as_ref()?;
        let mut engine_hash = DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let mut digest = Sha256::new();
        digest.update(engine_hash.finish().to_le_bytes());
        digest.update(env!("CARGO_PKG_VERSION").as_bytes());
        digest.update(wasm);
        let name: String = digest
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Some(dir.join(format!("{name}.cwasm")))
    }

    /// Links a compiled component against the sandbox. A component built against another
    /// version of the contract is refused with an error that names both versions and says how
    /// to upgrade, instead of the linker's type mismatch.
    pub(crate) fn prepare(
        &self,
        component: &Component,
    ) -> Result<WorldPre<HostState>, PluginError> {
        if let Some(built_against) = self.contract_version(component)
            && let Some(why) = incompatible(&built_against)
        {
            return Err(PluginError::Invalid(why));
        }
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(PluginError::invalid)?;
        WorldPre::new(pre).map_err(PluginError::invalid)
    }

    /// The contract version a component was built against, read from the name of a contract
    /// interface it imports or exports (`portico:plugin/types@0.1.0`); `None` when it names
    /// none.
    fn contract_version(&self, component: &Component) -> Option<String> {
        let ty = component.component_type();
        let interface = format!("{PACKAGE}/");
        ty.imports(&self.engine)
            .chain(ty.exports(&self.engine))
            .find_map(|(name, _)| {
                let (_, version) = name.strip_prefix(&interface)?.split_once('@')?;
                Some(version.to_owned())
            })
    }

    /// A fresh instance in a fresh sandbox.
    pub(crate) async fn instantiate(
        &self,
        pre: &WorldPre<HostState>,
        log: &Arc<PluginLog>,
    ) -> Result<Instance, PluginError> {
        let mut wasi = WasiCtx::builder();
        // No preopened directories, environment, arguments or stdin (closed by default);
        // no sockets or name lookups. Output goes to the host log.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(log.stream("stdout"))
            .stderr(log.stream("stderr"));
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: Limits {
                memory_limit: self.config.memory_limit,
                budget: Arc::clone(&self.memory),
                held: 0,
            },
            ticks: 0,
            grace: START_GRACE,
            deadline: Instant::now() + self.config.rewrite_timeout,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        // Past the deadline the call traps. Until then it yields to the executor on each tick,
        // so a plugin that spins never holds a worker thread for long; once it has run through
        // more ticks than its grace it also waits `THROTTLE` at each one, so that it takes at
        // most a twentieth of a worker and the other services' requests on that worker keep
        // going. Ticks, not wall time: a preempted call is not throttled for the pause.
        store.epoch_deadline_callback(|mut ctx| {
            let now = Instant::now();
            let state = ctx.data_mut();
            state.ticks = state.ticks.saturating_add(1);
            if now >= state.deadline {
                Ok(UpdateDeadline::Interrupt)
            } else if TICK.saturating_mul(state.ticks) <= state.grace {
                Ok(UpdateDeadline::Yield(1))
            } else {
                let pause = THROTTLE.min(state.deadline - now);
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::time::sleep(pause)),
                ))
            }
        });
        store.set_epoch_deadline(1);
        let world =
            pre.instantiate_async(&mut store).await.map_err(
                |err| match PluginError::from_call(err) {
                    PluginError::Timeout(_) => PluginError::Timeout(self.config.rewrite_timeout),
                    other => other,
                },
            )?;
        Ok(Instance { store, world })
    }
}

/// Why a plugin built against contract version `built_against` cannot run here, or `None`
/// when the version is one these bindings implement (equal, or semver-compatible with it).
fn incompatible(built_against: &str) -> Option<String> {
    // Semver: below 1.0 the minor version is the breaking one.
    let breaking = |version: &str| -> Option<(u64, u64)> {
        let mut parts = version.split(['.', '-', '+']).map(str::parse::<u64>);
        let major = parts.next()?.ok()?;
        let minor = parts.next()?.ok()?;
        Some(if major == 0 { (0, minor) } else { (major, 0) })
    };
    let theirs = breaking(built_against);
    let ours = breaking(VERSION);
    if theirs.is_some() && theirs == ours {
        return None;
    }
    let built = format!("the plugin was built against {PACKAGE}@{built_against}");
    Some(if theirs.is_some() && theirs < ours {
        let mut steps = Vec::new();
        if theirs < Some((0, 2)) {
            steps.push(
                "declare the un-prefixed paths its `claim` answers for with \
                 `PluginInfo::claim_prefixes` (none if it claims nothing)",
            );
        }
        if theirs < Some((0, 3)) {
            steps.push(
                "write `body: BodyRewrite::Whole` in its response plans where it wrote \
                 `rewrite_body: true` (`BodyRewrite::Keep` for false)",
            );
        }
        format!(
            "{built}, but this Portico implements {PACKAGE}@{VERSION}: rebuild it with \
             portico-plugin-sdk {VERSION}, {}; see \"Upgrading a plugin\" in plugins/README.md",
            steps.join(", and ")
        )
    } else {
        format!(
            "{built}, which this Portico does not implement (it implements \
             {PACKAGE}@{VERSION}): upgrade Portico, or build the plugin with \
             portico-plugin-sdk {VERSION}"
        )
    })
}

/// Advances the engine's epoch every [`TICK`] until `stop` is set.
fn spawn_clock(engine: Engine, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("portico-plugin-clock".to_owned())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(TICK);
                engine.increment_epoch();
            }
        });
    if let Err(err) = spawned {
        tracing::error!(%err, "could not start the plugin clock: plugin calls have no deadline");
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path)
}
