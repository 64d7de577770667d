//! A plugin: one `.wasm` component, compiled once and kept ready to
//! instantiate, with the triggers it serves.
//!
//! Loading ([`PluginLoader`]) validates everything before anything serves:
//! the bytes pass the shape limits and compile within bounds
//! ([`compile`]), the imports link against the host, at least one export
//! is a trigger interface of the contract with the right types
//! ([`typecheck`]), and the component instantiates without trapping under
//! the limits it will run with. A file that failed to load is refused at
//! once when its bytes come again ([`remembered`]).

pub mod compile;
mod loader;
pub mod remembered;
pub mod shape;
mod typecheck;

pub use loader::PluginLoader;

use crate::engine::convert::Plan;
use crate::engine::state::{CallState, LogBudget};
use crate::engine::{new_store, reset_store, Runtime};
use crate::limits::Limits;
use crate::trigger::Trigger;
use compile::CompileError;
use remembered::ProbeLimits;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use wasmtime::component::{ComponentExportIndex, InstancePre, Type};
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
    pub(crate) probed: Mutex<Vec<ProbeLimits>>,
}

/// How to call one trigger's `handle` export.
pub(crate) struct Handler {
    pub(crate) func: ComponentExportIndex,
    /// Parameter names and types, in order (`context`, `request`,
    /// `response` for user pool triggers; `event`, `records` for sync).
    pub(crate) params: Vec<(String, Type)>,
    /// How to convert each parameter, in the same order: worked out once
    /// here rather than on every event.
    pub(crate) plans: Vec<Arc<Plan>>,
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
pub(crate) fn probe_timeout(limits: &Limits) -> Duration {
    limits.timeout.min(MAX_PROBE_TIMEOUT)
}

fn exports_note(exports: &[String]) -> String {
    if exports.is_empty() {
        "; it exports nothing".to_owned()
    } else {
        format!("; it exports {}", exports.join(", "))
    }
}

impl Compiled {
    /// A fresh store to instantiate this component in, its memory held to
    /// the engine's pool ceiling too (the pool enforces it on its own, but
    /// past the limiter's knowledge, which would report a plain trap).
    pub(crate) fn new_store(
        &self,
        mut state: CallState,
        fuel: u64,
    ) -> wasmtime::Result<Store<CallState>> {
        state.cap_memory(self.runtime.config().max_memory_bytes);
        new_store(
            self.pre.engine(),
            self.runtime.config().metering,
            state,
            fuel,
        )
    }

    /// `store` (which has served a call, on this component's engine) made
    /// ready for a call of this component, as [`Compiled::new_store`] would
    /// make a fresh one.
    pub(crate) fn reset_store(
        &self,
        store: &mut Store<CallState>,
        mut state: CallState,
        fuel: u64,
    ) -> wasmtime::Result<()> {
        state.cap_memory(self.runtime.config().max_memory_bytes);
        reset_store(store, self.runtime.config().metering, state, fuel)
    }

    pub(crate) fn probed_with(&self, limits: ProbeLimits) -> bool {
        let probed = self.probed.lock().unwrap_or_else(|e| e.into_inner());
        probed.contains(&limits)
    }

    pub(crate) fn mark_probed(&self, limits: ProbeLimits) {
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
    pub(crate) async fn probe(&self, limits: &Limits) -> Result<(), PluginError> {
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
            typecheck::typecheck(trigger, &self.pre, &mut store, &instance).map_err(|e| {
                PluginError::Mismatch {
                    export: trigger.export_name(),
                    reason: format!("{e:#}"),
                }
            })?;
        }
        Ok(())
    }
}
