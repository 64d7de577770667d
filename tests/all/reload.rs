//! Hot reload: the host follows the plugins folder, keeps the last good
//! version of a broken file, and never fails a request on the way.

use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use triggerfish::plugin::PluginLoader;
use triggerfish::tenant::registry::Tenants;
use triggerfish::tenant::watch;

/// Settings that both "versions" below understand: the probe auto-confirms
/// (version 1), the allow-list auto-confirms and verifies (version 2).
const TWO_VERSIONS: &str = "[auth]\nmode = \"none\"\n\
    [plugins.10-step.config]\nmode = \"auto-confirm\"\ndomains = \"example.com\"\nauto-confirm = true\n";

/// How long a change may take to show before a test gives up: far more
/// than a reload needs, so a loaded CI machine does not fail a test that
/// checks behaviour, not speed (the swap test checks speed on its own).
const EVENTUALLY: Duration = Duration::from_secs(20);

/// Which version answered, from the response it left.
fn version_of(event: &Value) -> Option<u32> {
    match (
        &event["response"]["autoConfirmUser"],
        &event["response"]["autoVerifyEmail"],
    ) {
        (Value::Bool(true), Value::Bool(false)) => Some(1),
        (Value::Bool(true), Value::Bool(true)) => Some(2),
        _ => None,
    }
}

/// Writes a file whole, as a build tool should: a temporary name, then a
/// rename.
fn swap_in(dir: &Path, file: &str, bytes: &[u8]) {
    let partial = dir.join(format!(".{file}.partial"));
    std::fs::write(&partial, bytes).unwrap();
    std::fs::rename(&partial, dir.join(file)).unwrap();
}

/// Polls `check` until it holds, for at most `limit`; returns how long it took.
async fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

async fn serving_version(tenants: &Tenants, tenant: &str) -> Option<u32> {
    let tenant = tenants.tenant(tenant)?;
    let out = invoke(&tenant, pre_sign_up("jane@example.com"))
        .await
        .ok()?;
    version_of(&out)
}

