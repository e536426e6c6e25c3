//! Plugins by name and by service type: the bundled ones, overridden by those in the plugins
//! directory, which is watched so that plugins can be added, replaced and removed live.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use super::{Isolation, Plugin, PluginError, Runtime, bundled};

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// Built with Portico and embedded in the binary.
    Bundled,
    /// A `.wasm` file in the plugins directory.
    File(PathBuf),
}

/// The name of the plugin used for services of unknown type.
pub const GENERIC: &str = "generic";

/// The plugins in force, swapped whole on every change.
#[derive(Debug, Default)]
struct Table {
    by_name: BTreeMap<String, Arc<Plugin>>,
    by_type: HashMap<String, Arc<Plugin>>,
}

/// A directory plugin and the digest of the file it was loaded from.
#[derive(Debug)]
struct Loaded {
    digest: [u8; 32],
    plugin: Arc<Plugin>,
}

/// Name and type lookup over bundled and directory plugins.
#[derive(Debug)]
pub struct PluginRegistry {
    runtime: Arc<Runtime>,
    bundled: Vec<Arc<Plugin>>,
    dir: Option<PathBuf>,
    isolation: IsolationPolicy,
    from_dir: Mutex<BTreeMap<PathBuf, Loaded>>,
    table: ArcSwap<Table>,
    /// Files refused at their current content, by digest: a file is tried again only once it
    /// changes, so a broken plugin (or one whose `info` never returns) is refused once.
    refused: Mutex<BTreeMap<PathBuf, [u8; 32]>>,
    /// Serialises reloads.
    reloading: tokio::sync::Mutex<()>,
}

/// Which isolation each plugin gets.
#[derive(Debug, Clone, Default)]
pub struct IsolationPolicy {
    /// For plugins from the directory.
    pub directory: Isolation,
    /// Per plugin name, overriding the default.
    pub by_name: HashMap<String, Isolation>,
}

impl IsolationPolicy {
    fn for_plugin(&self, name: &str, source_is_dir: bool) -> Isolation {
        match self.by_name.get(name) {
            Some(isolation) => *isolation,
            None if source_is_dir => self.directory,
            None => Isolation::Pooled,
        }
    }
}

impl PluginRegistry {
    /// Loads the bundled plugins and those in `dir` (when given and present).
    ///
    /// A bundled plugin that fails to load is an error; a directory plugin that fails is logged
    /// and skipped, so one bad file cannot stop Portico.
    pub async fn load(
        runtime: Arc<Runtime>,
        dir: Option<PathBuf>,
        isolation: IsolationPolicy,
    ) -> Result<Arc<Self>, PluginError> {
        let mut loaded = Vec::new();
        for (name, wasm) in bundled() {
            let mode = isolation.for_plugin(name, false);
            let plugin = Plugin::load(&runtime, wasm, PluginSource::Bundled, mode)
                .await
                .map_err(|err| PluginError::Invalid(format!("bundled plugin {name}: {err}")))?;
            loaded.push(plugin);
        }
        let registry = Arc::new(Self {
            runtime,
            bundled: loaded,
            dir,
            isolation,
            from_dir: Mutex::new(BTreeMap::new()),
            table: ArcSwap::from_pointee(Table::default()),
            refused: Mutex::new(BTreeMap::new()),
            reloading: tokio::sync::Mutex::new(()),
        });
        registry.reload().await;
        Ok(registry)
    }

    /// The plugin for services of `service_type`, or the generic plugin.
    pub fn for_type(&self, service_type: &str) -> Arc<Plugin> {
        let table = self.table.load();
        if let Some(plugin) = table.by_type.get(service_type) {
            return Arc::clone(plugin);
        }
        match table.by_name.get(GENERIC) {
            Some(plugin) => Arc::clone(plugin),
            None => Arc::clone(&self.bundled[0]),
        }
    }

    /// True when some plugin handles `service_type`.
    pub fn knows_type(&self, service_type: &str) -> bool {
        self.table.load().by_type.contains_key(service_type)
    }

