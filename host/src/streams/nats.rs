//! The distributed engine: streams on NATS JetStream, shared by every
//! host connected to the same server (`serve --streams nats://HOST:PORT`).
//!
//! | what | where in JetStream |
//! |---|---|
//! | a tenant's stream | the JetStream stream `TF__<tenant>__<stream>`, subjects `tf.<tenant>.<stream>.<partition>`; its kind in the stream's description |
//! | a record | one message: `{"key", "body", "arrivedMs"}`; its stream sequence is the record's sequence number |
//! | checkpoints | the key-value bucket `TF_CHECKPOINTS`, key `<tenant>.<stream>.<mapping>.<partition>.<lane>` |
//! | which host runs a lane | the key-value bucket `TF_LEASES`, same keys: the holder and when its lease ends, taken and renewed by compare-and-set on the key's revision |
//! | which hosts are alive | `TF_LEASES`, key `hosts.<host>`: when its heartbeat ends |
//! | dataset state (Cognito Streams) | the bucket `TF_DATASETS`, key `<tenant>.<pool>.<identity>.<dataset>`: the dataset as JSON, with its outbox; secrets under `_secrets.<name>` |
//! | bulk publish status (Cognito Streams) | `TF_DATASETS`, key `_bulk-publish.<tenant>`: the tenant's `cognito::bulk::BulkRecord` as JSON, changed by compare-and-set on the key's revision |
//! | full records of an oversized sync record | the bucket `TF_SYNC_PAYLOADS` (messages kept 24 hours, [`SYNC_PAYLOAD_AGE`]), key `<tenant>.<payload>` |
//!
//! A sync is applied by compare-and-set on its dataset's revision, so two
//! hosts never hand out the same sync count: the loser reads the new
//! state and applies the sync again. The written state carries the
//! sync's record (`pending`, the outbox); the host then publishes it with
//! the JetStream message id `<dataset>/<syncCount>` (duplicates within
//! the stream's 2-minute window are dropped) and clears the outbox by
//! another compare-and-set. A host that dies between the two leaves the
//! record in the outbox: the next sync of the dataset (on any host), a
//! read of it, or the sweep every host runs when it starts
//! ([`Engine::sweep_outboxes`]) publishes it, whichever comes first.
//! Until then the record is late, never lost; after the window it may be
//! published twice (at least once).
//!
//! Lanes are shared fairly: a host takes a free lane only while it holds
//! fewer than its share (the lanes it knows of divided by the hosts alive,
//! rounded up), and gives one back, between batches, when it holds more,
//! so a host that joins gets lanes within a lease or two.
//! | a queue (SQS, S3) | the durable pull consumer `tf-queue` of its stream: the visibility timeout is its `ack_wait`, the receive count its delivery count |
//!
//! Names are encoded so that any tenant or stream name is one JetStream
//! token: letters, digits and `-` stay, any other byte is `_` and two hex
//! digits (`orders.eu` is `orders_2eeu`).
//!
//! Facts about Debian's nats-server 2.9.10 this follows: `async-nats`'s
//! `create_key_value` asks for account fields 2.9 does not send, so the
//! buckets' `KV_` streams are created here and opened with
//! `get_key_value`; a message nak'd with a delay comes back after newer
//! ones, so ordered kinds never nak (they retry from their checkpoint).
//!
//! Durability: JetStream acknowledges a publish once its file store has
//! it; it flushes to disk on its own schedule (`sync_interval`, 2 minutes
//! by default), so a killed server loses nothing, a lost machine may lose
//! the last acknowledged records unless the server runs in a cluster.

use super::engine::{
    random_secret, shard_of, Appended, BulkChange, Engine, EngineError, EngineFuture, Lane,
    NewRecord, Received, StoredRecord, StreamInfo, SyncWrite,
};
use super::{now_ms, StreamId, StreamKind};
use crate::cognito::bulk::BulkRecord;
use crate::cognito::state::{self, Applied, DatasetId, DatasetState};
use async_nats::jetstream::{self, consumer, kv, stream, AckKind};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CHECKPOINTS: &str = "TF_CHECKPOINTS";
const LEASES: &str = "TF_LEASES";
const DATASETS: &str = "TF_DATASETS";
const SYNC_PAYLOADS: &str = "TF_SYNC_PAYLOADS";
/// The key prefix, in `TF_DATASETS`, of each tenant's bulk publish record.
const BULK_PREFIX: &str = "_bulk-publish";
pub use super::engine::SYNC_PAYLOAD_AGE;
/// Compare-and-set attempts on one dataset before a sync gives up.
const CAS_ATTEMPTS: usize = 64;
/// The queue consumer every host shares.
const QUEUE_CONSUMER: &str = "tf-queue";
const KIND_PREFIX: &str = "triggerfish stream, kind ";

/// How long a lane stays with a host that stopped renewing its lease
/// (it died, or lost the server): another host takes it over after this.
pub const LEASE_TTL: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Lanes {
    known: std::collections::HashSet<String>,
    held: std::collections::HashSet<String>,
    /// Hosts alive when last counted, and when that was.
    hosts: usize,
    counted_ms: u64,
    /// When this host last took or renewed each lease it holds.
    taken_ms: HashMap<String, u64>,
}

