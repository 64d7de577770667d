//! The benchmark sections, each returning its part of the report.

use crate::harness::{ms, per_call, ratio, table, us, Stats};
use crate::native;
use anyhow::Context;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use triggerfish::dispatch::Dispatcher;
use triggerfish::engine::{Metering, Runtime, RuntimeConfig};
use triggerfish::plugin::PluginLoader;
use triggerfish::tenant::registry::Tenants;
use triggerfish::tenant::Tenant;
use triggerfish::trigger::Trigger;
use triggerfish_test_support::{guests, PluginsDir};

/// Settings every benchmark tenant shares: no authentication, and the
/// three PreSignUp steps' config.
const SETTINGS: &str = "[auth]\nmode = \"none\"\n\
    [plugins.10-email-deny-list.config]\ndomains = [\"spam.test\", \"throwaway.test\"]\n\
    [plugins.20-email-allow-list.config]\ndomains = [\"example.com\", \"example.org\"]\nauto-confirm = true\n\
    [plugins.30-auto-confirm.config]\nmode = \"auto-confirm\"\n\
    [plugins.40-email-deny-list.config]\ndomains = [\"spam.test\"]\n\
    [plugins.50-email-deny-list.config]\ndomains = [\"throwaway.test\"]\n";

/// The chain's plugins, by file name, in order; chains of N take the first N.
const CHAIN: [(&str, &str); 5] = [
    ("10-email-deny-list.wasm", guests::EMAIL_DENY_LIST),
    ("20-email-allow-list.wasm", guests::EMAIL_ALLOW_LIST),
    ("30-auto-confirm.wasm", guests::PRESIGNUP_PROBE),
    ("40-email-deny-list.wasm", guests::EMAIL_DENY_LIST),
    ("50-email-deny-list.wasm", guests::EMAIL_DENY_LIST),
];

/// A PreSignUp event of about 1 KB, from an allowed address.
pub fn event() -> Value {
    json!({
        "version": "1",
        "triggerSource": "PreSignUp_SignUp",
        "region": "eu-west-1",
        "userPoolId": "eu-west-1_AbCdEfGhI",
        "userName": "6a1b8c2d-0e3f-4a5b-9c7d-1e2f3a4b5c6d",
        "callerContext": {"awsSdkVersion": "aws-sdk-js-3.600.0", "clientId": "3n4b5urk1ft4fl3mg5e62d9ado"},
        "request": {
            "userAttributes": {
                "email": "jane.doe@example.com",
                "given_name": "Jane",
                "family_name": "Doe",
                "phone_number": "+441234567890",
                "locale": "en-GB",
                "zoneinfo": "Europe/London",
                "birthdate": "1990-01-01",
                "address": "{\"street_address\":\"1 High Street\",\"locality\":\"London\",\"postal_code\":\"N1 1AA\",\"country\":\"GB\"}",
                "custom:plan": "pro",
                "custom:referrer": "newsletter-2026-11",
                "custom:signup_source": "web",
                "custom:marketing_opt_in": "true"
            },
            "validationData": {"captcha": "03AGdBq25SxXT-pmSeBXjzScW-EiocHwwpwqtk1QXlJnGnU"},
            "clientMetadata": {"app": "web", "version": "4.2.1", "experiment": "signup-flow-b"}
        },
        "response": {"autoConfirmUser": false, "autoVerifyEmail": false, "autoVerifyPhone": false}
    })
}

/// [`event`] with its string maps emptied but for the `email` the
/// example plugins read: what the host and the plugin would still do if
/// the contract handed maps over as handles (read by key) instead of
/// lowering every entry. The difference from [`event`] is what lowering
/// those map entries costs (issue 13's open contract question).
fn event_without_maps() -> Value {
    let mut event = event();
    let request = &mut event["request"];
    request["userAttributes"] = json!({"email": request["userAttributes"]["email"].clone()});
    request["validationData"] = json!({});
    request["clientMetadata"] = json!({});
    event
}

