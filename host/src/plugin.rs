//! A plugin: one `.wasm` component, compiled once and kept ready to
//! instantiate, with the triggers it serves.
//!
//! Loading validates everything before anything serves: the bytes compile,
//! the imports link against the host, at least one export is a trigger
//! interface of the contract with the right types, and the component
//! instantiates without trapping under the limits it will run with.
//!
//! Compiling is bounded (see [`crate::compile`]), and a file that failed
//! to load is refused at once when its bytes come again (see
//! [`crate::remembered`]).

use crate::compile::{check_shape, CompileError, Compiler};
use crate::limits::Limits;
use crate::remembered::{Counters, Failures, LoadCounts, ProbeLimits};
use crate::runtime::{bindings, new_store, CallState, LogBudget, Runtime};
use crate::trigger::Trigger;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex, Instance, InstancePre, Type};
use wasmtime::Store;

/// A plugin file of a tenant, as loaded.
pub struct Plugin {
    /// The file stem, such as `10-email-deny-list`: its place in the chain
    /// and its key in `tenant.toml`.
    pub name: String,
    /// The compiled component, shared by every file with the same bytes.
    pub compiled: Arc<Compiled>,
    /// When this version was loaded.
    pub loaded_at: SystemTime,
    /// Where the compiled code came from.
    pub origin: Origin,
}

impl Plugin {
    /// SHA-256 of the file, hex: the version of this plugin.
    pub fn hash(&self) -> &str {
        &self.compiled.hash
    }

    /// The triggers this plugin serves.
    pub fn triggers(&self) -> impl Iterator<Item = Trigger> + '_ {
        self.compiled.handlers.keys().copied()
    }

    pub fn serves(&self, trigger: Trigger) -> bool {
        self.compiled.handlers.contains_key(&trigger)
    }

    /// The parameters (names and types) of this plugin's handler for
    /// `trigger`, if it serves it.
    pub fn params(&self, trigger: Trigger) -> Option<&[(String, Type)]> {
        self.compiled
            .handlers
            .get(&trigger)
            .map(|h| h.params.as_slice())
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("hash", &self.compiled.hash)
            .field("triggers", &self.triggers().collect::<Vec<_>>())
            .field("origin", &self.origin)
            .finish()
    }
}

/// Where a plugin's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled from the `.wasm` just now.
    Compiled,
    /// Read from the compile cache on disk (an earlier run compiled it).
    DiskCache,
    /// Already in memory: another tenant, or an earlier version of this
    /// folder, has the same bytes.
    Shared,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Compiled => "compiled",
            Origin::DiskCache => "disk-cache",
            Origin::Shared => "shared",
        }
    }
}

/// A component compiled, linked and validated, ready to instantiate.
pub struct Compiled {
    /// SHA-256 of the `.wasm` file, hex.
    pub hash: String,
    /// Size of the `.wasm` file in bytes.
    pub size: usize,
    pub(crate) handlers: BTreeMap<Trigger, Handler>,
    pub(crate) pre: InstancePre<CallState>,
    pub(crate) runtime: Arc<Runtime>,
    /// The limits this component passed its load-time probe under.
    probed: Mutex<Vec<ProbeLimits>>,
}

/// How to call one trigger's `handle` export.
pub(crate) struct Handler {
    pub(crate) func: ComponentExportIndex,
    /// Parameter names and types, in order (`context`, `request`,
    /// `response` for user pool triggers; `event`, `records` for sync).
    pub(crate) params: Vec<(String, Type)>,
}

/// Why a `.wasm` file is not a usable plugin.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PluginError {
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    /// Refused before compiling, or the compile ran into a limit.
    #[error(transparent)]
    CompileLimit(CompileError),
    #[error("does not link against the host: {0}")]
    Link(String),
    #[error(
        "implements no trigger: it exports none of the contract's interfaces \
         (such as `{}`){}",
        Trigger::PreSignUp.export_name(),
        exports_note(.0)
    )]
    NoTrigger(Vec<String>),
    #[error("its export `{export}` does not match the contract: {reason}")]
    Mismatch { export: String, reason: String },
    #[error("traps when instantiated: {0}")]
    Instantiate(String),
}

impl From<CompileError> for PluginError {
    fn from(error: CompileError) -> PluginError {
        match error {
            CompileError::Invalid(message) => PluginError::Compile(message),
            other => PluginError::CompileLimit(other),
        }
    }
}

/// The longest a load-time probe may take, whatever the plugin's own
/// `timeout-ms`: initialising a plugin is quick, and a probe holds up its
/// tenant's reload.
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_millis(crate::limits::DEFAULT_TIMEOUT_MS);

