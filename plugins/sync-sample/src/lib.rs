//! SyncTrigger: Cognito's sample sync handler. Modifies `SampleKey1`,
//! removes `SampleKey2`, and adds `SampleKey3` when it is not there.

use triggerfish_sdk::sync_trigger::{DatasetRecord, DatasetRecords, Event, Guest, Op};

struct SyncSample;

impl Guest for SyncSample {
    fn handle(event: Event, records: DatasetRecords) -> Result<DatasetRecords, String> {
        triggerfish_sdk::debug!(
            "sync of dataset {} for {}",
            event.dataset_name,
            event.identity_id
        );
        let mut changes = Vec::new();
        for (key, record) in &records {
            match key.as_str() {
                "SampleKey1" => changes.push((
                    key.clone(),
                    DatasetRecord {
                        new_value: Some("ModifyValue1".into()),
                        op: Op::Replace,
                        ..record.clone()
                    },
                )),
                "SampleKey2" => changes.push((
                    key.clone(),
                    DatasetRecord {
                        op: Op::Remove,
                        ..record.clone()
                    },
                )),
                _ => {}
            }
        }
        if !records.iter().any(|(key, _)| key == "SampleKey3") {
            changes.push((
                "SampleKey3".into(),
                DatasetRecord {
                    old_value: None,
                    new_value: Some("ModifyValue3".into()),
                    op: Op::Replace,
                },
            ));
        }
        Ok(changes)
    }
}

triggerfish_sdk::export!(SyncSample: sync_trigger);
