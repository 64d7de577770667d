//! Stream records through the events and Lambda routes: Lambda's own
//! sample events (from the `aws_lambda_events` crate, parsed and printed
//! by its types) through a real plugin, and the partial batch responses
//! read back by the same types.

use crate::common::*;
use aws_lambda_events::event::dynamodb::Event as DynamoDbEvent;
use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_lambda_events::event::streams::{DynamoDbEventResponse, KinesisEventResponse};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::path::PathBuf;
use triggerfish::dispatch::ErrorKind;

/// A sample event of the `aws_lambda_events` crate, as its type reads it.
pub(crate) fn sample<T: DeserializeOwned>(name: &str) -> T {
    static FIXTURES: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = FIXTURES.get_or_init(|| {
        let output = std::process::Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo metadata");
        let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
        let manifest = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "aws_lambda_events")
            .expect("aws_lambda_events is a dependency")["manifest_path"]
            .as_str()
            .unwrap()
            .to_owned();
        PathBuf::from(manifest)
            .parent()
            .unwrap()
            .join("src/fixtures")
    });
    let text = std::fs::read_to_string(dir.join(name)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The event JSON the crate's type prints.
pub(crate) fn printed(event: &impl serde::Serialize) -> Value {
    serde_json::to_value(event).unwrap()
}

async fn probe_tenant() -> (PluginsDir, Server) {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-probe.wasm", guests::RECORDS_PROBE)
        .settings("t", "[auth]\nmode = \"none\"\n");
    let server = Server::start(tenants(&dir).await).await;
    (dir, server)
}

/// Posts `event` to both routes and returns the two answers, which must
/// be equal.
async fn through_both_routes(server: &Server, event: &Value) -> Value {
    let client = reqwest::Client::new();
    let mut answers = Vec::new();
    for path in ["v1/tenants/t/events", "2015-03-31/functions/t/invocations"] {
        let response = client
            .post(format!("{}/{path}", server.base))
            .json(event)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(response.headers().get("x-amz-function-error").is_none());
        answers.push(response.json::<Value>().await.unwrap());
    }
    assert_eq!(answers[0], answers[1], "both routes answer alike");
    answers.pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambdas_sample_events_get_lambdas_partial_batch_responses() {
    let (_dir, server) = probe_tenant().await;

    // Kinesis: the second record's data says `fail`.
    let mut kinesis: KinesisEvent = sample("example-kinesis-event.json");
    kinesis.records[1].kinesis.data = aws_lambda_events::encodings::Base64Data(b"fail".to_vec());
    let failed = kinesis.records[1].kinesis.sequence_number.clone();
    let answer = through_both_routes(&server, &printed(&kinesis)).await;
    let response: KinesisEventResponse = serde_json::from_value(answer).unwrap();
    let ids: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(ids, [Some(failed)]);
    // Nothing failing: an empty list, which Lambda reads as all done.
    let mut all_good = kinesis.clone();
    all_good.records[1].kinesis.data = aws_lambda_events::encodings::Base64Data(b"ok".to_vec());
    let answer = through_both_routes(&server, &printed(&all_good)).await;
    assert_eq!(answer, json!({"batchItemFailures": []}));

    // DynamoDB: the first record's new image holds a `fail` value.
    let dynamodb_json = {
        let mut event: Value = printed(&sample::<DynamoDbEvent>("example-dynamodb-event.json"));
        event["Records"][0]["dynamodb"]["NewImage"]["note"] = json!({"S": "fail"});
        event["Records"][1]["dynamodb"]["SequenceNumber"] = json!("2");
        event
    };
    let _: DynamoDbEvent = serde_json::from_value(dynamodb_json.clone()).unwrap();
    let answer = through_both_routes(&server, &dynamodb_json).await;
    let response: DynamoDbEventResponse = serde_json::from_value(answer).unwrap();
    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!(
        response.batch_item_failures[0].item_identifier.as_deref(),
        Some("1405400000000002063282832")
    );

    // SQS: a batch of three, the middle one failing.
    let mut sqs: SqsEvent = sample("example-sqs-event.json");
    let template = sqs.records[0].clone();
    sqs.records = ["first", "fail here", "third"]
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let mut message = template.clone();
            message.message_id = Some(format!("m-{i}"));
            message.body = Some((*body).to_owned());
            message
        })
        .collect();
    let answer = through_both_routes(&server, &printed(&sqs)).await;
    let response: SqsBatchResponse = serde_json::from_value(answer).unwrap();
    let ids: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(ids, ["m-1"]);

    // S3: no partial failures; a good event answers none.
    let s3: S3Event = sample("example-s3-event.json");
    let answer = through_both_routes(&server, &printed(&s3)).await;
    assert_eq!(answer, json!({"batchItemFailures": []}));
}