/// How many entries an event's request maps hold.
fn map_entries(event: &Value) -> usize {
    ["userAttributes", "validationData", "clientMetadata"]
        .iter()
        .filter_map(|map| event["request"][map].as_object())
        .map(|map| map.len())
        .sum()
}

fn runtime_with(metering: Metering) -> Arc<Runtime> {
    Arc::new(
        Runtime::new(RuntimeConfig {
            max_instances: 128,
            metering,
            ..RuntimeConfig::default()
        })
        .expect("an engine"),
    )
}

pub(crate) fn chain_dir(lengths: &[usize]) -> PluginsDir {
    let dir = PluginsDir::new();
    for &n in lengths {
        let tenant = format!("chain{n}");
        for (file, guest) in &CHAIN[..n] {
            dir.plugin(&tenant, file, guest);
        }
        dir.settings(&tenant, SETTINGS);
    }
    dir
}

async fn load(runtime: Arc<Runtime>, dir: &PluginsDir, tenant: &str) -> Tenant {
    let tenant = Tenant::load(
        &PluginLoader::new(runtime, None),
        &triggerfish::tenant::operator::TenantPolicy::default(),
        tenant,
        &dir.tenant_dir(tenant),
        None,
    )
    .await;
    assert!(tenant.failures.is_empty(), "{:?}", tenant.failures);
    tenant
}

async fn time_chain(tenant: &Tenant) -> Stats {
    time_chain_on(tenant, event()).await
}

async fn time_chain_on(tenant: &Tenant, event: Value) -> Stats {
    per_call(
        500,
        21,
        200,
        || event.clone(),
        |event| async move {
            Dispatcher::new()
                .dispatch(tenant, event)
                .await
                .expect("the chain answers");
        },
    )
    .await
}

fn time_native(call: fn(&mut Value) -> Result<(), String>) -> Stats {
    let event = event();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(per_call(
        5000,
        21,
        5000,
        || event.clone(),
        |mut event| async move {
            call(&mut event).unwrap();
            std::hint::black_box(event);
        },
    ))
}

