//! The wasmtime runtime shared by all plugins: one engine and linker, compiled-code caching,
//! the sandbox each instance runs in, and the epoch clock that bounds every call.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::PluginError;
use super::bindings::{World, WorldPre};
use super::log::PluginLog;

/// How often the epoch clock ticks; a call's deadline is checked on each tick.
const TICK: Duration = Duration::from_millis(2);

/// Limits and policies for running plugins.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The longest one plugin call may run before it is stopped.
    pub call_timeout: Duration,
    /// The most linear memory one plugin instance may use, in bytes.
    pub memory_limit: usize,
    /// Idle instances kept per pooled plugin (and created at load).
    pub pool_size: usize,
    /// Consecutive failures after which a plugin is disabled until it is reloaded.
    pub max_consecutive_failures: u32,
    /// Where compiled plugins are cached; `None` compiles at every start.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            call_timeout: Duration::from_millis(100),
            memory_limit: 64 * 1024 * 1024,
            pool_size: threads * 2,
            max_consecutive_failures: 10,
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
    limits: StoreLimits,
    /// When the running call must stop.
    pub(crate) deadline: Instant,
}

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
    pub(crate) fn arm(&mut self, now: Instant, timeout: Duration) {
        self.store.data_mut().deadline = now + timeout;
        self.store.set_epoch_deadline(1);
    }
}

/// The engine, the linker and the epoch clock. Cheap to share behind an `Arc`.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    config: RuntimeConfig,
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
            // Returning a freed memory to the kernel flushes the TLB of every core; doing it for
            // a batch of slots at once is most of what makes per-call isolation affordable.
            .decommit_batch_size(32)
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

    /// Links a compiled component against the sandbox.
    pub(crate) fn prepare(
        &self,
        component: &Component,
    ) -> Result<WorldPre<HostState>, PluginError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(PluginError::invalid)?;
        WorldPre::new(pre).map_err(PluginError::invalid)
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
            limits: StoreLimitsBuilder::new()
                .memory_size(self.config.memory_limit)
                .instances(16)
                .tables(16)
                .memories(4)
                .trap_on_grow_failure(true)
                .build(),
            deadline: Instant::now() + self.config.call_timeout,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        // Past the deadline the call traps; until then it yields to the executor on each tick,
        // so a plugin that spins never holds a worker thread for long.
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        let world = pre
            .instantiate_async(&mut store)
            .await
            .map_err(PluginError::from_call)?;
        Ok(Instance { store, world })
    }
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
