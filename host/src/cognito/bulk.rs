//! Bulk publish (`POST|GET /v1/tenants/{tenant}/bulk-publish`): the
//! current state of every dataset of the tenant, published to its
//! Cognito stream, like Cognito's BulkPublish and GetBulkPublishDetails.
//!
//! At most one runs at a time per tenant, and a successful one at most
//! once per `bulk-publish-interval-secs` (24 hours by default), across
//! every host of the engine and across restarts: the status is one
//! [`BulkRecord`] per tenant kept in the engine, changed only by
//! [`Datasets::bulk_publish`](crate::streams::engine::Datasets::bulk_publish)
//! (redb: one write transaction; NATS: compare-and-set on the key's
//! revision), and the rules that change it ([`begin`], [`renew`],
//! [`finish`]) are written once, here.
//!
//! The host running a bulk publish holds a **claim** on the record: it
//! renews it every [`RENEW_CLAIM`] (1 s), writing its progress. A run
//! whose claim was not renewed for [`BULK_CLAIM_TTL`] (10 s: its host
//! died, was stopped, or lost the engine) counts as `FAILED`, and another
//! may start. A run that finds its claim lapsed stops. The hosts' clocks
//! must agree to well within those 10 s.
//!
//! A dataset's records go out as one record per dataset, split into
//! several (each in the seed's shape, `Inline`) when they do not fit the
//! inline limit together, appended at the tenant's
//! `[quotas] stream-records-per-second` (waiting for its share, as a
//! Kinesis shard's write rate would make it). Bulk records and live
//! updates may repeat each other (as the seed says): consumers keep the
//! highest `syncCount` per key.

