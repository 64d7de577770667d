//! A stored record as the record of a Lambda event of its kind, and the
//! records a failure destination gets; the shapes are Lambda's (checked
//! against `aws_lambda_events` in the tests).
//!
//! ARNs name the tenant where AWS puts the account and the stream where
//! AWS puts the resource, in a partition of their own (`triggerfish`) and
//! the region `local`:
//!
//! | kind | `eventSourceARN` |
//! |---|---|
//! | kinesis | `arn:triggerfish:kinesis:local:<tenant>:stream/<stream>` |
//! | dynamodb | `arn:triggerfish:dynamodb:local:<tenant>:table/<stream>/stream/0` |
//! | sqs | `arn:triggerfish:sqs:local:<tenant>:<stream>` |
//! | s3 | (S3 records carry the bucket's ARN instead) |

use super::engine::StoredRecord;
use super::{StreamId, StreamKind};
use md5::{Digest, Md5};
use serde_json::{json, Map, Value};

/// The region every record names.
pub const REGION: &str = "local";

/// The ARN of a stream, as `eventSourceARN`.
pub fn source_arn(id: &StreamId, kind: StreamKind) -> String {
    let (tenant, stream) = (&id.tenant, &id.stream);
    match kind {
        StreamKind::Kinesis => format!("arn:triggerfish:kinesis:{REGION}:{tenant}:stream/{stream}"),
        StreamKind::Dynamodb => {
            format!("arn:triggerfish:dynamodb:{REGION}:{tenant}:table/{stream}/stream/0")
        }
        StreamKind::Sqs => format!("arn:triggerfish:sqs:{REGION}:{tenant}:{stream}"),
        StreamKind::S3 => format!("arn:triggerfish:s3:{REGION}:{tenant}:{stream}"),
    }
}

/// The function an event source mapping invokes: the tenant's chain.
pub fn function_arn(tenant: &str) -> String {
    format!("arn:triggerfish:lambda:{REGION}:{tenant}:function:{tenant}")
}

/// Kinesis's name for a partition.
pub fn shard_id(partition: u32) -> String {
    format!("shardId-{partition:012}")
}

/// A stable message id (UUID-shaped) for a queue message.
pub fn message_id(id: &StreamId, seq: u64) -> String {
    let hex = hex(&Md5::digest(format!("{}/{seq}", id.key()).as_bytes()));
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

pub fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A queue message's receive state, for SQS's `attributes`.
#[derive(Debug, Clone, Copy)]
pub struct Receipt {
    pub receive_count: u32,
    pub first_receive_ms: u64,
}

/// The record as Lambda delivers it for `kind`.
pub fn lambda_record(
    id: &StreamId,
    kind: StreamKind,
    record: &StoredRecord,
    receipt: Option<Receipt>,
) -> Value {
    let seq = record.seq.to_string();
    match kind {
        StreamKind::Kinesis => json!({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": record.key,
                "sequenceNumber": seq,
                "data": record.body["data"],
                "approximateArrivalTimestamp": record.arrived_ms as f64 / 1000.0,
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": format!("{}:{seq}", shard_id(record.partition)),
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": format!("arn:triggerfish:iam::{}:role/event-source", id.tenant),
            "awsRegion": REGION,
            "eventSourceARN": source_arn(id, kind),
        }),
        StreamKind::Dynamodb => {
            let body = &record.body;
            let mut dynamodb = Map::new();
            dynamodb.insert(
                "ApproximateCreationDateTime".into(),
                json!((record.arrived_ms / 1000) as f64),
            );
            dynamodb.insert("Keys".into(), body["Keys"].clone());
            for image in ["NewImage", "OldImage"] {
                if let Some(value) = body.get(image).filter(|v| !v.is_null()) {
                    dynamodb.insert(image.into(), value.clone());
                }
            }
            dynamodb.insert("SequenceNumber".into(), json!(seq));
            let size = ["Keys", "NewImage", "OldImage"]
                .iter()
                .filter_map(|k| body.get(*k).filter(|v| !v.is_null()))
                .map(|v| v.to_string().len())
                .sum::<usize>();
            dynamodb.insert("SizeBytes".into(), json!(size));
            dynamodb.insert("StreamViewType".into(), body["StreamViewType"].clone());
            json!({
                "eventID": md5_hex(format!("{}/{seq}", id.key()).as_bytes()),
                "eventName": body["eventName"],
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": REGION,
                "dynamodb": dynamodb,
                "eventSourceARN": source_arn(id, kind),
            })
        }
        StreamKind::Sqs => {
            let body = record.body["body"].as_str().unwrap_or_default();
            let receipt = receipt.unwrap_or(Receipt {
                receive_count: 0,
                first_receive_ms: 0,
            });
            let message_id = message_id(id, record.seq);
            json!({
                "messageId": message_id,
                "receiptHandle": format!("{message_id}:{}", receipt.receive_count),
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": receipt.receive_count.to_string(),
                    "SentTimestamp": record.arrived_ms.to_string(),
                    "SenderId": id.tenant,
                    "ApproximateFirstReceiveTimestamp": receipt.first_receive_ms.to_string(),
                },
                "messageAttributes": record.body.get("messageAttributes").cloned().unwrap_or_else(|| json!({})),
                "md5OfBody": md5_hex(body.as_bytes()),
                "eventSource": "aws:sqs",
                "eventSourceARN": source_arn(id, kind),
                "awsRegion": REGION,
            })
        }
        StreamKind::S3 => record.body.clone(),
    }
}

