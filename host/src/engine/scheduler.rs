//! Fair CPU between tenants: plugin WebAssembly runs only while its call
//! holds a *turn*, turns go to the tenant that has used the least CPU, and
//! calls that run long leave the async workers.
//!
//! Plugin code runs inside the task of the request that called it and
//! gives its thread back only at an epoch tick. Left alone, sixteen
//! looping calls of one tenant keep every async worker busy, and another
//! tenant's request waits behind all of them for its HTTP parsing, its JSON
//! and each of its plugin calls (issue 9 measured its p50 150-500x slower).
//! So:
//!
//! - A call starts on the async worker that runs its request, holding one
//!   of the *worker turns* (as many as cores, the workers' count). It takes
//!   the turn before its plugin is instantiated and gives it back when the
//!   call ends, when its plugin blocks in the host (a sleep, an outbound
//!   request: it takes a turn again before going on), or at an epoch tick
//!   when it has run a [`SLICE`] and another call waits.
//! - Waiting calls are served tenant by tenant: the tenant that has used the
//!   least CPU so far (its *virtual runtime*) goes first, and calls of one
//!   tenant go in arrival order. A tenant with sixteen calls gets the same
//!   share as a tenant with one. A tenant that comes back after being idle
//!   starts level with the least-served tenant still running, so idling
//!   earns no credit. A call of a less-served tenant that has to wait makes
//!   running plugins check in at once (the engine's epoch is advanced), so
//!   it waits about as long as running code takes to reach its next loop
//!   header or function entry, not a tick.
//! - A call still running after [`LONG_AFTER`] of CPU is *long*: at its
//!   next tick it leaves the async workers (`block_in_place` hands the
//!   worker's other tasks to a new worker, and the thread goes on with the
//!   call alone), where it takes one of the *long turns* (half as many as
//!   worker turns, at least one), shared between tenants in the same way
//!   but kept apart, under a lock of their own that no async worker waits
//!   for. A long call yields its core to the operating system at every
//!   tick. The workers stay free for short calls and for everything that
//!   is not WebAssembly (HTTP, JSON), which no turn covers.
//!
//! Each call records whether it was *crowded*: whether another call of its
//! own tenant held or waited for a turn of the same kind while it waited
//! for one. A call that times out after waiting behind its own tenant's
//! calls was slowed by its tenant's concurrency, not by the host, and is
//! not retried (`dispatch/call.rs` decides, with [`Turn::cpu`]).
//!
//! # What it guarantees
//!
//! - Between tenants with calls waiting, CPU turns are shared equally per
//!   tenant, whatever each tenant's concurrency: sixteen loops of one
//!   tenant weigh as much as one call of another.
//! - A runaway call occupies an async worker for at most about two epoch
//!   ticks (a few ms) of CPU; after that it competes only with other long
//!   calls, for at most half the cores' turns. A short call (the usual plugin call takes tens of
//!   microseconds) so finds a worker and a worker turn soon, whatever long
//!   calls are running.
//! - A call that waits in the host (sleep, outbound HTTP) holds no turn.
//!
//! # Limits
//!
//! - CPU is counted as wall time while the call's future is being polled
//!   (its plugin running, or the host working for it): time the operating
//!   system takes the thread away is charged to the call.
//! - Only plugin code and the host calls it makes are scheduled. HTTP,
//!   authentication, JSON decoding and folding results back run on the
//!   async workers outside any turn (they are bounded by their own limits).
//! - A tenant's virtual runtime lives only while it has calls registered;
//!   the shares are fair between tenants active at the same time, not over
//!   a longer history.
//! - A long call occupies the thread it started on, while tokio starts
//!   (or takes from its blocking pool) another to be the worker
//!   (`block_in_place`); the instance pool (`--max-instances`, 256) bounds
//!   how many such threads there are.
//! - On a current-thread async runtime a long call cannot leave its thread
//!   and stays where it is (turns still order the calls).
//! - Load-time probes of new plugins run without a turn (they have their
//!   own time limit, and run off the request path).
//! - The turns are per [`Scheduler`], one per engine: several processes on
//!   one machine do not share them.
//!
//! # Why these numbers
//!
//! - [`EPOCH_TICK`] (2 ms) is how late a running plugin notices anything:
//!   that a call became long, that its slice is over. A plugin call
//!   usually takes 15-50 us, so a call still running after one tick is
//!   dozens of times the usual, and moving it off the workers (a thread
//!   start, tens of microseconds) costs it about 1%. Each tick costs a
//!   running plugin one lock, 500 times a second.
//! - [`SLICE`] (10 ms) only matters between calls of equally served
//!   tenants (usually one tenant's own calls): a less-served tenant does
//!   not wait for it. Shorter slices would switch more often (each switch
//!   leaves and re-enters a fiber and wakes a task) for no gain in
//!   fairness.
//! - Long turns are half the cores so that, however many long calls there
//!   are, they run on at most half the cores' worth of threads, and the
//!   workers keep the other half. The long threads run at the workers'
//!   priority: a lower one was tried (`nice` 10, 19, `SCHED_IDLE`) and
//!   stalled the workers for tens of milliseconds now and then (at
//!   `nice` 10 when other work kept the machine busy): a thread that
//!   seldom runs can hold a lock (the kernel's or the allocator's) a
//!   worker then waits for.

