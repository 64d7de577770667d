//! Running an event through a tenant's chain of plugins.
//!
//! Plugins serving the event's trigger run one after another in file-name
//! order; each gets the response (or sync records) as the previous one left
//! it. The first error stops the chain. The whole chain has the tenant's
//! wall-clock budget per attempt, and only failures that can pass on a
//! second try (a plugin starved of CPU, an overloaded host) are retried.

use crate::convert::{to_json, to_val, ConvertError};
use crate::limits::Limits;
use crate::outbound::Outbound;
use crate::plugin::{Handler, Plugin};
use crate::runtime::{CallState, LogBudget, PluginConfig, EPOCH_TICK};
use crate::tenant::Tenant;
use crate::trigger::{RouteError, Trigger};
use serde_json::Value;
use std::sync::Arc;
use tokio::time::Instant;
use tracing::{field, Instrument};
use wasmtime::component::{Type, Val};
use wasmtime::{PoolConcurrencyLimitError, Trap};

/// What kind of failure stopped a chain. The names are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A plugin returned an error: the event is refused with its message.
    Denied,
    /// The chain ran past its wall-clock budget.
    Timeout,
    /// A plugin call used up its fuel.
    OutOfFuel,
    /// A plugin tried to grow its memory past its limit.
    OutOfMemory,
    /// A plugin trapped: panic, stack overflow, bad memory access and so on.
    Trap,
    /// A plugin returned something the host cannot send back (too large,
    /// or not representable as JSON).
    InvalidOutput,
    /// A plugin file of the tenant cannot be loaded, so its chain cannot
    /// run as configured.
    NoHandler,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Denied => "denied",
            ErrorKind::Timeout => "timeout",
            ErrorKind::OutOfFuel => "out-of-fuel",
            ErrorKind::OutOfMemory => "out-of-memory",
            ErrorKind::Trap => "trap",
            ErrorKind::InvalidOutput => "invalid-output",
            ErrorKind::NoHandler => "no-handler",
        }
    }

    /// The kind as an exception name, for Lambda's `errorType`.
    pub fn error_type(self) -> &'static str {
        match self {
            ErrorKind::Denied => "Denied",
            ErrorKind::Timeout => "Timeout",
            ErrorKind::OutOfFuel => "OutOfFuel",
            ErrorKind::OutOfMemory => "OutOfMemory",
            ErrorKind::Trap => "Trap",
            ErrorKind::InvalidOutput => "InvalidOutput",
            ErrorKind::NoHandler => "NoHandler",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A chain that stopped on an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainError {
    pub kind: ErrorKind,
    pub trigger: Trigger,
    /// The plugin that failed, if one did.
    pub plugin: Option<String>,
    /// The handler's own message for a denial; what went wrong otherwise.
    pub message: String,
    /// Attempts made, retries included.
    pub attempts: u32,
}

impl ChainError {
    /// The message in Cognito's words: "PreSignUp failed with error <message>."
    pub fn cognito_message(&self) -> String {
        format!(
            "{} failed with error {}.",
            self.trigger.cognito_name(),
            self.message
        )
    }
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}", self.cognito_message(), self.kind)?;
        if let Some(plugin) = &self.plugin {
            write!(f, " in plugin {plugin}")?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for ChainError {}

/// Why an event could not be run.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The event cannot be routed to a trigger.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The event does not fit the trigger's shape.
    #[error("the event does not fit the {trigger} trigger: {error}")]
    Shape {
        trigger: Trigger,
        error: ConvertError,
    },
    /// The chain ran and stopped on an error.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The tenant already runs as many invocations as its quota allows.
    #[error("the tenant already runs {limit} invocations at once, its [quotas] concurrency; try again shortly")]
    TooManyRequests { limit: usize },
}

/// Where a `handle` parameter comes from in the event, and whether the
/// chain carries it from one plugin to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Read-only fields at the top of the event (`context`, sync `event`).
    Top,
    /// A read-only object under a key (`request`).
    Under(&'static str),
    /// The part plugins change (`response`, sync `datasetRecords`).
    Carried(&'static str),
}

fn role(param: &str) -> Role {
    match param {
        "request" => Role::Under("request"),
        "response" => Role::Carried("response"),
        "records" => Role::Carried("datasetRecords"),
        _ => Role::Top,
    }
}

/// The arguments of one chain run: the event as component values.
struct Args {
    values: Vec<Val>,
    /// Index and type of the carried argument.
    carried: Option<(usize, Type)>,
}

impl Args {
    fn from_event(handler: &Handler, event: &Value) -> Result<Args, ConvertError> {
        let mut values = Vec::with_capacity(handler.params.len());
        let mut carried = None;
        for (i, (name, ty)) in handler.params.iter().enumerate() {
            let value = match role(name) {
                Role::Top => to_val(ty, Some(event))?,
                Role::Under(key) => to_val(ty, event.get(key)).map_err(|e| e.within(key))?,
                Role::Carried(key) => {
                    carried = Some((i, ty.clone()));
                    to_val(ty, event.get(key)).map_err(|e| e.within(key))?
                }
            };
            values.push(value);
        }
        Ok(Args { values, carried })
    }

    /// Takes a plugin's `ok` value as the new carried argument. Sync records
    /// merge by key (a record left out stays as it was); a response replaces
    /// the old one whole.
    fn carry(&mut self, handler: &Handler, ok: Option<Val>) {
        let (Some((index, _)), Some(new)) = (&self.carried, ok) else {
            return;
        };
        let slot = &mut self.values[*index];
        if role(&handler.params[*index].0) == Role::Carried("datasetRecords") {
            merge_records(slot, new);
        } else {
            *slot = new;
        }
    }

    /// Writes the carried argument back into the event.
    fn into_event(self, handler: &Handler, mut event: Value) -> Result<Value, ConvertError> {
        if let Some((index, ty)) = &self.carried {
            let Role::Carried(key) = role(&handler.params[*index].0) else {
                return Ok(event);
            };
            let json =
                to_json(ty, &self.values[*index], event.get(key)).map_err(|e| e.within(key))?;
            if let Value::Object(object) = &mut event {
                object.insert(key.to_owned(), json);
            }
        }
        Ok(event)
    }
}

/// Merges sync records returned by a plugin into the current ones: a
/// returned key replaces its record or adds one, and keys left out stay.
fn merge_records(current: &mut Val, returned: Val) {
    let (Val::List(current), Val::List(returned)) = (current, returned) else {
        return;
    };
    for entry in returned {
        let key = match &entry {
            Val::Tuple(pair) => pair.first().cloned(),
            _ => None,
        };
        let existing = current
            .iter_mut()
            .find(|e| matches!(e, Val::Tuple(pair) if pair.first() == key.as_ref()));
        match existing {
            Some(slot) => *slot = entry,
            None => current.push(entry),
        }
    }
}

/// Converts `event` to the values `plugin`'s handler for `trigger` takes
/// and back, as a chain whose plugins change nothing would: what tests and
/// fuzzing use to check that conversion loses nothing.
pub fn round_trip(plugin: &Plugin, trigger: Trigger, event: Value) -> Result<Value, ConvertError> {
    let Some(handler) = plugin.compiled.handlers.get(&trigger) else {
        return Ok(event);
    };
    Args::from_event(handler, &event)?.into_event(handler, event)
}

/// Runs `event` through the tenant's chain and returns the event as the
/// chain left it. A tenant with no plugin for the trigger gets the event
/// back unchanged, as Cognito does with no trigger configured.
pub async fn invoke(tenant: &Tenant, event: Value) -> Result<Value, InvokeError> {
    let trigger = Trigger::route(&event)?;
    let _slot = tenant.try_start().ok_or(InvokeError::TooManyRequests {
        limit: tenant.quotas.concurrency,
    })?;
    let source = event
        .get("triggerSource")
        .and_then(|s| s.as_str())
        .unwrap_or("SyncTrigger");
    let span = tracing::info_span!(
        "invoke",
        tenant = %tenant.name,
        trigger_source = %source,
        %trigger,
        outcome = field::Empty,
    );
    async move {
        let result = run(tenant, trigger, event).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(InvokeError::Chain(e)) => e.kind.as_str(),
            Err(_) => "bad-event",
        };
        tracing::Span::current().record("outcome", outcome);
        result
    }
    .instrument(span)
    .await
}

async fn run(tenant: &Tenant, trigger: Trigger, event: Value) -> Result<Value, InvokeError> {
    if let Some(failure) = tenant.failures.iter().find(|f| !f.serving_previous) {
        return Err(ChainError {
            kind: ErrorKind::NoHandler,
            trigger,
            plugin: Some(failure.plugin.clone()),
            message: format!(
                "plugin {} could not be loaded, so the chain cannot run: {}",
                failure.plugin, failure.error
            ),
            attempts: 0,
        }
        .into());
    }
    let chain: Vec<&Arc<Plugin>> = tenant
        .plugins
        .iter()
        .filter(|p| p.serves(trigger))
        .collect();
    let Some(first) = chain.first() else {
        return Ok(event);
    };
    let handler = &first.compiled.handlers[&trigger];
    let shape_error = |error| InvokeError::Shape { trigger, error };
    let mut attempt = 1;
    loop {
        let args = Args::from_event(handler, &event).map_err(shape_error)?;
        match run_attempt(tenant, trigger, &chain, args).await {
            Ok(args) => {
                return args.into_event(handler, event).map_err(|error| {
                    ChainError {
                        kind: ErrorKind::InvalidOutput,
                        trigger,
                        plugin: None,
                        message: error.to_string(),
                        attempts: attempt,
                    }
                    .into()
                })
            }
            Err(failure) if failure.can_pass && attempt < tenant.limits.attempts => {
                tracing::warn!(attempt, error = %failure.error.message, "attempt failed; retrying");
                attempt += 1;
            }
            Err(failure) => {
                return Err(ChainError {
                    attempts: attempt,
                    ..failure.error
                }
                .into())
            }
        }
    }
}

/// A failed attempt, and whether another could pass.
struct AttemptFailure {
    error: ChainError,
    can_pass: bool,
}

async fn run_attempt(
    tenant: &Tenant,
    trigger: Trigger,
    chain: &[&Arc<Plugin>],
    mut args: Args,
) -> Result<Args, AttemptFailure> {
    let deadline = Instant::now() + tenant.limits.timeout;
    let log_budget = LogBudget::new(tenant.limits.log_bytes);
    for plugin in chain {
        let settings = tenant.settings_for(&plugin.name);
        let handler = &plugin.compiled.handlers[&trigger];
        let call = Call {
            plugin,
            handler,
            limits: &settings.limits,
            config: settings.config.clone(),
            outbound: settings.outbound.clone(),
            log_budget: log_budget.clone(),
            deadline,
            budget: tenant.limits.timeout,
        };
        let fail = |kind, message, can_pass| AttemptFailure {
            error: ChainError {
                kind,
                trigger,
                plugin: Some(plugin.name.clone()),
                message,
                attempts: 0,
            },
            can_pass,
        };
        match call.run(&args.values).await {
            Ok(Ok(ok)) => args.carry(handler, ok),
            Ok(Err(denial)) => return Err(fail(ErrorKind::Denied, denial, false)),
            Err(f) => return Err(fail(f.kind, f.message, f.can_pass)),
        }
    }
    Ok(args)
}

/// One plugin call: a fresh store and instance, dropped when it returns.
struct Call<'a> {
    plugin: &'a Plugin,
    handler: &'a Handler,
    limits: &'a Limits,
    config: Arc<PluginConfig>,
    outbound: Arc<Outbound>,
    log_budget: Arc<LogBudget>,
    deadline: Instant,
    /// The whole chain's budget, to tell a starved call from a runaway one.
    budget: std::time::Duration,
}