/// Runs the chain of `length` plugins for 10 seconds, for a profiler.
pub fn spin(length: usize, event_file: Option<&Path>) -> anyhow::Result<()> {
    let event = match event_file {
        Some(path) => serde_json::from_slice(&std::fs::read(path)?)?,
        None => event(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = chain_dir(&[length]);
    rt.block_on(async {
        let tenant = load(
            runtime_with(Metering::default()),
            &dir,
            &format!("chain{length}"),
        )
        .await;
        let started = Instant::now();
        let cpu_before = thread_cpu();
        let mut calls = 0u64;
        while started.elapsed() < Duration::from_secs(10) {
            Dispatcher::new()
                .dispatch(&tenant, event.clone())
                .await
                .expect("the chain answers");
            calls += 1;
        }
        // CPU time per event as well as wall time: on a machine shared with
        // other work the CPU time varies much less.
        let cpu = thread_cpu().map(|after| after.saturating_sub(cpu_before.unwrap_or_default()));
        eprintln!(
            "{calls} events in 10 s: {:?} each{}",
            started.elapsed() / calls as u32,
            cpu.map_or(String::new(), |cpu| format!(
                ", {:?} of CPU each",
                cpu / calls as u32
            )),
        );
    });
    Ok(())
}

/// CPU time this thread has had (Linux's `schedstat`), if known.
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// One plugin call against native Rust; chains of 1, 3 and 5; and what
/// fuel and epochs cost.
fn calls() -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = chain_dir(&[1, 3, 5]);
    let mut out = String::from("## Plugin calls, in process\n\n");
    out.push_str(&format!(
        "A ~{} byte PreSignUp event through the dispatcher (routing, JSON to component values, a fresh instance from `InstancePre`, the call, values back to JSON), against the same handler logic compiled natively and called as a Rust function on the event's JSON.\n\n",
        event().to_string().len()
    ));
    let (one, three, five, conversion, one_unmapped, three_unmapped) = rt.block_on(async {
        let runtime = runtime_with(Metering::default());
        let one = load(runtime.clone(), &dir, "chain1").await;
        let three = load(runtime.clone(), &dir, "chain3").await;
        let five = load(runtime.clone(), &dir, "chain5").await;
        let plugin = one.plugins[0].clone();
        let event = event();
        let conversion = per_call(
            2000,
            21,
            2000,
            || event.clone(),
            |event| {
                let plugin = plugin.clone();
                async move {
                    std::hint::black_box(
                        triggerfish::families::round_trip(&plugin, Trigger::PreSignUp, event)
                            .unwrap(),
                    );
                }
            },
        )
        .await;
        (
            time_chain(&one).await,
            time_chain(&three).await,
            time_chain(&five).await,
            conversion,
            time_chain_on(&one, event_without_maps()).await,
            time_chain_on(&three, event_without_maps()).await,
        )
    });
    // The same chains with the log subscriber `serve` installs (text lines
    // at `info`, written nowhere): what its spans and events cost a call.
    let (one_logged, three_logged) = rt.block_on(async {
        let runtime = runtime_with(Metering::default());
        let one = load(runtime.clone(), &dir, "chain1").await;
        let three = load(runtime, &dir, "chain3").await;
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,cranelift=warn,wasmtime=warn",
            ))
            .with_writer(std::io::sink)
            .finish();
        let _logging = tracing::subscriber::set_default(subscriber);
        (time_chain(&one).await, time_chain(&three).await)
    });
    let native_one = time_native(native::deny_list);
    let native_three = time_native(native::chain);
    out.push_str(&table(
        &["what", "median (min–max) per event", "ratio to native"],
        &[
            vec![
                "native Rust, 1 handler".into(),
                native_one.cell(),
                "1.0×".into(),
            ],
            vec![
                "Triggerfish, 1 plugin".into(),
                one.cell(),
                ratio(one.median, native_one.median),
            ],
            vec![
                "(of which JSON ↔ values only)".into(),
                conversion.cell(),
                ratio(conversion.median, native_one.median),
            ],
            vec![
                "native Rust, 3 handlers".into(),
                native_three.cell(),
                "1.0×".into(),
            ],
            vec![
                "Triggerfish, 3-plugin chain".into(),
                three.cell(),
                ratio(three.median, native_three.median),
            ],
            vec!["Triggerfish, 5-plugin chain".into(), five.cell(), "".into()],
            vec![
                "Triggerfish, 1 plugin, the event's maps emptied but `email`".into(),
                one_unmapped.cell(),
                ratio(one_unmapped.median, native_one.median),
            ],
            vec![
                "Triggerfish, 3-plugin chain, the event's maps emptied but `email`".into(),
                three_unmapped.cell(),
                ratio(three_unmapped.median, native_three.median),
            ],
            vec![
                "Triggerfish, 1 plugin, with `serve`'s log subscriber".into(),
                one_logged.cell(),
                ratio(one_logged.median, native_one.median),
            ],
            vec![
                "Triggerfish, 3-plugin chain, with `serve`'s log subscriber".into(),
                three_logged.cell(),
                ratio(three_logged.median, native_three.median),
            ],
        ],
    ));
    out.push_str(&format!(
        "\nCost per added plugin: {} from 1 to 3, {} from 3 to 5. Targets (issue 13): one call at most 8 µs ({}), a 3-plugin chain at most 20 µs ({}).\n\n",
        us((three.median.saturating_sub(one.median)) / 2),
        us((five.median.saturating_sub(three.median)) / 2),
        if one.median <= Duration::from_micros(8) { "met" } else { "missed" },
        if three.median <= Duration::from_micros(20) { "met" } else { "missed" },
    ));
    out.push_str(&format!(
        "What lowering the event's string maps costs (the rows with the maps emptied but `email`: {} entries of `userAttributes`, `validationData` and `clientMetadata` fewer, each a key and a value converted from JSON and lowered into the guest): {} a call, {} on the 3-plugin chain. That is about what handing maps over as handles read by key would save, less one host call per key a plugin reads; it needs a change of the contract, which plugins build against, and is not made.\n\n",
        map_entries(&event()) - map_entries(&event_without_maps()),
        us(one.median.saturating_sub(one_unmapped.median)),
        us(three.median.saturating_sub(three_unmapped.median)),
    ));

    out.push_str(&rt.block_on(async {
        let runtime = runtime_with(Metering::default());
        let one = load(runtime, &dir, "chain1").await;
        breakdown(&one).await
    }));
    out.push_str(&concurrent_teardown(&dir)?);
    out.push_str(&rt.block_on(async {
        let runtime = runtime_with(Metering::default());
        let one = load(runtime, &dir, "chain1").await;
        let event = event();
        triggerfish::dispatch::call::measure::store_reuse(&one, &event, 3, 200).await;
        let mut runs = Vec::new();
        for _ in 0..5 {
            runs.push(triggerfish::dispatch::call::measure::store_reuse(&one, &event, 3, 1000).await);
        }
        let mut separate: Vec<Duration> = runs.iter().map(|r| r.0).collect();
        let mut shared: Vec<Duration> = runs.iter().map(|r| r.1).collect();
        separate.sort();
        shared.sort();
        let (separate, shared) = (separate[2], shared[2]);
        triggerfish::dispatch::call::measure::instance_reuse(&one, &event, 3, 200).await;
        let mut runs = Vec::new();
        for _ in 0..5 {
            runs.push(triggerfish::dispatch::call::measure::instance_reuse(&one, &event, 3, 1000).await);
        }
        let mut fresh: Vec<Duration> = runs.iter().map(|r| r.0).collect();
        let mut reused: Vec<Duration> = runs.iter().map(|r| r.1).collect();
        fresh.sort();
        reused.sort();
        let (fresh, reused) = (fresh[2], reused[2]);
        format!(
            "What the fresh instance per call costs, measured the same way but never done by the host (`triggerfish::dispatch::call::measure::instance_reuse`: one instance called 3 times, its state surviving from call to call): a fresh instance and store per call {}, one instance for the three {} ({}). The conversion, scheduler and tracing are outside both.\n\n\
            One store per chain attempt, as the host has it, against one per call (`triggerfish::dispatch::call::measure::store_reuse`: the plugin instantiated and called 3 times in a row, each time in a fresh instance, the mean per call over 1000 rounds, the median of 5 runs): a store per call {}, one store for the three {} ({}).\n\n",
            us(fresh),
            us(reused),
            ratio(reused, fresh),
            us(separate),
            us(shared),
            ratio(shared, separate),
        )
    }));

    out.push_str("### Fuel and epoch interruption\n\nThe 1-plugin chain on engines with each kind of metering switched off (never do this with untrusted plugins).\n\n");
    let mut rows = Vec::new();
    let mut baseline = None;
    for (label, metering) in [
        (
            "fuel and epochs (the default)",
            Metering {
                fuel: true,
                epochs: true,
            },
        ),
        (
            "epochs only",
            Metering {
                fuel: false,
                epochs: true,
            },
        ),
        (
            "fuel only",
            Metering {
                fuel: true,
                epochs: false,
            },
        ),
        (
            "neither",
            Metering {
                fuel: false,
                epochs: false,
            },
        ),
    ] {
        let stats = rt.block_on(async {
            let tenant = load(runtime_with(metering), &dir, "chain1").await;
            time_chain(&tenant).await
        });
        let base = *baseline.get_or_insert(stats.median);
        rows.push(vec![label.into(), stats.cell(), ratio(stats.median, base)]);
    }
    out.push_str(&table(
        &["metering", "median (min–max)", "ratio to default"],
        &rows,
    ));
    out.push('\n');
    Ok(out)
}

