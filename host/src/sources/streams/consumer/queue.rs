//! The unordered kinds: an SQS queue's messages and S3's events.

use super::*;

impl Consumer {
    /// An SQS or S3 mapping: receive, deliver, settle.
    pub(super) async fn queue(&self) -> Result<(), EngineError> {
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
    pub(super) fn count_received(&self, counts: impl IntoIterator<Item = u32>) {
        for count in counts {
            let counter = if count == 1 {
                &self.counters.records_in
            } else {
                &self.counters.retried
            };
            Counters::add(counter, 1);
        }
    }

    pub(super) async fn sqs_batch(
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

    pub(super) async fn s3_event(
        &self,
        message: crate::streams::engine::Received,
    ) -> Result<(), EngineError> {
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
            return self.give_up_event(seq, failure).await;
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
            return self.give_up_event(seq, failure).await;
        }
        engine
            .release(&self.id, seq, s3_retry_delay(message.receive_count), false)
            .await
    }

    /// Gives up on an S3 event: its failure record to the failure
    /// destination, then the event deleted from the queue.
    async fn give_up_event(&self, seq: u64, failure: serde_json::Value) -> Result<(), EngineError> {
        let sent = self
            .send_to_failure_destination(failure.to_string(), json!({}))
            .await?;
        self.streams.engine.settle(&self.id, vec![seq]).await?;
        self.count_sent(sent, 1);
        Ok(())
    }
}