/// A lease taken this recently is not taken again before a batch: it has
/// at least `LEASE_TTL - FRESH_LEASE` left, and a batch's own renewals
/// (every `RENEW_CLAIM`) keep it from there. Saves a read and a write of
/// `TF_LEASES` per batch.
const FRESH_LEASE: Duration = Duration::from_millis(1000);

/// What a message of a stream holds.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    key: String,
    body: Value,
    arrived_ms: u64,
}

/// Streams on NATS JetStream.
pub struct NatsEngine {
    js: jetstream::Context,
    checkpoints: kv::Store,
    leases: kv::Store,
    datasets: kv::Store,
    payloads: kv::Store,
    /// This host, as lease values name it.
    holder: String,
    /// Queue messages received and not yet settled or released, by
    /// stream and sequence: acknowledging needs the message itself.
    inflight: Mutex<HashMap<(String, u64), jetstream::Message>>,
    /// Lanes this host was asked to run, and which of them it holds.
    lanes: Mutex<Lanes>,
    /// Fault injection for tests: stop right after a sync's state (and
    /// outbox) is written, as a host killed at the worst moment would.
    pub crash_before_publish: std::sync::atomic::AtomicBool,
    /// Receives this host did not count (`release` with `uncount`), taken
    /// off JetStream's delivery count.
    uncounted: Mutex<HashMap<(String, u64), u32>>,
    /// Set by [`Engine::leave`]: this host claims no lane any more.
    left: std::sync::atomic::AtomicBool,
}

fn store<E: std::fmt::Display>(error: E) -> EngineError {
    EngineError::Store(format!("NATS: {error}"))
}

/// One JetStream token for any name: letters, digits and `-` as they
/// are, every other byte `_` and two hex digits.
pub(super) fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("_{byte:02x}"));
        }
    }
    out
}

fn tenant_prefix(tenant: &str) -> String {
    format!("TF__{}__", token(tenant))
}

fn stream_name(id: &StreamId) -> String {
    format!("{}{}", tenant_prefix(&id.tenant), token(&id.stream))
}

fn subject(id: &StreamId, partition: u32) -> String {
    format!("tf.{}.{}.{partition}", token(&id.tenant), token(&id.stream))
}

fn lane_key(lane: &Lane) -> String {
    format!(
        "{}.{}.{}.{}.{}",
        token(&lane.stream.tenant),
        token(&lane.stream.stream),
        token(&lane.mapping),
        lane.partition,
        lane.lane
    )
}

fn kind_of(info: &stream::Info) -> Option<StreamKind> {
    let kind = info
        .config
        .description
        .as_deref()?
        .strip_prefix(KIND_PREFIX)?;
    serde_json::from_value(Value::String(kind.to_owned())).ok()
}

fn millis(time: async_nats::jetstream::message::Info<'_>) -> u64 {
    (time.published.unix_timestamp_nanos() / 1_000_000).max(0) as u64
}