/// The same event with one user attribute and no validation data or
/// client metadata: fewer strings and lists to lower.
fn small_event() -> Value {
    let mut event = event();
    event["request"] = json!({"userAttributes": {"email": "jane.doe@example.com"}});
    event
}

/// Where one plugin call's time goes, phase by phase
/// (`triggerfish::dispatch::call::measure::phases`), and what each string or list
/// lowered into the guest costs (the full event against one with fewer).
async fn breakdown(tenant: &Tenant) -> String {
    const ROUNDS: u32 = 4000;
    let event = event();
    let small = small_event();
    // Warm up, then alternate the two events so both see the same load.
    triggerfish::dispatch::call::measure::phases(tenant, &event, 500).await;
    let mut full = Vec::new();
    let mut fewer = Vec::new();
    let mut reallocs = (0, 0);
    for _ in 0..5 {
        let (phases, n) =
            triggerfish::dispatch::call::measure::phases(tenant, &event, ROUNDS).await;
        full.push(phases);
        reallocs.0 = n;
        let (phases, n) =
            triggerfish::dispatch::call::measure::phases(tenant, &small, ROUNDS).await;
        fewer.push(phases);
        reallocs.1 = n;
    }
    // The median of the five runs, phase by phase.
    let median = |runs: &[Vec<(&'static str, Duration)>], i: usize| {
        let mut times: Vec<Duration> = runs.iter().map(|r| r[i].1).collect();
        times.sort();
        times[times.len() / 2]
    };
    let names: Vec<&str> = full[0].iter().map(|(name, _)| *name).collect();
    let total: Duration = (0..names.len()).map(|i| median(&full, i)).sum();
    let mut rows = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let t = median(&full, i);
        rows.push(vec![
            (*name).to_owned(),
            us(t),
            format!("{:.0}%", 100.0 * t.as_secs_f64() / total.as_secs_f64()),
        ]);
    }
    rows.push(vec!["**sum**".into(), us(total), "100%".into()]);
    let call = names
        .iter()
        .position(|n| n.starts_with("the call"))
        .expect("a call phase");
    let per_realloc = (median(&full, call).as_secs_f64() - median(&fewer, call).as_secs_f64())
        / (reallocs.0 - reallocs.1) as f64;
    format!(
        "### Where one call's time goes\n\nThe 1-plugin chain's call taken apart (`triggerfish::dispatch::call::measure::phases`: each phase timed on its own, the mean of {ROUNDS} calls, the median of 5 runs; the sum is a little more than a whole call). Lowering this event's arguments calls the guest's `cabi_realloc` {} times (one per string and per list, and one for the arguments' area); with one user attribute and no validation data or client metadata, {} times, and the call phase is {} shorter: about {} per string or list lowered, {} of the call phase for this event.\n\n{}\n",
        reallocs.0,
        reallocs.1,
        us(median(&full, call).saturating_sub(median(&fewer, call))),
        us(Duration::from_secs_f64(per_realloc.max(0.0))),
        us(Duration::from_secs_f64((per_realloc * reallocs.0 as f64).max(0.0))),
        table(&["phase", "mean per call", "share"], &rows),
    )
}

