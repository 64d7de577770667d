//! Bulk publish (`POST|GET /v1/tenants/{tenant}/bulk-publish`): the
//! current state of every dataset of the tenant, published to its
//! Cognito stream, like Cognito's BulkPublish and GetBulkPublishDetails.
//!
//! At most one runs at a time per tenant, and a successful one at most
//! once per `bulk-publish-interval-secs` (24 hours by default). A
//! dataset's records go out as one record per dataset, split into several
//! (each in the seed's shape, `Inline`) when they do not fit the inline
//! limit together. Bulk records and live updates may repeat each other
//! (as the seed says): consumers keep the highest `syncCount` per key.
//!
//! Limits: the status is kept by the host that ran it, in memory (a
//! restart forgets it, and with NATS each host has its own).

use super::state::{Applied, KeyState};
use super::{build_record, Cognito};
use crate::streams::engine::NewRecord;
use crate::streams::{now_ms, StreamId, StreamKind};
use crate::tenant::Tenant;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Records appended by one engine call.
const BATCH: usize = 100;

/// Where a tenant's bulk publish stands.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BulkStatus {
    /// `NOT_STARTED`, `IN_PROGRESS`, `FAILED` or `SUCCEEDED`.
    pub bulk_publish_status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bulk_publish_start_time: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bulk_publish_complete_time: Option<u64>,
    pub datasets_published: u64,
    pub records_published: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    /// When the last successful one ended.
    #[serde(skip)]
    pub last_success: Option<u64>,
}

impl Default for BulkStatus {
    fn default() -> Self {
        BulkStatus {
            bulk_publish_status: "NOT_STARTED",
            bulk_publish_start_time: None,
            bulk_publish_complete_time: None,
            datasets_published: 0,
            records_published: 0,
            failure_message: None,
            last_success: None,
        }
    }
}

/// Each tenant's last bulk publish.
#[derive(Default)]
pub struct BulkRuns(Mutex<HashMap<String, BulkStatus>>);

/// Why a bulk publish cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("the tenant has no [cognito-streams] stream enabled in tenant.toml")]
    NotConfigured,
    #[error("a bulk publish of this tenant is already in progress")]
    InProgress,
    #[error("a bulk publish succeeded at {last} ms; the next may start at {next} ms ([cognito-streams] bulk-publish-interval-secs)")]
    TooSoon { last: u64, next: u64 },
}

impl BulkRuns {
    pub fn status(&self, tenant: &str) -> BulkStatus {
        let runs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        runs.get(tenant).cloned().unwrap_or_default()
    }

    fn update(&self, tenant: &str, change: impl FnOnce(&mut BulkStatus)) {
        let mut runs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        change(runs.entry(tenant.to_owned()).or_default());
    }
}

/// Starts a bulk publish of `tenant` in the background; its status as
/// it starts.
pub fn start(cognito: Arc<Cognito>, tenant: Arc<Tenant>) -> Result<BulkStatus, BulkError> {
    let config = tenant
        .cognito_streams
        .clone()
        .filter(|c| c.enabled)
        .ok_or(BulkError::NotConfigured)?;
    let now = now_ms();
    let started = {
        let mut runs = cognito.bulk.0.lock().unwrap_or_else(|e| e.into_inner());
        let status = runs.entry(tenant.name.clone()).or_default();
        if status.bulk_publish_status == "IN_PROGRESS" {
            return Err(BulkError::InProgress);
        }
        if let Some(last) = status.last_success {
            let next = last + config.bulk_publish_interval.as_millis() as u64;
            if now < next {
                return Err(BulkError::TooSoon { last, next });
            }
        }
        *status = BulkStatus {
            bulk_publish_status: "IN_PROGRESS",
            bulk_publish_start_time: Some(now),
            last_success: status.last_success,
            ..BulkStatus::default()
        };
        status.clone()
    };
    tokio::spawn(async move {
        let result = run(&cognito, &tenant, &config.stream, config.inline_limit_bytes).await;
        cognito.bulk.update(&tenant.name, |status| {
            let end = now_ms();
            status.bulk_publish_complete_time = Some(end);
            match result {
                Ok(()) => {
                    status.bulk_publish_status = "SUCCEEDED";
                    status.last_success = Some(end);
                }
                Err(e) => {
                    status.bulk_publish_status = "FAILED";
                    status.failure_message = Some(e);
                }
            }
        });
    });
    Ok(started)
}

async fn run(cognito: &Cognito, tenant: &Tenant, stream: &str, limit: usize) -> Result<(), String> {
    let engine = &cognito.streams.engine;
    let id = StreamId::new(&tenant.name, stream);
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
        let records = split(&applied, &keys, limit);
        cognito
            .bulk
            .update(&tenant.name, |s| s.datasets_published += 1);
        batch.extend(records);
        if batch.len() >= BATCH {
            publish(cognito, tenant, &id, std::mem::take(&mut batch)).await?;
        }
    }
    publish(cognito, tenant, &id, batch).await
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

async fn publish(
    cognito: &Cognito,
    tenant: &Tenant,
    id: &StreamId,
    records: Vec<NewRecord>,
) -> Result<(), String> {
    if records.is_empty() {
        return Ok(());
    }
    let n = records.len() as u64;
    cognito
        .streams
        .engine
        .append(
            id,
            StreamKind::Kinesis,
            records,
            tenant.quotas.stream_stored_bytes,
        )
        .await
        .map_err(|e| e.to_string())?;
    cognito.streams.waker(id).notify_waiters();
    cognito
        .bulk
        .update(&tenant.name, |s| s.records_published += n);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cognito::CognitoStreams;
    use crate::streams::embedded::EmbeddedEngine;
    use crate::streams::Streams;
    use std::time::Duration;

    fn tenant(config: Option<CognitoStreams>) -> Arc<Tenant> {
        let mut tenant = Tenant::default();
        tenant.name = "t".into();
        tenant.cognito_streams = config;
        Arc::new(tenant)
    }

    #[tokio::test]
    async fn one_at_a_time_and_one_success_a_window() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(EmbeddedEngine::open(dir.path()).unwrap());
        let cognito = Arc::new(Cognito::new(Arc::new(Streams::new(engine)), "http://h"));
        let config = CognitoStreams {
            stream: "cognito".into(),
            enabled: true,
            inline_limit_bytes: 1000,
            payload_url_ttl: Duration::from_secs(1),
            bulk_publish_interval: Duration::from_secs(3600),
        };
        assert!(matches!(
            start(cognito.clone(), tenant(None)),
            Err(BulkError::NotConfigured)
        ));
        cognito
            .bulk
            .update("t", |s| s.bulk_publish_status = "IN_PROGRESS");
        assert!(matches!(
            start(cognito.clone(), tenant(Some(config.clone()))),
            Err(BulkError::InProgress)
        ));
        cognito.bulk.update("t", |s| {
            s.bulk_publish_status = "SUCCEEDED";
            s.last_success = Some(now_ms());
        });
        assert!(matches!(
            start(cognito.clone(), tenant(Some(config.clone()))),
            Err(BulkError::TooSoon { .. })
        ));
        // Past the window (here: none), it starts.
        let no_window = CognitoStreams {
            bulk_publish_interval: Duration::ZERO,
            ..config
        };
        let started = start(cognito.clone(), tenant(Some(no_window))).unwrap();
        assert_eq!(started.bulk_publish_status, "IN_PROGRESS");
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
