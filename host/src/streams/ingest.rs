//! The bodies `POST /v1/tenants/{t}/streams/{stream}/records` accepts,
//! checked strictly and turned into records to append.
//!
//! | kind | body |
//! |---|---|
//! | kinesis | PutRecords: `{"Records": [{"Data": "<base64>", "PartitionKey": "k"}]}` |
//! | dynamodb | `{"Records": [{"eventName": "INSERT", "Keys": {..}, "NewImage": {..}, "OldImage": {..}}], "StreamViewType": "NEW_AND_OLD_IMAGES"}` |
//! | sqs | SendMessageBatch-like: `{"Messages": [{"Body": "..", "MessageAttributes": {"a": {"DataType": "String", "StringValue": ".."}}}]}` |
//! | s3 | the notification an S3-compatible store (MinIO) posts to a webhook: `{"EventName", "Key", "Records": [..]}` |

use super::engine::NewRecord;
use super::StreamKind;
use base64::Engine as _;
use serde_json::{json, Map, Value};

/// Records in one request at most (PutRecords's limit).
pub const MAX_RECORDS_PER_REQUEST: usize = 500;
/// Bytes of one Kinesis record at most: its data decoded plus its
/// partition key (Kinesis's 1 MiB).
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Bytes of one SQS message body, DynamoDB change or S3 record at most
/// (SQS's 256 KiB; a DynamoDB item is at most 400 KB, so a change with two
/// images fits in 1 MiB).
pub const MAX_MESSAGE_BYTES: usize = 256 << 10;
pub const MAX_CHANGE_BYTES: usize = 1 << 20;
/// Bytes of record data in one request at most (PutRecords's 5 MiB).
pub const MAX_REQUEST_DATA_BYTES: usize = 5 << 20;
/// The largest request body: 5 MiB of data in base64 (6.7 MiB) and the
/// JSON around it.
pub const MAX_BODY_BYTES: usize = 8 << 20;
/// The longest partition key (Kinesis's).
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// A body the route refuses, with the name of what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestError {
    /// `invalid-records`, `too-many-records`, `record-too-large`,
    /// `payload-too-large`, or `kind-mismatch`.
    pub kind: &'static str,
    pub message: String,
}

fn invalid(message: impl Into<String>) -> IngestError {
    IngestError {
        kind: "invalid-records",
        message: message.into(),
    }
}

/// The kind a body's shape is written for, if it says.
pub fn kind_of_body(body: &Value) -> Option<StreamKind> {
    if body.get("Messages").is_some() {
        return Some(StreamKind::Sqs);
    }
    let first = body.get("Records")?.as_array()?.first()?;
    if first.get("Data").is_some() || first.get("PartitionKey").is_some() {
        Some(StreamKind::Kinesis)
    } else if first.get("Keys").is_some() || first.get("NewImage").is_some() {
        Some(StreamKind::Dynamodb)
    } else if first.get("s3").is_some() {
        Some(StreamKind::S3)
    } else {
        None
    }
}

