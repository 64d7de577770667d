//! The seam between the stream routes and consumers and whatever keeps the
//! records: [`Engine`]. The embedded engine ([`super::embedded`]) is the
//! default; a NATS JetStream engine implements the same trait.
//!
//! The model, kept small so that both engines can hold it:
//!
//! - A **stream** belongs to one tenant ([`StreamId`]) and has one
//!   [`StreamKind`], fixed when it is created (on first use).
//! - Its records carry a **sequence number** that increases across the
//!   whole stream (so also within each partition), starting at 1. Ordered
//!   kinds spread records over [`SHARDS`] **partitions** by the hash of
//!   their partition key; queues (SQS, S3) have one partition.
//! - A **checkpoint** is the last sequence number a mapping has finished
//!   in one lane of one partition: it is written only after the plugin's
//!   answer, so a crash redelivers, never loses.
//! - Queue kinds also keep, per message, when it becomes visible again and
//!   how often it was received (SQS's visibility timeout and receive
//!   count); a message settled (deleted) is gone from the queue but stays
//!   readable in the stream until retention trims it.

use super::{StreamId, StreamKind};
use crate::cognito::bulk_record::BulkRecord;
use crate::cognito::state::{Applied, DatasetId, DatasetState, Update};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Partitions (Kinesis shards) of an ordered stream. Fixed: a record's
/// shard is the MD5 of its partition key mapped onto equal hash ranges,
/// as Kinesis does, so it never moves.
pub const SHARDS: u32 = 4;

/// What an engine operation returns.
pub type EngineFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, EngineError>> + Send + 'a>>;

/// What can go wrong in an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The stream exists with another kind.
    #[error("the stream {stream:?} is a {existing} stream, not {wanted}")]
    KindMismatch {
        stream: String,
        existing: StreamKind,
        wanted: StreamKind,
    },
    /// Storing the records would put the tenant over its stored-bytes quota.
    #[error("storing {adding} more bytes would put the tenant over its quota of {limit} bytes stored in streams ({stored} stored)")]
    StorageQuota {
        stored: u64,
        adding: u64,
        limit: u64,
    },
    /// The store failed (disk, corruption, a task that died).
    #[error("the stream store failed: {0}")]
    Store(String),
}

/// A record to append.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// The partition key (Kinesis, DynamoDB), message id (SQS) or object
    /// (S3): ordered kinds choose the partition by it.
    pub key: String,
    /// What the kind keeps of the record (see `streams::records`).
    pub body: Value,
}

/// A sync's outcome to apply to a dataset (Cognito Streams): the state
/// change and its stream record happen together or not at all.
pub struct SyncWrite {
    pub dataset: DatasetId,
    pub updates: Vec<Update>,
    pub now_ms: u64,
    /// Where the applied sync is published, if the tenant publishes.
    pub publish: Option<SyncPublish>,
}

/// Where and how an applied sync is published.
#[derive(Clone)]
pub struct SyncPublish {
    /// A Kinesis stream of the tenant, created on first use.
    pub stream: StreamId,
    pub max_tenant_bytes: u64,
    /// Builds the record of an applied sync (the engine may call it more
    /// than once: a lost compare-and-set applies the sync again).
    pub build: Arc<dyn Fn(&Applied) -> BuiltRecord + Send + Sync>,
}

/// An applied sync's stream record, and the full records kept for its
/// `kinesisSyncRecordsURL` when they did not fit inline.
pub struct BuiltRecord {
    pub record: NewRecord,
    /// (payload id, full records).
    pub payload: Option<(String, Value)>,
}

/// A change to a tenant's bulk-publish record, decided on the record as
/// stored (None: leave it). The engine may call it more than once (NATS:
/// a lost compare-and-set decides again on the newer record).
pub type BulkChange = Box<dyn Fn(&BulkRecord) -> Option<BulkRecord> + Send + Sync>;

/// How long the full records of an oversized sync record are kept, on
/// both engines: the longest `payload-url-secs`, so no URL outlives its
/// payload and no payload outlives every URL that could be valid.
pub const SYNC_PAYLOAD_AGE: Duration =
    Duration::from_secs(super::cognito_streams::MAX_PAYLOAD_URL_SECS);

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub partition: u32,
    pub seq: u64,
}

/// A record as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredRecord {
    pub seq: u64,
    pub partition: u32,
    pub key: String,
    /// When it was appended, in milliseconds since the Unix epoch.
    pub arrived_ms: u64,
    pub body: Value,
}

impl StoredRecord {
    /// Bytes this record counts against the tenant's storage quota.
    pub fn stored_bytes(&self) -> u64 {
        (self.key.len() + self.body.to_string().len() + 32) as u64
    }
}

