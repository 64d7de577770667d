//! An ordered lane's batch (Kinesis, DynamoDB): retries, bisection, the
//! age and retry limits, and the failure destination.

use super::*;

/// The records at the front of an ordered lane, as the retries see them:
/// how many of them the next invocation gets (bisection shrinks it), and
/// how they have fared since they became the front. It starts afresh
/// whenever the front moves on: processed, or given up on.
struct Front {
    window: usize,
    attempts: u32,
    invocations: u32,
    last_error: Option<LastError>,
}

impl Front {
    fn of(pending: &[StoredRecord]) -> Front {
        Front {
            window: pending.len(),
            attempts: 0,
            invocations: 0,
            last_error: None,
        }
    }
}

impl Consumer {
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
        let mut front = Front::of(&pending);
        let mut busy = 0u32;
        let mut delivered_up_to = checkpoint;
        while !pending.is_empty() && !self.stopped() {
            if let Some(age) = self.mapping.max_record_age {
                let cutoff = now_ms().saturating_sub(age.as_millis() as u64);
                let expired = pending.iter().take_while(|r| r.arrived_ms < cutoff).count();
                if expired > 0 {
                    let condition = Condition::RecordAgeExceeded;
                    checkpoint = self
                        .give_up_front(lane, &mut pending, expired, condition, &mut front)
                        .await?;
                    continue;
                }
            }
            let window = front.window.clamp(1, pending.len());
            front.window = window;
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
            front.invocations += 1;
            let Some((lowest, error)) = failed_from else {
                // Only what this invocation covered: after a split, records
                // past the half have been delivered but not yet succeeded.
                checkpoint = pending[window - 1].seq;
                pending.drain(..window);
                engine.commit(lane, checkpoint).await?;
                Counters::add(&counters.processed, window);
                front = Front::of(&pending);
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
                front.window -= lowest;
            }
            front.last_error = Some(error);
            if self.mapping.bisect_batch_on_error && front.window > 1 && lowest == 0 {
                // A split is not a retry: halve until the poison is alone.
                front.window = front.window.div_ceil(2);
                continue;
            }
            front.attempts += 1;
            if self
                .mapping
                .max_retry_attempts
                .is_some_and(|max| front.attempts > max)
            {
                let condition = Condition::RetryAttemptsExhausted;
                let n = front.window;
                checkpoint = self
                    .give_up_front(lane, &mut pending, n, condition, &mut front)
                    .await?;
                continue;
            }
            self.pause(retry_backoff(front.attempts)).await;
        }
        Ok(checkpoint)
    }

    /// Gives up on the first `n` pending records of an ordered lane (to
    /// the failure destination, with how the front fared) and checkpoints
    /// past them; the records after them are the front now. Returns the
    /// new checkpoint.
    async fn give_up_front(
        &self,
        lane: &Lane,
        pending: &mut Vec<StoredRecord>,
        n: usize,
        condition: Condition,
        front: &mut Front,
    ) -> Result<u64, EngineError> {
        let gone: Vec<StoredRecord> = pending.drain(..n).collect();
        let sent = self
            .give_up(
                &gone,
                condition,
                front.invocations,
                front.last_error.as_ref(),
            )
            .await?;
        let checkpoint = gone[gone.len() - 1].seq;
        self.streams.engine.commit(lane, checkpoint).await?;
        self.count_sent(sent, gone.len());
        *front = Front::of(pending);
        Ok(checkpoint)
    }

    /// Sends records given up on to the failure destination (if the
    /// mapping has one; otherwise they are dropped, as Lambda does). A
    /// destination that cannot take them holds the lane back: retried
    /// until it can.
    pub(super) async fn give_up(
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
    pub(super) fn count_sent(&self, sent: bool, records: usize) {
        if sent {
            Counters::add(&self.counters.sent_to_failure_destination, records);
        }
    }

    /// Appends a message to the mapping's failure destination; false if
    /// it has none (what is given up on is then dropped).
    pub(super) async fn send_to_failure_destination(
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
}
