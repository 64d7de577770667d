//! One mapping's consumer: reads its stream, builds Lambda's event, hands
//! it to the tenant's plugins ([`Deliver`]) and decides from the answer
//! what to commit, retry, split or give up on, with Lambda's rules.
//!
//! - Ordered kinds (Kinesis, DynamoDB): one task per lane of each shard. A
//!   failing batch holds its lane back: it is retried (with backoff), split
//!   in two when `bisect-batch-on-error` is on (a split is not counted as
//!   a retry), and given up on when `max-retry-attempts` retries have
//!   failed or its records are older than `max-record-age-s`: the failure
//!   destination gets Lambda's on-failure record with the records, and
//!   the lane moves on. With `report-batch-item-failures`, everything
//!   before the lowest failed record is committed and the rest retried.
//! - SQS: messages become invisible for `visibility-timeout-s` when
//!   received; the ones that succeeded are deleted, failed ones come back
//!   once it runs out, and past `max-receive-count` receives they go to
//!   the dead-letter stream (`on-failure`).
//! - S3: each event is its own invocation, retried twice (after 1 s and 2
//!   s), then sent to `on-failure` as Lambda's asynchronous failure record.
//!
//! Delivery is at least once: a checkpoint or deletion is written only
//! after the plugins answered, so a crash redelivers the batch in flight
//! (a duplicate), and never loses a record. A host that is busy (the
//! tenant at its concurrency quota) is waited for, with backoff, without
//! counting an attempt.

use crate::streams::engine::{
    lane_of, EngineError, Lane, NewRecord, StoredRecord, POLL, RENEW_CLAIM,
};
use crate::streams::mapping::{EventSource, StartingPosition};
use crate::streams::records::{self, Condition, LastError, Receipt};
use crate::streams::{now_ms, Counters, StreamId, StreamKind, Streams};
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How the plugins answered a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// They ran: the identifiers of the records that failed (none: all
    /// done).
    Done { failures: Vec<String> },
    /// The whole batch failed (an error, a trap, a timeout...).
    Failed(LastError),
    /// The host had no room (the tenant at its concurrency quota): try
    /// again later without counting an attempt.
    Busy,
}

impl Answer {
    /// Reads a dispatcher's answer: `{"batchItemFailures": [{"itemIdentifier"}]}`.
    /// A missing or empty list is success, as with Lambda; a malformed one
    /// fails the whole batch.
    pub fn from_response(response: &Value) -> Answer {
        let Some(list) = response.get("batchItemFailures") else {
            return Answer::Done { failures: vec![] };
        };
        let malformed = || {
            Answer::Failed(LastError {
                kind: "invalid-response".into(),
                message: format!(
                    "batchItemFailures is not a list of {{\"itemIdentifier\": string}}: {list}"
                ),
            })
        };
        match list {
            Value::Null => Answer::Done { failures: vec![] },
            Value::Array(items) => {
                let mut failures = Vec::with_capacity(items.len());
                for item in items {
                    match item.get("itemIdentifier").and_then(Value::as_str) {
                        Some(id) if !id.is_empty() => failures.push(id.to_owned()),
                        _ => return malformed(),
                    }
                }
                Answer::Done { failures }
            }
            _ => malformed(),
        }
    }
}

/// Hands an event to a tenant's plugins; the real one calls the
/// dispatcher, the unit tests a closure.
pub trait Deliver: Send + Sync + 'static {
    fn deliver(&self, event: Value) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>>;
    /// The tenant's stored-bytes quota, for what goes to a failure
    /// destination.
    fn stored_bytes_limit(&self) -> u64;
}

/// Everything one mapping's tasks share.
pub struct Consumer {
    pub streams: Arc<Streams>,
    pub deliver: Arc<dyn Deliver>,
    pub mapping: EventSource,
    pub id: StreamId,
    pub counters: Arc<Counters>,
    /// Batches in flight across every mapping of the host.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    pub stop: watch::Receiver<bool>,
}

/// The pause before retry `n` (from 1): 100 ms doubling, at most 5 s.
pub fn retry_backoff(n: u32) -> Duration {
    Duration::from_millis(
        100u64
            .saturating_mul(1 << n.saturating_sub(1).min(6))
            .min(5_000),
    )
}

/// The pause before S3 retry `n` (from 1): 1 s, 2 s (Lambda waits 1 and 2 minutes).
fn s3_retry_delay(n: u32) -> Duration {
    Duration::from_secs(u64::from(n.max(1)))
}

impl Consumer {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps, or less if told to stop.
    async fn pause(&self, duration: Duration) {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }

    async fn deliver(&self, event: Value) -> Answer {
        let _permit = self.in_flight.acquire().await;
        self.deliver.deliver(event).await
    }

    /// Runs until told to stop; an engine failure is logged and the task
    /// starts over from its checkpoint a second later.
    pub async fn run_lane(self: Arc<Self>, partition: u32, lane: u32) {
        while !self.stopped() {
            if let Err(error) = self.lane(partition, lane).await {
                tracing::error!(tenant = %self.id.tenant, mapping = %self.mapping.name, partition, %error, "stream consumer failed; starting over");
                self.pause(Duration::from_secs(1)).await;
            }
        }
    }