/// The identifier a partial batch response names a record by: the
/// sequence number (Kinesis, DynamoDB) or the message id (SQS).
pub fn item_identifier(kind: StreamKind, record: &Value) -> Option<&str> {
    match kind {
        StreamKind::Kinesis => record["kinesis"]["sequenceNumber"].as_str(),
        StreamKind::Dynamodb => record["dynamodb"]["SequenceNumber"].as_str(),
        StreamKind::Sqs => record["messageId"].as_str(),
        StreamKind::S3 => None,
    }
}

/// Why records were given up on, in Lambda's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    RetryAttemptsExhausted,
    RecordAgeExceeded,
    /// Asynchronous (S3): the retries ran out, or the event got too old.
    RetriesExhausted,
    EventAgeExceeded,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::RetryAttemptsExhausted => "RetryAttemptsExhausted",
            Condition::RecordAgeExceeded => "RecordAgeExceeded",
            Condition::RetriesExhausted => "RetriesExhausted",
            Condition::EventAgeExceeded => "EventAgeExceeded",
        }
    }
}

/// The last error of a failed delivery, for `responseContext`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// `partial-failure`, or the chain error's kind (`trap`, `timeout`...).
    pub kind: String,
    pub message: String,
}

/// What the failure destination of an ordered stream gets for records
/// given up on: Lambda's on-failure record (`KinesisBatchInfo` or
/// `DDBStreamBatchInfo`), with the records themselves under `Records`.
pub fn ordered_failure(
    id: &StreamId,
    kind: StreamKind,
    records: &[StoredRecord],
    condition: Condition,
    invocations: u32,
    error: Option<&LastError>,
) -> Value {
    let (first, last) = (&records[0], &records[records.len() - 1]);
    let info = json!({
        "shardId": shard_id(first.partition),
        "startSequenceNumber": first.seq.to_string(),
        "endSequenceNumber": last.seq.to_string(),
        "approximateArrivalOfFirstRecord": iso8601(first.arrived_ms),
        "approximateArrivalOfLastRecord": iso8601(last.arrived_ms),
        "batchSize": records.len(),
        "streamArn": source_arn(id, kind),
    });
    let info_key = if kind == StreamKind::Dynamodb {
        "DDBStreamBatchInfo"
    } else {
        "KinesisBatchInfo"
    };
    let mut failure = failure_envelope(id, condition, invocations, error);
    failure.insert(info_key.into(), info);
    failure.insert(
        "Records".into(),
        records
            .iter()
            .map(|r| lambda_record(id, kind, r, None))
            .collect(),
    );
    Value::Object(failure)
}

/// What the failure destination of an S3 mapping gets for an event given
/// up on: Lambda's asynchronous invocation record.
pub fn async_failure(
    id: &StreamId,
    event: &Value,
    condition: Condition,
    invocations: u32,
    error: Option<&LastError>,
) -> Value {
    let mut failure = failure_envelope(id, condition, invocations, error);
    failure.insert("requestPayload".into(), event.clone());
    if let Some(error) = error {
        failure.insert(
            "responsePayload".into(),
            json!({"errorMessage": error.message, "errorType": error.kind}),
        );
    }
    Value::Object(failure)
}

fn failure_envelope(
    id: &StreamId,
    condition: Condition,
    invocations: u32,
    error: Option<&LastError>,
) -> Map<String, Value> {
    let now = super::now_ms();
    let mut map = Map::new();
    map.insert(
        "requestContext".into(),
        json!({
            "requestId": message_id(id, now ^ u64::from(invocations) << 48),
            "functionArn": function_arn(&id.tenant),
            "condition": condition.as_str(),
            "approximateInvokeCount": invocations,
        }),
    );
    map.insert(
        "responseContext".into(),
        json!({
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": error.map(|e| if e.kind == "partial-failure" { "PartialFailure" } else { "Unhandled" }),
            "errorKind": error.map(|e| e.kind.clone()),
            "errorMessage": error.map(|e| e.message.clone()),
        }),
    );
    map.insert("version".into(), json!("1.0"));
    map.insert("timestamp".into(), json!(iso8601(now)));
    map
}

/// Milliseconds since the Unix epoch as `2019-11-14T00:38:06.021Z`.
pub fn iso8601(ms: u64) -> String {
    crate::encoding::iso8601_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_ids() {
        assert_eq!(iso8601(1_573_691_886_021), "2019-11-14T00:38:06.021Z");
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        let id = StreamId::new("acme", "q");
        assert_eq!(message_id(&id, 1), message_id(&id, 1));
        assert_ne!(message_id(&id, 1), message_id(&id, 2));
        assert_eq!(message_id(&id, 1).len(), 36);
        assert_eq!(shard_id(3), "shardId-000000000003");
    }
}
