//! The `calls` section (a plugin call and chains in process, against
//! native Rust, taken apart) and `spin`, the loop to profile.

use crate::fixtures::{chain_dir, event, event_without_maps, load, map_entries, runtime_with};
use crate::harness::{per_call, ratio, table, us, Stats};
use crate::native;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use triggerfish::dispatch::Dispatcher;
use triggerfish::engine::Metering;
use triggerfish::tenant::Tenant;
use triggerfish::trigger::Trigger;
use triggerfish_test_support::PluginsDir;

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

/// A measure comparing two ways per call: a warm-up of 200 rounds, then
/// the median of 5 runs of 1000 rounds, for each way.
async fn median_of_runs<F, Fut>(measure: F) -> (Duration, Duration)
where
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = (Duration, Duration)>,
{
    measure(200).await;
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(measure(1000).await);
    }
    let median = |way: fn(&(Duration, Duration)) -> Duration| {
        let mut times: Vec<Duration> = runs.iter().map(way).collect();
        times.sort();
        times[times.len() / 2]
    };
    (median(|r| r.0), median(|r| r.1))
}

/// One plugin call against native Rust; chains of 1, 3 and 5; and what
/// fuel and epochs cost.
pub(crate) fn calls() -> anyhow::Result<String> {
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
    // A row: what, its median (min–max), and its ratio to its native
    // baseline, if it has one.
    let row = |what: &str, stats: Stats, native: Option<Stats>| {
        vec![
            what.to_owned(),
            stats.cell(),
            native.map_or(String::new(), |native| ratio(stats.median, native.median)),
        ]
    };
    out.push_str(&table(
        &["what", "median (min–max) per event", "ratio to native"],
        &[
            row("native Rust, 1 handler", native_one, Some(native_one)),
            row("Triggerfish, 1 plugin", one, Some(native_one)),
            row(
                "(of which JSON ↔ values only)",
                conversion,
                Some(native_one),
            ),
            row("native Rust, 3 handlers", native_three, Some(native_three)),
            row("Triggerfish, 3-plugin chain", three, Some(native_three)),
            row("Triggerfish, 5-plugin chain", five, None),
            row(
                "Triggerfish, 1 plugin, the event's maps emptied but `email`",
                one_unmapped,
                Some(native_one),
            ),
            row(
                "Triggerfish, 3-plugin chain, the event's maps emptied but `email`",
                three_unmapped,
                Some(native_three),
            ),
            row(
                "Triggerfish, 1 plugin, with `serve`'s log subscriber",
                one_logged,
                Some(native_one),
            ),
            row(
                "Triggerfish, 3-plugin chain, with `serve`'s log subscriber",
                three_logged,
                Some(native_three),
            ),
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
        use triggerfish::dispatch::call::measure::{instance_reuse, store_reuse};
        let (separate, shared) =
            median_of_runs(|rounds| store_reuse(&one, &event, 3, rounds)).await;
        let (fresh, reused) =
            median_of_runs(|rounds| instance_reuse(&one, &event, 3, rounds)).await;
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
