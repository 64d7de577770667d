//! The consumer's decisions against a handler closure, on the real
//! embedded engine in a temporary folder.

use super::*;
use crate::streams::embedded::EmbeddedEngine;
use crate::streams::engine::SHARDS;
use crate::streams::mapping::{resolve_all, EventSourceFile};
use base64::Engine as _;
use std::sync::Mutex;

/// Queue kinds (SQS, S3): messages that come back, then leave.
mod queue;

type Handler = dyn Fn(&[Value]) -> Answer + Send + Sync;

/// Records every batch it is given, and answers with `handler`.
struct Closure {
    handler: Box<Handler>,
    seen: Mutex<Vec<Vec<Value>>>,
    /// A lane whose stored checkpoint is noted at every delivery.
    watch: std::sync::OnceLock<Lane>,
    engine: std::sync::OnceLock<Arc<dyn crate::streams::engine::Engine>>,
    checkpoints: Mutex<Vec<Option<u64>>>,
}

impl Deliver for Closure {
    fn deliver(&self, event: Value) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
        let records = event["Records"].as_array().cloned().unwrap_or_default();
        let answer = (self.handler)(&records);
        self.seen.lock().unwrap().push(records);
        Box::pin(async move {
            if let (Some(lane), Some(engine)) = (self.watch.get(), self.engine.get()) {
                let checkpoint = engine.checkpoint(lane).await.unwrap();
                self.checkpoints.lock().unwrap().push(checkpoint);
            }
            answer
        })
    }
    fn stored_bytes_limit(&self) -> u64 {
        u64::MAX
    }
}

struct Setup {
    consumer: Arc<Consumer>,
    closure: Arc<Closure>,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

fn setup(mapping: &str, handler: impl Fn(&[Value]) -> Answer + Send + Sync + 'static) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let engine = EmbeddedEngine::open(dir.path()).unwrap();
    let streams = Arc::new(Streams::new(Arc::new(engine)));
    let file: EventSourceFile = toml::from_str(mapping).unwrap();
    let mapping = resolve_all(&[file]).unwrap().remove(0);
    let closure = Arc::new(Closure {
        handler: Box::new(handler),
        seen: Mutex::default(),
        watch: Default::default(),
        engine: Default::default(),
        checkpoints: Mutex::default(),
    });
    let _ = closure.engine.set(streams.engine.clone());
    let (stop, stop_rx) = watch::channel(false);
    let consumer = Arc::new(Consumer {
        counters: streams.counters("acme", &mapping.name),
        id: StreamId::new("acme", &mapping.stream),
        streams,
        deliver: closure.clone(),
        mapping,
        in_flight: Arc::new(tokio::sync::Semaphore::new(4)),
        stop: stop_rx,
    });
    Setup {
        consumer,
        closure,
        stop,
        _dir: dir,
    }
}

fn data(record: &Value) -> String {
    let text = record["kinesis"]["data"].as_str().unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap(),
    )
    .unwrap()
}