use super::EPOCH_TICK;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use wasmtime::EngineWeak;

/// CPU time after which a running call gives its turn to a waiting call of
/// its kind. A running plugin is asked at every epoch tick.
pub const SLICE: Duration = Duration::from_millis(10);

/// CPU time after which a call is long, and leaves the async workers at
/// its next epoch tick: it holds a worker for at most about two ticks.
pub const LONG_AFTER: Duration = EPOCH_TICK;

/// What a running plugin does at an epoch tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tick {
    /// Keep running without yielding the thread.
    Continue,
    /// Yield the thread. The call keeps its turn, or has given it up and
    /// waits for the next one when polled again.
    Yield,
}

/// A call ran past its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// The CPU turns of one engine: turns on the async workers, and turns for
/// long calls off them.
pub struct Scheduler {
    workers: Pool,
    long: Pool,
    /// To make running plugins check in now, for a waiting call that
    /// should go first.
    engine: Option<EngineWeak>,
}

/// One kind of turns, with its own lock.
struct Pool {
    /// Whether calls here leave when they turn long.
    on_workers: bool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    free: usize,
    next_id: u64,
    tenants: HashMap<Arc<str>, Share>,
    calls: HashMap<u64, Ticket>,
}

/// One tenant's place in a pool's queue.
struct Share {
    /// CPU time used by the tenant's calls while it has had calls
    /// registered, starting level with the least-served tenant.
    vruntime: Duration,
    /// Calls registered (running, waiting or between the two).
    registered: usize,
    holding: usize,
    /// Waiting calls, in arrival order.
    queue: VecDeque<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Neither holding a turn nor waiting for one.
    Idle,
    Waiting,
    Holding,
}

/// One call's state in a pool.
struct Ticket {
    tenant: Arc<str>,
    state: State,
    waker: Option<Waker>,
    /// The call yielded its thread at a tick but keeps its turn.
    keep: bool,
    long: bool,
    crowded: bool,
    cpu: Duration,
    /// The call's future is being polled: only that time is charged.
    running: bool,
    accounted_at: Instant,
    slice_started: Instant,
    yielded_at: Instant,
}

/// The call that should take a pool's next free turn.
#[derive(Clone, Copy)]
struct Waiting {
    id: u64,
    vruntime: Duration,
}

impl Scheduler {
    /// A scheduler with `turns` worker turns (at least one) and half as
    /// many long turns (at least one). With
    /// `engine`, a waiting call of a less-served tenant makes that engine's
    /// running plugins check in at once.
    pub fn new(turns: usize, engine: Option<EngineWeak>) -> Arc<Scheduler> {
        let turns = turns.max(1);
        let pool = |on_workers, free| Pool {
            on_workers,
            inner: Mutex::new(Inner {
                free,
                ..Inner::default()
            }),
        };
        Arc::new(Scheduler {
            workers: pool(true, turns),
            long: pool(false, (turns / 2).max(1)),
            engine,
        })
    }

