//! The `reload`, `restart` and `memory` sections: a plugin replaced under
//! load, a host started, many tenants resident.

use crate::fixtures::{event, runtime_with, variant, CHAIN, SETTINGS};
use crate::harness::{ms, ratio, table, Stats};
use anyhow::Context;
use serde_json::{json, Value};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use triggerfish::dispatch::Dispatcher;
use triggerfish::engine::Metering;
use triggerfish::plugin::PluginLoader;
use triggerfish::tenant::registry::Tenants;
use triggerfish_test_support::{guests, PluginsDir};

/// Hot reload under load: rename to first event on the new version.
pub(crate) fn reload(swaps: usize) -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let base = std::fs::read(guests::ROUTING_PROBE)?;
        let dir = PluginsDir::new();
        let cache = PluginsDir::new();
        dir.file("live", "10-plugin.wasm", variant(&base, 0)).settings("live", SETTINGS);
        let host = Arc::new(Tenants::open(PluginLoader::new(runtime_with(Metering::default()), Some(cache.path())), dir.path()).await?);
        let _watcher = triggerfish::tenant::watch::watch(host.clone())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/v1/tenants/live/events", listener.local_addr()?);
        let server_host = host.clone();
        tokio::spawn(async move { axum::serve(listener, triggerfish::sources::http::router(triggerfish::sources::http::Api { tenants: server_host, dispatcher: Arc::new(Dispatcher::new()), streams: None, admin: None, health: Default::default() })).await });

        let stop = Arc::new(AtomicBool::new(false));
        let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let (stop, sent, failed, url) = (stop.clone(), sent.clone(), failed.clone(), url.clone());
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    let body = event().to_string();
                    let started = Instant::now();
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(300) {
                        // The probe answers every event with the same denial.
                        let answer = http.post(&url).body(body.clone()).send().await;
                        let ok = match answer {
                            Ok(r) if r.status() == 422 => r.json::<Value>().await.is_ok_and(|v| v["error"]["reason"] == "handled by pre-sign-up"),
                            _ => false,
                        };
                        sent.fetch_add(1, Ordering::Relaxed);
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();

        let tenant_dir = dir.tenant_dir("live");
        let mut times = Vec::new();
        for swap in 1..=swaps {
            let bytes = variant(&base, swap);
            let hash = triggerfish::encoding::sha256_hex(&bytes);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let partial = tenant_dir.join(".10-plugin.wasm.partial");
            std::fs::write(&partial, &bytes)?;
            let renamed = Instant::now();
            std::fs::rename(&partial, tenant_dir.join("10-plugin.wasm"))?;
            loop {
                if host.tenant("live").is_some_and(|t| t.plugins[0].hash() == hash) {
                    times.push(renamed.elapsed());
                    break;
                }
                anyhow::ensure!(renamed.elapsed() < Duration::from_secs(10), "swap {swap} never served");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.await?;
        }
        let stats = Stats::of(times);
        let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        Ok(format!(
            "## Hot reload\n\n{swaps} swaps of a {} KB plugin (each a new build: other bytes, so each is compiled), renamed into a tenant folder while 4 clients send events over HTTP without pause. Time from the rename to the tenant serving the new version:\n\n{}\nRequests during the swaps: {sent}, failed: **{failed}**. Target: median at most 1 s and no failed request ({}).\n\n",
            base.len() / 1024,
            table(&["median", "min", "worst"], &[vec![ms(stats.median), ms(stats.min), ms(stats.max)]]),
            if stats.median <= Duration::from_secs(1) && failed == 0 { "met" } else { "missed" },
        ))
    })
}

