//! Queue streams (SQS, S3) in redb: each message's visibility, receive
//! count and first receive in the `queue` table.

use super::{store, EmbeddedEngine, QUEUE, RECORDS};
use crate::streams::engine::Queues;
use crate::streams::engine::{EngineFuture, Received};
use crate::streams::{now_ms, StreamId};
use redb::{ReadableDatabase, ReadableTable};
use std::time::Duration;

impl Queues for EmbeddedEngine {
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
}
