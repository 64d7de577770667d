//! The embedded engine: every stream in one [redb] file under the data
//! directory (`serve --data-dir`). redb commits are ACID and durable when
//! `commit` returns (fsync), so an acknowledged append and a checkpoint
//! survive a crash or SIGKILL.
//!
//! Tables (`tenant/stream` is a stream's key: neither name holds a `/`):
//!
//! | table | key | value |
//! |---|---|---|
//! | `streams` | `tenant/stream` | JSON: kind, last sequence number |
//! | `records` | (`tenant/stream`, partition, seq) | the record as JSON |
//! | `queue` | (`tenant/stream`, seq) | (visible at ms, receive count, first receive ms) |
//! | `checkpoints` | (`tenant/stream/mapping`, partition, lane) | seq |
//! | `tenant_bytes` | tenant | bytes stored |
//! | `datasets` | the dataset's key (`cognito::state::DatasetId::key`) | its state as JSON |
//! | `sync_payloads` | `tenant/payload` | the full records of an oversized sync record |
//! | `sync_payload_times` | (tenant, ms of the sync, payload) | nothing: which payloads [`Engine::trim`] deletes once [`SYNC_PAYLOAD_AGE`] old |
//! | `bulk_publish` | tenant | its bulk publish record (`cognito::bulk::BulkRecord`) as JSON |
//! | `secrets` | name | bytes |
//!
//! A sync's state change and its stream record are written by one write
//! transaction: both or neither survive a crash.
//!
//! Writes are serialised by redb (one write transaction at a time), and
//! every operation runs on a blocking thread, off the async workers.

use super::engine::{
    random_secret, shard_of, Appended, BulkChange, Engine, EngineError, EngineFuture, Lane,
    NewRecord, Received, StoredRecord, StreamInfo, SyncWrite, SYNC_PAYLOAD_AGE,
};
use super::{now_ms, StreamId, StreamKind};
use crate::cognito::bulk::BulkRecord;
use crate::cognito::state::{self, Applied, DatasetId, DatasetState};
use redb::WriteTransaction;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("streams");
const RECORDS: TableDefinition<(&str, u32, u64), &[u8]> = TableDefinition::new("records");
const QUEUE: TableDefinition<(&str, u64), (u64, u32, u64)> = TableDefinition::new("queue");
const CHECKPOINTS: TableDefinition<(&str, u32, u32), u64> = TableDefinition::new("checkpoints");
const TENANT_BYTES: TableDefinition<&str, u64> = TableDefinition::new("tenant_bytes");
const DATASETS: TableDefinition<&str, &[u8]> = TableDefinition::new("datasets");
const SYNC_PAYLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("sync_payloads");
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
const SYNC_PAYLOAD_TIMES: TableDefinition<(&str, u64, &str), ()> =
    TableDefinition::new("sync_payload_times");
const BULK_PUBLISH: TableDefinition<&str, &[u8]> = TableDefinition::new("bulk_publish");

/// The file inside the data directory.
pub const FILE_NAME: &str = "streams.redb";

#[derive(Serialize, Deserialize)]
struct Meta {
    kind: StreamKind,
    last_seq: u64,
}

/// Streams kept in a redb file.
#[derive(Clone)]
pub struct EmbeddedEngine {
    db: Arc<Database>,
}

fn store<E: std::fmt::Display>(error: E) -> EngineError {
    EngineError::Store(error.to_string())
}

