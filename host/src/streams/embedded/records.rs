//! A tenant's streams and their records in redb: appends (one write
//! transaction, quota included), reads of a partition, retention (with
//! the sync payloads no URL can be valid for any more) and the bytes a
//! tenant stores.

use super::{store, EmbeddedEngine, Meta};
use super::{QUEUE, RECORDS, STREAMS, SYNC_PAYLOADS, SYNC_PAYLOAD_TIMES, TENANT_BYTES};
use crate::streams::engine::Records;
use crate::streams::engine::{
    shard_of, Appended, EngineError, EngineFuture, NewRecord, StoredRecord, StreamInfo,
    SYNC_PAYLOAD_AGE,
};
use crate::streams::{now_ms, StreamId, StreamKind};
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

/// Appends records inside `txn` (see
/// [`Records::append`](crate::streams::engine::Records::append)); an error
/// leaves the transaction to be dropped, which aborts it.
pub(super) fn append_in(
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

impl Records for EmbeddedEngine {
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
                        crate::streams::engine::SHARDS
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
}
