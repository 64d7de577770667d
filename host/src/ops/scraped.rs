//! The metrics read when scraped rather than counted as outcomes come:
//! the engine's instance slots, each tenant's invocations in flight,
//! plugins and reloads ([`Gauges`]), and the stream consumers' figures
//! ([`StreamMetrics`]). `metrics.rs` registers them.

use crate::tenant::registry::Tenants;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    tenant: String,
    result: &'static str,
}

/// The stream consumers' figures, read when scraped: records in,
/// processed, failed, retried and sent to the failure destination per
/// mapping (counters since the host started), and each mapping's lag (as
/// last measured, every 2 s). Mappings come from `tenant.toml`, so the
/// labels stay bounded.
pub struct StreamMetrics {
    pub streams: Arc<crate::streams::Streams>,
}

/// Reads one of a mapping's counters.
type CountOf = fn(&crate::streams::Counters) -> u64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MappingLabels {
    tenant: String,
    mapping: String,
}

impl std::fmt::Debug for StreamMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamMetrics")
    }
}

impl Collector for StreamMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use crate::streams::Counters;
        let all = self.streams.all_counters();
        let counters: [(&str, &str, CountOf); 5] = [
            (
                "stream_records_in",
                "Records a mapping read from its stream for the first time",
                |c| Counters::get(&c.records_in),
            ),
            (
                "stream_records_processed",
                "Records a mapping's plugins finished with (committed or deleted)",
                |c| Counters::get(&c.processed),
            ),
            (
                "stream_records_failed",
                "Records in failed deliveries (a record failing twice counts twice)",
                |c| Counters::get(&c.failed),
            ),
            (
                "stream_records_retried",
                "Records delivered again after a failure",
                |c| Counters::get(&c.retried),
            ),
            (
                "stream_records_sent_to_failure_destination",
                "Records given up on and sent to the mapping's on-failure stream",
                |c| Counters::get(&c.sent_to_failure_destination),
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (tenant, mapping, c) in &all {
                let labels = MappingLabels {
                    tenant: tenant.clone(),
                    mapping: mapping.clone(),
                };
                ConstCounter::new(value(c)).encode(family.encode_family(&labels)?)?;
            }
        }
        gauge_family(
            &mut encoder,
            "stream_lag",
            "Records of a mapping's stream stored but not yet processed, as last measured",
            self.streams
                .lags()
                .into_iter()
                .map(|((tenant, mapping), lag)| (MappingLabels { tenant, mapping }, lag as i64)),
        )
    }
}

/// Figures read when scraped: the engine's instance slots, and each
/// tenant's invocations in flight, plugins and reloads.
pub(super) struct Gauges {
    pub(super) tenants: Arc<Tenants>,
}

impl std::fmt::Debug for Gauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gauges")
    }
}

/// Writes one gauge family with a value per label set.
fn gauge_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, value) in values {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one gauge with no labels.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: usize,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value as i64);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let runtime = self.tenants.runtime();
        gauge(
            &mut encoder,
            "instance_slots",
            "Plugin instance slots of the engine (serve --max-instances)",
            runtime.config().max_instances as usize,
        )?;
        gauge(
            &mut encoder,
            "instance_slots_in_use",
            "Instance slots held by chain attempts now",
            runtime.instance_slots_in_use(),
        )?;
        gauge(
            &mut encoder,
            "instance_slots_waiting",
            "Chain attempts waiting for free instance slots now",
            runtime.instance_slots_waiting(),
        )?;
        let tenants = self.tenants.all();
        let by_tenant = |value: fn(&crate::tenant::Tenant) -> usize| {
            tenants.iter().map(move |(name, tenant)| {
                (
                    TenantLabels {
                        tenant: name.clone(),
                    },
                    value(tenant) as i64,
                )
            })
        };
        gauge_family(
            &mut encoder,
            "tenant_invocations_in_flight",
            "Invocations of the tenant running now (its [quotas] concurrency is the most)",
            by_tenant(|t| t.in_flight()),
        )?;
        gauge_family(
            &mut encoder,
            "plugins_loaded",
            "Plugins of the tenant serving now",
            by_tenant(|t| t.plugins.len()),
        )?;
        gauge_family(
            &mut encoder,
            "plugins_failing",
            "Files of the tenant (plugins or tenant.toml) whose last load failed",
            by_tenant(|t| t.failures.len()),
        )?;
        let mut reloads = encoder.encode_descriptor(
            "reloads",
            "Loads of a tenant's folder by result: `ok` (every file loaded) or `failed` (a file was refused)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (tenant, counts) in self.tenants.reload_counts() {
            for (result, count) in [("ok", counts.ok), ("failed", counts.failed)] {
                let labels = ReloadLabels {
                    tenant: tenant.clone(),
                    result,
                };
                ConstCounter::new(count).encode(reloads.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