    /// A call of `tenant`; it joins a queue when it first runs.
    pub(crate) fn register(self: &Arc<Self>, tenant: &str) -> Turn {
        Turn(Arc::new(TurnShared {
            scheduler: self.clone(),
            tenant: tenant.into(),
            at: AtomicU64::new(NOWHERE),
            long: AtomicBool::new(false),
            cpu_before: AtomicU64::new(0),
            crowded_before: AtomicBool::new(false),
        }))
    }

    fn pool(&self, long: bool) -> &Pool {
        if long {
            &self.long
        } else {
            &self.workers
        }
    }

    fn preempt(&self) {
        if let Some(engine) = self.engine.as_ref().and_then(EngineWeak::upgrade) {
            engine.increment_epoch();
        }
    }
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change is made whole under the lock, so the state stays
        // consistent through a panic elsewhere.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives back the call's turn (or leaves its queue) and forgets it;
    /// returns the CPU it had here and whether it was crowded.
    fn unregister(&self, id: u64) -> (Duration, bool) {
        let mut wake = Vec::new();
        let left = {
            let mut inner = self.lock();
            stop(&mut inner, id, Instant::now(), &mut wake);
            inner.calls.remove(&id).map(|ticket| {
                let share = inner.share(&ticket.tenant);
                share.registered -= 1;
                if share.registered == 0 {
                    inner.tenants.remove(&ticket.tenant);
                }
                (ticket.cpu, ticket.crowded)
            })
        };
        wake.into_iter().for_each(Waker::wake);
        left.unwrap_or_default()
    }
}

impl Inner {
    fn register(&mut self, tenant: &str, on_workers: bool) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let tenant = match self.tenants.get_key_value(tenant) {
            Some((name, _)) => name.clone(),
            None => {
                // Start level with the least-served tenant still running.
                let floor = self.tenants.values().map(|s| s.vruntime).min();
                let name: Arc<str> = tenant.into();
                let share = Share {
                    vruntime: floor.unwrap_or_default(),
                    registered: 0,
                    holding: 0,
                    queue: VecDeque::new(),
                };
                self.tenants.insert(name.clone(), share);
                name
            }
        };
        self.share(&tenant).registered += 1;
        let now = Instant::now();
        let ticket = Ticket {
            tenant,
            state: State::Idle,
            waker: None,
            keep: false,
            long: !on_workers,
            crowded: false,
            cpu: Duration::ZERO,
            running: false,
            accounted_at: now,
            slice_started: now,
            yielded_at: now,
        };
        self.calls.insert(id, ticket);
        id
    }

    fn share(&mut self, tenant: &str) -> &mut Share {
        self.tenants.get_mut(tenant).expect("a registered tenant")
    }

    fn ticket(&mut self, id: u64) -> &mut Ticket {
        self.calls.get_mut(&id).expect("a registered call")
    }

    /// Charges a running call's CPU since it was last charged.
    fn account(&mut self, id: u64, now: Instant) {
        let ticket = self.ticket(id);
        if ticket.state != State::Holding || !ticket.running {
            return;
        }
        let used = now.duration_since(ticket.accounted_at);
        ticket.accounted_at = now;
        ticket.cpu += used;
        ticket.long |= ticket.cpu >= LONG_AFTER;
        let tenant = ticket.tenant.clone();
        self.share(&tenant).vruntime += used;
    }

    fn release(&mut self, id: u64, now: Instant) {
        self.account(id, now);
        let ticket = self.ticket(id);
        debug_assert_eq!(ticket.state, State::Holding);
        ticket.state = State::Idle;
        ticket.keep = false;
        ticket.running = false;
        let tenant = ticket.tenant.clone();
        self.share(&tenant).holding -= 1;
        self.free += 1;
    }

    /// The waiting call that should run next: of the least-served tenant,
    /// the first in arrival order.
    fn next_waiting(&self) -> Option<Waiting> {
        let mut best: Option<(Waiting, &str)> = None;
        for (name, share) in &self.tenants {
            let Some(&id) = share.queue.front() else {
                continue;
            };
            let better = best
                .as_ref()
                .is_none_or(|(b, best_name)| (share.vruntime, &**name) < (b.vruntime, *best_name));
            if better {
                let vruntime = share.vruntime;
                best = Some((Waiting { id, vruntime }, name));
            }
        }
        best.map(|(w, _)| w)
    }

    /// Gives free turns to waiting calls; collects their wakers.
    fn dispatch(&mut self, now: Instant, wake: &mut Vec<Waker>) {
        while self.free > 0 {
            let Some(Waiting { id, .. }) = self.next_waiting() else {
                break;
            };
            let ticket = self.ticket(id);
            ticket.state = State::Holding;
            ticket.slice_started = now;
            ticket.yielded_at = now;
            wake.extend(ticket.waker.take());
            let tenant = ticket.tenant.clone();
            self.free -= 1;
            let share = self.share(&tenant);
            share.holding += 1;
            share.queue.pop_front();
            // Whoever of the tenant still waits now waits behind its own.
            let queued: Vec<u64> = share.queue.iter().copied().collect();
            for q in queued {
                self.ticket(q).crowded = true;
            }
        }
    }

    /// Whether a running call belongs to a tenant that has used more than
    /// `tenant`: then it should give way now, not at its next tick.
    fn outranks_a_runner(&self, tenant: &str) -> bool {
        let mine = self.tenants[tenant].vruntime;
        self.tenants
            .iter()
            .any(|(name, share)| share.holding > 0 && **name != *tenant && share.vruntime > mine)
    }
}

