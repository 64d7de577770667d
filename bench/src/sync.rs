//! `sync`: what a SyncTrigger call pays for keeping its outcome and
//! publishing it (Cognito Streams), on the embedded engine and on NATS.
//!
//! The same sync (the seed's sample plus a key whose value changes on
//! every call, so that every call writes) through `sync-sample` and the
//! dispatcher, three ways: with no dataset state at all (a dispatcher
//! without Cognito Streams: the chain alone), with the state kept and
//! publishing off (`[cognito-streams] enabled = false`), and with the
//! state kept and published. The three are measured in turns, a batch
//! each per round (each round starting with the next one), so they share
//! the machine's load; medians per call
//! over 21 rounds, ratios against publishing off. NATS runs on a
//! `nats-server -js` started here on a loopback port (skipped, and said
//! so, when it is not installed).

use crate::fixtures::load;
use crate::harness::{ratio, table, us, Stats};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use triggerfish::cognito::Cognito;
use triggerfish::dispatch::Dispatcher;
use triggerfish::engine::{Runtime, RuntimeConfig};
use triggerfish::streams::embedded::EmbeddedEngine;
use triggerfish::streams::engine::Engine;
use triggerfish::streams::nats::NatsEngine;
use triggerfish::streams::Streams;
use triggerfish::tenant::Tenant;
use triggerfish_test_support::{guests, PluginsDir};

const ROUNDS: usize = 21;
const BATCH: usize = 50;
const WARMUP: usize = 20;

const PUBLISHING: &str = "[auth]\nmode = \"none\"\n[cognito-streams]\nstream = \"cognito\"\n";
const NOT_PUBLISHING: &str =
    "[auth]\nmode = \"none\"\n[cognito-streams]\nstream = \"cognito\"\nenabled = false\n";

/// The seed's sample sync of `identity`, with `Level` set to `n`.
fn sync(identity: &str, n: usize) -> Value {
    json!({
        "version": 2,
        "eventType": "SyncTrigger",
        "region": "us-east-1",
        "identityPoolId": "us-east-1:bench-pool",
        "identityId": identity,
        "datasetName": "settings",
        "datasetRecords": {
            "SampleKey1": {"oldValue": "oldValue1", "newValue": "newValue1", "op": "replace"},
            "SampleKey2": {"oldValue": "oldValue2", "newValue": "newValue2", "op": "replace"},
            "Level": {"oldValue": null, "newValue": format!("level-{n}"), "op": "replace"}
        }
    })
}

/// One way of running the sync.
struct Way {
    name: &'static str,
    dispatcher: Dispatcher,
    tenant: Tenant,
    identity: &'static str,
    calls: usize,
    samples: Vec<Duration>,
}

impl Way {
    async fn batch(&mut self, n: usize) -> Duration {
        let started = Instant::now();
        for _ in 0..n {
            self.calls += 1;
            self.dispatcher
                .dispatch(&self.tenant, sync(self.identity, self.calls))
                .await
                .expect("the sync answers");
        }
        started.elapsed() / n as u32
    }
}

/// The three ways on `engine`, measured in turns: a Markdown table.
async fn measure(engine: Arc<dyn Engine>, dir: &PluginsDir, runtime: Arc<Runtime>) -> String {
    let cognito = || {
        Arc::new(Cognito::new(
            Arc::new(Streams::new(engine.clone())),
            "http://127.0.0.1:1",
        ))
    };
    let mut ways = [
        Way {
            name: "chain only (no dataset state)",
            dispatcher: Dispatcher::new(),
            tenant: load(runtime.clone(), dir, "off").await,
            identity: "us-east-1:chain-only",
            calls: 0,
            samples: Vec::new(),
        },
        Way {
            name: "state kept, publishing off",
            dispatcher: Dispatcher::new().with_cognito(cognito()),
            tenant: load(runtime.clone(), dir, "off").await,
            identity: "us-east-1:state-only",
            calls: 0,
            samples: Vec::new(),
        },
        Way {
            name: "state kept and published",
            dispatcher: Dispatcher::new().with_cognito(cognito()),
            tenant: load(runtime.clone(), dir, "on").await,
            identity: "us-east-1:published",
            calls: 0,
            samples: Vec::new(),
        },
    ];
    for way in ways.iter_mut() {
        way.batch(WARMUP).await;
    }
    for round in 0..ROUNDS {
        // Each round starts with another way, so none always runs first.
        for i in 0..ways.len() {
            let way = &mut ways[(round + i) % 3];
            let time = way.batch(BATCH).await;
            way.samples.push(time);
        }
    }
    let stats: Vec<Stats> = ways.iter().map(|w| Stats::of(w.samples.clone())).collect();
    let (chain, off) = (stats[0].median, stats[1].median);
    let rows: Vec<Vec<String>> = ways
        .iter()
        .zip(&stats)
        .map(|(way, s)| {
            vec![
                way.name.to_owned(),
                s.cell(),
                ratio(s.median, off),
                ratio(s.median, chain),
                us(s.median.saturating_sub(chain)),
            ]
        })
        .collect();
    table(
        &[
            "sync",
            "per call, median (min–max)",
            "vs publishing off",
            "vs chain only",
            "added to the chain",
        ],
        &rows,
    )
}

/// A `nats-server -js` on a free loopback port, killed when dropped.
struct NatsServer(std::process::Child);

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nats_server(store: &std::path::Path) -> Option<(NatsServer, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = std::process::Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let server = NatsServer(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((server, format!("nats://127.0.0.1:{port}")))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub fn section() -> anyhow::Result<String> {
    let dir = PluginsDir::new();
    for (tenant, settings) in [("on", PUBLISHING), ("off", NOT_PUBLISHING)] {
        dir.plugin(tenant, "10-sync-sample.wasm", guests::SYNC_SAMPLE)
            .settings(tenant, settings);
    }
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        max_instances: 16,
        ..RuntimeConfig::default()
    })?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut out = format!(
        "## Cognito Streams: what a sync pays for its state and its record\n\n\
         One SyncTrigger call through `sync-sample` and the dispatcher, every call changing one key; \
         the three ways measured in turns ({ROUNDS} rounds of {BATCH} calls each), medians per call. \
         Load average at the start: {}.\n\n",
        load_average()
    );
    let data = dir.path().join(".embedded");
    let embedded: Arc<dyn Engine> = Arc::new(EmbeddedEngine::open(&data)?);
    let figures = rt.block_on(measure(embedded, &dir, runtime.clone()));
    out.push_str(&format!(
        "**Embedded** (redb, one fsync'd write transaction per sync), load average after: {}\n\n{figures}\n",
        load_average()
    ));
    let store = dir.path().join(".nats");
    match nats_server(&store) {
        Some((_server, url)) => {
            let figures = rt.block_on(async {
                let nats: Arc<dyn Engine> = Arc::new(NatsEngine::connect(&url).await?);
                anyhow::Ok(measure(nats, &dir, runtime.clone()).await)
            })?;
            out.push_str(&format!(
                "**NATS** (nats-server -js on loopback: compare-and-set of the dataset, then the publish and the outbox cleared), load average after: {}\n\n{figures}\n",
                load_average()
            ));
        }
        None => out.push_str("**NATS**: skipped (`nats-server` is not installed).\n\n"),
    }
    Ok(out)
}