/// The plugin's description of what it received (its `echo` mode).
async fn echoed(tenant: &triggerfish::tenant::Tenant, event: Value) -> Value {
    let error = chain_error(tenant, event).await;
    assert_eq!(error.kind, ErrorKind::Denied, "{error}");
    serde_json::from_str(&error.message).expect("the probe echoes JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_receives_every_field_of_lambdas_sample_events() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-probe.wasm", guests::RECORDS_PROBE);
    let tenant = tenant(&dir, "t").await;

    let mut kinesis: KinesisEvent = sample("example-kinesis-event.json");
    kinesis.records[0].kinesis.data = aws_lambda_events::encodings::Base64Data(b"echo".to_vec());
    let seen = echoed(&tenant, printed(&kinesis)).await;
    for (record, seen) in kinesis.records.iter().zip(seen.as_array().unwrap()) {
        assert_eq!(seen["partitionKey"], json!(record.kinesis.partition_key));
        assert_eq!(
            seen["sequenceNumber"],
            json!(record.kinesis.sequence_number)
        );
        assert_eq!(
            seen["data"],
            json!(String::from_utf8(record.kinesis.data.0.clone()).unwrap())
        );
        assert_eq!(
            seen["approximateArrivalTimestamp"].as_f64().unwrap(),
            record
                .kinesis
                .approximate_arrival_timestamp
                .0
                .timestamp_millis() as f64
                / 1000.0
        );
        assert_eq!(seen["eventID"], json!(record.event_id));
        assert_eq!(seen["eventSourceARN"], json!(record.event_source_arn));
        assert_eq!(seen["awsRegion"], json!(record.aws_region));
    }
    assert_eq!(seen[1]["data"], "Hello World");

    let mut dynamodb = printed(&sample::<DynamoDbEvent>("example-dynamodb-event.json"));
    dynamodb["Records"][1]["dynamodb"]["NewImage"]["String"] = json!({"S": "echo"});
    let seen = echoed(&tenant, dynamodb.clone()).await;
    let second = &seen[1];
    assert_eq!(second["eventName"], "INSERT");
    assert_eq!(second["keys"], json!({"val": "data", "key": "binary"}));
    assert_eq!(second["newImage"]["Map"], json!({"Name": "Joe", "Age": 35}));
    // The sample's own number, not an approximation of pi.
    #[allow(clippy::approx_constant)]
    let list = json!(["Cookies", "Coffee", 3.14159]);
    assert_eq!(second["newImage"]["List"], list);
    assert_eq!(second["newImage"]["NumberSet"], json!([1234, 567.8]));
    assert_eq!(second["newImage"]["Null"], Value::Null);
    assert_eq!(second["newImage"]["Boolean"], true);
    assert_eq!(second["sequenceNumber"], "1405400000000002063282832");
    assert_eq!(second["sizeBytes"], 54);
    assert_eq!(second["streamViewType"], "NEW_AND_OLD_IMAGES");
    assert_eq!(second["approximateCreationDateTime"], 1480642020.0);
    assert_eq!(
        second["eventSourceARN"],
        dynamodb["Records"][1]["eventSourceARN"]
    );

    let mut sqs: SqsEvent = sample("example-sqs-event.json");
    sqs.records[0].body = Some("echo".into());
    let seen = echoed(&tenant, printed(&sqs)).await;
    let message = &seen[0];
    assert_eq!(message["messageId"], "MessageID_1");
    assert_eq!(message["receiptHandle"], "MessageReceiptHandle");
    assert_eq!(message["attributes"]["ApproximateReceiveCount"], "2");
    assert_eq!(
        message["attributes"]["SenderId"],
        "AROAIWPX5BD2BHG722MW4:sender"
    );
    let binary = &message["messageAttributes"]["Attribute3"];
    assert_eq!(binary["dataType"], "Binary");
    assert_eq!(binary["binaryValue"], json!(b"1100".to_vec()));
    assert_eq!(binary["stringListValues"], json!(["abc", "123"]));
    assert_eq!(binary["binaryListValues"], json!([b"0", b"1", b"0"]));
    assert_eq!(
        message["messageAttributes"]["Attribute2"]["stringValue"],
        "123"
    );
    assert_eq!(message["md5OfBody"], "fce0ea8dd236ccb3ed9b37dae260836f");

    let mut s3: S3Event = sample("example-s3-event.json");
    s3.records[0].s3.object.key = Some("echo/photo.jpg".into());
    let seen = echoed(&tenant, printed(&s3)).await;
    let record = &s3.records[0];
    assert_eq!(seen[0]["key"], "echo/photo.jpg");
    assert_eq!(seen[0]["bucket"], json!(record.s3.bucket.name));
    assert_eq!(seen[0]["size"], json!(record.s3.object.size));
    assert_eq!(seen[0]["eTag"], json!(record.s3.object.e_tag));
    assert_eq!(seen[0]["sequencer"], json!(record.s3.object.sequencer));
    assert_eq!(seen[0]["eventName"], json!(record.event_name));
    assert_eq!(
        seen[0]["principalId"],
        json!(record.principal_id.principal_id)
    );
}

