//! `hosts`: requests per second of the 3-plugin PreSignUp chain through
//! HAProxy (the repository's `deploy/haproxy.cfg`) with one, two and three
//! `triggerfish serve` hosts, against wrk sent straight to one host.
//!
//! Everything runs on this one machine: wrk, HAProxy and the hosts share
//! its cores, so a second or third host adds no CPU; what the figures show
//! is the cost of the extra hop and of spreading the load, not how far
//! hosts on machines of their own would scale. Needs `haproxy` (Debian:
//! `apt-get install -y haproxy`).

use crate::fixtures::chain_dir;
use crate::harness::table;
use crate::rig::{post_script, server_binary, wait_for_ready, wrk, Server};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LB: &str = "127.0.0.1:18090";
const STATS: &str = "127.0.0.1:18094";
const HOSTS: [&str; 3] = ["127.0.0.1:18091", "127.0.0.1:18092", "127.0.0.1:18093"];
/// Where HAProxy is pointed for a host that is left out: nobody listens,
/// so its health check takes it out of rotation.
const NOBODY: &str = "127.0.0.1:18099";
const CONNECTIONS: usize = 64;
const ROUNDS: usize = 2;

/// A host on `addr` with a data folder of its own (the embedded engine is
/// one process's); the plugins folder is shared.
fn host(
    triggerfish: &Path,
    addr: &str,
    plugins: &Path,
    operator: &Path,
    n: usize,
) -> anyhow::Result<Server> {
    let child = Command::new(triggerfish)
        .args(["serve", "--no-watch", "--no-cache", "--listen", addr])
        .arg("--plugins-dir")
        .arg(plugins)
        .arg("--operator-config")
        .arg(operator)
        .arg("--data-dir")
        .arg(plugins.join(format!(".data-{n}")))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("the host starts")?;
    Ok(Server(child))
}

/// HAProxy in front of the first `n` hosts.
fn haproxy(n: usize) -> anyhow::Result<Server> {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy.cfg");
    let mut command = Command::new("haproxy");
    command
        .arg("-db")
        .arg("-f")
        .arg(config)
        .env("TF_LB_LISTEN", LB)
        .env("TF_LB_STATS", STATS);
    for (i, addr) in HOSTS.iter().enumerate() {
        command.env(
            format!("TF_HOST{}", i + 1),
            if i < n { addr } else { NOBODY },
        );
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("haproxy runs (apt-get install -y haproxy)")?;
    Ok(Server(child))
}

/// Waits until HAProxy has exactly the first `n` hosts in rotation.
fn wait_for_rotation(n: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let out = Command::new("curl")
            .args(["-s", &format!("http://{STATS}/stats;csv")])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let up: Vec<bool> = (1..=3)
            .map(|i| {
                text.lines()
                    .any(|l| l.starts_with(&format!("hosts,host{i},")) && l.contains(",UP,"))
            })
            .collect();
        if up.iter().enumerate().all(|(i, up)| *up == (i < n)) {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "HAProxy never had {n} hosts in rotation: {up:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

pub fn hosts(seconds: u64) -> anyhow::Result<String> {
    let triggerfish = server_binary()?;
    let dir = chain_dir(&[3]);
    let script = post_script(&dir)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The tenant's concurrency quota (16 by default) would answer 429 to
    // 64 connections whenever the machine's load lets more than 16 chains
    // overlap on one host: raised, so that every answer is the chain's.
    let operator = dir.path().join(".operator.toml");
    std::fs::write(
        &operator,
        format!("[defaults.quotas]\nconcurrency = {}\n", CONNECTIONS * 4),
    )?;
    let mut servers = Vec::new();
    for (i, addr) in HOSTS.iter().enumerate() {
        servers.push(host(&triggerfish, addr, dir.path(), &operator, i + 1)?);
    }
    for addr in HOSTS {
        wait_for_ready(addr)?;
    }
    // (label, hosts behind HAProxy; 0: wrk straight to one host)
    let configs: [(&str, usize); 4] = [
        ("straight to one host", 0),
        ("HAProxy, 1 host", 1),
        ("HAProxy, 2 hosts", 2),
        ("HAProxy, 3 hosts", 3),
    ];
    let mut rows = Vec::new();
    let mut sums = [0.0f64; 4];
    for round in 0..ROUNDS {
        // Alternate the order, so that a burst of load from elsewhere on
        // the machine does not always fall on the same configuration.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..4).collect()
        } else {
            (0..4).rev().collect()
        };
        for index in order {
            let (label, n) = configs[index];
            let _lb = if n > 0 {
                let lb = haproxy(n)?;
                wait_for_rotation(n)?;
                Some(lb)
            } else {
                None
            };
            let url = format!(
                "http://{}/v1/tenants/chain3/events",
                if n > 0 { LB } else { HOSTS[0] }
            );
            wrk(&url, 16, 2, &script)?; // warm-up
            let load_avg = load_average();
            let load = wrk(&url, CONNECTIONS, seconds, &script)?;
            anyhow::ensure!(load.rps > 0.0, "{label}: wrk measured nothing");
            sums[index] += load.rps;
            rows.push(vec![
                label.to_owned(),
                (round + 1).to_string(),
                format!("{:.0}", load.rps),
                format!("{:.0}", load.rps / cores as f64),
                load.p50,
                load.p99,
                load.errors.to_string(),
                load_avg,
            ]);
        }
    }
    drop(servers);
    let mean = |i: usize| sums[i] / ROUNDS as f64;
    let summary: Vec<Vec<String>> = configs
        .iter()
        .enumerate()
        .map(|(i, (label, _))| {
            vec![
                label.to_string(),
                format!("{:.0}", mean(i)),
                format!("{:.0}", mean(i) / cores as f64),
                format!("{:.2}×", mean(i) / mean(1)),
            ]
        })
        .collect();
    Ok(format!(
        "## Several hosts behind HAProxy\n\nThe 3-plugin PreSignUp chain over HTTP through HAProxy 2.6 (`deploy/haproxy.cfg`, health checks on `/healthz`) with one, two and three `triggerfish serve` hosts sharing one plugins folder, and wrk sent straight to one host; wrk with {CONNECTIONS} keep-alive connections, {seconds} s per run after a 2 s warm-up, {ROUNDS} rounds in alternating order; the tenant's concurrency quota raised to {} so that no answer is a 429. wrk, HAProxy and every host run on the same {cores} cores: a second or third host brings no CPU of its own, so these figures are bound by the machine and show what the extra hop and the spreading cost, not how hosts on machines of their own would scale (there each host adds its own cores). Per core: requests/s ÷ {cores}, the machine's cores, which wrk and HAProxy share with the hosts. The load average (1 minute) is read as each run starts.\n\n{}\nMeans over the rounds:\n\n{}\n",
        CONNECTIONS * 4,
        table(
            &["configuration", "round", "requests/s", "per core", "p50", "p99", "non-2xx", "load avg"],
            &rows
        ),
        table(
            &["configuration", "requests/s", "per core", "vs HAProxy, 1 host"],
            &summary
        ),
    ))
}
