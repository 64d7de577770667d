//! The recent history of each tenant, for the status page: a [`Sink`]
//! keeping a small ring of outcomes and of failures per tenant.
//!
//! Bounded: at most [`MAX_OUTCOMES`] outcomes (none older than
//! [`WINDOW`]) and [`MAX_FAILURES`] failures per tenant, each failure's
//! message cut to [`MAX_MESSAGE_CHARS`]; tenants are only those the
//! dispatcher ran events for, which exist. A restart forgets it all.

use crate::dispatch::{InvokeError, Outcome, Sink};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How far back the figures go.
pub const WINDOW: Duration = Duration::from_secs(5 * 60);
/// Outcomes kept per tenant; at higher rates the figures cover less than
/// [`WINDOW`] (the page says how much).
pub const MAX_OUTCOMES: usize = 4096;
/// Failures kept per tenant, newest first.
pub const MAX_FAILURES: usize = 20;
/// A failure's message is cut to this many characters.
pub const MAX_MESSAGE_CHARS: usize = 500;

struct Entry {
    at: Instant,
    duration: Duration,
    ok: bool,
    denied: bool,
}

/// An event that did not end `ok`.
#[derive(Debug, Clone)]
pub struct Failure {
    pub at: SystemTime,
    /// The trigger's WIT name, or `none` if the event could not be routed.
    pub trigger: &'static str,
    /// The outcome's label: `denied`, `timeout`, `too-many-requests`, ...
    pub kind: &'static str,
    pub plugin: Option<String>,
    /// What went wrong (the plugin's own message for a denial), cut to
    /// [`MAX_MESSAGE_CHARS`].
    pub message: String,
}

#[derive(Default)]
struct History {
    outcomes: VecDeque<Entry>,
    failures: VecDeque<Failure>,
}

/// A tenant's figures over the recent past.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub invocations: usize,
    /// Denied by a plugin (the chain's decision, not a fault).
    pub denied: usize,
    /// Ended in any other way than `ok` or `denied`.
    pub failed: usize,
    /// Latency percentiles of the kept outcomes.
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// How far back the kept outcomes go (at most [`WINDOW`]).
    pub covers: Duration,
}

impl Summary {
    /// Failed (not denied) invocations as a fraction of all.
    pub fn error_rate(&self) -> f64 {
        if self.invocations == 0 {
            0.0
        } else {
            self.failed as f64 / self.invocations as f64
        }
    }
}

/// The recent history of every tenant.
#[derive(Default)]
pub struct Recent {
    tenants: Mutex<HashMap<String, History>>,
}

impl Recent {
    pub fn new() -> Recent {
        Recent::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, History>> {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tenant's figures over the kept outcomes.
    pub fn summary(&self, tenant: &str) -> Summary {
        let now = Instant::now();
        let mut tenants = self.lock();
        let Some(history) = tenants.get_mut(tenant) else {
            return Summary::default();
        };
        expire(&mut history.outcomes, now);
        let outcomes = &history.outcomes;
        let mut durations: Vec<Duration> = outcomes.iter().map(|e| e.duration).collect();
        durations.sort_unstable();
        let percentile = |p: f64| {
            if durations.is_empty() {
                Duration::ZERO
            } else {
                let rank = ((durations.len() as f64 * p).ceil() as usize).max(1) - 1;
                durations[rank.min(durations.len() - 1)]
            }
        };
        Summary {
            invocations: outcomes.len(),
            denied: outcomes.iter().filter(|e| e.denied).count(),
            failed: outcomes.iter().filter(|e| !e.ok && !e.denied).count(),
            p50: percentile(0.5),
            p99: percentile(0.99),
            max: durations.last().copied().unwrap_or_default(),
            covers: outcomes
                .front()
                .map_or(Duration::ZERO, |e| now.duration_since(e.at)),
        }
    }

    /// The tenant's recent failures, newest first.
    pub fn failures(&self, tenant: &str) -> Vec<Failure> {
        self.lock()
            .get(tenant)
            .map(|h| h.failures.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets tenants for which `keep` is false (those that are gone).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|name, _| keep(name));
    }
}

fn expire(outcomes: &mut VecDeque<Entry>, now: Instant) {
    while outcomes
        .front()
        .is_some_and(|e| now.duration_since(e.at) > WINDOW)
    {
        outcomes.pop_front();
    }
}

fn failure_message(result: &Result<serde_json::Value, InvokeError>) -> (Option<String>, String) {
    match result {
        Ok(_) => (None, String::new()),
        Err(InvokeError::Chain(error)) => (error.plugin.clone(), error.message.clone()),
        Err(other) => (None, other.to_string()),
    }
}

impl Sink for Recent {
    fn record(&self, outcome: &Outcome<'_>) {
        let now = Instant::now();
        let label = outcome.label();
        let entry = Entry {
            at: now,
            duration: outcome.duration,
            ok: label == "ok",
            denied: label == "denied",
        };
        let failure = (!entry.ok).then(|| {
            let (plugin, mut message) = failure_message(outcome.result);
            if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
                message.truncate(cut);
                message.push('…');
            }
            Failure {
                at: SystemTime::now(),
                trigger: outcome
                    .trigger
                    .map_or("none", crate::trigger::Trigger::wit_name),
                kind: label,
                plugin,
                message,
            }
        });
        let mut tenants = self.lock();
        let history = match tenants.get_mut(outcome.tenant) {
            Some(history) => history,
            None => tenants.entry(outcome.tenant.to_owned()).or_default(),
        };
        expire(&mut history.outcomes, now);
        if history.outcomes.len() == MAX_OUTCOMES {
            history.outcomes.pop_front();
        }
        history.outcomes.push_back(entry);
        if let Some(failure) = failure {
            if history.failures.len() == MAX_FAILURES {
                history.failures.pop_back();
            }
            history.failures.push_front(failure);
        }
    }
}
