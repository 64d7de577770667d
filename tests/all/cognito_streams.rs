//! Cognito Streams through the real host: the seed's sync sample through
//! `sync-sample`, kept in the dataset state and published to the
//! tenant's Kinesis stream, on both engines; denied syncs; oversized
//! records behind signed URLs; bulk publish; and two hosts on NATS
//! racing for one key's sync count.

use crate::common::*;
use crate::nats::NatsServer;
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use triggerfish::cognito::state::{DatasetId, Update};
use triggerfish::cognito::Cognito;
use triggerfish::dispatch::Dispatcher;
use triggerfish::sources::http::server::{bind, serve, ServerLimits};
use triggerfish::sources::http::{router, Api};
use triggerfish::streams::embedded::EmbeddedEngine;
use triggerfish::streams::engine::{Engine, SyncWrite, SHARDS};
use triggerfish::streams::nats::NatsEngine;
use triggerfish::streams::{StreamId, Streams};
use triggerfish::tenant::registry::Tenants;

const SETTINGS: &str = "[auth]\nmode = \"none\"\n\n[cognito-streams]\nstream = \"cognito\"\n";

/// The HTTP API with streams and Cognito Streams on `engine`.
struct Host {
    base: String,
    engine: Arc<dyn Engine>,
    task: tokio::task::JoinHandle<()>,
}

impl Host {
    async fn start(tenants: Arc<Tenants>, engine: Arc<dyn Engine>) -> Host {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let streams = Arc::new(Streams::new(engine.clone()));
        let cognito = Arc::new(Cognito::new(streams.clone(), &base));
        let api = Api {
            tenants,
            dispatcher: Arc::new(Dispatcher::new().with_cognito(cognito)),
            streams: Some(streams),
            admin: None,
            health: Default::default(),
        };
        let task = tokio::spawn(async move {
            serve(
                listener,
                router(api),
                ServerLimits::default(),
                std::future::pending(),
            )
            .await
            .unwrap();
        });
        Host { base, engine, task }
    }

    async fn sync(&self, event: &Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/v1/tenants/t/events", self.base))
            .json(event)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(format!("{}{path}", self.base)).await.unwrap()
    }