/// A bucket's stream, as `create_key_value` would make it, without the
/// account query 2.9 cannot answer.
pub(super) fn bucket_config(bucket: &str) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// A client of the server at `url` (`nats://HOST:PORT`) with `options`:
/// an answer within 10 s or an error naming the server, and then
/// reconnecting by itself for ever when the server restarts (operations
/// fail meanwhile). The engine and the shared store connect this way.
pub(super) async fn connect_client(
    url: &str,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, EngineError> {
    let client = options
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(url);
    tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .map_err(|_| store(format!("no answer from {url} within 10 s")))?
        .map_err(|e| store(format!("cannot connect to {url}: {e}")))
}

impl NatsEngine {
    /// Connects to the server at `url` (`nats://HOST:PORT`) and opens the
    /// buckets, creating them on first use. The client reconnects by
    /// itself when the server restarts; operations fail meanwhile, and the
    /// consumers retry.
    pub async fn connect(url: &str) -> Result<NatsEngine, EngineError> {
        // This host's own publishes wake its consumers directly; only
        // others' come back through `follow`'s subscriptions.
        let client = connect_client(url, async_nats::ConnectOptions::new().no_echo()).await?;
        let js = jetstream::new(client);
        let mut buckets = Vec::new();
        for bucket in [CHECKPOINTS, LEASES] {
            js.get_or_create_stream(bucket_config(bucket))
                .await
                .map_err(|e| store(format!("cannot create the bucket {bucket}: {e}")))?;
            buckets.push(js.get_key_value(bucket).await.map_err(store)?);
        }
        let leases = buckets.pop().expect("two buckets");
        let checkpoints = buckets.pop().expect("two buckets");
        js.get_or_create_stream(bucket_config(DATASETS))
            .await
            .map_err(|e| store(format!("cannot create the bucket {DATASETS}: {e}")))?;
        let datasets = js.get_key_value(DATASETS).await.map_err(store)?;
        js.get_or_create_stream(stream::Config {
            max_age: SYNC_PAYLOAD_AGE,
            ..bucket_config(SYNC_PAYLOADS)
        })
        .await
        .map_err(|e| store(format!("cannot create the bucket {SYNC_PAYLOADS}: {e}")))?;
        let payloads = js.get_key_value(SYNC_PAYLOADS).await.map_err(store)?;
        Ok(NatsEngine {
            js,
            checkpoints,
            leases,
            datasets,
            payloads,
            holder: format!("{}-{:016x}", std::process::id(), rand_u64()),
            inflight: Mutex::default(),
            crash_before_publish: Default::default(),
            lanes: Mutex::default(),
            uncounted: Mutex::default(),
            left: Default::default(),
        })
    }

    /// The JetStream stream of `id`, created with `kind` if missing;
    /// refused if it has another kind.
    async fn ensure(&self, id: &StreamId, kind: StreamKind) -> Result<(), EngineError> {
        let existing = match self.get(id).await? {
            Some(stream) => stream,
            None => {
                let config = stream::Config {
                    name: stream_name(id),
                    subjects: vec![format!("tf.{}.{}.*", token(&id.tenant), token(&id.stream))],
                    description: Some(format!("{KIND_PREFIX}{}", kind.as_str())),
                    storage: stream::StorageType::File,
                    ..Default::default()
                };
                // Another host may create it at the same moment: the
                // config is the same, so either wins.
                self.js.get_or_create_stream(config).await.map_err(store)?
            }
        };
        if let Some(existing) = kind_of(existing.cached_info()).filter(|k| *k != kind) {
            return Err(EngineError::KindMismatch {
                stream: id.stream.clone(),
                existing,
                wanted: kind,
            });
        }
        Ok(())
    }

    /// Publishes an outbox record once: JetStream drops a second publish
    /// with the same message id within its duplicate window.
    async fn publish_pending(&self, pending: &Value) -> Result<(), EngineError> {
        let pending: Pending = serde_json::from_value(pending.clone()).map_err(store)?;
        let id = StreamId::new(&pending.tenant, &pending.stream);
        self.ensure(&id, StreamKind::Kinesis).await?;
        let message = Message {
            arrived_ms: now_ms(),
            key: pending.key.clone(),
            body: pending.body,
        };
        let payload = serde_json::to_vec(&message).map_err(store)?;
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(&pending.message_id);
        self.js
            .send_publish(subject(&id, shard_of(&pending.key)), publish)
            .await
            .map_err(store)?
            .await
            .map_err(store)?;
        Ok(())
    }

    /// A dataset's state and revision (0: none yet).
    async fn dataset_entry(&self, key: &str) -> Result<(DatasetState, u64), EngineError> {
        match self.datasets.entry(key).await.map_err(store)? {
            Some(entry) if entry.operation == kv::Operation::Put => Ok((
                serde_json::from_slice(&entry.value).map_err(store)?,
                entry.revision,
            )),
            Some(entry) => Ok((DatasetState::default(), entry.revision)),
            None => Ok((DatasetState::default(), 0)),
        }
    }

    /// Writes a dataset if its revision is still `revision`: the new
    /// revision, or None if another host wrote it first.
    async fn write_dataset(
        &self,
        key: &str,
        state: &DatasetState,
        revision: u64,
    ) -> Result<Option<u64>, EngineError> {
        let bytes = serde_json::to_vec(state).map_err(store)?;
        let written = if revision == 0 {
            self.datasets.create(key, bytes.into()).await.ok()
        } else {
            self.datasets.update(key, bytes.into(), revision).await.ok()
        };
        Ok(written)
    }

    /// Publishes what the dataset's outbox holds and clears it (if no
    /// other host wrote the dataset meanwhile: then that host did); true
    /// if it held a record.
    async fn flush_outbox(&self, key: &str) -> Result<bool, EngineError> {
        let (mut state, revision) = self.dataset_entry(key).await?;
        let Some(pending) = state.pending.take() else {
            return Ok(false);
        };
        self.publish_pending(&pending).await?;
        self.write_dataset(key, &state, revision).await?;
        Ok(true)
    }

    /// The keys of the `TF_DATASETS` bucket under `filter` (a subject
    /// wildcard after the bucket's prefix): two or three requests, where
    /// listing the bucket's keys reads every value.
    async fn dataset_keys(&self, filter: &str) -> Result<Vec<String>, EngineError> {
        let bucket = self
            .js
            .get_stream(format!("KV_{DATASETS}"))
            .await
            .map_err(store)?;
        let prefix = format!("$KV.{DATASETS}.");
        let mut subjects = bucket
            .info_with_subjects(format!("{prefix}{filter}"))
            .await
            .map_err(store)?;
        let mut keys = Vec::new();
        while let Some(subject) = subjects.next().await {
            let subject = subject.map_err(store)?.0;
            keys.extend(subject.strip_prefix(&prefix).map(str::to_owned));
        }
        Ok(keys)
    }

    /// The JetStream stream of `id`, if it exists.
    async fn get(&self, id: &StreamId) -> Result<Option<stream::Stream>, EngineError> {
        match self.js.get_stream(stream_name(id)).await {
            Ok(stream) => Ok(Some(stream)),
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(error)
                    if error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(None)
                }
                _ => Err(store(e)),
            },
        }
    }

    /// An ephemeral consumer of one partition from `after + 1`, for reads.
    async fn reader(
        &self,
        stream: &stream::Stream,
        id: &StreamId,
        partition: u32,
        after: u64,
    ) -> Result<consumer::PullConsumer, EngineError> {
        stream
            .create_consumer(consumer::pull::Config {
                filter_subject: subject(id, partition),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(10),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(store)
    }

    fn forget(&self, stream: stream::Stream, consumer: consumer::PullConsumer) {
        let name = consumer.cached_info().name.clone();
        tokio::spawn(async move {
            let _ = stream.delete_consumer(&name).await;
        });
    }

    /// The queue consumer of a queue stream, its visibility timeout set.
    async fn queue(
        &self,
        stream: &stream::Stream,
        visibility: Duration,
    ) -> Result<consumer::PullConsumer, EngineError> {
        let config = consumer::pull::Config {
            durable_name: Some(QUEUE_CONSUMER.to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: visibility.max(Duration::from_secs(1)),
            max_deliver: -1,
            ..Default::default()
        };
        let mut consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(QUEUE_CONSUMER, config.clone())
            .await
            .map_err(store)?;
        if consumer.cached_info().config.ack_wait != config.ack_wait {
            // Creating a durable consumer again with a new ack_wait updates
            // it (nats-server 2.9 takes this; later servers too).
            consumer = stream.create_consumer(config).await.map_err(store)?;
        }
        Ok(consumer)
    }

    /// Takes or renews the lease `key` if it is free, ours, or run out.
    async fn take(&self, key: &str) -> Result<bool, EngineError> {
        let now = now_ms();
        let value = format!("{} {}", self.holder, now + LEASE_TTL.as_millis() as u64);
        let entry = self.leases.entry(key).await.map_err(store)?;
        let taken = match entry {
            None => self.leases.create(key, value.into()).await.is_ok(),
            Some(entry) => {
                let text = String::from_utf8_lossy(&entry.value);
                let (holder, until) = text.split_once(' ').unwrap_or(("", "0"));
                let free = holder == self.holder || until.parse::<u64>().unwrap_or(0) < now;
                free && self
                    .leases
                    .update(key, value.into(), entry.revision)
                    .await
                    .is_ok()
            }
        };
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        let changed = if taken {
            lanes.taken_ms.insert(key.to_owned(), now);
            lanes.held.insert(key.to_owned())
        } else {
            lanes.taken_ms.remove(key);
            lanes.held.remove(key)
        };
        if changed {
            tracing::info!(
                lane = key,
                taken,
                held = lanes.held.len(),
                "stream lane lease changed hands"
            );
        }
        Ok(taken)
    }

    /// Ends our lease on `key` at once, so another host can take it.
    async fn give_back(&self, key: &str) {
        if let Ok(Some(entry)) = self.leases.entry(key).await {
            if String::from_utf8_lossy(&entry.value).starts_with(&format!("{} ", self.holder)) {
                let _ = self
                    .leases
                    .update(key, format!("{} 0", self.holder).into(), entry.revision)
                    .await;
            }
        }
    }

    /// Hosts alive, counted at most once a second; beats this host's
    /// heart on the way.
    async fn hosts_alive(&self) -> Result<usize, EngineError> {
        let now = now_ms();
        {
            let lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
            if now < lanes.counted_ms + 1000 {
                return Ok(lanes.hosts);
            }
        }
        let until = now + LEASE_TTL.as_millis() as u64;
        self.leases
            .put(format!("hosts.{}", self.holder), until.to_string().into())
            .await
            .map_err(store)?;
        // The heartbeats' subjects, then the last value of each: two or
        // three requests, where listing the bucket's keys takes seconds.
        let bucket = self
            .js
            .get_stream(format!("KV_{LEASES}"))
            .await
            .map_err(store)?;
        let mut subjects = bucket
            .info_with_subjects(format!("$KV.{LEASES}.hosts.*"))
            .await
            .map_err(store)?;
        let mut beats = Vec::new();
        while let Some(subject) = subjects.next().await {
            beats.push(subject.map_err(store)?.0);
        }
        let mut alive = 0;
        for subject in beats {
            let Ok(beat) = bucket.get_last_raw_message_by_subject(&subject).await else {
                continue;
            };
            let until = std::str::from_utf8(&beat.payload)
                .ok()
                .and_then(|b| b.parse::<u64>().ok())
                .unwrap_or(0);
            if until >= now {
                alive += 1;
            }
        }
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        lanes.hosts = alive.max(1);
        lanes.counted_ms = now;
        Ok(lanes.hosts)
    }

    fn take_inflight(&self, id: &StreamId, seq: u64) -> Option<jetstream::Message> {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        inflight.remove(&(id.key(), seq))
    }
}

/// A sync record waiting in a dataset's outbox.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pending {
    tenant: String,
    stream: String,
    key: String,
    body: Value,
    message_id: String,
}

fn dataset_key(id: &DatasetId) -> String {
    format!(
        "{}.{}.{}.{}",
        token(&id.tenant),
        token(&id.pool),
        token(&id.identity),
        token(&id.dataset)
    )
}

/// Reads back a name [`token`] encoded.
pub(super) fn untoken(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A random number for this host's lease name: two hosts in one process
/// (tests) must differ too.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

impl Engine for NatsEngine {
    fn stream(&self, id: &StreamId) -> EngineFuture<'_, Option<StreamInfo>> {
        let id = id.clone();
        Box::pin(async move {
            let Some(mut stream) = self.get(&id).await? else {
                return Ok(None);
            };
            let info = stream.info().await.map_err(store)?;
            Ok(kind_of(info).map(|kind| StreamInfo {
                kind,
                last_seq: info.state.last_sequence,
            }))
        })
    }

    fn append(
        &self,
        id: &StreamId,
        kind: StreamKind,
        records: Vec<NewRecord>,
        max_tenant_bytes: u64,
    ) -> EngineFuture<'_, Vec<Appended>> {
        let id = id.clone();
        Box::pin(async move {
            self.ensure(&id, kind).await?;
            let now = now_ms();
            let messages: Vec<(u32, Vec<u8>)> = records
                .into_iter()
                .map(|record| {
                    let partition = if kind.is_ordered() {
                        shard_of(&record.key)
                    } else {
                        0
                    };
                    let message = Message {
                        key: record.key,
                        body: record.body,
                        arrived_ms: now,
                    };
                    (partition, serde_json::to_vec(&message).unwrap_or_default())
                })
                .collect();
            let adding: u64 = messages.iter().map(|(_, m)| m.len() as u64 + 32).sum();
            let stored = self.tenant_bytes(&id.tenant).await?;
            if stored + adding > max_tenant_bytes {
                return Err(EngineError::StorageQuota {
                    stored,
                    adding,
                    limit: max_tenant_bytes,
                });
            }
            // Publish all, then wait for every acknowledgement: the
            // server keeps them in publish order.
            let mut acks = Vec::with_capacity(messages.len());
            for (partition, payload) in messages {
                let ack = self
                    .js
                    .publish(subject(&id, partition), payload.into())
                    .await
                    .map_err(store)?;
                acks.push((partition, ack));
            }
            let mut appended = Vec::with_capacity(acks.len());
            for (partition, ack) in acks {
                let ack = ack.await.map_err(store)?;
                appended.push(Appended {
                    partition,
                    seq: ack.sequence,
                });
            }
            Ok(appended)
        })
    }

    fn read(
        &self,
        id: &StreamId,
        partition: u32,
        after: u64,
        limit: usize,
    ) -> EngineFuture<'_, Vec<StoredRecord>> {
        let id = id.clone();
        Box::pin(async move {
            let Some(stream) = self.get(&id).await? else {
                return Ok(Vec::new());
            };
            let reader = self.reader(&stream, &id, partition, after).await?;
            let pending = reader.cached_info().num_pending as usize;
            let mut records = Vec::new();
            if pending > 0 && limit > 0 {
                let mut messages = reader
                    .fetch()
                    .max_messages(limit.min(pending))
                    .expires(Duration::from_secs(2))
                    .messages()
                    .await
                    .map_err(store)?;
                while let Some(message) = messages.next().await {
                    let message = message.map_err(store)?;
                    let info = message.info().map_err(store)?;
                    let seq = info.stream_sequence;
                    let Ok(stored) = serde_json::from_slice::<Message>(&message.payload) else {
                        continue;
                    };
                    records.push(StoredRecord {
                        seq,
                        partition,
                        key: stored.key,
                        arrived_ms: stored.arrived_ms,
                        body: stored.body,
                    });
                    if records.len() >= limit {
                        break;
                    }
                }
            }
            self.forget(stream, reader);
            Ok(records)
        })
    }

    fn count_after(&self, id: &StreamId, partition: u32, after: u64) -> EngineFuture<'_, u64> {
        let id = id.clone();
        Box::pin(async move {
            let Some(stream) = self.get(&id).await? else {
                return Ok(0);
            };
            let reader = self.reader(&stream, &id, partition, after).await?;
            let pending = reader.cached_info().num_pending;
            self.forget(stream, reader);
            Ok(pending)
        })
    }

    fn checkpoint(&self, lane: &Lane) -> EngineFuture<'_, Option<u64>> {
        let key = lane_key(lane);
        Box::pin(async move {
            let value = self.checkpoints.get(key).await.map_err(store)?;
            Ok(value.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()))
        })
    }

    fn commit(&self, lane: &Lane, seq: u64) -> EngineFuture<'_, ()> {
        let key = lane_key(lane);
        Box::pin(async move {
            self.checkpoints
                .put(key, seq.to_string().into())
                .await
                .map_err(store)?;
            Ok(())
        })
    }

    fn claim(&self, lane: &Lane) -> EngineFuture<'_, bool> {
        let key = lane_key(lane);
        Box::pin(async move {
            if self.left.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(false);
            }
            let hosts = self.hosts_alive().await?;
            // Decide under one lock, so lanes deciding at once see each
            // other's choices.
            let give_back = {
                let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
                lanes.known.insert(key.clone());
                let share = lanes.known.len().div_ceil(hosts.max(1));
                let held = lanes.held.contains(&key);
                if held && lanes.held.len() > share {
                    lanes.held.remove(&key);
                    lanes.taken_ms.remove(&key);
                    true
                } else if !held && lanes.held.len() >= share {
                    return Ok(false);
                } else if held
                    && lanes
                        .taken_ms
                        .get(&key)
                        .is_some_and(|at| now_ms() < at + FRESH_LEASE.as_millis() as u64)
                {
                    return Ok(true);
                } else {
                    false
                }
            };
            if give_back {
                // More than our share: give this one back between batches.
                self.give_back(&key).await;
                let held = self
                    .lanes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .held
                    .len();
                tracing::info!(lane = key, held, "stream lane given back to even the load");
                return Ok(false);
            }
            self.take(&key).await
        })
    }

    /// Every record published to a stream, by any host or tool, is also a
    /// plain NATS message on its subject `tf.<tenant>.<stream>.<shard>`:
    /// a subscription to them wakes this host's consumers as soon as
    /// another host appends, where they would otherwise poll (every
    /// second). It carries each record's bytes to every host following
    /// the stream. Subscriptions outlive a server restart (the client
    /// subscribes again); while the server is away the consumers poll.
    fn follow(&self, id: &StreamId, wake: Arc<tokio::sync::Notify>) {
        let client = self.js.client();
        let subjects = format!("tf.{}.{}.*", token(&id.tenant), token(&id.stream));
        tokio::spawn(async move {
            match client.subscribe(subjects.clone()).await {
                Ok(mut records) => {
                    while records.next().await.is_some() {
                        wake.notify_waiters();
                    }
                }
                Err(error) => {
                    tracing::warn!(%subjects, %error, "cannot follow the stream's subjects: its consumers poll")
                }
            }
        });
    }

    fn renew(&self, lane: &Lane) -> EngineFuture<'_, bool> {
        let key = lane_key(lane);
        Box::pin(async move {
            if self.left.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(false);
            }
            self.take(&key).await
        })
    }

    fn leave(&self) -> EngineFuture<'_, ()> {
        Box::pin(async move {
            self.left.store(true, std::sync::atomic::Ordering::Relaxed);
            let held: Vec<String> = {
                let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
                lanes.taken_ms.clear();
                lanes.held.drain().collect()
            };
            for key in &held {
                self.give_back(key).await;
            }
            // A heartbeat that has ended: the others count one host fewer
            // at their next count, and share the lanes out between them.
            self.leases
                .put(format!("hosts.{}", self.holder), "0".into())
                .await
                .map_err(store)?;
            tracing::info!(
                lanes = held.len(),
                "stream lanes given back: this host has left"
            );
            Ok(())
        })
    }

    fn connected(&self) -> bool {
        self.js.client().connection_state() == async_nats::connection::State::Connected
    }

    fn receive(
        &self,
        id: &StreamId,
        max: usize,
        visibility: Duration,
    ) -> EngineFuture<'_, Vec<Received>> {
        let id = id.clone();
        Box::pin(async move {
            let Some(stream) = self.get(&id).await? else {
                return Ok(Vec::new());
            };
            let queue = self.queue(&stream, visibility).await?;
            let mut messages = queue
                .fetch()
                .max_messages(max.max(1))
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .map_err(store)?;
            let mut received = Vec::new();
            while let Some(message) = messages.next().await {
                let message = message.map_err(store)?;
                let info = message.info().map_err(store)?;
                let (seq, delivered, published) = (
                    info.stream_sequence,
                    info.delivered.max(1) as u32,
                    millis(info),
                );
                let Ok(stored) = serde_json::from_slice::<Message>(&message.payload) else {
                    // Not ours: take it out of the queue.
                    let _ = message.ack_with(AckKind::Term).await;
                    continue;
                };
                let uncounted = {
                    let uncounted = self.uncounted.lock().unwrap_or_else(|e| e.into_inner());
                    uncounted.get(&(id.key(), seq)).copied().unwrap_or(0)
                };
                received.push(Received {
                    record: StoredRecord {
                        seq,
                        partition: 0,
                        key: stored.key,
                        arrived_ms: stored.arrived_ms,
                        body: stored.body,
                    },
                    receive_count: delivered.saturating_sub(uncounted).max(1),
                    // JetStream keeps no first-receive time: the first
                    // receive is now, a later one is dated by the publish.
                    first_receive_ms: if delivered == 1 { now_ms() } else { published },
                });
                let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
                inflight.insert((id.key(), seq), message);
            }
            Ok(received)
        })
    }

    fn settle(&self, id: &StreamId, seqs: Vec<u64>) -> EngineFuture<'_, ()> {
        let id = id.clone();
        Box::pin(async move {
            for seq in seqs {
                if let Some(message) = self.take_inflight(&id, seq) {
                    message.double_ack().await.map_err(store)?;
                }
                let mut uncounted = self.uncounted.lock().unwrap_or_else(|e| e.into_inner());
                uncounted.remove(&(id.key(), seq));
            }
            Ok(())
        })
    }

    fn release(
        &self,
        id: &StreamId,
        seq: u64,
        delay: Duration,
        uncount: bool,
    ) -> EngineFuture<'_, ()> {
        let id = id.clone();
        Box::pin(async move {
            if uncount {
                let mut uncounted = self.uncounted.lock().unwrap_or_else(|e| e.into_inner());
                *uncounted.entry((id.key(), seq)).or_default() += 1;
            }
            if let Some(message) = self.take_inflight(&id, seq) {
                let delay = (!delay.is_zero()).then_some(delay);
                message.ack_with(AckKind::Nak(delay)).await.map_err(store)?;
            }
            Ok(())
        })
    }

    fn unsettled(&self, id: &StreamId) -> EngineFuture<'_, u64> {
        let id = id.clone();
        Box::pin(async move {
            let Some(mut stream) = self.get(&id).await? else {
                return Ok(0);
            };
            match stream.consumer_info(QUEUE_CONSUMER).await {
                Ok(info) => Ok(info.num_pending + info.num_ack_pending as u64),
                Err(_) => Ok(stream.info().await.map_err(store)?.state.messages),
            }
        })
    }

    fn trim(&self, tenant: &str, before_ms: u64) -> EngineFuture<'_, u64> {
        let prefix = tenant_prefix(tenant);
        Box::pin(async move {
            let mut trimmed = 0;
            let mut names = self.js.stream_names();
            let mut ours = Vec::new();
            while let Some(name) = names.next().await {
                let name = name.map_err(store)?;
                if name.starts_with(&prefix) {
                    ours.push(name);
                }
            }
            for name in ours {
                let mut stream = self.js.get_stream(&name).await.map_err(store)?;
                let state = stream.info().await.map_err(store)?.state.clone();
                let millis = |t: async_nats::datetime::DateTime| {
                    (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64
                };
                if state.messages == 0 || millis(state.first_timestamp) >= before_ms {
                    continue;
                }
                // The first record at or after the cutoff, by binary search
                // over the sequence (purges keep it contiguous).
                let (mut low, mut high) = (state.first_sequence, state.last_sequence + 1);
                while low < high {
                    let middle = low + (high - low) / 2;
                    let message = stream.get_raw_message(middle).await.map_err(store)?;
                    if millis(message.time) < before_ms {
                        low = middle + 1;
                    } else {
                        high = middle;
                    }
                }
                stream.purge().sequence(low).await.map_err(store)?;
                trimmed += low - state.first_sequence;
            }
            Ok(trimmed)
        })
    }

    fn tenant_bytes(&self, tenant: &str) -> EngineFuture<'_, u64> {
        let prefix = tenant_prefix(tenant);
        Box::pin(async move {
            let mut bytes = 0;
            let mut streams = self.js.streams();
            while let Some(info) = streams.next().await {
                let info = info.map_err(store)?;
                if info.config.name.starts_with(&prefix) {
                    bytes += info.state.bytes;
                }
            }
            Ok(bytes)
        })
    }
    fn apply_sync(&self, sync: SyncWrite) -> EngineFuture<'_, Option<Applied>> {
        Box::pin(async move {
            let key = dataset_key(&sync.dataset);
            if let Some(publish) = &sync.publish {
                let stored = self.tenant_bytes(&publish.stream.tenant).await?;
                if stored >= publish.max_tenant_bytes {
                    return Err(EngineError::StorageQuota {
                        stored,
                        adding: 0,
                        limit: publish.max_tenant_bytes,
                    });
                }
            }
            for _ in 0..CAS_ATTEMPTS {
                let (mut current, revision) = self.dataset_entry(&key).await?;
                // Finish what an earlier sync left in the outbox first, so
                // one identity's records stay in order.
                let flushed = match current.pending.take() {
                    Some(pending) => {
                        self.publish_pending(&pending).await?;
                        true
                    }
                    None => false,
                };
                let Some(applied) =
                    state::apply(&sync.dataset, &mut current, &sync.updates, sync.now_ms)
                else {
                    if flushed {
                        self.write_dataset(&key, &current, revision).await?;
                    }
                    return Ok(None);
                };
                let pending = match &sync.publish {
                    None => None,
                    Some(publish) => {
                        let built = (publish.build)(&applied);
                        if let Some((payload, records)) = built.payload {
                            let bytes = serde_json::to_vec(&records).map_err(store)?;
                            self.payloads
                                .put(
                                    format!(
                                        "{}.{}",
                                        token(&publish.stream.tenant),
                                        token(&payload)
                                    ),
                                    bytes.into(),
                                )
                                .await
                                .map_err(store)?;
                        }
                        let pending = Pending {
                            tenant: publish.stream.tenant.clone(),
                            stream: publish.stream.stream.clone(),
                            key: built.record.key,
                            body: built.record.body,
                            message_id: format!("{key}/{}", applied.sync_count),
                        };
                        Some(serde_json::to_value(&pending).map_err(store)?)
                    }
                };
                current.pending = pending.clone();
                let Some(written) = self.write_dataset(&key, &current, revision).await? else {
                    // Another host applied a sync of this dataset first.
                    continue;
                };
                if let Some(pending) = pending {
                    if self
                        .crash_before_publish
                        .load(std::sync::atomic::Ordering::Relaxed)
                    {
                        return Err(store("injected crash between state and publish"));
                    }
                    self.publish_pending(&pending).await?;
                    current.pending = None;
                    // If another host wrote meanwhile, it published this
                    // record first (deduplicated) and cleared the outbox.
                    self.write_dataset(&key, &current, written).await?;
                }
                return Ok(Some(applied));
            }
            Err(store(format!(
                "{CAS_ATTEMPTS} hosts' syncs of the dataset {key} won the race in a row; try again"
            )))
        })
    }

    fn dataset(&self, id: &DatasetId) -> EngineFuture<'_, Option<DatasetState>> {
        let key = dataset_key(id);
        Box::pin(async move {
            self.flush_outbox(&key).await?;
            let (state, revision) = self.dataset_entry(&key).await?;
            Ok((revision != 0 && state.sync_count > 0).then_some(state))
        })
    }

    fn datasets(&self, tenant: &str) -> EngineFuture<'_, Vec<DatasetId>> {
        let tenant = tenant.to_owned();
        Box::pin(async move {
            let mut found = Vec::new();
            for key in self.dataset_keys(&format!("{}.>", token(&tenant))).await? {
                let parts: Vec<&str> = key.split('.').skip(1).collect();
                if let [pool, identity, dataset] = parts[..] {
                    if let (Some(pool), Some(identity), Some(dataset)) =
                        (untoken(pool), untoken(identity), untoken(dataset))
                    {
                        found.push(DatasetId {
                            tenant: tenant.clone(),
                            pool,
                            identity,
                            dataset,
                        });
                    }
                }
            }
            found.sort();
            Ok(found)
        })
    }

    fn sweep_outboxes(&self) -> EngineFuture<'_, u64> {
        Box::pin(async move {
            // Datasets are the keys of four tokens; secrets and bulk
            // publish records start with `_`, which no token does.
            let keys = self.dataset_keys(">").await?;
            let mut published = 0;
            for key in keys {
                if key.starts_with('_') || key.split('.').count() != 4 {
                    continue;
                }
                match self.flush_outbox(&key).await {
                    Ok(true) => published += 1,
                    Ok(false) => {}
                    // One dataset's failure (a tenant over its quota) does
                    // not stop the others'; its next touch tries again.
                    Err(error) => {
                        tracing::warn!(dataset = %key, %error, "publishing a record left in an outbox failed")
                    }
                }
            }
            Ok(published)
        })
    }

    fn bulk_publish(
        &self,
        tenant: &str,
        change: BulkChange,
    ) -> EngineFuture<'_, (BulkRecord, bool)> {
        let key = format!("{BULK_PREFIX}.{}", token(tenant));
        Box::pin(async move {
            for _ in 0..CAS_ATTEMPTS {
                let (current, revision) = match self.datasets.entry(&key).await.map_err(store)? {
                    Some(entry) if entry.operation == kv::Operation::Put => (
                        serde_json::from_slice(&entry.value).map_err(store)?,
                        entry.revision,
                    ),
                    Some(entry) => (BulkRecord::default(), entry.revision),
                    None => (BulkRecord::default(), 0),
                };
                let Some(new) = change(&current) else {
                    return Ok((current, false));
                };
                let bytes = serde_json::to_vec(&new).map_err(store)?;
                let written = if revision == 0 {
                    self.datasets.create(&key, bytes.into()).await.is_ok()
                } else {
                    self.datasets
                        .update(&key, bytes.into(), revision)
                        .await
                        .is_ok()
                };
                if written {
                    return Ok((new, true));
                }
                // Another host changed it first: decide again on its record.
            }
            Err(store(format!(
                "{CAS_ATTEMPTS} changes of the bulk publish record {key} lost the race in a row; try again"
            )))
        })
    }

    fn sync_payload(&self, tenant: &str, payload: &str) -> EngineFuture<'_, Option<Value>> {
        let key = format!("{}.{}", token(tenant), token(payload));
        Box::pin(async move {
            let value = self.payloads.get(key).await.map_err(store)?;
            value
                .map(|v| serde_json::from_slice(&v).map_err(store))
                .transpose()
        })
    }

    fn secret(&self, name: &str) -> EngineFuture<'_, Vec<u8>> {
        let key = format!("_secrets.{}", token(name));
        Box::pin(async move {
            if let Some(secret) = self.datasets.get(&key).await.map_err(store)? {
                return Ok(secret.to_vec());
            }
            let secret = random_secret()?;
            // Two hosts making it at once: the first one's stays.
            if self
                .datasets
                .create(&key, secret.clone().into())
                .await
                .is_ok()
            {
                return Ok(secret);
            }
            let secret = self.datasets.get(&key).await.map_err(store)?;
            secret
                .map(|s| s.to_vec())
                .ok_or_else(|| store(format!("the secret {key} vanished")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_name_is_one_token() {
        assert_eq!(token("orders"), "orders");
        assert_eq!(token("orders.eu"), "orders_2eeu");
        assert_eq!(token("a_b"), "a_5fb");
        assert_ne!(token("a.b"), token("a_2eb_"));
        // The separator `__` never appears inside an encoded name.
        for name in ["a__b", "x_", "_"] {
            assert!(!token(name).contains("__"), "{name}");
        }
    }
}