    /// The plugin called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.table.load().by_name.get(name).cloned()
    }

    /// Every plugin in force, by name.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.table.load().by_name.values().cloned().collect()
    }

    /// The plugins directory, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Rescans the plugins directory: loads new and changed files, drops removed ones, and
    /// swaps the table. A file that fails to load is refused with a log line and, if it
    /// replaced a working version, that version keeps serving.
    pub async fn reload(&self) {
        let _one_at_a_time = self.reloading.lock().await;
        let files = self.dir.as_deref().map(wasm_files).unwrap_or_default();
        let previous: BTreeMap<PathBuf, [u8; 32]> = self
            .dir_plugins()
            .iter()
            .map(|(path, loaded)| (path.clone(), loaded.digest))
            .collect();
        let mut next: BTreeMap<PathBuf, Loaded> = BTreeMap::new();
        for path in files {
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(err) => {
                    tracing::error!(path = %path.display(), %err, "cannot read plugin file");
                    continue;
                }
            };
            let digest: [u8; 32] = Sha256::digest(&bytes).into();
            let refused_before = self.refused_files().get(&path) == Some(&digest);
            if previous.get(&path) == Some(&digest) || refused_before {
                if let Some(kept) = self.dir_plugins().remove(&path) {
                    next.insert(path, kept);
                }
                continue;
            }
            match self.load_file(&path, &bytes).await {
                Ok(plugin) => {
                    tracing::info!(
                        plugin = %plugin.name(),
                        version = %plugin.info().version,
                        path = %path.display(),
                        isolation = ?plugin.isolation(),
                        "plugin loaded"
                    );
                    self.refused_files().remove(&path);
                    next.insert(path, Loaded { digest, plugin });
                }
                Err(err) => {
                    tracing::error!(path = %path.display(), error = %err, "plugin refused; the previous version, if any, keeps serving; the file is tried again when it changes");
                    self.refused_files().insert(path.clone(), digest);
                    if let Some(kept) = self.dir_plugins().remove(&path) {
                        next.insert(path, kept);
                    }
                }
            }
        }
        for path in self.dir_plugins().keys() {
            if !next.contains_key(path) {
                tracing::info!(path = %path.display(), "plugin removed");
            }
        }
        self.refused_files()
            .retain(|path, _| next.contains_key(path) || path.is_file());
        let table = self.build_table(&next);
        *self.dir_plugins() = next;
        self.table.store(Arc::new(table));
    }

    async fn load_file(&self, path: &Path, bytes: &[u8]) -> Result<Arc<Plugin>, PluginError> {
        // The isolation depends on the name, which is only known once loaded: load pooled
        // without warming, then reload in the right mode if it differs.
        let source = PluginSource::File(path.to_owned());
        let probe = check(&self.runtime, bytes).await?;
        let mode = self.isolation.for_plugin(&probe.name, true);
        Plugin::load(&self.runtime, bytes, source, mode).await
    }

    fn build_table(&self, from_dir: &BTreeMap<PathBuf, Loaded>) -> Table {
        let mut table = Table::default();
        let all = self
            .bundled
            .iter()
            .chain(from_dir.values().map(|loaded| &loaded.plugin));
        for plugin in all {
            if let Some(replaced) = table
                .by_name
                .insert(plugin.name().to_owned(), Arc::clone(plugin))
            {
                tracing::info!(plugin = %plugin.name(), replaced = ?replaced.source(), by = ?plugin.source(), "plugin overridden");
                table
                    .by_type
                    .retain(|_, existing| !Arc::ptr_eq(existing, &replaced));
            }
            for service_type in &plugin.info().service_types {
                table
                    .by_type
                    .insert(service_type.clone(), Arc::clone(plugin));
            }
        }
        table
    }

    fn refused_files(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, [u8; 32]>> {
        self.refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn dir_plugins(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, Loaded>> {
        self.from_dir
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Watches the plugins directory and reloads after each burst of changes. The watch ends
    /// when the returned handle is dropped.
    pub fn watch(self: &Arc<Self>) -> Result<DirWatch, notify::Error> {
        use notify::Watcher as _;
        let Some(dir) = self.dir.clone() else {
            return Ok(DirWatch { _watcher: None });
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Reading the files (as the reload does) is no change: counting it would make
                // every reload trigger the next.
                if event.is_ok_and(|event| crate::watch::is_change(&event.kind)) {
                    let _ = tx.send(());
                }
            })?;
        std::fs::create_dir_all(&dir).map_err(notify::Error::io)?;
        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        let registry = Arc::downgrade(self);
        tokio::spawn(async move {
            while crate::watch::next_change(&mut rx).await {
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                registry.reload().await;
            }
        });
        Ok(DirWatch {
            _watcher: Some(watcher),
        })
    }
}

/// Keeps the plugins directory watched while alive.
#[derive(Debug)]
pub struct DirWatch {
    _watcher: Option<notify::RecommendedWatcher>,
}

/// The `.wasm` files directly in `dir`, sorted; none when it does not exist.
fn wasm_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wasm") && path.is_file())
        .collect();
    files.sort();
    files
}

/// Validates a component against the contract in the sandbox: compiles it, links it,
/// instantiates it, and returns its checked info.
/// Loads a component from `path` on its own, one fresh instance per call, for a dry run.
pub async fn load_for_trial(
    runtime: &Arc<Runtime>,
    wasm: &[u8],
    path: &Path,
) -> Result<Arc<Plugin>, PluginError> {
    Plugin::load(
        runtime,
        wasm,
        PluginSource::File(path.to_owned()),
        Isolation::PerCall,
    )
    .await
}

pub async fn check(runtime: &Arc<Runtime>, wasm: &[u8]) -> Result<super::PluginInfo, PluginError> {
    let plugin = Plugin::load(runtime, wasm, PluginSource::Bundled, Isolation::PerCall).await?;
    Ok(plugin.info().clone())
}
