//! The stream consumers, a [`Source`]: every enabled `[[event-sources]]`
//! mapping of every tenant, each its own set of tasks ([`consumer`]). It
//! follows tenant reloads: a mapping added starts, one removed stops, one
//! changed restarts (from its checkpoints). It also trims each tenant's
//! streams to its retention quota.
//!
//! Batches in flight across all mappings are bounded
//! ([`MAX_BATCHES_IN_FLIGHT`]); within a tenant, the dispatcher's
//! concurrency quota applies as to any event, and a busy tenant is waited
//! for. One tenant's looping plugin holds its own lanes for its timeout,
//! not other tenants'.

pub mod consumer;

use super::{Source, Stop};
use crate::dispatch::{Dispatcher, InvokeError};
use crate::streams::engine::{EngineError, Lane};
use crate::streams::mapping::EventSource;
use crate::streams::records::LastError;
use crate::streams::{now_ms, StreamId, Streams};
use crate::tenant::registry::Tenants;
use consumer::{Answer, Consumer, Deliver};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Batches being delivered at once, all tenants together.
pub const MAX_BATCHES_IN_FLIGHT: usize = 64;
/// How often the consumers look for changed mappings.
const RESCAN: Duration = Duration::from_millis(250);
/// How often retention is applied (a pass that finds nothing to delete
/// writes nothing).
pub const TRIM_EVERY: Duration = Duration::from_secs(2);
/// How long stopping waits for batches in flight before abandoning them
/// (they are redelivered after a restart).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Delivers to a tenant's chain through the dispatcher.
pub struct DispatchDeliver {
    pub tenants: Arc<Tenants>,
    pub dispatcher: Arc<Dispatcher>,
    pub tenant: String,
}

impl Deliver for DispatchDeliver {
    fn deliver(&self, event: Value) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
        Box::pin(async move {
            // The tenant as it is now: a reload's plugins serve the next batch.
            let Some(tenant) = self.tenants.tenant(&self.tenant) else {
                return Answer::Busy;
            };
            match self.dispatcher.dispatch(&tenant, event).await {
                Ok(response) => Answer::from_response(&response),
                Err(InvokeError::TooManyRequests { .. }) => Answer::Busy,
                Err(InvokeError::Chain(error)) => Answer::Failed(LastError {
                    kind: error.kind.as_str().to_owned(),
                    message: error.message,
                }),
                Err(error @ InvokeError::SyncStore(_)) => Answer::Failed(LastError {
                    kind: "sync-store-failed".into(),
                    message: error.to_string(),
                }),
                Err(error @ (InvokeError::Route(_) | InvokeError::Shape { .. })) => {
                    Answer::Failed(LastError {
                        kind: "bad-event".into(),
                        message: error.to_string(),
                    })
                }
            }
        })
    }

    fn stored_bytes_limit(&self) -> u64 {
        self.tenants
            .tenant(&self.tenant)
            .map_or(0, |t| t.quotas.stream_stored_bytes)
    }
}

/// The consumers of every tenant's mappings.
pub struct StreamsSource {
    pub streams: Arc<Streams>,
    pub tenants: Arc<Tenants>,
    pub dispatcher: Arc<Dispatcher>,
}

struct Running {
    mapping: EventSource,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Source for StreamsSource {
    fn name(&self) -> &'static str {
        "streams"
    }

    fn run(
        self: Box<Self>,
        stop: Stop,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
        Box::pin(async move {
            self.supervise(stop).await;
            Ok(())
        })
    }
}