impl EmbeddedEngine {
    /// Opens (or creates) the store in `dir`, creating the folder.
    pub fn open(dir: &Path) -> Result<EmbeddedEngine, EngineError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| EngineError::Store(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path)
            .map_err(|e| EngineError::Store(format!("cannot open {}: {e}", path.display())))?;
        // Create every table once, so readers never meet a missing one.
        let txn = db.begin_write().map_err(store)?;
        txn.open_table(STREAMS).map_err(store)?;
        txn.open_table(RECORDS).map_err(store)?;
        txn.open_table(QUEUE).map_err(store)?;
        txn.open_table(CHECKPOINTS).map_err(store)?;
        txn.open_table(TENANT_BYTES).map_err(store)?;
        txn.open_table(DATASETS).map_err(store)?;
        txn.open_table(SYNC_PAYLOADS).map_err(store)?;
        txn.open_table(SECRETS).map_err(store)?;
        txn.open_table(SYNC_PAYLOAD_TIMES).map_err(store)?;
        txn.open_table(BULK_PUBLISH).map_err(store)?;
        txn.commit().map_err(store)?;
        Ok(EmbeddedEngine { db: Arc::new(db) })
    }

    /// Runs `work` on a blocking thread.
    fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, EngineError> + Send + 'static,
    ) -> EngineFuture<'static, T> {
        let db = self.db.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || work(&db))
                .await
                .map_err(store)?
        })
    }
}

/// Appends records inside `txn` (see [`Engine::append`]); an error leaves
/// the transaction to be dropped, which aborts it.
fn append_in(
    txn: &WriteTransaction,
    id: &StreamId,
    kind: StreamKind,
    records: Vec<NewRecord>,
    max_tenant_bytes: u64,
) -> Result<Vec<Appended>, EngineError> {
    let key = id.key();
    let appended = {
        let mut streams = txn.open_table(STREAMS).map_err(store)?;
        let mut meta = match streams.get(key.as_str()).map_err(store)? {
            Some(m) => serde_json::from_slice::<Meta>(m.value()).map_err(store)?,
            None => Meta { kind, last_seq: 0 },
        };
        if meta.kind != kind {
            return Err(EngineError::KindMismatch {
                stream: id.stream.clone(),
                existing: meta.kind,
                wanted: kind,
            });
        }
        let mut bytes_table = txn.open_table(TENANT_BYTES).map_err(store)?;
        let stored = bytes_table
            .get(id.tenant.as_str())
            .map_err(store)?
            .map_or(0, |b| b.value());
        let now = now_ms();
        let mut table = txn.open_table(RECORDS).map_err(store)?;
        let mut queue = txn.open_table(QUEUE).map_err(store)?;
        let mut adding = 0u64;
        let mut appended = Vec::with_capacity(records.len());
        for record in records {
            meta.last_seq += 1;
            let partition = if kind.is_ordered() {
                shard_of(&record.key)
            } else {
                0
            };
            let stored_record = StoredRecord {
                seq: meta.last_seq,
                partition,
                key: record.key,
                arrived_ms: now,
                body: record.body,
            };
            adding += stored_record.stored_bytes();
            let bytes = serde_json::to_vec(&stored_record).map_err(store)?;
            table
                .insert((key.as_str(), partition, meta.last_seq), bytes.as_slice())
                .map_err(store)?;
            if !kind.is_ordered() {
                queue
                    .insert((key.as_str(), meta.last_seq), (0u64, 0u32, 0u64))
                    .map_err(store)?;
            }
            appended.push(Appended {
                partition,
                seq: meta.last_seq,
            });
        }
        if stored + adding > max_tenant_bytes {
            // Dropping the transaction aborts it.
            return Err(EngineError::StorageQuota {
                stored,
                adding,
                limit: max_tenant_bytes,
            });
        }
        bytes_table
            .insert(id.tenant.as_str(), stored + adding)
            .map_err(store)?;
        let meta = serde_json::to_vec(&meta).map_err(store)?;
        streams
            .insert(key.as_str(), meta.as_slice())
            .map_err(store)?;
        appended
    };
    Ok(appended)
}

/// Deletes the tenant's sync payloads stored by syncs before
/// `before_ms`; returns how many.
fn trim_payloads(txn: &WriteTransaction, tenant: &str, before_ms: u64) -> Result<u64, EngineError> {
    let mut times = txn.open_table(SYNC_PAYLOAD_TIMES).map_err(store)?;
    let mut old = Vec::new();
    for entry in times
        .range((tenant, 0, "")..(tenant, before_ms, ""))
        .map_err(store)?
    {
        let (k, _) = entry.map_err(store)?;
        let (_, at, payload) = k.value();
        old.push((at, payload.to_owned()));
    }
    let mut payloads = txn.open_table(SYNC_PAYLOADS).map_err(store)?;
    for (at, payload) in &old {
        times
            .remove((tenant, *at, payload.as_str()))
            .map_err(store)?;
        payloads
            .remove(format!("{tenant}/{payload}").as_str())
            .map_err(store)?;
    }
    Ok(old.len() as u64)
}

