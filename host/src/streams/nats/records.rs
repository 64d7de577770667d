//! A tenant's streams and their records on JetStream: the stream of each
//! (created on first append, its kind in its description), appends, reads
//! of a partition, the wake-ups of other hosts' appends, retention and
//! the bytes a tenant stores.

use super::{store, token, Message, NatsEngine};
use crate::streams::engine::Records;
use crate::streams::engine::{
    shard_of, Appended, EngineError, EngineFuture, NewRecord, StoredRecord, StreamInfo,
};
use crate::streams::{now_ms, StreamId, StreamKind};
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const KIND_PREFIX: &str = "triggerfish stream, kind ";

fn tenant_prefix(tenant: &str) -> String {
    format!("TF__{}__", token(tenant))
}

fn stream_name(id: &StreamId) -> String {
    format!("{}{}", tenant_prefix(&id.tenant), token(&id.stream))
}

pub(super) fn subject(id: &StreamId, partition: u32) -> String {
    format!("tf.{}.{}.{partition}", token(&id.tenant), token(&id.stream))
}

fn kind_of(info: &stream::Info) -> Option<StreamKind> {
    let kind = info
        .config
        .description
        .as_deref()?
        .strip_prefix(KIND_PREFIX)?;
    serde_json::from_value(Value::String(kind.to_owned())).ok()
}

impl NatsEngine {
    /// The JetStream stream of `id`, created with `kind` if missing;
    /// refused if it has another kind.
    pub(super) async fn ensure(&self, id: &StreamId, kind: StreamKind) -> Result<(), EngineError> {
        let existing = match self.get(id).await? {
            Some(stream) => stream,
            None => {
                let config = stream::Config {
                    name: stream_name(id),
                    subjects: vec![format!("tf.{}.{}.*", token(&id.tenant), token(&id.stream))],
                    description: Some(format!("{KIND_PREFIX}{}", kind.as_str())),
                    storage: stream::StorageType::File,
                    ..Default::default()
                };
                // Another host may create it at the same moment: the
                // config is the same, so either wins.
                self.js.get_or_create_stream(config).await.map_err(store)?
            }
        };
        if let Some(existing) = kind_of(existing.cached_info()).filter(|k| *k != kind) {
            return Err(EngineError::KindMismatch {
                stream: id.stream.clone(),
                existing,
                wanted: kind,
            });
        }
        Ok(())
    }

