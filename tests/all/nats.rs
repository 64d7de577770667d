//! The distributed engine on a real `nats-server` (Debian's 2.9.10 in CI):
//! the engine conformance suite run against both engines, and three hosts
//! sharing one stream.
//!
//! Without `nats-server` on the PATH these tests say so and pass, unless
//! `CI` is set: CI installs it (`.ci/run`), so there they must run.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use triggerfish::streams::embedded::EmbeddedEngine;
use triggerfish::streams::engine::{Engine, EngineError, Lane, Lanes, NewRecord, Records, SHARDS};
use triggerfish::streams::nats::{NatsEngine, LEASE_TTL};
use triggerfish::streams::{StreamId, StreamKind};

/// A `nats-server -js` on a loopback port it picks, with its store in a
/// temporary folder; killed when dropped.
pub struct NatsServer {
    child: std::process::Child,
    pub url: String,
    port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server, or None (with a note) when `nats-server` is not
    /// installed and this is not CI.
    pub fn start() -> Option<NatsServer> {
        if std::process::Command::new("nats-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "nats-server is not installed: .ci/run installs it (apt-get install -y nats-server)"
            );
            eprintln!("nats-server is not installed; skipping (apt-get install -y nats-server)");
            return None;
        }
        let store = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = NatsServer {
            child: Self::spawn(port, store.path()),
            url: format!("nats://127.0.0.1:{port}"),
            port,
            store,
        };
        server.wait_ready();
        Some(server)
    }

    fn spawn(port: u16, store: &std::path::Path) -> std::process::Child {
        std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server starts")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server (its store stays), until [`NatsServer::resume`].
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a stopped server again on the same port and store.
    pub fn resume(&mut self) {
        self.child = Self::spawn(self.port, self.store.path());
        self.wait_ready();
    }

    /// Kills the server and starts it again on the same port and store.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.port, self.store.path());
        self.wait_ready();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn record(key: &str, n: usize) -> NewRecord {
    NewRecord {
        key: key.to_owned(),
        body: json!({ "n": n }),
    }
}

fn lane(id: &StreamId, partition: u32) -> Lane {
    Lane {
        stream: id.clone(),
        mapping: "m".to_owned(),
        partition,
        lane: 0,
    }
}

/// What every engine must do, as the consumers rely on it.
async fn conformance(engine: Arc<dyn Engine>) {
    let id = StreamId::new("tenant-a", "orders.eu");
    assert!(engine.stream(&id).await.unwrap().is_none());

    // Appends: sequence numbers increase across the stream, each record in
    // the shard of its key, and reads give a partition back in order.
    let records: Vec<NewRecord> = (0..40)
        .map(|n| record(&format!("key-{}", n % 7), n))
        .collect();
    let appended = engine
        .append(&id, StreamKind::Kinesis, records, u64::MAX)
        .await
        .unwrap();
    assert_eq!(appended.len(), 40);
    assert!(appended.windows(2).all(|w| w[0].seq < w[1].seq));
    let info = engine.stream(&id).await.unwrap().unwrap();
    assert_eq!(info.kind, StreamKind::Kinesis);
    assert_eq!(info.last_seq, appended.last().unwrap().seq);
    let mut read_back = 0;
    for partition in 0..SHARDS {
        let records = engine.read(&id, partition, 0, 1000).await.unwrap();
        assert!(records.windows(2).all(|w| w[0].seq < w[1].seq));
        for r in &records {
            assert_eq!(r.partition, partition);
            let n = r.body["n"].as_u64().unwrap() as usize;
            assert_eq!(r.key, format!("key-{}", n % 7));
        }
        // Reading after a sequence number, and with a limit.
        if let Some(first) = records.first() {
            let rest = engine.read(&id, partition, first.seq, 1000).await.unwrap();
            assert_eq!(rest.len(), records.len() - 1);
            assert_eq!(
                engine.count_after(&id, partition, first.seq).await.unwrap(),
                rest.len() as u64
            );
            assert_eq!(
                engine.read(&id, partition, 0, 2).await.unwrap().len(),
                2.min(records.len())
            );
        }
        read_back += records.len();
    }
    assert_eq!(read_back, 40);

    // A stream keeps its kind.
    let mismatch = engine
        .append(&id, StreamKind::Sqs, vec![record("k", 0)], u64::MAX)
        .await
        .unwrap_err();
    assert!(
        matches!(mismatch, EngineError::KindMismatch { .. }),
        "{mismatch}"
    );

    // Checkpoints.
    let lane0 = lane(&id, 0);
    assert_eq!(engine.checkpoint(&lane0).await.unwrap(), None);
    engine.commit(&lane0, 17).await.unwrap();
    assert_eq!(engine.checkpoint(&lane0).await.unwrap(), Some(17));
    engine.commit(&lane0, 18).await.unwrap();
    assert_eq!(engine.checkpoint(&lane0).await.unwrap(), Some(18));

    // The tenant's storage quota refuses an append whole.
    let stored = engine.tenant_bytes("tenant-a").await.unwrap();
    assert!(stored > 0);
    let refused = engine
        .append(&id, StreamKind::Kinesis, vec![record("k", 1)], stored)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, EngineError::StorageQuota { .. }),
        "{refused}"
    );
    assert_eq!(engine.tenant_bytes("tenant-b").await.unwrap(), 0);

    // Queues: received messages are invisible until settled or released;
    // a release brings one back with its receive count grown.
    let queue = StreamId::new("tenant-a", "jobs");
    engine
        .append(
            &queue,
            StreamKind::Sqs,
            (0..3).map(|n| record(&format!("m{n}"), n)).collect(),
            u64::MAX,
        )
        .await
        .unwrap();
    let visibility = Duration::from_secs(4);
    let received = engine.receive(&queue, 10, visibility).await.unwrap();
    assert_eq!(received.len(), 3, "{received:?}");
    assert!(received.iter().all(|r| r.receive_count == 1));
    assert!(engine
        .receive(&queue, 10, visibility)
        .await
        .unwrap()
        .is_empty());
    engine
        .settle(&queue, vec![received[0].record.seq])
        .await
        .unwrap();
    engine
        .release(&queue, received[1].record.seq, Duration::ZERO, false)
        .await
        .unwrap();
    let again = wait_receive(&engine, &queue, visibility, 1).await;
    assert_eq!(again[0].record.seq, received[1].record.seq);
    assert_eq!(again[0].receive_count, 2);
    // A release that is not counted leaves the count as it was.
    engine
        .release(&queue, again[0].record.seq, Duration::ZERO, true)
        .await
        .unwrap();
    let uncounted = wait_receive(&engine, &queue, visibility, 1).await;
    assert_eq!(uncounted[0].receive_count, 2);
    // The third was never settled: it comes back after its visibility.
    let late = wait_receive(&engine, &queue, visibility, 1).await;
    assert!(
        late.iter().any(|r| r.record.seq == received[2].record.seq),
        "{late:?}"
    );
    assert_eq!(engine.unsettled(&queue).await.unwrap(), 2);
    let all: Vec<u64> = [uncounted, late]
        .concat()
        .iter()
        .map(|r| r.record.seq)
        .collect();
    engine.settle(&queue, all).await.unwrap();
    assert_eq!(engine.unsettled(&queue).await.unwrap(), 0);
    // Settled messages stay readable in the stream.
    assert_eq!(engine.read(&queue, 0, 0, 10).await.unwrap().len(), 3);

    // Retention: records that arrived after the cutoff stay; everything
    // that arrived before it goes.
    let an_hour_ago = triggerfish::streams::now_ms() - 3_600_000;
    assert_eq!(engine.trim("tenant-a", an_hour_ago).await.unwrap(), 0);
    assert_eq!(engine.read(&queue, 0, 0, 10).await.unwrap().len(), 3);
    let cutoff = triggerfish::streams::now_ms() + 1;
    assert_eq!(engine.trim("tenant-a", cutoff).await.unwrap(), 43);
    assert!(engine.read(&id, 0, 0, 100).await.unwrap().is_empty());
    bulk_publish_records(&engine).await;
}

