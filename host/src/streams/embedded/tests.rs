//! The embedded engine on a real redb file in a temporary folder.

use super::*;
use crate::cognito::state::{Applied, DatasetId, Update};
use crate::streams::engine::{Datasets, Records, SyncPublish, SyncWrite, SYNC_PAYLOAD_AGE};
use crate::streams::{now_ms, StreamId};

fn oversized_sync(identity: &str, at_ms: u64) -> SyncWrite {
    SyncWrite {
        dataset: DatasetId {
            tenant: "t".into(),
            pool: "p".into(),
            identity: identity.into(),
            dataset: "d".into(),
        },
        updates: vec![Update {
            key: "k".into(),
            value: Some("v".into()),
            device_last_modified: None,
        }],
        now_ms: at_ms,
        publish: Some(SyncPublish {
            stream: StreamId::new("t", "cognito"),
            max_tenant_bytes: u64::MAX,
            // A limit of 1 byte: every record is behind a payload URL.
            build: Arc::new(|applied: &Applied| {
                crate::cognito::build_record(applied, &applied.changed, 1, |id| id.into())
            }),
        }),
    }
}

#[tokio::test]
async fn payloads_are_trimmed_once_no_url_can_be_valid() {
    let dir = tempfile::tempdir().unwrap();
    let engine = EmbeddedEngine::open(dir.path()).unwrap();
    let now = now_ms();
    let old = now - SYNC_PAYLOAD_AGE.as_millis() as u64 - 1000;
    let mut ids = Vec::new();
    for (identity, at) in [("old", old), ("new", now)] {
        let applied = engine
            .apply_sync(oversized_sync(identity, at))
            .await
            .unwrap()
            .unwrap();
        ids.push(crate::cognito::payload_id(&applied.dataset, 1));
    }
    for id in &ids {
        assert!(engine.sync_payload("t", id).await.unwrap().is_some());
    }
    // Retention of records is not the payloads' lifetime: a trim that
    // deletes no record still deletes the old payload.
    assert_eq!(engine.trim("t", 0).await.unwrap(), 0);
    assert!(engine.sync_payload("t", &ids[0]).await.unwrap().is_none());
    assert!(engine.sync_payload("t", &ids[1]).await.unwrap().is_some());
    // Another tenant's trim leaves this one's alone.
    assert_eq!(engine.trim("u", 0).await.unwrap(), 0);
    assert!(engine.sync_payload("t", &ids[1]).await.unwrap().is_some());
}