/// Start-up with 200 plugins in 50 tenants, compile cache cold and warm.
pub(crate) fn restart() -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let sources = [guests::EMAIL_DENY_LIST, guests::EMAIL_ALLOW_LIST, guests::PRESIGNUP_PROBE, guests::SYNC_SAMPLE];
        let sources: Vec<Vec<u8>> = sources.iter().map(std::fs::read).collect::<Result<_, _>>()?;
        let dir = PluginsDir::new();
        let cache = PluginsDir::new();
        for t in 0..50 {
            let tenant = format!("tenant{t:02}");
            for (p, source) in sources.iter().enumerate() {
                dir.file(&tenant, &format!("{}0-plugin.wasm", p + 1), variant(source, t * 10 + p));
            }
            dir.settings(&tenant, SETTINGS);
        }
        let open = || async {
            let started = Instant::now();
            let host = Tenants::open(PluginLoader::new(runtime_with(Metering::default()), Some(cache.path())), dir.path()).await?;
            let took = started.elapsed();
            let loaded: usize = (0..50).map(|t| host.tenant(&format!("tenant{t:02}")).map_or(0, |t| t.plugins.len())).sum();
            anyhow::ensure!(loaded == 200, "only {loaded} plugins loaded");
            anyhow::Ok(took)
        };
        let cold = open().await?;
        let warm = open().await?;
        Ok(format!(
            "## Start-up\n\n200 plugins (distinct builds of 4 plugins) in 50 tenants, from `Tenants::open` to every tenant serving:\n\n{}\nTarget: warm start at most 2 s ({}).\n\n",
            table(
                &["compile cache", "time to serve", "ratio"],
                &[vec!["cold (compiles all 200)".into(), ms(cold), ratio(cold, warm)], vec!["warm".into(), ms(warm), "1.0×".into()]]
            ),
            if warm <= Duration::from_secs(2) { "met" } else { "missed" },
        ))
    })
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// In a process of its own: load `tenants` tenants with the 3-plugin chain
/// and run one event through each; print resident sizes as JSON.
pub fn memory_child(tenants: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let before = rss_kib("VmRSS:");
    let report = rt.block_on(async {
        let dir = PluginsDir::new();
        for t in 0..tenants {
            let tenant = format!("t{t:04}");
            for (file, guest) in &CHAIN[..3] {
                dir.plugin(&tenant, file, guest);
            }
            dir.settings(&tenant, SETTINGS);
        }
        let host = Tenants::open(PluginLoader::new(runtime_with(Metering::default()), None), dir.path()).await?;
        let loaded = rss_kib("VmRSS:");
        for t in 0..tenants {
            let tenant = host.tenant(&format!("t{t:04}")).context("a tenant")?;
            Dispatcher::new().dispatch(&tenant, event()).await?;
        }
        anyhow::Ok(json!({"before": before, "loaded": loaded, "after": rss_kib("VmRSS:"), "peak": rss_kib("VmHWM:")}))
    })?;
    println!("{report}");
    Ok(())
}

pub(crate) fn memory(tenants: usize) -> anyhow::Result<String> {
    // As the host runs by default, and with mimalloc's transparent huge
    // pages off (what README's "Memory" offers an operator short of it).
    let default = memory_run(tenants, None)?;
    let no_thp = memory_run(tenants, Some(("MIMALLOC_ALLOW_THP", "0")))?;
    let mib = |sizes: &Value, k: &str| sizes[k].as_u64().unwrap_or(0) as f64 / 1024.0;
    let row = |label: String, k: &str| {
        vec![
            label,
            format!("{:.0}", mib(&default, k)),
            format!("{:.0}", mib(&no_thp, k)),
        ]
    };
    Ok(format!(
        "## Memory\n\n{tenants} tenants, each with the 3-plugin PreSignUp chain built from the same 3 `.wasm` files (so they share compiled code), in a fresh process, one event run through every tenant; as the host runs by default, and with `MIMALLOC_ALLOW_THP=0` (the allocator's heap without transparent huge pages):\n\n{}\nTarget: at most 512 MiB ({}).\n\n",
        table(
            &["resident", "MiB", "MiB, `MIMALLOC_ALLOW_THP=0`"],
            &[
                row("process start".into(), "before"),
                row("all tenants loaded".into(), "loaded"),
                row(format!("after {tenants} events"), "after"),
                row("peak".into(), "peak"),
            ]
        ),
        if mib(&default, "peak") <= 512.0 { "met" } else { "missed" },
    ))
}

/// `triggerfish-bench memory TENANTS` in a process of its own, with `env`
/// set: its resident sizes (KiB).
fn memory_run(tenants: usize, env: Option<(&str, &str)>) -> anyhow::Result<Value> {
    let mut command = Command::new(std::env::current_exe()?);
    command.args(["memory", &tenants.to_string()]);
    if let Some((key, value)) = env {
        command.env(key, value);
    }
    let out = command.output()?;
    anyhow::ensure!(
        out.status.success(),
        "the memory run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}
