//! Streams and queues the host keeps, and the event source mappings that
//! feed their records to a tenant's plugins in Lambda's shapes.
//!
//! - [`engine`]: the seam any engine implements ([`engine::Engine`]);
//! - [`embedded`]: the default engine, a redb file under `--data-dir`;
//! - [`nats`]: the distributed engine on NATS JetStream (`--streams`);
//! - [`mapping`]: `[[event-sources]]` in `tenant.toml`;
//! - [`records`]: a stored record as the Lambda event record of its kind;
//! - [`ingest`]: the bodies `POST .../streams/{stream}/records` accepts;
//! - [`shared_store`]: tenants' plugins and `tenant.toml` on NATS, shared
//!   by several hosts (`serve --shared-plugins`).
//!
//! The consumers that run the mappings are a source
//! (`sources::streams`); the routes are in `sources::http::streams`.

pub mod cognito_streams;
pub mod embedded;
pub mod engine;
pub mod ingest;
pub mod mapping;
pub mod nats;
pub mod records;
pub mod shared_store;

use engine::Engine;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a stream holds, fixed when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamKind {
    /// Kinesis Data Streams: ordered per partition key.
    Kinesis,
    /// DynamoDB Streams: ordered per item key.
    Dynamodb,
    /// An SQS standard queue: unordered, each message settled on its own.
    Sqs,
    /// S3 event notifications: delivered one at a time, asynchronously.
    S3,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Kinesis => "kinesis",
            StreamKind::Dynamodb => "dynamodb",
            StreamKind::Sqs => "sqs",
            StreamKind::S3 => "s3",
        }
    }

    /// Whether records are ordered per key in partitions (Kinesis,
    /// DynamoDB), rather than a queue (SQS, S3).
    pub fn is_ordered(self) -> bool {
        matches!(self, StreamKind::Kinesis | StreamKind::Dynamodb)
    }

    /// How many partitions the kind's streams have.
    pub fn partitions(self) -> u32 {
        if self.is_ordered() {
            engine::SHARDS
        } else {
            1
        }
    }
}

impl std::fmt::Display for StreamKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stream of one tenant: tenants never share a stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    pub tenant: String,
    pub stream: String,
}

impl StreamId {
    pub fn new(tenant: &str, stream: &str) -> StreamId {
        StreamId {
            tenant: tenant.to_owned(),
            stream: stream.to_owned(),
        }
    }

    /// `tenant/stream`: neither name can hold a `/`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.tenant, self.stream)
    }
}

/// Whether `name` can name a stream: 1 to 128 ASCII letters, digits, `-`,
/// `_` or `.` (Kinesis's rule), starting with a letter or digit.
pub fn is_stream_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What one mapping has done since the host started (the counts of
/// `GET /v1/tenants/{t}/event-sources`; `lag` is read from the engine).
#[derive(Debug, Default)]
pub struct Counters {
    /// Records read from the stream for the first time.
    pub records_in: AtomicU64,
    /// Records the plugins finished with (committed or deleted).
    pub processed: AtomicU64,
    /// Records in failed deliveries (a record failing twice counts twice).
    pub failed: AtomicU64,
    /// Records delivered again after a failure.
    pub retried: AtomicU64,
    /// Records given up on and sent to the failure destination.
    pub sent_to_failure_destination: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The engine, and what the routes and consumers share about streams:
/// each mapping's counters, a wake-up per stream, and each tenant's
/// ingest rate.
pub struct Streams {
    pub engine: Arc<dyn Engine>,
    counters: Mutex<HashMap<String, BTreeMap<String, Arc<Counters>>>>,
    /// Each running mapping's lag, as last measured (every few seconds,
    /// by the consumers' supervisor): what `/metrics` and `/status` show.
    lags: Mutex<BTreeMap<(String, String), u64>>,
    wakers: Mutex<HashMap<StreamId, Arc<tokio::sync::Notify>>>,
    /// Streams whose waker the engine rings too ([`Streams::follow`]).
    followed: Mutex<std::collections::HashSet<StreamId>>,
    rates: Mutex<HashMap<String, Bucket>>,
}

/// A token bucket of records per second, holding one second's worth.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Streams {
    pub fn new(engine: Arc<dyn Engine>) -> Streams {
        Streams {
            engine,
            counters: Mutex::default(),
            lags: Mutex::default(),
            wakers: Mutex::default(),
            followed: Mutex::default(),
            rates: Mutex::default(),
        }
    }

    /// The counters of a tenant's mapping, created at zero.
    pub fn counters(&self, tenant: &str, mapping: &str) -> Arc<Counters> {
        let mut all = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(tenant.to_owned())
            .or_default()
            .entry(mapping.to_owned())
            .or_default()
            .clone()
    }

    /// Every mapping's counters: (tenant, mapping, counters).
    pub fn all_counters(&self) -> Vec<(String, String, Arc<Counters>)> {
        let all = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .flat_map(|(tenant, mappings)| {
                mappings
                    .iter()
                    .map(move |(name, c)| (tenant.clone(), name.clone(), c.clone()))
            })
            .collect()
    }

    /// Sets the lags of the running mappings, forgetting the others.
    pub fn set_lags(&self, lags: BTreeMap<(String, String), u64>) {
        *self.lags.lock().unwrap_or_else(|e| e.into_inner()) = lags;
    }

    /// The running mappings' lags as last measured, by (tenant, mapping).
    pub fn lags(&self) -> BTreeMap<(String, String), u64> {
        self.lags.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What wakes the consumers of a stream when records arrive.
    pub fn waker(&self, id: &StreamId) -> Arc<tokio::sync::Notify> {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        wakers.entry(id.clone()).or_default().clone()
    }

    /// The waker of a stream a consumer waits on, which the engine also
    /// rings when other hosts or direct publishers append to the stream
    /// ([`Records::follow`](crate::streams::engine::Records::follow), asked
    /// once per stream).
    pub fn follow(&self, id: &StreamId) -> Arc<tokio::sync::Notify> {
        let waker = self.waker(id);
        let new = self
            .followed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        if new {
            self.engine.follow(id, waker.clone());
        }
        waker
    }

    /// Takes `records` from the tenant's ingest rate (`per_second`, with a
    /// burst of one second's worth); false if the bucket has too few.
    pub fn take_rate(&self, tenant: &str, records: usize, per_second: u64) -> bool {
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let capacity = per_second as f64;
        let bucket = rates.entry(tenant.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * capacity).min(capacity);
        bucket.at = now;
        if bucket.tokens >= records as f64 {
            bucket.tokens -= records as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_plain() {
        for good in ["orders", "orders-dlq", "a.b_c", "X1"] {
            assert!(is_stream_name(good), "{good}");
        }
        for bad in ["", ".x", "a/b", "a b", &"x".repeat(129)] {
            assert!(!is_stream_name(bad), "{bad}");
        }
    }
}
