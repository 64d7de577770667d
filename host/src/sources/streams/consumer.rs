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

    /// Takes one batch of an ordered lane to the end: every record is
    /// committed as processed or given up on, unless told to stop (then
    /// the checkpoint stays where it got to). Returns the new checkpoint.
    pub async fn ordered_batch(
        &self,
        lane: &Lane,
        batch: Vec<StoredRecord>,
        mut checkpoint: u64,
    ) -> Result<u64, EngineError> {
        let engine = self.streams.engine.clone();
        let counters = &self.counters;
        let mut pending = batch;
        // How much of `pending` the next invocation gets (bisect shrinks it).
        let mut window = pending.len();
        let mut attempts = 0u32;
        let mut invocations = 0u32;
        let mut busy = 0u32;
        let mut last_error: Option<LastError> = None;
        let mut delivered_up_to = checkpoint;
        while !pending.is_empty() && !self.stopped() {
            if let Some(age) = self.mapping.max_record_age {
                let cutoff = now_ms().saturating_sub(age.as_millis() as u64);
                let expired = pending.iter().take_while(|r| r.arrived_ms < cutoff).count();
                if expired > 0 {
                    let condition = Condition::RecordAgeExceeded;
                    checkpoint = self
                        .give_up_front(
                            lane,
                            &mut pending,
                            expired,
                            condition,
                            invocations,
                            &last_error,
                        )
                        .await?;
                    window = pending.len();
                    (attempts, invocations, last_error) = (0, 0, None);
                    continue;
                }
            }
            window = window.clamp(1, pending.len());
            let tried = &pending[..window];
            let again = tried.iter().filter(|r| r.seq <= delivered_up_to).count();
            Counters::add(&counters.retried, again);
            delivered_up_to = delivered_up_to.max(tried[tried.len() - 1].seq);
            let answer = self.deliver(self.event(tried)).await;
            let failed_from = match answer {
                Answer::Busy => {
                    busy += 1;
                    self.pause(retry_backoff(busy)).await;
                    continue;
                }
                Answer::Done { failures }
                    if failures.is_empty() || !self.mapping.report_batch_item_failures =>
                {
                    None
                }
                Answer::Done { failures } => {
                    let position =
                        |id: &String| tried.iter().position(|r| r.seq.to_string() == *id);
                    match failures.iter().map(position).collect::<Option<Vec<usize>>>() {
                        Some(found) => {
                            let lowest = found.into_iter().min().unwrap_or(0);
                            Some((lowest, LastError {
                                kind: "partial-failure".into(),
                                message: format!("{} records of the batch failed", failures.len()),
                            }))
                        }
                        None => Some((0, LastError {
                            kind: "invalid-response".into(),
                            message: format!("batchItemFailures names records not in the batch: {failures:?}"),
                        })),
                    }
                }
                Answer::Failed(error) => Some((0, error)),
            };
            busy = 0;
            invocations += 1;
            let Some((lowest, error)) = failed_from else {
                // Only what this invocation covered: after a split, records
                // past the half have been delivered but not yet succeeded.
                checkpoint = pending[window - 1].seq;
                pending.drain(..window);
                engine.commit(lane, checkpoint).await?;
                Counters::add(&counters.processed, window);
                window = pending.len();
                (attempts, invocations, last_error) = (0, 0, None);
                continue;
            };
            tracing::warn!(tenant = %self.id.tenant, mapping = %self.mapping.name, partition = lane.partition,
                first = pending[lowest].seq, records = window - lowest, kind = %error.kind, error = %error.message, "batch failed");
            Counters::add(&counters.failed, window - lowest);
            if lowest > 0 {
                // Everything before the lowest failed record is done.
                checkpoint = pending[lowest - 1].seq;
                engine.commit(lane, checkpoint).await?;
                Counters::add(&counters.processed, lowest);
                pending.drain(..lowest);
                window -= lowest;
            }
            last_error = Some(error);
            if self.mapping.bisect_batch_on_error && window > 1 && lowest == 0 {
                // A split is not a retry: halve until the poison is alone.
                window = window.div_ceil(2);
                continue;
            }
            attempts += 1;
            if self
                .mapping
                .max_retry_attempts
                .is_some_and(|max| attempts > max)
            {
                let condition = Condition::RetryAttemptsExhausted;
                checkpoint = self
                    .give_up_front(
                        lane,
                        &mut pending,
                        window,
                        condition,
                        invocations,
                        &last_error,
                    )
                    .await?;
                window = pending.len();
                (attempts, invocations, last_error) = (0, 0, None);
                continue;
            }
            self.pause(retry_backoff(attempts)).await;
        }
        Ok(checkpoint)
    }

    /// Sends records given up on to the failure destination (if the
    /// mapping has one; otherwise they are dropped, as Lambda does). A
    /// destination that cannot take them holds the lane back: retried
    /// until it can.
    /// Gives up on the first `n` pending records of an ordered lane (to
    /// the failure destination) and checkpoints past them; returns the
    /// new checkpoint.
    async fn give_up_front(
        &self,
        lane: &Lane,
        pending: &mut Vec<StoredRecord>,
        n: usize,
        condition: Condition,
        invocations: u32,
        error: &Option<LastError>,
    ) -> Result<u64, EngineError> {
        let gone: Vec<StoredRecord> = pending.drain(..n).collect();
        let sent = self
            .give_up(&gone, condition, invocations, error.as_ref())
            .await?;
        let checkpoint = gone[gone.len() - 1].seq;
        self.streams.engine.commit(lane, checkpoint).await?;
        self.count_sent(sent, gone.len());
        Ok(checkpoint)
    }

    async fn give_up(
        &self,
        gone: &[StoredRecord],
        condition: Condition,
        invocations: u32,
        error: Option<&LastError>,
    ) -> Result<bool, EngineError> {
        let failure = records::ordered_failure(
            &self.id,
            self.mapping.kind,
            gone,
            condition,
            invocations,
            error,
        );
        tracing::warn!(tenant = %self.id.tenant, mapping = %self.mapping.name, records = gone.len(),
            condition = condition.as_str(), destination = self.mapping.on_failure.as_deref().unwrap_or("none"), "records given up on");
        self.send_to_failure_destination(failure.to_string(), json!({}))
            .await
    }

    /// Counts records sent to the failure destination, once the source
    /// has let go of them (checkpoint or deletion written), so that the
    /// counts never show them both sent and still lagging.
    fn count_sent(&self, sent: bool, records: usize) {
        if sent {
            Counters::add(&self.counters.sent_to_failure_destination, records);
        }
    }

    /// Appends a message to the mapping's failure destination; false if
    /// it has none (what is given up on is then dropped).
    async fn send_to_failure_destination(
        &self,
        body: String,
        attributes: Value,
    ) -> Result<bool, EngineError> {
        let Some(target) = &self.mapping.on_failure else {
            return Ok(false);
        };
        let id = StreamId::new(&self.id.tenant, target);
        let mut tries = 0;
        loop {
            let record = NewRecord {
                key: String::new(),
                body: json!({"body": body, "messageAttributes": attributes}),
            };
            match self
                .streams
                .engine
                .append(
                    &id,
                    StreamKind::Sqs,
                    vec![record],
                    self.deliver.stored_bytes_limit(),
                )
                .await
            {
                Ok(_) => {
                    self.streams.waker(&id).notify_waiters();
                    return Ok(true);
                }
                Err(
                    error @ (EngineError::KindMismatch { .. } | EngineError::StorageQuota { .. }),
                ) => {
                    tries += 1;
                    if tries == 1 {
                        tracing::error!(tenant = %self.id.tenant, mapping = %self.mapping.name, %error, "the failure destination cannot take the records; holding them");
                    }
                    if self.stopped() {
                        return Err(error);
                    }
                    self.pause(retry_backoff(tries)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// An SQS or S3 mapping: receive, deliver, settle.
    async fn queue(&self) -> Result<(), EngineError> {
        let engine = self.streams.engine.clone();
        let waker = self.streams.follow(&self.id);
        let s3 = self.mapping.kind == StreamKind::S3;
        // S3 events stay invisible while being handled; a crash makes them
        // visible again after this.
        let visibility = if s3 {
            Duration::from_secs(60)
        } else {
            self.mapping.visibility_timeout
        };
        while !self.stopped() {
            let woken = waker.notified();
            let mut received = engine
                .receive(&self.id, self.mapping.batch_size, visibility)
                .await?;
            if received.is_empty() {
                let mut stop = self.stop.clone();
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
                continue;
            }
            let window = self.mapping.batching_window;
            if !s3 && received.len() < self.mapping.batch_size && !window.is_zero() {
                self.pause(window).await;
                let more = self.mapping.batch_size - received.len();
                received.extend(engine.receive(&self.id, more, visibility).await?);
            }
            if s3 {
                for message in received {
                    self.s3_event(message).await?;
                }
            } else {
                self.sqs_batch(received).await?;
            }
        }
        Ok(())
    }

    /// Counts messages about to be delivered: new ones, and ones again.
    fn count_received(&self, counts: impl IntoIterator<Item = u32>) {
        for count in counts {
            let counter = if count == 1 {
                &self.counters.records_in
            } else {
                &self.counters.retried
            };
            Counters::add(counter, 1);
        }
    }

    async fn sqs_batch(
        &self,
        received: Vec<crate::streams::engine::Received>,
    ) -> Result<(), EngineError> {
        let engine = &self.streams.engine;
        let (dead, live): (Vec<_>, Vec<_>) = received.into_iter().partition(|m| {
            self.mapping
                .max_receive_count
                .is_some_and(|max| m.receive_count > max)
        });
        for message in &dead {
            // The dead-letter stream gets the message as it was sent.
            let body = message.record.body["body"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let attributes = message
                .record
                .body
                .get("messageAttributes")
                .cloned()
                .unwrap_or(json!({}));
            let sent = self.send_to_failure_destination(body, attributes).await?;
            engine.settle(&self.id, vec![message.record.seq]).await?;
            self.count_sent(sent, 1);
        }
        if live.is_empty() {
            return Ok(());
        }
        self.count_received(live.iter().map(|m| m.receive_count));
        let event = json!({"Records": live.iter().map(|m| records::lambda_record(&self.id, StreamKind::Sqs, &m.record, Some(Receipt {
            receive_count: m.receive_count,
            first_receive_ms: m.first_receive_ms,
        }))).collect::<Vec<_>>()});
        let ids: Vec<String> = live
            .iter()
            .map(|m| records::message_id(&self.id, m.record.seq))
            .collect();
        let all: Vec<u64> = live.iter().map(|m| m.record.seq).collect();
        match self.deliver(event).await {
            Answer::Busy => {
                for seq in all {
                    engine.release(&self.id, seq, Duration::ZERO, true).await?;
                }
                self.pause(retry_backoff(1)).await;
            }
            Answer::Done { failures }
                if failures.is_empty() || !self.mapping.report_batch_item_failures =>
            {
                let n = all.len();
                engine.settle(&self.id, all).await?;
                Counters::add(&self.counters.processed, n);
            }
            Answer::Done { failures } => {
                if failures.iter().all(|f| ids.contains(f)) {
                    let done: Vec<u64> = live
                        .iter()
                        .zip(&ids)
                        .filter(|(_, id)| !failures.contains(id))
                        .map(|(m, _)| m.record.seq)
                        .collect();
                    let n = done.len();
                    Counters::add(&self.counters.failed, all.len() - n);
                    engine.settle(&self.id, done).await?;
                    Counters::add(&self.counters.processed, n);
                } else {
                    tracing::warn!(tenant = %self.id.tenant, mapping = %self.mapping.name, "batchItemFailures names messages not in the batch; the whole batch failed");
                    Counters::add(&self.counters.failed, all.len());
                }
            }
            Answer::Failed(error) => {
                tracing::warn!(tenant = %self.id.tenant, mapping = %self.mapping.name, messages = all.len(), kind = %error.kind, error = %error.message, "batch failed");
                Counters::add(&self.counters.failed, all.len());
            }
        }
        Ok(())
    }

    async fn s3_event(&self, message: crate::streams::engine::Received) -> Result<(), EngineError> {
        let engine = &self.streams.engine;
        let seq = message.record.seq;
        let event = json!({"Records": [message.record.body]});
        let too_old = self.mapping.max_record_age.is_some_and(|age| {
            now_ms().saturating_sub(message.record.arrived_ms) > age.as_millis() as u64
        });
        let retries = self.mapping.max_retry_attempts.unwrap_or(0);
        if too_old || message.receive_count > retries + 1 {
            let condition = if too_old {
                Condition::EventAgeExceeded
            } else {
                Condition::RetriesExhausted
            };
            let failure = records::async_failure(
                &self.id,
                &event,
                condition,
                message.receive_count - 1,
                None,
            );
            let sent = self
                .send_to_failure_destination(failure.to_string(), json!({}))
                .await?;
            engine.settle(&self.id, vec![seq]).await?;
            self.count_sent(sent, 1);
            return Ok(());
        }
        self.count_received([message.receive_count]);
        let error = match self.deliver(event.clone()).await {
            Answer::Busy => {
                engine
                    .release(&self.id, seq, retry_backoff(1), true)
                    .await?;
                return Ok(());
            }
            Answer::Done { failures } if failures.is_empty() => None,
            Answer::Done { failures } => Some(LastError {
                kind: "partial-failure".into(),
                message: format!("the plugins reported {failures:?} failed"),
            }),
            Answer::Failed(error) => Some(error),
        };
        let Some(error) = error else {
            engine.settle(&self.id, vec![seq]).await?;
            Counters::add(&self.counters.processed, 1);
            return Ok(());
        };
        Counters::add(&self.counters.failed, 1);
        tracing::warn!(tenant = %self.id.tenant, mapping = %self.mapping.name, attempt = message.receive_count, kind = %error.kind, error = %error.message, "S3 event failed");
        if message.receive_count > retries {
            let failure = records::async_failure(
                &self.id,
                &event,
                Condition::RetriesExhausted,
                message.receive_count,
                Some(&error),
            );
            let sent = self
                .send_to_failure_destination(failure.to_string(), json!({}))
                .await?;
            engine.settle(&self.id, vec![seq]).await?;
            self.count_sent(sent, 1);
            return Ok(());
        }
        engine
            .release(&self.id, seq, s3_retry_delay(message.receive_count), false)
            .await
    }
}

#[cfg(test)]
mod tests {
    //! The consumer's decisions against a handler closure, on the real
    //! embedded engine in a temporary folder.
    use super::*;
    use crate::streams::embedded::EmbeddedEngine;
    use crate::streams::engine::SHARDS;
    use crate::streams::mapping::{resolve_all, EventSourceFile};
    use base64::Engine as _;
    use std::sync::Mutex;

    type Handler = dyn Fn(&[Value]) -> Answer + Send + Sync;

    /// Records every batch it is given, and answers with `handler`.
    struct Closure {
        handler: Box<Handler>,
        seen: Mutex<Vec<Vec<Value>>>,
        /// A lane whose stored checkpoint is noted at every delivery.
        watch: std::sync::OnceLock<Lane>,
        engine: std::sync::OnceLock<Arc<dyn crate::streams::engine::Engine>>,
        checkpoints: Mutex<Vec<Option<u64>>>,
    }

    impl Deliver for Closure {
        fn deliver(&self, event: Value) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
            let records = event["Records"].as_array().cloned().unwrap_or_default();
            let answer = (self.handler)(&records);
            self.seen.lock().unwrap().push(records);
            Box::pin(async move {
                if let (Some(lane), Some(engine)) = (self.watch.get(), self.engine.get()) {
                    let checkpoint = engine.checkpoint(lane).await.unwrap();
                    self.checkpoints.lock().unwrap().push(checkpoint);
                }
                answer
            })
        }
        fn stored_bytes_limit(&self) -> u64 {
            u64::MAX
        }
    }

    struct Setup {
        consumer: Arc<Consumer>,
        closure: Arc<Closure>,
        stop: watch::Sender<bool>,
        _dir: tempfile::TempDir,
    }

    fn setup(mapping: &str, handler: impl Fn(&[Value]) -> Answer + Send + Sync + 'static) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let engine = EmbeddedEngine::open(dir.path()).unwrap();
        let streams = Arc::new(Streams::new(Arc::new(engine)));
        let file: EventSourceFile = toml::from_str(mapping).unwrap();
        let mapping = resolve_all(&[file]).unwrap().remove(0);
        let closure = Arc::new(Closure {
            handler: Box::new(handler),
            seen: Mutex::default(),
            watch: Default::default(),
            engine: Default::default(),
            checkpoints: Mutex::default(),
        });
        let _ = closure.engine.set(streams.engine.clone());
        let (stop, stop_rx) = watch::channel(false);
        let consumer = Arc::new(Consumer {
            counters: streams.counters("acme", &mapping.name),
            id: StreamId::new("acme", &mapping.stream),
            streams,
            deliver: closure.clone(),
            mapping,
            in_flight: Arc::new(tokio::sync::Semaphore::new(4)),
            stop: stop_rx,
        });
        Setup {
            consumer,
            closure,
            stop,
            _dir: dir,
        }
    }

    fn data(record: &Value) -> String {
        let text = record["kinesis"]["data"].as_str().unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap(),
        )
        .unwrap()
    }

    fn seq(record: &Value) -> u64 {
        record["kinesis"]["sequenceNumber"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Appends Kinesis records `data` under one key, and returns them as a
    /// batch of the key's shard.
    async fn append(s: &Setup, data: &[&str]) -> (Lane, Vec<StoredRecord>) {
        let engine = &s.consumer.streams.engine;
        let records = data
            .iter()
            .map(|d| NewRecord {
                key: "k".into(),
                body: json!({"data": base64::engine::general_purpose::STANDARD.encode(d)}),
            })
            .collect();
        let appended = engine
            .append(&s.consumer.id, StreamKind::Kinesis, records, u64::MAX)
            .await
            .unwrap();
        let partition = appended[0].partition;
        assert!(partition < SHARDS);
        let lane = s.consumer.lane_id(partition, 0);
        let batch = engine
            .read(&s.consumer.id, partition, 0, 100)
            .await
            .unwrap();
        (lane, batch)
    }

    fn failing(word: &'static str) -> impl Fn(&[Value]) -> Answer + Send + Sync {
        move |records| Answer::Done {
            failures: records
                .iter()
                .filter(|r| data(r).contains(word))
                .map(|r| seq(r).to_string())
                .collect(),
        }
    }

    fn trap(_: &[Value]) -> Answer {
        Answer::Failed(LastError {
            kind: "trap".into(),
            message: "boom".into(),
        })
    }

    async fn failure_destination(s: &Setup, name: &str) -> Vec<Value> {
        let id = StreamId::new("acme", name);
        let engine = &s.consumer.streams.engine;
        let records = engine.read(&id, 0, 0, 100).await.unwrap();
        records
            .iter()
            .map(|r| {
                serde_json::from_str(r.body["body"].as_str().unwrap())
                    .unwrap_or(r.body["body"].clone())
            })
            .collect()
    }

    fn counts(s: &Setup) -> [u64; 4] {
        let c = &s.consumer.counters;
        [
            Counters::get(&c.processed),
            Counters::get(&c.failed),
            Counters::get(&c.retried),
            Counters::get(&c.sent_to_failure_destination),
        ]
    }

    #[tokio::test]
    async fn partial_failure_commits_before_the_lowest_failed_record() {
        let once = Mutex::new(true);
        let s = setup(
            "stream = \"orders\"\nkind = \"kinesis\"\nreport-batch-item-failures = true\n",
            move |records| {
                // Records 5 and 7 fail the first time only.
                let first = std::mem::replace(&mut *once.lock().unwrap(), false);
                let failures = records
                    .iter()
                    .filter(|r| first && (data(r) == "r5" || data(r) == "r7"))
                    .map(|r| seq(r).to_string())
                    .collect();
                Answer::Done { failures }
            },
        );
        let names: Vec<String> = (1..=10).map(|i| format!("r{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (lane, batch) = append(&s, &names).await;
        let checkpoint = s.consumer.ordered_batch(&lane, batch, 0).await.unwrap();
        assert_eq!(checkpoint, 10);
        assert_eq!(
            s.consumer.streams.engine.checkpoint(&lane).await.unwrap(),
            Some(10)
        );
        let seen = s.closure.seen.lock().unwrap().clone();
        let delivered: Vec<Vec<u64>> = seen.iter().map(|b| b.iter().map(seq).collect()).collect();
        assert_eq!(
            delivered,
            vec![(1..=10).collect::<Vec<_>>(), (5..=10).collect()]
        );
        // processed 10, failed 6 (5..=10 in the first batch), retried 6.
        assert_eq!(counts(&s), [10, 6, 6, 0]);
    }

    #[tokio::test]
    async fn without_report_batch_item_failures_a_partial_answer_is_success() {
        let s = setup("stream = \"orders\"\nkind = \"kinesis\"\n", failing("bad"));
        let (lane, batch) = append(&s, &["a", "bad", "c"]).await;
        assert_eq!(s.consumer.ordered_batch(&lane, batch, 0).await.unwrap(), 3);
        assert_eq!(s.closure.seen.lock().unwrap().len(), 1);
        assert_eq!(counts(&s), [3, 0, 0, 0]);
    }

    #[tokio::test]
    async fn bisect_isolates_a_poison_record_into_the_failure_destination() {
        let s = setup(
            "stream = \"orders\"\nkind = \"kinesis\"\nbisect-batch-on-error = true\n\
             max-retry-attempts = 1\non-failure = \"orders-dlq\"\n",
            |records: &[Value]| {
                if records.iter().any(|r| data(r) == "poison") {
                    trap(records)
                } else {
                    Answer::Done { failures: vec![] }
                }
            },
        );
        let (lane, batch) = append(&s, &["a", "b", "c", "d", "e", "poison", "g", "h"]).await;
        s.closure.watch.set(lane.clone()).unwrap();
        assert_eq!(s.consumer.ordered_batch(&lane, batch, 0).await.unwrap(), 8);
        // At every delivery the stored checkpoint is just before the batch:
        // a crash at any point redelivers from there, and skips nothing.
        let seen = s.closure.seen.lock().unwrap().clone();
        let checkpoints = s.closure.checkpoints.lock().unwrap().clone();
        for (batch, checkpoint) in seen.iter().zip(&checkpoints) {
            assert_eq!(
                checkpoint.unwrap_or(0),
                seq(&batch[0]) - 1,
                "{checkpoints:?}"
            );
        }
        let failed = failure_destination(&s, "orders-dlq").await;
        assert_eq!(failed.len(), 1, "{failed:?}");
        let info = &failed[0]["KinesisBatchInfo"];
        assert_eq!(
            (
                info["startSequenceNumber"].as_str(),
                info["batchSize"].as_u64()
            ),
            (Some("6"), Some(1))
        );
        assert_eq!(
            failed[0]["requestContext"]["condition"],
            "RetryAttemptsExhausted"
        );
        assert_eq!(failed[0]["responseContext"]["errorKind"], "trap");
        assert_eq!(data(&failed[0]["Records"][0]), "poison");
        // Every other record reached the handler in a batch that succeeded.
        let seen = s.closure.seen.lock().unwrap().clone();
        let mut succeeded: Vec<u64> = seen
            .iter()
            .filter(|b| !b.iter().any(|r| data(r) == "poison"))
            .flat_map(|b| b.iter().map(seq))
            .collect();
        succeeded.sort();
        assert_eq!(succeeded, vec![1, 2, 3, 4, 5, 7, 8]);
        assert_eq!(counts(&s)[3], 1);
    }

    #[tokio::test]
    async fn retries_run_out_into_the_failure_destination() {
        let s = setup(
            "stream = \"orders\"\nkind = \"kinesis\"\nmax-retry-attempts = 2\non-failure = \"dlq\"\n",
            trap,
        );
        let (lane, batch) = append(&s, &["a", "b"]).await;
        assert_eq!(s.consumer.ordered_batch(&lane, batch, 0).await.unwrap(), 2);
        assert_eq!(
            s.closure.seen.lock().unwrap().len(),
            3,
            "one attempt and two retries"
        );
        let failed = failure_destination(&s, "dlq").await;
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0]["requestContext"]["approximateInvokeCount"], 3);
        assert_eq!(failed[0]["Records"].as_array().unwrap().len(), 2);
        assert_eq!(counts(&s), [0, 6, 4, 2]);
    }

    #[tokio::test]
    async fn records_too_old_are_given_up_on() {
        let s = setup(
            "stream = \"orders\"\nkind = \"kinesis\"\nmax-record-age-s = 1\non-failure = \"dlq\"\n",
            trap,
        );
        let (lane, batch) = append(&s, &["a"]).await;
        let started = std::time::Instant::now();
        assert_eq!(s.consumer.ordered_batch(&lane, batch, 0).await.unwrap(), 1);
        assert!(started.elapsed() < Duration::from_secs(10));
        let failed = failure_destination(&s, "dlq").await;
        assert_eq!(
            failed[0]["requestContext"]["condition"],
            "RecordAgeExceeded"
        );
    }

    #[tokio::test]
    async fn a_busy_host_is_waited_for_without_counting_an_attempt() {
        let busy = Mutex::new(3);
        let s = setup(
            "stream = \"orders\"\nkind = \"kinesis\"\nmax-retry-attempts = 0\non-failure = \"dlq\"\n",
            move |_: &[Value]| {
                let mut left = busy.lock().unwrap();
                if *left > 0 {
                    *left -= 1;
                    Answer::Busy
                } else {
                    Answer::Done { failures: vec![] }
                }
            },
        );
        let (lane, batch) = append(&s, &["a"]).await;
        assert_eq!(s.consumer.ordered_batch(&lane, batch, 0).await.unwrap(), 1);
        assert_eq!(counts(&s), [1, 0, 3, 0]);
        assert!(failure_destination(&s, "dlq").await.is_empty());
    }

    #[tokio::test]
    async fn an_unknown_item_identifier_fails_the_whole_batch() {
        let calls = Mutex::new(0);
        let s = setup(
            "stream = \"orders\"\nkind = \"kinesis\"\nreport-batch-item-failures = true\n\
             max-retry-attempts = 0\non-failure = \"dlq\"\n",
            move |_: &[Value]| {
                *calls.lock().unwrap() += 1;
                Answer::Done {
                    failures: vec!["no-such-record".into()],
                }
            },
        );
        let (lane, batch) = append(&s, &["a", "b"]).await;
        s.consumer.ordered_batch(&lane, batch, 0).await.unwrap();
        let failed = failure_destination(&s, "dlq").await;
        assert_eq!(
            failed[0]["responseContext"]["errorKind"],
            "invalid-response"
        );
        assert_eq!(failed[0]["Records"].as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn sqs_failed_messages_come_back_and_then_go_to_the_dead_letter_stream() {
        let s = setup(
            "stream = \"jobs\"\nkind = \"sqs\"\nreport-batch-item-failures = true\n\
             visibility-timeout-s = 1\nmax-receive-count = 2\non-failure = \"jobs-dlq\"\n",
            |records: &[Value]| Answer::Done {
                failures: records
                    .iter()
                    .filter(|r| r["body"] == "bad")
                    .map(|r| r["messageId"].as_str().unwrap().to_owned())
                    .collect(),
            },
        );
        let engine = s.consumer.streams.engine.clone();
        let messages = ["good", "bad"]
            .iter()
            .map(|b| NewRecord {
                key: String::new(),
                body: json!({"body": b, "messageAttributes": {}}),
            })
            .collect();
        engine
            .append(&s.consumer.id, StreamKind::Sqs, messages, u64::MAX)
            .await
            .unwrap();
        let task = tokio::spawn(s.consumer.clone().run_queue());
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while failure_destination(&s, "jobs-dlq").await.is_empty() {
            assert!(std::time::Instant::now() < deadline, "no dead letter");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s.stop.send(true).unwrap();
        task.await.unwrap();
        let seen = s.closure.seen.lock().unwrap().clone();
        let receives = |body: &str| -> Vec<String> {
            seen.iter()
                .flatten()
                .filter(|r| r["body"] == body)
                .map(|r| {
                    r["attributes"]["ApproximateReceiveCount"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect()
        };
        assert_eq!(receives("good"), ["1"]);
        assert_eq!(receives("bad"), ["1", "2"]);
        let dead = engine
            .read(&StreamId::new("acme", "jobs-dlq"), 0, 0, 10)
            .await
            .unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].body["body"], "bad");
        assert_eq!(engine.unsettled(&s.consumer.id).await.unwrap(), 0);
        assert_eq!(counts(&s), [1, 2, 1, 1]);
    }

    #[tokio::test]
    async fn s3_events_are_retried_twice_then_sent_to_the_failure_destination() {
        let s = setup(
            "stream = \"uploads\"\nkind = \"s3\"\non-failure = \"uploads-dlq\"\n",
            trap,
        );
        let engine = s.consumer.streams.engine.clone();
        let record = json!({"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": "k"}}});
        engine
            .append(
                &s.consumer.id,
                StreamKind::S3,
                vec![NewRecord {
                    key: "b/k".into(),
                    body: record.clone(),
                }],
                u64::MAX,
            )
            .await
            .unwrap();
        let task = tokio::spawn(s.consumer.clone().run_queue());
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while failure_destination(&s, "uploads-dlq").await.is_empty() {
            assert!(std::time::Instant::now() < deadline, "no failure record");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s.stop.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(
            s.closure.seen.lock().unwrap().len(),
            3,
            "one attempt and two retries"
        );
        let failed = failure_destination(&s, "uploads-dlq").await;
        assert_eq!(failed[0]["requestPayload"]["Records"][0], record);
        assert_eq!(failed[0]["requestContext"]["condition"], "RetriesExhausted");
    }

    #[tokio::test]
    async fn latest_starts_after_what_is_there_and_keeps_its_place() {
        let mapping = "stream = \"orders\"\nkind = \"kinesis\"\nstarting-position = \"latest\"\n";
        let s = setup(mapping, failing("x"));
        let (lane, _) = append(&s, &["old", "older"]).await;
        assert_eq!(s.consumer.start_of(&lane).await.unwrap(), 2);
        append(&s, &["new"]).await;
        // Written down at once: a restart does not skip what came meanwhile.
        assert_eq!(s.consumer.start_of(&lane).await.unwrap(), 2);
        let trim = setup("stream = \"orders\"\nkind = \"kinesis\"\n", failing("x"));
        let (lane, _) = append(&trim, &["old"]).await;
        assert_eq!(trim.consumer.start_of(&lane).await.unwrap(), 0);
    }

    #[test]
    fn answers_are_read_like_lambda_reads_them() {
        assert_eq!(
            Answer::from_response(&json!({})),
            Answer::Done { failures: vec![] }
        );
        assert_eq!(
            Answer::from_response(&json!({"batchItemFailures": [{"itemIdentifier": "7"}]})),
            Answer::Done {
                failures: vec!["7".into()]
            }
        );
        assert!(matches!(
            Answer::from_response(&json!({"batchItemFailures": [{"id": 1}]})),
            Answer::Failed(_)
        ));
    }
}
