//! Event source mappings: `[[event-sources]]` in `tenant.toml`, strictly
//! parsed and checked, like Lambda's `CreateEventSourceMapping`.
//!
//! ```toml
//! [[event-sources]]
//! stream = "orders"              # the stream or queue, created on first use
//! kind = "kinesis"               # kinesis | dynamodb | sqs | s3
//! batch-size = 100
//! report-batch-item-failures = true
//! on-failure = "orders-dlq"
//! ```
//!
//! Every key and its default is in the README ("Event source mappings").

use super::{is_stream_name, StreamKind};
use serde::Deserialize;
use std::time::Duration;

/// Where a mapping with no checkpoint starts reading an ordered stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartingPosition {
    /// The oldest record kept.
    TrimHorizon,
    /// Only records appended after the mapping first starts.
    Latest,
}

/// One `[[event-sources]]` table, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EventSourceFile {
    pub stream: String,
    pub kind: StreamKind,
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub batch_size: Option<u32>,
    pub batching_window_ms: Option<u64>,
    pub starting_position: Option<StartingPosition>,
    pub report_batch_item_failures: Option<bool>,
    pub bisect_batch_on_error: Option<bool>,
    pub max_retry_attempts: Option<i64>,
    pub max_record_age_s: Option<i64>,
    pub on_failure: Option<String>,
    pub parallelization: Option<u32>,
    pub visibility_timeout_s: Option<u64>,
    pub max_receive_count: Option<u32>,
}

/// A mapping, checked and with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSource {
    /// Unique per tenant: names the mapping's checkpoints and counters.
    pub name: String,
    pub stream: String,
    pub kind: StreamKind,
    pub enabled: bool,
    /// Records per invocation at most (S3: events handled per poll, each
    /// its own invocation).
    pub batch_size: usize,
    /// How long to gather records before invoking with fewer than a batch.
    pub batching_window: Duration,
    pub starting_position: StartingPosition,
    pub report_batch_item_failures: bool,
    pub bisect_batch_on_error: bool,
    /// Retries after the first attempt; none: until the record is too old.
    pub max_retry_attempts: Option<u32>,
    /// Records older than this are given up on; none: no limit.
    pub max_record_age: Option<Duration>,
    /// The queue (an `sqs` stream of the same tenant) that gets what was
    /// given up on.
    pub on_failure: Option<String>,
    /// Lanes per shard, each ordered per key with its own checkpoint.
    pub parallelization: u32,
    /// SQS: how long a received message stays invisible.
    pub visibility_timeout: Duration,
    /// SQS: receives before a message goes to `on-failure`; none: kept
    /// until retention.
    pub max_receive_count: Option<u32>,
}

/// The most records one ordered or S3 invocation gets (Lambda's Kinesis limit).
pub const MAX_BATCH_SIZE: u32 = 10_000;
/// The most messages one SQS invocation gets (Lambda's, without a window).
pub const MAX_SQS_BATCH_SIZE: u32 = 10;
/// The longest batching window (Lambda's, 300 s).
pub const MAX_BATCHING_WINDOW_MS: u64 = 300_000;
/// Retries of an ordered batch at most (Lambda's, 10,000).
pub const MAX_RETRY_ATTEMPTS: i64 = 10_000;
/// The oldest a record may be allowed to get (Lambda's, a week).
pub const MAX_RECORD_AGE_S: i64 = 604_800;
/// The largest `parallelization` (Lambda's).
pub const MAX_PARALLELIZATION: u32 = 10;
/// The longest SQS visibility timeout (SQS's, 12 hours).
pub const MAX_VISIBILITY_TIMEOUT_S: u64 = 43_200;
/// S3 (asynchronous invocation): Lambda's retries and event age.
pub const S3_RETRIES: u32 = 2;
pub const S3_MAX_EVENT_AGE_S: i64 = 21_600;

