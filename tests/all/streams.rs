//! Streams and event source mappings on the embedded engine: real records
//! through the real routes, the consumers and the `records-probe` guest
//! (a record whose payload holds `fail` is reported failed, `loop` never
//! returns, `trap` traps; every record is logged as `record <id>`).
//!
//! Deliveries are observed through the plugin's log lines (with `serve`
//! as a child process), the failure destinations read back with the GET
//! route, and the counts of `GET .../event-sources`.

use crate::common::*;
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use triggerfish::dispatch::Dispatcher;
use triggerfish::sources::http::server::{bind, serve, ServerLimits};
use triggerfish::sources::http::{router, Api};
use triggerfish::sources::streams::StreamsSource;
use triggerfish::sources::{stop_signal, Source, StopHandle};
use triggerfish::streams::embedded::EmbeddedEngine;
use triggerfish::streams::Streams;
use triggerfish::tenant::operator::OperatorConfig;
use triggerfish::tenant::registry::Tenants;

/// The HTTP API and the stream consumers in this process, on a data
/// folder of their own; stopped when dropped.
struct Host {
    base: String,
    stop: StopHandle,
    _data: tempfile::TempDir,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

async fn host_with(dir: &PluginsDir, operator: OperatorConfig) -> Host {
    let tenants = Arc::new(
        Tenants::open_with(loader(), operator, dir.path())
            .await
            .unwrap(),
    );
    host_on(tenants).await
}

async fn host_on(tenants: Arc<Tenants>) -> Host {
    let data = tempfile::tempdir().unwrap();
    let streams = Arc::new(Streams::new(Arc::new(
        EmbeddedEngine::open(data.path()).unwrap(),
    )));
    let dispatcher = Arc::new(Dispatcher::new());
    let (stop_handle, stop) = stop_signal();
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let api = Api {
        tenants: tenants.clone(),
        dispatcher: dispatcher.clone(),
        streams: Some(streams.clone()),
        admin: None,
        health: Default::default(),
    };
    let http_stop = stop.clone();
    tokio::spawn(async move {
        serve(
            listener,
            router(api),
            ServerLimits::default(),
            http_stop.stopped(),
        )
        .await
        .unwrap();
    });
    let source = Box::new(StreamsSource {
        streams,
        tenants,
        dispatcher,
    });
    tokio::spawn(source.run(stop));
    Host {
        base,
        stop: stop_handle,
        _data: data,
    }
}

async fn host(dir: &PluginsDir) -> Host {
    host_with(dir, operator()).await
}

/// A tenant `t` (no auth) with the probe plugin and these settings.
fn probe_tenant(dir: &PluginsDir, tenant: &str, settings: &str) {
    dir.plugin(tenant, "10-probe.wasm", guests::RECORDS_PROBE)
        .settings(tenant, &format!("[auth]\nmode = \"none\"\n{settings}"));
}

async fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/tenants/{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(base: &str, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{base}/v1/tenants/{path}"))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn kinesis(records: &[(&str, &str)]) -> Value {
    let records: Vec<Value> = records
        .iter()
        .map(|(key, data)| {
            json!({"Data": base64::engine::general_purpose::STANDARD.encode(data), "PartitionKey": key})
        })
        .collect();
    json!({"Records": records})
}

/// The mapping's counts, by name.
async fn counts(base: &str, tenant: &str, mapping: &str) -> Value {
    let (status, body) = get(base, &format!("{tenant}/event-sources")).await;
    assert_eq!(status, 200, "{body}");
    body["eventSources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == mapping)
        .cloned()
        .unwrap_or_else(|| panic!("no mapping {mapping}: {body}"))
}

/// Waits (at most `limit`) until `done` holds of the mapping's counts.
async fn wait_for_counts(
    base: &str,
    tenant: &str,
    mapping: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let counts = counts(base, tenant, mapping).await;
        if done(&counts) {
            return counts;
        }
        assert!(Instant::now() < deadline, "timed out; counts: {counts}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The messages a (failure destination) stream holds, their bodies
/// parsed as JSON where they are.
async fn messages(base: &str, tenant: &str, stream: &str) -> Vec<Value> {
    let (status, body) = get(
        base,
        &format!("{tenant}/streams/{stream}/records?limit=1000"),
    )
    .await;
    if status == 404 {
        return vec![];
    }
    assert_eq!(status, 200, "{body}");
    body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let text = r["record"]["body"].as_str().unwrap_or_default();
            serde_json::from_str(text).unwrap_or_else(|_| json!(text))
        })
        .collect()
}

/// How often each record id was logged by the probe, and the order ids
/// were first seen in.
fn deliveries(log: &str) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut seen = BTreeMap::new();
    let mut order = Vec::new();
    for line in log.lines() {
        if let Some((_, id)) = line.rsplit_once("plugin: record ") {
            let id = id.trim().to_owned();
            let n = seen.entry(id.clone()).or_insert(0);
            if *n == 0 {
                order.push(id);
            }
            *n += 1;
        }
    }
    (seen, order)
}

async fn wait_for_log(serve: &ServeProcess, limit: Duration, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + limit;
    while !done(&serve.last_log()) {
        assert!(Instant::now() < deadline, "timed out: {}", serve.last_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_record_holds_back_its_shard_from_itself_on() {
    holds_back_from_the_failed_record(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_parallelization_a_failed_record_holds_back_only_its_lane() {
    holds_back_from_the_failed_record(3).await;
}

/// Fails record 7 of 12 (keys a, b, c in turn) until it is given up on:
/// every record before it in its lane is delivered once, it and every
/// later record of its lane three times (two retries), every other record
/// once, first deliveries in order per key.
async fn holds_back_from_the_failed_record(lanes: u32) {
    use triggerfish::streams::engine::lane_of;
    let dir = PluginsDir::new();
    probe_tenant(
        &dir,
        "t",
        &format!(
            "[[event-sources]]\nstream = \"orders\"\nkind = \"kinesis\"\n\
             report-batch-item-failures = true\nmax-retry-attempts = 2\n\
             batching-window-ms = 1000\non-failure = \"orders-dlq\"\nparallelization = {lanes}\n"
        ),
    );
    let serve = ServeProcess::start(dir.path(), &[]);
    let keys = ["a", "b", "c"];
    let records: Vec<(String, String)> = (1..=12)
        .map(|i| {
            let key = keys[i % 3];
            let data = if i == 7 {
                "r7 fail".to_owned()
            } else {
                format!("r{i}")
            };
            (key.to_owned(), data)
        })
        .collect();
    let pairs: Vec<(&str, &str)> = records
        .iter()
        .map(|(k, d)| (k.as_str(), d.as_str()))
        .collect();
    let (status, answer) = post(&serve.base, "t/streams/orders/records", &kinesis(&pairs)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["FailedRecordCount"], 0);
    let placed: Vec<(String, String)> = answer["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["SequenceNumber"].as_str().unwrap().to_owned(),
                r["ShardId"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let (failed_seq, failed_shard) = placed[6].clone();
    let counts = wait_for_counts(&serve.base, "t", "orders", Duration::from_secs(30), |c| {
        c["lag"] == 0 && c["sentToFailureDestination"].as_u64() > Some(0)
    })
    .await;
    let lane = |i: usize| lane_of(&records[i].0, lanes);
    let held: Vec<&(String, String)> = placed
        .iter()
        .enumerate()
        .filter(|(i, (seq, shard))| {
            *shard == failed_shard
                && lane(*i) == lane(6)
                && seq.parse::<u64>().unwrap() >= failed_seq.parse().unwrap()
        })
        .map(|(_, p)| p)
        .collect();
    let (seen, order) = deliveries(&serve.last_log());
    for (seq, shard) in &placed {
        let expected = if held.contains(&&(seq.clone(), shard.clone())) {
            3
        } else {
            1
        };
        assert_eq!(
            seen.get(seq),
            Some(&expected),
            "record {seq} of {shard}; failed {failed_seq}; seen {seen:?}"
        );
    }
    // Per key, first deliveries come in sequence order.
    for key in keys {
        let of_key: Vec<u64> = order
            .iter()
            .filter(|id| records[placed.iter().position(|(s, _)| s == *id).unwrap()].0 == key)
            .map(|id| id.parse().unwrap())
            .collect();
        assert!(of_key.windows(2).all(|w| w[0] < w[1]), "{key}: {of_key:?}");
    }
    let dlq = messages(&serve.base, "t", "orders-dlq").await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let info = &dlq[0]["KinesisBatchInfo"];
    assert_eq!(info["startSequenceNumber"], json!(failed_seq));
    assert_eq!(info["batchSize"], json!(held.len()));
    assert_eq!(
        dlq[0]["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(counts["processed"], json!(12 - held.len()));
    assert_eq!(counts["sentToFailureDestination"], json!(held.len()));
    assert_eq!(counts["retried"], json!(2 * held.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_batch_loses_nothing() {
    let _timing = timing_sensitive().await;
    let dir = PluginsDir::new();
    probe_tenant(
        &dir,
        "t",
        "[limits]\ntimeout-ms = 1000\n\
         [[event-sources]]\nstream = \"orders\"\nkind = \"kinesis\"\nbatching-window-ms = 500\n\
         bisect-batch-on-error = true\nmax-retry-attempts = 0\non-failure = \"orders-dlq\"\n",
    );
    let data = ["a", "b", "loop", "d", "e", "f"];
    let serve = ServeProcess::start(dir.path(), &[]);
    let pairs: Vec<(&str, &str)> = data.iter().map(|d| ("k", *d)).collect();
    let (status, answer) = post(&serve.base, "t/streams/orders/records", &kinesis(&pairs)).await;
    assert_eq!(status, 200, "{answer}");
    // The plugin has the batch and loops on its third record: kill it now.
    wait_for_log(&serve, Duration::from_secs(20), |log| {
        log.contains("plugin: record 3")
    })
    .await;
    let mut serve = serve;
    serve.child.kill().unwrap(); // SIGKILL
    serve.child.wait().unwrap();
    drop(serve);
    let serve = ServeProcess::start(dir.path(), &[]);
    let counts = wait_for_counts(&serve.base, "t", "orders", Duration::from_secs(30), |c| {
        c["lag"] == 0 && c["sentToFailureDestination"] == 1
    })
    .await;
    // Every record reaches the plugin again after the restart (1 and 2
    // were delivered before the kill too: at least once, duplicates allowed).
    wait_for_log(&serve, Duration::from_secs(10), |log| {
        let (seen, _) = deliveries(log);
        ["1", "2", "4", "5", "6"]
            .iter()
            .all(|seq| seen.contains_key(*seq))
    })
    .await;
    let dlq = messages(&serve.base, "t", "orders-dlq").await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0]["KinesisBatchInfo"]["startSequenceNumber"], "3");
    assert_eq!(dlq[0]["KinesisBatchInfo"]["batchSize"], 1);
    // The loop ends on its budget: the clock or the fuel, whichever first.
    let kind = dlq[0]["responseContext"]["errorKind"].as_str().unwrap();
    assert!(["timeout", "out-of-fuel"].contains(&kind), "{kind}");
    assert_eq!(counts["processed"], 5);
    // Every record stays readable.
    let (_, stream) = get(&serve.base, "t/streams/orders/records").await;
    assert_eq!(stream["records"].as_array().unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_failures_come_back_with_growing_receive_counts_then_dead_letter() {
    let dir = PluginsDir::new();
    probe_tenant(
        &dir,
        "t",
        "[[event-sources]]\nstream = \"jobs\"\nkind = \"sqs\"\nreport-batch-item-failures = true\n\
         visibility-timeout-s = 1\nmax-receive-count = 2\non-failure = \"jobs-dlq\"\n",
    );
    let host = host(&dir).await;
    let body = json!({"Messages": [
        {"Body": "ok", "MessageAttributes": {"origin": {"DataType": "String", "StringValue": "test"}}},
        {"Body": "please fail"},
    ]});
    let (status, answer) = post(&host.base, "t/streams/jobs/records", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["Successful"].as_array().unwrap().len(), 2);
    assert_eq!(
        answer["Successful"][0]["MD5OfMessageBody"],
        "444bcb3a3fcf8389296c49467f27e1d6"
    );
    let counts = wait_for_counts(&host.base, "t", "jobs", Duration::from_secs(20), |c| {
        c["sentToFailureDestination"] == 1
    })
    .await;
    assert_eq!(
        (
            &counts["processed"],
            &counts["failed"],
            &counts["retried"],
            &counts["lag"]
        ),
        (&json!(1), &json!(2), &json!(1), &json!(0)),
        "{counts}"
    );
    assert_eq!(
        messages(&host.base, "t", "jobs-dlq").await,
        vec![json!("please fail")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_and_s3_failures_reach_their_destinations() {
    let dir = PluginsDir::new();
    probe_tenant(
        &dir,
        "t",
        "[[event-sources]]\nstream = \"table\"\nkind = \"dynamodb\"\nreport-batch-item-failures = true\n\
         max-retry-attempts = 0\non-failure = \"table-dlq\"\n\
         [[event-sources]]\nstream = \"uploads\"\nkind = \"s3\"\non-failure = \"uploads-dlq\"\n",
    );
    let host = host(&dir).await;
    let changes = json!({"Records": [
        {"eventName": "INSERT", "Keys": {"Id": {"N": "1"}}, "NewImage": {"Id": {"N": "1"}, "Note": {"S": "fine"}}},
        {"eventName": "MODIFY", "Keys": {"Id": {"N": "2"}}, "NewImage": {"Id": {"N": "2"}, "Note": {"S": "fail"}},
         "OldImage": {"Id": {"N": "2"}}},
    ]});
    let (status, answer) = post(&host.base, "t/streams/table/records", &changes).await;
    assert_eq!(status, 200, "{answer}");
    let notification = json!({"EventName": "s3:ObjectCreated:Put", "Key": "photos/fail.jpg", "Records": [{
        "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "", "eventTime": "2026-11-23T10:00:00.000Z",
        "eventName": "s3:ObjectCreated:Put", "userIdentity": {"principalId": "minio"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"}, "responseElements": {},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "Config",
               "bucket": {"name": "photos", "ownerIdentity": {"principalId": "minio"}, "arn": "arn:aws:s3:::photos"},
               "object": {"key": "fail.jpg", "size": 5, "eTag": "abc", "sequencer": "17"}}}]});
    let (status, answer) = post(&host.base, "t/streams/uploads/records", &notification).await;
    assert_eq!(status, 200, "{answer}");
    wait_for_counts(&host.base, "t", "table", Duration::from_secs(20), |c| {
        c["lag"] == 0
    })
    .await;
    let dlq = messages(&host.base, "t", "table-dlq").await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0]["DDBStreamBatchInfo"]["batchSize"], 1);
    assert_eq!(
        dlq[0]["Records"][0]["dynamodb"]["NewImage"]["Note"]["S"],
        "fail"
    );
    assert_eq!(dlq[0]["Records"][0]["eventName"], "MODIFY");
    let counts = wait_for_counts(&host.base, "t", "uploads", Duration::from_secs(20), |c| {
        c["sentToFailureDestination"] == 1
    })
    .await;
    assert_eq!(
        (&counts["failed"], &counts["retried"]),
        (&json!(3), &json!(2)),
        "{counts}"
    );
    let dlq = messages(&host.base, "t", "uploads-dlq").await;
    assert_eq!(
        dlq[0]["requestPayload"]["Records"][0]["s3"]["object"]["key"],
        "fail.jpg"
    );
    assert_eq!(dlq[0]["requestContext"]["condition"], "RetriesExhausted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_tenant_does_not_hold_up_another_tenants_stream() {
    let _timing = timing_sensitive().await;
    let dir = PluginsDir::new();
    probe_tenant(
        &dir,
        "slow",
        "[limits]\ntimeout-ms = 1000\n\
         [[event-sources]]\nstream = \"s\"\nkind = \"kinesis\"\nparallelization = 2\n",
    );
    probe_tenant(
        &dir,
        "fast",
        "[[event-sources]]\nstream = \"s\"\nkind = \"kinesis\"\n",
    );
    let host = host(&dir).await;
    let loops: Vec<(String, &str)> = (0..16).map(|i| (format!("k{i}"), "loop")).collect();
    let loops: Vec<(&str, &str)> = loops.iter().map(|(k, d)| (k.as_str(), *d)).collect();
    assert_eq!(
        post(&host.base, "slow/streams/s/records", &kinesis(&loops))
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 0..3 {
        let data = format!("fine {round}");
        let (status, _) = post(
            &host.base,
            "fast/streams/s/records",
            &kinesis(&[("k", &data)]),
        )
        .await;
        assert_eq!(status, 200);
        let started = Instant::now();
        wait_for_counts(&host.base, "fast", "s", Duration::from_secs(10), |c| {
            c["processed"] == round + 1
        })
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    // Meanwhile the looping tenant's batches end on their budget and fail.
    let slow = wait_for_counts(&host.base, "slow", "s", Duration::from_secs(10), |c| {
        c["failed"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(slow["processed"], 0, "{slow}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_refused_with_the_reason() {
    let dir = PluginsDir::new();
    probe_tenant(&dir, "t", "");
    let host = host(&dir).await;
    let refused = |status: u16, kind: &'static str, needle: &'static str| {
        move |(got, body): (u16, Value)| {
            assert_eq!(got, status, "{body}");
            assert_eq!(body["error"]["kind"], kind, "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(needle), "{message}");
        }
    };
    let path = "t/streams/orders/records";
    let b = &host.base;
    refused(
        400,
        "invalid-records",
        "Records[0].Data is not valid base64",
    )(
        post(
            b,
            path,
            &json!({"Records": [{"Data": "%%%", "PartitionKey": "k"}]}),
        )
        .await,
    );
    refused(400, "invalid-records", "Records[0]: missing PartitionKey")(
        post(b, path, &json!({"Records": [{"Data": "aGk="}]})).await,
    );
    let many: Vec<(&str, &str)> = (0..501).map(|_| ("k", "x")).collect();
    refused(400, "too-many-records", "limit is 500")(post(b, path, &kinesis(&many)).await);
    let big = "x".repeat((1 << 20) + 1);
    refused(413, "record-too-large", "Records[0]")(post(b, path, &kinesis(&[("k", &big)])).await);
    let huge: Vec<(&str, &str)> = (0..6).map(|_| ("k", &big[..900 << 10])).collect();
    refused(413, "payload-too-large", "limit is")(post(b, path, &kinesis(&huge)).await);
    // Created as a Kinesis stream by the first good request.
    assert_eq!(post(b, path, &kinesis(&[("k", "hi")])).await.0, 200);
    refused(409, "kind-mismatch", "kinesis stream")(
        post(b, path, &json!({"Messages": [{"Body": "x"}]})).await,
    );
    refused(400, "invalid-records", "cannot tell the stream's kind")(
        post(
            b,
            "t/streams/fresh/records",
            &json!({"Records": [{"x": 1}]}),
        )
        .await,
    );
    refused(400, "invalid-stream-name", "not a stream name")(
        post(b, "t/streams/..x/records", &kinesis(&[("k", "hi")])).await,
    );
    let response = reqwest::Client::new()
        .post(format!("{b}/v1/tenants/{path}"))
        .body("{\"Records\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    refused(404, "unknown-stream", "no stream")(get(b, "t/streams/nothing/records").await);
    refused(400, "invalid-request", "limit")(get(b, "t/streams/orders/records?limit=0").await);
    refused(400, "invalid-request", "unknown query parameter")(
        get(b, "t/streams/orders/records?from=1").await,
    );
    let (status, read) = get(b, "t/streams/orders/records?after=0&limit=5").await;
    assert_eq!(status, 200);
    assert_eq!(read["records"][0]["record"]["kinesis"]["data"], "aGk=");
    assert_eq!(
        read["records"][0]["record"]["eventSourceARN"],
        "arn:triggerfish:kinesis:local:t:stream/orders"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_routes_take_the_tenants_keys() {
    let dir = PluginsDir::new();
    let key = "stream-key-for-acme";
    dir.plugin("acme", "10-probe.wasm", guests::RECORDS_PROBE)
        .settings(
            "acme",
            &format!(
                "[auth]\nkeys = [\"{}\"]\n",
                triggerfish::auth::hash_key(key)
            ),
        );
    probe_tenant(&dir, "other", "");
    let host = host(&dir).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/tenants/acme/streams/s/records", host.base);
    let body = kinesis(&[("k", "hi")]);
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(client.post(&url).json(&body).send().await.unwrap()),
        401
    );
    let wrong = client
        .post(&url)
        .bearer_auth("nope")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(status(wrong), 401);
    let right = client
        .post(&url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(status(right), 200);
    assert_eq!(status(client.get(&url).send().await.unwrap()), 401);
    assert_eq!(
        status(client.get(&url).bearer_auth(key).send().await.unwrap()),
        200
    );
    let sources = format!("{}/v1/tenants/acme/event-sources", host.base);
    assert_eq!(status(client.get(&sources).send().await.unwrap()), 401);
    // A tenant never reads another's stream: its own has that name unused.
    let (code, _) = get(&host.base, "other/streams/s/records").await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_quotas_are_the_operators() {
    let dir = PluginsDir::new();
    probe_tenant(&dir, "t", "");
    let operator = OperatorConfig::parse(
        "[defaults.quotas]\nstream-records-per-second = 20\nstream-stored-mib = 1\nstream-retention-s = 1\n",
        128 << 20,
    )
    .unwrap();
    let host = host_with(&dir, operator).await;
    let b = &host.base;
    let ten: Vec<(&str, &str)> = (0..10).map(|_| ("k", "x")).collect();
    assert_eq!(post(b, "t/streams/s/records", &kinesis(&ten)).await.0, 200);
    assert_eq!(post(b, "t/streams/s/records", &kinesis(&ten)).await.0, 200);
    let (status, body) = post(b, "t/streams/s/records", &kinesis(&ten)).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("stream-records-per-second"));
    // 1 MiB stored at most: a second half-MiB record does not fit.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let half = "x".repeat(600 << 10);
    assert_eq!(
        post(b, "t/streams/big/records", &kinesis(&[("k", &half)]))
            .await
            .0,
        200
    );
    let (status, body) = post(b, "t/streams/big/records", &kinesis(&[("k", &half)])).await;
    assert_eq!(status, 507, "{body}");
    let (_, sources) = get(b, "t/event-sources").await;
    assert_eq!(sources["storedBytesQuota"], 1 << 20);
    assert!(
        sources["storedBytes"].as_u64().unwrap() > 600 << 10,
        "{sources}"
    );
    assert_eq!(body["error"]["kind"], "stored-bytes-quota");
    // Retention (1 s) trims the records, and frees the space.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, read) = get(b, "t/streams/big/records").await;
        if read["records"].as_array().is_some_and(|r| r.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "not trimmed: {read}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        post(b, "t/streams/big/records", &kinesis(&[("k", &half)]))
            .await
            .0,
        200
    );
}

/// Each kind's record as a consumer builds it parses as Lambda's own type
/// (`aws_lambda_events`), and prints back with the same values.
#[test]
fn consumer_records_are_lambdas_shapes() {
    use aws_lambda_events::event::dynamodb::Event as DynamoDbEvent;
    use aws_lambda_events::event::kinesis::KinesisEvent;
    use aws_lambda_events::event::s3::S3Event;
    use aws_lambda_events::event::sqs::SqsEvent;
    use triggerfish::streams::engine::StoredRecord;
    use triggerfish::streams::records::{lambda_record, Receipt};
    use triggerfish::streams::{StreamId, StreamKind};

    let id = StreamId::new("acme", "orders");
    let stored = |key: &str, body: Value| StoredRecord {
        seq: 42,
        partition: 2,
        key: key.into(),
        arrived_ms: 1_700_000_000_123,
        body,
    };
    let event = |record: Value| json!({"Records": [record]});
    let same = |ours: &Value, printed: &Value, paths: &[&str]| {
        for path in paths {
            assert_eq!(
                ours.pointer(path),
                printed.pointer(path),
                "{path}: {ours} vs {printed}"
            );
        }
    };

    let ours = event(lambda_record(
        &id,
        StreamKind::Kinesis,
        &stored("k", json!({"data": "aGVsbG8="})),
        None,
    ));
    let parsed: KinesisEvent = serde_json::from_value(ours.clone()).unwrap();
    assert_eq!(parsed.records[0].kinesis.data.0, b"hello");
    assert_eq!(
        parsed.records[0]
            .kinesis
            .approximate_arrival_timestamp
            .0
            .timestamp_millis(),
        1_700_000_000_123
    );
    let printed = serde_json::to_value(&parsed).unwrap();
    same(
        &ours,
        &printed,
        &[
            "/Records/0/kinesis/partitionKey",
            "/Records/0/kinesis/sequenceNumber",
            "/Records/0/kinesis/data",
            "/Records/0/kinesis/kinesisSchemaVersion",
            "/Records/0/eventID",
            "/Records/0/eventName",
            "/Records/0/eventSource",
            "/Records/0/eventSourceARN",
            "/Records/0/awsRegion",
            "/Records/0/invokeIdentityArn",
        ],
    );
    assert_eq!(ours["Records"][0]["eventID"], "shardId-000000000002:42");

    let change = json!({"eventName": "MODIFY", "Keys": {"Id": {"N": "1"}}, "NewImage": {"Id": {"N": "1"}, "A": {"S": "x"}},
                        "OldImage": {"Id": {"N": "1"}}, "StreamViewType": "NEW_AND_OLD_IMAGES"});
    let ours = event(lambda_record(
        &id,
        StreamKind::Dynamodb,
        &stored("{}", change),
        None,
    ));
    let parsed: DynamoDbEvent = serde_json::from_value(ours.clone()).unwrap();
    assert_eq!(
        parsed.records[0].change.sequence_number.as_deref(),
        Some("42")
    );
    let printed = serde_json::to_value(&parsed).unwrap();
    same(
        &ours,
        &printed,
        &[
            "/Records/0/eventName",
            "/Records/0/eventSource",
            "/Records/0/eventVersion",
            "/Records/0/eventID",
            "/Records/0/eventSourceARN",
            "/Records/0/dynamodb/Keys",
            "/Records/0/dynamodb/NewImage",
            "/Records/0/dynamodb/OldImage",
            "/Records/0/dynamodb/SequenceNumber",
            "/Records/0/dynamodb/StreamViewType",
        ],
    );

    let message = json!({"body": "hello", "messageAttributes": {"a": {"stringValue": "b", "binaryValue": null,
        "stringListValues": [], "binaryListValues": [], "dataType": "String"}}});
    let receipt = Receipt {
        receive_count: 2,
        first_receive_ms: 1_700_000_001_000,
    };
    let ours = event(lambda_record(
        &id,
        StreamKind::Sqs,
        &stored("", message),
        Some(receipt),
    ));
    let parsed: SqsEvent = serde_json::from_value(ours.clone()).unwrap();
    assert_eq!(
        parsed.records[0].md5_of_body.as_deref(),
        Some("5d41402abc4b2a76b9719d911017c592")
    );
    assert_eq!(parsed.records[0].attributes["ApproximateReceiveCount"], "2");
    let printed = serde_json::to_value(&parsed).unwrap();
    same(
        &ours,
        &printed,
        &[
            "/Records/0/messageId",
            "/Records/0/receiptHandle",
            "/Records/0/body",
            "/Records/0/md5OfBody",
            "/Records/0/eventSource",
            "/Records/0/eventSourceARN",
            "/Records/0/awsRegion",
            "/Records/0/attributes",
            "/Records/0/messageAttributes/a/stringValue",
            "/Records/0/messageAttributes/a/dataType",
        ],
    );

    let notification = json!({"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "local",
        "eventTime": "2026-11-23T10:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "p"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "r", "x-amz-id-2": "i"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "c",
               "bucket": {"name": "photos", "ownerIdentity": {"principalId": "p"}, "arn": "arn:aws:s3:::photos"},
               "object": {"key": "a.jpg", "size": 5, "eTag": "e", "sequencer": "17"}}});
    let ours = event(lambda_record(
        &id,
        StreamKind::S3,
        &stored("photos/a.jpg", notification),
        None,
    ));
    let parsed: S3Event = serde_json::from_value(ours.clone()).unwrap();
    assert_eq!(parsed.records[0].s3.object.key.as_deref(), Some("a.jpg"));
    let printed = serde_json::to_value(&parsed).unwrap();
    same(
        &ours,
        &printed,
        &[
            "/Records/0/eventName",
            "/Records/0/eventSource",
            "/Records/0/s3/bucket/name",
            "/Records/0/s3/object/key",
            "/Records/0/s3/object/size",
            "/Records/0/s3/object/eTag",
            "/Records/0/s3/object/sequencer",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mappings_follow_tenant_reloads() {
    let dir = PluginsDir::new();
    probe_tenant(&dir, "t", "");
    let tenants = Arc::new(
        Tenants::open_with(loader(), operator(), dir.path())
            .await
            .unwrap(),
    );
    let host = host_on(tenants.clone()).await;
    let b = &host.base;
    assert_eq!(
        post(
            b,
            "t/streams/orders/records",
            &kinesis(&[("k", "one"), ("k", "two")])
        )
        .await
        .0,
        200
    );
    let (_, listed) = get(b, "t/event-sources").await;
    assert_eq!(listed["eventSources"], json!([]));
    // A mapping added starts from the trim horizon.
    probe_tenant(
        &dir,
        "t",
        "[[event-sources]]\nstream = \"orders\"\nkind = \"kinesis\"\n",
    );
    tenants.reload_all().await.unwrap();
    wait_for_counts(b, "t", "orders", Duration::from_secs(10), |c| {
        c["processed"] == 2
    })
    .await;
    // Disabled, it stops: new records wait, as lag.
    probe_tenant(
        &dir,
        "t",
        "[[event-sources]]\nstream = \"orders\"\nkind = \"kinesis\"\nenabled = false\n",
    );
    tenants.reload_all().await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        post(b, "t/streams/orders/records", &kinesis(&[("k", "three")]))
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let counts = counts(b, "t", "orders").await;
    assert_eq!(
        (&counts["processed"], &counts["lag"]),
        (&json!(2), &json!(1)),
        "{counts}"
    );
    // Enabled again, it goes on from its checkpoint.
    probe_tenant(
        &dir,
        "t",
        "[[event-sources]]\nstream = \"orders\"\nkind = \"kinesis\"\n",
    );
    tenants.reload_all().await.unwrap();
    wait_for_counts(b, "t", "orders", Duration::from_secs(10), |c| {
        c["processed"] == 3 && c["lag"] == 0
    })
    .await;
}
