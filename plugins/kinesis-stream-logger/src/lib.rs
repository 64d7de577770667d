//! Kinesis: Amplify's Kinesis trigger template. Logs each record of the
//! batch (its event id, event name, partition key, sequence number and
//! data) and reports no failure.

use triggerfish_sdk::info;
use triggerfish_sdk::kinesis::{Guest, KinesisRecord};

struct KinesisStreamLogger;

/// The data as text when it is UTF-8, else how long it is.
fn describe(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(text) => text.to_owned(),
        Err(_) => format!("<{} bytes of binary data>", data.len()),
    }
}

impl Guest for KinesisStreamLogger {
    fn handle(records: Vec<KinesisRecord>) -> Result<Vec<String>, String> {
        info!("{} Kinesis records", records.len());
        for record in &records {
            info!("{}", record.event_id);
            info!("{}", record.event_name);
            info!(
                "Kinesis Record: partition key {}, sequence number {}, data {}",
                record.kinesis.partition_key,
                record.kinesis.sequence_number,
                describe(&record.kinesis.data)
            );
        }
        Ok(Vec::new())
    }
}

triggerfish_sdk::export!(KinesisStreamLogger: kinesis);

#[cfg(test)]
mod tests {
    use super::*;
    use triggerfish_sdk::testing;

    #[test]
    fn logs_every_record_and_fails_none() {
        let records = vec![
            testing::kinesis_record("1", b"Hello World"),
            testing::kinesis_record("2", &[0xff, 0xfe]),
        ];
        testing::logs();
        assert_eq!(KinesisStreamLogger::handle(records), Ok(Vec::new()));
        let lines: Vec<String> = testing::logs().into_iter().map(|(_, line)| line).collect();
        assert_eq!(lines[0], "2 Kinesis records");
        assert!(lines.contains(&"shardId-000000000000:1".to_owned()));
        assert!(lines
            .iter()
            .any(|l| l.ends_with("sequence number 1, data Hello World")));
        assert!(lines
            .iter()
            .any(|l| l.ends_with("data <2 bytes of binary data>")));
    }
}