    /// The JetStream stream of `id`, if it exists.
    pub(super) async fn get(&self, id: &StreamId) -> Result<Option<stream::Stream>, EngineError> {
        match self.js.get_stream(stream_name(id)).await {
            Ok(stream) => Ok(Some(stream)),
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(error)
                    if error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(None)
                }
                _ => Err(store(e)),
            },
        }
    }

    /// An ephemeral consumer of one partition from `after + 1`, for reads.
    async fn reader(
        &self,
        stream: &stream::Stream,
        id: &StreamId,
        partition: u32,
        after: u64,
    ) -> Result<consumer::PullConsumer, EngineError> {
        stream
            .create_consumer(consumer::pull::Config {
                filter_subject: subject(id, partition),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(10),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(store)
    }

    fn forget(&self, stream: stream::Stream, consumer: consumer::PullConsumer) {
        let name = consumer.cached_info().name.clone();
        tokio::spawn(async move {
            let _ = stream.delete_consumer(&name).await;
        });
    }
}

impl Records for NatsEngine {
    fn stream(&self, id: &StreamId) -> EngineFuture<'_, Option<StreamInfo>> {
        let id = id.clone();
        Box::pin(async move {
            let Some(mut stream) = self.get(&id).await? else {
                return Ok(None);
            };
            let info = stream.info().await.map_err(store)?;
            Ok(kind_of(info).map(|kind| StreamInfo {
                kind,
                last_seq: info.state.last_sequence,
            }))
        })
    }

    fn append(
        &self,
        id: &StreamId,
        kind: StreamKind,
        records: Vec<NewRecord>,
        max_tenant_bytes: u64,
    ) -> EngineFuture<'_, Vec<Appended>> {
        let id = id.clone();
        Box::pin(async move {
            self.ensure(&id, kind).await?;
            let now = now_ms();
            let messages: Vec<(u32, Vec<u8>)> = records
                .into_iter()
                .map(|record| {
                    let partition = if kind.is_ordered() {
                        shard_of(&record.key)
                    } else {
                        0
                    };
                    let message = Message {
                        key: record.key,
                        body: record.body,
                        arrived_ms: now,
                    };
                    (partition, serde_json::to_vec(&message).unwrap_or_default())
                })
                .collect();
            let adding: u64 = messages.iter().map(|(_, m)| m.len() as u64 + 32).sum();
            let stored = self.tenant_bytes(&id.tenant).await?;
            if stored + adding > max_tenant_bytes {
                return Err(EngineError::StorageQuota {
                    stored,
                    adding,
                    limit: max_tenant_bytes,
                });
            }
            // Publish all, then wait for every acknowledgement: the
            // server keeps them in publish order.
            let mut acks = Vec::with_capacity(messages.len());
            for (partition, payload) in messages {
                let ack = self
                    .js
                    .publish(subject(&id, partition), payload.into())
                    .await
                    .map_err(store)?;
                acks.push((partition, ack));
            }
            let mut appended = Vec::with_capacity(acks.len());
            for (partition, ack) in acks {
                let ack = ack.await.map_err(store)?;
                appended.push(Appended {
                    partition,
                    seq: ack.sequence,
                });
            }
            Ok(appended)
        })
    }

    fn read(
        &self,
        id: &StreamId,
        partition: u32,
        after: u64,
        limit: usize,
    ) -> EngineFuture<'_, Vec<StoredRecord>> {
        let id = id.clone();
        Box::pin(async move {
            let Some(stream) = self.get(&id).await? else {
                return Ok(Vec::new());
            };
            let reader = self.reader(&stream, &id, partition, after).await?;
            let pending = reader.cached_info().num_pending as usize;
            let mut records = Vec::new();
            if pending > 0 && limit > 0 {
                let mut messages = reader
                    .fetch()
                    .max_messages(limit.min(pending))
                    .expires(Duration::from_secs(2))
                    .messages()
                    .await
                    .map_err(store)?;
                while let Some(message) = messages.next().await {
                    let message = message.map_err(store)?;
                    let info = message.info().map_err(store)?;
                    let seq = info.stream_sequence;
                    let Ok(stored) = serde_json::from_slice::<Message>(&message.payload) else {
                        continue;
                    };
                    records.push(StoredRecord {
                        seq,
                        partition,
                        key: stored.key,
                        arrived_ms: stored.arrived_ms,
                        body: stored.body,
                    });
                    if records.len() >= limit {
                        break;
                    }
                }
            }
            self.forget(stream, reader);
            Ok(records)
        })
    }

    fn count_after(&self, id: &StreamId, partition: u32, after: u64) -> EngineFuture<'_, u64> {
        let id = id.clone();
        Box::pin(async move {
            let Some(stream) = self.get(&id).await? else {
                return Ok(0);
            };
            let reader = self.reader(&stream, &id, partition, after).await?;
            let pending = reader.cached_info().num_pending;
            self.forget(stream, reader);
            Ok(pending)
        })
    }

    /// Every record published to a stream, by any host or tool, is also a
    /// plain NATS message on its subject `tf.<tenant>.<stream>.<shard>`:
    /// a subscription to them wakes this host's consumers as soon as
    /// another host appends, where they would otherwise poll (every
    /// second). It carries each record's bytes to every host following
    /// the stream. Subscriptions outlive a server restart (the client
    /// subscribes again); while the server is away the consumers poll.
    fn follow(&self, id: &StreamId, wake: Arc<tokio::sync::Notify>) {
        let client = self.js.client();
        let subjects = format!("tf.{}.{}.*", token(&id.tenant), token(&id.stream));
        tokio::spawn(async move {
            match client.subscribe(subjects.clone()).await {
                Ok(mut records) => {
                    while records.next().await.is_some() {
                        wake.notify_waiters();
                    }
                }
                Err(error) => {
                    tracing::warn!(%subjects, %error, "cannot follow the stream's subjects: its consumers poll")
                }
            }
        });
    }

    fn trim(&self, tenant: &str, before_ms: u64) -> EngineFuture<'_, u64> {
        let prefix = tenant_prefix(tenant);
        Box::pin(async move {
            let mut trimmed = 0;
            let mut names = self.js.stream_names();
            let mut ours = Vec::new();
            while let Some(name) = names.next().await {
                let name = name.map_err(store)?;
                if name.starts_with(&prefix) {
                    ours.push(name);
                }
            }
            for name in ours {
                let mut stream = self.js.get_stream(&name).await.map_err(store)?;
                let state = stream.info().await.map_err(store)?.state.clone();
                let millis = |t: async_nats::datetime::DateTime| {
                    (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64
                };
                if state.messages == 0 || millis(state.first_timestamp) >= before_ms {
                    continue;
                }
                // The first record at or after the cutoff, by binary search
                // over the sequence (purges keep it contiguous).
                let (mut low, mut high) = (state.first_sequence, state.last_sequence + 1);
                while low < high {
                    let middle = low + (high - low) / 2;
                    let message = stream.get_raw_message(middle).await.map_err(store)?;
                    if millis(message.time) < before_ms {
                        low = middle + 1;
                    } else {
                        high = middle;
                    }
                }
                stream.purge().sequence(low).await.map_err(store)?;
                trimmed += low - state.first_sequence;
            }
            Ok(trimmed)
        })
    }

    fn tenant_bytes(&self, tenant: &str) -> EngineFuture<'_, u64> {
        let prefix = tenant_prefix(tenant);
        Box::pin(async move {
            let mut bytes = 0;
            let mut streams = self.js.streams();
            while let Some(info) = streams.next().await {
                let info = info.map_err(store)?;
                if info.config.name.starts_with(&prefix) {
                    bytes += info.state.bytes;
                }
            }
            Ok(bytes)
        })
    }
}
