//! Budgets and hostile plugins: each failure ends with its kind, within
//! its budget, and the host goes on serving.

use crate::common::*;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use triggerfish::dispatch::{Dispatcher, ErrorKind};
use triggerfish::tenant::registry::Tenants;

/// One tenant per misbehaviour, each running the hostile guest, plus a
/// well-behaved tenant to check the host is still fine afterwards.
fn hostile_dir(modes: &[(&str, &str)]) -> PluginsDir {
    let dir = PluginsDir::new();
    for (mode, limits) in modes {
        dir.plugin(mode, "10-hostile.wasm", guests::HOSTILE)
            .settings(
                mode,
                &format!("[limits]\n{limits}\n[plugins.10-hostile.config]\nmode = \"{mode}\"\n"),
            );
    }
    dir.plugin("good", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
        .settings(
            "good",
            "[plugins.10-email-deny-list.config]\ndomains = \"spam.test\"\n",
        );
    dir
}

/// A sign-up whose `clientMetadata.mode` tells the hostile guest what to do.
fn asking(mode: &str) -> Value {
    let mut event = pre_sign_up("a@b.test");
    event["request"]["clientMetadata"]["mode"] = mode.into();
    event
}

/// The host still serves: another tenant, and the same misbehaving plugin
/// when asked to behave.
async fn still_serving(tenants: &Tenants, hostile_tenant: &str) {
    let good = tenants.tenant("good").unwrap();
    let out = invoke(&good, pre_sign_up("jane@example.com"))
        .await
        .unwrap();
    assert_eq!(out["response"]["autoConfirmUser"], false);
    let same = tenants.tenant(hostile_tenant).unwrap();
    let out = invoke(&same, asking("ok")).await;
    assert_eq!(
        out.unwrap()["response"]["autoConfirmUser"],
        true,
        "{hostile_tenant} recovers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_plugins_end_as_timeout_within_the_budget() {
    let _cpu = timing_sensitive().await;
    // Overshoot allowed past the budget: one epoch tick in principle,
    // plus scheduling on a loaded two-core CI machine.
    const OVERSHOOT: Duration = Duration::from_millis(500);
    let dir = hostile_dir(&[
        (
            "spin",
            "fuel = 10_000_000_000_000\ntimeout-ms = 1000\nattempts = 1",
        ),
        ("sleep", "timeout-ms = 500\nattempts = 1"),
    ]);
    let tenants = tenants(&dir).await;

    // A loop with fuel to spare runs into the wall-clock budget.
    let started = Instant::now();
    let error = chain_error(&tenants.tenant("spin").unwrap(), pre_sign_up("a@b.test")).await;
    let elapsed = started.elapsed();
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert!(elapsed >= Duration::from_millis(1000), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(1000) + OVERSHOOT,
        "{elapsed:?}"
    );
    assert_eq!(
        error.cognito_message(),
        "PreSignUp failed with error the chain did not finish within 1000 ms."
    );
    still_serving(&tenants, "spin").await;

    // Sleeping in a host call is cut off too.
    let started = Instant::now();
    let error = chain_error(&tenants.tenant("sleep").unwrap(), pre_sign_up("a@b.test")).await;
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert!(started.elapsed() < Duration::from_millis(500) + OVERSHOOT);
    still_serving(&tenants, "sleep").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tight_loops_run_out_of_fuel_and_are_not_retried() {
    let dir = hostile_dir(&[
        ("spin", "fuel = 20_000_000"),
        ("host-calls", "fuel = 20_000_000"),
    ]);
    let tenants = tenants(&dir).await;
    for mode in ["spin", "host-calls"] {
        let error = chain_error(&tenants.tenant(mode).unwrap(), pre_sign_up("a@b.test")).await;
        assert_eq!(error.kind, ErrorKind::OutOfFuel, "{mode}: {error}");
        assert_eq!(error.attempts, 1, "running out of fuel is deterministic");
        assert!(error.message.contains("20000000"), "{}", error.message);
        still_serving(&tenants, mode).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_fail_with_their_kind() {
    let dir = hostile_dir(&[
        ("memory", "memory-mib = 16"),
        ("recurse", ""),
        ("panic", ""),
        ("huge-output", "output-kib = 64"),
    ]);
    let tenants = tenants(&dir).await;
    let cases = [
        ("memory", ErrorKind::OutOfMemory, "16 MiB"),
        ("recurse", ErrorKind::Trap, "stack overflow"),
        (
            "panic",
            ErrorKind::Trap,
            "the hostile plugin panicked on purpose",
        ),
        ("huge-output", ErrorKind::InvalidOutput, "65536 bytes"),
    ];
    for (mode, kind, words) in cases {
        let tenant = tenants.tenant(mode).unwrap();
        let error = chain_error(&tenant, pre_sign_up("a@b.test")).await;
        assert_eq!(error.kind, kind, "{mode}: {error}");
        assert!(error.message.contains(words), "{mode}: {}", error.message);
        assert_eq!(error.plugin.as_deref(), Some("10-hostile"));
        assert_eq!(error.attempts, 1, "{mode} is deterministic: not retried");
        // The same plugin fails the same way next time, and behaves when
        // asked to: nothing is left over from the failure.
        let again = chain_error(&tenant, pre_sign_up("a@b.test")).await;
        assert_eq!(again.kind, kind, "{mode} again");
        still_serving(&tenants, mode).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_cannot_reach_files_or_environment_and_logs_are_capped() {
    let dir = hostile_dir(&[
        ("read-env", ""),
        ("read-file", ""),
        ("log-flood", "log-kib = 4"),
    ]);
    let tenants = tenants(&dir).await;
    for mode in ["read-env", "read-file", "log-flood"] {
        let out = invoke(&tenants.tenant(mode).unwrap(), pre_sign_up("a@b.test")).await;
        assert!(out.is_ok(), "{mode}: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_state_survives_between_events_or_tenants() {
    let dir = hostile_dir(&[("count", ""), ("count-too", "")]);
    // Both tenants run the very same file (and so share compiled code).
    let tenants = tenants(&dir).await;
    for tenant in ["count", "count", "count-too", "count", "count-too"] {
        let error = chain_error(&tenants.tenant(tenant).unwrap(), asking("count")).await;
        assert_eq!(
            error.message, "call number 1",
            "{tenant}: a fresh instance every call"
        );
    }
}

/// Resident memory of this process, in KiB.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_after_memory_bombs() {
    // Resident memory is the process's: measured while the JavaScript
    // compile (hundreds of MiB) is not running.
    let _cpu = timing_sensitive().await;
    let dir = hostile_dir(&[("memory", "memory-mib = 16")]);
    let tenants = tenants(&dir).await;
    let tenant = tenants.tenant("memory").unwrap();
    // One round first, so the pool's first use is not counted as growth.
    let _ = invoke(&tenant, asking("memory")).await;
    let before = resident_kib();
    for _ in 0..40 {
        let error = chain_error(&tenant, asking("memory")).await;
        assert_eq!(error.kind, ErrorKind::OutOfMemory);
    }
    let grown = resident_kib().saturating_sub(before);
    // 40 bombs of 16 MiB would be 640 MiB if instances leaked their
    // memory; the bound leaves room for other tests running alongside.
    assert!(grown < 256 * 1024, "resident memory grew by {grown} KiB");
    still_serving(&tenants, "memory").await;
}

/// Growing memory into the engine's own ceiling (`--max-memory-mib`) is
/// `out-of-memory` too, not a plain trap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pools_memory_ceiling_is_out_of_memory() {
    use triggerfish::engine::{Runtime, RuntimeConfig};
    use triggerfish::plugin::PluginLoader;
    let dir = hostile_dir(&[("memory", "memory-mib = 128")]);
    let small_pool = Runtime::new(RuntimeConfig {
        max_instances: 4,
        max_memory_bytes: 32 << 20,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let loader = PluginLoader::new(Arc::new(small_pool), None);
    let tenant = tenant_with(&loader, &dir, "memory").await;
    let error = chain_error(&tenant, pre_sign_up("a@b.test")).await;
    assert_eq!(error.kind, ErrorKind::OutOfMemory, "{error}");
}

/// Keeps the plugin calls of every outcome.
#[derive(Default)]
struct Calls(std::sync::Mutex<Vec<triggerfish::dispatch::PluginCall>>);

impl triggerfish::dispatch::Sink for Calls {
    fn record(&self, outcome: &triggerfish::dispatch::Outcome<'_>) {
        let mut calls = self.0.lock().unwrap();
        calls.extend(outcome.tally.plugin_calls.iter().cloned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_longer_than_the_instance_pool_still_runs() {
    // An attempt holds one slot per plugin while its calls share a store;
    // a chain with more plugins than the host has slots runs in turns.
    use triggerfish::engine::{Runtime, RuntimeConfig};
    use triggerfish::plugin::PluginLoader;
    let dir = PluginsDir::new();
    let mut settings = String::new();
    for name in ["10-a", "20-b", "30-c", "40-d", "50-e"] {
        dir.plugin("acme", &format!("{name}.wasm"), guests::HOSTILE);
        settings.push_str(&format!("[plugins.{name}.config]\nmode = \"first-call\"\n"));
    }
    dir.settings("acme", &settings);
    let small_pool = Runtime::new(RuntimeConfig {
        max_instances: 2,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let loader = PluginLoader::new(Arc::new(small_pool), None);
    let tenant = tenant_with(&loader, &dir, "acme").await;
    for _ in 0..3 {
        let out = invoke(&tenant, pre_sign_up("a@b.test")).await;
        assert!(out.is_ok(), "{out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_plugin_of_a_chain_gets_a_fresh_instance_its_own_fuel_and_its_own_memory() {
    // The calls of a chain attempt share one store: each must still be a
    // fresh instance, with its whole fuel and its whole memory limit.
    let dir = PluginsDir::new();
    let mut settings = String::from("[limits]\nmemory-mib = 16\n");
    let chain = [
        ("10-a", "first-call"),
        ("20-b", "hoard-10"),
        ("30-c", "first-call"),
        ("40-d", "hoard-10"),
        ("50-e", "first-call"),
        ("60-f", "hoard-10"),
    ];
    for (name, mode) in chain {
        dir.plugin("acme", &format!("{name}.wasm"), guests::HOSTILE);
        settings.push_str(&format!("[plugins.{name}.config]\nmode = \"{mode}\"\n"));
    }
    dir.settings("acme", &settings);
    let tenants = tenants(&dir).await;
    let tenant = tenants.tenant("acme").unwrap();
    let calls = Arc::new(Calls::default());
    let dispatcher = Dispatcher::new().with_sink(calls.clone());
    for _ in 0..3 {
        let out = dispatcher.dispatch(&tenant, pre_sign_up("a@b.test")).await;
        assert!(out.is_ok(), "{out:?}");
    }
    let calls = calls.0.lock().unwrap();
    assert_eq!(calls.len(), 3 * chain.len());
    // Fuel is each call's own: the calls of one mode used the same, not
    // a running total.
    for (i, (name, _)) in chain.iter().enumerate() {
        let fuel: Vec<u64> = calls
            .iter()
            .skip(i)
            .step_by(chain.len())
            .map(|c| c.fuel)
            .collect();
        assert_eq!(calls[i].plugin.name, *name);
        assert!(fuel.iter().all(|&f| f == fuel[0]), "{name}: {fuel:?}");
        let first = &calls[i % 2];
        assert_eq!(
            calls[i].fuel, first.fuel,
            "{name} used {} fuel, {} used {}",
            calls[i].fuel, first.plugin.name, first.fuel
        );
    }
}
