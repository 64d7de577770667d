//! Draining: `/healthz` for a load balancer, SIGTERM finishing what is in
//! flight and giving the stream lanes back, and a rolling restart of three
//! hosts sharing their tenants through NATS (`--shared-plugins`) behind
//! HAProxy under load (the `deploy/haproxy.cfg` the recipe runs).
//!
//! The tests that need `nats-server` or `haproxy` say so and pass where
//! either is missing, unless `CI` is set: CI installs both (`.ci/run`).

use crate::common::*;
use crate::nats::NatsServer;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use triggerfish::auth::hash_key;

/// Sends SIGTERM to a host.
fn terminate(host: &ServeProcess) {
    let pid = host.child.id() as libc::pid_t;
    // SAFETY: kill(2) with a child's pid and a signal number; no memory.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill -TERM");
}

/// Waits for a host to exit, for at most `bound`.
async fn exit_within(host: &mut ServeProcess, bound: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = host.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < bound,
            "the host did not exit within {bound:?}:\n{}",
            host.last_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /healthz`: its status and body, or None if nothing answered.
async fn healthz(client: &reqwest::Client, base: &str) -> Option<(u16, Value)> {
    let response = client.get(format!("{base}/healthz")).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// A loopback port nobody listens on now.
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Posts a PreSignUp event; the status and body, or the error.
async fn sign_up(client: &reqwest::Client, base: &str) -> Result<(u16, Value), String> {
    let response = client
        .post(format!("{base}/v1/tenants/t/events"))
        .json(&pre_sign_up("jane@example.com"))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let body = response.json().await.map_err(|e| format!("{e:?}"))?;
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_says_draining_then_finishes_the_requests_in_flight() {
    let _timing = timing_sensitive().await;
    let dir = PluginsDir::new();
    dir.plugin("t", "10-slow.wasm", guests::PRESIGNUP_PROBE)
        .settings(
            "t",
            "[auth]\nmode = \"none\"\n[plugins.10-slow.config]\nmode = \"slow\"\nms = \"1500\"\n",
        );
    let grace = Duration::from_millis(800);
    let mut host = ServeProcess::start(
        dir.path(),
        &[
            "--no-watch",
            "--drain-grace-ms",
            "800",
            "--drain-timeout-s",
            "20",
        ],
    );
    let client = client();
    let (status, body) = healthz(&client, &host.base).await.expect("an answer");
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ready")),
        "{body}"
    );
    assert_eq!(body["tenants"], 1);

    // Requests that take 1.5 s each, in flight when the signal comes.
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let (client, base) = (client.clone(), host.base.clone());
            tokio::spawn(async move { sign_up(&client, &base).await })
        })
        .collect();
    until_a_call_begins(&host).await;
    terminate(&host);
    let signalled = Instant::now();

    // /healthz says draining as soon as the host has taken the signal,
    // while it still takes connections (for the grace), and a request that
    // comes then is served.
    let (status, body) = loop {
        let (status, body) = healthz(&client, &host.base)
            .await
            .expect("/healthz answers during the grace");
        if status != 200 || signalled.elapsed() > grace / 2 {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(signalled.elapsed() < grace, "answered within the grace");
    assert_eq!(
        (status, body["status"].as_str()),
        (503, Some("draining")),
        "{body}"
    );
    assert!(
        body["reason"].as_str().unwrap().contains("SIGTERM"),
        "{body}"
    );
    // Answers now close their connection, so keep-alive clients move on.
    let answer = client
        .get(format!("{}/healthz", host.base))
        .send()
        .await
        .expect("an answer");
    assert_eq!(
        answer.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "{:?}",
        answer.headers()
    );
    let late = {
        let (client, base) = (client.clone(), host.base.clone());
        tokio::spawn(async move { sign_up(&client, &base).await })
    };

    // Then the listener closes: new connections are refused.
    loop {
        match tokio::net::TcpStream::connect(host.addr).await {
            Err(_) => break,
            Ok(_) => {
                assert!(
                    signalled.elapsed() < Duration::from_secs(10),
                    "the listener never closed"
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    }
    assert!(
        signalled.elapsed() >= grace - Duration::from_millis(100),
        "the listener stayed open for the grace: closed after {:?}",
        signalled.elapsed()
    );

    // Every request in flight, and the late one, was answered in full.
    for request in in_flight.into_iter().chain([late]) {
        let (status, body) = request.await.unwrap().expect("an answer");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["response"]["autoConfirmUser"], true, "{body}");
    }
    let exit = exit_within(&mut host, Duration::from_secs(15)).await;
    assert!(exit.success(), "{exit:?}\n{}", host.last_log());
    let log = host.last_log();
    assert!(log.contains("draining"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_or_the_drain_timeout_ends_the_host_at_once() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-slow.wasm", guests::PRESIGNUP_PROBE)
        .settings(
            "t",
            "[auth]\nmode = \"none\"\n[plugins.10-slow.config]\nmode = \"slow\"\nms = \"4000\"\n",
        );
    let client = client();
    // A second SIGTERM while a request is in flight: exit at once, with
    // the code of a process killed by SIGTERM.
    let mut host = ServeProcess::start(dir.path(), &["--no-watch", "--drain-grace-ms", "0"]);
    let request = {
        let (client, base) = (client.clone(), host.base.clone());
        tokio::spawn(async move { sign_up(&client, &base).await })
    };
    until_a_call_begins(&host).await;
    terminate(&host);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(host.child.try_wait().unwrap().is_none(), "still draining");
    let second = Instant::now();
    terminate(&host);
    let exit = exit_within(&mut host, Duration::from_secs(2)).await;
    assert!(second.elapsed() < Duration::from_secs(2));
    assert_eq!(exit.code(), Some(143), "{exit:?}");
    assert!(request.await.unwrap().is_err(), "the request was abandoned");

    // A drain that outlasts --drain-timeout-s: exit 1 when it runs out.
    let mut host = ServeProcess::start(
        dir.path(),
        &[
            "--no-watch",
            "--drain-grace-ms",
            "0",
            "--drain-timeout-s",
            "1",
        ],
    );
    let request = {
        let (client, base) = (client.clone(), host.base.clone());
        tokio::spawn(async move { sign_up(&client, &base).await })
    };
    until_a_call_begins(&host).await;
    terminate(&host);
    let signalled = Instant::now();
    let exit = exit_within(&mut host, Duration::from_secs(3)).await;
    assert!(
        signalled.elapsed() >= Duration::from_millis(900),
        "it waited for the drain"
    );
    assert_eq!(exit.code(), Some(1), "{exit:?}");
    // (The log is read by a thread of its own: give it the last lines.)
    let started = Instant::now();
    while !host.last_log().contains("--drain-timeout-s") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}",
            host.last_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(request.await.unwrap().is_err(), "the request was abandoned");
}

/// Waits (at most 10 s) until the host's slow plugin has begun a call:
/// on a machine busy with other tests, a fixed pause may end before the
/// request reaches it.
async fn until_a_call_begins(host: &ServeProcess) {
    let started = Instant::now();
    while !host.last_log().contains("slow: waiting") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the slow call never began\n{}",
            host.last_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `TF_LEASES` bucket as the hosts keep it, read from outside.
struct Leases(async_nats::jetstream::Context);

impl Leases {
    async fn open(url: &str) -> Leases {
        let client = async_nats::connect(url).await.unwrap();
        Leases(async_nats::jetstream::new(client))
    }

    /// Every key of the bucket and its value.
    async fn entries(&self) -> BTreeMap<String, String> {
        let bucket = self.0.get_stream("KV_TF_LEASES").await.unwrap();
        let mut subjects = bucket.info_with_subjects("$KV.TF_LEASES.>").await.unwrap();
        let mut keys = Vec::new();
        while let Some(subject) = subjects.next().await {
            keys.push(subject.unwrap().0);
        }
        let mut entries = BTreeMap::new();
        for subject in keys {
            if let Ok(message) = bucket.get_last_raw_message_by_subject(&subject).await {
                let key = subject.trim_start_matches("$KV.TF_LEASES.").to_owned();
                let value = String::from_utf8_lossy(&message.payload).into_owned();
                entries.insert(key, value);
            }
        }
        entries
    }

    /// Lanes each host (by process id) holds now: leases not run out.
    async fn held(&self) -> BTreeMap<u32, usize> {
        let now = triggerfish::streams::now_ms();
        let mut held = BTreeMap::new();
        for (key, value) in self.entries().await {
            if key.starts_with("hosts.") {
                continue;
            }
            let (holder, until) = value.split_once(' ').unwrap_or(("", "0"));
            let pid = holder.split('-').next().and_then(|p| p.parse().ok());
            if let (Some(pid), true) = (pid, until.parse::<u64>().unwrap_or(0) > now) {
                *held.entry(pid).or_default() += 1;
            }
        }
        held
    }

    /// When the heartbeat of the host with process id `pid` ends (ms).
    async fn heartbeat(&self, pid: u32) -> Option<u64> {
        let prefix = format!("hosts.{pid}-");
        self.entries()
            .await
            .into_iter()
            .find(|(key, _)| key.starts_with(&prefix))
            .map(|(_, until)| until.parse().unwrap_or(0))
    }
}

/// The records each log shows processed (the probe's `record <seq>`).
fn processed(logs: &[String]) -> BTreeSet<String> {
    logs.iter()
        .flat_map(|log| log.lines())
        .filter_map(|line| line.rsplit_once("plugin: record "))
        .map(|(_, id)| id.trim().to_owned())
        .collect()
}

/// Posts `n` Kinesis records with keys over every shard; their sequence
/// numbers, or the error.
async fn put_records(
    client: &reqwest::Client,
    base: &str,
    from: usize,
    n: usize,
) -> Result<Vec<String>, String> {
    use base64::Engine as _;
    let records: Vec<Value> = (from..from + n)
        .map(|i| {
            json!({"PartitionKey": format!("key-{i}"),
                   "Data": base64::engine::general_purpose::STANDARD.encode(format!("r{i}"))})
        })
        .collect();
    let response = client
        .post(format!("{base}/v1/tenants/t/streams/orders/records"))
        .json(&json!({ "Records": records }))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let answer: Value = response.json().await.map_err(|e| format!("{e:?}"))?;
    if status != 200 {
        return Err(format!("{status} {answer}"));
    }
    Ok(answer["Records"]
        .as_array()
        .ok_or_else(|| format!("no Records: {answer}"))?
        .iter()
        .map(|r| r["SequenceNumber"].as_str().unwrap_or_default().to_owned())
        .collect())
}

/// The operator's key of the rolling restart's hosts (it creates the
/// tenant in the store).
const OPERATOR_KEY: &str = "drain-operator-key";

/// `triggerfish deploy --folder DIR` to the host at `base` with the
/// operator's key: every tenant of DIR stored and serving.
fn deploy_folder(dir: &std::path::Path, base: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_triggerfish"))
        .args(["deploy", "--folder"])
        .arg(dir)
        .args(["--url", base])
        .env("TRIGGERFISH_DEPLOY_KEY", OPERATOR_KEY)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

const STREAM_SETTINGS: &str =
    "[[event-sources]]\nstream = \"orders\"\nkind = \"kinesis\"\nbatch-size = 10\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_host_gives_its_stream_lanes_back_at_once() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let _timing = timing_sensitive().await;
    let dir = PluginsDir::new();
    dir.plugin("t", "10-probe.wasm", guests::RECORDS_PROBE)
        .settings("t", &format!("[auth]\nmode = \"none\"\n{STREAM_SETTINGS}"));
    let args = [
        "--no-watch",
        "--streams",
        &server.url,
        "--drain-grace-ms",
        "200",
    ];
    let mut a = ServeProcess::start(dir.path(), &args);
    let b = ServeProcess::start(dir.path(), &args);
    let (a_pid, b_pid) = (a.child.id(), b.child.id());
    let leases = Leases::open(&server.url).await;

    // The lanes are shared out: each host holds some.
    let started = Instant::now();
    loop {
        let held = leases.held().await;
        if held.get(&a_pid).is_some_and(|n| *n > 0) && held.get(&b_pid).is_some_and(|n| *n > 0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the lanes were never shared: {held:?} (a {a_pid}, b {b_pid})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    terminate(&a);
    let exit = exit_within(&mut a, Duration::from_secs(15)).await;
    let exited = Instant::now();
    assert!(exit.success(), "{exit:?}\n{}", a.last_log());
    // Its leases and its heartbeat ended as it left, not 5 s later.
    let held = leases.held().await;
    assert!(!held.contains_key(&a_pid), "a left holding lanes: {held:?}");
    let beat = leases.heartbeat(a_pid).await.expect("a's heartbeat key");
    assert!(
        beat < triggerfish::streams::now_ms(),
        "a's heartbeat still runs"
    );

    // The other host takes every lane over now: records posted at once
    // are processed well before a's leases would have run out (5 s).
    let client = client();
    let published = put_records(&client, &b.base, 0, 40).await.unwrap();
    loop {
        let seen = processed(&[b.last_log()]);
        if published.iter().all(|seq| seen.contains(seq)) {
            break;
        }
        assert!(
            exited.elapsed() < Duration::from_millis(3500),
            "b did not take a's lanes over at once: {} of {} processed\n{}",
            published.iter().filter(|s| seen.contains(*s)).count(),
            published.len(),
            b.last_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        a.last_log().contains("stream lanes given back"),
        "{}",
        a.last_log()
    );
}

/// HAProxy on `deploy/haproxy.cfg`, in front of three hosts; killed when
/// dropped.
struct Haproxy {
    child: Child,
    listen: SocketAddr,
    stats: SocketAddr,
}

impl Haproxy {
    /// Starts HAProxy, or None (with a note) when it is not installed and
    /// this is not CI.
    fn start(hosts: &[SocketAddr]) -> Option<Haproxy> {
        if Command::new("haproxy").arg("-v").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "haproxy is not installed: .ci/run installs it (apt-get install -y haproxy)"
            );
            eprintln!("haproxy is not installed; skipping (apt-get install -y haproxy)");
            return None;
        }
        let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy.cfg");
        let (listen, stats) = (free_addr(), free_addr());
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .env("TF_LB_LISTEN", listen.to_string())
            .env("TF_LB_STATS", stats.to_string())
            .env("TF_HOST1", hosts[0].to_string())
            .env("TF_HOST2", hosts[1].to_string())
            .env("TF_HOST3", hosts[2].to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy starts");
        Some(Haproxy {
            child,
            listen,
            stats,
        })
    }

    /// Each host's state as HAProxy sees it (`UP`, `DOWN`, ...), from its
    /// stats CSV.
    async fn states(&self, client: &reqwest::Client) -> BTreeMap<String, String> {
        let Ok(response) = client
            .get(format!("http://{}/stats;csv", self.stats))
            .send()
            .await
        else {
            return BTreeMap::new();
        };
        let text = response.text().await.unwrap_or_default();
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let column = |name: &str| header.iter().position(|h| *h == name);
        let (Some(px), Some(sv), Some(status)) =
            (column("pxname"), column("svname"), column("status"))
        else {
            return BTreeMap::new();
        };
        lines
            .map(|line| line.split(',').collect::<Vec<_>>())
            .filter(|f| {
                f.get(px) == Some(&"hosts") && f.get(sv).is_some_and(|s| s.starts_with("host"))
            })
            .map(|f| {
                (
                    f[sv].to_owned(),
                    f.get(status).copied().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    /// Waits until HAProxy has `host` (`host1`...) in rotation.
    async fn wait_up(&self, client: &reqwest::Client, host: &str) {
        let started = Instant::now();
        loop {
            let states = self.states(client).await;
            if states.get(host).is_some_and(|s| s == "UP") {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "HAProxy never put {host} in rotation: {states:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the clients saw during the rolling restart.
#[derive(Default)]
struct Seen {
    events: usize,
    published: Vec<String>,
    failures: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_haproxy_fails_no_request_and_loses_no_record() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let addrs = [free_addr(), free_addr(), free_addr()];
    let Some(haproxy) = Haproxy::start(&addrs) else {
        return;
    };
    let _timing = timing_sensitive().await;
    let dir = PluginsDir::new();
    dir.plugin("t", "10-confirm.wasm", guests::PRESIGNUP_PROBE)
        .plugin("t", "20-copy.wasm", guests::PRESIGNUP_PROBE)
        .plugin("t", "30-copy.wasm", guests::PRESIGNUP_PROBE)
        .plugin("t", "40-records.wasm", guests::RECORDS_PROBE)
        .settings(
            "t",
            &format!(
                "[auth]\nmode = \"none\"\n\
                 [plugins.10-confirm.config]\nmode = \"auto-confirm\"\n\
                 [plugins.20-copy.config]\nmode = \"copy\"\n\
                 [plugins.30-copy.config]\nmode = \"copy\"\n{STREAM_SETTINGS}"
            ),
        );
    // The hosts share their tenants through NATS: each has an empty folder
    // of its own, the tenant is deployed once through the first host, and
    // a restarted host serves only once it has read the store again.
    let keys = tempfile::tempdir().unwrap();
    let admin_keys = keys.path().join("admin-keys");
    std::fs::write(&admin_keys, format!("{}\n", hash_key(OPERATOR_KEY))).unwrap();
    let folders = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let args: Vec<String> = [
        "--streams",
        &nats.url,
        "--shared-plugins",
        "--admin-keys",
        admin_keys.to_str().unwrap(),
        "--drain-grace-ms",
        "1500",
        "--drain-timeout-s",
        "20",
    ]
    .map(str::to_owned)
    .to_vec();
    let start = |host: usize| {
        let (folder, addr, args) = (folders[host].path().to_owned(), addrs[host], args.clone());
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ServeProcess::start_at(&folder, addr, &args)
        })
    };
    let mut hosts = vec![start(0).await.unwrap()];
    deploy_folder(dir.path(), &hosts[0].base);
    for host in 1..3 {
        hosts.push(start(host).await.unwrap());
    }
    let client = client();
    for name in ["host1", "host2", "host3"] {
        haproxy.wait_up(&client, name).await;
    }
    let lb = format!("http://{}", haproxy.listen);

    let test = async {
        // Clients send without pause through HAProxy: four sending the
        // 3-plugin chain's event, one putting records.
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for _ in 0..4 {
            let (client, lb, seen, stop) = (client.clone(), lb.clone(), seen.clone(), stop.clone());
            clients.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let answer = sign_up(&client, &lb).await;
                    let mut seen = seen.lock().unwrap();
                    match answer {
                        Ok((200, body))
                            if body["response"]["autoConfirmUser"] == true
                                && body["response"]["autoVerifyEmail"] == true =>
                        {
                            seen.events += 1
                        }
                        other => seen.failures.push(format!("event: {other:?}")),
                    }
                }
            }));
        }
        {
            let (client, lb, seen, stop) = (client.clone(), lb.clone(), seen.clone(), stop.clone());
            clients.push(tokio::spawn(async move {
                let mut from = 0;
                while !stop.load(Ordering::Relaxed) {
                    let answer = put_records(&client, &lb, from, 5).await;
                    from += 5;
                    {
                        let mut seen = seen.lock().unwrap();
                        match answer {
                            Ok(seqs) => seen.published.extend(seqs),
                            Err(error) => seen.failures.push(format!("records: {error}")),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }));
        }

        // Each host in turn: SIGTERM, drained and exited, started again on
        // its port, back in HAProxy's rotation; then the next.
        let mut logs = Vec::new();
        for (i, host) in hosts.iter_mut().enumerate() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let before = seen.lock().unwrap().events;
            terminate(host);
            let exit = exit_within(host, Duration::from_secs(25)).await;
            assert!(
                exit.success(),
                "host{} exited {exit:?}\n{}",
                i + 1,
                host.last_log()
            );
            logs.push(host.last_log());
            *host = start(i).await.unwrap();
            haproxy.wait_up(&client, &format!("host{}", i + 1)).await;
            let during = seen.lock().unwrap().events - before;
            assert!(
                during > 0,
                "no event was served while host{} restarted",
                i + 1
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.await.unwrap();
        }
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        assert!(
            seen.failures.is_empty(),
            "failed requests: {:?}",
            seen.failures
        );
        assert!(seen.events >= 20, "only {} events were sent", seen.events);
        eprintln!(
            "rolling restart: {} events answered, {} records put, none failed",
            seen.events,
            seen.published.len()
        );

        // Every record put is processed (at least once), by some host.
        let published: BTreeSet<String> = seen.published.iter().cloned().collect();
        assert_eq!(published.len(), seen.published.len());
        let started = Instant::now();
        loop {
            let mut all = logs.clone();
            all.extend(hosts.iter().map(|h| h.last_log()));
            let done = processed(&all);
            if published.is_subset(&done) {
                assert_eq!(done, published, "only the records put were processed");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} of {} records were never processed: {:?}",
                published.difference(&done).count(),
                published.len(),
                published.difference(&done).take(20).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(240), test)
        .await
        .expect("the rolling restart ends within 240 s");
}