/// The timeout of a load-time probe under these limits.
fn probe_timeout(limits: &Limits) -> Duration {
    limits.timeout.min(MAX_PROBE_TIMEOUT)
}

fn exports_note(exports: &[String]) -> String {
    if exports.is_empty() {
        "; it exports nothing".to_owned()
    } else {
        format!("; it exports {}", exports.join(", "))
    }
}

/// SHA-256 of a plugin file, hex.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

impl Compiled {
    /// A fresh store to instantiate this component in.
    pub(crate) fn new_store(
        &self,
        state: CallState,
        fuel: u64,
    ) -> wasmtime::Result<Store<CallState>> {
        new_store(
            self.pre.engine(),
            self.runtime.config().metering,
            state,
            fuel,
        )
    }

    fn probed_with(&self, limits: ProbeLimits) -> bool {
        let probed = self.probed.lock().unwrap_or_else(|e| e.into_inner());
        probed.contains(&limits)
    }

    fn mark_probed(&self, limits: ProbeLimits) {
        let mut probed = self.probed.lock().unwrap_or_else(|e| e.into_inner());
        // A handful of distinct limits in practice; a tenant that keeps
        // changing its limits only costs a probe again.
        if probed.len() >= 16 {
            probed.clear();
        }
        probed.push(limits);
    }

    /// Instantiates the component once, as a request would and under the
    /// limits its calls will have (its timeout capped at
    /// [`MAX_PROBE_TIMEOUT`]), and checks the types of every trigger export
    /// against the contract.
    async fn probe(&self, limits: &Limits) -> Result<(), PluginError> {
        let timeout = probe_timeout(limits);
        let state = CallState::new(
            limits,
            Default::default(),
            Default::default(),
            LogBudget::new(limits.log_bytes),
        );
        let _slot = self.runtime.instance_slot().await;
        let mut store = self
            .new_store(state, limits.fuel)
            .map_err(|e| PluginError::Instantiate(e.to_string()))?;
        let instantiate = self.pre.instantiate_async(&mut store);
        let instance = match tokio::time::timeout(timeout, instantiate).await {
            Ok(Ok(instance)) => instance,
            Ok(Err(e)) => return Err(PluginError::Instantiate(format!("{e:#}"))),
            Err(_) => {
                return Err(PluginError::Instantiate(format!(
                    "did not finish within {timeout:?}"
                )))
            }
        };
        for trigger in self.handlers.keys().copied() {
            typecheck(trigger, &self.pre, &mut store, &instance).map_err(|e| {
                PluginError::Mismatch {
                    export: trigger.export_name(),
                    reason: format!("{e:#}"),
                }
            })?;
        }
        Ok(())
    }
}

/// Loads plugins: compiles each distinct `.wasm` once, keeps compiled code
/// on disk so a restart does not compile again, and shares it in memory
/// between every file with the same bytes. Remembers the last failures by
/// content, so bytes that failed are refused at once.
pub struct PluginLoader {
    runtime: Arc<Runtime>,
    /// `<cache dir>/<engine fingerprint>/`, if caching on disk.
    disk_cache: Option<PathBuf>,
    in_memory: Mutex<HashMap<String, Weak<Compiled>>>,
    compiler: Compiler,
    failures: Failures,
    counters: Counters,
}