    /// The records of the tenant's Cognito stream, decoded, in order.
    async fn published(&self) -> Vec<(String, Value)> {
        let id = StreamId::new("t", "cognito");
        let mut all = Vec::new();
        for partition in 0..SHARDS {
            all.extend(self.engine.read(&id, partition, 0, 1000).await.unwrap());
        }
        all.sort_by_key(|r| r.seq);
        all.into_iter()
            .map(|r| {
                let data = r.body["data"].as_str().unwrap();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .unwrap();
                (r.key, serde_json::from_slice(&bytes).unwrap())
            })
            .collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What an engine needs kept alive: its folder, or its server.
type Keep = Box<dyn std::any::Any>;

/// The embedded engine in a temporary folder, and the NATS engine when
/// `nats-server` is there.
async fn engines() -> Vec<(&'static str, Arc<dyn Engine>, Keep)> {
    let dir = tempfile::tempdir().unwrap();
    let mut engines: Vec<(&'static str, Arc<dyn Engine>, Keep)> = vec![(
        "embedded",
        Arc::new(EmbeddedEngine::open(dir.path()).unwrap()),
        Box::new(dir),
    )];
    if let Some(server) = NatsServer::start() {
        let engine = NatsEngine::connect(&server.url).await.unwrap();
        engines.push(("nats", Arc::new(engine), Box::new(server)));
    }
    engines
}

fn event(records: Value) -> Value {
    let mut event = sync_event();
    event["identityPoolId"] = json!("us-east-1:pool");
    event["identityId"] = json!("us-east-1:alice");
    event["datasetRecords"] = records;
    event
}

fn keys(record: &Value) -> Vec<(String, Value, u64, String)> {
    record["kinesisSyncRecords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_owned(),
                r["value"].clone(),
                r["syncCount"].as_u64().unwrap(),
                r["op"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn k(key: &str, value: Value, count: u64, op: &str) -> (String, Value, u64, String) {
    (key.to_owned(), value, count, op.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_sample_is_kept_and_published_on_both_engines() {
    for (name, engine, _keep) in engines().await {
        let dir = PluginsDir::new();
        dir.plugin("t", "10-sync-sample.wasm", guests::SYNC_SAMPLE)
            .settings("t", SETTINGS);
        let host = Host::start(tenants(&dir).await, engine).await;

        // The seed's sample: SampleKey1 modified, SampleKey2 removed,
        // SampleKey3 added, in one record.
        let seed = event(sync_event()["datasetRecords"].clone());
        assert_eq!(host.sync(&seed).await.status(), 200, "{name}");
        let published = host.published().await;
        assert_eq!(published.len(), 1, "{name}: {published:?}");
        let (partition_key, record) = &published[0];
        assert_eq!(partition_key, "us-east-1:alice", "{name}");
        for (field, value) in [
            ("identityPoolId", json!("us-east-1:pool")),
            ("identityId", json!("us-east-1:alice")),
            ("dataSetName", json!("datasetName")),
            ("operation", json!("replace")),
            ("payloadType", json!("Inline")),
            ("syncCount", json!(1)),
        ] {
            assert_eq!(record[field], value, "{name}: {field} in {record}");
        }
        assert!(record["lastModifiedDate"].as_u64().unwrap() > 1_600_000_000_000);
        assert_eq!(
            keys(record),
            vec![
                k("SampleKey1", json!("ModifyValue1"), 1, "replace"),
                k("SampleKey2", Value::Null, 1, "remove"),
                k("SampleKey3", json!("ModifyValue3"), 1, "replace"),
            ],
            "{name}"
        );
        for entry in record["kinesisSyncRecords"].as_array().unwrap() {
            assert!(
                entry["deviceLastModifiedDate"].as_u64().is_some(),
                "{entry}"
            );
            assert_eq!(entry["lastModifiedDate"], record["lastModifiedDate"]);
        }

        // The same sync again changes nothing and publishes nothing.
        assert_eq!(host.sync(&seed).await.status(), 200);
        assert_eq!(host.published().await.len(), 1, "{name}");

        // A second sync of the same key counts it again.
        let gold = event(
            json!({"SampleKey3": {"oldValue": "ModifyValue3", "newValue": "Gold", "op": "replace"}}),
        );
        assert_eq!(host.sync(&gold).await.status(), 200);
        // A removal is published as one.
        let remove =
            event(json!({"SampleKey3": {"oldValue": "Gold", "newValue": "Gold", "op": "remove"}}));
        assert_eq!(host.sync(&remove).await.status(), 200);
        let published = host.published().await;
        assert_eq!(published.len(), 3, "{name}");
        assert_eq!(published[1].1["syncCount"], 2);
        assert_eq!(
            keys(&published[1].1),
            vec![k("SampleKey3", json!("Gold"), 2, "replace")]
        );
        assert_eq!(published[2].1["operation"], "remove");
        assert_eq!(
            keys(&published[2].1),
            vec![k("SampleKey3", Value::Null, 3, "remove")]
        );

        // The dataset as the sync stored it, removals included.
        let response = host
            .get("/v1/tenants/t/datasets/us-east-1:alice/datasetName")
            .await;
        assert_eq!(response.status(), 200, "{name}");
        let dataset: Value = response.json().await.unwrap();
        assert_eq!(dataset["syncCount"], 3);
        assert_eq!(dataset["identityPoolId"], "us-east-1:pool");
        let stored: Vec<_> = dataset["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["key"].clone(),
                    r["value"].clone(),
                    r["syncCount"].clone(),
                    r["op"].clone(),
                )
            })
            .collect();
        assert_eq!(
            stored,
            vec![
                (
                    json!("SampleKey1"),
                    json!("ModifyValue1"),
                    json!(1),
                    json!("replace")
                ),
                (json!("SampleKey2"), Value::Null, json!(1), json!("remove")),
                (json!("SampleKey3"), Value::Null, json!(3), json!("remove")),
            ]
        );
        let missing = host
            .get("/v1/tenants/t/datasets/us-east-1:alice/other")
            .await;
        assert_eq!(missing.status(), 404);
        let other_pool = host
            .get("/v1/tenants/t/datasets/us-east-1:alice/datasetName?identityPoolId=nope")
            .await;
        assert_eq!(other_pool.status(), 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_sync_changes_nothing_and_publishes_nothing() {
    for (name, engine, _keep) in engines().await {
        let dir = PluginsDir::new();
        // hostile-sync without its `count` setting refuses every sync.
        dir.plugin("t", "10-sync-sample.wasm", guests::SYNC_SAMPLE)
            .plugin("t", "20-hostile-sync.wasm", guests::HOSTILE_SYNC)
            .settings("t", SETTINGS);
        let host = Host::start(tenants(&dir).await, engine.clone()).await;
        let dataset = DatasetId {
            tenant: "t".into(),
            pool: "us-east-1:pool".into(),
            identity: "us-east-1:alice".into(),
            dataset: "datasetName".into(),
        };
        engine
            .apply_sync(SyncWrite {
                dataset: dataset.clone(),
                updates: vec![Update {
                    key: "SampleKey1".into(),
                    value: Some("before".into()),
                    device_last_modified: None,
                }],
                now_ms: 1,
                publish: None,
            })
            .await
            .unwrap();
        let before = engine.dataset(&dataset).await.unwrap();
        let response = host
            .sync(&event(sync_event()["datasetRecords"].clone()))
            .await;
        assert_eq!(response.status(), 422, "{name}");
        assert_eq!(engine.dataset(&dataset).await.unwrap(), before, "{name}");
        assert!(host.published().await.is_empty(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_sync_is_behind_a_signed_url_that_expires() {
    for (name, engine, _keep) in engines().await {
        let dir = PluginsDir::new();
        dir.plugin("t", "10-sync-sample.wasm", guests::SYNC_SAMPLE)
            .settings(
                "t",
                &format!("{SETTINGS}inline-limit-bytes = 1024\npayload-url-secs = 2\n"),
            );
        let host = Host::start(tenants(&dir).await, engine).await;
        let big = "x".repeat(4000);
        let response = host
            .sync(&event(json!({"Big": {"newValue": big, "op": "replace"}})))
            .await;
        assert_eq!(response.status(), 200, "{name}");
        let published = host.published().await;
        assert_eq!(published.len(), 1);
        let record = &published[0].1;
        assert_eq!(record["payloadType"], "S3Url", "{name}: {record}");
        assert!(record.to_string().len() < 1024, "{record}");
        let url = record["kinesisSyncRecordsURL"].as_str().unwrap();
        assert!(url.starts_with(&host.base), "{url}");

        // The URL serves the full records, without credentials.
        let served = reqwest::get(url).await.unwrap();
        assert_eq!(served.status(), 200, "{name}");
        let served: Value = served.json().await.unwrap();
        assert_eq!(served["kinesisSyncRecords"][0]["key"], "Big");
        assert_eq!(served["kinesisSyncRecords"][0]["value"], json!(big));
        assert_eq!(served["kinesisSyncRecords"][0]["syncCount"], 1);

        // A forged signature, or a later expiry with the old signature,
        // or another tenant's path, is refused.
        let (head, signature) = url.rsplit_once("signature=").unwrap();
        let mut forged = signature.to_owned();
        forged.replace_range(0..1, if signature.starts_with('0') { "1" } else { "0" });
        let expires: u64 = url
            .split("expires=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        for bad in [
            format!("{head}signature={forged}"),
            url.replace(
                &format!("expires={expires}"),
                &format!("expires={}", expires + 60_000),
            ),
            url.replace("/tenants/t/", "/tenants/u/"),
            url.split('?').next().unwrap().to_owned(),
        ] {
            let response = reqwest::get(&bad).await.unwrap();
            assert_eq!(response.status(), 403, "{name}: {bad}");
        }
        // And once it expired, the real one too.
        tokio::time::sleep(Duration::from_millis(2300)).await;
        assert_eq!(reqwest::get(url).await.unwrap().status(), 403, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_publish_publishes_every_dataset_once_a_window() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-sync-sample.wasm", guests::SYNC_SAMPLE)
        .settings("t", SETTINGS);
    let data = tempfile::tempdir().unwrap();
    let engine = Arc::new(EmbeddedEngine::open(data.path()).unwrap());
    let host = Host::start(tenants(&dir).await, engine).await;
    let client = reqwest::Client::new();
    let status = host.get("/v1/tenants/t/bulk-publish").await;
    assert_eq!(
        status.json::<Value>().await.unwrap()["bulkPublishStatus"],
        "NOT_STARTED"
    );
    for identity in ["us-east-1:a", "us-east-1:b", "us-east-1:c"] {
        let mut sync = event(sync_event()["datasetRecords"].clone());
        sync["identityId"] = json!(identity);
        assert_eq!(host.sync(&sync).await.status(), 200);
    }
    assert_eq!(host.published().await.len(), 3);
    let started = client
        .post(format!("{}/v1/tenants/t/bulk-publish", host.base))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status: Value = host
            .get("/v1/tenants/t/bulk-publish")
            .await
            .json()
            .await
            .unwrap();
        if status["bulkPublishStatus"] != "IN_PROGRESS" {
            break status;
        }
        assert!(Instant::now() < deadline, "bulk publish did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["bulkPublishStatus"], "SUCCEEDED", "{status}");
    assert_eq!(status["datasetsPublished"], 3);
    assert_eq!(status["recordsPublished"], 3);
    assert!(status["bulkPublishCompleteTime"].as_u64().is_some());
    let published = host.published().await;
    assert_eq!(published.len(), 6);
    let identities: BTreeSet<_> = published[3..]
        .iter()
        .map(|(key, record)| {
            assert_eq!(keys(record).len(), 3, "{record}");
            assert_eq!(record["identityId"], json!(key));
            key.clone()
        })
        .collect();
    assert_eq!(identities.len(), 3);
    // A second one within the window is refused.
    let again = client
        .post(format!("{}/v1/tenants/t/bulk-publish", host.base))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 429);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "bulk-publish-too-soon");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_on_nats_never_give_one_key_the_same_sync_count() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let dir = PluginsDir::new();
    dir.plugin("t", "10-sync-sample.wasm", guests::SYNC_SAMPLE)
        .settings("t", SETTINGS);
    let mut hosts = Vec::new();
    for _ in 0..2 {
        let engine = Arc::new(NatsEngine::connect(&server.url).await.unwrap());
        hosts.push(Arc::new(Host::start(tenants(&dir).await, engine).await));
    }
    // 40 syncs of one key, each with its own value, 20 through each host,
    // 8 at a time per host.
    let syncs = 40;
    let mut tasks = tokio::task::JoinSet::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(16));
    for i in 0..syncs {
        let host = hosts[i % 2].clone();
        let limit = limit.clone();
        tasks.spawn(async move {
            let _slot = limit.acquire().await.unwrap();
            let sync = event(json!({"Level": {"newValue": format!("v{i}"), "op": "replace"}}));
            host.sync(&sync).await.status()
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let published = hosts[0].published().await;
    let counts: Vec<u64> = published
        .iter()
        .flat_map(|(_, r)| keys(r))
        .filter(|(key, ..)| key == "Level")
        .map(|(_, _, count, _)| count)
        .collect();
    let distinct: BTreeSet<u64> = counts.iter().copied().collect();
    assert_eq!(
        counts.len(),
        distinct.len(),
        "a sync count given twice: {counts:?}"
    );
    // Every sync changed the key (each value differs from the one before
    // it was applied, unless two syncs applied the same value in a row,
    // which they cannot: the values are all different).
    assert_eq!(distinct, (1..=syncs as u64).collect(), "{counts:?}");
    let dataset: Value = hosts[1]
        .get("/v1/tenants/t/datasets/us-east-1:alice/datasetName")
        .await
        .json()
        .await
        .unwrap();
    let level = dataset["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "Level")
        .unwrap()
        .clone();
    assert_eq!(level["syncCount"], syncs as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_dying_between_state_and_publish_leaves_the_record_in_the_outbox() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let dir = PluginsDir::new();
    dir.plugin("t", "10-sync-sample.wasm", guests::SYNC_SAMPLE)
        .settings("t", SETTINGS);
    let dying = Arc::new(NatsEngine::connect(&server.url).await.unwrap());
    dying
        .crash_before_publish
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let first = Host::start(tenants(&dir).await, dying.clone()).await;
    let seed = event(sync_event()["datasetRecords"].clone());
    // The caller learns that the sync failed...
    let response = first.sync(&seed).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "sync-store-failed", "{body}");
    // ... and the record is not published yet.
    assert!(first.published().await.is_empty());
    drop(first);
    drop(dying);

    // Another host (or this one restarted) completes it on the next
    // touch of the dataset: a read here.
    let engine = Arc::new(NatsEngine::connect(&server.url).await.unwrap());
    let second = Host::start(tenants(&dir).await, engine).await;
    let dataset: Value = second
        .get("/v1/tenants/t/datasets/us-east-1:alice/datasetName")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(dataset["syncCount"], 1);
    let published = second.published().await;
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(keys(&published[0].1).len(), 3);
    // The caller's retry finds the sync applied: nothing new, nothing
    // twice; a real change after it is the next record, in order.
    assert_eq!(second.sync(&seed).await.status(), 200);
    let gold = event(json!({"SampleKey3": {"newValue": "Gold", "op": "replace"}}));
    assert_eq!(second.sync(&gold).await.status(), 200);
    let published = second.published().await;
    let counts: Vec<_> = published
        .iter()
        .map(|(_, r)| r["syncCount"].clone())
        .collect();
    assert_eq!(counts, vec![json!(1), json!(2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_starting_publishes_what_a_dead_host_left_in_an_outbox() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let dir = PluginsDir::new();
    dir.plugin("t", "10-sync-sample.wasm", guests::SYNC_SAMPLE)
        .settings("t", SETTINGS);
    let dying = Arc::new(NatsEngine::connect(&server.url).await.unwrap());
    dying
        .crash_before_publish
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let first = Host::start(tenants(&dir).await, dying.clone()).await;
    let seed = event(sync_event()["datasetRecords"].clone());
    assert_eq!(first.sync(&seed).await.status(), 503);
    drop(first);
    drop(dying);

    // A host starting (the binary) sweeps the outboxes: the record is
    // published though nobody syncs or reads the dataset.
    let host = ServeProcess::start(dir.path(), &["--no-watch", "--streams", &server.url]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let published = loop {
        let url = format!("{}/v1/tenants/t/streams/cognito/records", host.base);
        if reqwest::get(url).await.unwrap().status() == 200 {
            let records = listed(&host.base).await;
            if !records.is_empty() {
                break records;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the record left in the outbox was not published: {}",
            host.last_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0]["syncCount"], 1);
    assert_eq!(keys(&published[0]).len(), 3);
}

/// The published records as the stream route lists them, decoded.
async fn listed(base: &str) -> Vec<Value> {
    let listed: Value = reqwest::get(format!(
        "{base}/v1/tenants/t/streams/cognito/records?limit=1000"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    listed["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let data = r["record"]["kinesis"]["data"].as_str().unwrap();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_during_syncs_restarts_with_state_and_stream_agreeing() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-sync-sample.wasm", guests::SYNC_SAMPLE)
        .settings("t", SETTINGS);
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap().to_owned();
    let args = ["--no-watch", "--data-dir", &data_dir];
    let mut host = ServeProcess::start(dir.path(), &args);
    let base = host.base.clone();
    // Syncs of one key, one after another, until the host is killed.
    let syncing = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut answered = 0u64;
        for i in 0..800 {
            let sync = event(json!({"Level": {"newValue": format!("v{i}"), "op": "replace"}}));
            let sent = client
                .post(format!("{base}/v1/tenants/t/events"))
                .json(&sync)
                .send()
                .await;
            match sent {
                Ok(r) if r.status() == 200 => answered += 1,
                _ => break,
            }
        }
        answered
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    host.child.kill().unwrap(); // SIGKILL
    host.child.wait().unwrap();
    let answered = syncing.await.unwrap();
    assert!(answered > 0, "no sync answered before the kill");
    drop(host);

    let host = ServeProcess::start(dir.path(), &args);
    let dataset: Value = reqwest::get(format!(
        "{}/v1/tenants/t/datasets/us-east-1:alice/datasetName",
        host.base
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let kept = dataset["syncCount"].as_u64().unwrap();
    let published = listed(&host.base).await;
    // Every sync answered is kept; one more may have been kept unanswered
    // (killed between commit and answer). Each kept sync has exactly one
    // record, counted 1, 2, 3, ... in order.
    assert!(
        kept == answered || kept == answered + 1,
        "{kept} kept, {answered} answered"
    );
    let counts: Vec<u64> = published
        .iter()
        .map(|r| r["syncCount"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, (1..=kept).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cognito_stream_view_agrees_with_the_dataset_state() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-sync-sample.wasm", guests::SYNC_SAMPLE)
        .plugin("t", "20-cognito-stream-view.wasm", guests::COGNITO_STREAM_VIEW)
        .settings(
            "t",
            &format!(
                "{SETTINGS}\n[[event-sources]]\nstream = \"cognito\"\nkind = \"kinesis\"\nstarting-position = \"trim-horizon\"\n"
            ),
        );
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap().to_owned();
    let host = ServeProcess::start(dir.path(), &["--no-watch", "--data-dir", &data_dir]);
    let client = reqwest::Client::new();
    let syncs = [
        sync_event()["datasetRecords"].clone(),
        json!({"SampleKey3": {"newValue": "Gold", "op": "replace"}}),
        json!({"Level": {"newValue": "7", "op": "replace"}}),
        json!({"Level": {"newValue": "8", "op": "replace"}}),
        json!({"SampleKey1": {"newValue": "x", "op": "remove"}}),
    ];
    for records in syncs {
        let response = client
            .post(format!("{}/v1/tenants/t/events", host.base))
            .json(&event(records))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // A bulk publish repeats every key: the view must not change.
    let bulk = client
        .post(format!("{}/v1/tenants/t/bulk-publish", host.base))
        .send()
        .await
        .unwrap();
    assert_eq!(bulk.status(), 202);

    let dataset: Value = reqwest::get(format!(
        "{}/v1/tenants/t/datasets/us-east-1:alice/datasetName",
        host.base
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let expected: std::collections::BTreeMap<String, Value> = dataset["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["op"] != "remove")
        .map(|r| (r["key"].as_str().unwrap().to_owned(), r["value"].clone()))
        .collect();
    assert_eq!(expected.len(), 3, "{dataset}");

    // The plugin's `view` lines, reduced like the seed's query: highest
    // syncCount per key, removals dropped.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut latest: std::collections::BTreeMap<String, (u64, Value, String)> =
            Default::default();
        let log = host.last_log();
        let mut rows = 0;
        for line in log.lines() {
            let Some(at) = line.find("view {") else {
                continue;
            };
            let text = &line[at + 5..];
            let end = text.rfind('}').map_or(text.len(), |e| e + 1);
            // The log escapes quotes in the message; undo that.
            let text = text[..end].replace("\\\"", "\"");
            let Ok(row) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            rows += 1;
            let count = row["syncCount"].as_u64().unwrap();
            let key = row["key"].as_str().unwrap().to_owned();
            if latest.get(&key).is_none_or(|(c, ..)| count > *c) {
                latest.insert(
                    key,
                    (
                        count,
                        row["value"].clone(),
                        row["op"].as_str().unwrap().to_owned(),
                    ),
                );
            }
        }
        let view: std::collections::BTreeMap<String, Value> = latest
            .into_iter()
            .filter(|(_, (_, _, op))| op != "remove")
            .map(|(k, (_, v, _))| (k, v))
            .collect();
        // Every record, the bulk publish's too, delivered: the mapping has
        // no lag. (Rows cannot tell: the plugin reduces each batch, and
        // the live and bulk records may come in one batch.)
        let sources: Value = reqwest::get(format!("{}/v1/tenants/t/event-sources", host.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mapping = &sources["eventSources"][0];
        let delivered = mapping["lag"] == 0 && mapping["recordsIn"].as_u64() >= Some(2);
        if view == expected && rows > 0 && delivered {
            break;
        }
        let status: Value = reqwest::get(format!("{}/v1/tenants/t/bulk-publish", host.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            Instant::now() < deadline,
            "the view {view:?} (from {rows} rows) never matched {expected:?} (bulk: {status}):\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
