//! A call's [`Turn`]: what it holds of the scheduler while it runs.

use super::*;

/// A registered call's claim on CPU turns. Clones share the claim; the
/// last one dropped unregisters the call.
#[derive(Clone)]
pub struct Turn(pub(super) Arc<TurnShared>);

pub(super) struct TurnShared {
    pub(super) scheduler: Arc<Scheduler>,
    pub(super) tenant: Box<str>,
    /// Where the call is registered now ([`at`]), or [`NOWHERE`]. Only the
    /// thread running the call changes it.
    pub(super) at: AtomicU64,
    /// The call has left the workers: it registers for long turns.
    pub(super) long: AtomicBool,
    /// CPU (ns) had in pools the call has left.
    pub(super) cpu_before: AtomicU64,
    /// Whether it was crowded in a pool it has left.
    pub(super) crowded_before: AtomicBool,
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
    pub(super) fn here(&self) -> Option<(&Pool, u64)> {
        let at = self.0.at.load(Ordering::Acquire);
        (at != NOWHERE).then(|| (self.0.scheduler.pool(at & 1 == 1), at >> 1))
    }

    /// Unregisters the call from the pool it is in, keeping what it had
    /// there.
    pub(super) fn leave(&self) {
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
    pub(super) fn to_long(&self) {
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
    pub(super) fn poll_turn(&self, cx: &mut Context<'_>) -> Poll<()> {
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
    pub(super) fn suspended(&self) -> bool {
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