fn seq(record: &Value) -> u64 {
    record["kinesis"]["sequenceNumber"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Appends Kinesis records `data` under one key, and returns them as a
/// batch of the key's shard.
async fn append(s: &Setup, data: &[&str]) -> (Lane, Vec<StoredRecord>) {
    let engine = &s.consumer.streams.engine;
    let records = data
        .iter()
        .map(|d| NewRecord {
            key: "k".into(),
            body: json!({"data": base64::engine::general_purpose::STANDARD.encode(d)}),
        })
        .collect();
    let appended = engine
        .append(&s.consumer.id, StreamKind::Kinesis, records, u64::MAX)
        .await
        .unwrap();
    let partition = appended[0].partition;
    assert!(partition < SHARDS);
    let lane = s.consumer.lane_id(partition, 0);
    let batch = engine
        .read(&s.consumer.id, partition, 0, 100)
        .await
        .unwrap();
    (lane, batch)
}

fn failing(word: &'static str) -> impl Fn(&[Value]) -> Answer + Send + Sync {
    move |records| Answer::Done {
        failures: records
            .iter()
            .filter(|r| data(r).contains(word))
            .map(|r| seq(r).to_string())
            .collect(),
    }
}

fn trap(_: &[Value]) -> Answer {
    Answer::Failed(LastError {
        kind: "trap".into(),
        message: "boom".into(),
    })
}

async fn failure_destination(s: &Setup, name: &str) -> Vec<Value> {
    let id = StreamId::new("acme", name);
    let engine = &s.consumer.streams.engine;
    let records = engine.read(&id, 0, 0, 100).await.unwrap();
    records
        .iter()
        .map(|r| {
            serde_json::from_str(r.body["body"].as_str().unwrap()).unwrap_or(r.body["body"].clone())
        })
        .collect()
}

fn counts(s: &Setup) -> [u64; 4] {
    let c = &s.consumer.counters;
    [
        Counters::get(&c.processed),
        Counters::get(&c.failed),
        Counters::get(&c.retried),
        Counters::get(&c.sent_to_failure_destination),
    ]
}

#[tokio::test]
async fn partial_failure_commits_before_the_lowest_failed_record() {
    let once = Mutex::new(true);
    let s = setup(
        "stream = \"orders\"\nkind = \"kinesis\"\nreport-batch-item-failures = true\n",
        move |records| {
            // Records 5 and 7 fail the first time only.
            let first = std::mem::replace(&mut *once.lock().unwrap(), false);
            let failures = records
                .iter()
                .filter(|r| first && (data(r) == "r5" || data(r) == "r7"))
                .map(|r| seq(r).to_string())
                .collect();
            Answer::Done { failures }
        },
    );
    let names: Vec<String> = (1..=10).map(|i| format!("r{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (lane, batch) = append(&s, &names).await;
    let checkpoint = s.consumer.ordered_batch(&lane, batch, 0).await.unwrap();
    assert_eq!(checkpoint, 10);
    assert_eq!(
        s.consumer.streams.engine.checkpoint(&lane).await.unwrap(),
        Some(10)
    );
    let seen = s.closure.seen.lock().unwrap().clone();
    let delivered: Vec<Vec<u64>> = seen.iter().map(|b| b.iter().map(seq).collect()).collect();
    assert_eq!(
        delivered,
        vec![(1..=10).collect::<Vec<_>>(), (5..=10).collect()]
    );
    // processed 10, failed 6 (5..=10 in the first batch), retried 6.
    assert_eq!(counts(&s), [10, 6, 6, 0]);
}

#[tokio::test]
async fn without_report_batch_item_failures_a_partial_answer_is_success() {
    let s = setup("stream = \"orders\"\nkind = \"kinesis\"\n", failing("bad"));
    let (lane, batch) = append(&s, &["a", "bad", "c"]).await;
    assert_eq!(s.consumer.ordered_batch(&lane, batch, 0).await.unwrap(), 3);
    assert_eq!(s.closure.seen.lock().unwrap().len(), 1);
    assert_eq!(counts(&s), [3, 0, 0, 0]);
}

#[tokio::test]
async fn bisect_isolates_a_poison_record_into_the_failure_destination() {
    let s = setup(
        "stream = \"orders\"\nkind = \"kinesis\"\nbisect-batch-on-error = true\n\
         max-retry-attempts = 1\non-failure = \"orders-dlq\"\n",
        |records: &[Value]| {
            if records.iter().any(|r| data(r) == "poison") {
                trap(records)
            } else {
                Answer::Done { failures: vec![] }
            }
        },
    );
    let (lane, batch) = append(&s, &["a", "b", "c", "d", "e", "poison", "g", "h"]).await;
    s.closure.watch.set(lane.clone()).unwrap();
    assert_eq!(s.consumer.ordered_batch(&lane, batch, 0).await.unwrap(), 8);
    // At every delivery the stored checkpoint is just before the batch:
    // a crash at any point redelivers from there, and skips nothing.
    let seen = s.closure.seen.lock().unwrap().clone();
    let checkpoints = s.closure.checkpoints.lock().unwrap().clone();
    for (batch, checkpoint) in seen.iter().zip(&checkpoints) {
        assert_eq!(
            checkpoint.unwrap_or(0),
            seq(&batch[0]) - 1,
            "{checkpoints:?}"
        );
    }
    let failed = failure_destination(&s, "orders-dlq").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    let info = &failed[0]["KinesisBatchInfo"];
    assert_eq!(
        (
            info["startSequenceNumber"].as_str(),
            info["batchSize"].as_u64()
        ),
        (Some("6"), Some(1))
    );
    assert_eq!(
        failed[0]["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(failed[0]["responseContext"]["errorKind"], "trap");
    assert_eq!(data(&failed[0]["Records"][0]), "poison");
    // Every other record reached the handler in a batch that succeeded.
    let seen = s.closure.seen.lock().unwrap().clone();
    let mut succeeded: Vec<u64> = seen
        .iter()
        .filter(|b| !b.iter().any(|r| data(r) == "poison"))
        .flat_map(|b| b.iter().map(seq))
        .collect();
    succeeded.sort();
    assert_eq!(succeeded, vec![1, 2, 3, 4, 5, 7, 8]);
    assert_eq!(counts(&s)[3], 1);
}

#[tokio::test]
async fn retries_run_out_into_the_failure_destination() {
    let s = setup(
        "stream = \"orders\"\nkind = \"kinesis\"\nmax-retry-attempts = 2\non-failure = \"dlq\"\n",
        trap,
    );
    let (lane, batch) = append(&s, &["a", "b"]).await;
    assert_eq!(s.consumer.ordered_batch(&lane, batch, 0).await.unwrap(), 2);
    assert_eq!(
        s.closure.seen.lock().unwrap().len(),
        3,
        "one attempt and two retries"
    );
    let failed = failure_destination(&s, "dlq").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(failed[0]["Records"].as_array().unwrap().len(), 2);
    assert_eq!(counts(&s), [0, 6, 4, 2]);
}

#[tokio::test]
async fn records_too_old_are_given_up_on() {
    let s = setup(
        "stream = \"orders\"\nkind = \"kinesis\"\nmax-record-age-s = 1\non-failure = \"dlq\"\n",
        trap,
    );
    let (lane, batch) = append(&s, &["a"]).await;
    let started = std::time::Instant::now();
    assert_eq!(s.consumer.ordered_batch(&lane, batch, 0).await.unwrap(), 1);
    assert!(started.elapsed() < Duration::from_secs(10));
    let failed = failure_destination(&s, "dlq").await;
    assert_eq!(
        failed[0]["requestContext"]["condition"],
        "RecordAgeExceeded"
    );
}

#[tokio::test]
async fn a_busy_host_is_waited_for_without_counting_an_attempt() {
    let busy = Mutex::new(3);
    let s = setup(
        "stream = \"orders\"\nkind = \"kinesis\"\nmax-retry-attempts = 0\non-failure = \"dlq\"\n",
        move |_: &[Value]| {
            let mut left = busy.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                Answer::Busy
            } else {
                Answer::Done { failures: vec![] }
            }
        },
    );
    let (lane, batch) = append(&s, &["a"]).await;
    assert_eq!(s.consumer.ordered_batch(&lane, batch, 0).await.unwrap(), 1);
    assert_eq!(counts(&s), [1, 0, 3, 0]);
    assert!(failure_destination(&s, "dlq").await.is_empty());
}

#[tokio::test]
async fn an_unknown_item_identifier_fails_the_whole_batch() {
    let calls = Mutex::new(0);
    let s = setup(
        "stream = \"orders\"\nkind = \"kinesis\"\nreport-batch-item-failures = true\n\
         max-retry-attempts = 0\non-failure = \"dlq\"\n",
        move |_: &[Value]| {
            *calls.lock().unwrap() += 1;
            Answer::Done {
                failures: vec!["no-such-record".into()],
            }
        },
    );
    let (lane, batch) = append(&s, &["a", "b"]).await;
    s.consumer.ordered_batch(&lane, batch, 0).await.unwrap();
    let failed = failure_destination(&s, "dlq").await;
    assert_eq!(
        failed[0]["responseContext"]["errorKind"],
        "invalid-response"
    );
    assert_eq!(failed[0]["Records"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn latest_starts_after_what_is_there_and_keeps_its_place() {
    let mapping = "stream = \"orders\"\nkind = \"kinesis\"\nstarting-position = \"latest\"\n";
    let s = setup(mapping, failing("x"));
    let (lane, _) = append(&s, &["old", "older"]).await;
    assert_eq!(s.consumer.start_of(&lane).await.unwrap(), 2);
    append(&s, &["new"]).await;
    // Written down at once: a restart does not skip what came meanwhile.
    assert_eq!(s.consumer.start_of(&lane).await.unwrap(), 2);
    let trim = setup("stream = \"orders\"\nkind = \"kinesis\"\n", failing("x"));
    let (lane, _) = append(&trim, &["old"]).await;
    assert_eq!(trim.consumer.start_of(&lane).await.unwrap(), 0);
}

#[test]
fn answers_are_read_like_lambda_reads_them() {
    assert_eq!(
        Answer::from_response(&json!({})),
        Answer::Done { failures: vec![] }
    );
    assert_eq!(
        Answer::from_response(&json!({"batchItemFailures": [{"itemIdentifier": "7"}]})),
        Answer::Done {
            failures: vec!["7".into()]
        }
    );
    assert!(matches!(
        Answer::from_response(&json!({"batchItemFailures": [{"id": 1}]})),
        Answer::Failed(_)
    ));
}