fn sqs_batch(bodies: &[&str]) -> Value {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            json!({
                "messageId": format!("m-{i}"), "receiptHandle": "r", "body": body,
                "attributes": {}, "messageAttributes": {}, "md5OfBody": "",
                "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:local:0:q",
                "awsRegion": "local"
            })
        })
        .collect();
    json!({ "Records": records })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_failed_by_one_plugin_is_not_passed_to_the_next() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-probe.wasm", guests::RECORDS_PROBE)
        .plugin("t", "20-echo.wasm", guests::RECORDS_PROBE)
        .settings("t", "[plugins.20-echo.config]\necho = \"true\"\n");
    let tenant = tenant(&dir, "t").await;
    let seen = echoed(&tenant, sqs_batch(&["a", "fail", "c"])).await;
    let ids: Vec<&str> = seen
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["m-0", "m-2"]);

    // When every record failed, the next plugin is not called at all.
    let answer = invoke(&tenant, sqs_batch(&["fail", "fail too"]))
        .await
        .unwrap();
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": "m-0"}, {"itemIdentifier": "m-1"}]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_fails_whole_on_an_error_a_trap_garbage_or_a_loop() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-probe.wasm", guests::RECORDS_PROBE)
        .settings("t", "[limits]\ntimeout-ms = 300\nattempts = 1\n");
    let tenant = tenant(&dir, "t").await;
    let error = chain_error(&tenant, sqs_batch(&["ok", "batch-error"])).await;
    assert_eq!(error.kind, ErrorKind::Denied);
    // Lambda reports the handler's own message, with no Cognito wording.
    assert_eq!(error.cognito_message(), "record m-1 fails the batch");

    let error = chain_error(&tenant, sqs_batch(&["garbage"])).await;
    assert_eq!(error.kind, ErrorKind::InvalidOutput, "{error}");
    assert!(error.message.contains("not-m-0"), "{}", error.message);

    let error = chain_error(&tenant, sqs_batch(&["ok", "trap"])).await;
    assert_eq!(error.kind, ErrorKind::Trap, "{error}");

    let _turn = timing_sensitive().await;
    let error = chain_error(&tenant, sqs_batch(&["loop"])).await;
    assert!(
        matches!(error.kind, ErrorKind::Timeout | ErrorKind::OutOfFuel),
        "{error}"
    );

    // S3 events have no partial failure: one failing object fails them.
    let mut s3 = printed(&sample::<S3Event>("example-s3-event.json"));
    s3["Records"][0]["s3"]["object"]["key"] = json!("fail.txt");
    let error = chain_error(&tenant, s3).await;
    assert_eq!(error.message, "object fail.txt failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_refused_with_the_reason() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-probe.wasm", guests::RECORDS_PROBE);
    let tenant = tenant(&dir, "t").await;
    for (event, expected) in [
        (json!({"Records": []}), "empty"),
        (json!({"Records": [{"eventSource": "aws:sns"}]}), "aws:sns"),
        (
            json!({"Records": [{"eventSource": "aws:sqs"}, {"eventSource": "aws:s3"}]}),
            "Records[1]",
        ),
        // Kinesis data must be base64.
        (
            {
                let mut event = printed(&sample::<KinesisEvent>("example-kinesis-event.json"));
                event["Records"][1]["kinesis"]["data"] = json!("%%%");
                event
            },
            "`Records.1.kinesis.data`: expected base64 text",
        ),
    ] {
        let error = invoke(&tenant, event.clone())
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{event}: {error}");
    }
    // A tenant with no plugin for a source: nothing failed.
    let empty = PluginsDir::new();
    let none = crate::common::tenant(&empty, "none").await;
    assert_eq!(
        invoke(&none, sqs_batch(&["fail"])).await.unwrap(),
        json!({"batchItemFailures": []})
    );
}