/// A queue message handed to a consumer, with its receive state.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub record: StoredRecord,
    /// Receives so far, this one included.
    pub receive_count: u32,
    /// When it was first received (milliseconds since the Unix epoch).
    pub first_receive_ms: u64,
}

/// A stream's kind and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub kind: StreamKind,
    /// The last sequence number given (0: none yet).
    pub last_seq: u64,
}

/// One lane of one partition of a stream, as one mapping consumes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lane {
    pub stream: StreamId,
    /// The mapping's name (unique per tenant and stream).
    pub mapping: String,
    pub partition: u32,
    pub lane: u32,
}

/// Keeps streams durably. Every method is safe to call from many tasks at
/// once; appends to one stream are serialised by the engine, so sequence
/// numbers increase in the order appends are acknowledged.
///
/// Each engine documents where it keeps what: `streams::embedded` in redb
/// tables, `streams::nats` in JetStream streams and key-value buckets.
pub trait Engine: Records + Lanes + Queues + Datasets + Send + Sync + 'static {
    /// Whether the engine reaches its store now: always for the embedded
    /// engine; for NATS, whether the client is connected (it reconnects by
    /// itself). `/healthz` reads it.
    fn connected(&self) -> bool {
        true
    }
}

/// The records of streams: appended, read in order, counted, trimmed.
/// Part of [`Engine`].
pub trait Records: Send + Sync {
    /// The stream's kind and last sequence number, if it exists.
    fn stream(&self, id: &StreamId) -> EngineFuture<'_, Option<StreamInfo>>;

    /// Appends records, creating the stream with `kind` on first use. Ordered
    /// kinds place each by the hash of its key. Returns once the records
    /// are durable (on disk, or acknowledged by a quorum), in order.
    /// Refused whole if the stream has another kind or the tenant would
    /// store more than `max_tenant_bytes`.
    fn append(
        &self,
        id: &StreamId,
        kind: StreamKind,
        records: Vec<NewRecord>,
        max_tenant_bytes: u64,
    ) -> EngineFuture<'_, Vec<Appended>>;

    /// Up to `limit` records of one partition with a sequence number above
    /// `after`, in order.
    fn read(
        &self,
        id: &StreamId,
        partition: u32,
        after: u64,
        limit: usize,
    ) -> EngineFuture<'_, Vec<StoredRecord>>;

    /// Records of one partition above `after` (the lag of a checkpoint).
    fn count_after(&self, id: &StreamId, partition: u32, after: u64) -> EngineFuture<'_, u64>;

    /// Rings `wake` whenever anyone else appends to the stream `id` (another
    /// host, or a tool publishing to the engine directly), for as long as
    /// the engine lives; called once per stream a consumer waits on. A
    /// host's own appends ring the stream's waker themselves, so the
    /// embedded engine, the only writer of its data folder, does nothing.
    /// Consumers still poll, as the fallback for a wake-up lost on the way.
    fn follow(&self, _id: &StreamId, _wake: Arc<tokio::sync::Notify>) {}

    /// Deletes the tenant's records that arrived before `before_ms`
    /// (retention); returns how many.
    fn trim(&self, tenant: &str, before_ms: u64) -> EngineFuture<'_, u64>;

    /// Bytes the tenant's streams hold.
    fn tenant_bytes(&self, tenant: &str) -> EngineFuture<'_, u64>;
}

/// The lanes of ordered streams: checkpoints, and which host runs each.
/// Part of [`Engine`].
pub trait Lanes: Send + Sync {
    /// The lane's checkpoint, if it has one.
    fn checkpoint(&self, lane: &Lane) -> EngineFuture<'_, Option<u64>>;

    /// Sets the lane's checkpoint (durably) to `seq`.
    fn commit(&self, lane: &Lane, seq: u64) -> EngineFuture<'_, ()>;

    /// Takes or renews this host's lease on a lane: true if this host may
    /// run it now. A consumer claims before every batch, so that each lane
    /// is run by one host at a time and taken over when its host stops
    /// renewing. One host alone always may (the embedded engine).
    fn claim(&self, _lane: &Lane) -> EngineFuture<'_, bool> {
        Box::pin(async { Ok(true) })
    }

    /// Renews this host's lease on a lane while a batch runs on it: unlike
    /// [`Lanes::claim`], never gives the lane away.
    fn renew(&self, lane: &Lane) -> EngineFuture<'_, bool> {
        self.claim(lane)
    }

    /// Gives back every lane this host holds and ends its heartbeat, so
    /// that other hosts take the lanes over at once rather than when the
    /// leases run out; from then on this host claims nothing. Called by
    /// the stream consumers once they have stopped (a draining host). One
    /// host alone has nothing to give (the embedded engine).
    fn leave(&self) -> EngineFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// Queue streams (SQS, S3): messages received, settled or released.
