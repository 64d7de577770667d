//! Test guest: serves every stream-record source and decides each record
//! by its payload (Kinesis data, SQS body, DynamoDB new image, S3 object
//! key), so tests can script a batch's outcome record by record:
//! - `fail`: the record is reported failed;
//! - `batch-error`: the whole batch fails (the handler's error);
//! - `garbage`: reports an identifier that is not in the batch;
//! - `trap`: panics; `loop`: never returns; `sleep`: takes 3 s (a sleep,
//!   within the default 5 s budget), so a test can kill a host mid-batch;
//! - `echo`: fails the batch with a JSON description of every record as
//!   the plugin received it, for tests of the event's shape (so does any
//!   batch when the plugin's config sets `echo = "true"`).
//!
//! Every record it is given is logged at info level as `record <id>`.

use serde_json::{json, Value};
use triggerfish_sdk::{config, dynamodb_stream, info, kinesis, s3, sqs};

struct Probe;

/// What the probe does with one batch, given each record's identifier
/// and payload.
fn decide<'a>(
    records: impl Iterator<Item = (&'a str, String)> + Clone,
    echo: impl FnOnce() -> Vec<Value>,
) -> Result<Vec<String>, String> {
    if config::flag("echo") || records.clone().any(|(_, payload)| payload.contains("echo")) {
        return Err(Value::Array(echo()).to_string());
    }
    let mut failed = Vec::new();
    for (id, payload) in records {
        info!("record {id}");
        if payload.contains("batch-error") {
            return Err(format!("record {id} fails the batch"));
        }
        if payload.contains("garbage") {
            failed.push(format!("not-{id}"));
        } else if payload.contains("trap") {
            panic!("record {id} traps");
        } else if payload.contains("sleep") {
            std::thread::sleep(std::time::Duration::from_secs(3));
        } else if payload.contains("loop") {
            #[allow(clippy::empty_loop)]
            loop {}
        } else if payload.contains("fail") {
            failed.push(id.to_owned());
        }
    }
    Ok(failed)
}

impl kinesis::Guest for Probe {
    fn handle(records: Vec<kinesis::KinesisRecord>) -> Result<Vec<String>, String> {
        let echo = || {
            let echo = |r: &kinesis::KinesisRecord| {
                json!({
                    "partitionKey": r.kinesis.partition_key,
                    "sequenceNumber": r.kinesis.sequence_number,
                    "data": String::from_utf8_lossy(&r.kinesis.data),
                    "approximateArrivalTimestamp": r.kinesis.approximate_arrival_timestamp,
                    "kinesisSchemaVersion": r.kinesis.kinesis_schema_version,
                    "eventID": r.event_id,
                    "eventName": r.event_name,
                    "eventSourceARN": r.event_source_arn,
                    "awsRegion": r.aws_region,
                })
            };
            records.iter().map(echo).collect()
        };
        decide(
            records.iter().map(|r| {
                let data = String::from_utf8_lossy(&r.kinesis.data).into_owned();
                (r.kinesis.sequence_number.as_str(), data)
            }),
            echo,
        )
    }
}

impl dynamodb_stream::Guest for Probe {
    fn handle(records: Vec<dynamodb_stream::DynamodbRecord>) -> Result<Vec<String>, String> {
        let echo = || {
            let image = |text: &Option<String>| {
                text.as_deref()
                    .map(|t| dynamodb_stream::unmarshall(t).unwrap_or_else(Value::String))
            };
            let echo = |r: &dynamodb_stream::DynamodbRecord| {
                json!({
                    "eventID": r.event_id,
                    "eventName": r.event_name.as_str(),
                    "keys": dynamodb_stream::unmarshall(&r.dynamodb.keys).unwrap_or_else(Value::String),
                    "newImage": image(&r.dynamodb.new_image),
                    "oldImage": image(&r.dynamodb.old_image),
                    "sequenceNumber": r.dynamodb.sequence_number,
                    "sizeBytes": r.dynamodb.size_bytes,
                    "streamViewType": r.dynamodb.stream_view_type,
                    "approximateCreationDateTime": r.dynamodb.approximate_creation_date_time,
                    "eventSourceARN": r.event_source_arn,
                })
            };
            records.iter().map(echo).collect()
        };
        decide(
            records.iter().map(|r| {
                let image = r.dynamodb.new_image.clone().unwrap_or_default();
                (r.dynamodb.sequence_number.as_str(), image)
            }),
            echo,
        )
    }
}

impl sqs::Guest for Probe {
    fn handle(records: Vec<sqs::Message>) -> Result<Vec<String>, String> {
        let echo = || {
            let echo = |m: &sqs::Message| {
                let attributes: serde_json::Map<String, Value> = m
                    .message_attributes
                    .iter()
                    .map(|(name, a)| {
                        let value = json!({
                            "dataType": a.data_type,
                            "stringValue": a.string_value,
                            "binaryValue": a.binary_value,
                            "stringListValues": a.string_list_values,
                            "binaryListValues": a.binary_list_values,
                        });
                        (name.clone(), value)
                    })
                    .collect();
                json!({
                    "messageId": m.message_id,
                    "receiptHandle": m.receipt_handle,
                    "body": m.body,
                    "attributes": m.attributes.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                    "messageAttributes": attributes,
                    "md5OfBody": m.md5_of_body,
                    "eventSourceARN": m.event_source_arn,
                })
            };
            records.iter().map(echo).collect()
        };
        decide(
            records
                .iter()
                .map(|m| (m.message_id.as_str(), m.body.clone())),
            echo,
        )
    }
}

impl s3::Guest for Probe {
    fn handle(records: Vec<s3::S3Record>) -> Result<(), String> {
        let echo = || {
            let echo = |r: &s3::S3Record| {
                json!({
                    "eventName": r.event_name,
                    "eventTime": r.event_time,
                    "bucket": r.s3.bucket.name,
                    "bucketArn": r.s3.bucket.arn,
                    "key": r.s3.object.key,
                    "size": r.s3.object.size,
                    "eTag": r.s3.object.e_tag,
                    "sequencer": r.s3.object.sequencer,
                    "principalId": r.user_identity.as_ref().map(|u| &u.principal_id),
                })
            };
            records.iter().map(echo).collect()
        };
        let failed = decide(
            records
                .iter()
                .map(|r| (r.s3.object.key.as_str(), r.s3.object.key.clone())),
            echo,
        )?;
        match failed.first() {
            Some(key) => Err(format!("object {key} failed")),
            None => Ok(()),
        }
    }
}

triggerfish_sdk::export!(Probe: kinesis, dynamodb_stream, sqs, s3);
