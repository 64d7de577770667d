//! What the calls of one chain attempt share.

use crate::engine::state::CallState;
use crate::engine::Runtime;
use crate::plugin::Compiled;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{error::Elapsed, Instant};
use wasmtime::{Engine, Store};

/// What the calls of one chain attempt share: one store, made at the
/// first call and ready again for each next (its call state, fuel and
/// deadline are the next call's own: see [`crate::engine::reset_store`]),
/// in which every call still instantiates its plugin afresh; and one
/// instance slot per plugin of the chain, taken together at the first call
/// and held until the attempt ends, since the store keeps every instance
/// made in it until then. Sharing the store saves each call making and
/// dropping one (its fiber stack, its registrations of compiled code);
/// dropped with the attempt, after the answer is known. A chain with more
/// plugins than the host has slots (`--max-instances`) takes them all and
/// starts a new store whenever the last one holds that many instances.
pub(crate) struct Attempt {
    /// The calls the attempt may make: the slots it asks for.
    calls: u32,
    // Declared before the slots, so that the slots are given back only
    // once the instances are gone.
    store: Option<Store<CallState>>,
    /// Instances made in `store`: never more than the slots held.
    instances: u32,
    slots: Option<OwnedSemaphorePermit>,
}

impl Attempt {
    /// An attempt at a chain of `calls` plugins.
    pub(crate) fn new(calls: usize) -> Attempt {
        Attempt {
            calls: u32::try_from(calls).unwrap_or(u32::MAX),
            store: None,
            instances: 0,
            slots: None,
        }
    }

    /// Takes the attempt's instance slots, one per plugin of its chain, all
    /// at once, if they are not taken yet; waits at most until `deadline`.
    pub(super) async fn take_slots(
        &mut self,
        runtime: &Runtime,
        deadline: Instant,
    ) -> Result<(), Elapsed> {
        if self.slots.is_none() {
            let slots = tokio::time::timeout_at(deadline, runtime.instance_slots(self.calls));
            self.slots = Some(slots.await?);
        }
        Ok(())
    }

    /// The attempt's store, ready for a call of `compiled` with `state` and
    /// `fuel`, with room for one more instance: made at the attempt's first
    /// call (again when the store holds as many instances as the attempt
    /// holds slots, or if the last call's plugin ran on another engine, as
    /// only tests do), reset for each next.
    pub(super) fn store_for(
        &mut self,
        compiled: &Compiled,
        state: CallState,
        fuel: u64,
    ) -> wasmtime::Result<&mut Store<CallState>> {
        let held = self.slots.as_ref().map_or(1, |slots| slots.num_permits());
        let full = self.instances as usize >= held;
        match &mut self.store {
            Some(store) if !full && Engine::same(store.engine(), compiled.pre.engine()) => {
                compiled.reset_store(store, state, fuel)?;
            }
            unset => {
                // The old store and its instances go before the new one is
                // made: the slots they held are this call's.
                *unset = None;
                self.instances = 0;
                *unset = Some(compiled.new_store(state, fuel)?);
            }
        }
        self.instances += 1;
        Ok(self.store.as_mut().expect("set just above"))
    }
}
