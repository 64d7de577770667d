//! The `streams` section: stream records through a one-plugin Kinesis
//! handler (`tests/guests/stream-bench`) on the real `triggerfish serve`
//! binary: records per second at batch sizes 1, 10 and 100 and the time
//! from ingest to handler, on the embedded engine and on NATS JetStream
//! with one and three hosts, against a Node.js consumer of the same NATS
//! stream running the same handler logic (`bench/node/stream-consumer`),
//! all in one run.
//!
//! How the handler side is measured: every record's data begins with the
//! time the producer (this process) sent it, in microseconds since the
//! Unix epoch. The guest reads the WASI wall clock (the host's system
//! clock: the same clock, on one machine) once per batch and logs
//! `stream-bench <µs>,<µs>,...`; the Node.js handler prints the same line.
//! This process reads those lines from each consumer's output: their
//! count and arrival give the throughput, their figures the latency.
//!
//! `TRIGGERFISH_BENCH_SERVE=PATH` runs another `triggerfish` binary (an
//! older build, for before-and-after figures), and
//! `TRIGGERFISH_BENCH_STREAMS=TEXT` only the runs whose name, followed
//! by `;`, holds TEXT (`NATS, 3 hosts, batch 1;`, `waiting`); each run's
//! figures are printed on stderr as it ends.
//! `TRIGGERFISH_BENCH_STREAMS_RATE=N` sets the latency runs' rate (records
//! per second) instead of half the measured throughput, and
//! `TRIGGERFISH_BENCH_STREAMS_INGEST=first` posts them all to the first
//! host (a lane held by another host is then woken only through NATS).

use crate::harness::table;
use crate::rig::server_binary;
use anyhow::Context;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use triggerfish_test_support::{guests, PluginsDir};

const TENANT: &str = "bench";
const STREAM: &str = "orders";
/// Partition keys the producer cycles through (spread over every shard
/// and lane).
const KEYS: usize = 256;
/// Bytes of padding after the send time in each record's data.
const PADDING: usize = 84;
/// Records per POST when filling a backlog (PutRecords allows 500).
const POST_RECORDS: usize = 500;
/// How long the latency runs send before measuring (three hosts share
/// their lanes out within a few seconds of starting).
const WARM_UP: Duration = Duration::from_secs(4);
/// The most any run waits for its consumers to finish.
const DRAIN_BOUND: Duration = Duration::from_secs(25);
/// The offered rate of the latency runs: half the consumer's measured
/// throughput, at most this.
const MAX_PACED_RATE: f64 = 1000.0;

/// What a consumer reported: one line per batch.
#[derive(Default)]
struct Seen {
    records: usize,
    batches: usize,
    first: Option<(Instant, usize)>,
    last: Option<Instant>,
    latencies_us: Vec<u64>,
}

impl Seen {
    fn note(&mut self, line: &str) {
        let Some((_, list)) = line.split_once("stream-bench ") else {
            return;
        };
        let now = Instant::now();
        let mut n = 0;
        for item in list.trim().split(',') {
            n += 1;
            if let Ok(us) = item.parse() {
                self.latencies_us.push(us);
            }
        }
        self.records += n;
        self.batches += 1;
        self.first.get_or_insert((now, n));
        self.last = Some(now);
    }

    /// Records per second from the first batch's report to the last one's.
    fn rate(&self) -> f64 {
        match (self.first, self.last) {
            (Some((first, n)), Some(last)) if last > first => {
                (self.records - n) as f64 / (last - first).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

type Shared = Arc<Mutex<Seen>>;

/// A child process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// User and system CPU time of a process so far.
fn cpu(pid: u32) -> Duration {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command (which may hold spaces), from 3.
            let rest = stat.rsplit_once(')')?.1.to_owned();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0);
    // Linux reports in USER_HZ, 100 a second on every common system.
    Duration::from_millis(ticks * 10)
}

/// Reads a child's output lines into `seen`, and hands the first line
/// `ready` accepts to the returned channel.
fn read_lines(
    out: impl std::io::Read + Send + 'static,
    seen: Shared,
    ready: impl Fn(&str) -> Option<String> + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("stream-bench ") {
                seen.lock().unwrap().note(&line);
            } else if let Some(found) = ready(&line) {
                let _ = tx.send(found);
            }
        }
    });
    rx
}

