//! Prometheus metrics (`GET /metrics`): a [`Sink`] that counts every
//! outcome; the figures read when scraped are in `super::scraped`.
//!
//! Every name starts with `triggerfish_`. Label values are bounded: a
//! tenant label only ever names a tenant that was loaded (the dispatcher
//! sees only those, so an unknown tenant in a URL makes no series), a
//! plugin label only a plugin that is loaded now (series of plugins that
//! are gone are dropped at the next scrape, so renaming files cannot grow
//! the series without end), a trigger label a row of the trigger table or
//! `none`, an outcome label one of [`Outcome::label`]'s.
//!
//! Other parts of the host add their own families with
//! [`Metrics::register`] (the stream consumers' records, lag and so on),
//! before or after the server starts.

use crate::dispatch::{ErrorKind, Outcome, Sink};
use crate::tenant::registry::Tenants;
use crate::trigger::Trigger;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// The prefix of every metric's name.
pub const PREFIX: &str = "triggerfish";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvocationLabels {
    tenant: String,
    trigger: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    tenant: String,
    trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginCallLabels {
    tenant: String,
    plugin: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    tenant: String,
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    tenant: String,
    quota: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Every outcome a plugin call can have, to drop a gone plugin's series.
const CALL_OUTCOMES: [&str; 8] = [
    "ok",
    ErrorKind::Denied.as_str(),
    ErrorKind::Timeout.as_str(),
    ErrorKind::OutOfFuel.as_str(),
    ErrorKind::OutOfMemory.as_str(),
    ErrorKind::Trap.as_str(),
    ErrorKind::InvalidOutput.as_str(),
    ErrorKind::NoHandler.as_str(),
];

/// Latency buckets, in seconds: 500 µs to 10 s (Cognito's budget is 5 s).
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Fuel buckets: 10 thousand to 10 billion units (the default cap is 1e9).
fn fuel_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e4, 10.0, 7))
}

type DurationFamily = Family<TriggerLabels, Histogram, fn() -> Histogram>;
type FuelFamily = Family<PluginLabels, Histogram, fn() -> Histogram>;

/// The host's metrics: a registry other parts add to, and the families
/// the dispatcher's outcomes feed.
pub struct Metrics {
    registry: Mutex<Registry>,
    invocations: Family<InvocationLabels, Counter>,
    duration: DurationFamily,
    plugin_calls: Family<PluginCallLabels, Counter>,
    plugin_fuel: FuelFamily,
    quota_refusals: Family<QuotaLabels, Counter>,
    http_refusals: Family<KindLabels, Counter>,
    /// The plugins (by tenant) that have series, to drop those of plugins
    /// that are no longer loaded.
    plugins_seen: Mutex<HashMap<String, HashSet<String>>>,
    tenants: Arc<Tenants>,
}

