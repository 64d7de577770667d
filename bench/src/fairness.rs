//! The `fairness` section: one tenant's latency while another keeps
//! looping calls running.

use crate::fixtures::chain_dir;
use crate::harness::table;
use crate::rig::{post_script, serve, server_binary, wait_for_port, wait_for_ready, wrk, Server};
use anyhow::Context;
use std::process::{Command, Stdio};
use std::time::Duration;
use triggerfish_test_support::guests;

/// Rounds of the fairness figure, each on a fresh server.
const FAIRNESS_ROUNDS: usize = 3;

/// One tenant's 3-plugin chain over HTTP at 8 connections, quiet and while
/// another tenant keeps 16 looping plugin calls running (its whole default
/// concurrency quota, its default limits), on the `triggerfish serve`
/// binary (one tokio worker per core).
pub(crate) fn fairness(seconds: u64) -> anyhow::Result<String> {
    let triggerfish = server_binary()?;
    let dir = chain_dir(&[3]);
    dir.plugin("attacker", "10-hostile.wasm", guests::HOSTILE)
        .settings(
            "attacker",
            "[auth]\nmode = \"none\"\n[plugins.10-hostile.config]\nmode = \"spin\"\n",
        );
    let script = post_script(&dir)?;
    let addr = "127.0.0.1:18084";
    let victim = format!("http://{addr}/v1/tenants/chain3/events");
    let attacker = format!("http://{addr}/v1/tenants/attacker/events");
    let mut rows = Vec::new();
    let mut worst: Option<(f64, f64, f64)> = None;
    for round in 1..=FAIRNESS_ROUNDS {
        let _server = serve(&triggerfish, addr, dir.path())?;
        wait_for_port(addr)?;
        wait_for_ready(addr)?;
        wrk(&victim, 8, 2, &script)?; // warm-up
        let quiet = wrk(&victim, 8, seconds, &script)?;
        // wrk keeps 16 of the attacker's requests in flight, and must not
        // give up on one that loops.
        let _attack = Server(
            Command::new("wrk")
                .args(["-t", "1", "-c", "16", "-d", &format!("{}s", seconds + 30)])
                .args(["--timeout", "60s", "-s"])
                .arg(&script)
                .arg(&attacker)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("wrk runs (apt-get install wrk)")?,
        );
        std::thread::sleep(Duration::from_secs(2));
        let attacked = wrk(&victim, 8, seconds, &script)?;
        let (p50, p99, rps) = (
            attacked.p50_ms() / quiet.p50_ms(),
            attacked.p99_ms() / quiet.p99_ms(),
            quiet.rps / attacked.rps,
        );
        for (label, load) in [("quiet", &quiet), ("16 loops of another tenant", &attacked)] {
            rows.push(vec![
                round.to_string(),
                label.into(),
                format!("{:.0}", load.rps),
                load.p50.clone(),
                load.p99.clone(),
                load.errors.to_string(),
            ]);
        }
        rows.push(vec![
            round.to_string(),
            "**ratio**".into(),
            format!("÷{rps:.2}"),
            format!("{p50:.2}×"),
            format!("{p99:.2}×"),
            String::new(),
        ]);
        let w = worst.get_or_insert((p50, p99, rps));
        *w = (w.0.max(p50), w.1.max(p99), w.2.max(rps));
    }
    let (p50, p99, rps) = worst.unwrap_or_default();
    Ok(format!(
        "## Fairness between tenants\n\nOne tenant's 3-plugin PreSignUp chain over HTTP (wrk, 8 connections, keep-alive, {seconds} s per run), quiet, and while another tenant keeps 16 requests to a plugin that loops for ever in flight (its default concurrency quota of 16, and its default limits: each call spins until it has used up its fuel, some tens of milliseconds of CPU, and wrk sends the next), on the `triggerfish serve` binary (one worker per core) on the same 2-core machine as wrk. {FAIRNESS_ROUNDS} rounds, each on a fresh server.\n\n{}\nWorst round: p50 {p50:.2}×, p99 {p99:.2}×, throughput ÷{rps:.2}. Target: p99 within 2× of quiet and at least half the throughput ({}).\n\n",
        table(&["round", "victim's chain", "requests/s", "p50", "p99", "non-2xx"], &rows),
        if p99 <= 2.0 && rps <= 2.0 { "met" } else { "missed" },
    ))
}