impl StreamsSource {
    async fn supervise(&self, stop: Stop) {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_BATCHES_IN_FLIGHT));
        let mut running: HashMap<(String, String), Running> = HashMap::new();
        let mut stopped = std::pin::pin!(stop.stopped());
        let mut last_trim = Instant::now() - TRIM_EVERY;
        loop {
            let mut desired: HashMap<(String, String), EventSource> = HashMap::new();
            for tenant in self.tenants.all().values() {
                for mapping in tenant.event_sources.iter().filter(|m| m.enabled) {
                    desired.insert((tenant.name.clone(), mapping.name.clone()), mapping.clone());
                }
            }
            running.retain(|key, run| {
                let keep = desired.get(key) == Some(&run.mapping);
                if !keep {
                    tracing::info!(tenant = %key.0, mapping = %key.1, "stopping an event source mapping");
                    let _ = run.stop.send(true);
                }
                keep
            });
            for (key, mapping) in desired {
                if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(key) {
                    let (tenant, name) = slot.key();
                    tracing::info!(%tenant, mapping = %name, stream = %mapping.stream, kind = %mapping.kind, "starting an event source mapping");
                    let run = self.start(tenant, mapping, in_flight.clone());
                    slot.insert(run);
                }
            }
            if last_trim.elapsed() >= TRIM_EVERY {
                last_trim = Instant::now();
                self.trim().await;
                self.measure_lags(&running).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(RESCAN) => {}
                _ = &mut stopped => break,
            }
        }
        let mut tasks = Vec::new();
        for run in running.into_values() {
            let _ = run.stop.send(true);
            tasks.extend(run.tasks);
        }
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        for task in tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
            }
        }
        // Every lane is idle now: give them back at once, so other hosts go
        // on with them without waiting for the leases to run out.
        if let Err(error) = self.streams.engine.leave().await {
            tracing::warn!(%error, "cannot give the stream lanes back; other hosts take them when the leases run out");
        }
    }

    fn start(
        &self,
        tenant: &str,
        mapping: EventSource,
        in_flight: Arc<tokio::sync::Semaphore>,
    ) -> Running {
        let (stop, stop_rx) = watch::channel(false);
        let consumer = Arc::new(Consumer {
            streams: self.streams.clone(),
            deliver: Arc::new(DispatchDeliver {
                tenants: self.tenants.clone(),
                dispatcher: self.dispatcher.clone(),
                tenant: tenant.to_owned(),
            }),
            id: StreamId::new(tenant, &mapping.stream),
            counters: self.streams.counters(tenant, &mapping.name),
            mapping: mapping.clone(),
            in_flight,
            stop: stop_rx,
        });
        let mut tasks = Vec::new();
        if mapping.kind.is_ordered() {
            for partition in 0..mapping.kind.partitions() {
                for lane in 0..mapping.parallelization {
                    tasks.push(tokio::spawn(consumer.clone().run_lane(partition, lane)));
                }
            }
        } else {
            tasks.push(tokio::spawn(consumer.run_queue()));
        }
        Running {
            mapping,
            stop,
            tasks,
        }
    }

    /// Measures every running mapping's lag for the metrics and the
    /// status page (the event-sources route measures its own, fresh).
    async fn measure_lags(&self, running: &HashMap<(String, String), Running>) {
        let mut lags = std::collections::BTreeMap::new();
        for ((tenant, name), run) in running {
            if let Ok(lag) = lag(&self.streams, tenant, &run.mapping).await {
                lags.insert((tenant.clone(), name.clone()), lag);
            }
        }
        self.streams.set_lags(lags);
    }

    /// Deletes records older than each tenant's retention.
    async fn trim(&self) {
        for tenant in self.tenants.all().values() {
            let cutoff = now_ms().saturating_sub(tenant.quotas.stream_retention.as_millis() as u64);
            match self.streams.engine.trim(&tenant.name, cutoff).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(tenant = %tenant.name, records = n, "stream records past retention deleted")
                }
                Err(error) => {
                    tracing::error!(tenant = %tenant.name, %error, "trimming the streams failed")
                }
            }
        }
    }
}

/// Records of the mapping's stream not yet processed: for ordered kinds,
/// those after the lowest checkpoint of each shard's lanes (a lane with
/// nothing to do moves its checkpoint past the others' records); for
/// queues, the messages not yet deleted.
pub async fn lag(
    streams: &Streams,
    tenant: &str,
    mapping: &EventSource,
) -> Result<u64, EngineError> {
    let id = StreamId::new(tenant, &mapping.stream);
    let engine = &streams.engine;
    if !mapping.kind.is_ordered() {
        return engine.unsettled(&id).await;
    }
    let mut lag = 0;
    for partition in 0..mapping.kind.partitions() {
        let mut lowest = u64::MAX;
        for lane in 0..mapping.parallelization {
            let lane = Lane {
                stream: id.clone(),
                mapping: mapping.name.clone(),
                partition,
                lane,
            };
            lowest = lowest.min(engine.checkpoint(&lane).await?.unwrap_or(0));
        }
        lag += engine.count_after(&id, partition, lowest).await?;
    }
    Ok(lag)
}