fn checkpoint_key(lane: &Lane) -> String {
    format!("{}/{}", lane.stream.key(), lane.mapping)
}

impl Engine for EmbeddedEngine {
    fn stream(&self, id: &StreamId) -> EngineFuture<'_, Option<StreamInfo>> {
        let key = id.key();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(store)?;
            let table = txn.open_table(STREAMS).map_err(store)?;
            let meta = table.get(key.as_str()).map_err(store)?;
            Ok(meta
                .and_then(|m| serde_json::from_slice::<Meta>(m.value()).ok())
                .map(|m| StreamInfo {
                    kind: m.kind,
                    last_seq: m.last_seq,
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
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(store)?;
            let appended = append_in(&txn, &id, kind, records, max_tenant_bytes)?;
            txn.commit().map_err(store)?;
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
        let key = id.key();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(store)?;
            let table = txn.open_table(RECORDS).map_err(store)?;
            let start = after.saturating_add(1);
            let mut records = Vec::new();
            for entry in table
                .range((key.as_str(), partition, start)..=(key.as_str(), partition, u64::MAX))
                .map_err(store)?
                .take(limit)
            {
                let (_, value) = entry.map_err(store)?;
                records.push(serde_json::from_slice(value.value()).map_err(store)?);
            }
            Ok(records)
        })
    }

