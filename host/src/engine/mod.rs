//! The wasmtime engine every plugin runs on, the imports it links, and
//! the store of one plugin call.
//!
//! One [`Runtime`] per process: one `Engine` (component model, fuel,
//! epoch interruption, pooling allocator), one epoch ticker thread, one
//! [`Scheduler`] of CPU turns, one `Linker` holding WASI and the host's
//! `log` and `config` imports.

pub mod convert;
pub mod outbound;
pub mod scheduler;
pub mod state;

use scheduler::{Scheduler, Tick, Turn};
use state::CallState;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "triggerfish:user-pool/every-trigger",
    });
}

use bindings::triggerfish::host::{config, log};

/// How often the epoch ticks. A running plugin checks in with the
/// [`Scheduler`] at every tick (it goes on, yields its thread, or gives its
/// turn away), and a chain overshoots its budget by at most about one.
/// Short, so that a call holds an async worker for at most about two ticks
/// before it moves off the workers ([`scheduler::LONG_AFTER`]); a tick costs
/// a running plugin one check of a lock, 500 times a second.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Largest stack a plugin's WebAssembly may use before it traps with
/// "stack overflow".
pub const MAX_WASM_STACK: usize = 1 << 20;

/// Bytes of each instance's linear memory kept mapped between calls, reset
/// in place rather than unmapped.
const KEEP_RESIDENT: usize = 4 << 20;

/// Process-wide settings of the engine.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Plugin instances alive at once across all tenants; the pooling
    /// allocator reserves this many slots up front.
    pub max_instances: u32,
    /// The most linear memory any tenant may give one instance.
    pub max_memory_bytes: u64,
    /// Fuel metering and epoch interruption. Both are on in any real
    /// deployment; turning one off exists to measure what it costs.
    pub metering: Metering,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_instances: 256,
            max_memory_bytes: 256 << 20,
            metering: Metering::default(),
        }
    }
}

/// Which of wasmtime's two ways of stopping runaway code are compiled in.
/// Without fuel, only the wall-clock budget ends a loop; without epochs, a
/// loop never yields and nothing but fuel ends it: both are unsafe for
/// untrusted plugins, and here only for benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metering {
    pub fuel: bool,
    pub epochs: bool,
}

impl Default for Metering {
    fn default() -> Self {
        Metering {
            fuel: true,
            epochs: true,
        }
    }
}

/// A fresh store for one plugin call (or a load-time probe): held to its
/// limits by the limiter and fuel, yielding at every epoch tick.
pub(crate) fn new_store(
    engine: &Engine,
    metering: Metering,
    state: CallState,
    fuel: u64,
) -> wasmtime::Result<Store<CallState>> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| s.limiter());
    if metering.epochs {
        // At every tick (or when the scheduler advances the epoch for a
        // waiting call) a call with a turn asks the scheduler whether to go
        // on, yield its thread, or give its turn away; one without (a
        // load-time probe) yields. The chain's deadline itself is a timeout
        // around the call, which also covers time spent in host calls.
        // tokio's own yield lets the worker poll for I/O before coming back.
        store.epoch_deadline_callback(|ctx| {
            let tick = ctx.data().turn.as_ref().map_or(Tick::Yield, Turn::at_tick);
            Ok(match tick {
                Tick::Continue => UpdateDeadline::Continue(1),
                Tick::Yield => UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())),
            })
        });
    }
    arm(&mut store, metering, fuel)?;
    Ok(store)
}

/// Readies a store that has served a call for the next one (a chain
/// attempt's calls share one store; each still gets a fresh instance):
/// the next call's state in place of the last one's, its fuel, and its
/// first epoch deadline.
pub(crate) fn reset_store(
    store: &mut Store<CallState>,
    metering: Metering,
    state: CallState,
    fuel: u64,
) -> wasmtime::Result<()> {
    *store.data_mut() = state;
    arm(store, metering, fuel)
}

/// A call's fuel, and its first deadline one epoch tick away.
fn arm(store: &mut Store<CallState>, metering: Metering, fuel: u64) -> wasmtime::Result<()> {
    if metering.fuel {
        store.set_fuel(fuel)?;
    }
    if metering.epochs {
        store.set_epoch_deadline(1);
    }
    Ok(())
}