/// A `nats-server -js` on a loopback port, its store in a temporary folder.
struct Nats {
    _proc: Proc,
    pid: u32,
    url: String,
    _store: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn nats_server() -> anyhow::Result<Nats> {
    let store = tempfile::tempdir()?;
    let port = free_port()?;
    let proc = Proc(
        Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("nats-server runs (apt-get install -y nats-server)")?,
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "nats-server did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Nats {
        pid: proc.pid(),
        _proc: proc,
        url: format!("nats://127.0.0.1:{port}"),
        _store: store,
    })
}

/// One `triggerfish serve`.
struct Host {
    proc: Proc,
    base: String,
}

/// Where the consumers keep streams.
#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Embedded,
    Nats { hosts: usize },
}

/// What consumes the stream.
#[derive(Clone, Copy, PartialEq)]
enum Consumer {
    Triggerfish(Engine),
    /// The Node.js consumer, on NATS (one Triggerfish host for ingest).
    Node,
}

impl Consumer {
    fn label(self) -> String {
        match self {
            Consumer::Triggerfish(Engine::Embedded) => "Triggerfish, embedded engine".into(),
            Consumer::Triggerfish(Engine::Nats { hosts: 1 }) => "Triggerfish, NATS, 1 host".into(),
            Consumer::Triggerfish(Engine::Nats { hosts }) => {
                format!("Triggerfish, NATS, {hosts} hosts")
            }
            Consumer::Node => "Node.js consumer, NATS".into(),
        }
    }

    fn engine(self) -> Engine {
        match self {
            Consumer::Triggerfish(engine) => engine,
            Consumer::Node => Engine::Nats { hosts: 1 },
        }
    }
}

/// One configuration of a run.
#[derive(Clone, Copy)]
struct Setup {
    consumer: Consumer,
    batch: usize,
    /// The handler's wait per batch.
    wait_ms: u64,
    /// Lanes per shard (Triggerfish).
    parallelization: u32,
    /// The tenant's concurrency quota, per host.
    concurrency: usize,
}

/// The tenant's folder for `setup`, its mapping on or off.
fn write_tenant(dir: &PluginsDir, setup: &Setup, enabled: bool) {
    let enabled = enabled && setup.consumer != Consumer::Node;
    dir.settings(
        TENANT,
        &format!(
            "[auth]\nmode = \"none\"\n\
             [[event-sources]]\nstream = \"{STREAM}\"\nkind = \"kinesis\"\nbatch-size = {}\n\
             parallelization = {}\nenabled = {enabled}\n\
             [plugins.10-stream-bench.config]\nwait-ms = \"{}\"\n",
            setup.batch, setup.parallelization, setup.wait_ms
        ),
    );
}

/// Everything one run starts: the NATS server, the hosts, the Node.js
/// consumer; stopped when dropped.
struct Run {
    nats: Option<Nats>,
    hosts: Vec<Host>,
    node: Option<Proc>,
    seen: Shared,
    dir: PluginsDir,
    setup: Setup,
    _data: Vec<tempfile::TempDir>,
}

struct Tools {
    serve: PathBuf,
    cache: tempfile::TempDir,
    /// `NODE_PATH` for the Node.js consumer, if it could be installed.
    node_modules: Option<PathBuf>,
}