impl EventSourceFile {
    /// Checks one mapping (`index` is its position, from 1, for errors).
    fn resolve(&self, index: usize) -> Result<EventSource, String> {
        let kind = self.kind;
        let label = format!("[[event-sources]] #{index} (stream {:?})", self.stream);
        let fail = |message: String| Err(format!("{label}: {message}"));
        if !is_stream_name(&self.stream) {
            return fail("stream must be 1 to 128 letters, digits, -, _ or ., starting with a letter or digit".into());
        }
        let name = self.name.clone().unwrap_or_else(|| self.stream.clone());
        if !is_stream_name(&name) {
            return fail(format!(
                "name {name:?} must be 1 to 128 letters, digits, -, _ or ."
            ));
        }
        // Keys that mean nothing for this kind are errors, not ignored.
        let not_for = |key: &str, set: bool, kinds: &[StreamKind]| -> Result<(), String> {
            if set && kinds.contains(&kind) {
                Err(format!("{label}: {key} does not apply to {kind} streams"))
            } else {
                Ok(())
            }
        };
        use StreamKind::*;
        not_for(
            "starting-position",
            self.starting_position.is_some(),
            &[Sqs, S3],
        )?;
        not_for(
            "bisect-batch-on-error",
            self.bisect_batch_on_error.is_some(),
            &[Sqs, S3],
        )?;
        not_for(
            "parallelization",
            self.parallelization.is_some(),
            &[Sqs, S3],
        )?;
        not_for(
            "report-batch-item-failures",
            self.report_batch_item_failures.is_some(),
            &[S3],
        )?;
        not_for(
            "max-retry-attempts",
            self.max_retry_attempts.is_some(),
            &[Sqs],
        )?;
        not_for("max-record-age-s", self.max_record_age_s.is_some(), &[Sqs])?;
        not_for(
            "visibility-timeout-s",
            self.visibility_timeout_s.is_some(),
            &[Kinesis, Dynamodb, S3],
        )?;
        not_for(
            "max-receive-count",
            self.max_receive_count.is_some(),
            &[Kinesis, Dynamodb, S3],
        )?;

        let max_batch = if kind == Sqs {
            MAX_SQS_BATCH_SIZE
        } else {
            MAX_BATCH_SIZE
        };
        let batch_size = self.batch_size.unwrap_or(match kind {
            Sqs | S3 => 10,
            Kinesis | Dynamodb => 100,
        });
        if !(1..=max_batch).contains(&batch_size) {
            return fail(format!(
                "batch-size = {batch_size} is out of range 1..={max_batch} for {kind} streams"
            ));
        }
        let window = self.batching_window_ms.unwrap_or(0);
        if window > MAX_BATCHING_WINDOW_MS {
            return fail(format!(
                "batching-window-ms = {window} is above the limit of {MAX_BATCHING_WINDOW_MS}"
            ));
        }
        let max_retry_attempts = match (kind, self.max_retry_attempts) {
            (S3, None) => Some(S3_RETRIES),
            (S3, Some(n)) if (0..=S3_RETRIES as i64).contains(&n) => Some(n as u32),
            (S3, Some(n)) => return fail(format!("max-retry-attempts = {n} is out of range 0..=2 for s3 (asynchronous) events")),
            (_, None | Some(-1)) => None,
            (_, Some(n)) if (0..=MAX_RETRY_ATTEMPTS).contains(&n) => Some(n as u32),
            (_, Some(n)) => return fail(format!("max-retry-attempts = {n} is out of range: -1 (until the record is too old) or 0..={MAX_RETRY_ATTEMPTS}")),
        };
        let max_record_age = match (kind, self.max_record_age_s) {
            (S3, None) => Some(S3_MAX_EVENT_AGE_S),
            (S3, Some(n)) if (1..=S3_MAX_EVENT_AGE_S).contains(&n) => Some(n),
            (S3, Some(n)) => {
                return fail(format!(
                    "max-record-age-s = {n} is out of range 1..={S3_MAX_EVENT_AGE_S} for s3 events"
                ))
            }
            (_, None | Some(-1)) => None,
            (_, Some(n)) if (1..=MAX_RECORD_AGE_S).contains(&n) => Some(n),
            (_, Some(n)) => {
                return fail(format!(
                "max-record-age-s = {n} is out of range: -1 (no limit) or 1..={MAX_RECORD_AGE_S}"
            ))
            }
        }
        .map(|s| Duration::from_secs(s as u64));
        if let Some(target) = &self.on_failure {
            if !is_stream_name(target) {
                return fail(format!(
                    "on-failure = {target:?} must name a stream (letters, digits, -, _ or .)"
                ));
            }
            if *target == self.stream {
                return fail("on-failure must name another stream than the one consumed".into());
            }
        }
        let parallelization = self.parallelization.unwrap_or(1);
        if !(1..=MAX_PARALLELIZATION).contains(&parallelization) {
            return fail(format!(
                "parallelization = {parallelization} is out of range 1..={MAX_PARALLELIZATION}"
            ));
        }
        let visibility = self.visibility_timeout_s.unwrap_or(30);
        if !(1..=MAX_VISIBILITY_TIMEOUT_S).contains(&visibility) {
            return fail(format!("visibility-timeout-s = {visibility} is out of range 1..={MAX_VISIBILITY_TIMEOUT_S}"));
        }
        if let Some(count) = self.max_receive_count {
            if !(1..=1000).contains(&count) {
                return fail(format!(
                    "max-receive-count = {count} is out of range 1..=1000"
                ));
            }
            if self.on_failure.is_none() {
                return fail("max-receive-count needs on-failure, the dead-letter stream".into());
            }
        }
        Ok(EventSource {
            name,
            stream: self.stream.clone(),
            kind,
            enabled: self.enabled.unwrap_or(true),
            batch_size: batch_size as usize,
            batching_window: Duration::from_millis(window),
            starting_position: self
                .starting_position
                .unwrap_or(StartingPosition::TrimHorizon),
            report_batch_item_failures: self.report_batch_item_failures.unwrap_or(false),
            bisect_batch_on_error: self.bisect_batch_on_error.unwrap_or(false),
            max_retry_attempts,
            max_record_age,
            on_failure: self.on_failure.clone(),
            parallelization,
            visibility_timeout: Duration::from_secs(visibility),
            max_receive_count: self.max_receive_count,
        })
    }
}

