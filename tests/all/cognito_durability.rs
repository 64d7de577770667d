//! What Cognito Streams keeps across hosts, restarts and crashes, through
//! the real binary: the bulk publish status kept in the engine, so one
//! runs at a time and one succeeds a window on every host and after a
//! restart, and a killed host's run lapses to FAILED once its claim is
//! stale.
//!
//! Bulk publish appends at the tenant's `stream-records-per-second`; the
//! tenant here allows 4, so a run over a dozen datasets lasts seconds.

use crate::common::*;
use crate::nats::NatsServer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use triggerfish::cognito::bulk::BULK_CLAIM_TTL;

const SETTINGS: &str = "[auth]\nmode = \"none\"\n\n[cognito-streams]\nstream = \"cognito\"\n\n\
    [quotas]\nstream-records-per-second = 4\n";

fn plugins() -> PluginsDir {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-sync-sample.wasm", guests::SYNC_SAMPLE)
        .settings("t", SETTINGS);
    dir
}

/// One sync of the seed's sample for each of `n` identities: `n` datasets.
async fn sync_identities(base: &str, n: usize) {
    let client = reqwest::Client::new();
    for i in 0..n {
        let mut event = sync_event();
        event["identityPoolId"] = json!("us-east-1:pool");
        event["identityId"] = json!(format!("us-east-1:id-{i}"));
        let answer = client
            .post(format!("{base}/v1/tenants/t/events"))
            .json(&event)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
}

/// `POST .../bulk-publish`: the status code and the body.
async fn start(base: &str) -> (u16, Value) {
    let answer = reqwest::Client::new()
        .post(format!("{base}/v1/tenants/t/bulk-publish"))
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

async fn status(base: &str) -> Value {
    reqwest::get(format!("{base}/v1/tenants/t/bulk-publish"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls the status until it is `wanted`, for at most `within`.
async fn wait_for(base: &str, wanted: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let status = status(base).await;
        if status["bulkPublishStatus"] == wanted {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "not {wanted} within {within:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bulk_publish_at_a_time_and_its_window_survives_a_restart() {
    let dir = plugins();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap().to_owned();
    let args = ["--no-watch", "--data-dir", &data_dir];
    let host = ServeProcess::start(dir.path(), &args);
    sync_identities(&host.base, 12).await;
    let (code, started) = start(&host.base).await;
    assert_eq!(code, 202, "{started}");
    assert_eq!(started["bulkPublishStatus"], "IN_PROGRESS");
    // 12 records at 4 a second: the run lasts about 2 s.
    let (code, refused) = start(&host.base).await;
    assert_eq!(code, 409, "{refused}");
    assert_eq!(refused["error"]["kind"], "bulk-publish-in-progress");
    let done = wait_for(&host.base, "SUCCEEDED", Duration::from_secs(30)).await;
    assert_eq!(done["datasetsPublished"], 12, "{done}");
    assert_eq!(done["recordsPublished"], 12, "{done}");
    let (code, refused) = start(&host.base).await;
    assert_eq!(code, 429, "{refused}");
    assert_eq!(refused["error"]["kind"], "bulk-publish-too-soon");
    drop(host);

    // The same data folder, a new process: the status and the window are
    // still there.
    let host = ServeProcess::start(dir.path(), &args);
    assert_eq!(status(&host.base).await, done);
    let (code, refused) = start(&host.base).await;
    assert_eq!(code, 429, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_on_nats_share_one_bulk_publish_and_its_window() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let dir = plugins();
    let args = ["--no-watch", "--streams", &server.url];
    let a = ServeProcess::start(dir.path(), &args);
    let b = ServeProcess::start(dir.path(), &args);
    sync_identities(&a.base, 12).await;
    let (code, started) = start(&a.base).await;
    assert_eq!(code, 202, "{started}");
    let (code, refused) = start(&b.base).await;
    assert_eq!(code, 409, "{refused}");
    assert_eq!(refused["error"]["kind"], "bulk-publish-in-progress");
    assert_eq!(status(&b.base).await["bulkPublishStatus"], "IN_PROGRESS");
    let done = wait_for(&b.base, "SUCCEEDED", Duration::from_secs(30)).await;
    assert_eq!(done["datasetsPublished"], 12, "{done}");
    assert_eq!(status(&a.base).await, done);
    for host in [&b, &a] {
        let (code, refused) = start(&host.base).await;
        assert_eq!(code, 429, "{refused}");
        assert_eq!(refused["error"]["kind"], "bulk-publish-too-soon");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hosts_bulk_publish_fails_once_its_claim_is_stale() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let dir = plugins();
    let args = ["--no-watch", "--streams", &server.url];
    let mut a = ServeProcess::start(dir.path(), &args);
    let b = ServeProcess::start(dir.path(), &args);
    sync_identities(&a.base, 20).await;
    // 20 records at 4 a second: about 4 s, cut short by SIGKILL.
    let (code, started) = start(&a.base).await;
    assert_eq!(code, 202, "{started}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.child.kill().unwrap(); // SIGKILL
    a.child.wait().unwrap();
    let killed_at = Instant::now();
    // Its claim is still fresh: the tenant waits...
    let (code, refused) = start(&b.base).await;
    assert_eq!(code, 409, "{refused}");
    // ... until it is stale: then the dead run is FAILED, and another may
    // start.
    let failed = wait_for(&b.base, "FAILED", BULK_CLAIM_TTL + Duration::from_secs(10)).await;
    assert!(
        killed_at.elapsed() + Duration::from_secs(2) >= BULK_CLAIM_TTL,
        "FAILED after {:?}",
        killed_at.elapsed()
    );
    let message = failed["failureMessage"].as_str().unwrap();
    assert!(message.contains("claim"), "{failed}");
    assert!(
        failed["recordsPublished"].as_u64().unwrap() < 20,
        "{failed}"
    );
    let (code, started) = start(&b.base).await;
    assert_eq!(code, 202, "{started}");
    let done = wait_for(&b.base, "SUCCEEDED", Duration::from_secs(30)).await;
    assert_eq!(done["datasetsPublished"], 20, "{done}");
    assert_eq!(done["recordsPublished"], 20, "{done}");
}
