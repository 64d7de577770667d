//! A tenant's chain for one trigger: its plugins in file-name order, each
//! given the event as the one before it left it; the first error stops
//! the chain. The whole chain has the tenant's wall-clock budget per
//! attempt, and only failures that can pass on a second try (a plugin
//! starved of CPU by other tenants, an overloaded host) are retried: see
//! [`ErrorKind::Timeout`].

use super::call::{Attempt, Call};
use super::error::{ChainError, ErrorKind, InvokeError};
use crate::engine::state::{LogBudget, LogTail};
use crate::families::Args;
use crate::plugin::Plugin;
use crate::tenant::Tenant;
use crate::trigger::Trigger;
use serde_json::Value;
use std::sync::Arc;
use tokio::time::Instant;

/// What running a chain cost, for the sinks: every attempt counts.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Plugin calls made, retries included.
    pub calls: u32,
    /// Fuel those calls used.
    pub fuel: u64,
    /// Attempts made.
    pub attempts: u32,
    /// Each plugin call, in order, retries included: for the per-plugin
    /// metrics.
    pub plugin_calls: Vec<PluginCall>,
    /// The invocation's plugin log lines, when its caller asked for them
    /// (see [`super::Dispatcher::dispatch_with_log_tail`]); this
    /// invocation's own, never shared with another.
    pub log_tail: Option<Arc<LogTail>>,
}

/// One plugin call as the sinks see it.
#[derive(Debug, Clone)]
pub struct PluginCall {
    /// The plugin as loaded (so a label from its name names a plugin
    /// that exists).
    pub plugin: Arc<Plugin>,
    /// `ok`, `denied`, or the kind it failed with (`timeout`, ...).
    pub outcome: &'static str,
    /// Fuel it used.
    pub fuel: u64,
}

/// Runs `event` through the tenant's plugins serving `trigger`. A tenant
/// with no such plugin gets its family's answer for an unserved event
/// (the event unchanged, as Cognito does with no trigger configured; for
/// stream records, no failures).
pub(crate) async fn run(
    tenant: &Tenant,
    trigger: Trigger,
    event: Value,
    tally: &mut Tally,
) -> Result<Value, InvokeError> {
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
        return Ok(trigger.family().unserved(event));
    };
    let handler = &first.compiled.handlers[&trigger];
    loop {
        tally.attempts += 1;
        let attempt = tally.attempts;
        let args = Args::from_event(trigger, handler, &event)
            .map_err(|error| InvokeError::Shape { trigger, error })?;
        match run_attempt(tenant, trigger, &chain, args, tally).await {
            Ok(args) => {
                return args.into_event(event).map_err(|error| {
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
    tally: &mut Tally,
) -> Result<Args, AttemptFailure> {
    let deadline = Instant::now() + tenant.limits.timeout;
    let log_budget = LogBudget::new(tenant.limits.log_bytes);
    let mut attempt = Attempt::new(chain.len());
    for plugin in chain {
        if args.is_spent() {
            break;
        }
        let settings = tenant.settings_for(&plugin.name);
        let call = Call {
            tenant: &tenant.name,
            plugin,
            handler: &plugin.compiled.handlers[&trigger],
            limits: &settings.limits,
            config: settings.config.clone(),
            outbound: settings.outbound.clone(),
            log_budget: log_budget.clone(),
            log_tail: tally.log_tail.clone(),
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
        let called = call.run(&mut attempt, &args.values).await;
        tally.calls += 1;
        tally.fuel += called.fuel;
        tally.plugin_calls.push(PluginCall {
            plugin: Arc::clone(plugin),
            outcome: match &called.result {
                Ok(Ok(_)) => "ok",
                Ok(Err(_)) => ErrorKind::Denied.as_str(),
                Err(f) => f.kind.as_str(),
            },
            fuel: called.fuel,
        });
        // How the call failed ends the caller's tail, as Lambda's runtime
        // writes a function's error into its log.
        if let (Some(tail), Err(failure)) = (&tally.log_tail, &called.result) {
            tail.push(
                "ERROR",
                &plugin.name,
                &format!("{}: {}", failure.kind.as_str(), failure.message),
            );
        }
        if let (Some(tail), Ok(Err(denial))) = (&tally.log_tail, &called.result) {
            tail.push("ERROR", &plugin.name, &format!("denied: {denial}"));
        }
        match called.result {
            Ok(Ok(ok)) => args
                .fold(ok)
                .map_err(|message| fail(ErrorKind::InvalidOutput, message, false))?,
            Ok(Err(denial)) => return Err(fail(ErrorKind::Denied, denial, false)),
            Err(f) => return Err(fail(f.kind, f.message, f.can_pass)),
        }
    }
    Ok(args)
}