/// The engine, its linker and the epoch ticker.
pub struct Runtime {
    engine: Engine,
    /// One permit per instance slot of the pool: a call waits here (within
    /// its chain's budget) rather than fail on a full pool.
    instance_slots: Arc<tokio::sync::Semaphore>,
    /// CPU turns, shared fairly between tenants.
    scheduler: Arc<Scheduler>,
    /// Attempts waiting for slots now, for the metrics.
    waiting_for_slot: AtomicUsize,
    linker: Linker<CallState>,
    config: RuntimeConfig,
    stop_ticker: Arc<AtomicBool>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Runtime> {
        let engine = Engine::new(&engine_config(&config))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        log::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
        config::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;

        // As many worker turns as the async runtime has workers (tokio's
        // default, and `serve`'s: one per core).
        let turns = std::thread::available_parallelism().map_or(1, |n| n.get());
        let scheduler = Scheduler::new(turns, Some(engine.weak()));
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.weak();
        let stop = stop_ticker.clone();
        std::thread::Builder::new()
            .name("triggerfish-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        Ok(Runtime {
            instance_slots: Arc::new(tokio::sync::Semaphore::new(config.max_instances as usize)),
            scheduler,
            waiting_for_slot: AtomicUsize::new(0),
            engine,
            linker,
            config,
            stop_ticker,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<CallState> {
        &self.linker
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The CPU turns plugin calls take.
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }

    /// Waits for a free instance slot; the slot is held until the permit
    /// is dropped.
    pub(crate) async fn instance_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.instance_slots(1).await
    }

    /// Waits for `n` free instance slots at once (at most `max_instances`),
    /// held until the permit is dropped. Taken together, so that callers
    /// each holding some slots and waiting for more can never hold every
    /// slot between them.
    pub(crate) async fn instance_slots(&self, n: u32) -> tokio::sync::OwnedSemaphorePermit {
        let n = n.clamp(1, self.config.max_instances.max(1));
        if let Ok(permit) = self.instance_slots.clone().try_acquire_many_owned(n) {
            return permit;
        }
        // Counted while waiting, and uncounted however the wait ends (the
        // caller's deadline drops this future).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.waiting_for_slot.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting_for_slot);
        self.instance_slots
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("the semaphore is never closed")
    }

    /// Instance slots held by plugin calls now (of `max_instances`).
    pub fn instance_slots_in_use(&self) -> usize {
        (self.config.max_instances as usize).saturating_sub(self.instance_slots.available_permits())
    }

    /// Chain attempts (and load-time probes) waiting for free instance
    /// slots now.
    pub fn instance_slots_waiting(&self) -> usize {
        self.waiting_for_slot.load(Ordering::Relaxed)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

pub(crate) fn engine_config(runtime: &RuntimeConfig) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Component-model async is not part of the contract; leaving its
    // bookkeeping out of every store makes calls cheaper.
    config.concurrency_support(false);
    config.consume_fuel(runtime.metering.fuel);
    config.epoch_interruption(runtime.metering.epochs);
    config.max_wasm_stack(MAX_WASM_STACK);
    config.async_stack_size(MAX_WASM_STACK + (512 << 10));
    // Traps are reported by kind and message; frame lists would only cost
    // time on the error path.
    config.wasm_backtrace_max_frames(None);
    // For profiling plugins' own code: `perf` then names compiled
    // WebAssembly functions (from /tmp/perf-<pid>.map).
    if std::env::var_os("TRIGGERFISH_PERF_MAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }

    let instances = runtime.max_instances;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances);
    pool.total_stacks(instances);
    // A Rust component is a main module plus a few small adapter modules.
    pool.max_core_instances_per_component(16);
    pool.total_core_instances(instances.saturating_mul(8));
    pool.max_memories_per_component(2);
    pool.total_memories(instances.saturating_mul(2));
    pool.max_tables_per_component(8);
    pool.total_tables(instances.saturating_mul(8));
    pool.table_elements(crate::limits::DEFAULT_TABLE_ELEMENTS.max(50_000));
    pool.max_memory_size(runtime.max_memory_bytes as usize);
    // Reset the pages a call dirtied in place (found with PAGEMAP_SCAN on
    // Linux 6.7+) instead of unmapping them: the next instance in the slot
    // then takes no page faults and no TLB shootdowns.
    pool.linear_memory_keep_resident(KEEP_RESIDENT);
    pool.table_keep_resident(64 << 10);
    pool.pagemap_scan(wasmtime::Enabled::Auto);
    pool.decommit_batch_size(16);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}