/// The records `body` asks to append to a stream of `kind`.
pub fn parse(kind: StreamKind, body: &Value) -> Result<Vec<NewRecord>, IngestError> {
    if let Some(written) = kind_of_body(body).filter(|k| *k != kind) {
        return Err(IngestError {
            kind: "kind-mismatch",
            message: format!(
                "the stream is a {kind} stream, and this body is written for a {written} stream"
            ),
        });
    }
    let object = body
        .as_object()
        .ok_or_else(|| invalid("the body must be a JSON object"))?;
    let (list_key, allowed): (&str, &[&str]) = match kind {
        StreamKind::Kinesis => ("Records", &["Records", "StreamName", "StreamARN"]),
        StreamKind::Dynamodb => ("Records", &["Records", "StreamViewType"]),
        StreamKind::Sqs => ("Messages", &["Messages", "QueueUrl"]),
        StreamKind::S3 => ("Records", &["Records", "EventName", "Key"]),
    };
    if let Some(unknown) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown key {unknown:?}; a {kind} body has {}",
            allowed.join(", ")
        )));
    }
    let list = object
        .get(list_key)
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(format!("a {kind} body needs {list_key:?}, a list")))?;
    if list.is_empty() {
        return Err(invalid(format!("{list_key} is empty")));
    }
    if list.len() > MAX_RECORDS_PER_REQUEST {
        return Err(IngestError {
            kind: "too-many-records",
            message: format!(
                "{} records in one request; the limit is {MAX_RECORDS_PER_REQUEST}",
                list.len()
            ),
        });
    }
    let view_type = match object.get("StreamViewType") {
        None => "NEW_AND_OLD_IMAGES",
        Some(Value::String(v))
            if ["KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES"]
                .contains(&v.as_str()) =>
        {
            v
        }
        Some(other) => {
            return Err(invalid(format!(
            "StreamViewType {other} is not KEYS_ONLY, NEW_IMAGE, OLD_IMAGE or NEW_AND_OLD_IMAGES"
        )))
        }
    };
    let mut total = 0usize;
    let mut records = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let at = format!("{list_key}[{i}]");
        let item = item
            .as_object()
            .ok_or_else(|| invalid(format!("{at} must be an object")))?;
        let (record, size) = match kind {
            StreamKind::Kinesis => kinesis(&at, item)?,
            StreamKind::Dynamodb => dynamodb(&at, item, view_type)?,
            StreamKind::Sqs => sqs(&at, item)?,
            StreamKind::S3 => s3(&at, item)?,
        };
        total += size;
        records.push(record);
    }
    if total > MAX_REQUEST_DATA_BYTES {
        return Err(IngestError {
            kind: "payload-too-large",
            message: format!(
                "{total} bytes of record data in one request; the limit is {MAX_REQUEST_DATA_BYTES}"
            ),
        });
    }
    Ok(records)
}

