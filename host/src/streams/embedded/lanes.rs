//! Lanes' checkpoints in redb. One host alone runs every lane: no leases.

use super::{store, EmbeddedEngine, CHECKPOINTS};
use crate::streams::engine::Lanes;
use crate::streams::engine::{EngineFuture, Lane};
use redb::ReadableDatabase;

fn checkpoint_key(lane: &Lane) -> String {
    format!("{}/{}", lane.stream.key(), lane.mapping)
}

impl Lanes for EmbeddedEngine {
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
}
