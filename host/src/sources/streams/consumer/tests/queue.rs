//! The queue kinds' consumer (SQS, S3): failed messages come back with
//! growing receive counts, then go to their destination.

use super::*;

#[tokio::test]
async fn sqs_failed_messages_come_back_and_then_go_to_the_dead_letter_stream() {
    let s = setup(
        "stream = \"jobs\"\nkind = \"sqs\"\nreport-batch-item-failures = true\n\
         visibility-timeout-s = 1\nmax-receive-count = 2\non-failure = \"jobs-dlq\"\n",
        |records: &[Value]| Answer::Done {
            failures: records
                .iter()
                .filter(|r| r["body"] == "bad")
                .map(|r| r["messageId"].as_str().unwrap().to_owned())
                .collect(),
        },
    );
    let engine = s.consumer.streams.engine.clone();
    let messages = ["good", "bad"]
        .iter()
        .map(|b| NewRecord {
            key: String::new(),
            body: json!({"body": b, "messageAttributes": {}}),
        })
        .collect();
    engine
        .append(&s.consumer.id, StreamKind::Sqs, messages, u64::MAX)
        .await
        .unwrap();
    let task = tokio::spawn(s.consumer.clone().run_queue());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while failure_destination(&s, "jobs-dlq").await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop.send(true).unwrap();
    task.await.unwrap();
    let seen = s.closure.seen.lock().unwrap().clone();
    let receives = |body: &str| -> Vec<String> {
        seen.iter()
            .flatten()
            .filter(|r| r["body"] == body)
            .map(|r| {
                r["attributes"]["ApproximateReceiveCount"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(receives("good"), ["1"]);
    assert_eq!(receives("bad"), ["1", "2"]);
    let dead = engine
        .read(&StreamId::new("acme", "jobs-dlq"), 0, 0, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body["body"], "bad");
    assert_eq!(engine.unsettled(&s.consumer.id).await.unwrap(), 0);
    assert_eq!(counts(&s), [1, 2, 1, 1]);
}

#[tokio::test]
async fn s3_events_are_retried_twice_then_sent_to_the_failure_destination() {
    let s = setup(
        "stream = \"uploads\"\nkind = \"s3\"\non-failure = \"uploads-dlq\"\n",
        trap,
    );
    let engine = s.consumer.streams.engine.clone();
    let record = json!({"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": "k"}}});
    engine
        .append(
            &s.consumer.id,
            StreamKind::S3,
            vec![NewRecord {
                key: "b/k".into(),
                body: record.clone(),
            }],
            u64::MAX,
        )
        .await
        .unwrap();
    let task = tokio::spawn(s.consumer.clone().run_queue());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while failure_destination(&s, "uploads-dlq").await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no failure record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(
        s.closure.seen.lock().unwrap().len(),
        3,
        "one attempt and two retries"
    );
    let failed = failure_destination(&s, "uploads-dlq").await;
    assert_eq!(failed[0]["requestPayload"]["Records"][0], record);
    assert_eq!(failed[0]["requestContext"]["condition"], "RetriesExhausted");
}