use super::bulk_record::lapsed_message;
pub use super::bulk_record::{BulkRecord, BulkState, BulkStatus, BULK_CLAIM_TTL};
use super::state::{Applied, KeyState};
use super::{build_record, Cognito, CognitoStreams};
use crate::streams::engine::{random_secret, EngineError, NewRecord, RENEW_CLAIM};
use crate::streams::{now_ms, StreamId, StreamKind};
use crate::tenant::Tenant;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records appended by one engine call (fewer when the tenant's stream
/// rate is lower).
const BATCH: usize = 100;

/// Why a bulk publish cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("the tenant has no [cognito-streams] stream enabled in tenant.toml")]
    NotConfigured,
    #[error("a bulk publish of this tenant is already in progress")]
    InProgress,
    #[error("a bulk publish succeeded at {last} ms; the next may start at {next} ms ([cognito-streams] bulk-publish-interval-secs)")]
    TooSoon { last: u64, next: u64 },
    #[error(transparent)]
    Store(#[from] EngineError),
}

/// The rule that starts run `run` at `now`: refused while another run
/// holds a live claim, or within `interval_ms` of the last success.
pub fn begin(
    current: &BulkRecord,
    now: u64,
    interval_ms: u64,
    run: &str,
) -> Result<BulkRecord, BulkError> {
    if current.state == BulkState::InProgress && !current.lapsed(now) {
        return Err(BulkError::InProgress);
    }
    if let Some(last) = current.last_success_ms {
        let next = last.saturating_add(interval_ms);
        if now < next {
            return Err(BulkError::TooSoon { last, next });
        }
    }
    Ok(BulkRecord {
        state: BulkState::InProgress,
        start_ms: Some(now),
        last_success_ms: current.last_success_ms,
        run: run.to_owned(),
        heartbeat_ms: now,
        ..BulkRecord::default()
    })
}

/// The rule that renews run `run`'s claim and writes its progress: None
/// if the claim is not its own any more, or lapsed.
pub fn renew(
    current: &BulkRecord,
    run: &str,
    now: u64,
    progress: (u64, u64),
) -> Option<BulkRecord> {
    if current.state != BulkState::InProgress || current.run != run || current.lapsed(now) {
        return None;
    }
    Some(BulkRecord {
        heartbeat_ms: now,
        datasets_published: progress.0,
        records_published: progress.1,
        ..current.clone()
    })
}

/// The rule that ends run `run`: None if the record is another run's. A
/// run whose claim lapsed ends FAILED, whatever it did.
pub fn finish(
    current: &BulkRecord,
    run: &str,
    now: u64,
    progress: (u64, u64),
    outcome: &Result<(), String>,
) -> Option<BulkRecord> {
    if current.state != BulkState::InProgress || current.run != run {
        return None;
    }
    let outcome = if current.lapsed(now) {
        Err(lapsed_message())
    } else {
        outcome.clone()
    };
    let mut done = BulkRecord {
        complete_ms: Some(now),
        heartbeat_ms: now,
        datasets_published: progress.0,
        records_published: progress.1,
        ..current.clone()
    };
    match outcome {
        Ok(()) => {
            done.state = BulkState::Succeeded;
            done.last_success_ms = Some(now);
        }
        Err(message) => {
            done.state = BulkState::Failed;
            done.failure_message = Some(message);
        }
    }
    Some(done)
}

/// The tenant's bulk publish status, from the engine.
pub async fn status(cognito: &Cognito, tenant: &str) -> Result<BulkStatus, EngineError> {
    let (record, _) = cognito
        .streams
        .engine
        .bulk_publish(tenant, Box::new(|_| None))
        .await?;
    Ok(record.status(now_ms()))
}

/// A run's progress so far: (datasets, records).
#[derive(Default)]
struct Progress {
    datasets: AtomicU64,
    records: AtomicU64,
}

impl Progress {
    fn get(&self) -> (u64, u64) {
        (
            self.datasets.load(Ordering::Relaxed),
            self.records.load(Ordering::Relaxed),
        )
    }
}

/// A random id for one run.
fn run_id() -> String {
    let bytes = random_secret().unwrap_or_else(|_| now_ms().to_be_bytes().to_vec());
    let hex: String = bytes[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", std::process::id())
}

/// Claims the tenant's bulk publish in the engine and runs it in the
/// background; its status as it starts.
pub async fn start(cognito: Arc<Cognito>, tenant: Arc<Tenant>) -> Result<BulkStatus, BulkError> {
    let config = tenant
        .cognito_streams
        .clone()
        .filter(|c| c.enabled)
        .ok_or(BulkError::NotConfigured)?;
    let now = now_ms();
    let interval = config.bulk_publish_interval.as_millis() as u64;
    let run = run_id();
    let claim = {
        let run = run.clone();
        Box::new(move |current: &BulkRecord| begin(current, now, interval, &run).ok())
    };
    let (record, began) = cognito
        .streams
        .engine
        .bulk_publish(&tenant.name, claim)
        .await?;
    if !began {
        // Why the engine's record refused it (the same rule, same time).
        return Err(begin(&record, now, interval, &run)
            .err()
            .unwrap_or(BulkError::InProgress));
    }
    tracing::info!(tenant = %tenant.name, %run, "bulk publish started");
    tokio::spawn(drive(cognito, tenant, config, run));
    Ok(record.status(now))
}

/// Runs a claimed bulk publish, renewing its claim meanwhile, and writes
/// how it ended.
async fn drive(cognito: Arc<Cognito>, tenant: Arc<Tenant>, config: CognitoStreams, run: String) {
    let engine = cognito.streams.engine.clone();
    let progress = Arc::new(Progress::default());
    let mut work = Box::pin(publish_all(&cognito, &tenant, &config, &progress));
    let mut renewed = Instant::now();
    let mut ticks = tokio::time::interval(RENEW_CLAIM);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let outcome = loop {
        tokio::select! {
            done = &mut work => break done,
            _ = ticks.tick() => {
                let (ours, done) = (run.clone(), progress.get());
                let change = Box::new(move |c: &BulkRecord| renew(c, &ours, now_ms(), done));
                match engine.bulk_publish(&tenant.name, change).await {
                    Ok((_, true)) => renewed = Instant::now(),
                    Ok((_, false)) => break Err(lapsed_message()),
                    Err(error) if renewed.elapsed() < BULK_CLAIM_TTL => {
                        tracing::warn!(tenant = %tenant.name, %error, "renewing the bulk publish's claim failed; trying again");
                    }
                    Err(error) => break Err(format!("its claim could not be renewed: {error}")),
                }
            }
        }
    };
    // Stop publishing (a lapsed run must not go on) before writing the end.
    drop(work);
    for _ in 0..5 {
        let (ours, done, outcome) = (run.clone(), progress.get(), outcome.clone());
        let change = Box::new(move |c: &BulkRecord| finish(c, &ours, now_ms(), done, &outcome));
        match engine.bulk_publish(&tenant.name, change).await {
            Ok((record, _)) => {
                tracing::info!(tenant = %tenant.name, %run, status = record.state.as_str(), records = done.1, "bulk publish ended");
                return;
            }
            Err(error) => {
                // Left IN_PROGRESS, it lapses to FAILED after its TTL.
                tracing::warn!(tenant = %tenant.name, %error, "writing the bulk publish's end failed");
                tokio::time::sleep(RENEW_CLAIM).await;
            }
        }
    }
}

async fn publish_all(
    cognito: &Cognito,
    tenant: &Tenant,
    config: &CognitoStreams,
    progress: &Progress,
) -> Result<(), String> {
    let engine = &cognito.streams.engine;
    let id = StreamId::new(&tenant.name, &config.stream);
    let datasets = engine
        .datasets(&tenant.name)
        .await
        .map_err(|e| e.to_string())?;
    let mut batch = Vec::new();
    for dataset in datasets {
        let Some(state) = engine.dataset(&dataset).await.map_err(|e| e.to_string())? else {
            continue;
        };
        let keys: Vec<KeyState> = state.records.into_values().collect();
        if keys.is_empty() {
            continue;
        }
        let applied = Applied {
            dataset: dataset.clone(),
            sync_count: state.sync_count,
            last_modified_date: state.last_modified_date,
            changed: Vec::new(),
        };
        batch.extend(split(&applied, &keys, config.inline_limit_bytes));
        progress.datasets.fetch_add(1, Ordering::Relaxed);
        if batch.len() >= BATCH {
            publish(cognito, tenant, &id, std::mem::take(&mut batch), progress).await?;
        }
    }
    publish(cognito, tenant, &id, batch, progress).await
}

/// A dataset's records in as few inline records as fit `limit` each.
fn split(applied: &Applied, keys: &[KeyState], limit: usize) -> Vec<NewRecord> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < keys.len() {
        // The longest run from `start` that fits (at least one key).
        let mut end = start + 1;
        while end < keys.len() && fits(applied, &keys[start..=end], limit) {
            end += 1;
        }
        out.push(inline(applied, &keys[start..end]));
        start = end;
    }
    out
}

fn fits(applied: &Applied, keys: &[KeyState], limit: usize) -> bool {
    build_record(applied, keys, limit, |_| String::new())
        .payload
        .is_none()
}

fn inline(applied: &Applied, keys: &[KeyState]) -> NewRecord {
    build_record(applied, keys, usize::MAX, |_| String::new()).record
}

/// Appends `records`, at most the tenant's stream rate a second.
async fn publish(
    cognito: &Cognito,
    tenant: &Tenant,
    id: &StreamId,
    records: Vec<NewRecord>,
    progress: &Progress,
) -> Result<(), String> {
    let rate = tenant.quotas.stream_records_per_second.max(1);
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let part: Vec<NewRecord> = records.by_ref().take(BATCH.min(rate as usize)).collect();
        let n = part.len();
        while !cognito.streams.take_rate(&tenant.name, n, rate) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cognito
            .streams
            .engine
            .append(
                id,
                StreamKind::Kinesis,
                part,
                tenant.quotas.stream_stored_bytes,
            )
            .await
            .map_err(|e| e.to_string())?;
        cognito.streams.waker(id).notify_waiters();
        progress.records.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_at_a_time_and_one_success_a_window() {
        let hour = 3_600_000;
        let none = BulkRecord::default();
        let a = begin(&none, 1_000, hour, "a").unwrap();
        assert_eq!(a.state, BulkState::InProgress);
        assert_eq!(a.status(1_000).bulk_publish_status, "IN_PROGRESS");
        // Another run is refused while a's claim is live...
        assert!(matches!(
            begin(&a, 2_000, hour, "b"),
            Err(BulkError::InProgress)
        ));
        // ... and renewals keep it live, with the progress.
        let a = renew(&a, "a", 9_000, (2, 3)).unwrap();
        assert!(renew(&a, "b", 9_000, (0, 0)).is_none());
        assert!(matches!(
            begin(&a, 15_000, hour, "b"),
            Err(BulkError::InProgress)
        ));
        let done = finish(&a, "a", 10_000, (4, 5), &Ok(())).unwrap();
        assert_eq!(done.state, BulkState::Succeeded);
        assert_eq!((done.datasets_published, done.records_published), (4, 5));
        // A success closes the window...
        assert!(matches!(
            begin(&done, 10_000 + hour - 1, hour, "c"),
            Err(BulkError::TooSoon { .. })
        ));
        // ... until it ends.
        let c = begin(&done, 10_000 + hour, hour, "c").unwrap();
        assert_eq!(c.last_success_ms, Some(10_000));
        // A run whose claim lapsed counts as FAILED: another may start,
        // and the lapsed one can neither renew nor succeed.
        let late = 10_000 + hour + BULK_CLAIM_TTL.as_millis() as u64;
        assert!(c.lapsed(late));
        let shown = c.status(late);
        assert_eq!(shown.bulk_publish_status, "FAILED");
        assert!(shown.failure_message.unwrap().contains("claim"));
        assert!(renew(&c, "c", late, (0, 0)).is_none());
        let failed = finish(&c, "c", late, (0, 0), &Ok(())).unwrap();
        assert_eq!(failed.state, BulkState::Failed);
        let d = begin(&c, late, hour, "d").unwrap();
        assert!(finish(&d, "c", late, (0, 0), &Ok(())).is_none());
    }

    #[test]
    fn a_large_dataset_is_split_into_records_that_fit() {
        let keys: Vec<KeyState> = (0..50)
            .map(|i| KeyState {
                key: format!("k{i}"),
                value: Some("x".repeat(100)),
                sync_count: 1,
                last_modified_date: 1,
                device_last_modified_date: 1,
                op: crate::cognito::state::Op::Replace,
            })
            .collect();
        let applied = Applied {
            dataset: crate::cognito::state::DatasetId {
                tenant: "t".into(),
                pool: "p".into(),
                identity: "i".into(),
                dataset: "d".into(),
            },
            sync_count: 1,
            last_modified_date: 1,
            changed: Vec::new(),
        };
        let records = split(&applied, &keys, 1024);
        assert!(records.len() > 5, "{}", records.len());
        for record in &records {
            let data = record.body["data"].as_str().unwrap();
            // base64 of at most 1024 bytes of JSON.
            assert!(data.len() <= 1024 * 4 / 3 + 4, "{}", data.len());
        }
    }
}
