//! The SyncTrigger: the documentation's sample, and its rules.

use crate::common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_sample_gives_the_documented_result() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-sync-sample.wasm", guests::SYNC_SAMPLE);
    let out = invoke(&tenant(&dir, "t").await, sync_event())
        .await
        .unwrap();
    // What the sample's JavaScript does to the event: SampleKey1 modified,
    // SampleKey2 marked for removal, SampleKey3 added.
    let mut expected = sync_event();
    expected["datasetRecords"] = json!({
        "SampleKey1": {"oldValue": "oldValue1", "newValue": "ModifyValue1", "op": "replace"},
        "SampleKey2": {"oldValue": "oldValue2", "newValue": "newValue2", "op": "remove"},
        "SampleKey3": {"newValue": "ModifyValue3", "op": "replace"}
    });
    assert_eq!(out, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_fields_and_omitted_records_stay_as_they_were() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-sync-sample.wasm", guests::SYNC_SAMPLE);
    let mut event = sync_event();
    event["datasetRecords"]["Untouched"] =
        json!({"oldValue": "a", "newValue": "b", "op": "replace", "syncCount": 7});
    event["datasetRecords"]["SampleKey3"] =
        json!({"oldValue": null, "newValue": "mine", "op": "replace"});
    let out = invoke(&tenant(&dir, "t").await, event.clone())
        .await
        .unwrap();
    // The plugin's interface returns records only: the read-only fields
    // cannot change, and do not.
    for key in [
        "version",
        "eventType",
        "region",
        "identityPoolId",
        "identityId",
        "datasetName",
    ] {
        assert_eq!(out[key], event[key], "{key}");
    }
    // Records the plugin left out, including fields the contract does not
    // model, are as they were; an existing SampleKey3 is not re-added.
    assert_eq!(
        out["datasetRecords"]["Untouched"],
        event["datasetRecords"]["Untouched"]
    );
    assert_eq!(
        out["datasetRecords"]["SampleKey3"],
        event["datasetRecords"]["SampleKey3"]
    );
    assert_eq!(
        out["datasetRecords"]["SampleKey1"]["newValue"],
        "ModifyValue1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_the_wrong_shape_are_refused() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-sync-sample.wasm", guests::SYNC_SAMPLE);
    let tenant = tenant(&dir, "t").await;
    let mut event = sync_event();
    event["datasetRecords"]["SampleKey1"]["op"] = json!("explode");
    let error = invoke(&tenant, event).await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("datasetRecords.SampleKey1.op"), "{text}");
    assert!(text.contains("replace, remove"), "{text}");
}