impl Run {
    fn start(tools: &Tools, setup: Setup, enabled: bool) -> anyhow::Result<Run> {
        let dir = PluginsDir::new();
        dir.plugin(TENANT, "10-stream-bench.wasm", guests::STREAM_BENCH);
        write_tenant(&dir, &setup, enabled);
        let operator = dir.path().join(".operator.toml");
        std::fs::write(
            &operator,
            format!(
                "[defaults.quotas]\nconcurrency = {}\nstream-records-per-second = 10000000\n",
                setup.concurrency
            ),
        )?;
        let nats = match setup.consumer.engine() {
            Engine::Nats { .. } => Some(nats_server()?),
            Engine::Embedded => None,
        };
        let hosts_wanted = match setup.consumer {
            Consumer::Triggerfish(Engine::Nats { hosts }) => hosts,
            _ => 1,
        };
        let seen = Shared::default();
        let mut data = Vec::new();
        let mut hosts = Vec::new();
        for _ in 0..hosts_wanted {
            let mut command = Command::new(&tools.serve);
            command
                .args(["serve", "--no-watch", "--listen", "127.0.0.1:0"])
                .arg("--plugins-dir")
                .arg(dir.path())
                .arg("--operator-config")
                .arg(&operator)
                .arg("--cache-dir")
                .arg(tools.cache.path());
            match &nats {
                Some(nats) => {
                    command.args(["--streams", &nats.url]);
                }
                None => {
                    let folder = tempfile::tempdir()?;
                    command.arg("--data-dir").arg(folder.path());
                    data.push(folder);
                }
            }
            let mut child = command
                .env("RUST_LOG", "warn,triggerfish=info,plugin=info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("{} runs", tools.serve.display()))?;
            let stderr = child.stderr.take().context("its stderr")?;
            let proc = Proc(child);
            let serving = read_lines(stderr, seen.clone(), |line| {
                line.contains(" serving ")
                    .then(|| line.split_once("address=")?.1.split_whitespace().next())
                    .flatten()
                    .map(str::to_owned)
            });
            let address = serving
                .recv_timeout(Duration::from_secs(120))
                .context("the host never said it was serving")?;
            hosts.push(Host {
                proc,
                base: format!("http://{address}"),
            });
        }
        Ok(Run {
            nats,
            hosts,
            node: None,
            seen,
            dir,
            setup,
            _data: data,
        })
    }

    /// Starts the Node.js consumer and waits until its consumers exist
    /// (the stream must exist: post to it first).
    fn start_node(&mut self, tools: &Tools) -> anyhow::Result<()> {
        let modules = tools
            .node_modules
            .as_ref()
            .context("the Node.js consumer is not installed")?;
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node/stream-consumer/index.js");
        let nats = self.nats.as_ref().context("NATS")?;
        let mut child = Command::new("node")
            .arg(script)
            .args([
                &nats.url,
                TENANT,
                STREAM,
                "4",
                &self.setup.batch.to_string(),
                &self.setup.wait_ms.to_string(),
            ])
            .env("NODE_PATH", modules)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("node runs")?;
        let stdout = child.stdout.take().context("its stdout")?;
        let node = Proc(child);
        let ready = read_lines(stdout, self.seen.clone(), |line| {
            (line == "ready").then(|| line.to_owned())
        });
        ready
            .recv_timeout(Duration::from_secs(60))
            .context("the Node.js consumer never became ready")?;
        self.node = Some(node);
        Ok(())
    }

    /// Turns the mapping on (a SIGHUP to every host: they run with
    /// `--no-watch`).
    fn enable(&self) -> anyhow::Result<()> {
        write_tenant(&self.dir, &self.setup, true);
        for host in &self.hosts {
            let status = Command::new("kill")
                .args(["-HUP", &host.proc.pid().to_string()])
                .status()?;
            anyhow::ensure!(status.success(), "kill -HUP failed");
        }
        Ok(())
    }

    /// CPU time of every process of the run so far.
    fn cpu(&self) -> Duration {
        let mut total: Duration = self.hosts.iter().map(|h| cpu(h.proc.pid())).sum();
        if let Some(nats) = &self.nats {
            total += cpu(nats.pid);
        }
        if let Some(node) = &self.node {
            total += cpu(node.pid());
        }
        total
    }

    fn urls(&self) -> Vec<String> {
        self.hosts
            .iter()
            .map(|h| format!("{}/v1/tenants/{TENANT}/streams/{STREAM}/records", h.base))
            .collect()
    }

    fn reset(&self) {
        *self.seen.lock().unwrap() = Seen::default();
    }

    /// Waits until the consumers reported `records` records, or the bound.
    fn wait_for(&self, records: usize, bound: Duration) {
        let started = Instant::now();
        while self.seen.lock().unwrap().records < records && started.elapsed() < bound {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// A PutRecords body of `n` records stamped with the time now.
fn put_records(n: usize, counter: &mut usize) -> Value {
    use base64::Engine as _;
    let padding = "x".repeat(PADDING);
    let records: Vec<Value> = (0..n)
        .map(|_| {
            *counter += 1;
            let data = format!("{:016} {padding}", now_us());
            json!({
                "PartitionKey": format!("key-{}", *counter % KEYS),
                "Data": base64::engine::general_purpose::STANDARD.encode(data),
            })
        })
        .collect();
    json!({ "Records": records })
}

async fn post(client: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<()> {
    let response = client.post(url).json(&body).send().await?;
    let status = response.status();
    anyhow::ensure!(
        status.is_success(),
        "POST {url}: {status} {}",
        response.text().await.unwrap_or_default()
    );
    Ok(())
}

/// Posts `total` records as fast as 4 requests at a time go, round robin
/// over the hosts; returns the records per second ingested.
async fn fill(urls: &[String], total: usize) -> anyhow::Result<f64> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut counter = 0;
    let mut requests = Vec::new();
    let mut left = total;
    let mut i = 0;
    while left > 0 {
        let n = left.min(POST_RECORDS);
        left -= n;
        requests.push((urls[i % urls.len()].clone(), put_records(n, &mut counter)));
        i += 1;
    }
    let requests = Arc::new(Mutex::new(requests));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (client, requests) = (client.clone(), requests.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let next = requests.lock().unwrap().pop();
                let Some((url, body)) = next else {
                    return anyhow::Ok(());
                };
                post(&client, &url, body).await?;
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Posts at `rate` records per second for `duration` (a request every
/// 10 ms, round robin over the hosts, at most 32 in flight); returns the
/// records posted.
async fn paced(urls: &[String], rate: f64, duration: Duration) -> anyhow::Result<usize> {
    let client = reqwest::Client::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let (mut owed, mut counter, mut sent, mut i) = (0.0, 0, 0, 0);
    let mut requests = Vec::new();
    while started.elapsed() < duration {
        tick.tick().await;
        owed += rate / 100.0;
        let n = owed.floor() as usize;
        if n == 0 {
            continue;
        }
        owed -= n as f64;
        sent += n;
        let permit = slots.clone().acquire_owned().await?;
        let body = put_records(n, &mut counter);
        let (client, url) = (client.clone(), urls[i % urls.len()].clone());
        i += 1;
        requests.push(tokio::spawn(async move {
            let _permit = permit;
            post(&client, &url, body).await
        }));
    }
    for request in requests {
        request.await??;
    }
    Ok(sent)
}

/// What one consumer did at one batch size.
struct Figures {
    setup: Setup,
    rate: f64,
    ingest: f64,
    cpu_per_1000: Duration,
    drained: usize,
    backlog: usize,
    paced: Option<Paced>,
}

struct Paced {
    rate: f64,
    p50: Duration,
    p99: Duration,
    records: usize,
    handled: usize,
}

fn backlog_for(batch: usize) -> usize {
    match batch {
        1 => 4_000,
        2..=10 => 20_000,
        _ => 50_000,
    }
}

/// Records per second through the consumer: a backlog posted while the
/// mapping is off (or before Node.js starts), then drained.
fn drain(rt: &tokio::runtime::Runtime, tools: &Tools, setup: Setup) -> anyhow::Result<Figures> {
    let mut run = Run::start(tools, setup, false)?;
    let backlog = backlog_for(setup.batch);
    let ingest = rt.block_on(fill(&run.urls(), backlog))?;
    let cpu_before = run.cpu();
    match setup.consumer {
        Consumer::Node => run.start_node(tools)?,
        Consumer::Triggerfish(_) => run.enable()?,
    }
    run.wait_for(backlog, DRAIN_BOUND);
    let cpu = run.cpu().saturating_sub(cpu_before);
    let seen = run.seen.lock().unwrap();
    Ok(Figures {
        setup,
        rate: seen.rate(),
        ingest,
        cpu_per_1000: cpu.mul_f64(1000.0 / seen.records.max(1) as f64),
        drained: seen.records,
        backlog,
        paced: None,
    })
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    Duration::from_micros(sorted[i])
}

/// Latency from the producer's send to the handler at `rate` records per
/// second, after a warm-up.
fn latency(
    rt: &tokio::runtime::Runtime,
    tools: &Tools,
    setup: Setup,
    rate: f64,
    seconds: u64,
) -> anyhow::Result<Paced> {
    let mut run = Run::start(tools, setup, true)?;
    let mut urls = run.urls();
    if std::env::var("TRIGGERFISH_BENCH_STREAMS_INGEST").as_deref() == Ok("first") {
        urls.truncate(1);
    }
    if setup.consumer == Consumer::Node {
        // The stream exists once something was posted.
        rt.block_on(fill(&urls, 1))?;
        run.start_node(tools)?;
    }
    rt.block_on(paced(&urls, rate, WARM_UP))?;
    std::thread::sleep(Duration::from_millis(500));
    run.reset();
    let sent = rt.block_on(paced(&urls, rate, Duration::from_secs(seconds)))?;
    run.wait_for(sent, DRAIN_BOUND);
    let mut seen = run.seen.lock().unwrap();
    seen.latencies_us.sort_unstable();
    Ok(Paced {
        rate,
        p50: percentile(&seen.latencies_us, 0.5),
        p99: percentile(&seen.latencies_us, 0.99),
        records: sent,
        handled: seen.records,
    })
}

/// Installs the `nats` package for the Node.js consumer into
/// `target/node-tools/stream-consumer` from the committed lock file, once
/// per version of it (as xtask installs componentize-js). None, with the
/// reason, when Node.js, npm or the registry is not there.
fn install_node_client() -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let source = root.join("node/stream-consumer");
    let tools = root
        .parent()
        .ok_or("the workspace")?
        .join("target/node-tools/stream-consumer");
    let read = |file: &str| std::fs::read(source.join(file)).map_err(|e| format!("{file}: {e}"));
    let (manifest, lock) = (read("package.json")?, read("package-lock.json")?);
    let installed = tools.join("node_modules/.installed-lock.json");
    if std::fs::read(&installed).ok().as_ref() == Some(&lock) {
        return Ok(tools.join("node_modules"));
    }
    std::fs::create_dir_all(&tools).map_err(|e| e.to_string())?;
    std::fs::write(tools.join("package.json"), &manifest)
        .and_then(|_| std::fs::write(tools.join("package-lock.json"), &lock))
        .map_err(|e| e.to_string())?;
    let out = Command::new("npm")
        .current_dir(&tools)
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .output()
        .map_err(|e| format!("cannot run npm: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`npm install` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::write(&installed, &lock).map_err(|e| e.to_string())?;
    Ok(tools.join("node_modules"))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn per_second(rate: f64) -> String {
    format!("{rate:.0}")
}

fn ms(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    }
}

pub fn streams(seconds: u64) -> anyhow::Result<String> {
    let serve = match std::env::var_os("TRIGGERFISH_BENCH_SERVE") {
        Some(path) => PathBuf::from(path),
        None => server_binary()?,
    };
    let nats_missing = Command::new("nats-server")
        .arg("--version")
        .output()
        .is_err();
    let node_modules = install_node_client();
    let tools = Tools {
        serve,
        cache: tempfile::tempdir()?,
        node_modules: node_modules.clone().ok(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let load_before = load_average();

    let mut consumers = vec![Consumer::Triggerfish(Engine::Embedded)];
    if !nats_missing {
        consumers.extend([
            Consumer::Triggerfish(Engine::Nats { hosts: 1 }),
            Consumer::Triggerfish(Engine::Nats { hosts: 3 }),
        ]);
        if tools.node_modules.is_some() {
            consumers.push(Consumer::Node);
        }
    }
    let filter = std::env::var("TRIGGERFISH_BENCH_STREAMS").unwrap_or_default();
    let mut rows = Vec::new();
    for batch in [1, 10, 100] {
        for &consumer in &consumers {
            if !format!("{}, batch {batch};", consumer.label()).contains(&filter) {
                continue;
            }
            let setup = Setup {
                consumer,
                batch,
                wait_ms: 0,
                parallelization: 1,
                concurrency: 16,
            };
            eprintln!("bench: streams: {}, batch {batch}…", consumer.label());
            let mut figures = drain(&rt, &tools, setup)?;
            let rate = match std::env::var("TRIGGERFISH_BENCH_STREAMS_RATE") {
                Ok(rate) => rate.parse().context("TRIGGERFISH_BENCH_STREAMS_RATE")?,
                Err(_) => (figures.rate / 2.0).clamp(10.0, MAX_PACED_RATE),
            };
            figures.paced = Some(latency(&rt, &tools, setup, rate, seconds)?);
            eprint!("{}", report_rows(std::slice::from_ref(&figures)));
            rows.push(figures);
        }
    }

    // A handler that waits: one host against three, each host held to a
    // concurrency quota, with more lanes than one host may run at once.
    let mut scaling = Vec::new();
    if !nats_missing {
        let mut waiting = vec![
            Consumer::Triggerfish(Engine::Nats { hosts: 1 }),
            Consumer::Triggerfish(Engine::Nats { hosts: 3 }),
        ];
        if tools.node_modules.is_some() {
            waiting.push(Consumer::Node);
        }
        for consumer in waiting {
            if !format!("{}, waiting;", consumer.label()).contains(&filter) {
                continue;
            }
            let setup = Setup {
                consumer,
                batch: 10,
                wait_ms: WAIT_MS,
                parallelization: 1,
                concurrency: WAIT_CONCURRENCY,
            };
            eprintln!("bench: streams: {} waiting {WAIT_MS} ms…", consumer.label());
            let figures = drain(&rt, &tools, setup)?;
            eprintln!("{}: {:.0} records/s", consumer.label(), figures.rate);
            scaling.push(figures);
        }
    }
    let load_after = load_average();
    Ok(report(
        &rows,
        &scaling,
        seconds,
        nats_missing,
        node_modules.err(),
        (&load_before, &load_after),
    ))
}

/// The waiting handler's wait per batch.
const WAIT_MS: u64 = 20;
/// Each host's concurrency quota in the waiting runs.
const WAIT_CONCURRENCY: usize = 2;

fn report(
    rows: &[Figures],
    scaling: &[Figures],
    seconds: u64,
    nats_missing: bool,
    node_missing: Option<String>,
    load: (&str, &str),
) -> String {
    let mut out = String::from("## Stream records\n\n");
    out.push_str(&format!(
        "A one-plugin Kinesis handler (`tests/guests/stream-bench`) behind an `[[event-sources]]` mapping, on the release `triggerfish serve` binary; NATS is Debian's `nats-server` on loopback with its store on disk; everything (producer, hosts, server, Node.js) on the same 2 cores. Each record carries ~100 bytes of data beginning with the time this process sent it (µs since the Unix epoch); the guest reads the WASI wall clock (the host's system clock) when its batch arrives and logs each record's time from send to handler, one line per batch, which this process reads from the host's log. The Node.js consumer (`bench/node/stream-consumer`, npm's `nats` 2.29.3 installed into `target/`) runs the same handler logic on the same NATS stream: one durable pull consumer per shard subject, one batch at a time per shard (Triggerfish's lanes keep the same order), the batch being what has arrived up to the batch size, acknowledged by its last message.\n\n\
         - **records/s**: a backlog (4,000 records at batch size 1, 20,000 at 10, 50,000 at 100) is posted (`POST /v1/tenants/bench/streams/orders/records`, 500 records a request, round robin over the hosts) while the mapping is off, then the mapping is turned on (SIGHUP) or Node.js started: records handled from the first batch's report to the last one's (at most {} s). *CPU per 1,000 records* is the user and system time of every process of the run (hosts, nats-server, Node.js) while draining.\n\
         - **latency**: a fresh run where records are posted every 10 ms (round robin over the hosts) at half the consumer's measured throughput, at most {} records/s, {} s of warm-up then {seconds} s measured: p50 and p99 of every record's time from the producer's send (before the POST) to the handler.\n\n",
        DRAIN_BOUND.as_secs(),
        MAX_PACED_RATE,
        WARM_UP.as_secs(),
    ));
    if nats_missing {
        out.push_str("nats-server is not installed (`apt-get install -y nats-server`): only the embedded engine was measured.\n\n");
    }
    if let Some(why) = node_missing {
        out.push_str(&format!("The Node.js consumer could not run: {why}.\n\n"));
    }
    out.push_str(&report_rows(rows));
    let rate_of = |consumer: Consumer, batch: usize| {
        rows.iter()
            .find(|f| f.setup.consumer == consumer && f.setup.batch == batch)
            .map(|f| f.rate)
    };
    let mut ratios = Vec::new();
    for batch in [1, 10, 100] {
        if let (Some(tf), Some(node)) = (
            rate_of(Consumer::Triggerfish(Engine::Nats { hosts: 1 }), batch),
            rate_of(Consumer::Node, batch),
        ) {
            ratios.push(format!("{:.2}× at batch size {batch}", tf / node));
        }
    }
    if !ratios.is_empty() {
        out.push_str(&format!(
            "\nOne Triggerfish host on NATS against the Node.js consumer, records per second: {}.\n",
            ratios.join(", ")
        ));
    }
    if !scaling.is_empty() {
        out.push_str(&format!(
            "\n### Three hosts against one\n\nThe handler waits {WAIT_MS} ms per batch (a sleep: its CPU turn is given away meanwhile); batch size 10, 4 lanes (one per shard), and each host's tenant held to `[quotas] concurrency = {WAIT_CONCURRENCY}`: one host runs at most {WAIT_CONCURRENCY} of the 4 lanes at once (at most {} records/s if nothing else took time; its other lanes find the tenant busy and back off), three hosts hold at most 2 lanes each and run all 4 (at most {}). The Node.js consumer runs its 4 shards at once with no quota. On these 2 cores a host's work per batch (engine reads and writes, the plugin call) is what bounds a handler that does not wait: three hosts then share the same 2 cores and do no better than one.\n\n",
            WAIT_CONCURRENCY as u64 * 10 * 1000 / WAIT_MS,
            4 * 10 * 1000 / WAIT_MS,
        ));
        let rows: Vec<Vec<String>> = scaling
            .iter()
            .map(|f| {
                vec![
                    f.setup.consumer.label(),
                    per_second(f.rate),
                    ms(f.cpu_per_1000),
                ]
            })
            .collect();
        out.push_str(&table(
            &["consumer", "records/s", "CPU per 1,000 records"],
            &rows,
        ));
        if let (Some(one), Some(three)) = (scaling.first(), scaling.get(1)) {
            out.push_str(&format!(
                "\nThree hosts: {:.2}× one host's records per second.\n",
                three.rate / one.rate.max(f64::MIN_POSITIVE)
            ));
        }
    }
    out.push_str(&format!(
        "\nLoad average (1, 5, 15 min) before the section: {}; after: {}.\n\n",
        load.0, load.1
    ));
    out
}

/// The main table's rows.
fn report_rows(rows: &[Figures]) -> String {
    let mut table_rows = Vec::new();
    for f in rows {
        let paced = f.paced.as_ref();
        let handled = |p: &Paced| {
            if p.handled < p.records {
                format!(" ({} of {} handled)", p.handled, p.records)
            } else {
                String::new()
            }
        };
        table_rows.push(vec![
            f.setup.consumer.label(),
            f.setup.batch.to_string(),
            format!(
                "{}{}",
                per_second(f.rate),
                if f.drained < f.backlog {
                    format!(
                        " ({} of {} in {} s)",
                        f.drained,
                        f.backlog,
                        DRAIN_BOUND.as_secs()
                    )
                } else {
                    String::new()
                }
            ),
            ms(f.cpu_per_1000),
            per_second(f.ingest),
            paced.map_or(String::new(), |p| per_second(p.rate)),
            paced.map_or(String::new(), |p| ms(p.p50)),
            paced.map_or(String::new(), |p| format!("{}{}", ms(p.p99), handled(p))),
        ]);
    }
    table(
        &[
            "consumer",
            "batch size",
            "records/s",
            "CPU per 1,000 records",
            "ingest records/s (POST)",
            "latency run: records/s",
            "p50",
            "p99",
        ],
        &table_rows,
    )
}
