//! Kinesis and SQS: reports failed every record whose payload (Kinesis
//! data, SQS body) is not JSON, so a poison record is retried and then
//! sent to the failure destination while the rest of its batch goes on.

use triggerfish_sdk::kinesis::KinesisRecord;
use triggerfish_sdk::sqs::Message;
use triggerfish_sdk::{kinesis, sqs, warn};

struct JsonRecordsOnly;

/// The identifiers of the payloads that are not JSON.
fn not_json<'a>(records: impl Iterator<Item = (&'a str, &'a [u8])>) -> Vec<String> {
    records
        .filter(|(id, payload)| {
            let bad = serde_json::from_slice::<serde_json::Value>(payload).is_err();
            if bad {
                warn!("record {id} is not JSON");
            }
            bad
        })
        .map(|(id, _)| id.to_owned())
        .collect()
}

impl kinesis::Guest for JsonRecordsOnly {
    fn handle(records: Vec<KinesisRecord>) -> Result<Vec<String>, String> {
        Ok(not_json(records.iter().map(|r| {
            (
                r.kinesis.sequence_number.as_str(),
                r.kinesis.data.as_slice(),
            )
        })))
    }
}

impl sqs::Guest for JsonRecordsOnly {
    fn handle(records: Vec<Message>) -> Result<Vec<String>, String> {
        Ok(not_json(
            records
                .iter()
                .map(|m| (m.message_id.as_str(), m.body.as_bytes())),
        ))
    }
}

triggerfish_sdk::export!(JsonRecordsOnly: kinesis, sqs);

#[cfg(test)]
mod tests {
    use super::*;
    use triggerfish_sdk::testing;

    #[test]
    fn reports_the_records_that_are_not_json() {
        let records = vec![
            testing::kinesis_record("1", br#"{"order": 1}"#),
            testing::kinesis_record("2", b"not json"),
            testing::kinesis_record("3", b"[1, 2]"),
        ];
        assert_eq!(
            <JsonRecordsOnly as kinesis::Guest>::handle(records),
            Ok(vec!["2".to_owned()])
        );
        let messages = vec![
            testing::sqs_message("a", "{"),
            testing::sqs_message("b", "{}"),
        ];
        assert_eq!(
            <JsonRecordsOnly as sqs::Guest>::handle(messages),
            Ok(vec!["a".to_owned()])
        );
    }
}