/// Waits until the host's log holds `needle`, for at most two seconds.
fn wait_for_log(host: &ServeProcess, needle: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        if host.last_log().contains(needle) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_stream_plugins_serve_lambdas_sample_events() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-json-records-only.wasm", guests::JSON_RECORDS_ONLY)
        .plugin(
            "t",
            "20-kinesis-stream-logger.wasm",
            guests::KINESIS_STREAM_LOGGER,
        )
        .plugin(
            "t",
            "20-dynamodb-stream-logger.wasm",
            guests::DYNAMODB_STREAM_LOGGER,
        )
        .plugin("t", "20-s3-object-logger.wasm", guests::S3_OBJECT_LOGGER)
        .settings(
            "t",
            "[auth]\nmode = \"none\"\n\
             [plugins.20-s3-object-logger.config]\nskip-prefixes = [\"thumbnails/\"]\n",
        );
    let host = ServeProcess::start(dir.path(), &[]);
    let post = |event: Value| {
        let url = format!("{}/v1/tenants/t/events", host.base);
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .json(&event)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };

    // Kinesis: the first record is JSON, the second is not and is reported
    // failed by json-records-only, so the logger sees only the first.
    let mut kinesis: KinesisEvent = sample("example-kinesis-event.json");
    kinesis.records[0].kinesis.data =
        aws_lambda_events::encodings::Base64Data(br#"{"order":17}"#.to_vec());
    let second = kinesis.records[1].kinesis.sequence_number.clone();
    let answer = post(printed(&kinesis)).await;
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": second}]})
    );
    assert!(
        wait_for_log(&host, r#"data {"order":17}"#)
            || wait_for_log(&host, r#"data {\"order\":17}"#),
        "{}",
        host.last_log()
    );
    assert!(
        host.last_log().contains("1 Kinesis records"),
        "{}",
        host.last_log()
    );
    assert!(
        host.last_log().contains("is not JSON"),
        "{}",
        host.last_log()
    );

    // DynamoDB: the images, unmarshalled.
    let dynamodb = printed(&sample::<DynamoDbEvent>("example-dynamodb-event.json"));
    assert_eq!(post(dynamodb).await, json!({"batchItemFailures": []}));
    assert!(
        wait_for_log(&host, "Cookies") && host.last_log().contains("Giraffe"),
        "{}",
        host.last_log()
    );

    // S3: one object logged, one under a skipped prefix.
    let mut s3: S3Event = sample("example-s3-event.json");
    let mut skipped = s3.records[0].clone();
    s3.records[0].s3.object.key = Some("photos/cat.jpg".into());
    skipped.s3.object.key = Some("thumbnails/cat.jpg".into());
    s3.records.push(skipped);
    assert_eq!(post(printed(&s3)).await, json!({"batchItemFailures": []}));
    assert!(wait_for_log(&host, "photos/cat.jpg"), "{}", host.last_log());
    assert!(!host.last_log().contains("thumbnails/cat.jpg"));
}