    fn count_after(&self, id: &StreamId, partition: u32, after: u64) -> EngineFuture<'_, u64> {
        let key = id.key();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(store)?;
            let table = txn.open_table(RECORDS).map_err(store)?;
            let range = table
                .range(
                    (key.as_str(), partition, after.saturating_add(1))
                        ..=(key.as_str(), partition, u64::MAX),
                )
                .map_err(store)?;
            Ok(range.count() as u64)
        })
    }

    fn checkpoint(&self, lane: &Lane) -> EngineFuture<'_, Option<u64>> {
        let (key, partition, lane) = (checkpoint_key(lane), lane.partition, lane.lane);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(store)?;
            let table = txn.open_table(CHECKPOINTS).map_err(store)?;
            let seq = table
                .get((key.as_str(), partition, lane))
                .map_err(store)?
                .map(|v| v.value());
            Ok(seq)
        })
    }

    fn commit(&self, lane: &Lane, seq: u64) -> EngineFuture<'_, ()> {
        let (key, partition, lane) = (checkpoint_key(lane), lane.partition, lane.lane);
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(store)?;
            {
                let mut table = txn.open_table(CHECKPOINTS).map_err(store)?;
                table
                    .insert((key.as_str(), partition, lane), seq)
                    .map_err(store)?;
            }
            txn.commit().map_err(store)
        })
    }

    fn receive(
        &self,
        id: &StreamId,
        max: usize,
        visibility: Duration,
    ) -> EngineFuture<'_, Vec<Received>> {
        let key = id.key();
        self.blocking(move |db| {
            let now = now_ms();
            let txn = db.begin_write().map_err(store)?;
            let received = {
                let mut queue = txn.open_table(QUEUE).map_err(store)?;
                let records = txn.open_table(RECORDS).map_err(store)?;
                let mut due = Vec::new();
                for entry in queue
                    .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))
                    .map_err(store)?
                {
                    let (k, v) = entry.map_err(store)?;
                    let (visible_at, count, first) = v.value();
                    if visible_at <= now {
                        due.push((k.value().1, count, first));
                        if due.len() == max {
                            break;
                        }
                    }
                }
                let mut received = Vec::with_capacity(due.len());
                for (seq, count, first) in due {
                    let first = if first == 0 { now } else { first };
                    let visible_at = now + visibility.as_millis() as u64;
                    queue
                        .insert((key.as_str(), seq), (visible_at, count + 1, first))
                        .map_err(store)?;
                    match records.get((key.as_str(), 0, seq)).map_err(store)? {
                        Some(value) => received.push(Received {
                            record: serde_json::from_slice(value.value()).map_err(store)?,
                            receive_count: count + 1,
                            first_receive_ms: first,
                        }),
                        // Trimmed by retention: the message is gone.
                        None => {
                            queue.remove((key.as_str(), seq)).map_err(store)?;
                        }
                    }
                }
                received
            };
            txn.commit().map_err(store)?;
            Ok(received)
        })
    }

    fn settle(&self, id: &StreamId, seqs: Vec<u64>) -> EngineFuture<'_, ()> {
        let key = id.key();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(store)?;
            {
                let mut queue = txn.open_table(QUEUE).map_err(store)?;
                for seq in seqs {
                    queue.remove((key.as_str(), seq)).map_err(store)?;
                }
            }
            txn.commit().map_err(store)
        })
    }

    fn release(
        &self,
        id: &StreamId,
        seq: u64,
        delay: Duration,
        uncount: bool,
    ) -> EngineFuture<'_, ()> {
        let key = id.key();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(store)?;
            {
                let mut queue = txn.open_table(QUEUE).map_err(store)?;
                let current = queue
                    .get((key.as_str(), seq))
                    .map_err(store)?
                    .map(|v| v.value());
                if let Some((_, count, first)) = current {
                    let count = if uncount {
                        count.saturating_sub(1)
                    } else {
                        count
                    };
                    let first = if count == 0 { 0 } else { first };
                    let visible_at = now_ms() + delay.as_millis() as u64;
                    queue
                        .insert((key.as_str(), seq), (visible_at, count, first))
                        .map_err(store)?;
                }
            }
            txn.commit().map_err(store)
        })
    }

    fn unsettled(&self, id: &StreamId) -> EngineFuture<'_, u64> {
        let key = id.key();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(store)?;
            let queue = txn.open_table(QUEUE).map_err(store)?;
            let range = queue
                .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))
                .map_err(store)?;
            Ok(range.count() as u64)
        })
    }

    fn trim(&self, tenant: &str, before_ms: u64) -> EngineFuture<'_, u64> {
        let tenant = tenant.to_owned();
        self.blocking(move |db| {
            let prefix = format!("{tenant}/");
            let txn = db.begin_write().map_err(store)?;
            let mut removed = 0u64;
            {
                let streams: Vec<(String, StreamKind)> = {
                    let table = txn.open_table(STREAMS).map_err(store)?;
                    let mut found = Vec::new();
                    for entry in table.range(prefix.as_str()..).map_err(store)? {
                        let (k, v) = entry.map_err(store)?;
                        if !k.value().starts_with(&prefix) {
                            break;
                        }
                        let meta: Meta = serde_json::from_slice(v.value()).map_err(store)?;
                        found.push((k.value().to_owned(), meta.kind));
                    }
                    found
                };
                let mut records = txn.open_table(RECORDS).map_err(store)?;
                let mut queue = txn.open_table(QUEUE).map_err(store)?;
                let mut freed = 0u64;
                for (key, kind) in streams {
                    let partitions = if kind.is_ordered() {
                        super::engine::SHARDS
                    } else {
                        1
                    };
                    for partition in 0..partitions {
                        let mut old = Vec::new();
                        for entry in records
                            .range(
                                (key.as_str(), partition, 0)..=(key.as_str(), partition, u64::MAX),
                            )
                            .map_err(store)?
                        {
                            let (k, v) = entry.map_err(store)?;
                            let record: StoredRecord =
                                serde_json::from_slice(v.value()).map_err(store)?;
                            // Arrival grows with the sequence number.
                            if record.arrived_ms >= before_ms {
                                break;
                            }
                            freed += record.stored_bytes();
                            old.push(k.value().2);
                        }
                        for seq in old {
                            records
                                .remove((key.as_str(), partition, seq))
                                .map_err(store)?;
                            queue.remove((key.as_str(), seq)).map_err(store)?;
                            removed += 1;
                        }
                    }
                }
                // Payloads no URL can be valid for any more.
                let payloads_old = now_ms().saturating_sub(SYNC_PAYLOAD_AGE.as_millis() as u64);
                let expired = trim_payloads(&txn, &tenant, payloads_old)?;
                if removed == 0 && expired == 0 {
                    // Nothing to trim: dropping the transaction aborts it,
                    // with no write to disk.
                    return Ok(0);
                }
                let mut bytes = txn.open_table(TENANT_BYTES).map_err(store)?;
                let stored = bytes
                    .get(tenant.as_str())
                    .map_err(store)?
                    .map_or(0, |b| b.value());
                bytes
                    .insert(tenant.as_str(), stored.saturating_sub(freed))
                    .map_err(store)?;
            }
            txn.commit().map_err(store)?;
            Ok(removed)
        })
    }

    fn tenant_bytes(&self, tenant: &str) -> EngineFuture<'_, u64> {
        let tenant = tenant.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(store)?;
            let table = txn.open_table(TENANT_BYTES).map_err(store)?;
            let bytes = table
                .get(tenant.as_str())
                .map_err(store)?
                .map_or(0, |b| b.value());
            Ok(bytes)
        })
    }

    fn apply_sync(&self, sync: SyncWrite) -> EngineFuture<'_, Option<Applied>> {
        self.blocking(move |db| {
            let key = sync.dataset.key();
            let txn = db.begin_write().map_err(store)?;
            let applied = {
                let mut datasets = txn.open_table(DATASETS).map_err(store)?;
                let mut current: DatasetState = match datasets.get(key.as_str()).map_err(store)? {
                    Some(v) => serde_json::from_slice(v.value()).map_err(store)?,
                    None => DatasetState::default(),
                };
                let Some(applied) =
                    state::apply(&sync.dataset, &mut current, &sync.updates, sync.now_ms)
                else {
                    return Ok(None);
                };
                let bytes = serde_json::to_vec(&current).map_err(store)?;
                datasets
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(store)?;
                if let Some(publish) = &sync.publish {
                    let built = (publish.build)(&applied);
                    if let Some((payload, records)) = built.payload {
                        let mut payloads = txn.open_table(SYNC_PAYLOADS).map_err(store)?;
                        let k = format!("{}/{payload}", publish.stream.tenant);
                        let v = serde_json::to_vec(&records).map_err(store)?;
                        payloads.insert(k.as_str(), v.as_slice()).map_err(store)?;
                        let mut times = txn.open_table(SYNC_PAYLOAD_TIMES).map_err(store)?;
                        let at = (
                            publish.stream.tenant.as_str(),
                            sync.now_ms,
                            payload.as_str(),
                        );
                        times.insert(at, ()).map_err(store)?;
                    }
                    append_in(
                        &txn,
                        &publish.stream,
                        StreamKind::Kinesis,
                        vec![built.record],
                        publish.max_tenant_bytes,
                    )?;
                }
                applied
            };
            txn.commit().map_err(store)?;
            Ok(Some(applied))
        })
    }

    fn dataset(&self, id: &DatasetId) -> EngineFuture<'_, Option<DatasetState>> {
        let key = id.key();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(store)?;
            let table = txn.open_table(DATASETS).map_err(store)?;
            let value = table.get(key.as_str()).map_err(store)?;
            value
                .map(|v| serde_json::from_slice(v.value()).map_err(store))
                .transpose()
        })
    }

    fn datasets(&self, tenant: &str) -> EngineFuture<'_, Vec<DatasetId>> {
        let prefix = DatasetId::tenant_prefix(tenant);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(store)?;
            let table = txn.open_table(DATASETS).map_err(store)?;
            let mut found = Vec::new();
            for entry in table.range(prefix.as_str()..).map_err(store)? {
                let (k, _) = entry.map_err(store)?;
                if !k.value().starts_with(&prefix) {
                    break;
                }
                found.extend(DatasetId::from_key(k.value()));
            }
            Ok(found)
        })
    }

    fn bulk_publish(
        &self,
        tenant: &str,
        change: BulkChange,
    ) -> EngineFuture<'_, (BulkRecord, bool)> {
        let tenant = tenant.to_owned();
        self.blocking(move |db| {
            // A write transaction even to read: decided and written under
            // redb's one writer, so no other change comes in between.
            let txn = db.begin_write().map_err(store)?;
            let changed = {
                let mut table = txn.open_table(BULK_PUBLISH).map_err(store)?;
                let current: BulkRecord = match table.get(tenant.as_str()).map_err(store)? {
                    Some(v) => serde_json::from_slice(v.value()).map_err(store)?,
                    None => BulkRecord::default(),
                };
                let Some(new) = change(&current) else {
                    // Dropping the transaction aborts it: no write.
                    return Ok((current, false));
                };
                let bytes = serde_json::to_vec(&new).map_err(store)?;
                table
                    .insert(tenant.as_str(), bytes.as_slice())
                    .map_err(store)?;
                new
            };
            txn.commit().map_err(store)?;
            Ok((changed, true))
        })
    }

    fn sync_payload(&self, tenant: &str, payload: &str) -> EngineFuture<'_, Option<Value>> {
        let key = format!("{tenant}/{payload}");
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(store)?;
            let table = txn.open_table(SYNC_PAYLOADS).map_err(store)?;
            let value = table.get(key.as_str()).map_err(store)?;
            value
                .map(|v| serde_json::from_slice(v.value()).map_err(store))
                .transpose()
        })
    }

    fn secret(&self, name: &str) -> EngineFuture<'_, Vec<u8>> {
        let name = name.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(store)?;
            let secret = {
                let mut table = txn.open_table(SECRETS).map_err(store)?;
                let existing = table
                    .get(name.as_str())
                    .map_err(store)?
                    .map(|v| v.value().to_vec());
                match existing {
                    Some(secret) => secret,
                    None => {
                        let secret = random_secret()?;
                        table
                            .insert(name.as_str(), secret.as_slice())
                            .map_err(store)?;
                        secret
                    }
                }
            };
            txn.commit().map_err(store)?;
            Ok(secret)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cognito::state::Update;
    use crate::streams::engine::SyncPublish;

    fn oversized_sync(identity: &str, at_ms: u64) -> SyncWrite {
        SyncWrite {
            dataset: DatasetId {
                tenant: "t".into(),
                pool: "p".into(),
                identity: identity.into(),
                dataset: "d".into(),
            },
            updates: vec![Update {
                key: "k".into(),
                value: Some("v".into()),
                device_last_modified: None,
            }],
            now_ms: at_ms,
            publish: Some(SyncPublish {
                stream: StreamId::new("t", "cognito"),
                max_tenant_bytes: u64::MAX,
                // A limit of 1 byte: every record is behind a payload URL.
                build: Arc::new(|applied: &Applied| {
                    crate::cognito::build_record(applied, &applied.changed, 1, |id| id.into())
                }),
            }),
        }
    }

    #[tokio::test]
    async fn payloads_are_trimmed_once_no_url_can_be_valid() {
        let dir = tempfile::tempdir().unwrap();
        let engine = EmbeddedEngine::open(dir.path()).unwrap();
        let now = now_ms();
        let old = now - SYNC_PAYLOAD_AGE.as_millis() as u64 - 1000;
        let mut ids = Vec::new();
        for (identity, at) in [("old", old), ("new", now)] {
            let applied = engine
                .apply_sync(oversized_sync(identity, at))
                .await
                .unwrap()
                .unwrap();
            ids.push(crate::cognito::payload_id(&applied.dataset, 1));
        }
        for id in &ids {
            assert!(engine.sync_payload("t", id).await.unwrap().is_some());
        }
        // Retention of records is not the payloads' lifetime: a trim that
        // deletes no record still deletes the old payload.
        assert_eq!(engine.trim("t", 0).await.unwrap(), 0);
        assert!(engine.sync_payload("t", &ids[0]).await.unwrap().is_none());
        assert!(engine.sync_payload("t", &ids[1]).await.unwrap().is_some());
        // Another tenant's trim leaves this one's alone.
        assert_eq!(engine.trim("u", 0).await.unwrap(), 0);
        assert!(engine.sync_payload("t", &ids[1]).await.unwrap().is_some());
    }
}
