//! Cognito Streams in redb: datasets (a sync's state and its record in
//! one write transaction), the full records of oversized sync records,
//! each tenant's bulk publish record, and the shared secrets.

use super::records::append_in;
use super::{store, EmbeddedEngine};
use super::{BULK_PUBLISH, DATASETS, SECRETS, SYNC_PAYLOADS, SYNC_PAYLOAD_TIMES};
use crate::cognito::bulk::BulkRecord;
use crate::cognito::state::{self, Applied, DatasetId, DatasetState};
use crate::streams::engine::Datasets;
use crate::streams::engine::{random_secret, BulkChange, EngineFuture, SyncWrite};
use crate::streams::StreamKind;
use redb::{ReadableDatabase, ReadableTable};
use serde_json::Value;

impl Datasets for EmbeddedEngine {
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
