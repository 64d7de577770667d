//! Lanes on JetStream: each lane's checkpoint in `TF_CHECKPOINTS`, which
//! host runs it by a lease in `TF_LEASES`, and the hosts' heartbeats.
//!
//! Lanes are shared fairly: a host takes a free lane only while it holds
//! fewer than its share (the lanes it knows of divided by the hosts alive,
//! rounded up), and gives one back, between batches, when it holds more,
//! so a host that joins gets lanes within a lease or two.

use super::{store, token, NatsEngine, LEASES, LEASE_TTL};
use crate::streams::engine::Lanes;
use crate::streams::engine::{EngineError, EngineFuture, Lane};
use crate::streams::now_ms;
use futures_util::StreamExt;
use std::time::Duration;

/// A lease taken this recently is not taken again before a batch: it has
/// at least `LEASE_TTL - FRESH_LEASE` left, and a batch's own renewals
/// (every `RENEW_CLAIM`) keep it from there. Saves a read and a write of
/// `TF_LEASES` per batch.
const FRESH_LEASE: Duration = Duration::from_millis(1000);

fn lane_key(lane: &Lane) -> String {
    format!(
        "{}.{}.{}.{}.{}",
        token(&lane.stream.tenant),
        token(&lane.stream.stream),
        token(&lane.mapping),
        lane.partition,
        lane.lane
    )
}

impl NatsEngine {
    /// Takes or renews the lease `key` if it is free, ours, or run out.
    async fn take(&self, key: &str) -> Result<bool, EngineError> {
        let now = now_ms();
        let value = format!("{} {}", self.holder, now + LEASE_TTL.as_millis() as u64);
        let entry = self.leases.entry(key).await.map_err(store)?;
        let taken = match entry {
            None => self.leases.create(key, value.into()).await.is_ok(),
            Some(entry) => {
                let text = String::from_utf8_lossy(&entry.value);
                let (holder, until) = text.split_once(' ').unwrap_or(("", "0"));
                let free = holder == self.holder || until.parse::<u64>().unwrap_or(0) < now;
                free && self
                    .leases
                    .update(key, value.into(), entry.revision)
                    .await
                    .is_ok()
            }
        };
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        let changed = if taken {
            lanes.taken_ms.insert(key.to_owned(), now);
            lanes.held.insert(key.to_owned())
        } else {
            lanes.taken_ms.remove(key);
            lanes.held.remove(key)
        };
        if changed {
            tracing::info!(
                lane = key,
                taken,
                held = lanes.held.len(),
                "stream lane lease changed hands"
            );
        }
        Ok(taken)
    }

    /// Ends our lease on `key` at once, so another host can take it.
    async fn give_back(&self, key: &str) {
        if let Ok(Some(entry)) = self.leases.entry(key).await {
            if String::from_utf8_lossy(&entry.value).starts_with(&format!("{} ", self.holder)) {
                let _ = self
                    .leases
                    .update(key, format!("{} 0", self.holder).into(), entry.revision)
                    .await;
            }
        }
    }

    /// Hosts alive, counted at most once a second; beats this host's
    /// heart on the way.
    async fn hosts_alive(&self) -> Result<usize, EngineError> {
        let now = now_ms();
        {
            let lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
            if now < lanes.counted_ms + 1000 {
                return Ok(lanes.hosts);
            }
        }
        let until = now + LEASE_TTL.as_millis() as u64;
        self.leases
            .put(format!("hosts.{}", self.holder), until.to_string().into())
            .await
            .map_err(store)?;
        // The heartbeats' subjects, then the last value of each: two or
        // three requests, where listing the bucket's keys takes seconds.
        let bucket = self
            .js
            .get_stream(format!("KV_{LEASES}"))
            .await
            .map_err(store)?;
        let mut subjects = bucket
            .info_with_subjects(format!("$KV.{LEASES}.hosts.*"))
            .await
            .map_err(store)?;
        let mut beats = Vec::new();
        while let Some(subject) = subjects.next().await {
            beats.push(subject.map_err(store)?.0);
        }
        let mut alive = 0;
        for subject in beats {
            let Ok(beat) = bucket.get_last_raw_message_by_subject(&subject).await else {
                continue;
            };
            let until = std::str::from_utf8(&beat.payload)
                .ok()
                .and_then(|b| b.parse::<u64>().ok())
                .unwrap_or(0);
            if until >= now {
                alive += 1;
            }
        }
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        lanes.hosts = alive.max(1);
        lanes.counted_ms = now;
        Ok(lanes.hosts)
    }
}

impl Lanes for NatsEngine {
    fn checkpoint(&self, lane: &Lane) -> EngineFuture<'_, Option<u64>> {
        let key = lane_key(lane);
        Box::pin(async move {
            let value = self.checkpoints.get(key).await.map_err(store)?;
            Ok(value.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()))
        })
    }

    fn commit(&self, lane: &Lane, seq: u64) -> EngineFuture<'_, ()> {
        let key = lane_key(lane);
        Box::pin(async move {
            self.checkpoints
                .put(key, seq.to_string().into())
                .await
                .map_err(store)?;
            Ok(())
        })
    }

    fn claim(&self, lane: &Lane) -> EngineFuture<'_, bool> {
        let key = lane_key(lane);
        Box::pin(async move {
            if self.left.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(false);
            }
            let hosts = self.hosts_alive().await?;
            // Decide under one lock, so lanes deciding at once see each
            // other's choices.
            let give_back = {
                let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
                lanes.known.insert(key.clone());
                let share = lanes.known.len().div_ceil(hosts.max(1));
                let held = lanes.held.contains(&key);
                if held && lanes.held.len() > share {
                    lanes.held.remove(&key);
                    lanes.taken_ms.remove(&key);
                    true
                } else if !held && lanes.held.len() >= share {
                    return Ok(false);
                } else if held
                    && lanes
                        .taken_ms
                        .get(&key)
                        .is_some_and(|at| now_ms() < at + FRESH_LEASE.as_millis() as u64)
                {
                    return Ok(true);
                } else {
                    false
                }
            };
            if give_back {
                // More than our share: give this one back between batches.
                self.give_back(&key).await;
                let held = self
                    .lanes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .held
                    .len();
                tracing::info!(lane = key, held, "stream lane given back to even the load");
                return Ok(false);
            }
            self.take(&key).await
        })
    }

    fn renew(&self, lane: &Lane) -> EngineFuture<'_, bool> {
        let key = lane_key(lane);
        Box::pin(async move {
            if self.left.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(false);
            }
            self.take(&key).await
        })
    }

    fn leave(&self) -> EngineFuture<'_, ()> {
        Box::pin(async move {
            self.left.store(true, std::sync::atomic::Ordering::Relaxed);
            let held: Vec<String> = {
                let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
                lanes.taken_ms.clear();
                lanes.held.drain().collect()
            };
            for key in &held {
                self.give_back(key).await;
            }
            // A heartbeat that has ended: the others count one host fewer
            // at their next count, and share the lanes out between them.
            self.leases
                .put(format!("hosts.{}", self.holder), "0".into())
                .await
                .map_err(store)?;
            tracing::info!(
                lanes = held.len(),
                "stream lanes given back: this host has left"
            );
            Ok(())
        })
    }
}
