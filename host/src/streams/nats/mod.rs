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
//!
//! One file a job, each implementing its part of the engine's traits: the
//! streams and their records (`records.rs`, `Records`), lanes' checkpoints
//! and leases (`lanes.rs`, `Lanes`), queue consumers (`queue.rs`,
//! `Queues`), and Cognito Streams' datasets, sync payloads, outbox and
//! bulk publish record (`datasets.rs`, `Datasets`). Here: the connection,
//! the buckets, the engine's state and the encoding of names into tokens.

mod datasets;
mod lanes;
mod queue;
mod records;
#[cfg(test)]
mod tests;

use super::engine::{Engine, EngineError};
use async_nats::jetstream::{self, kv, stream};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const CHECKPOINTS: &str = "TF_CHECKPOINTS";
const LEASES: &str = "TF_LEASES";
const DATASETS: &str = "TF_DATASETS";
const SYNC_PAYLOADS: &str = "TF_SYNC_PAYLOADS";
pub use super::engine::SYNC_PAYLOAD_AGE;

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
    /// Set by [`Lanes::leave`](crate::streams::engine::Lanes::leave): this
    /// host claims no lane any more.
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

/// Each method is in the file of its job (see the module's head).
impl Engine for NatsEngine {
    fn connected(&self) -> bool {
        self.js.client().connection_state() == async_nats::connection::State::Connected
    }
}