impl PluginLoader {
    /// A loader with its compile cache in `cache_dir` (none: no disk
    /// cache), compiling in process ([`Compiler::InProcess`]; see
    /// [`PluginLoader::with_compiler`]).
    ///
    /// Whoever can write to the cache directory can run native code in the
    /// host, so it must be private to the host's user; it is created 0700.
    pub fn new(runtime: Arc<Runtime>, cache_dir: Option<&Path>) -> PluginLoader {
        let disk_cache = cache_dir.and_then(|dir| {
            let dir = dir.join(engine_fingerprint(runtime.engine()));
            match create_private_dir(&dir) {
                Ok(()) => Some(dir),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "compile cache unavailable; compiling every plugin");
                    None
                }
            }
        });
        PluginLoader {
            runtime,
            disk_cache,
            in_memory: Mutex::new(HashMap::new()),
            compiler: Compiler::InProcess,
            failures: Failures::default(),
            counters: Counters::default(),
        }
    }

    /// This loader, compiling with `compiler` (a [`Compiler::Subprocess`]
    /// bounds each compile in CPU time, memory and wall-clock time).
    pub fn with_compiler(mut self, compiler: Compiler) -> PluginLoader {
        self.compiler = compiler;
        self
    }

    /// What this loader has compiled, probed and refused from memory.
    pub fn counts(&self) -> LoadCounts {
        self.counters.snapshot(&self.failures)
    }

    /// Loads one plugin file's bytes as plugin `name`, probing it under
    /// `limits`, the limits its calls will have. Compilation runs on a
    /// blocking thread (or a child process), never on the async runtime.
    /// Bytes that failed before are refused at once with the same error
    /// (a failed probe only under the same limits).
    pub async fn load(
        &self,
        name: &str,
        bytes: Vec<u8>,
        limits: &Limits,
    ) -> Result<Plugin, PluginError> {
        let hash = content_hash(&bytes);
        let probe_limits = ProbeLimits::of(limits, probe_timeout(limits));
        if let Some(error) = self.failures.recall(&hash, probe_limits) {
            Counters::add(&self.counters.refused_as_remembered);
            tracing::debug!(plugin = name, hash = %&hash[..12], "refused: these bytes failed to load before");
            return Err(error);
        }
        let loaded = self
            .load_unremembered(name, hash.clone(), bytes, limits, probe_limits)
            .await;
        if let Err(error) = &loaded {
            self.failures.remember(&hash, probe_limits, error);
        }
        loaded
    }

    async fn load_unremembered(
        &self,
        name: &str,
        hash: String,
        bytes: Vec<u8>,
        limits: &Limits,
        probe_limits: ProbeLimits,
    ) -> Result<Plugin, PluginError> {
        let plugin = |compiled, origin| Plugin {
            name: name.to_owned(),
            compiled,
            loaded_at: SystemTime::now(),
            origin,
        };
        if let Some(compiled) = self.shared(&hash) {
            // Shared code was probed under its first loader's limits; these
            // may be tighter.
            if compiled.probed_with(probe_limits) {
                return Ok(plugin(compiled, Origin::Shared));
            }
            Counters::add(&self.counters.probed);
            compiled.probe(limits).await?;
            compiled.mark_probed(probe_limits);
            return Ok(plugin(compiled, Origin::Shared));
        }
        let size = bytes.len();
        let (component, origin) = self.compile(&hash, bytes).await?;
        let pre = self
            .runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Link(format!("{e:#}")))?;
        let handlers = handlers(&self.runtime, &component)?;
        let compiled = Compiled {
            hash: hash.clone(),
            size,
            handlers,
            pre,
            runtime: self.runtime.clone(),
            probed: Mutex::default(),
        };
        Counters::add(&self.counters.probed);
        compiled.probe(limits).await?;
        compiled.mark_probed(probe_limits);
        let compiled = Arc::new(compiled);
        let mut in_memory = self.in_memory.lock().unwrap_or_else(|e| e.into_inner());
        in_memory.retain(|_, weak| weak.strong_count() > 0);
        in_memory.insert(hash, Arc::downgrade(&compiled));
        Ok(plugin(compiled, origin))
    }

    fn shared(&self, hash: &str) -> Option<Arc<Compiled>> {
        let in_memory = self.in_memory.lock().unwrap_or_else(|e| e.into_inner());
        in_memory.get(hash).and_then(Weak::upgrade)
    }

    /// The compiled component: from the disk cache if it is there and
    /// readable, else checked by [`check_shape`], compiled now by the
    /// loader's [`Compiler`] and written to the cache.
    async fn compile(
        &self,
        hash: &str,
        bytes: Vec<u8>,
    ) -> Result<(Component, Origin), PluginError> {
        let engine = self.runtime.engine().clone();
        let runtime_config = self.runtime.config().clone();
        let compiler = self.compiler.clone();
        let cached = self
            .disk_cache
            .as_ref()
            .map(|dir| dir.join(format!("{hash}.cwasm")));
        let work = move || {
            if let Some(path) = cached.as_ref().filter(|p| p.is_file()) {
                // SAFETY: the cache directory is private to this host and
                // its files are written only by `write_cache` below, from
                // `Component::serialize` on an engine of the same
                // fingerprint (the directory name).
                match unsafe { Component::deserialize_file(&engine, path) } {
                    Ok(component) => return Ok((component, Origin::DiskCache)),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable compile cache entry")
                    }
                }
            }
            // A cache entry passed this when it was compiled.
            check_shape(&bytes)?;
            let component = match &compiler {
                Compiler::InProcess => {
                    let component = Component::from_binary(&engine, &bytes)
                        .map_err(|e| PluginError::Compile(format!("{e:#}")))?;
                    if let Some(path) = &cached {
                        if let Err(e) = component
                            .serialize()
                            .map_err(anyhow::Error::from)
                            .and_then(|artifact| write_cache(&artifact, path))
                        {
                            tracing::warn!(path = %path.display(), error = %e, "cannot write the compile cache");
                        }
                    }
                    component
                }
                Compiler::Subprocess(subprocess) => {
                    let artifact = subprocess.compile(&runtime_config, &bytes)?;
                    if let Some(path) = &cached {
                        if let Err(e) = write_cache(&artifact, path) {
                            tracing::warn!(path = %path.display(), error = %e, "cannot write the compile cache");
                        }
                    }
                    // SAFETY: the artifact is `Component::serialize` of
                    // this same binary (`triggerfish compile-worker`), with
                    // an engine configured as this one; `deserialize`
                    // checks that the configurations agree.
                    unsafe { Component::deserialize(&engine, &artifact) }.map_err(|e| {
                        CompileError::Worker(format!("cannot load the compiled code: {e:#}"))
                    })?
                }
            };
            Ok((component, Origin::Compiled))
        };
        let compiled = tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| PluginError::Compile(e.to_string()))?;
        if matches!(compiled, Ok((_, Origin::Compiled))) {
            Counters::add(&self.counters.compiled);
        }
        compiled
    }
}