/// Checks every mapping of a tenant; the first mistake is the error.
pub fn resolve_all(files: &[EventSourceFile]) -> Result<Vec<EventSource>, String> {
    let mut mappings: Vec<EventSource> = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        let mapping = file.resolve(i + 1)?;
        if mappings.iter().any(|m| m.name == mapping.name) {
            return Err(format!(
                "[[event-sources]] #{}: two mappings are named {:?}; give one a `name`",
                i + 1,
                mapping.name
            ));
        }
        mappings.push(mapping);
    }
    Ok(mappings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<EventSource>, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        struct File {
            event_sources: Vec<EventSourceFile>,
        }
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        resolve_all(&file.event_sources)
    }

    #[test]
    fn defaults_follow_lambda() {
        let m = &parse("[[event-sources]]\nstream = \"orders\"\nkind = \"kinesis\"\n").unwrap()[0];
        assert_eq!((m.batch_size, m.parallelization), (100, 1));
        assert_eq!((m.max_retry_attempts, m.max_record_age), (None, None));
        assert!(m.enabled && !m.report_batch_item_failures && !m.bisect_batch_on_error);
        let s3 = &parse("[[event-sources]]\nstream = \"up\"\nkind = \"s3\"\n").unwrap()[0];
        assert_eq!(s3.max_retry_attempts, Some(2));
    }

    #[test]
    fn mistakes_are_named() {
        let error = |text: &str| parse(text).unwrap_err();
        let e = error("[[event-sources]]\nstream = \"q\"\nkind = \"sqs\"\nbatch-size = 11\n");
        assert!(e.contains("batch-size = 11 is out of range 1..=10"), "{e}");
        let e = error("[[event-sources]]\nstream = \"o\"\nkind = \"kinesis\"\nbatch-size = 0\n");
        assert!(e.contains("batch-size = 0"), "{e}");
        let e = error("[[event-sources]]\nstream = \"o\"\nkind = \"kafka\"\n");
        assert!(e.contains("kafka"), "{e}");
        let e = error("[[event-sources]]\nstream = \"o\"\nkind = \"kinesis\"\nbatchsize = 3\n");
        assert!(e.contains("batchsize"), "{e}");
        let e =
            error("[[event-sources]]\nstream = \"o\"\nkind = \"kinesis\"\non-failure = \"a/b\"\n");
        assert!(e.contains("on-failure"), "{e}");
        let e = error(
            "[[event-sources]]\nstream = \"q\"\nkind = \"sqs\"\nbisect-batch-on-error = true\n",
        );
        assert!(e.contains("does not apply to sqs"), "{e}");
        let e = error("[[event-sources]]\nstream = \"q\"\nkind = \"sqs\"\nmax-receive-count = 3\n");
        assert!(e.contains("needs on-failure"), "{e}");
        let e = error("[[event-sources]]\nstream = \"o\"\nkind = \"kinesis\"\n[[event-sources]]\nstream = \"o\"\nkind = \"kinesis\"\n");
        assert!(e.contains("two mappings"), "{e}");
    }
}
