//! Test guest: a sync plugin that returns as many records as config
//! `count` says (distinct keys, or all empty with `mode = "empty"`), to
//! show the host's cost of a plugin's output stays bounded and linear.

triggerfish_sdk::bindings!("../../../wit", "triggerfish:sync/sync-plugin");

use exports::triggerfish::sync::sync_trigger::{DatasetRecord, DatasetRecords, Event, Guest, Op};

struct HostileSync;

impl Guest for HostileSync {
    fn handle(_: Event, _: DatasetRecords) -> Result<DatasetRecords, String> {
        let count: usize = triggerfish_sdk::config::require("count")?
            .parse()
            .map_err(|_| "count is not a number".to_owned())?;
        let empty = triggerfish_sdk::config::get("mode").as_deref() == Some("empty");
        Ok((0..count)
            .map(|i| {
                let key = if empty {
                    String::new()
                } else {
                    format!("key-{i}")
                };
                let value = (!empty).then(|| format!("value-{i}"));
                (
                    key,
                    DatasetRecord {
                        old_value: None,
                        new_value: value,
                        op: Op::Replace,
                    },
                )
            })
            .collect())
    }
}

export!(HostileSync);
