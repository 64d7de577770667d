//! Kinesis stream records: reads the records Cognito Streams publishes
//! (one per applied sync, or per dataset in a bulk publish) and keeps the
//! latest state of each key the way the seed's query does: per identity,
//! dataset and key, the entry with the highest `syncCount` wins, and keys
//! whose latest entry is a removal are dropped.
//!
//! Each batch is folded into a [`View`], and every key of it is logged as
//! one line, `view {"identityId", "datasetName", "key", "value",
//! "syncCount", "op"}`: the rows a table like the seed's
//! `cognito_raw_data` would get, already reduced to the latest per key
//! within the batch (a consumer keeping the view across batches keeps the
//! highest `syncCount` again, so bulk-publish duplicates and redeliveries
//! change nothing). Records that are not Cognito Streams JSON are
//! reported as failed; `S3Url` records are logged with their URL (the
//! plugin has no outbound HTTP unless the tenant allows the host).

use serde_json::{json, Value};
use std::collections::BTreeMap;

/// (identityId, datasetName, key).
pub type Row = (String, String, String);

/// One key's latest entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub value: Value,
    pub sync_count: u64,
    pub op: String,
}

/// The latest entry of every key seen, removals included (so that an
/// older replace arriving later cannot bring a removed key back).
#[derive(Debug, Default, PartialEq)]
pub struct View {
    pub entries: BTreeMap<Row, Entry>,
}

impl View {
    /// Folds one Cognito Streams record (its data as JSON) into the view.
    /// Returns the URL of an `S3Url` record, whose entries are not inline.
    pub fn add(&mut self, record: &Value) -> Result<Option<String>, String> {
        let text = |field: &str| {
            record
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("not a Cognito Streams record: no {field}"))
        };
        let identity = text("identityId")?;
        let dataset = text("dataSetName")?;
        if record.get("payloadType").and_then(Value::as_str) == Some("S3Url") {
            return Ok(Some(text("kinesisSyncRecordsURL")?));
        }
        let entries = record
            .get("kinesisSyncRecords")
            .and_then(Value::as_array)
            .ok_or("not a Cognito Streams record: no kinesisSyncRecords")?;
        for entry in entries {
            let key = entry
                .get("key")
                .and_then(Value::as_str)
                .ok_or("an entry has no key")?;
            let sync_count = entry
                .get("syncCount")
                .and_then(Value::as_u64)
                .ok_or("an entry has no syncCount")?;
            let op = entry
                .get("op")
                .and_then(Value::as_str)
                .unwrap_or("replace")
                .to_owned();
            let row = (identity.clone(), dataset.clone(), key.to_owned());
            let newer = self
                .entries
                .get(&row)
                .is_none_or(|e| sync_count > e.sync_count);
            if newer {
                let value = entry.get("value").cloned().unwrap_or(Value::Null);
                self.entries.insert(
                    row,
                    Entry {
                        value,
                        sync_count,
                        op,
                    },
                );
            }
        }
        Ok(None)
    }

    /// The dataset's keys and values now: the seed's query, `op <> 'remove'`.
    pub fn current(&self, identity: &str, dataset: &str) -> BTreeMap<String, Value> {
        self.entries
            .iter()
            .filter(|((i, d, _), e)| i == identity && d == dataset && e.op != "remove")
            .map(|((_, _, key), e)| (key.clone(), e.value.clone()))
            .collect()
    }

    /// One log line per key.
    pub fn lines(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|((identity, dataset, key), e)| {
                let row = json!({
                    "identityId": identity,
                    "datasetName": dataset,
                    "key": key,
                    "value": e.value,
                    "syncCount": e.sync_count,
                    "op": e.op,
                });
                format!("view {row}")
            })
            .collect()
    }
}

mod plugin {
    use super::View;
    use triggerfish_sdk::kinesis::{Guest, KinesisRecord};

    struct CognitoStreamView;

    impl Guest for CognitoStreamView {
        fn handle(records: Vec<KinesisRecord>) -> Result<Vec<String>, String> {
            let mut view = View::default();
            let mut failed = Vec::new();
            for record in &records {
                let id = &record.kinesis.sequence_number;
                let added = serde_json::from_slice(&record.kinesis.data)
                    .map_err(|e| format!("not JSON: {e}"))
                    .and_then(|data| view.add(&data));
                match added {
                    Ok(None) => {}
                    Ok(Some(url)) => triggerfish_sdk::info!("payload {id} at {url}"),
                    Err(error) => {
                        triggerfish_sdk::warn!("record {id}: {error}");
                        failed.push(id.clone());
                    }
                }
            }
            for line in view.lines() {
                triggerfish_sdk::info!("{line}");
            }
            Ok(failed)
        }
    }

    triggerfish_sdk::export!(CognitoStreamView: kinesis);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(identity: &str, entries: Value) -> Value {
        json!({
            "identityPoolId": "pool",
            "identityId": identity,
            "dataSetName": "d",
            "operation": "replace",
            "kinesisSyncRecords": entries,
            "lastModifiedDate": 1,
            "syncCount": 1,
            "payloadType": "Inline",
        })
    }

    #[test]
    fn the_highest_sync_count_wins_and_removals_are_dropped() {
        let mut view = View::default();
        // Out of order, with a duplicate (a bulk publish and a live update).
        for r in [
            record(
                "a",
                json!([{"key": "k", "value": "2", "syncCount": 2, "op": "replace"}]),
            ),
            record(
                "a",
                json!([{"key": "k", "value": "1", "syncCount": 1, "op": "replace"},
                               {"key": "gone", "value": "x", "syncCount": 1, "op": "replace"}]),
            ),
            record(
                "a",
                json!([{"key": "gone", "value": null, "syncCount": 2, "op": "remove"}]),
            ),
            record(
                "a",
                json!([{"key": "k", "value": "2", "syncCount": 2, "op": "replace"}]),
            ),
            record(
                "b",
                json!([{"key": "k", "value": "other", "syncCount": 9, "op": "replace"}]),
            ),
        ] {
            assert_eq!(view.add(&r), Ok(None));
        }
        assert_eq!(
            view.current("a", "d"),
            BTreeMap::from([("k".into(), json!("2"))])
        );
        assert_eq!(view.current("b", "d").len(), 1);
        assert_eq!(view.lines().len(), 3);
    }

    #[test]
    fn url_records_and_garbage_are_told_apart() {
        let mut view = View::default();
        let mut url = record("a", json!([]));
        url["payloadType"] = json!("S3Url");
        url["kinesisSyncRecordsURL"] = json!("http://h/p");
        assert_eq!(view.add(&url), Ok(Some("http://h/p".into())));
        assert!(view.add(&json!({"hello": 1})).is_err());
    }
}
