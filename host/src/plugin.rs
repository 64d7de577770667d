//! A plugin: one `.wasm` component, compiled once and kept ready to
//! instantiate, with the triggers it serves.
//!
//! Loading validates everything before anything serves: the bytes compile,
//! the imports link against the host, at least one export is a trigger
//! interface of the contract with the right types, and the component
//! instantiates without trapping.

use crate::limits::Limits;
use crate::runtime::{bindings, CallState, LogBudget, Runtime};
use crate::trigger::Trigger;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex, Instance, InstancePre, Type};
use wasmtime::Store;

/// A loaded plugin.
pub struct Plugin {
    /// The file stem, such as `10-email-deny-list`: its place in the chain
    /// and its key in `tenant.toml`.
    pub name: String,
    /// SHA-256 of the file, hex: the version of this plugin.
    pub hash: String,
    /// Size of the `.wasm` file in bytes.
    pub size: usize,
    pub(crate) handlers: BTreeMap<Trigger, Handler>,
    pub(crate) pre: InstancePre<CallState>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("hash", &self.hash)
            .field("triggers", &self.triggers().collect::<Vec<_>>())
            .finish()
    }
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

impl Plugin {
    /// Compiles and validates a plugin. Compilation runs on a blocking
    /// thread, never on the async runtime.
    pub async fn load(
        runtime: &Arc<Runtime>,
        name: &str,
        bytes: Vec<u8>,
        limits: &Limits,
    ) -> Result<Plugin, PluginError> {
        let hash = content_hash(&bytes);
        let size = bytes.len();
        let engine = runtime.engine().clone();
        let component =
            tokio::task::spawn_blocking(move || Component::from_binary(&engine, &bytes))
                .await
                .map_err(|e| PluginError::Compile(e.to_string()))?
                .map_err(|e| PluginError::Compile(format!("{e:#}")))?;
        let pre = runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Link(format!("{e:#}")))?;
        let handlers = handlers(runtime, &component)?;
        let plugin = Plugin {
            name: name.to_owned(),
            hash,
            size,
            handlers,
            pre,
        };
        plugin.probe(limits).await?;
        Ok(plugin)
    }

    /// The triggers this plugin serves.
    pub fn triggers(&self) -> impl Iterator<Item = Trigger> + '_ {
        self.handlers.keys().copied()
    }

    pub fn serves(&self, trigger: Trigger) -> bool {
        self.handlers.contains_key(&trigger)
    }

    /// Instantiates the plugin once, as a request would, and checks the
    /// types of every trigger export against the contract.
    async fn probe(&self, limits: &Limits) -> Result<(), PluginError> {
        let state = CallState::new(limits, Default::default(), LogBudget::new(limits.log_bytes));
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| s.limiter());
        store
            .set_fuel(limits.fuel)
            .map_err(|e| PluginError::Instantiate(e.to_string()))?;
        store.epoch_deadline_async_yield_and_update(1);
        let instantiate = self.pre.instantiate_async(&mut store);
        let instance = match tokio::time::timeout(limits.timeout, instantiate).await {
            Ok(Ok(instance)) => instance,
            Ok(Err(e)) => return Err(PluginError::Instantiate(format!("{e:#}"))),
            Err(_) => {
                return Err(PluginError::Instantiate(format!(
                    "did not finish within {:?}",
                    limits.timeout
                )))
            }
        };
        for trigger in self.triggers() {
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
