//! A tenant's folder as a hostile tenant writes it, against the real
//! binary (`triggerfish serve`): a name swapped with a FIFO in a loop (an
//! open by path would block for ever on it), `tenant.toml` swapped the
//! same way, a link to a large tree renamed into a tenant folder (a
//! watcher that follows it adds a watch per directory below it), a link
//! to a folder in the plugins folder.

use crate::common::*;
use rustix::fs::{renameat_with, RenameFlags, CWD};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a tenant swaps a name with a FIFO.
const RACE: Duration = Duration::from_secs(3);
/// The most any one request may take while the race runs. The host
/// answers within milliseconds; a host frozen on a FIFO never does.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// How long a change may take to show before a test gives up.
const EVENTUALLY: Duration = Duration::from_secs(30);

/// The probes auto-confirm with this.
const AUTO_CONFIRM: &str = "[auth]\nmode = \"none\"\n\
    [plugins.10-step.config]\nmode = \"auto-confirm\"\n\
    [plugins.20-more.config]\nmode = \"auto-confirm\"\n";

/// `triggerfish serve` with the watcher on, a small pool and no compile
/// cache.
fn serve(plugins_dir: &Path) -> ServeProcess {
    ServeProcess::start(plugins_dir, &["--no-cache", "--max-instances", "8"])
}

/// The inotify watches a server holds: the `inotify wd:` lines in the
/// fdinfo of each of its inotify descriptors.
fn inotify_watches(server: &ServeProcess) -> usize {
    let proc = PathBuf::from(format!("/proc/{}", server.child.id()));
    let mut watches = 0;
    for fd in std::fs::read_dir(proc.join("fd")).unwrap().flatten() {
        let is_inotify = std::fs::read_link(fd.path())
            .is_ok_and(|target| target.to_string_lossy() == "anon_inode:inotify");
        if is_inotify {
            let info = std::fs::read_to_string(proc.join("fdinfo").join(fd.file_name()))
                .unwrap_or_default();
            watches += info
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count();
        }
    }
    watches
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(ANSWER_WITHIN)
        .build()
        .unwrap()
}

/// `GET /v1/tenants/{tenant}/plugins`, when it answers 200.
async fn plugins_of(http: &reqwest::Client, server: &ServeProcess, tenant: &str) -> Option<Value> {
    let url = format!("{}/v1/tenants/{tenant}/plugins", server.base);
    let answer = http.get(url).send().await.ok()?;
    if answer.status() != 200 {
        return None;
    }
    answer.json().await.ok()
}

/// The load error the tenant lists for `file` (a plugin's stem or
/// `tenant.toml`), as (error, servingPrevious).
fn error_for(listing: &Value, file: &str) -> Option<(String, bool)> {
    listing["errors"].as_array()?.iter().find_map(|e| {
        (e["plugin"] == file).then(|| {
            (
                e["error"].as_str().unwrap_or_default().to_owned(),
                e["servingPrevious"] == true,
            )
        })
    })
}

/// Polls the tenant's listing until `check` holds; panics with the last
/// listing and the host's log after [`EVENTUALLY`].
async fn listing_until(
    http: &reqwest::Client,
    server: &ServeProcess,
    tenant: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < EVENTUALLY {
        if let Some(listing) = plugins_of(http, server, tenant).await {
            if check(&listing) {
                return listing;
            }
            last = Some(listing);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{tenant}: {what}; last listing {last:?}\n{}",
        server.last_log()
    );
}

/// Sends a pre sign-up event; whether it was auto-confirmed.
async fn confirms(
    http: &reqwest::Client,
    server: &ServeProcess,
    tenant: &str,
) -> Result<bool, String> {
    let url = format!("{}/v1/tenants/{tenant}/events", server.base);
    let answer = http
        .post(url)
        .body(pre_sign_up("jane@example.com").to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = answer.status();
    let body: Value = answer.json().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    Ok(body["response"]["autoConfirmUser"] == true)
}

/// Swaps `name` in `dir` with a FIFO (`renameat2(RENAME_EXCHANGE)`) in a
/// loop for [`RACE`], and leaves the FIFO under `name`. Returns how many
/// swaps it made.
fn swap_with_a_fifo(dir: PathBuf, name: &'static str) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let (file, parked) = (dir.join(name), dir.join("parked-fifo"));
        rustix::fs::mkfifoat(CWD, &parked, rustix::fs::Mode::from(0o600)).unwrap();
        let started = Instant::now();
        let mut swaps = 0;
        while started.elapsed() < RACE || swaps % 2 == 0 {
            renameat_with(CWD, &file, CWD, &parked, RenameFlags::EXCHANGE).unwrap();
            swaps += 1;
            std::thread::sleep(Duration::from_micros(200));
        }
        swaps
    })
}

