//! DynamoDB Streams: Amplify's DynamoDB trigger template. Logs each
//! change's event id and event name, and the item's keys and its new and
//! old images unmarshalled into plain JSON (what the template does with
//! `AWS.DynamoDB.Converter.unmarshall`). Reports no failure.

use serde_json::Value;
use triggerfish_sdk::dynamodb_stream::{unmarshall, DynamodbRecord, Guest};
use triggerfish_sdk::info;

struct DynamodbStreamLogger;

/// An image as plain JSON; `null` when the stream's view leaves it out.
fn image(text: Option<&str>) -> Result<Value, String> {
    text.map_or(Ok(Value::Null), unmarshall)
}

impl Guest for DynamodbStreamLogger {
    fn handle(records: Vec<DynamodbRecord>) -> Result<Vec<String>, String> {
        for record in &records {
            info!("{}", record.event_id);
            info!("{}", record.event_name);
            let change = serde_json::json!({
                "keys": unmarshall(&record.dynamodb.keys)?,
                "new": image(record.dynamodb.new_image.as_deref())?,
                "old": image(record.dynamodb.old_image.as_deref())?,
            });
            info!("DynamoDB Record: {change}");
        }
        Ok(Vec::new())
    }
}

triggerfish_sdk::export!(DynamodbStreamLogger: dynamodb_stream);

#[cfg(test)]
mod tests {
    use super::*;
    use triggerfish_sdk::testing;

    #[test]
    fn logs_each_change_unmarshalled() {
        let record = testing::dynamodb_record("7", r#"{"Id":{"N":"101"},"Tags":{"SS":["a"]}}"#);
        testing::logs();
        assert_eq!(DynamodbStreamLogger::handle(vec![record]), Ok(Vec::new()));
        let lines: Vec<String> = testing::logs().into_iter().map(|(_, line)| line).collect();
        assert_eq!(lines[0], "event-7");
        assert_eq!(lines[1], "INSERT");
        assert_eq!(
            lines[2],
            r#"DynamoDB Record: {"keys":{"Id":101,"Tags":["a"]},"new":{"Id":101,"Tags":["a"]},"old":null}"#
        );
    }

    #[test]
    fn an_image_that_is_not_dynamodb_json_fails_the_batch() {
        let record = testing::dynamodb_record("7", r#"{"Id":{"X":"1"}}"#);
        let error = DynamodbStreamLogger::handle(vec![record]).unwrap_err();
        assert!(error.contains("attribute `Id`"), "{error}");
    }
}