/// Bulk publish records: one per tenant, changed atomically, so that of
/// runs starting at once on any host exactly one holds the claim.
async fn bulk_publish_records(engine: &Arc<dyn Engine>) {
    use triggerfish::cognito::bulk::{begin, finish, renew, BulkRecord, BulkState};
    let hour = 3_600_000;
    let (none, written) = engine
        .bulk_publish("tenant-a", Box::new(|_| None))
        .await
        .unwrap();
    assert!(!written);
    assert_eq!(none, BulkRecord::default());
    let now = triggerfish::streams::now_ms();
    let mut racing = tokio::task::JoinSet::new();
    for run in 0..8 {
        let engine = engine.clone();
        racing.spawn(async move {
            let run = format!("run-{run}");
            let claim = Box::new(move |c: &BulkRecord| begin(c, now, hour, &run).ok());
            engine.bulk_publish("tenant-a", claim).await.unwrap()
        });
    }
    let mut winners = Vec::new();
    while let Some(raced) = racing.join_next().await {
        let (record, written) = raced.unwrap();
        assert_eq!(record.state, BulkState::InProgress);
        if written {
            winners.push(record.run);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let run = winners.pop().unwrap();
    // Only the winner renews and finishes it; the record says so after.
    let (other, mine) = (run.clone() + "x", run.clone());
    let renewal = Box::new(move |c: &BulkRecord| renew(c, &other, now + 1, (1, 1)));
    assert!(!engine.bulk_publish("tenant-a", renewal).await.unwrap().1);
    let renewal = Box::new(move |c: &BulkRecord| renew(c, &mine, now + 1, (2, 3)));
    assert!(engine.bulk_publish("tenant-a", renewal).await.unwrap().1);
    let end = Box::new(move |c: &BulkRecord| finish(c, &run, now + 2, (2, 3), &Ok(())));
    let (done, written) = engine.bulk_publish("tenant-a", end).await.unwrap();
    assert!(written);
    assert_eq!(done.state, BulkState::Succeeded);
    let (read, _) = engine
        .bulk_publish("tenant-a", Box::new(|_| None))
        .await
        .unwrap();
    assert_eq!(read, done);
    assert_eq!(read.records_published, 3);
    // Within the window, nobody starts another; other tenants are apart.
    let again = Box::new(move |c: &BulkRecord| begin(c, now + 3, hour, "late").ok());
    assert!(!engine.bulk_publish("tenant-a", again).await.unwrap().1);
    let (other_tenant, _) = engine
        .bulk_publish("tenant-b", Box::new(|_| None))
        .await
        .unwrap();
    assert_eq!(other_tenant.state, BulkState::NotStarted);
    // Nothing waits in an outbox here.
    assert_eq!(engine.sweep_outboxes().await.unwrap(), 0);
}

/// Receives until `n` messages came, for at most ten seconds.
async fn wait_receive(
    engine: &Arc<dyn Engine>,
    queue: &StreamId,
    visibility: Duration,
    n: usize,
) -> Vec<triggerfish::streams::engine::Received> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages came back",
            got.len()
        );
        got.extend(
            engine
                .receive(queue, n - got.len(), visibility)
                .await
                .unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_engine_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let engine = EmbeddedEngine::open(dir.path()).unwrap();
    conformance(Arc::new(engine)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_engine_conforms() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let engine = NatsEngine::connect(&server.url).await.unwrap();
    conformance(Arc::new(engine)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_is_one_hosts_until_its_lease_runs_out() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let a = NatsEngine::connect(&server.url).await.unwrap();
    let b = NatsEngine::connect(&server.url).await.unwrap();
    let lane = lane(&StreamId::new("t", "s"), 2);
    assert!(a.claim(&lane).await.unwrap());
    assert!(!b.claim(&lane).await.unwrap(), "held by a");
    assert!(a.claim(&lane).await.unwrap(), "a renews");
    // a stops renewing (it died): b takes over once the lease ran out.
    let started = Instant::now();
    while !b.claim(&lane).await.unwrap() {
        assert!(
            started.elapsed() < LEASE_TTL * 2,
            "b never took the lane over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(started.elapsed() >= LEASE_TTL - Duration::from_secs(1));
    assert!(!a.claim(&lane).await.unwrap(), "now b's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_follows_a_server_restart() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    let engine = NatsEngine::connect(&server.url).await.unwrap();
    let id = StreamId::new("t", "s");
    engine
        .append(&id, StreamKind::Sqs, vec![record("k", 1)], u64::MAX)
        .await
        .unwrap();
    server.restart();
    // The client reconnects by itself; the stream survived on disk.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match engine
            .append(&id, StreamKind::Sqs, vec![record("k", 2)], u64::MAX)
            .await
        {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "no reconnect: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(engine.read(&id, 0, 0, 10).await.unwrap().len(), 2);
}

/// Which host's log shows each record (by the probe's `record <seq>`).
fn processed_by(hosts: &[ServeProcess]) -> BTreeMap<String, BTreeSet<usize>> {
    let mut seen: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for (i, host) in hosts.iter().enumerate() {
        for line in host.last_log().lines() {
            if let Some((_, id)) = line.rsplit_once("plugin: record ") {
                seen.entry(id.trim().to_owned()).or_default().insert(i);
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_a_stream_and_take_over_a_dead_ones_lanes() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let _timing = timing_sensitive().await;
    let dir = PluginsDir::new();
    dir.plugin("t", "10-probe.wasm", guests::RECORDS_PROBE)
        .settings(
            "t",
            "[auth]\nmode = \"none\"\n\
         [[event-sources]]\nstream = \"orders\"\nkind = \"kinesis\"\nbatch-size = 5\n",
        );
    let mut hosts: Vec<ServeProcess> = (0..3)
        .map(|_| ServeProcess::start(dir.path(), &["--streams", &server.url]))
        .collect();
    let post = |base: String, from: usize| async move {
        let records: Vec<Value> = (from..from + 20)
            .map(|n| {
                use base64::Engine as _;
                json!({"PartitionKey": format!("key-{}", n % 9),
                       "Data": base64::engine::general_purpose::STANDARD.encode(format!("r{n}"))})
            })
            .collect();
        let response = reqwest::Client::new()
            .post(format!("{base}/v1/tenants/t/streams/orders/records"))
            .json(&json!({ "Records": records }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        answer["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["SequenceNumber"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    // The first host takes every lane; the others get their share within
    // a lease or two.
    tokio::time::sleep(LEASE_TTL).await;
    // Records go in through any host.
    let mut published = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        published.extend(post(host.base.clone(), i * 20).await);
    }
    let wait_all = |hosts: &[ServeProcess], published: &[String]| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = processed_by(hosts);
            if published.iter().all(|seq| seen.contains_key(seq)) {
                return seen;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = hosts.iter().map(|h| h.last_log()).collect();
                let logs = logs.join("\n-----\n");
                let _ = std::fs::write(std::env::temp_dir().join("nats-hosts.log"), &logs);
                panic!("not all processed: {seen:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let seen = wait_all(&hosts, &published);
    // One host per lane: no record was run by two hosts, and the set
    // processed is the set published.
    for (seq, by) in &seen {
        assert_eq!(by.len(), 1, "record {seq} ran on hosts {by:?}");
    }
    let processed: BTreeSet<&String> = seen.keys().collect();
    assert_eq!(processed, published.iter().collect());
    // Lanes are shared: more than one host did work.
    let workers: BTreeSet<usize> = seen.values().flatten().copied().collect();
    assert!(workers.len() >= 2, "one host ran every lane: {workers:?}");

    // The host holding the most lanes dies: its lanes move to the others
    // once its leases run out, and nothing published after is lost.
    let mut load = [0usize; 3];
    for by in seen.values() {
        load[*by.iter().next().unwrap()] += 1;
    }
    let victim = (0..3).max_by_key(|i| load[*i]).unwrap();
    let mut dead = hosts.remove(victim);
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    let mut more = Vec::new();
    more.extend(post(hosts[0].base.clone(), 100).await);
    let seen = wait_all(&hosts, &more);
    for seq in &more {
        assert!(seen.contains_key(seq));
    }
}

/// Posts Kinesis records `(partition key, data)` to a host; their sequence
/// numbers.
async fn post_kinesis(base: &str, records: &[(String, String)]) -> Vec<String> {
    use base64::Engine as _;
    let records: Vec<Value> = records
        .iter()
        .map(|(key, data)| {
            json!({"PartitionKey": key,
                   "Data": base64::engine::general_purpose::STANDARD.encode(data)})
        })
        .collect();
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/tenants/t/streams/orders/records"))
        .json(&json!({ "Records": records }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    answer["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["SequenceNumber"].as_str().unwrap().to_owned())
        .collect()
}

/// How often each host's log shows each record (the probe logs every
/// record it is given, as `record <seq>`).
fn deliveries(hosts: &[&ServeProcess]) -> Vec<BTreeMap<String, usize>> {
    hosts
        .iter()
        .map(|host| {
            let mut seen = BTreeMap::new();
            for line in host.last_log().lines() {
                if let Some((_, id)) = line.rsplit_once("plugin: record ") {
                    *seen.entry(id.trim().to_owned()).or_default() += 1;
                }
            }
            seen
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_inside_a_batch_loses_nothing_the_others_take_its_lane_over() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let _timing = timing_sensitive().await;
    let dir = PluginsDir::new();
    dir.plugin("t", "10-probe.wasm", guests::RECORDS_PROBE)
        .settings(
            "t",
            "[auth]\nmode = \"none\"\n\
         [[event-sources]]\nstream = \"orders\"\nkind = \"kinesis\"\nbatch-size = 5\n",
        );
    let mut hosts: Vec<ServeProcess> = (0..3)
        .map(|_| ServeProcess::start(dir.path(), &["--streams", &server.url]))
        .collect();
    // Lanes spread over the hosts within a lease or two.
    tokio::time::sleep(LEASE_TTL).await;
    // Records on every shard; one key's records go in after a record that
    // takes 3 s, so its lane is inside that batch for a while.
    let mut published = Vec::new();
    let before: Vec<(String, String)> = (0..20)
        .map(|n| (format!("key-{}", n % 9), format!("r{n}")))
        .collect();
    published.extend(post_kinesis(&hosts[0].base, &before).await);
    let slow = post_kinesis(&hosts[1].base, &[("key-slow".into(), "sleep".into())]).await;
    let after: Vec<(String, String)> = (0..5)
        .map(|n| ("key-slow".to_owned(), format!("after{n}")))
        .collect();
    published.extend(slow.clone());
    published.extend(post_kinesis(&hosts[2].base, &after).await);
    let slow = slow[0].clone();

    // The host whose plugin is inside the slow batch is killed there.
    let deadline = Instant::now() + Duration::from_secs(20);
    let victim = loop {
        let all = deliveries(&hosts.iter().collect::<Vec<_>>());
        if let Some(i) = all.iter().position(|seen| seen.contains_key(&slow)) {
            break i;
        }
        assert!(Instant::now() < deadline, "no host started the slow batch");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut dead = hosts.remove(victim);
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();

    // More records, through a host alive.
    let late: Vec<(String, String)> = (0..10)
        .map(|n| (format!("key-{}", n % 9), format!("late{n}")))
        .collect();
    published.extend(post_kinesis(&hosts[0].base, &late).await);

    // The others take the lane over once its lease runs out, and deliver
    // the batch in flight again: every record published is processed (a
    // record the dead host finished before may have come again).
    let deadline = Instant::now() + LEASE_TTL * 6;
    let survivors = loop {
        let survivors = deliveries(&hosts.iter().collect::<Vec<_>>());
        let dead_seen = deliveries(&[&dead]).remove(0);
        let done = published.iter().all(|seq| {
            survivors.iter().any(|seen| seen.contains_key(seq)) || dead_seen.contains_key(seq)
        }) && survivors.iter().any(|seen| seen.contains_key(&slow))
            && after_slow_done(&survivors, &published, &slow);
        if done {
            break survivors;
        }
        if Instant::now() > deadline {
            panic!(
                "not all processed after the kill: survivors {survivors:?}, dead host {dead_seen:?}, published {published:?}\n{}",
                hosts.iter().map(|h| h.last_log()).collect::<Vec<_>>().join("\n-----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Duplicates: the slow batch ran on the dead host and again on a
    // survivor; count every record seen more than once.
    let mut all: BTreeMap<String, usize> = BTreeMap::new();
    for seen in survivors.iter().chain([&deliveries(&[&dead])[0]]) {
        for (seq, n) in seen {
            *all.entry(seq.clone()).or_default() += n;
        }
    }
    let duplicates = all.values().filter(|n| **n > 1).count();
    eprintln!(
        "{} records published, {} delivered, {duplicates} more than once",
        published.len(),
        all.values().sum::<usize>()
    );
    assert!(
        duplicates >= 1,
        "the batch in flight was not delivered again"
    );
    assert!(published.iter().all(|seq| all.contains_key(seq)));
    // The lane's checkpoint moved past every record of the slow key.
    let engine = NatsEngine::connect(&server.url).await.unwrap();
    let partition = triggerfish::streams::engine::shard_of("key-slow");
    let lane = Lane {
        stream: StreamId::new("t", "orders"),
        mapping: "orders".to_owned(),
        partition,
        lane: 0,
    };
    let last: u64 = published
        .iter()
        .map(|s| s.parse::<u64>().unwrap())
        .max()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let checkpoint = engine.checkpoint(&lane).await.unwrap().unwrap_or(0);
        let behind = engine
            .count_after(&lane.stream, partition, checkpoint)
            .await
            .unwrap();
        if behind == 0 {
            assert!(checkpoint <= last);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow key's lane is stuck at {checkpoint}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether a survivor delivered every record posted after the slow one
/// on its key (they were behind it in the killed host's lane).
fn after_slow_done(
    survivors: &[BTreeMap<String, usize>],
    published: &[String],
    slow: &str,
) -> bool {
    let slow: u64 = slow.parse().unwrap();
    // The five records after the slow one were posted right after it, in
    // one request: the next five sequence numbers of the published list.
    let position = published
        .iter()
        .position(|s| s.parse::<u64>().unwrap() == slow);
    position.is_some_and(|i| {
        published[i + 1..i + 6]
            .iter()
            .all(|seq| survivors.iter().any(|seen| seen.contains_key(seq)))
    })
}

/// Publishes with `publish` until `wake` rings (at most 10 s).
async fn publish_until_woken<F>(wake: &tokio::sync::Notify, mut publish: F)
where
    F: FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let woken = wake.notified();
        publish().await;
        if tokio::time::timeout(Duration::from_millis(500), woken)
            .await
            .is_ok()
        {
            return;
        }
        assert!(Instant::now() < deadline, "the follower was never woken");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_following_a_stream_is_woken_by_other_hosts_and_direct_publishers() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let a = Arc::new(NatsEngine::connect(&server.url).await.unwrap());
    let b = NatsEngine::connect(&server.url).await.unwrap();
    let id = StreamId::new("t", "orders.eu");
    a.append(&id, StreamKind::Kinesis, vec![record("k", 0)], u64::MAX)
        .await
        .unwrap();
    // b subscribes in the background: the publishers go on until it rings.
    let wake = Arc::new(tokio::sync::Notify::new());
    b.follow(&id, wake.clone());
    // Another host's append.
    publish_until_woken(&wake, || {
        let (host, stream) = (a.clone(), id.clone());
        Box::pin(async move {
            host.append(&stream, StreamKind::Kinesis, vec![record("k", 1)], u64::MAX)
                .await
                .unwrap();
        })
    })
    .await;
    // A tool publishing to the stream's subject with no host in between
    // (the README's subject and message shape).
    let js = async_nats::jetstream::new(async_nats::connect(&server.url).await.unwrap());
    publish_until_woken(&wake, || {
        let js = js.clone();
        Box::pin(async move {
            let message = json!({"key": "k", "body": {"data": "ZGlyZWN0"}, "arrivedMs": 0});
            js.publish("tf.t.orders_2eeu.1", message.to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        })
    })
    .await;
    // The direct publish is a record like any other.
    let on_shard: usize = b.read(&id, 1, 0, 100).await.unwrap().len();
    assert!(on_shard >= 1);
}
