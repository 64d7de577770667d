//! Where a plugin call's time goes, and what the host's isolation costs:
//! each phase of [`Call::run`](super::Call::run) timed on its own; what
//! sharing a store between a chain attempt's calls saves (the host's way,
//! see `dispatch::call::Attempt`); and what sharing an instance would
//! save (which the host never does). For the benchmarks
//! (`triggerfish-bench`); nothing here is on the request path.

use super::*;

/// Where the time of one plugin call goes, phase by phase: the first
/// plugin of `tenant`'s chain for `event`, run `rounds` times the way
/// [`Call::run`] runs it, with each phase timed on its own. Returns each
/// phase's mean, in the order it happens, and how many times lowering the
/// arguments calls the guest's `cabi_realloc`. For the benchmarks
/// (`triggerfish-bench`); not part of the host's API.
///
/// The phases add up to a little more than a real call (each is timed on
/// its own clock read). Panics if the event does not route or no plugin
/// serves it, or if the call fails.
#[doc(hidden)]
pub async fn phases(
    tenant: &crate::tenant::Tenant,
    event: &serde_json::Value,
    rounds: u32,
) -> (Vec<(&'static str, std::time::Duration)>, usize) {
    use crate::families::Args;
    use std::time::{Duration, Instant as Clock};

    const NAMES: [&str; 10] = [
        "JSON to component values",
        "tracing span",
        "instance slot and scheduler registration",
        "WASI context and call state",
        "store creation",
        "instantiation",
        "the call: lowering, the guest, lifting, post-return",
        "output checks",
        "teardown and memory reset",
        "component values to JSON",
    ];
    let subject = Subject::new(tenant, event);
    let Subject {
        trigger,
        ref call,
        ref args,
        ..
    } = subject;
    let (plugin, handler) = (call.plugin, call.handler);
    let runtime = &plugin.compiled.runtime;
    let reallocs = reallocs_to_lower(&args.values);
    let mut spent = [Duration::ZERO; NAMES.len()];
    for _ in 0..rounds {
        // The chain takes the event by value: its copy is not a phase.
        let owned = event.clone();
        let mut at = Clock::now();
        let mut lap = |phase: usize| {
            let now = Clock::now();
            spent[phase] += now - at;
            at = now;
        };
        let mut args = Args::from_event(trigger, handler, event).expect("a convertible event");
        lap(0);
        let span = tracing::info_span!(
            "plugin",
            plugin = %plugin.name,
            outcome = field::Empty,
            duration_us = field::Empty,
            fuel = field::Empty,
        );
        lap(1);
        let slot = runtime.instance_slot().await;
        let turn = runtime.scheduler().register(&tenant.name);
        let _ = turn.run(call.deadline, async {}).await;
        lap(2);
        let mut state = CallState::new(
            call.limits,
            call.config.clone(),
            call.outbound.clone(),
            call.log_budget.clone(),
        );
        state.turn = Some(turn.clone());
        lap(3);
        let mut store = plugin
            .compiled
            .new_store(state, call.limits.fuel)
            .expect("a store");
        store.set_hostcall_fuel(hostcall_data_limit(call.limits.output_bytes));
        lap(4);
        let instance = plugin
            .compiled
            .pre
            .instantiate_async(&mut store)
            .await
            .expect("an instance");
        lap(5);
        let func = instance
            .get_func(&mut store, handler.func)
            .expect("the handler");
        let mut results = [Val::Bool(false)];
        func.call_async(&mut store, &args.values, &mut results)
            .await
            .expect("the call returns");
        lap(6);
        let Ok(Ok(returned)) = call.take_result(results) else {
            panic!("the plugin denied the event or returned an invalid output");
        };
        span.record("outcome", "ok");
        lap(7);
        drop(store);
        drop(slot);
        drop(turn);
        lap(8);
        args.fold(returned).expect("a foldable output");
        std::hint::black_box(args.into_event(owned).expect("JSON"));
        lap(9);
    }
    let phases = NAMES
        .iter()
        .zip(spent)
        .map(|(name, total)| (*name, total / rounds))
        .collect();
    (phases, reallocs)
}

/// What every measure here calls: the first plugin of a tenant's chain for
/// an event, as the host would call it, and the event as its arguments.
struct Subject<'t> {
    trigger: crate::trigger::Trigger,
    call: Call<'t>,
    args: crate::families::Args,
    /// The tenant's log budget per chain attempt.
    log_bytes: u64,
}

