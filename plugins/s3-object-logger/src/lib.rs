//! S3: logs each object event (event name, bucket, key, size), skipping
//! the keys under any prefix listed in config `skip-prefixes` (such as
//! the folder a job writes its own output to).

use triggerfish_sdk::s3::{Guest, S3Record};
use triggerfish_sdk::{config, info};

struct S3ObjectLogger;

impl Guest for S3ObjectLogger {
    fn handle(records: Vec<S3Record>) -> Result<(), String> {
        let skip = config::list("skip-prefixes");
        for record in &records {
            let object = &record.s3.object;
            if skip
                .iter()
                .any(|prefix| object.key.starts_with(prefix.as_str()))
            {
                continue;
            }
            let size = object
                .size
                .map_or("no size".to_owned(), |s| format!("{s} bytes"));
            info!(
                "{} s3://{}/{} ({size})",
                record.event_name, record.s3.bucket.name, object.key
            );
        }
        Ok(())
    }
}

triggerfish_sdk::export!(S3ObjectLogger: s3);

#[cfg(test)]
mod tests {
    use super::*;
    use triggerfish_sdk::testing;

    #[test]
    fn logs_objects_outside_the_skipped_prefixes() {
        testing::set_config([("skip-prefixes", "thumbnails/, tmp/")]);
        let records = vec![
            testing::s3_record("photos/cat.jpg"),
            testing::s3_record("thumbnails/cat.jpg"),
            testing::s3_record("tmp/upload"),
        ];
        testing::logs();
        assert_eq!(S3ObjectLogger::handle(records), Ok(()));
        let lines: Vec<String> = testing::logs().into_iter().map(|(_, line)| line).collect();
        assert_eq!(
            lines,
            ["ObjectCreated:Put s3://sample/photos/cat.jpg (0 bytes)"]
        );
    }
}