    /// Runs a queue mapping (SQS or S3) until told to stop.
    pub async fn run_queue(self: Arc<Self>) {
        while !self.stopped() {
            if let Err(error) = self.queue().await {
                tracing::error!(tenant = %self.id.tenant, mapping = %self.mapping.name, %error, "queue consumer failed; starting over");
                self.pause(Duration::from_secs(1)).await;
            }
        }
    }

    fn lane_id(&self, partition: u32, lane: u32) -> Lane {
        Lane {
            stream: self.id.clone(),
            mapping: self.mapping.name.clone(),
            partition,
            lane,
        }
    }

    /// Where a lane starts: its checkpoint, or the mapping's starting
    /// position (`latest` is written down at once, so a restart does not
    /// skip what came meanwhile).
    pub async fn start_of(&self, lane: &Lane) -> Result<u64, EngineError> {
        let engine = &self.streams.engine;
        if let Some(seq) = engine.checkpoint(lane).await? {
            return Ok(seq);
        }
        match self.mapping.starting_position {
            StartingPosition::TrimHorizon => Ok(0),
            StartingPosition::Latest => {
                let last = engine.stream(&self.id).await?.map_or(0, |s| s.last_seq);
                engine.commit(lane, last).await?;
                Ok(last)
            }
        }
    }

    /// Up to a batch of the lane's records after `after`, and the sequence
    /// number the lane has looked through: with several lanes, other
    /// lanes' records up to it hold nothing for this one, so once the
    /// batch is done the checkpoint can move there (or at once, with no
    /// batch), and the lag counts only what is left.
    async fn read_lane(
        &self,
        partition: u32,
        lane: u32,
        after: u64,
    ) -> Result<(Vec<StoredRecord>, u64), EngineError> {
        let lanes = self.mapping.parallelization;
        let want = self.mapping.batch_size;
        // A lane alone on its shard wants every record: read no more than
        // a batch (a NATS read moves each record it returns). Lanes that
        // share the shard read pages and keep their own records.
        let page_size = if lanes == 1 { want } else { want.max(100) };
        let mut batch = Vec::new();
        let mut cursor = after;
        loop {
            let page = self
                .streams
                .engine
                .read(&self.id, partition, cursor, page_size)
                .await?;
            let Some(last) = page.last() else {
                return Ok((batch, cursor));
            };
            cursor = last.seq;
            let at_end = page.len() < page_size;
            batch.extend(
                page.into_iter()
                    .filter(|r| lanes == 1 || lane_of(&r.key, lanes) == lane),
            );
            if batch.len() >= want {
                batch.truncate(want);
                let through = batch[batch.len() - 1].seq;
                return Ok((batch, through));
            }
            if at_end {
                return Ok((batch, cursor));
            }
        }
    }

    async fn lane(&self, partition: u32, lane_no: u32) -> Result<(), EngineError> {
        let lane = self.lane_id(partition, lane_no);
        let waker = self.streams.follow(&self.id);
        // Another host may run the lane: wait for its lease to be ours, and
        // start from its checkpoint then, not from what we saw before.
        let mut held = None;
        while !self.stopped() {
            if !self.streams.engine.claim(&lane).await? {
                held = None;
                let mut stop = self.stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(POLL * 5) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
                continue;
            }
            let mut checkpoint = match held {
                Some(checkpoint) => checkpoint,
                None => self.start_of(&lane).await?,
            };
            held = Some(checkpoint);
            let woken = waker.notified();
            let (mut batch, mut through) = self.read_lane(partition, lane_no, checkpoint).await?;
            if batch.is_empty() {
                if through > checkpoint {
                    // Only other lanes' records: nothing to deliver here.
                    self.streams.engine.commit(&lane, through).await?;
                    held = Some(through);
                    continue;
                }
                let mut stop = self.stop.clone();
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep(POLL * 5) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
                continue;
            }
            let window = self.mapping.batching_window;
            if batch.len() < self.mapping.batch_size && !window.is_zero() {
                let waited = Duration::from_millis(now_ms().saturating_sub(batch[0].arrived_ms));
                if waited < window {
                    self.pause(window - waited).await;
                    (batch, through) = self.read_lane(partition, lane_no, checkpoint).await?;
                }
            }
            Counters::add(&self.counters.records_in, batch.len());
            // Renew the lease while the batch runs (retries can take
            // longer than a lease lasts).
            let renew = async {
                loop {
                    tokio::time::sleep(RENEW_CLAIM).await;
                    let _ = self.streams.engine.renew(&lane).await;
                }
            };
            let last = batch[batch.len() - 1].seq;
            checkpoint = tokio::select! {
                done = self.ordered_batch(&lane, batch, checkpoint) => done?,
                never = renew => never,
            };
            if checkpoint == last && through > last {
                self.streams.engine.commit(&lane, through).await?;
                checkpoint = through;
            }
            held = Some(checkpoint);
        }
        Ok(())
    }

    fn event(&self, records: &[StoredRecord]) -> Value {
        let kind = self.mapping.kind;
        json!({"Records": records.iter().map(|r| records::lambda_record(&self.id, kind, r, None)).collect::<Vec<_>>()})
    }
}

mod ordered;
mod queue;
#[cfg(test)]
mod tests;