fn only_keys(at: &str, item: &Map<String, Value>, allowed: &[&str]) -> Result<(), IngestError> {
    match item.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(invalid(format!(
            "{at}: unknown key {unknown:?}; expected {}",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

fn too_large(at: &str, size: usize, limit: usize) -> IngestError {
    IngestError {
        kind: "record-too-large",
        message: format!("{at} is {size} bytes; the limit is {limit}"),
    }
}

fn kinesis(at: &str, item: &Map<String, Value>) -> Result<(NewRecord, usize), IngestError> {
    only_keys(at, item, &["Data", "PartitionKey", "ExplicitHashKey"])?;
    if item.contains_key("ExplicitHashKey") {
        return Err(invalid(format!(
            "{at}: ExplicitHashKey is not supported; records are placed by PartitionKey"
        )));
    }
    let key = match item.get("PartitionKey") {
        Some(Value::String(k)) if !k.is_empty() && k.chars().count() <= MAX_PARTITION_KEY_CHARS => {
            k
        }
        Some(Value::String(_)) => {
            return Err(invalid(format!(
                "{at}.PartitionKey must be 1 to {MAX_PARTITION_KEY_CHARS} characters"
            )))
        }
        Some(_) => return Err(invalid(format!("{at}.PartitionKey must be a string"))),
        None => return Err(invalid(format!("{at}: missing PartitionKey"))),
    };
    let data = match item.get("Data") {
        Some(Value::String(d)) => d,
        Some(_) => return Err(invalid(format!("{at}.Data must be a base64 string"))),
        None => return Err(invalid(format!("{at}: missing Data"))),
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| invalid(format!("{at}.Data is not valid base64: {e}")))?;
    let size = decoded.len() + key.len();
    if size > MAX_RECORD_BYTES {
        return Err(too_large(at, size, MAX_RECORD_BYTES));
    }
    Ok((
        NewRecord {
            key: key.clone(),
            body: json!({"data": data}),
        },
        size,
    ))
}

fn dynamodb(
    at: &str,
    item: &Map<String, Value>,
    view_type: &str,
) -> Result<(NewRecord, usize), IngestError> {
    only_keys(at, item, &["eventName", "Keys", "NewImage", "OldImage"])?;
    let event_name = match item.get("eventName").and_then(Value::as_str) {
        Some(name @ ("INSERT" | "MODIFY" | "REMOVE")) => name,
        Some(other) => {
            return Err(invalid(format!(
                "{at}.eventName {other:?} is not INSERT, MODIFY or REMOVE"
            )))
        }
        None => {
            return Err(invalid(format!(
                "{at}: missing eventName (INSERT, MODIFY or REMOVE)"
            )))
        }
    };
    let attribute_map = |name: &str, required: bool| -> Result<Option<&Value>, IngestError> {
        match item.get(name) {
            Some(Value::Object(map)) if !map.is_empty() || name != "Keys" => Ok(item.get(name)),
            Some(Value::Null) | None if !required => Ok(None),
            Some(_) => Err(invalid(format!(
                "{at}.{name} must be a map of DynamoDB attribute values, like {{\"Id\": {{\"N\": \"1\"}}}}"
            ))),
            None => Err(invalid(format!("{at}: missing {name} (needed for {event_name})"))),
        }
    };
    let keys = attribute_map("Keys", true)?.expect("required");
    let new_image = attribute_map("NewImage", event_name != "REMOVE")?;
    let old_image = attribute_map("OldImage", false)?;
    if event_name == "REMOVE" && new_image.is_some() {
        return Err(invalid(format!("{at}: a REMOVE has no NewImage")));
    }
    // What the stream keeps of each change depends on its view type.
    let keep_new = matches!(view_type, "NEW_IMAGE" | "NEW_AND_OLD_IMAGES");
    let keep_old = matches!(view_type, "OLD_IMAGE" | "NEW_AND_OLD_IMAGES");
    let mut body = json!({"eventName": event_name, "Keys": keys, "StreamViewType": view_type});
    if let (true, Some(image)) = (keep_new, new_image) {
        body["NewImage"] = image.clone();
    }
    if let (true, Some(image)) = (keep_old, old_image) {
        body["OldImage"] = image.clone();
    }
    let size = body.to_string().len();
    if size > MAX_CHANGE_BYTES {
        return Err(too_large(at, size, MAX_CHANGE_BYTES));
    }
    Ok((
        NewRecord {
            key: canonical(keys),
            body,
        },
        size,
    ))
}

/// JSON with object keys sorted, so equal DynamoDB keys give one partition key.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&map[*k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

fn sqs(at: &str, item: &Map<String, Value>) -> Result<(NewRecord, usize), IngestError> {
    only_keys(at, item, &["Body", "MessageAttributes", "Id"])?;
    let body = match item.get("Body") {
        Some(Value::String(b)) if !b.is_empty() => b,
        Some(Value::String(_)) => return Err(invalid(format!("{at}.Body is empty"))),
        Some(_) => return Err(invalid(format!("{at}.Body must be a string"))),
        None => return Err(invalid(format!("{at}: missing Body"))),
    };
    let mut attributes = Map::new();
    let mut size = body.len();
    if let Some(given) = item.get("MessageAttributes") {
        let given = given
            .as_object()
            .ok_or_else(|| invalid(format!("{at}.MessageAttributes must be an object")))?;
        if given.len() > 10 {
            return Err(invalid(format!(
                "{at}.MessageAttributes has {} attributes; SQS allows 10",
                given.len()
            )));
        }
        for (name, attribute) in given {
            let where_ = format!("{at}.MessageAttributes.{name}");
            let attribute = attribute
                .as_object()
                .ok_or_else(|| invalid(format!("{where_} must be an object")))?;
            only_keys(
                &where_,
                attribute,
                &["DataType", "StringValue", "BinaryValue"],
            )?;
            let data_type = attribute
                .get("DataType")
                .and_then(Value::as_str)
                .filter(|t| {
                    ["String", "Number", "Binary"]
                        .iter()
                        .any(|p| t.starts_with(p))
                })
                .ok_or_else(|| {
                    invalid(format!(
                        "{where_}.DataType must be String, Number or Binary"
                    ))
                })?;
            let string = attribute.get("StringValue").and_then(Value::as_str);
            let binary = attribute.get("BinaryValue").and_then(Value::as_str);
            if string.is_none() == binary.is_none() {
                return Err(invalid(format!(
                    "{where_} needs one of StringValue or BinaryValue"
                )));
            }
            if let Some(binary) = binary {
                base64::engine::general_purpose::STANDARD
                    .decode(binary)
                    .map_err(|e| {
                        invalid(format!("{where_}.BinaryValue is not valid base64: {e}"))
                    })?;
            }
            size += name.len() + data_type.len() + string.or(binary).map_or(0, str::len);
            attributes.insert(
                name.clone(),
                json!({
                    "stringValue": string,
                    "binaryValue": binary,
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": data_type,
                }),
            );
        }
    }
    if size > MAX_MESSAGE_BYTES {
        return Err(too_large(at, size, MAX_MESSAGE_BYTES));
    }
    Ok((
        NewRecord {
            key: String::new(),
            body: json!({"body": body, "messageAttributes": attributes}),
        },
        size,
    ))
}

fn s3(at: &str, item: &Map<String, Value>) -> Result<(NewRecord, usize), IngestError> {
    let text = |path: &[&str]| -> Result<&str, IngestError> {
        let mut value = item.get(path[0]);
        for key in &path[1..] {
            value = value.and_then(|v| v.get(*key));
        }
        value
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("{at}.{} must be a string", path.join("."))))
    };
    text(&["eventName"])?;
    let bucket = text(&["s3", "bucket", "name"])?;
    let key = text(&["s3", "object", "key"])?;
    let size = Value::Object(item.clone()).to_string().len();
    if size > MAX_MESSAGE_BYTES {
        return Err(too_large(at, size, MAX_MESSAGE_BYTES));
    }
    Ok((
        NewRecord {
            key: format!("{bucket}/{key}"),
            body: Value::Object(item.clone()),
        },
        size,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(kind: StreamKind, body: Value) -> IngestError {
        parse(kind, &body).unwrap_err()
    }

    #[test]
    fn bad_bodies_are_named() {
        let k = StreamKind::Kinesis;
        let e = error(k, json!({"Records": [{"Data": "!!", "PartitionKey": "a"}]}));
        assert!(
            e.message.contains("Records[0].Data is not valid base64"),
            "{e:?}"
        );
        let e = error(k, json!({"Records": [{"Data": "aGk="}]}));
        assert!(e.message.contains("missing PartitionKey"), "{e:?}");
        let many: Vec<Value> = (0..501)
            .map(|_| json!({"Data": "aGk=", "PartitionKey": "a"}))
            .collect();
        assert_eq!(error(k, json!({"Records": many})).kind, "too-many-records");
        let e = error(k, json!({"Messages": [{"Body": "x"}]}));
        assert_eq!(e.kind, "kind-mismatch");
        let e = error(
            StreamKind::Dynamodb,
            json!({"Records": [{"eventName": "INSERT", "Keys": {"Id": {"N": "1"}}}]}),
        );
        assert!(e.message.contains("missing NewImage"), "{e:?}");
        let e = error(
            StreamKind::Sqs,
            json!({"Messages": [{"Body": "x", "Delay": 3}]}),
        );
        assert!(e.message.contains("\"Delay\""), "{e:?}");
    }

    #[test]
    fn equal_keys_share_a_partition_key() {
        let a = canonical(&json!({"b": {"S": "x"}, "a": {"N": "1"}}));
        let b = canonical(&json!({"a": {"N": "1"}, "b": {"S": "x"}}));
        assert_eq!(a, b);
    }
}
