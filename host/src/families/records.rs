//! Stream records: a batch of Kinesis, DynamoDB stream, SQS or S3
//! records, as a Lambda event source mapping delivers it (`{"Records":
//! [...]}`). The batch is what the chain carries; each plugin answers with
//! the identifiers of the records that failed, which leave the batch, so
//! the next plugin sees only the records every plugin before it took. The
//! answer is Lambda's partial batch response, `{"batchItemFailures":
//! [{"itemIdentifier": "..."}]}`, in the batch's order.

use super::Part;
use crate::trigger::Trigger;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::collections::HashSet;
use wasmtime::component::Val;

pub(super) fn part(param: &str) -> Part {
    match param {
        "records" => Part::Carried("Records"),
        _ => Part::Top,
    }
}

/// The fields, from the record down, that name a record in a failure
/// report; none for S3, whose events fail whole.
fn identifier_path(trigger: Trigger) -> &'static [&'static str] {
    match trigger {
        Trigger::Kinesis => &["kinesis", "sequence-number"],
        Trigger::DynamodbStream => &["dynamodb", "sequence-number"],
        Trigger::Sqs => &["message-id"],
        _ => &[],
    }
}

/// The event as the contract reads it. DynamoDB's stream record spells
/// its keys in PascalCase and its keys and images are DynamoDB JSON, which
/// the contract carries as text. Timestamps in seconds may come as numeric
/// text, as the `aws_lambda_events` crate prints them; the contract reads
/// numbers. Everything else is read as it comes.
pub(super) fn prepare(trigger: Trigger, event: &Value) -> Cow<'_, Value> {
    let prepare_record: fn(&mut Value) = match trigger {
        Trigger::Kinesis => |record| {
            if let Some(kinesis) = record.get_mut("kinesis") {
                seconds_as_number(kinesis, "approximateArrivalTimestamp");
            }
        },
        Trigger::DynamodbStream => prepare_dynamodb_record,
        _ => return Cow::Borrowed(event),
    };
    let Some(records) = event.get("Records").and_then(Value::as_array) else {
        return Cow::Borrowed(event);
    };
    let mut records = records.clone();
    records.iter_mut().for_each(prepare_record);
    Cow::Owned(json!({ "Records": records }))
}

/// Reads a timestamp given as numeric text (`"1480641523.477"`) as the
/// number it is; anything else is left for the contract to judge.
fn seconds_as_number(object: &mut Value, key: &str) {
    let Some(value) = object.get_mut(key) else {
        return;
    };
    if let Some(number) = value.as_str().and_then(|s| s.parse::<f64>().ok()) {
        if let Some(number) = serde_json::Number::from_f64(number) {
            *value = Value::Number(number);
        }
    }
}

fn prepare_dynamodb_record(record: &mut Value) {
    if let Some(Value::Object(stream)) = record.get_mut("dynamodb") {
        let prepared: Map<String, Value> = std::mem::take(stream)
            .into_iter()
            .map(|(key, value)| {
                let value = match (key.as_str(), value) {
                    ("Keys" | "NewImage" | "OldImage", Value::Object(image)) => {
                        Value::String(Value::Object(image).to_string())
                    }
                    (_, value) => value,
                };
                (lower_first(&key), value)
            })
            .collect();
        *stream = prepared;
        if let Some(stream) = record.get_mut("dynamodb") {
            seconds_as_number(stream, "approximateCreationDateTime");
        }
    }
}

