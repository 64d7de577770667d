//! Queue streams (SQS, S3) on JetStream: the durable pull consumer every
//! host shares, its visibility timeout and receive counts.

use super::{store, Message, NatsEngine};
use crate::streams::engine::Queues;
use crate::streams::engine::{EngineError, EngineFuture, Received, StoredRecord};
use crate::streams::{now_ms, StreamId};
use async_nats::jetstream::{self, consumer, stream, AckKind};
use futures_util::StreamExt;
use std::time::Duration;

/// The queue consumer every host shares.
const QUEUE_CONSUMER: &str = "tf-queue";

fn millis(time: async_nats::jetstream::message::Info<'_>) -> u64 {
    (time.published.unix_timestamp_nanos() / 1_000_000).max(0) as u64
}

impl NatsEngine {
    /// The queue consumer of a queue stream, its visibility timeout set.
    async fn queue(
        &self,
        stream: &stream::Stream,
        visibility: Duration,
    ) -> Result<consumer::PullConsumer, EngineError> {
        let config = consumer::pull::Config {
            durable_name: Some(QUEUE_CONSUMER.to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: visibility.max(Duration::from_secs(1)),
            max_deliver: -1,
            ..Default::default()
        };
        let mut consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(QUEUE_CONSUMER, config.clone())
            .await
            .map_err(store)?;
        if consumer.cached_info().config.ack_wait != config.ack_wait {
            // Creating a durable consumer again with a new ack_wait updates
            // it (nats-server 2.9 takes this; later servers too).
            consumer = stream.create_consumer(config).await.map_err(store)?;
        }
        Ok(consumer)
    }

    fn take_inflight(&self, id: &StreamId, seq: u64) -> Option<jetstream::Message> {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        inflight.remove(&(id.key(), seq))
    }
}

impl Queues for NatsEngine {
    fn receive(
        &self,
        id: &StreamId,
        max: usize,
        visibility: Duration,
    ) -> EngineFuture<'_, Vec<Received>> {
        let id = id.clone();
        Box::pin(async move {
            let Some(stream) = self.get(&id).await? else {
                return Ok(Vec::new());
            };
            let queue = self.queue(&stream, visibility).await?;
            let mut messages = queue
                .fetch()
                .max_messages(max.max(1))
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .map_err(store)?;
            let mut received = Vec::new();
            while let Some(message) = messages.next().await {
                let message = message.map_err(store)?;
                let info = message.info().map_err(store)?;
                let (seq, delivered, published) = (
                    info.stream_sequence,
                    info.delivered.max(1) as u32,
                    millis(info),
                );
                let Ok(stored) = serde_json::from_slice::<Message>(&message.payload) else {
                    // Not ours: take it out of the queue.
                    let _ = message.ack_with(AckKind::Term).await;
                    continue;
                };
                let uncounted = {
                    let uncounted = self.uncounted.lock().unwrap_or_else(|e| e.into_inner());
                    uncounted.get(&(id.key(), seq)).copied().unwrap_or(0)
                };
                received.push(Received {
                    record: StoredRecord {
                        seq,
                        partition: 0,
                        key: stored.key,
                        arrived_ms: stored.arrived_ms,
                        body: stored.body,
                    },
                    receive_count: delivered.saturating_sub(uncounted).max(1),
                    // JetStream keeps no first-receive time: the first
                    // receive is now, a later one is dated by the publish.
                    first_receive_ms: if delivered == 1 { now_ms() } else { published },
                });
                let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
                inflight.insert((id.key(), seq), message);
            }
            Ok(received)
        })
    }

    fn settle(&self, id: &StreamId, seqs: Vec<u64>) -> EngineFuture<'_, ()> {
        let id = id.clone();
        Box::pin(async move {
            for seq in seqs {
                if let Some(message) = self.take_inflight(&id, seq) {
                    message.double_ack().await.map_err(store)?;
                }
                let mut uncounted = self.uncounted.lock().unwrap_or_else(|e| e.into_inner());
                uncounted.remove(&(id.key(), seq));
            }
            Ok(())
        })
    }

    fn release(
        &self,
        id: &StreamId,
        seq: u64,
        delay: Duration,
        uncount: bool,
    ) -> EngineFuture<'_, ()> {
        let id = id.clone();
        Box::pin(async move {
            if uncount {
                let mut uncounted = self.uncounted.lock().unwrap_or_else(|e| e.into_inner());
                *uncounted.entry((id.key(), seq)).or_default() += 1;
            }
            if let Some(message) = self.take_inflight(&id, seq) {
                let delay = (!delay.is_zero()).then_some(delay);
                message.ack_with(AckKind::Nak(delay)).await.map_err(store)?;
            }
            Ok(())
        })
    }

    fn unsettled(&self, id: &StreamId) -> EngineFuture<'_, u64> {
        let id = id.clone();
        Box::pin(async move {
            let Some(mut stream) = self.get(&id).await? else {
                return Ok(0);
            };
            match stream.consumer_info(QUEUE_CONSUMER).await {
                Ok(info) => Ok(info.num_pending + info.num_ack_pending as u64),
                Err(_) => Ok(stream.info().await.map_err(store)?.state.messages),
            }
        })
    }
}
