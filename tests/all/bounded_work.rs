//! What the host pays for a plugin's output and logs is bounded and
//! linear: a sync plugin returning 40,000 records, one returning a million
//! empty values, a flood of empty log lines, a line that tries to forge
//! another.

use crate::common::*;
use std::process::Command;
use std::time::{Duration, Instant};
use triggerfish::dispatch::ErrorKind;

fn hostile_sync(dir: &PluginsDir, tenant: &str, settings: &str) {
    dir.plugin(tenant, "10-hostile-sync.wasm", guests::HOSTILE_SYNC)
        .settings(tenant, settings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_thousand_returned_sync_records_merge_in_linear_time() {
    // CPU-heavy: takes turns with the tests that time something.
    let _cpu = timing_sensitive().await;
    let dir = PluginsDir::new();
    hostile_sync(
        &dir,
        "many",
        "[limits]\noutput-kib = 16384\n[plugins.10-hostile-sync.config]\ncount = 40000\n",
    );
    let tenant = tenant(&dir, "many").await;
    let started = Instant::now();
    let out = run(&tenant, sync_event()).await;
    let records = out["datasetRecords"].as_object().unwrap();
    // The two records of the event, and the 40,000 the plugin added.
    assert_eq!(records.len(), 40_002);
    assert_eq!(records["key-39999"]["newValue"], "value-39999");
    assert_eq!(records["SampleKey1"]["newValue"], "newValue1");
    // Merging by key used to search linearly per key: 24.7 s for this.
    // A liveness bound, far above the linear cost and far below that.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_empty_values_are_refused_before_they_are_copied() {
    // CPU-heavy: takes turns with the tests that time something.
    let _cpu = timing_sensitive().await;
    let dir = PluginsDir::new();
    // Enough guest memory to build them; the default output limit (1 MiB).
    hostile_sync(
        &dir,
        "empty",
        "[limits]\nmemory-mib = 128\n[plugins.10-hostile-sync.config]\ncount = 1000000\nmode = \"empty\"\n",
    );
    hostile_sync(&dir, "few", "[plugins.10-hostile-sync.config]\ncount = 3\n");
    let tenants = tenants(&dir).await;
    let error = chain_error(&tenants.tenant("empty").unwrap(), sync_event()).await;
    assert_eq!(error.kind, ErrorKind::InvalidOutput, "{error}");
    assert!(error.message.contains("output limit"), "{error}");
    // The same plugin with a sane count, and so the host, is fine.
    let out = run(&tenants.tenant("few").unwrap(), sync_event()).await;
    assert_eq!(out["datasetRecords"].as_object().unwrap().len(), 5);
}

/// Runs the hostile guest in `mode` through `triggerfish invoke` and
/// returns what the host logged.
fn logged_by(mode: &str, limits: &str) -> String {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-hostile.wasm", guests::HOSTILE)
        .settings(
            "t",
            &format!("[limits]\n{limits}\n[plugins.10-hostile.config]\nmode = \"{mode}\"\n"),
        );
    let event = dir.path().join("event.json");
    std::fs::write(&event, pre_sign_up("a@b.test").to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_triggerfish"))
        .args(["invoke", "--no-cache", "--tenant", "t", "--plugins-dir"])
        .arg(dir.path())
        .arg(&event)
        .env("RUST_LOG", "info")
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_log_lines_are_charged_against_the_log_budget() {
    // CPU-heavy: takes turns with the tests that time something.
    let _cpu = timing_sensitive().await;
    // 1.2 million empty lines, 4 KiB of log budget: each line costs at
    // least 64 bytes, so at most 64 lines, then one warning.
    let logged = logged_by("empty-log-flood", "log-kib = 4");
    let plugin_lines = logged.lines().filter(|l| l.contains("plugin{")).count();
    assert!(plugin_lines <= 64 + 2, "{plugin_lines} lines logged");
    assert!(
        logged.contains("log budget of this invocation used up"),
        "{logged}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_forge_a_log_line() {
    let logged = logged_by("log-inject", "");
    // The message stays on its own line, its newline escaped...
    assert!(
        logged.contains("innocent\\n2026-11-23T00:00:00Z"),
        "{logged}"
    );
    // ...and no line starts where the plugin wanted one to.
    assert!(
        !logged
            .lines()
            .any(|l| l.starts_with("2026-11-23T00:00:00Z")),
        "{logged}"
    );
}
