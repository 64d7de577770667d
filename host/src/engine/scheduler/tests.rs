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
