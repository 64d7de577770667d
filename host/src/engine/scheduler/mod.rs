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

mod turn;
pub use turn::Turn;
use turn::TurnShared;

#[cfg(test)]
mod tests;