/// The phases of one call with two calls at a time on two async workers
/// (one per core of this machine), against one at a time: what resetting
/// an instance's memory costs when the other core is running plugins too
/// (its page-table changes reach both cores).
fn concurrent_teardown(dir: &PluginsDir) -> anyhow::Result<String> {
    const ROUNDS: u32 = 4000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (alone, together) = rt.block_on(async {
        let runtime = runtime_with(Metering::default());
        let tenant = Arc::new(load(runtime, dir, "chain1").await);
        let event = Arc::new(event());
        triggerfish::dispatch::call::measure::phases(&tenant, &event, 500).await;
        let mut alone = Vec::new();
        let mut together = Vec::new();
        for _ in 0..3 {
            let (t, e) = (tenant.clone(), event.clone());
            alone.push(
                tokio::spawn(async move {
                    triggerfish::dispatch::call::measure::phases(&t, &e, ROUNDS)
                        .await
                        .0
                })
                .await
                .expect("a run"),
            );
            let runs: Vec<_> = (0..2)
                .map(|_| {
                    let (t, e) = (tenant.clone(), event.clone());
                    tokio::spawn(async move {
                        triggerfish::dispatch::call::measure::phases(&t, &e, ROUNDS)
                            .await
                            .0
                    })
                })
                .collect();
            for run in runs {
                together.push(run.await.expect("a run"));
            }
        }
        (alone, together)
    });
    let median = |runs: &[Vec<(&'static str, Duration)>], i: usize| {
        let mut times: Vec<Duration> = runs.iter().map(|r| r[i].1).collect();
        times.sort();
        times[times.len() / 2]
    };
    let mut rows = Vec::new();
    for (i, (name, _)) in alone[0].iter().enumerate() {
        let (a, t) = (median(&alone, i), median(&together, i));
        rows.push(vec![(*name).to_owned(), us(a), us(t), ratio(t, a)]);
    }
    Ok(format!(
        "Two calls at a time, one on each core (a 2-worker runtime, each worker running calls back to back), against one at a time on the same runtime; the medians of 3 runs (2 × 3 with two at a time) of {ROUNDS} calls:\n\n{}\n",
        table(&["phase", "one at a time", "two at a time", "ratio"], &rows)
    ))
}

/// A component with a custom section appended: the same plugin with other
/// bytes, as a new build would be.
pub(crate) fn variant(bytes: &[u8], n: usize) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"triggerfish-bench-build";
    let mut content = Vec::new();
    leb(name.len(), &mut content);
    content.extend_from_slice(name);
    content.extend_from_slice(&n.to_le_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    leb(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}

/// Hot reload under load: rename to first event on the new version.
fn reload(swaps: usize) -> anyhow::Result<String> {
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
fn restart() -> anyhow::Result<String> {
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

fn memory(tenants: usize) -> anyhow::Result<String> {
    let out = Command::new(std::env::current_exe()?)
        .args(["memory", &tenants.to_string()])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "the memory run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sizes: Value = serde_json::from_slice(&out.stdout)?;
    let mib = |k: &str| sizes[k].as_u64().unwrap_or(0) as f64 / 1024.0;
    Ok(format!(
        "## Memory\n\n{tenants} tenants, each with the 3-plugin PreSignUp chain built from the same 3 `.wasm` files (so they share compiled code), in a fresh process, one event run through every tenant:\n\n{}\nTarget: at most 512 MiB ({}).\n\n",
        table(
            &["resident", "MiB"],
            &[
                vec!["process start".into(), format!("{:.0}", mib("before"))],
                vec!["all tenants loaded".into(), format!("{:.0}", mib("loaded"))],
                vec![format!("after {tenants} events"), format!("{:.0}", mib("after"))],
                vec!["peak".into(), format!("{:.0}", mib("peak"))],
            ]
        ),
        if mib("peak") <= 512.0 { "met" } else { "missed" },
    ))
}

/// Rounds of the fairness figure, each on a fresh server.
const FAIRNESS_ROUNDS: usize = 3;

/// One tenant's 3-plugin chain over HTTP at 8 connections, quiet and while
/// another tenant keeps 16 looping plugin calls running (its whole default
/// concurrency quota, its default limits), on the `triggerfish serve`
/// binary (one tokio worker per core).
fn fairness(seconds: u64) -> anyhow::Result<String> {
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

/// A server under test, killed when dropped.
pub(crate) struct Server(pub(crate) Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn wait_for_port(addr: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "{addr} never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Waits for `/healthz` to answer 200: every tenant loaded.
pub(crate) fn wait_for_ready(addr: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let status = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{addr}/healthz"),
            ])
            .output()?;
        if status.stdout == b"200" {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "{addr} never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) struct Load {
    pub(crate) rps: f64,
    pub(crate) p50: String,
    pub(crate) p99: String,
    pub(crate) errors: u64,
}

impl Load {
    pub(crate) fn p50_ms(&self) -> f64 {
        wrk_ms(&self.p50)
    }

    pub(crate) fn p99_ms(&self) -> f64 {
        wrk_ms(&self.p99)
    }
}

/// A latency as wrk prints it (`150.00us`, `1.23ms`, `2.00s`), in ms.
fn wrk_ms(text: &str) -> f64 {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let value: f64 = text[..split].parse().unwrap_or(f64::NAN);
    value
        * match &text[split..] {
            "us" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            _ => f64::NAN,
        }
}

/// The release `triggerfish` binary next to this one.
pub(crate) fn server_binary() -> anyhow::Result<PathBuf> {
    let bench = std::env::current_exe()?;
    let triggerfish = bench
        .parent()
        .context("the binary's folder")?
        .join("triggerfish");
    anyhow::ensure!(
        triggerfish.is_file(),
        "{} is missing: build it with `cargo build --release -p triggerfish`",
        triggerfish.display()
    );
    Ok(triggerfish)
}

/// A wrk script that posts the benchmark event.
pub(crate) fn post_script(dir: &PluginsDir) -> anyhow::Result<PathBuf> {
    let script = dir.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [[{}]]\n",
            event()
        ),
    )?;
    Ok(script)
}

/// `triggerfish serve` on `addr` for the tenants in `plugins`.
fn serve(triggerfish: &Path, addr: &str, plugins: &Path) -> anyhow::Result<Server> {
    let child = Command::new(triggerfish)
        .args([
            "serve",
            "--no-watch",
            "--no-cache",
            "--listen",
            addr,
            "--plugins-dir",
        ])
        .arg(plugins)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Server(child))
}

pub(crate) fn wrk(
    url: &str,
    connections: usize,
    seconds: u64,
    script: &Path,
) -> anyhow::Result<Load> {
    let threads = connections.clamp(1, 2).to_string();
    let out = Command::new("wrk")
        .args([
            "-t",
            &threads,
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .context("wrk runs (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    let errors = field("Non-2xx or 3xx responses:").parse().unwrap_or(0);
    Ok(Load {
        rps: field("Requests/sec:").parse().unwrap_or(0.0),
        p50: field("50%"),
        p99: field("99%"),
        errors,
    })
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub fn report(args: &[String]) -> anyhow::Result<()> {
    let mut out_path = None;
    let mut seconds = 10;
    let mut only: Option<Vec<String>> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--out" => out_path = Some(PathBuf::from(it.next().context("--out FILE")?)),
            "--seconds" => seconds = it.next().context("--seconds N")?.parse()?,
            "--only" => {
                let names = it.next().context("--only SECTION[,SECTION]")?;
                only = Some(names.split(',').map(str::to_owned).collect());
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mut report = format!(
        "# Benchmarks\n\nWritten by `cargo xtask bench` (release build) on {}, commit {}, {} cores ({cpu}). Every comparison below was measured in the same run on the same machine; times are medians over 21 samples, with min and max.\n\n",
        command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        command_line("git", &["rev-parse", "--short", "HEAD"]),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    type Section = Box<dyn Fn() -> anyhow::Result<String>>;
    let sections: Vec<(&str, Section)> = vec![
        ("calls", Box::new(calls)),
        ("fairness", Box::new(move || fairness(seconds))),
        ("reload", Box::new(|| reload(20))),
        ("restart", Box::new(restart)),
        ("memory", Box::new(|| memory(1000))),
        ("http", Box::new(move || crate::http::http(seconds))),
        ("sync", Box::new(crate::sync::section)),
        ("hosts", Box::new(move || crate::hosts::hosts(seconds))),
        ("spread", Box::new(crate::spread::spread)),
        (
            "streams",
            Box::new(move || crate::streams::streams(seconds)),
        ),
    ];
    if let Some(only) = &only {
        for name in only {
            anyhow::ensure!(
                sections.iter().any(|(n, _)| n == name),
                "--only: no section {name}"
            );
        }
    }
    for (name, section) in sections {
        if only.as_ref().is_some_and(|o| !o.iter().any(|n| n == name)) {
            continue;
        }
        eprintln!("bench: {name}…");
        let text = section().with_context(|| format!("the {name} benchmark"))?;
        eprint!("{text}");
        report.push_str(&text);
    }
    // Some sections only are not a whole report: they replace
    // BENCHMARKS.md only when asked to (`--out`).
    match out_path.or_else(|| only.is_none().then(|| PathBuf::from("BENCHMARKS.md"))) {
        Some(path) => {
            std::fs::write(&path, &report)?;
            eprintln!("bench: wrote {}", path.display());
        }
        None => print!("{report}"),
    }
    Ok(())
}