/// Gives back the call's turn, or takes it out of its queue.
fn stop(inner: &mut Inner, id: u64, now: Instant, wake: &mut Vec<Waker>) {
    let Some(ticket) = inner.calls.get_mut(&id) else {
        return;
    };
    match ticket.state {
        State::Holding => {
            inner.release(id, now);
            inner.dispatch(now, wake);
        }
        State::Waiting => {
            ticket.state = State::Idle;
            ticket.waker = None;
            let tenant = ticket.tenant.clone();
            inner.share(&tenant).queue.retain(|&q| q != id);
        }
        State::Idle => {}
    }
}

/// Where a call is registered: the pool and its id there, packed.
fn at(long: bool, id: u64) -> u64 {
    id << 1 | long as u64
}

/// Not registered anywhere.
const NOWHERE: u64 = u64::MAX;

/// A registered call's claim on CPU turns. Clones share the claim; the
/// last one dropped unregisters the call.
#[derive(Clone)]
pub struct Turn(Arc<TurnShared>);

struct TurnShared {
    scheduler: Arc<Scheduler>,
    tenant: Box<str>,
    /// Where the call is registered now ([`at`]), or [`NOWHERE`]. Only the
    /// thread running the call changes it.
    at: AtomicU64,
    /// The call has left the workers: it registers for long turns.
    long: AtomicBool,
    /// CPU (ns) had in pools the call has left.
    cpu_before: AtomicU64,
    /// Whether it was crowded in a pool it has left.
    crowded_before: AtomicBool,
}

impl Drop for TurnShared {
    fn drop(&mut self) {
        let at = *self.at.get_mut();
        if at != NOWHERE {
            self.scheduler.pool(at & 1 == 1).unregister(at >> 1);
        }
    }
}

impl Turn {
    /// The pool the call is registered in, and its id there.
    fn here(&self) -> Option<(&Pool, u64)> {
        let at = self.0.at.load(Ordering::Acquire);
        (at != NOWHERE).then(|| (self.0.scheduler.pool(at & 1 == 1), at >> 1))
    }

    /// Unregisters the call from the pool it is in, keeping what it had
    /// there.
    fn leave(&self) {
        let Some((pool, id)) = self.here() else {
            return;
        };
        let (cpu, crowded) = pool.unregister(id);
        self.0.at.store(NOWHERE, Ordering::Release);
        self.0
            .cpu_before
            .fetch_add(cpu.as_nanos() as u64, Ordering::Relaxed);
        self.0.crowded_before.fetch_or(crowded, Ordering::Relaxed);
    }

    /// From now on the call takes long turns.
    fn to_long(&self) {
        self.0.long.store(true, Ordering::Relaxed);
    }

