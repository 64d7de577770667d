//! The dispatcher: the one entry every way in calls (the HTTP events
//! route, the Lambda route, `triggerfish invoke`, and later the stream
//! consumers). For each event it takes a slot of the tenant's concurrency
//! quota, routes the event to its trigger, runs the tenant's chain, and
//! hands the outcome to every registered [`Sink`].
//!
//! - [`chain`]: order, budget and retries of one chain.
//! - [`call`]: one plugin call and how it failed.
//! - [`error`]: what can go wrong, and the kinds the API names.

pub mod call;
pub mod chain;
pub mod error;

pub use chain::{PluginCall, Tally};
pub use error::{ChainError, ErrorKind, InvokeError};

use crate::engine::state::LogTail;
use crate::tenant::Tenant;
use crate::trigger::{Family, Trigger};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{field, Instrument};

/// One event's outcome, as the sinks see it.
#[derive(Debug)]
pub struct Outcome<'a> {
    pub tenant: &'a str,
    /// The trigger the event was routed to; none if it could not be.
    pub trigger: Option<Trigger>,
    /// How it ended: the event as the chain left it, or the error.
    pub result: &'a Result<Value, InvokeError>,
    /// Wall-clock time from the dispatcher taking the event to the end.
    pub duration: Duration,
    /// Plugin calls, attempts and fuel.
    pub tally: &'a Tally,
}

impl Outcome<'_> {
    /// A short name for how the event ended: `ok`, a chain error's kind
    /// (`denied`, `timeout`, ...), `too-many-requests`, or `bad-event`.
    pub fn label(&self) -> &'static str {
        label(self.result)
    }
}

fn label(result: &Result<Value, InvokeError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(InvokeError::Chain(e)) => e.kind.as_str(),
        Err(InvokeError::TooManyRequests { .. }) => "too-many-requests",
        Err(InvokeError::Route(_) | InvokeError::Shape { .. }) => "bad-event",
        Err(InvokeError::SyncStore(_)) => "sync-store-failed",
    }
}

/// Receives every outcome, after the event is answered or refused. Called
/// on the request path: a sink must be quick and must not block (hand
/// slow work to a task of its own).
pub trait Sink: Send + Sync {
    fn record(&self, outcome: &Outcome<'_>);
}

/// Writes each outcome to the log, at debug level (tenant, trigger,
/// outcome, duration, calls, fuel).
pub struct LogSink;

impl Sink for LogSink {
    fn record(&self, outcome: &Outcome<'_>) {
        tracing::debug!(
            tenant = outcome.tenant,
            trigger = outcome.trigger.map(Trigger::wit_name),
            outcome = outcome.label(),
            duration_us = outcome.duration.as_micros() as u64,
            calls = outcome.tally.calls,
            attempts = outcome.tally.attempts,
            fuel = outcome.tally.fuel,
            "invocation finished"
        );
    }
}

/// The single entry for events, with the sinks that see their outcomes.
#[derive(Clone, Default)]
pub struct Dispatcher {
    sinks: Vec<Arc<dyn Sink>>,
    /// Dataset state and Cognito Streams; none: syncs are not kept.
    cognito: Option<Arc<crate::cognito::Cognito>>,
}

impl Dispatcher {
    /// A dispatcher with no sinks.
    pub fn new() -> Dispatcher {
        Dispatcher::default()
    }

    /// Adds a sink; every outcome from now on reaches it.
    pub fn with_sink(mut self, sink: Arc<dyn Sink>) -> Dispatcher {
        self.sinks.push(sink);
        self
    }

    /// Keeps the dataset state of every sync a chain accepts, and
    /// publishes it for tenants with `[cognito-streams]`.
    pub fn with_cognito(mut self, cognito: Arc<crate::cognito::Cognito>) -> Dispatcher {
        self.cognito = Some(cognito);
        self
    }

    /// The Cognito Streams service, if this dispatcher keeps syncs.
    pub fn cognito(&self) -> Option<&Arc<crate::cognito::Cognito>> {
        self.cognito.as_ref()
    }

    /// Runs `event` for `tenant` and returns the event as the chain left
    /// it. The caller has already checked the caller's credentials.
    pub async fn dispatch(&self, tenant: &Tenant, event: Value) -> Result<Value, InvokeError> {
        self.dispatch_tallied(tenant, event, Tally::default()).await
    }

    /// Like [`Dispatcher::dispatch`], and also returns the last
    /// [`LogTail::LAMBDA_BYTES`] of this invocation's plugin log lines
    /// (all plugins of its chain, every attempt, and how a call failed):
    /// what Lambda's `X-Amz-Log-Type: Tail` returns. The lines are
    /// gathered for this invocation alone.
    pub async fn dispatch_with_log_tail(
        &self,
        tenant: &Tenant,
        event: Value,
    ) -> (Result<Value, InvokeError>, String) {
        let tail = LogTail::new(LogTail::LAMBDA_BYTES);
        let tally = Tally {
            log_tail: Some(tail.clone()),
            ..Tally::default()
        };
        let result = self.dispatch_tallied(tenant, event, tally).await;
        (result, tail.text())
    }

    async fn dispatch_tallied(
        &self,
        tenant: &Tenant,
        event: Value,
        mut tally: Tally,
    ) -> Result<Value, InvokeError> {
        let started = Instant::now();
        let routed = Trigger::route(&event);
        let trigger = routed.as_ref().ok().copied();
        let result = match routed {
            Err(e) => Err(e.into()),
            Ok(trigger) => self.run(tenant, trigger, event, &mut tally).await,
        };
        let outcome = Outcome {
            tenant: &tenant.name,
            trigger,
            result: &result,
            duration: started.elapsed(),
            tally: &tally,
        };
        for sink in &self.sinks {
            sink.record(&outcome);
        }
        result
    }

    async fn run(
        &self,
        tenant: &Tenant,
        trigger: Trigger,
        event: Value,
        tally: &mut Tally,
    ) -> Result<Value, InvokeError> {
        let _slot = tenant.try_start().ok_or(InvokeError::TooManyRequests {
            limit: tenant.quotas.concurrency,
        })?;
        // Plugin log lines and call spans nest under this one, so each
        // carries its tenant and trigger.
        let span = tracing::info_span!(
            "invoke",
            tenant = %tenant.name,
            %trigger,
            outcome = field::Empty,
        );
        async move {
            let mut result = chain::run(tenant, trigger, event, tally).await;
            // Publish, or it did not happen: a sync is answered only once
            // its state and record are kept, before any sink sees it.
            if let (Ok(out), Some(cognito), Family::Sync) =
                (&result, &self.cognito, trigger.family())
            {
                if let Err(error) = cognito.after_sync(tenant, out).await {
                    tracing::warn!(%error, "a sync's outcome could not be stored");
                    result = Err(InvokeError::SyncStore(error.to_string()));
                }
            }
            tracing::Span::current().record("outcome", label(&result));
            result
        }
        .instrument(span)
        .await
    }
}