/// How a call failed, before it is tied to a chain.
struct CallFailure {
    kind: ErrorKind,
    message: String,
    can_pass: bool,
}

impl CallFailure {
    fn new(kind: ErrorKind, message: impl Into<String>) -> CallFailure {
        CallFailure {
            kind,
            message: message.into(),
            can_pass: false,
        }
    }
}

impl Call<'_> {
    /// Runs the call: the handler's ok value (if its trigger returns one),
    /// or its denial message, or how it failed.
    async fn run(&self, args: &[Val]) -> Result<Result<Option<Val>, String>, CallFailure> {
        let span = tracing::info_span!(
            "plugin",
            plugin = %self.plugin.name,
            outcome = field::Empty,
            duration_us = field::Empty,
            fuel = field::Empty,
        );
        let started = std::time::Instant::now();
        // Declared before the store, so the slot is given back only once
        // the instance is gone.
        let slot = self.plugin.compiled.runtime.instance_slot();
        let Ok(_slot) = tokio::time::timeout_at(self.deadline, slot).await else {
            return Err(self.timeout_waiting());
        };
        let state = CallState::new(
            self.limits,
            self.config.clone(),
            self.outbound.clone(),
            self.log_budget.clone(),
        );
        let mut store = self
            .plugin
            .compiled
            .new_store(state, self.limits.fuel)
            .map_err(|e| CallFailure::new(ErrorKind::Trap, e.to_string()))?;

        let mut results = [Val::Bool(false)];
        let outcome = {
            let store = &mut store;
            let results = &mut results;
            let work = async move {
                let instance = self
                    .plugin
                    .compiled
                    .pre
                    .instantiate_async(&mut *store)
                    .await?;
                let func = instance
                    .get_func(&mut *store, self.handler.func)
                    .ok_or_else(|| wasmtime::format_err!("the `handle` export disappeared"))?;
                func.call_async(&mut *store, args, results).await
            };
            tokio::time::timeout_at(self.deadline, work.instrument(span.clone())).await
        };
        let fuel = self
            .limits
            .fuel
            .saturating_sub(store.get_fuel().unwrap_or(0));
        let result = match outcome {
            Err(_elapsed) => Err(self.timeout(store.data())),
            Ok(Err(error)) => Err(self.classify(error, store.data())),
            Ok(Ok(())) => self.take_result(results),
        };
        let outcome = match &result {
            Ok(Ok(_)) => "ok",
            Ok(Err(_)) => "denied",
            Err(f) => f.kind.as_str(),
        };
        span.record("outcome", outcome);
        span.record("duration_us", started.elapsed().as_micros() as u64);
        span.record("fuel", fuel);
        span.in_scope(|| tracing::debug!("plugin call finished"));
        result
    }

    fn take_result(&self, [result]: [Val; 1]) -> Result<Result<Option<Val>, String>, CallFailure> {
        match result {
            Val::Result(Ok(ok)) => {
                let ok = ok.map(|v| *v);
                if let Some(value) = &ok {
                    self.check_output(value)?;
                }
                Ok(Ok(ok))
            }
            Val::Result(Err(Some(message))) => match *message {
                Val::String(message) => {
                    self.check_output(&Val::String(message.clone()))?;
                    Ok(Err(message))
                }
                other => Err(CallFailure::new(
                    ErrorKind::InvalidOutput,
                    format!("the error is not a string: {other:?}"),
                )),
            },
            other => Err(CallFailure::new(
                ErrorKind::InvalidOutput,
                format!("`handle` returned {other:?} instead of a result"),
            )),
        }
    }

    /// Refuses output over the size limit, or that JSON cannot carry.
    fn check_output(&self, value: &Val) -> Result<(), CallFailure> {
        let size = output_size(value).map_err(|m| CallFailure::new(ErrorKind::InvalidOutput, m))?;
        if size > self.limits.output_bytes {
            return Err(CallFailure::new(
                ErrorKind::InvalidOutput,
                format!(
                    "the plugin returned {size} bytes, more than its limit of {} bytes",
                    self.limits.output_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The budget ran out while waiting for an instance slot: the host,
    /// not the plugin, was the holdup.
    fn timeout_waiting(&self) -> CallFailure {
        CallFailure {
            kind: ErrorKind::Timeout,
            message: format!(
                "the chain did not finish within {} ms: the host was busy",
                self.budget.as_millis()
            ),
            can_pass: true,
        }
    }

    fn timeout(&self, state: &CallState) -> CallFailure {
        // A call that ran for less than half the budget was waiting for a
        // CPU, not looping: another attempt may well pass.
        let ran = EPOCH_TICK * state.running_ticks;
        CallFailure {
            kind: ErrorKind::Timeout,
            message: format!(
                "the chain did not finish within {} ms",
                self.budget.as_millis()
            ),
            can_pass: ran < self.budget / 2,
        }
    }

    fn classify(&self, error: wasmtime::Error, state: &CallState) -> CallFailure {
        if error.is::<PoolConcurrencyLimitError>() {
            return CallFailure {
                kind: ErrorKind::Timeout,
                message: "the host is overloaded: no free plugin instance slot".to_owned(),
                can_pass: true,
            };
        }
        let memory_refused = state.limiter_memory_refused();
        if memory_refused {
            return CallFailure::new(
                ErrorKind::OutOfMemory,
                format!(
                    "the plugin tried to grow its memory past its limit of {} MiB",
                    self.limits.memory_bytes >> 20
                ),
            );
        }
        let Some(trap) = error.downcast_ref::<Trap>() else {
            return CallFailure::new(ErrorKind::Trap, format!("{error:#}"));
        };
        match trap {
            Trap::OutOfFuel => CallFailure::new(
                ErrorKind::OutOfFuel,
                format!("the plugin used up its fuel ({} units)", self.limits.fuel),
            ),
            Trap::Interrupt => self.timeout(state),
            Trap::StackOverflow => CallFailure::new(
                ErrorKind::Trap,
                format!(
                    "the plugin trapped: stack overflow (its WebAssembly stack is limited to {} KiB)",
                    crate::runtime::MAX_WASM_STACK >> 10
                ),
            ),
            trap => {
                let mut message = format!("the plugin trapped: {trap}");
                if let Some(line) = state.last_stderr_line() {
                    message.push_str(&format!(" ({line})"));
                }
                CallFailure::new(ErrorKind::Trap, message)
            }
        }
    }
}

/// Bytes of string data in a returned value, or why JSON cannot carry it.
fn output_size(value: &Val) -> Result<u64, String> {
    Ok(match value {
        Val::String(s) => s.len() as u64,
        Val::Float32(n) if !n.is_finite() => return Err(format!("{n} is not a JSON number")),
        Val::Float64(n) if !n.is_finite() => return Err(format!("{n} is not a JSON number")),
        Val::Variant(case, Some(payload)) if case == "json" => {
            if let Val::String(text) = payload.as_ref() {
                serde_json::from_str::<serde::de::IgnoredAny>(text)
                    .map_err(|e| format!("the `json` claim value is not JSON: {e}"))?;
            }
            output_size(payload)?
        }
        Val::Variant(_, Some(inner)) | Val::Option(Some(inner)) => output_size(inner)?,
        Val::List(items) | Val::Tuple(items) => {
            let mut total = 0u64;
            for item in items {
                total += output_size(item)?;
            }
            total
        }
        Val::Record(fields) => {
            let mut total = 0u64;
            for (_, field) in fields {
                total += output_size(field)?;
            }
            total
        }
        _ => 8,
    })
}