/// `NewImage` to `newImage`: the contract's camelCase.
fn lower_first(key: &str) -> String {
    let mut chars = key.chars();
    match chars.next() {
        Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// A batch's identifiers and the failures reported so far.
#[derive(Debug)]
pub(super) struct Batch {
    trigger: Trigger,
    /// Every record's identifier, in the batch's order.
    identifiers: Vec<String>,
    failed: HashSet<String>,
}

impl Batch {
    pub(super) fn new(trigger: Trigger, records: &Val) -> Batch {
        let identifiers = match records {
            Val::List(records) => records
                .iter()
                .filter_map(|r| identifier(trigger, r).map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        Batch {
            trigger,
            identifiers,
            failed: HashSet::new(),
        }
    }

    /// Takes the identifiers a plugin reported failed out of the carried
    /// batch. An identifier that is not in what the plugin was given fails
    /// the whole batch, as Lambda treats an invalid `itemIdentifier`.
    pub(super) fn fold(&mut self, carried: &mut Val, returned: Val) -> Result<(), String> {
        let (Val::List(records), Val::List(reported)) = (carried, returned) else {
            return Ok(());
        };
        let mut failing = HashSet::with_capacity(reported.len());
        for id in reported {
            let Val::String(id) = id else { continue };
            let given = records
                .iter()
                .any(|r| identifier(self.trigger, r) == Some(id.as_str()));
            if !given {
                return Err(format!(
                    "the plugin reported itemIdentifier {id:?} failed, which is not a record of the batch it was given"
                ));
            }
            failing.insert(id);
        }
        records.retain(|r| identifier(self.trigger, r).is_none_or(|id| !failing.contains(id)));
        self.failed.extend(failing);
        Ok(())
    }

    /// The partial batch response of a batch where nothing failed.
    pub(super) fn no_failures() -> Value {
        json!({ "batchItemFailures": [] })
    }

    /// Lambda's partial batch response, each failure once.
    pub(super) fn response(&self) -> Value {
        let mut reported = HashSet::with_capacity(self.failed.len());
        let failures: Vec<Value> = self
            .identifiers
            .iter()
            .filter(|id| self.failed.contains(*id) && reported.insert(*id))
            .map(|id| json!({ "itemIdentifier": id }))
            .collect();
        json!({ "batchItemFailures": failures })
    }
}

/// Whether the carried batch has no record left to give a plugin.
pub(super) fn is_empty(records: &Val) -> bool {
    matches!(records, Val::List(records) if records.is_empty())
}

fn identifier(trigger: Trigger, record: &Val) -> Option<&str> {
    let mut value = record;
    for name in identifier_path(trigger) {
        let Val::Record(fields) = value else {
            return None;
        };
        value = &fields.iter().find(|(field, _)| field == name)?.1;
    }
    match value {
        Val::String(id) => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str) -> Val {
        Val::Record(vec![
            ("message-id".into(), Val::String(id.into())),
            ("body".into(), Val::String(format!("body of {id}"))),
        ])
    }

    fn ids(ids: &[&str]) -> Val {
        Val::List(ids.iter().map(|id| Val::String((*id).into())).collect())
    }

    #[test]
    fn failed_records_leave_the_batch_and_are_reported_in_its_order() {
        let mut carried = Val::List(vec![message("a"), message("b"), message("c")]);
        let mut batch = Batch::new(Trigger::Sqs, &carried);
        batch.fold(&mut carried, ids(&["c"])).unwrap();
        batch.fold(&mut carried, ids(&["a", "a"])).unwrap();
        assert_eq!(carried, Val::List(vec![message("b")]));
        assert_eq!(
            batch.response(),
            json!({"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "c"}]})
        );
    }

    #[test]
    fn an_identifier_outside_the_batch_fails_it_whole() {
        let mut carried = Val::List(vec![message("a"), message("b")]);
        let mut batch = Batch::new(Trigger::Sqs, &carried);
        batch.fold(&mut carried, ids(&["a"])).unwrap();
        // `a` already left the batch: the second plugin never saw it.
        let error = batch.fold(&mut carried, ids(&["a"])).unwrap_err();
        assert!(error.contains("\"a\""), "{error}");
        assert!(batch.fold(&mut carried, ids(&["zz"])).is_err());
    }

    #[test]
    fn dynamodb_records_are_read_in_the_contracts_spelling() {
        let event = json!({"Records": [{
            "eventName": "INSERT",
            "dynamodb": {
                "Keys": {"Id": {"N": "101"}},
                "NewImage": {"Message": {"S": "New item!"}, "Id": {"N": "101"}},
                "SequenceNumber": "111",
                "SizeBytes": 26,
                "StreamViewType": "NEW_AND_OLD_IMAGES"
            }
        }]});
        let prepared = prepare(Trigger::DynamodbStream, &event);
        let stream = &prepared["Records"][0]["dynamodb"];
        assert_eq!(stream["keys"], json!(r#"{"Id":{"N":"101"}}"#));
        assert_eq!(
            serde_json::from_str::<Value>(stream["newImage"].as_str().unwrap()).unwrap(),
            event["Records"][0]["dynamodb"]["NewImage"]
        );
        assert_eq!(stream["sequenceNumber"], json!("111"));
        assert_eq!(stream["streamViewType"], json!("NEW_AND_OLD_IMAGES"));
        assert!(matches!(prepare(Trigger::Sqs, &event), Cow::Borrowed(_)));
    }
}
