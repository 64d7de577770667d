//! Unit testing a plugin natively (`cargo test -p <plugin>`).
//!
//! Outside WebAssembly there is no host: [`config`](crate::config) reads
//! the values set here and [`log`](crate::log()) keeps its lines for
//! [`logs`]. Both are per thread, and Rust runs each test on its own
//! thread, so tests do not see each other's settings.
//!
//! ```
//! use triggerfish_sdk::pre_sign_up::{Guest, Request, Response};
//! use triggerfish_sdk::testing;
//!
//! # struct Plugin;
//! # impl Guest for Plugin {
//! #     fn handle(_: triggerfish_sdk::Context, _: Request, r: Response) -> Result<Response, String> {
//! #         triggerfish_sdk::config::require("domains")?;
//! #         Ok(r)
//! #     }
//! # }
//! testing::set_config([("domains", "spam.test")]);
//! let request = Request {
//!     user_attributes: testing::map([("email", "jane@example.com")]),
//!     ..Default::default()
//! };
//! let context = testing::context("PreSignUp_SignUp");
//! assert!(Plugin::handle(context, request, Response::default()).is_ok());
//! ```
//!
//! Through the real host, plugins are tested by loading their `.wasm`
//! (see `tests/all/plugins.rs` in this repository).

use crate::{CallerContext, Context, Level};
use std::cell::RefCell;
use std::collections::BTreeMap;

thread_local! {
    static CONFIG: RefCell<BTreeMap<String, String>> = const { RefCell::new(BTreeMap::new()) };
    static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
}

/// Replaces this thread's plugin config with `pairs`.
pub fn set_config<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) {
    let config = pairs
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    CONFIG.with(|c| *c.borrow_mut() = config);
}

/// Takes the lines logged on this thread so far.
pub fn logs() -> Vec<(Level, String)> {
    LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

/// A context as Cognito would send it for `trigger_source`, with sample
/// values (`us-east-1`, user `jane`).
pub fn context(trigger_source: &str) -> Context {
    Context {
        version: "1".to_owned(),
        trigger_source: trigger_source.to_owned(),
        region: "us-east-1".to_owned(),
        user_pool_id: "us-east-1_EXAMPLE".to_owned(),
        user_name: Some("jane".to_owned()),
        caller_context: CallerContext {
            aws_sdk_version: Some("aws-sdk-unknown".to_owned()),
            client_id: Some("client-1".to_owned()),
        },
    }
}

/// One step of a custom auth session: `challenge_name`, answered right or
/// not.
pub fn challenge(name: &str, result: bool) -> crate::ChallengeResult {
    crate::ChallengeResult {
        challenge_name: name.to_owned(),
        challenge_result: result,
        challenge_metadata: None,
    }
}

/// A string map (`userAttributes`, `clientMetadata`, ...) from pairs.
pub fn map<K: Into<String>, V: Into<String>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Vec<(String, String)> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

/// A Kinesis record with sequence number `sequence_number` and payload
/// `data`, the rest sample values (partition key `key-1`).
pub fn kinesis_record(sequence_number: &str, data: &[u8]) -> crate::kinesis::KinesisRecord {
    crate::kinesis::KinesisRecord {
        kinesis: crate::kinesis::KinesisData {
            kinesis_schema_version: "1.0".to_owned(),
            partition_key: "key-1".to_owned(),
            sequence_number: sequence_number.to_owned(),
            data: data.to_vec(),
            approximate_arrival_timestamp: 1_700_000_000.0,
            encryption_type: None,
        },
        event_source: "aws:kinesis".to_owned(),
        event_version: "1.0".to_owned(),
        event_id: format!("shardId-000000000000:{sequence_number}"),
        event_name: "aws:kinesis:record".to_owned(),
        invoke_identity_arn: None,
        aws_region: "us-east-1".to_owned(),
        event_source_arn: "arn:aws:kinesis:us-east-1:000000000000:stream/sample".to_owned(),
    }
}

/// A DynamoDB `INSERT` with sequence number `sequence_number` and the new
/// image `new_image` (DynamoDB JSON text, such as
/// `{"Id":{"N":"1"}}`), keyed by the image.
pub fn dynamodb_record(
    sequence_number: &str,
    new_image: &str,
) -> crate::dynamodb_stream::DynamodbRecord {
    crate::dynamodb_stream::DynamodbRecord {
        event_id: format!("event-{sequence_number}"),
        event_name: crate::dynamodb_stream::EventName::Insert,
        event_version: "1.1".to_owned(),
        event_source: "aws:dynamodb".to_owned(),
        aws_region: "us-east-1".to_owned(),
        dynamodb: crate::dynamodb_stream::StreamRecord {
            approximate_creation_date_time: Some(1_700_000_000.0),
            keys: new_image.to_owned(),
            new_image: Some(new_image.to_owned()),
            old_image: None,
            sequence_number: sequence_number.to_owned(),
            size_bytes: new_image.len() as u64,
            stream_view_type: "NEW_AND_OLD_IMAGES".to_owned(),
        },
        event_source_arn: "arn:aws:dynamodb:us-east-1:000000000000:table/sample/stream/0"
            .to_owned(),
    }
}

/// An SQS message with id `message_id` and body `body`, received once.
pub fn sqs_message(message_id: &str, body: &str) -> crate::sqs::Message {
    crate::sqs::Message {
        message_id: message_id.to_owned(),
        receipt_handle: format!("receipt-{message_id}"),
        body: body.to_owned(),
        attributes: map([("ApproximateReceiveCount", "1")]),
        message_attributes: Vec::new(),
        md5_of_body: String::new(),
        md5_of_message_attributes: None,
        event_source: "aws:sqs".to_owned(),
        event_source_arn: "arn:aws:sqs:us-east-1:000000000000:sample".to_owned(),
        aws_region: "us-east-1".to_owned(),
    }
}

/// An S3 `ObjectCreated:Put` of `key` in bucket `sample`.
pub fn s3_record(key: &str) -> crate::s3::S3Record {
    crate::s3::S3Record {
        event_version: "2.1".to_owned(),
        event_source: "aws:s3".to_owned(),
        aws_region: "us-east-1".to_owned(),
        event_time: "2026-01-01T00:00:00.000Z".to_owned(),
        event_name: "ObjectCreated:Put".to_owned(),
        user_identity: None,
        request_parameters: Vec::new(),
        response_elements: Vec::new(),
        s3: crate::s3::Entity {
            s3_schema_version: "1.0".to_owned(),
            configuration_id: "sample".to_owned(),
            bucket: crate::s3::Bucket {
                name: "sample".to_owned(),
                owner_identity: None,
                arn: "arn:aws:s3:::sample".to_owned(),
            },
            object: crate::s3::Object {
                key: key.to_owned(),
                size: Some(0),
                e_tag: None,
                version_id: None,
                sequencer: None,
            },
        },
    }
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn config_get(key: &str) -> Option<String> {
    CONFIG.with(|c| c.borrow().get(key).cloned())
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn config_keys() -> Vec<String> {
    CONFIG.with(|c| c.borrow().keys().cloned().collect())
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn record_log(level: Level, message: &str) {
    eprintln!("[{level:?}] {message}");
    LOGS.with(|l| l.borrow_mut().push((level, message.to_owned())));
}