/// Waits until the tenant answers with `version`, within `limit`.
async fn serves_within(
    tenants: &Tenants,
    tenant: &str,
    version: u32,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if serving_version(tenants, tenant).await == Some(version) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_replaced_under_load_fails_no_request() {
    let _cpu = timing_sensitive().await;
    let v1 = std::fs::read(guests::PRESIGNUP_PROBE).unwrap();
    let v2 = std::fs::read(guests::EMAIL_ALLOW_LIST).unwrap();
    let dir = PluginsDir::new();
    dir.file("live", "10-step.wasm", &v1)
        .settings("live", TWO_VERSIONS);
    let tenants = tenants(&dir).await;
    let _watcher = watch::watch(tenants.clone()).unwrap();
    let server = Server::start(tenants.clone()).await;

    // A client sending a steady stream of requests, until told to stop
    // (and for 60 s at most).
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    let client = {
        let (stop, counts, url) = (
            stop.clone(),
            counts.clone(),
            format!("{}/v1/tenants/live/events", server.base),
        );
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let body = pre_sign_up("jane@example.com").to_string();
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                let answer = http.post(&url).body(body.clone()).send().await;
                let version = match answer {
                    Ok(r) if r.status() == 200 => {
                        r.json::<Value>().await.ok().as_ref().and_then(version_of)
                    }
                    _ => None,
                };
                // Index 0 counts failures: not 200, or not wholly one version.
                counts[version.unwrap_or(0) as usize].fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let tenant_dir = dir.tenant_dir("live");
    let mut times = Vec::new();
    for swap in 0..6 {
        let (bytes, version) = if swap % 2 == 0 { (&v2, 2) } else { (&v1, 1) };
        swap_in(&tenant_dir, "10-step.wasm", bytes);
        let took = serves_within(&tenants, "live", version, EVENTUALLY).await;
        times.push(took.unwrap_or_else(|| panic!("swap {swap}: version {version} never served")));
    }
    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();

    let [failed, old, new] = [0, 1, 2].map(|i| counts[i].load(Ordering::Relaxed));
    assert_eq!(
        failed, 0,
        "requests failed during swaps ({old} by v1, {new} by v2)"
    );
    assert!(old > 0 && new > 0, "both versions served: {old} and {new}");
    for took in &times {
        assert!(
            *took < Duration::from_secs(1),
            "a swap took {took:?} to serve: {times:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_keeps_the_last_good_version_serving() {
    let good = std::fs::read(guests::PRESIGNUP_PROBE).unwrap();
    let dir = PluginsDir::new();
    dir.file("t", "10-step.wasm", &good)
        .settings("t", TWO_VERSIONS);
    let tenants = tenants(&dir).await;
    let _watcher = watch::watch(tenants.clone()).unwrap();
    let tenant_dir = dir.tenant_dir("t");
    let last_error = |tenants: &Tenants| {
        tenants.tenant("t").and_then(|t| {
            t.failure_of("10-step")
                .map(|f| (f.error.clone(), f.serving_previous, f.at))
        })
    };

    let not_a_plugin = std::fs::read(guests::NOT_A_PLUGIN).unwrap();
    let broken: [(&str, Vec<u8>, &str); 4] = [
        (
            "corrupt",
            b"\0asm\x0d\0\x01\0 and then garbage".to_vec(),
            "not a valid WebAssembly component",
        ),
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            "not a valid WebAssembly component",
        ),
        ("another world", not_a_plugin, "implements no trigger"),
        (
            "trap on start",
            triggerfish_test_support::traps_when_instantiated(),
            "traps when instantiated",
        ),
    ];
    for (what, bytes, reason) in broken {
        let swapped = std::time::SystemTime::now();
        swap_in(&tenant_dir, "10-step.wasm", &bytes);
        // This file's own refusal, not the one before it with the same words.
        let refused = within(Duration::from_secs(20), || {
            last_error(&tenants)
                .is_some_and(|(error, _, at)| error.contains(reason) && at >= swapped)
        })
        .await;
        assert!(
            refused.is_some(),
            "{what}: refused with {reason:?}; got {:?}",
            last_error(&tenants)
        );
        assert!(
            last_error(&tenants).unwrap().1,
            "{what}: the old version serves"
        );
        assert_eq!(
            serving_version(&tenants, "t").await,
            Some(1),
            "{what}: the old version answers"
        );
    }

    // A good file again: picked up, and the error is gone.
    swap_in(
        &tenant_dir,
        "10-step.wasm",
        &std::fs::read(guests::EMAIL_ALLOW_LIST).unwrap(),
    );
    assert!(serves_within(&tenants, "t", 2, EVENTUALLY).await.is_some());
    assert_eq!(last_error(&tenants), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_plugins_come_and_go() {
    let dir = PluginsDir::new();
    let tenants = tenants(&dir).await;
    let _watcher = watch::watch(tenants.clone()).unwrap();
    assert!(tenants.tenant("fresh").is_none());

    // A new tenant folder, with one plugin.
    let probe = std::fs::read(guests::PRESIGNUP_PROBE).unwrap();
    let staging = tempfile_dir();
    std::fs::write(
        staging.join("tenant.toml"),
        "[plugins.10-auto-confirm.config]\nmode = \"auto-confirm\"\n[plugins.20-copy.config]\nmode = \"copy\"\n",
    )
    .unwrap();
    std::fs::write(staging.join("20-copy.wasm"), &probe).unwrap();
    std::fs::rename(&staging, dir.path().join("fresh")).unwrap();
    let arrived = within(EVENTUALLY, || {
        tenants
            .tenant("fresh")
            .is_some_and(|t| t.plugins.len() == 1)
    })
    .await;
    assert!(arrived.is_some(), "the new tenant serves");
    let respond = |tenants: Arc<Tenants>| async move {
        invoke(
            &tenants.tenant("fresh").unwrap(),
            pre_sign_up("jane@example.com"),
        )
        .await
        .unwrap()
    };
    assert_eq!(
        respond(tenants.clone()).await["response"]["autoVerifyEmail"],
        false
    );

    // A plugin added in front of it, by file name.
    swap_in(&dir.tenant_dir("fresh"), "10-auto-confirm.wasm", &probe);
    assert!(within(EVENTUALLY, || tenants
        .tenant("fresh")
        .unwrap()
        .plugins
        .len()
        == 2)
    .await
    .is_some());
    let names: Vec<String> = tenants
        .tenant("fresh")
        .unwrap()
        .plugins
        .iter()
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(names, ["10-auto-confirm", "20-copy"]);
    assert_eq!(
        respond(tenants.clone()).await["response"]["autoVerifyEmail"],
        true
    );

    // The plugin deleted: it leaves the chain.
    std::fs::remove_file(dir.tenant_dir("fresh").join("10-auto-confirm.wasm")).unwrap();
    assert!(within(EVENTUALLY, || tenants
        .tenant("fresh")
        .unwrap()
        .plugins
        .len()
        == 1)
    .await
    .is_some());
    assert_eq!(
        respond(tenants.clone()).await["response"]["autoConfirmUser"],
        false
    );

    // The tenant deleted: it no longer serves.
    std::fs::remove_dir_all(dir.tenant_dir("fresh")).unwrap();
    assert!(within(EVENTUALLY, || tenants.tenant("fresh").is_none())
        .await
        .is_some());
}

/// A folder next to the plugins folders' temp dirs, to build a tenant in
/// before renaming it into place.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "triggerfish-staging-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_rapid_writes_end_with_the_last_content() {
    let v1 = std::fs::read(guests::PRESIGNUP_PROBE).unwrap();
    let v2 = std::fs::read(guests::EMAIL_ALLOW_LIST).unwrap();
    let dir = PluginsDir::new();
    dir.file("t", "10-step.wasm", &v1)
        .settings("t", TWO_VERSIONS);
    let tenants = tenants(&dir).await;
    let _watcher = watch::watch(tenants.clone()).unwrap();
    let path = dir.tenant_dir("t").join("10-step.wasm");
    // Plain writes in place, as an editor or `cp` would do them; the last
    // one writes version 2.
    for i in 0..20 {
        std::fs::write(&path, if i % 2 == 0 { &v1 } else { &v2 }).unwrap();
    }
    assert!(serves_within(&tenants, "t", 2, EVENTUALLY).await.is_some());
    // And it stays that way once the burst is over.
    tokio::time::sleep(watch::MAX_DELAY * 2).await;
    assert_eq!(serving_version(&tenants, "t").await, Some(2));
    assert!(tenants.tenant("t").unwrap().failures.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_reload_and_a_bad_tenant_toml_keeps_the_old_ones() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
        .settings(
            "t",
            "[plugins.10-email-deny-list.config]\ndomains = \"spam.test\"\n",
        );
    let tenants = tenants(&dir).await;
    let _watcher = watch::watch(tenants.clone()).unwrap();
    let denies = |tenants: Arc<Tenants>, email: &'static str| async move {
        invoke(&tenants.tenant("t").unwrap(), pre_sign_up(email))
            .await
            .is_err()
    };
    assert!(denies(tenants.clone(), "x@spam.test").await);

    dir.settings(
        "t",
        "[plugins.10-email-deny-list.config]\ndomains = \"other.test\"\n",
    );
    let started = Instant::now();
    while denies(tenants.clone(), "x@spam.test").await {
        assert!(started.elapsed() < EVENTUALLY, "new settings never applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(denies(tenants.clone(), "x@other.test").await);

    // A typo: refused with the key named, and the old settings stay.
    dir.settings(
        "t",
        "[plugins.10-email-deny-list.config]\ndomains = \"spam.test\"\n[limits]\nfuell = 1\n",
    );
    let reported = within(EVENTUALLY, || {
        tenants
            .tenant("t")
            .unwrap()
            .failure_of("tenant.toml")
            .is_some_and(|f| f.error.contains("fuell"))
    })
    .await;
    assert!(reported.is_some());
    assert!(
        denies(tenants.clone(), "x@other.test").await,
        "the old settings still apply"
    );
    assert!(!denies(tenants.clone(), "x@spam.test").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_when_the_watcher_is_off() {
    let dir = PluginsDir::new();
    dir.file(
        "t",
        "10-step.wasm",
        std::fs::read(guests::PRESIGNUP_PROBE).unwrap(),
    )
    .settings("t", TWO_VERSIONS);
    let tenants = tenants(&dir).await;
    let _sighup = watch::reload_on_sighup(tenants.clone()).unwrap();
    swap_in(
        &dir.tenant_dir("t"),
        "10-step.wasm",
        &std::fs::read(guests::EMAIL_ALLOW_LIST).unwrap(),
    );
    tokio::time::sleep(watch::MAX_DELAY).await;
    assert_eq!(
        serving_version(&tenants, "t").await,
        Some(1),
        "no watcher: nothing changes by itself"
    );
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(serves_within(&tenants, "t", 2, EVENTUALLY).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_plugins_are_cached_and_shared() {
    let cache = PluginsDir::new();
    let dir = PluginsDir::new();
    for tenant in ["a", "b"] {
        dir.plugin(tenant, "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST);
    }
    // Tenants load concurrently: which of the two gets the file first
    // varies, so the origins are compared in a fixed order.
    let origins = |tenants: &Tenants| {
        let mut origins = ["a", "b"].map(|t| tenants.tenant(t).unwrap().plugins[0].origin.as_str());
        origins.sort();
        origins
    };
    let open = || async {
        Tenants::open(PluginLoader::new(runtime(), Some(cache.path())), dir.path())
            .await
            .unwrap()
    };

    // Cold: compiled once, and the second tenant shares it in memory.
    let cold = open().await;
    assert_eq!(origins(&cold), ["compiled", "shared"]);
    let (a, b) = (cold.tenant("a").unwrap(), cold.tenant("b").unwrap());
    assert!(Arc::ptr_eq(&a.plugins[0].compiled, &b.plugins[0].compiled));
    drop((a, b, cold));

    // A restart with the cache warm compiles nothing.
    let warm = open().await;
    assert_eq!(origins(&warm), ["disk-cache", "shared"]);
    let out = invoke(&warm.tenant("a").unwrap(), pre_sign_up("x@example.com")).await;
    assert!(
        out.is_err(),
        "the cached plugin runs (and asks for its config)"
    );
}