    /// Runs `work` (the plugin's instantiation and call) until `deadline`,
    /// only while this call holds a turn: it waits for one first, gives it
    /// back whenever `work` waits on something else than the scheduler (a
    /// host call that blocks) and takes one again before going on, and
    /// gives it back when `work` ends or is dropped.
    ///
    /// When the call turns long on a multi-thread runtime, the worker hands
    /// its other tasks to another thread (`block_in_place`) and goes on
    /// with the rest of the call alone, with a long turn. Calls must
    /// come from a task of a multi-thread runtime or from its
    /// `Runtime::block_on`, or from a current-thread runtime.
    pub(crate) async fn run<F>(
        &self,
        deadline: tokio::time::Instant,
        work: F,
    ) -> Result<F::Output, Elapsed>
    where
        F: Future,
    {
        // However the call ends, its turn goes back and it leaves its
        // queue, under one lock.
        struct Leave<'a>(&'a Turn);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.leave();
            }
        }
        let _leave = Leave(self);
        let mut work = pin!(work);
        let handle = tokio::runtime::Handle::current();
        let movable = handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread;
        let mut step = |cx: &mut Context<'_>, leave_when_long: bool| {
            if self.poll_turn(cx).is_pending() {
                return Poll::Pending;
            }
            match work.as_mut().poll(cx) {
                Poll::Ready(output) => Poll::Ready(Some(output)),
                Poll::Pending if self.suspended() && leave_when_long => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        };
        let on_worker = std::future::poll_fn(|cx| step(cx, movable));
        match tokio::time::timeout_at(deadline, on_worker).await {
            Err(_) => return Err(Elapsed),
            Ok(Some(output)) => return Ok(output),
            Ok(None) => {
                self.leave();
                self.to_long();
            }
        }
        // Off the workers: this worker's other tasks go to a new one, and
        // this thread runs the rest of the call on its own.
        tokio::task::block_in_place(|| {
            let off_worker = std::future::poll_fn(|cx| {
                let polled = step(cx, false);
                if polled.is_pending() {
                    // At every tick, give the core to the operating system:
                    // a woken worker then need not wait out this thread's
                    // time slice.
                    std::thread::yield_now();
                }
                polled
            });
            // The timeout is made inside `block_on`, in the runtime's
            // context (its timers).
            let output = handle
                .block_on(async { tokio::time::timeout_at(deadline, off_worker).await })
                .map(|output| output.expect("runs to its end off the workers"))
                .map_err(|_| Elapsed);
            // Give the long turn back before this thread may become a
            // worker again.
            self.leave();
            output
        })
    }

    /// Ready once the call holds a turn; otherwise waits in its tenant's
    /// queue.
    fn poll_turn(&self, cx: &mut Context<'_>) -> Poll<()> {
        let long = self.0.long.load(Ordering::Relaxed);
        let pool = self.0.scheduler.pool(long);
        let mut wake = Vec::new();
        let mut preempt = false;
        let ready = {
            let mut inner = pool.lock();
            let now = Instant::now();
            let id = match self.here() {
                Some((_, id)) => id,
                None => {
                    let id = inner.register(&self.0.tenant, pool.on_workers);
                    self.0.at.store(at(long, id), Ordering::Release);
                    id
                }
            };
            let ticket = inner.ticket(id);
            match ticket.state {
                State::Holding => {
                    ticket.running = true;
                    ticket.accounted_at = now;
                    true
                }
                State::Waiting => {
                    ticket.waker = Some(cx.waker().clone());
                    false
                }
                State::Idle => {
                    ticket.state = State::Waiting;
                    ticket.waker = Some(cx.waker().clone());
                    let tenant = ticket.tenant.clone();
                    inner.share(&tenant).queue.push_back(id);
                    inner.dispatch(now, &mut wake);
                    let ticket = inner.ticket(id);
                    if ticket.state == State::Holding {
                        // Granted at once: our own waker need not fire.
                        ticket.waker = None;
                        ticket.running = true;
                        ticket.accounted_at = now;
                        wake.retain(|w| !w.will_wake(cx.waker()));
                        true
                    } else {
                        let share = &inner.tenants[&tenant];
                        if share.holding > 0 || share.queue.len() > 1 {
                            let queued: Vec<u64> = share.queue.iter().copied().collect();
                            for q in queued {
                                inner.ticket(q).crowded = true;
                            }
                        }
                        preempt = inner.outranks_a_runner(&tenant);
                        false
                    }
                }
            }
        };
        wake.into_iter().for_each(Waker::wake);
        if preempt {
            self.0.scheduler.preempt();
        }
        if ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// `work` returned pending: at a tick that kept the turn, nothing to
    /// do; otherwise the plugin waits in the host, and the turn goes to
    /// someone who can use it. Returns whether the call is long.
    fn suspended(&self) -> bool {
        let (pool, id) = self.here().expect("a call runs only while registered");
        let mut wake = Vec::new();
        let long = {
            let mut inner = pool.lock();
            let now = Instant::now();
            inner.account(id, now);
            let ticket = inner.ticket(id);
            ticket.running = false;
            let long = ticket.long;
            if ticket.state == State::Holding {
                if ticket.keep {
                    ticket.keep = false;
                } else {
                    inner.release(id, now);
                    inner.dispatch(now, &mut wake);
                }
            }
            long
        };
        wake.into_iter().for_each(Waker::wake);
        long
    }

    /// Called by the epoch callback of the call's store: gives the turn
    /// away when the call has run its slice and another call waits, or at
    /// once when a less-served tenant's call waits; yields the thread at
    /// every tick, and at once when the call has just turned long on the
    /// workers (so that it can leave them).
    pub(crate) fn at_tick(&self) -> Tick {
        let Some((pool, id)) = self.here() else {
            return Tick::Yield;
        };
        let mut wake = Vec::new();
        let tick = {
            let mut inner = pool.lock();
            let now = Instant::now();
            inner.account(id, now);
            let ticket = &inner.calls[&id];
            if ticket.state != State::Holding {
                return Tick::Yield;
            }
            // Ticks come a little late or early: half a tick short of a
            // slice counts as a whole one, and a tick is due half a tick
            // after the last yield (earlier calls come from a waiting call
            // advancing the epoch).
            let half_tick = EPOCH_TICK / 2;
            let sliced = now.duration_since(ticket.slice_started) + half_tick >= SLICE;
            let tick_due = now.duration_since(ticket.yielded_at) >= half_tick;
            let leaving = ticket.long && pool.on_workers;
            let tenant = ticket.tenant.clone();
            let mine = inner.tenants[&tenant].vruntime;
            let waiting = inner.next_waiting();
            let outranked =
                waiting.is_some_and(|w| w.vruntime < mine && inner.calls[&w.id].tenant != tenant);
            if waiting.is_some() && (sliced || outranked) {
                inner.release(id, now);
                inner.dispatch(now, &mut wake);
                Tick::Yield
            } else if tick_due || leaving {
                let ticket = inner.ticket(id);
                if sliced {
                    ticket.slice_started = now;
                }
                ticket.yielded_at = now;
                ticket.keep = true;
                Tick::Yield
            } else {
                Tick::Continue
            }
        };
        wake.into_iter().for_each(Waker::wake);
        tick
    }

    /// CPU time the call has had.
    pub fn cpu(&self) -> Duration {
        let before = Duration::from_nanos(self.0.cpu_before.load(Ordering::Relaxed));
        let here = self.here().map_or(Duration::ZERO, |(pool, id)| {
            let mut inner = pool.lock();
            inner.account(id, Instant::now());
            inner.calls[&id].cpu
        });
        before + here
    }

    /// Whether another call of the same tenant held or waited for a turn
    /// of the same kind while this one waited for one: then its waiting
    /// was (at least partly) its own tenant's doing.
    pub fn crowded(&self) -> bool {
        self.0.crowded_before.load(Ordering::Relaxed)
            || self
                .here()
                .is_some_and(|(pool, id)| pool.lock().calls[&id].crowded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(turn: &Turn) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        turn.poll_turn(&mut cx).is_ready()
    }

    fn holding(turn: &Turn) -> bool {
        let (pool, id) = turn.here().unwrap();
        let state = pool.lock().calls[&id].state;
        state == State::Holding
    }

    #[test]
    fn the_least_served_tenant_goes_first() {
        let scheduler = Scheduler::new(2, None);
        let hog: Vec<Turn> = (0..4).map(|_| scheduler.register("hog")).collect();
        assert!(poll(&hog[0]) && poll(&hog[1]));
        assert!(!poll(&hog[2]) && !poll(&hog[3]));
        let quiet = scheduler.register("quiet");
        assert!(!poll(&quiet), "every turn is taken");

        std::thread::sleep(Duration::from_millis(2));
        hog[0].leave();
        assert!(
            holding(&quiet),
            "the tenant that used no CPU goes before the hog's queue"
        );
        assert!(!holding(&hog[2]));
        quiet.leave();
        assert!(holding(&hog[2]), "then the hog's calls, in arrival order");
        assert!(!holding(&hog[3]));
    }

    #[test]
    fn a_call_behind_its_own_tenant_is_crowded_one_behind_others_is_not() {
        let scheduler = Scheduler::new(1, None);
        let hog = scheduler.register("hog");
        let sibling = scheduler.register("hog");
        let quiet = scheduler.register("quiet");
        assert!(poll(&hog));
        assert!(!poll(&quiet));
        assert!(!poll(&sibling));
        assert!(sibling.crowded(), "waited behind its own tenant's call");
        assert!(!quiet.crowded(), "waited behind another tenant only");
        hog.leave();
        assert!(holding(&quiet));
        assert!(!quiet.crowded());
    }

    #[test]
    fn calls_of_a_tenant_that_ended_do_not_crowd_a_later_one() {
        let scheduler = Scheduler::new(1, None);
        let first = scheduler.register("t");
        assert!(poll(&first));
        first.leave();
        drop(first);
        let second = scheduler.register("t");
        assert!(poll(&second));
        assert!(!second.crowded());
    }

    #[test]
    fn a_call_running_past_its_slice_gives_way_to_a_waiting_one() {
        let scheduler = Scheduler::new(1, None);
        let running = scheduler.register("a");
        let waiting = scheduler.register("a");
        assert!(poll(&running));
        assert!(!poll(&waiting));
        std::thread::sleep(SLICE);
        assert_eq!(running.at_tick(), Tick::Yield);
        assert!(holding(&waiting) && !holding(&running));
        assert!(running.cpu() >= SLICE, "the slice was charged");
    }

    #[test]
    fn a_long_call_leaves_the_worker_turn_for_a_long_turn() {
        let scheduler = Scheduler::new(1, None);
        let long = scheduler.register("hog");
        assert!(poll(&long));
        std::thread::sleep(LONG_AFTER);
        assert_eq!(long.at_tick(), Tick::Yield, "it yields to leave the worker");
        assert!(long.suspended(), "and knows it is long");
        long.leave();
        let short = scheduler.register("quiet");
        assert!(poll(&short), "the worker turn is free for a short call");
        long.to_long();
        assert!(poll(&long), "and the long call has a long turn of its own");
        assert!(long.cpu() >= LONG_AFTER, "what it ran on the worker counts");
        long.leave();
        drop(long);
        assert!(scheduler.long.lock().calls.is_empty());
    }

    #[test]
    fn a_call_that_blocks_in_the_host_gives_its_turn_away() {
        let scheduler = Scheduler::new(1, None);
        let blocked = scheduler.register("a");
        let other = scheduler.register("b");
        assert!(poll(&blocked));
        assert!(!poll(&other));
        assert!(!blocked.suspended());
        assert!(holding(&other));
        assert!(!poll(&blocked), "it waits for the turn to come back");
        other.leave();
        assert!(holding(&blocked));
    }

    #[test]
    fn dropping_every_handle_unregisters_the_call() {
        let scheduler = Scheduler::new(1, None);
        let a = scheduler.register("a");
        let waiting = scheduler.register("b");
        assert!(poll(&a));
        assert!(!poll(&waiting));
        drop(waiting);
        drop(a);
        let inner = scheduler.workers.lock();
        assert!(inner.calls.is_empty() && inner.tenants.is_empty());
        assert_eq!(inner.free, 1);
    }
}
