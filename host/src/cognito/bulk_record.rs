//! A tenant's bulk-publish record as the engines keep it, and the status
//! `GET /v1/tenants/{tenant}/bulk-publish` answers from it: plain data,
//! so the engines that store it need nothing of the run itself
//! ([`super::bulk`]).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A bulk publish whose claim was not renewed for this long counts as
/// `FAILED`, and another may start.
pub const BULK_CLAIM_TTL: Duration = Duration::from_secs(10);

/// Where a tenant's bulk publish stands, as GetBulkPublishDetails says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BulkState {
    #[default]
    NotStarted,
    InProgress,
    Failed,
    Succeeded,
}

impl BulkState {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkState::NotStarted => "NOT_STARTED",
            BulkState::InProgress => "IN_PROGRESS",
            BulkState::Failed => "FAILED",
            BulkState::Succeeded => "SUCCEEDED",
        }
    }
}

/// A tenant's last bulk publish, as the engine keeps it (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BulkRecord {
    pub state: BulkState,
    pub start_ms: Option<u64>,
    pub complete_ms: Option<u64>,
    pub datasets_published: u64,
    pub records_published: u64,
    pub failure_message: Option<String>,
    /// When the last successful one ended (the window starts there).
    pub last_success_ms: Option<u64>,
    /// The run holding the claim: a random id per run.
    pub run: String,
    /// When that run last renewed its claim.
    pub heartbeat_ms: u64,
}

impl BulkRecord {
    /// Whether this is a run whose claim lapsed: it counts as FAILED.
    pub fn lapsed(&self, now: u64) -> bool {
        self.state == BulkState::InProgress
            && now >= self.heartbeat_ms + BULK_CLAIM_TTL.as_millis() as u64
    }

    /// What `GET .../bulk-publish` answers at `now`.
    pub fn status(&self, now: u64) -> BulkStatus {
        let mut status = BulkStatus {
            bulk_publish_status: self.state.as_str(),
            bulk_publish_start_time: self.start_ms,
            bulk_publish_complete_time: self.complete_ms,
            datasets_published: self.datasets_published,
            records_published: self.records_published,
            failure_message: self.failure_message.clone(),
        };
        if self.lapsed(now) {
            status.bulk_publish_status = BulkState::Failed.as_str();
            status.bulk_publish_complete_time = Some(self.heartbeat_ms);
            status.failure_message = Some(lapsed_message());
        }
        status
    }
}

pub(super) fn lapsed_message() -> String {
    format!(
        "the host running it stopped renewing its claim for {} s (it died, stopped, or lost the engine)",
        BULK_CLAIM_TTL.as_secs()
    )
}

/// Where a tenant's bulk publish stands: the JSON of
/// `GET /v1/tenants/{t}/bulk-publish`.
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
}