impl<'t> Subject<'t> {
    /// Panics if `event` does not route, no plugin of `tenant` serves it, or
    /// it does not convert.
    fn new(tenant: &'t crate::tenant::Tenant, event: &serde_json::Value) -> Subject<'t> {
        let trigger = crate::trigger::Trigger::route(event).expect("a routable event");
        let plugin = tenant
            .plugins
            .iter()
            .find(|p| p.serves(trigger))
            .expect("a plugin serving the event");
        let handler = &plugin.compiled.handlers[&trigger];
        let settings = tenant.settings_for(&plugin.name);
        let call = Call {
            tenant: &tenant.name,
            plugin,
            handler,
            limits: &settings.limits,
            config: settings.config.clone(),
            outbound: settings.outbound.clone(),
            log_budget: LogBudget::new(tenant.limits.log_bytes),
            log_tail: None,
            deadline: Instant::now() + tenant.limits.timeout,
            budget: tenant.limits.timeout,
        };
        let args = crate::families::Args::from_event(trigger, handler, event)
            .expect("a convertible event");
        Subject {
            trigger,
            call,
            args,
            log_bytes: tenant.limits.log_bytes,
        }
    }

    /// The call's state as the host gives it, with a log budget of its own.
    fn state(&self) -> CallState {
        CallState::new(
            self.call.limits,
            self.call.config.clone(),
            self.call.outbound.clone(),
            LogBudget::new(self.log_bytes),
        )
    }

    /// How long `calls` calls take as the host makes a chain's only call:
    /// each with an instance slot, a store and an instance of its own. The
    /// baseline of [`store_reuse`] and [`instance_reuse`].
    async fn fresh_calls(&self, calls: u32) -> std::time::Duration {
        let (plugin, handler) = (self.call.plugin, self.call.handler);
        let started = std::time::Instant::now();
        for _ in 0..calls {
            let _slot = plugin.compiled.runtime.instance_slot().await;
            let mut store = self.new_store();
            call_once(plugin, handler, &mut store, &self.args.values).await;
        }
        started.elapsed()
    }

    /// A fresh store for the call, held to its limits as the host holds it.
    fn new_store(&self) -> wasmtime::Store<CallState> {
        let limits = self.call.limits;
        let mut store = (self.call.plugin.compiled)
            .new_store(self.state(), limits.fuel)
            .expect("a store");
        store.set_hostcall_fuel(hostcall_data_limit(limits.output_bytes));
        store
    }
}

/// How many times lowering `values` calls the guest's `cabi_realloc`: once
/// for every string and every list, and once for the arguments' own area
/// when they do not fit in registers (more than 16 flat values; an absent
/// option is counted as one, so this can miss the area for arguments with
/// many absent options).
fn reallocs_to_lower(values: &[Val]) -> usize {
    fn count(value: &Val) -> (usize, usize) {
        // (reallocs, flat values)
        match value {
            Val::String(_) => (1, 2),
            Val::List(items) => (1 + items.iter().map(|i| count(i).0).sum::<usize>(), 2),
            Val::Record(fields) => fields.iter().fold((0, 0), |(r, f), (_, v)| {
                let (r2, f2) = count(v);
                (r + r2, f + f2)
            }),
            Val::Tuple(items) => items.iter().fold((0, 0), |(r, f), v| {
                let (r2, f2) = count(v);
                (r + r2, f + f2)
            }),
            Val::Option(Some(inner)) | Val::Variant(_, Some(inner)) => {
                let (r, f) = count(inner);
                (r, f + 1)
            }
            Val::Option(None) | Val::Variant(_, None) => (0, 1),
            _ => (0, 1),
        }
    }
    let (reallocs, flat) = values.iter().fold((0, 0), |(r, f), v| {
        let (r2, f2) = count(v);
        (r + r2, f + f2)
    });
    reallocs + usize::from(flat > 16)
}

/// What sharing one store between the calls of a chain attempt saves (as
/// the host does): the first plugin of `tenant`'s chain for `event` called
/// `calls` times in a row, each in a fresh instance, once with a store for
/// each call and once in one store (its call state replaced and its fuel
/// and deadline reset between calls), `rounds` times each. Returns the mean
/// per call of each way. For the benchmarks (`triggerfish-bench`); not
/// part of the host's API. Panics if a call fails.
#[doc(hidden)]
pub async fn store_reuse(
    tenant: &crate::tenant::Tenant,
    event: &serde_json::Value,
    calls: u32,
    rounds: u32,
) -> (std::time::Duration, std::time::Duration) {
    use std::time::Instant as Clock;

    let subject = Subject::new(tenant, event);
    let Subject { call, args, .. } = &subject;
    let (plugin, handler, limits) = (call.plugin, call.handler, call.limits);
    let runtime = &plugin.compiled.runtime;
    let (mut separate, mut shared) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    for _ in 0..rounds {
        separate += subject.fresh_calls(calls).await;

        // The host's own attempt: its slots taken together, its store made
        // once and reset for each next call.
        let started = Clock::now();
        let mut attempt = Attempt::new(calls as usize);
        attempt
            .take_slots(runtime, Instant::now() + call.budget)
            .await
            .expect("free instance slots");
        for _ in 0..calls {
            let store = attempt
                .store_for(&plugin.compiled, subject.state(), limits.fuel)
                .expect("a store");
            store.set_hostcall_fuel(hostcall_data_limit(limits.output_bytes));
            call_once(plugin, handler, store, &args.values).await;
        }
        drop(attempt);
        shared += started.elapsed();
    }
    let per_call = |total: std::time::Duration| total / (rounds * calls);
    (per_call(separate), per_call(shared))
}

/// A fresh instance of `plugin` in `store`, and one call of its handler.
async fn call_once(
    plugin: &Plugin,
    handler: &Handler,
    store: &mut wasmtime::Store<CallState>,
    args: &[Val],
) {
    let instance = plugin
        .compiled
        .pre
        .instantiate_async(&mut *store)
        .await
        .expect("an instance");
    let func = instance
        .get_func(&mut *store, handler.func)
        .expect("the handler");
    let mut results = [Val::Bool(false)];
    func.call_async(&mut *store, args, &mut results)
        .await
        .expect("the call returns");
    std::hint::black_box(results);
}

/// What a fresh instance per call costs: the first plugin of `tenant`'s
/// chain for `event` called `calls` times in one instance (what the host
/// never does: state would survive from call to call), against a fresh
/// instance and store for each call, `rounds` times each. Returns the mean
/// per call of each way. For the benchmarks; not part of the host's API.
/// Panics if a call fails.
#[doc(hidden)]
pub async fn instance_reuse(
    tenant: &crate::tenant::Tenant,
    event: &serde_json::Value,
    calls: u32,
    rounds: u32,
) -> (std::time::Duration, std::time::Duration) {
    use std::time::Instant as Clock;

    let subject = Subject::new(tenant, event);
    let Subject { call, args, .. } = &subject;
    let (plugin, handler, limits) = (call.plugin, call.handler, call.limits);
    let runtime = &plugin.compiled.runtime;
    let (mut fresh, mut reused) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    for _ in 0..rounds {
        fresh += subject.fresh_calls(calls).await;

        let started = Clock::now();
        let _slot = runtime.instance_slot().await;
        let mut store = subject.new_store();
        let instance = plugin
            .compiled
            .pre
            .instantiate_async(&mut store)
            .await
            .expect("an instance");
        let func = instance
            .get_func(&mut store, handler.func)
            .expect("the handler");
        for _ in 0..calls {
            if runtime.config().metering.fuel {
                store.set_fuel(limits.fuel).expect("fuel");
            }
            let mut results = [Val::Bool(false)];
            func.call_async(&mut store, &args.values, &mut results)
                .await
                .expect("the call returns");
            std::hint::black_box(results);
        }
        drop(store);
        reused += started.elapsed();
    }
    let per_call = |total: std::time::Duration| total / (rounds * calls);
    (per_call(fresh), per_call(reused))
}
