//! The `http` section: the 3-plugin PreSignUp chain over HTTP, against
//! the same three checks in a Node.js process, in a Node.js cluster (one
//! worker per core) and in native axum; wrk on the same machine.
//!
//! Triggerfish runs as a host would be run: the tenant takes a bearer key
//! (hashed and checked on every request) and the operator's metrics and
//! recent history are on (`--admin-keys`), so the figures include them.
//!
//! The servers take turns: each round runs every server at 1 and at 64
//! connections, and the table gives the median of the rounds (a machine
//! shared with other work moves all of them alike). With
//! `TRIGGERFISH_BENCH_BEFORE=PATH` (another build of `triggerfish`) that
//! build takes its turns too, to measure a change against its parent in
//! the same minutes.

use crate::fixtures::{chain_dir, event};
use crate::harness::table;
use crate::rig::{server_binary, wait_for_port, wait_for_ready, wrk, Load, Server};
use anyhow::Context;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Rounds per server and connection count; the table gives their median.
const ROUNDS: usize = 3;
/// Connection counts: one client waiting on each answer, and a busy host.
const CONNECTIONS: [usize; 2] = [1, 64];
/// The bench tenant's key, and its operator key for `/metrics`.
const KEY: &str = "bench-tenant-key-0123456789abcdef";
const ADMIN_KEY: &str = "bench-operator-key-0123456789abcdef";

const TRIGGERFISH: &str = "Triggerfish";
const BEFORE: &str = "Triggerfish (before)";
const NODE: &str = "Node.js index of modules";
const CLUSTER: &str = "Node.js cluster, one worker per core";
const NATIVE: &str = "native axum (no sandbox)";

/// One server under test: how to start it and where it listens.
struct Contender {
    name: &'static str,
    addr: &'static str,
    start: Box<dyn Fn() -> anyhow::Result<Server>>,
    /// Waits for `/healthz` (Triggerfish loads its tenants after listening).
    ready_check: bool,
}

/// The figures of one server at one connection count, over the rounds.
#[derive(Default)]
struct Runs {
    loads: Vec<Load>,
}

impl Runs {
    fn median_by(&self, f: impl Fn(&Load) -> f64) -> f64 {
        let mut values: Vec<f64> = self.loads.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    }

    fn rps(&self) -> f64 {
        self.median_by(|l| l.rps)
    }

    fn p50_ms(&self) -> f64 {
        self.median_by(Load::p50_ms)
    }

    fn p99_ms(&self) -> f64 {
        self.median_by(Load::p99_ms)
    }

    fn rps_range(&self) -> (f64, f64) {
        let rps = self.loads.iter().map(|l| l.rps);
        (
            rps.clone().fold(f64::INFINITY, f64::min),
            rps.fold(0.0, f64::max),
        )
    }
}

fn latency(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1e3)
    } else {
        format!("{ms:.2} ms")
    }
}

/// A wrk script that posts the benchmark event with the tenant's key.
fn post_script(dir: &Path) -> anyhow::Result<PathBuf> {
    let script = dir.join("post-with-key.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {KEY}\"\nwrk.body = [[{}]]\n",
            event()
        ),
    )?;
    Ok(script)
}

/// `triggerfish serve` as a host runs it: keys, metrics, the log at warn.
fn serve(
    triggerfish: &Path,
    addr: &str,
    plugins: &Path,
    admin_keys: &Path,
    operator: &Path,
) -> anyhow::Result<Server> {
    let child = Command::new(triggerfish)
        .args(["serve", "--no-watch", "--no-cache", "--listen", addr])
        .arg("--plugins-dir")
        .arg(plugins)
        .arg("--admin-keys")
        .arg(admin_keys)
        .arg("--operator-config")
        .arg(operator)
        // A data folder of its own: two servers cannot share one.
        .arg("--data-dir")
        .arg(std::env::temp_dir().join(format!(
            "triggerfish-bench-{}-{}",
            std::process::id(),
            addr.replace([':', '.'], "-")
        )))
        .env("RUST_LOG", "warn")
        // What `cargo xtask bench` sets; said again for a bench run by hand.
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Server(child))
}

