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
//! | `sync_payload_times` | (tenant, ms of the sync, payload) | nothing: which payloads [`Records::trim`](crate::streams::engine::Records::trim) deletes once [`SYNC_PAYLOAD_AGE`](super::engine::SYNC_PAYLOAD_AGE) old |
//! | `bulk_publish` | tenant | its bulk publish record (`cognito::bulk::BulkRecord`) as JSON |
//! | `secrets` | name | bytes |
//!
//! A sync's state change and its stream record are written by one write
//! transaction: both or neither survive a crash.
//!
//! Writes are serialised by redb (one write transaction at a time), and
//! every operation runs on a blocking thread, off the async workers.
//!
//! One file a job, each implementing its part of the engine's traits: the
//! streams and their records, with retention (`records.rs`, `Records`),
//! lanes' checkpoints (`lanes.rs`, `Lanes`), queue messages (`queue.rs`,
//! `Queues`), and Cognito Streams' datasets, sync payloads, bulk publish
//! records and secrets (`datasets.rs`, `Datasets`). Here: the file, its
//! tables, and the blocking thread every operation runs on.

mod datasets;
mod lanes;
mod queue;
mod records;
#[cfg(test)]
mod tests;

use super::engine::{Engine, EngineError, EngineFuture};
use super::StreamKind;
use redb::{Database, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

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

/// Each method is in the file of its job (see the module's head).
impl Engine for EmbeddedEngine {}
