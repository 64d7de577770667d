//! Cognito Streams on JetStream: datasets in `TF_DATASETS` with their
//! outbox, the full records of oversized sync records in
//! `TF_SYNC_PAYLOADS`, each tenant's bulk publish record, and the shared
//! secrets.
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
//! ([`Datasets::sweep_outboxes`](crate::streams::engine::Datasets::sweep_outboxes)) publishes it, whichever comes first.
//! Until then the record is late, never lost; after the window it may be
//! published twice (at least once).

use super::records::subject;
use super::{store, token, untoken, Message, NatsEngine, DATASETS};
use crate::cognito::bulk::BulkRecord;
use crate::cognito::state::{self, Applied, DatasetId, DatasetState};
use crate::streams::engine::{
    random_secret, shard_of, BulkChange, EngineError, EngineFuture, SyncWrite,
};
use crate::streams::engine::{Datasets, Records};
use crate::streams::{now_ms, StreamId, StreamKind};
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The key prefix, in `TF_DATASETS`, of each tenant's bulk publish record.
const BULK_PREFIX: &str = "_bulk-publish";
/// Compare-and-set attempts on one dataset before a sync gives up.
const CAS_ATTEMPTS: usize = 64;

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

impl NatsEngine {
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
}

impl Datasets for NatsEngine {
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
