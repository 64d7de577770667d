//! `[cognito-streams]` in `tenant.toml`: where a tenant's sync outcomes
//! are published (the publishing itself is `crate::cognito`). It lives
//! here, beside `[[event-sources]]` (`mapping`), so the tenant's settings
//! read it without reaching above themselves.

use super::is_stream_name;
use serde::Deserialize;
use std::time::Duration;

/// Kinesis's largest record payload, the seed's inline limit: 50 KB.
pub const DEFAULT_INLINE_LIMIT_BYTES: usize = 50 * 1024;
/// The largest inline limit a tenant may set (a Kinesis record, 1 MiB).
pub const MAX_INLINE_LIMIT_BYTES: usize = 1 << 20;
/// How long a payload URL stays valid by default.
pub const DEFAULT_PAYLOAD_URL_SECS: u64 = 3600;
/// At most: the NATS engine keeps payloads 24 hours.
pub const MAX_PAYLOAD_URL_SECS: u64 = 24 * 3600;
/// One successful bulk publish per tenant per this many seconds, by
/// default (the seed's 24 hours).
pub const DEFAULT_BULK_PUBLISH_INTERVAL_SECS: u64 = 24 * 3600;

/// `[cognito-streams]` in `tenant.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CognitoStreamsFile {
    /// The Kinesis stream (of this tenant) the records go to.
    pub stream: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_inline")]
    pub inline_limit_bytes: usize,
    #[serde(default = "default_url_secs")]
    pub payload_url_secs: u64,
    #[serde(default = "default_bulk_secs")]
    pub bulk_publish_interval_secs: u64,
}

fn yes() -> bool {
    true
}
fn default_inline() -> usize {
    DEFAULT_INLINE_LIMIT_BYTES
}
fn default_url_secs() -> u64 {
    DEFAULT_PAYLOAD_URL_SECS
}
fn default_bulk_secs() -> u64 {
    DEFAULT_BULK_PUBLISH_INTERVAL_SECS
}

/// A tenant's Cognito Streams settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CognitoStreams {
    pub stream: String,
    pub enabled: bool,
    pub inline_limit_bytes: usize,
    pub payload_url_ttl: Duration,
    pub bulk_publish_interval: Duration,
}

impl CognitoStreamsFile {
    /// The settings, or the first key that is out of bounds.
    pub fn resolve(&self) -> Result<CognitoStreams, String> {
        if !is_stream_name(&self.stream) {
            return Err(format!(
                "[cognito-streams] stream = {:?} is not a stream name: 1 to 128 letters, digits, -, _ or ., starting with a letter or digit",
                self.stream
            ));
        }
        if !(1..=MAX_INLINE_LIMIT_BYTES).contains(&self.inline_limit_bytes) {
            return Err(format!(
                "[cognito-streams] inline-limit-bytes = {} must be 1 to {MAX_INLINE_LIMIT_BYTES}",
                self.inline_limit_bytes
            ));
        }
        if !(1..=MAX_PAYLOAD_URL_SECS).contains(&self.payload_url_secs) {
            return Err(format!(
                "[cognito-streams] payload-url-secs = {} must be 1 to {MAX_PAYLOAD_URL_SECS}",
                self.payload_url_secs
            ));
        }
        Ok(CognitoStreams {
            stream: self.stream.clone(),
            enabled: self.enabled,
            inline_limit_bytes: self.inline_limit_bytes,
            payload_url_ttl: Duration::from_secs(self.payload_url_secs),
            bulk_publish_interval: Duration::from_secs(self.bulk_publish_interval_secs),
        })
    }
}