impl Metrics {
    /// The metrics of a host serving `tenants`.
    pub fn new(tenants: Arc<Tenants>) -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let invocations = Family::<InvocationLabels, Counter>::default();
        registry.register(
            "invocations",
            "Events run through the dispatcher, by tenant, trigger (`none` if the event could not be routed) and outcome (`ok`, an error kind, `too-many-requests`, `bad-event`)",
            invocations.clone(),
        );
        let duration = DurationFamily::new_with_constructor(duration_histogram);
        registry.register(
            "invocation_duration_seconds",
            "Time from the dispatcher taking an event to its outcome, retries included",
            duration.clone(),
        );
        let plugin_calls = Family::<PluginCallLabels, Counter>::default();
        registry.register(
            "plugin_calls",
            "Plugin calls by tenant, loaded plugin and outcome (`ok`, `denied`, or the kind the call failed with); retries count each call",
            plugin_calls.clone(),
        );
        let plugin_fuel = FuelFamily::new_with_constructor(fuel_histogram);
        registry.register(
            "plugin_call_fuel",
            "Fuel (WebAssembly instructions, roughly) one plugin call used",
            plugin_fuel.clone(),
        );
        let quota_refusals = Family::<QuotaLabels, Counter>::default();
        registry.register(
            "quota_refusals",
            "Events refused at once because the tenant was at a quota (429)",
            quota_refusals.clone(),
        );
        let http_refusals = Family::<KindLabels, Counter>::default();
        registry.register(
            "http_refusals",
            "HTTP requests refused by kind (the `error.kind` of the answer: `unauthorized`, `malformed-json`, `too-many-requests`, ...); no tenant label, as the tenant may not exist",
            http_refusals.clone(),
        );
        registry.register_collector(Box::new(super::scraped::Gauges {
            tenants: tenants.clone(),
        }));
        Metrics {
            registry: Mutex::new(registry),
            invocations,
            duration,
            plugin_calls,
            plugin_fuel,
            quota_refusals,
            http_refusals,
            plugins_seen: Mutex::default(),
            tenants,
        }
    }

    /// Adds a metric (a family, usually) under `triggerfish_<name>`; keep
    /// a clone to update it. Its label values must be bounded like the
    /// rest: names of things that exist, never free text from a request.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry().register(name, help, metric);
    }

    /// Adds a collector, asked for its values at every scrape (for
    /// figures that are cheaper to read than to keep in step).
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.registry().register_collector(collector);
    }

    /// Counts a refused HTTP request by its error kind (a fixed name from
    /// the API, never text from the request).
    pub fn count_refusal(&self, kind: &'static str) {
        self.http_refusals.get_or_create(&KindLabels { kind }).inc();
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything in Prometheus' text format (version 0.0.4 of the
    /// exposition format, with `# EOF` as OpenMetrics ends it).
    pub fn encode(&self) -> String {
        self.forget_gone_plugins();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry())
            .expect("writing to a String does not fail");
        text
    }

    /// Drops the series of plugins no longer loaded.
    fn forget_gone_plugins(&self) {
        let tenants = self.tenants.all();
        let loaded = |tenant: &str, plugin: &str| {
            tenants
                .get(tenant)
                .is_some_and(|t| t.plugins.iter().any(|p| p.name == plugin))
        };
        let mut seen = self.plugins_seen.lock().unwrap_or_else(|e| e.into_inner());
        for (tenant, plugins) in seen.iter_mut() {
            plugins.retain(|plugin| {
                if loaded(tenant, plugin) {
                    return true;
                }
                for outcome in CALL_OUTCOMES {
                    self.plugin_calls.remove(&PluginCallLabels {
                        tenant: tenant.clone(),
                        plugin: plugin.clone(),
                        outcome,
                    });
                }
                self.plugin_fuel.remove(&PluginLabels {
                    tenant: tenant.clone(),
                    plugin: plugin.clone(),
                });
                false
            });
        }
        seen.retain(|_, plugins| !plugins.is_empty());
    }
}

impl Sink for Metrics {
    fn record(&self, outcome: &Outcome<'_>) {
        let tenant = outcome.tenant.to_owned();
        let trigger = outcome.trigger.map_or("none", Trigger::wit_name);
        let label = outcome.label();
        self.invocations
            .get_or_create(&InvocationLabels {
                tenant: tenant.clone(),
                trigger,
                outcome: label,
            })
            .inc();
        self.duration
            .get_or_create(&TriggerLabels {
                tenant: tenant.clone(),
                trigger,
            })
            .observe(outcome.duration.as_secs_f64());
        if label == "too-many-requests" {
            self.quota_refusals
                .get_or_create(&QuotaLabels {
                    tenant: tenant.clone(),
                    quota: "concurrency",
                })
                .inc();
        }
        if outcome.tally.plugin_calls.is_empty() {
            return;
        }
        {
            let mut seen = self.plugins_seen.lock().unwrap_or_else(|e| e.into_inner());
            for call in &outcome.tally.plugin_calls {
                let name = &call.plugin.name;
                match seen.get_mut(outcome.tenant) {
                    Some(plugins) if plugins.contains(name) => {}
                    Some(plugins) => {
                        plugins.insert(name.clone());
                    }
                    None => {
                        seen.insert(tenant.clone(), HashSet::from([name.clone()]));
                    }
                }
            }
        }
        for call in &outcome.tally.plugin_calls {
            let plugin = call.plugin.name.clone();
            self.plugin_calls
                .get_or_create(&PluginCallLabels {
                    tenant: tenant.clone(),
                    plugin: plugin.clone(),
                    outcome: call.outcome,
                })
                .inc();
            self.plugin_fuel
                .get_or_create(&PluginLabels {
                    tenant: tenant.clone(),
                    plugin,
                })
                .observe(call.fuel as f64);
        }
    }
}
