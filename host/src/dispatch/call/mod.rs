//! One plugin call: a fresh instance from the plugin's `InstancePre`, in
//! the store its chain attempt shares (`Attempt`, in attempt.rs), held to
//! its limits; and the classification of how it failed (the kinds of
//! [`ErrorKind`]).

use super::error::ErrorKind;
use crate::engine::outbound::Outbound;
use crate::engine::state::{CallState, LogBudget, LogTail, PluginConfig};
use crate::limits::Limits;
use crate::plugin::{Handler, Plugin};
use std::sync::Arc;
use tokio::time::Instant;
use tracing::{field, Instrument};
use wasmtime::component::Val;
use wasmtime::{PoolConcurrencyLimitError, Trap};

/// Timings of a call's phases, for `triggerfish-bench` only: not part of
/// the host's API, and never on the request path.
#[doc(hidden)]
pub mod measure;

mod attempt;
pub(crate) use attempt::Attempt;

/// One plugin call: a fresh instance in its attempt's store.
pub(crate) struct Call<'a> {
    /// The tenant whose share of CPU turns the call takes.
    pub(crate) tenant: &'a str,
    pub(crate) plugin: &'a Plugin,
    pub(crate) handler: &'a Handler,
    pub(crate) limits: &'a Limits,
    pub(crate) config: Arc<PluginConfig>,
    pub(crate) outbound: Arc<Outbound>,
    pub(crate) log_budget: Arc<LogBudget>,
    /// Where the invocation's log lines are kept for its caller, if asked.
    pub(crate) log_tail: Option<Arc<LogTail>>,
    pub(crate) deadline: Instant,
    /// The whole chain's budget, to tell a starved call from a runaway one.
    pub(crate) budget: std::time::Duration,
}

/// How a call failed, before it is tied to a chain.
pub(crate) struct CallFailure {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    /// Whether another attempt could pass (the host, not the plugin, was
    /// the holdup).
    pub(crate) can_pass: bool,
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

/// What a call's handler returned: its `ok` value (if its trigger returns
/// one), or its denial message.
pub(crate) type Returned = Result<Option<Val>, String>;

/// A finished call: what it returned or how it failed, and the fuel it
/// used.
pub(crate) struct Called {
    pub(crate) result: Result<Returned, CallFailure>,
    pub(crate) fuel: u64,
}

/// Each value a plugin returns costs at least this many bytes against its
/// output limit, so a flood of empty strings or empty records is bounded
/// like a long string is.
pub const OUTPUT_BYTES_PER_VALUE: u64 = 8;

impl Call<'_> {
    /// Runs the call, as a call of `attempt`.
    pub(crate) async fn run(&self, attempt: &mut Attempt, args: &[Val]) -> Called {
        let (result, fuel) = self.run_inner(attempt, args).await;
        Called { result, fuel }
    }