/// Polls `/healthz` and sends events to `tenant` until `race` ends (and a
/// second more): every request must be answered, within
/// [`ANSWER_WITHIN`].
async fn answered_throughout(
    http: &reqwest::Client,
    server: &ServeProcess,
    tenant: &str,
    race: std::thread::JoinHandle<usize>,
) -> usize {
    let mut polls = 0;
    let mut finished_at = None;
    let started = Instant::now();
    while finished_at.is_none_or(|at: Instant| at.elapsed() < Duration::from_secs(1)) {
        assert!(
            started.elapsed() < RACE + EVENTUALLY,
            "the race never ended"
        );
        let health = http
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .map(|r| r.status());
        assert!(
            matches!(health, Ok(s) if s == 200),
            "/healthz after {polls} polls: {health:?}\n{}",
            server.last_log()
        );
        let event = confirms(http, server, tenant).await;
        assert_eq!(
            event,
            Ok(true),
            "an event to {tenant} after {polls} polls\n{}",
            server.last_log()
        );
        polls += 1;
        if finished_at.is_none() && race.is_finished() {
            finished_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let swaps = race.join().unwrap();
    assert!(swaps > 100, "the name was swapped only {swaps} times");
    polls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_swapped_with_a_fifo_freezes_nothing() {
    // CPU-heavy: takes turns with the tests that time something.
    let _cpu = timing_sensitive().await;
    let dir = PluginsDir::new();
    for tenant in ["flipper", "bystander"] {
        dir.plugin(tenant, "10-step.wasm", guests::PRESIGNUP_PROBE)
            .settings(tenant, AUTO_CONFIRM);
    }
    let server = serve(dir.path());
    let http = client();
    assert_eq!(confirms(&http, &server, "flipper").await, Ok(true));

    let flipper = dir.tenant_dir("flipper");
    let race = swap_with_a_fifo(flipper.clone(), "10-step.wasm");
    answered_throughout(&http, &server, "bystander", race).await;

    // The FIFO is left under the plugin's name: refused by name, and the
    // last good version keeps serving.
    let listing = listing_until(&http, &server, "flipper", "the FIFO is refused", |l| {
        error_for(l, "10-step").is_some_and(|(e, _)| e.contains("is a FIFO"))
    })
    .await;
    let (error, serving_previous) = error_for(&listing, "10-step").unwrap();
    assert!(serving_previous, "{error}");
    assert!(
        error.contains("not a regular file: plugins must be regular files"),
        "{error}"
    );
    assert_eq!(confirms(&http, &server, "flipper").await, Ok(true));

    // And the host still reloads: the file back, the FIFO gone, a new
    // plugin added.
    renameat_with(
        CWD,
        flipper.join("10-step.wasm"),
        CWD,
        flipper.join("parked-fifo"),
        RenameFlags::EXCHANGE,
    )
    .unwrap();
    std::fs::remove_file(flipper.join("parked-fifo")).unwrap();
    dir.plugin("flipper", "20-more.wasm", guests::PRESIGNUP_PROBE);
    listing_until(&http, &server, "flipper", "reloads cleanly", |l| {
        l["errors"].as_array().is_some_and(Vec::is_empty)
            && l["plugins"].as_array().is_some_and(|p| p.len() == 2)
    })
    .await;
    assert_eq!(confirms(&http, &server, "flipper").await, Ok(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_toml_swapped_with_a_fifo_freezes_nothing() {
    // CPU-heavy: takes turns with the tests that time something.
    let _cpu = timing_sensitive().await;
    let dir = PluginsDir::new();
    for tenant in ["flipper", "bystander"] {
        dir.plugin(tenant, "10-step.wasm", guests::PRESIGNUP_PROBE)
            .settings(tenant, AUTO_CONFIRM);
    }
    let server = serve(dir.path());
    let http = client();

    let flipper = dir.tenant_dir("flipper");
    let race = swap_with_a_fifo(flipper.clone(), "tenant.toml");
    answered_throughout(&http, &server, "bystander", race).await;

    // The settings as they were keep serving (the listing needs them: its
    // authentication is off only in them).
    let listing = listing_until(&http, &server, "flipper", "the FIFO is refused", |l| {
        error_for(l, "tenant.toml").is_some_and(|(e, _)| e.contains("is a FIFO"))
    })
    .await;
    let (error, serving_previous) = error_for(&listing, "tenant.toml").unwrap();
    assert!(serving_previous, "{error}");
    assert!(
        error.starts_with("tenant.toml is a FIFO, not a regular file"),
        "{error}"
    );
    assert_eq!(confirms(&http, &server, "flipper").await, Ok(true));

    // Too large is refused too, naming the limit; then a good file clears it.
    let too_large = format!("{AUTO_CONFIRM}# {}\n", "x".repeat(1 << 20));
    std::fs::remove_file(flipper.join("tenant.toml")).unwrap();
    std::fs::write(flipper.join("tenant.toml"), too_large).unwrap();
    listing_until(
        &http,
        &server,
        "flipper",
        "a large tenant.toml is refused",
        |l| {
            error_for(l, "tenant.toml")
                .is_some_and(|(e, _)| e.contains("over the limit of 1048576 bytes"))
        },
    )
    .await;
    std::fs::remove_file(flipper.join("parked-fifo")).unwrap();
    std::fs::write(flipper.join("tenant.toml"), AUTO_CONFIRM).unwrap();
    listing_until(&http, &server, "flipper", "reloads cleanly", |l| {
        l["errors"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_to_large_trees_add_no_watches() {
    // CPU-heavy: takes turns with the tests that time something.
    let _cpu = timing_sensitive().await;
    // A tree of 2,000 folders outside the plugins folder.
    let outside = PluginsDir::new();
    let tree = outside.path().join("tree");
    for a in 0..40 {
        for b in 0..50 {
            std::fs::create_dir_all(tree.join(format!("{a}/{b}"))).unwrap();
        }
    }
    outside.plugin("elsewhere", "10-step.wasm", guests::PRESIGNUP_PROBE);
    outside.settings("elsewhere", AUTO_CONFIRM);

    let dir = PluginsDir::new();
    dir.plugin("t", "10-step.wasm", guests::PRESIGNUP_PROBE)
        .settings("t", AUTO_CONFIRM);
    let server = serve(dir.path());
    let http = client();
    let before = inotify_watches(&server);
    // The plugins folder and the one tenant folder.
    assert_eq!(before, 2, "watches at start");

    // A folder holding a link to the tree, renamed into the tenant folder;
    // a link to a tenant-like folder put in the plugins folder itself.
    let parcel = outside.path().join("parcel");
    std::fs::create_dir(&parcel).unwrap();
    std::os::unix::fs::symlink(&tree, parcel.join("link")).unwrap();
    std::fs::create_dir(parcel.join("real-subfolder")).unwrap();
    std::fs::rename(&parcel, dir.tenant_dir("t").join("parcel")).unwrap();
    std::os::unix::fs::symlink(outside.tenant_dir("elsewhere"), dir.path().join("borrowed"))
        .unwrap();

    // Then a change the watcher must see, so the ones before have been
    // handled: a new plugin in the tenant, and a new tenant.
    dir.plugin("t", "20-more.wasm", guests::PRESIGNUP_PROBE);
    dir.plugin("fresh", "10-step.wasm", guests::PRESIGNUP_PROBE)
        .settings("fresh", AUTO_CONFIRM);
    listing_until(&http, &server, "t", "the new plugin is loaded", |l| {
        l["plugins"].as_array().is_some_and(|p| p.len() == 2)
    })
    .await;
    listing_until(&http, &server, "fresh", "the new tenant is loaded", |l| {
        l["plugins"].as_array().is_some_and(|p| p.len() == 1)
    })
    .await;

    let after = inotify_watches(&server);
    assert_eq!(
        after,
        before + 1,
        "one watch more (the new tenant), none for the tree or the link"
    );
    let borrowed = http
        .get(format!("{}/v1/tenants/borrowed/plugins", server.base))
        .send()
        .await
        .unwrap();
    // Answered as every unknown tenant is (the same as a known tenant
    // without credentials); as a tenant, its `mode = "none"` would have
    // let the request through.
    assert_eq!(borrowed.status(), 401, "a linked folder is no tenant");

    // A removed tenant gives its watch back.
    std::fs::remove_dir_all(dir.tenant_dir("fresh")).unwrap();
    let started = Instant::now();
    while inotify_watches(&server) != before && started.elapsed() < EVENTUALLY {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(inotify_watches(&server), before, "{}", server.last_log());
}