/// Part of [`Engine`].
pub trait Queues: Send + Sync {
    /// Receives up to `max` visible messages of a queue stream: each
    /// becomes invisible for `visibility` and its receive count grows.
    fn receive(
        &self,
        id: &StreamId,
        max: usize,
        visibility: Duration,
    ) -> EngineFuture<'_, Vec<Received>>;

    /// Deletes messages from the queue (processed, or moved elsewhere).
    fn settle(&self, id: &StreamId, seqs: Vec<u64>) -> EngineFuture<'_, ()>;

    /// Makes a received message visible again after `delay`; with
    /// `uncount`, the receive is not counted (the host was busy, the
    /// plugin never saw it).
    fn release(
        &self,
        id: &StreamId,
        seq: u64,
        delay: Duration,
        uncount: bool,
    ) -> EngineFuture<'_, ()>;

    /// Messages of a queue stream not yet settled.
    fn unsettled(&self, id: &StreamId) -> EngineFuture<'_, u64>;
}

/// Cognito Streams: dataset state, the outbox of their records, bulk
/// publish, sync payloads and the shared secret. Part of [`Engine`].
pub trait Datasets: Send + Sync {
    /// Applies a sync to its dataset and publishes its record, as one
    /// step: the state changes only if the record is appended (redb: one
    /// write transaction; NATS: compare-and-set with the record kept in
    /// the state as an outbox until published). None: nothing changed,
    /// nothing published.
    fn apply_sync(&self, sync: SyncWrite) -> EngineFuture<'_, Option<Applied>>;

    /// A dataset's state, if any sync stored it.
    fn dataset(&self, id: &DatasetId) -> EngineFuture<'_, Option<DatasetState>>;

    /// Every dataset of a tenant (bulk publish).
    fn datasets(&self, tenant: &str) -> EngineFuture<'_, Vec<DatasetId>>;

    /// Publishes the records syncs left in an outbox (a host died between
    /// writing a dataset and publishing its record); returns how many.
    /// `serve` runs it once at start-up. The embedded engine has none: one
    /// transaction writes both.
    fn sweep_outboxes(&self) -> EngineFuture<'_, u64> {
        Box::pin(async { Ok(0) })
    }

    /// The tenant's bulk-publish record ([`BulkRecord::default`] if none),
    /// changed by `change` in one atomic step (redb: one write
    /// transaction; NATS: compare-and-set on the key's revision), so that
    /// every host and every restart sees one record per tenant. Returns
    /// the record as it now stands and whether `change` wrote it.
    fn bulk_publish(
        &self,
        tenant: &str,
        change: BulkChange,
    ) -> EngineFuture<'_, (BulkRecord, bool)>;

    /// The full records of an oversized sync record, by payload id, for
    /// [`SYNC_PAYLOAD_AGE`] after the sync (later: None, trimmed).
    fn sync_payload(&self, tenant: &str, payload: &str) -> EngineFuture<'_, Option<Value>>;

    /// A secret shared by every host of the engine (32 random bytes made
    /// on first use): the key that signs payload URLs.
    fn secret(&self, name: &str) -> EngineFuture<'_, Vec<u8>>;
}

/// 32 random bytes from the system.
pub fn random_secret() -> Result<Vec<u8>, EngineError> {
    use std::io::Read;
    let mut bytes = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| EngineError::Store(format!("cannot read /dev/urandom: {e}")))?;
    Ok(bytes)
}

/// The shard of a partition key: its MD5 as a 128-bit number, mapped onto
/// [`SHARDS`] equal ranges (Kinesis's rule), and the lane within the
/// shard for `parallelization` lanes.
pub fn shard_of(key: &str) -> u32 {
    (key_hash(key) / (u128::MAX / SHARDS as u128 + 1)) as u32
}

/// The lane of a partition key within its shard, for `lanes` lanes.
pub fn lane_of(key: &str, lanes: u32) -> u32 {
    (key_hash(key) % lanes.max(1) as u128) as u32
}

fn key_hash(key: &str) -> u128 {
    use md5::{Digest, Md5};
    u128::from_be_bytes(Md5::digest(key.as_bytes()).into())
}

/// How often a consumer renews its lease on a lane while a batch runs;
/// an engine's leases must last several times this.
pub const RENEW_CLAIM: std::time::Duration = std::time::Duration::from_secs(1);

/// A short pause before polling a store again when a wait was cut short.
pub(crate) const POLL: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_every_shard_and_stay_there() {
        let mut seen = [0u32; SHARDS as usize];
        for i in 0..400 {
            seen[shard_of(&format!("key-{i}")) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        assert_eq!(shard_of("orders-1"), shard_of("orders-1"));
        assert!(lane_of("x", 1) == 0 && lane_of("x", 3) < 3);
    }
}