    async fn run_inner(
        &self,
        attempt: &mut Attempt,
        args: &[Val],
    ) -> (Result<Returned, CallFailure>, u64) {
        let span = tracing::info_span!(
            "plugin",
            plugin = %self.plugin.name,
            outcome = field::Empty,
            duration_us = field::Empty,
            fuel = field::Empty,
        );
        let started = std::time::Instant::now();
        let runtime = &self.plugin.compiled.runtime;
        if attempt.take_slots(runtime, self.deadline).await.is_err() {
            return (Err(self.timeout_waiting()), 0);
        }
        // The call's claim on CPU turns: its plugin runs only while it
        // holds one.
        let turn = self
            .plugin
            .compiled
            .runtime
            .scheduler()
            .register(self.tenant);
        let mut state = CallState::new(
            self.limits,
            self.config.clone(),
            self.outbound.clone(),
            self.log_budget.clone(),
        );
        state.turn = Some(turn.clone());
        if let Some(tail) = &self.log_tail {
            state.capture_logs(tail.clone(), &self.plugin.name);
        }
        let store = match attempt.store_for(&self.plugin.compiled, state, self.limits.fuel) {
            Ok(store) => store,
            Err(e) => return (Err(CallFailure::new(ErrorKind::Trap, e.to_string())), 0),
        };
        // Lifting what the plugin returns is charged against this before
        // the host allocates it: a returned list of millions of empty
        // values is refused instead of taking the host's memory.
        store.set_hostcall_fuel(hostcall_data_limit(self.limits.output_bytes));

        let mut results = [Val::Bool(false)];
        let outcome = {
            let store = &mut *store;
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
            turn.run(self.deadline, work.instrument(span.clone())).await
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
        // Only the debug line below shows these fields (the plugin's own
        // log lines were written before they were known): at `info`,
        // `serve`'s default, recording them would only format text no one
        // reads.
        if tracing::enabled!(tracing::Level::DEBUG) {
            span.record("outcome", outcome);
            span.record("duration_us", started.elapsed().as_micros() as u64);
            span.record("fuel", fuel);
            span.in_scope(|| tracing::debug!("plugin call finished"));
        }
        (result, fuel)
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
                    "the plugin returned {size} bytes, more than its limit of {} bytes \
                     (each value counts at least {OUTPUT_BYTES_PER_VALUE} bytes)",
                    self.limits.output_bytes
                ),
            ));
        }
        Ok(())
    }

    fn too_much_output(&self) -> CallFailure {
        CallFailure::new(
            ErrorKind::InvalidOutput,
            format!(
                "the plugin returned more data than the host copies for its output limit of {} bytes",
                self.limits.output_bytes
            ),
        )
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

    /// The budget ran out during the call. Another attempt could pass only
    /// if the call was starved rather than slow: it ran (held a CPU turn)
    /// for less than half the budget, and what it waited behind was not
    /// its own tenant's calls (see [`Turn::crowded`]).
    ///
    /// [`Turn::crowded`]: crate::engine::scheduler::Turn::crowded
    fn timeout(&self, state: &CallState) -> CallFailure {
        let (ran, crowded) = state
            .turn
            .as_ref()
            .map_or((std::time::Duration::ZERO, false), |t| {
                (t.cpu(), t.crowded())
            });
        CallFailure {
            kind: ErrorKind::Timeout,
            message: format!(
                "the chain did not finish within {} ms",
                self.budget.as_millis()
            ),
            can_pass: ran < self.budget / 2 && !crowded,
        }
    }

    fn classify(&self, error: wasmtime::Error, state: &CallState) -> CallFailure {
        if is_hostcall_data_exhausted(&error) {
            return self.too_much_output();
        }
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
                    state.memory_limit() >> 20
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
                    crate::engine::MAX_WASM_STACK >> 10
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

/// The most data wasmtime copies out of a plugin for one returned value:
/// the output limit, with room for the host's own representation of each
/// value (a `Val` is several times larger than the 8 bytes the output
/// limit counts for it).
fn hostcall_data_limit(output_bytes: u64) -> usize {
    usize::try_from(output_bytes.saturating_mul(8).saturating_add(64 << 10)).unwrap_or(usize::MAX)
}

/// Whether wasmtime refused to copy more data out of the plugin than
/// [`hostcall_data_limit`] allows (its error type is private; its message
/// is stable).
fn is_hostcall_data_exhausted(error: &wasmtime::Error) -> bool {
    error
        .chain()
        .any(|e| e.to_string().starts_with("too much data is being copied"))
}

/// What a returned value costs against the output limit: its string bytes,
/// and at least [`OUTPUT_BYTES_PER_VALUE`] for every value; or why JSON
/// cannot carry it.
fn output_size(value: &Val) -> Result<u64, String> {
    Ok(match value {
        Val::String(s) => (s.len() as u64).max(OUTPUT_BYTES_PER_VALUE),
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
            let mut total = OUTPUT_BYTES_PER_VALUE;
            for item in items {
                total += output_size(item)?;
            }
            total
        }
        Val::Record(fields) => {
            let mut total = OUTPUT_BYTES_PER_VALUE;
            for (_, field) in fields {
                total += output_size(field)?;
            }
            total
        }
        _ => OUTPUT_BYTES_PER_VALUE,
    })
}