/// Checks the answer once: every server must give the same event back.
fn check_answer(name: &str, url: &str) -> anyhow::Result<()> {
    let check = Command::new("curl")
        .args(["-s", "-X", "POST", "-H", "content-type: application/json"])
        .args(["-H", &format!("authorization: Bearer {KEY}")])
        .args(["-d", &event().to_string(), url])
        .output()?;
    let answer: Value = serde_json::from_slice(&check.stdout)
        .with_context(|| format!("{name} answered {}", String::from_utf8_lossy(&check.stdout)))?;
    anyhow::ensure!(
        answer["response"]["autoConfirmUser"] == true,
        "{name} answered {answer}"
    );
    Ok(())
}

/// HTTP on loopback: Triggerfish, Node.js (one process and a cluster),
/// native axum; wrk on the same machine.
/// A profile of one request under wrk and how the figures should grow on
/// more cores: measured by hand with `perf` (its set-up is in the text),
/// kept beside the figures each run writes, and redone when the request
/// path changes.
const PROFILE: &str = include_str!("http_profile.md");

pub fn http(seconds: u64) -> anyhow::Result<String> {
    let bench = std::env::current_exe()?;
    let triggerfish = server_binary()?;
    let before = std::env::var_os("TRIGGERFISH_BENCH_BEFORE").map(PathBuf::from);
    let node_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node");

    let dir = chain_dir(&[3]);
    // The shared settings open the tenant to anyone; a host takes keys.
    let settings = dir.tenant_dir("chain3").join("tenant.toml");
    let toml = std::fs::read_to_string(&settings)?.replace(
        "[auth]\nmode = \"none\"\n",
        &format!(
            "[auth]\nkeys = [\"{}\"]\n",
            triggerfish::auth::hash_key(KEY)
        ),
    );
    std::fs::write(&settings, toml)?;
    // The tenant's concurrency quota (16 by default) would answer 429 to
    // most of 64 connections; the operator raises it for this client.
    let operator = dir.path().join("operator.toml");
    std::fs::write(&operator, "[defaults.quotas]\nconcurrency = 128\n")?;
    let admin_keys = dir.path().join("admin-keys");
    std::fs::write(&admin_keys, triggerfish::auth::hash_key(ADMIN_KEY) + "\n")?;
    let script = post_script(dir.path())?;

    let node = move |file: &'static str, addr: &'static str| -> anyhow::Result<Server> {
        let child = Command::new("node")
            .arg(node_dir.join(file))
            .arg(addr)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("node runs")?;
        Ok(Server(child))
    };
    let mut contenders = vec![Contender {
        name: TRIGGERFISH,
        addr: "127.0.0.1:18081",
        start: {
            let (t, p, a, o) = (
                triggerfish.clone(),
                dir.path().to_owned(),
                admin_keys.clone(),
                operator.clone(),
            );
            Box::new(move || serve(&t, "127.0.0.1:18081", &p, &a, &o))
        },
        ready_check: true,
    }];
    if let Some(before) = before {
        contenders.push(Contender {
            name: BEFORE,
            addr: "127.0.0.1:18085",
            start: {
                let (p, a, o) = (dir.path().to_owned(), admin_keys.clone(), operator.clone());
                Box::new(move || serve(&before, "127.0.0.1:18085", &p, &a, &o))
            },
            ready_check: true,
        });
    }
    contenders.push(Contender {
        name: NODE,
        addr: "127.0.0.1:18082",
        start: {
            let node = node.clone();
            Box::new(move || node("server.js", "127.0.0.1:18082"))
        },
        ready_check: false,
    });
    contenders.push(Contender {
        name: CLUSTER,
        addr: "127.0.0.1:18086",
        start: Box::new(move || node("cluster.js", "127.0.0.1:18086")),
        ready_check: false,
    });
    contenders.push(Contender {
        name: NATIVE,
        addr: "127.0.0.1:18083",
        start: Box::new(move || {
            let child = Command::new(&bench)
                .args(["native-server", "127.0.0.1:18083"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            Ok(Server(child))
        }),
        ready_check: false,
    });

    // Every server runs for the whole section, idle while another is
    // measured, so the rounds can alternate between them.
    let mut running = Vec::new();
    for c in &contenders {
        running.push((c.start)()?);
        wait_for_port(c.addr)?;
        if c.ready_check {
            wait_for_ready(c.addr)?;
        }
        let url = format!("http://{}/v1/tenants/chain3/events", c.addr);
        check_answer(c.name, &url)?;
        wrk(&url, 16, 2, &script)?; // warm-up
    }
    let mut runs: Vec<Vec<Runs>> = contenders
        .iter()
        .map(|_| CONNECTIONS.iter().map(|_| Runs::default()).collect())
        .collect();
    for _ in 0..ROUNDS {
        for (k, &connections) in CONNECTIONS.iter().enumerate() {
            for (i, c) in contenders.iter().enumerate() {
                let url = format!("http://{}/v1/tenants/chain3/events", c.addr);
                runs[i][k]
                    .loads
                    .push(wrk(&url, connections, seconds, &script)?);
            }
        }
    }
    drop(running);

    let mut rows = Vec::new();
    for (i, c) in contenders.iter().enumerate() {
        for (k, &connections) in CONNECTIONS.iter().enumerate() {
            let r = &runs[i][k];
            let (low, high) = r.rps_range();
            rows.push(vec![
                c.name.to_owned(),
                connections.to_string(),
                format!("{:.0} ({low:.0}–{high:.0})", r.rps()),
                latency(r.p50_ms()),
                latency(r.p99_ms()),
                r.loads.iter().map(|l| l.errors).sum::<u64>().to_string(),
            ]);
        }
    }
    let of = |name: &str| contenders.iter().position(|c| c.name == name);
    let at = |name: &str, k: usize| of(name).map(|i| &runs[i][k]);
    let (one, many) = (0, 1);
    let tf64 = at(TRIGGERFISH, many).map_or(f64::NAN, Runs::rps);
    let rps_ratio = |name: &str| tf64 / at(name, many).map_or(f64::NAN, Runs::rps);
    let p50_ratio = |name: &str| {
        at(TRIGGERFISH, one).map_or(f64::NAN, Runs::p50_ms)
            / at(name, one).map_or(f64::NAN, Runs::p50_ms)
    };
    let met = |ok: bool| if ok { "met" } else { "missed" };
    let (node, native) = (rps_ratio(NODE), rps_ratio(NATIVE));
    let latency_ratio = p50_ratio(NODE);
    let mut ratios = table(
        &[
            "Triggerfish against",
            "requests/s at 64 connections",
            "p50 at 1 connection",
        ],
        &[NODE, CLUSTER, NATIVE, BEFORE]
            .iter()
            .filter(|n| of(n).is_some())
            .map(|n| {
                vec![
                    n.to_string(),
                    format!("{:.2}×", rps_ratio(n)),
                    format!("{:.2}×", p50_ratio(n)),
                ]
            })
            .collect::<Vec<_>>(),
    );
    ratios.push_str(&format!(
        "\nTargets: at 64 connections at least 1.0× the Node.js process's requests per second ({:.2}×: {}) and at least 0.55× native axum's ({:.2}×: {}); at 1 connection a p50 at most 1.5× Node's ({:.2}×: {}).\n\n",
        node,
        met(node >= 1.0),
        native,
        met(native >= 0.55),
        latency_ratio,
        met(latency_ratio <= 1.5),
    ));
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    Ok(format!(
        "## HTTP, 3-plugin PreSignUp chain\n\nLoopback, keep-alive, wrk on the same {cores}-core machine ({seconds} s per run after a 2 s warm-up; {ROUNDS} rounds, the servers taking turns; requests per second as the median of the rounds (min–max), p50 and p99 as the median of the rounds' own), the ~1 KB event; load average {load} at the end. Triggerfish runs as a host would: a bearer key checked on every request, the operator's metrics and recent history on, and the tenant's concurrency quota raised by the operator to 128 (the default, 16, would refuse most of 64 connections with 429). The Node.js server runs the same three handlers as JavaScript modules looped over by an index file the way Amplify generates it, in one process and as a cluster of one worker per core; the native server runs them as Rust functions in axum with no sandbox.\n\n{}\n{ratios}\n{PROFILE}",
        table(&["server", "connections", "requests/s", "p50", "p99", "non-2xx"], &rows),
        cores = std::thread::available_parallelism().map_or(0, |n| n.get()),
    ))
}
