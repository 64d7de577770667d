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

mod producer;
mod servers;

use crate::harness::table;
use crate::rig::server_binary;
use anyhow::Context;
use producer::{fill, paced};
use servers::{install_node_client, Consumer, Engine, Run, Setup, Tools};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// How long the latency runs send before measuring (three hosts share
/// their lanes out within a few seconds of starting).
const WARM_UP: Duration = Duration::from_secs(4);
/// The most any run waits for its consumers to finish.
const DRAIN_BOUND: Duration = Duration::from_secs(25);
/// The offered rate of the latency runs: half the consumer's measured
/// throughput, at most this.
const MAX_PACED_RATE: f64 = 1000.0;

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