/// A name for the engine's configuration: compiled code is only valid for
/// an engine with the same one.
fn engine_fingerprint(engine: &wasmtime::Engine) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("engine-{:016x}", hasher.finish())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Writes a cache entry whole or not at all: to a temporary name, then
/// renamed into place.
fn write_cache(bytes: &[u8], path: &Path) -> anyhow::Result<()> {
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)?;
    Ok(())
}

/// Finds the trigger interfaces a component exports and how to call them.
fn handlers(
    runtime: &Runtime,
    component: &Component,
) -> Result<BTreeMap<Trigger, Handler>, PluginError> {
    let engine = runtime.engine();
    let ty = component.component_type();
    let mut handlers = BTreeMap::new();
    let mut other_exports = Vec::new();
    for (name, export) in ty.exports(engine) {
        let Some(trigger) = Trigger::from_export_name(name) else {
            other_exports.push(name.to_owned());
            continue;
        };
        let mismatch = |reason: &str| PluginError::Mismatch {
            export: name.to_owned(),
            reason: reason.to_owned(),
        };
        let ComponentItem::ComponentInstance(instance) = export.ty else {
            return Err(mismatch("it is not an instance"));
        };
        let Some(handle) = instance.get_export(engine, "handle") else {
            return Err(mismatch("it has no `handle` function"));
        };
        let ComponentItem::ComponentFunc(func) = handle.ty else {
            return Err(mismatch("`handle` is not a function"));
        };
        let params = func
            .params()
            .map(|(name, ty)| (name.to_owned(), ty))
            .collect();
        if !matches!(func.results().next(), Some(Type::Result(_))) {
            return Err(mismatch("`handle` must return a result"));
        }
        let instance_index = component
            .get_export_index(None, name)
            .ok_or_else(|| mismatch("it cannot be looked up"))?;
        let func = component
            .get_export_index(Some(&instance_index), "handle")
            .ok_or_else(|| mismatch("`handle` cannot be looked up"))?;
        handlers.insert(trigger, Handler { func, params });
    }
    if handlers.is_empty() {
        return Err(PluginError::NoTrigger(other_exports));
    }
    Ok(handlers)
}

/// Checks one trigger export against the host's own bindings of the
/// contract, so a plugin built from another version of the WIT is refused
/// at load rather than failing on its first event.
fn typecheck(
    trigger: Trigger,
    pre: &InstancePre<CallState>,
    store: &mut Store<CallState>,
    instance: &Instance,
) -> wasmtime::Result<()> {
    use bindings::exports::triggerfish::sync::sync_trigger;
    use bindings::exports::triggerfish::user_pool::*;
    macro_rules! check {
        ($module:ident) => {{
            $module::GuestIndices::new(pre)?.load(&mut *store, instance)?;
        }};
    }
    match trigger {
        Trigger::PreSignUp => check!(pre_sign_up),
        Trigger::PostConfirmation => check!(post_confirmation),
        Trigger::PreAuthentication => check!(pre_authentication),
        Trigger::PostAuthentication => check!(post_authentication),
        Trigger::DefineAuthChallenge => check!(define_auth_challenge),
        Trigger::CreateAuthChallenge => check!(create_auth_challenge),
        Trigger::VerifyAuthChallengeResponse => check!(verify_auth_challenge_response),
        Trigger::PreTokenGeneration => check!(pre_token_generation),
        Trigger::PreTokenGenerationV2 => check!(pre_token_generation_v2),
        Trigger::UserMigration => check!(user_migration),
        Trigger::CustomMessage => check!(custom_message),
        Trigger::CustomEmailSender => check!(custom_email_sender),
        Trigger::CustomSmsSender => check!(custom_sms_sender),
        Trigger::Sync => check!(sync_trigger),
    }
    Ok(())
}
