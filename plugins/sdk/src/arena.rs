//! The call arena: a plugin's allocator, made for an instance that lives
//! for one call.
//!
//! The host gives every event a fresh instance and drops it when the call
//! returns, so memory a call frees is never wanted again by a later call.
//! The arena hands memory out by moving a pointer and takes nothing back,
//! except the most recent allocation (so a growing `String` or `Vec`
//! extends in place). That matters because lowering an event into a plugin
//! allocates once per string and per list, and the bindings free them all
//! again after the call: with wasi-libc's allocator, `malloc` and `free`
//! were about a tenth of a plugin call (BENCHMARKS.md, "Where one call's
//! time goes").
//!
//! The arena is [`ARENA_BYTES`] of the plugin's static data (zero pages:
//! pages a call never touches cost nothing, and no `memory.grow` is
//! needed for them). Past it, the system allocator serves every
//! allocation and reuses what is freed, so a plugin that churns through
//! memory wastes at most the arena, and the tenant's memory limit holds as
//! before.
//!
//! It is the SDK's `#[global_allocator]` when built for WebAssembly with
//! the `call-arena` feature (on by default). A plugin that brings an
//! allocator of its own turns it off with `default-features = false`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::mem::MaybeUninit;

/// Bytes of the arena: far more than a call on a user pool event allocates
/// (a ~1 KB event lowers into about 2 KB of strings and lists), and small
/// enough to leave a plugin's initial memory (its 1 MiB stack and its
/// data) well under a 2 MiB memory limit.
pub const ARENA_BYTES: usize = 256 << 10;

/// A bump allocator of `N` bytes in front of the system allocator (see the
/// module's documentation).
pub struct CallArena<const N: usize = ARENA_BYTES> {
    space: UnsafeCell<[MaybeUninit<u8>; N]>,
    state: UnsafeCell<State>,
}

// A `wasm32-wasip2` plugin has one thread. Native builds (a plugin's unit
// tests) never install the arena as the global allocator.
unsafe impl<const N: usize> Sync for CallArena<N> {}

#[derive(Clone, Copy)]
struct State {
    /// Offset where the next allocation may begin.
    next: usize,
    /// Offset of the most recent allocation, if it is still the last thing
    /// in the arena.
    last: Option<usize>,
}

impl<const N: usize> CallArena<N> {
    pub const fn new() -> Self {
        CallArena {
            space: UnsafeCell::new([MaybeUninit::uninit(); N]),
            state: UnsafeCell::new(State {
                next: 0,
                last: None,
            }),
        }
    }

    /// The arena's state. Sound to hold while no other borrow of it is
    /// live: one thread, and no method calls another while holding it.
    #[allow(clippy::mut_from_ref)]
    fn state(&self) -> &mut State {
        unsafe { &mut *self.state.get() }
    }

    fn start(&self) -> usize {
        self.space.get() as usize
    }

    /// `layout` from the arena, or `None` when it has no room left.
    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        let start = self.start();
        let state = self.state();
        let at = (start + state.next).checked_add(layout.align() - 1)? & !(layout.align() - 1);
        let after = at.checked_add(layout.size())?;
        if after > start + N {
            return None;
        }
        state.next = after - start;
        state.last = Some(at - start);
        Some(at as *mut u8)
    }

    /// Where `ptr` lies in the arena, if it came from it.
    fn offset(&self, ptr: *mut u8) -> Option<usize> {
        (ptr as usize)
            .checked_sub(self.start())
            .filter(|&at| at < N)
    }
}

impl<const N: usize> Default for CallArena<N> {
    fn default() -> Self {
        CallArena::new()
    }
}

unsafe impl<const N: usize> GlobalAlloc for CallArena<N> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            Some(ptr) => ptr,
            None => System.alloc(layout),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(at) = self.offset(ptr) else {
            return System.dealloc(ptr, layout);
        };
        // Only the most recent allocation is taken back; the rest goes with
        // the instance.
        let state = self.state();
        if state.last == Some(at) {
            state.next = at;
            state.last = None;
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(at) = self.offset(ptr) else {
            return System.realloc(ptr, layout, new_size);
        };
        // The most recent allocation grows or shrinks where it is.
        let state = self.state();
        if state.last == Some(at) && at.checked_add(new_size).is_some_and(|after| after <= N) {
            state.next = at + new_size;
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: `new_size` is non-zero (it exceeds the old size), and the
        // caller promises it does not overflow when rounded to the align.
        let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size());
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small enough to build on a test thread's stack.
    const TEST_BYTES: usize = 4096;
    type Arena = CallArena<TEST_BYTES>;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn allocations_are_aligned_and_do_not_overlap() {
        let arena = Arena::new();
        let mut spans = Vec::new();
        for (size, align) in [(3, 1), (8, 8), (1, 1), (16, 16), (5, 4), (100, 32)] {
            let ptr = unsafe { arena.alloc(layout(size, align)) } as usize;
            assert_eq!(ptr % align, 0, "{size} bytes aligned to {align}");
            assert!(arena.offset(ptr as *mut u8).is_some());
            spans.push((ptr, ptr + size));
        }
        for (i, a) in spans.iter().enumerate() {
            for b in &spans[i + 1..] {
                assert!(a.1 <= b.0 || b.1 <= a.0, "{a:?} and {b:?} overlap");
            }
        }
    }

    #[test]
    fn the_last_allocation_grows_in_place_and_an_older_one_moves_with_its_bytes() {
        let arena = Arena::new();
        unsafe {
            let first = arena.alloc(layout(4, 1));
            first.copy_from(b"abcd".as_ptr(), 4);
            let grown = arena.realloc(first, layout(4, 1), 64);
            assert_eq!(grown, first, "the most recent allocation extends in place");
            let _other = arena.alloc(layout(8, 8));
            let moved = arena.realloc(grown, layout(64, 1), 128);
            assert_ne!(moved, grown, "an older allocation cannot extend");
            assert_eq!(std::slice::from_raw_parts(moved, 4), b"abcd");
        }
    }

    #[test]
    fn freeing_the_last_allocation_gives_its_room_back() {
        let arena = Arena::new();
        unsafe {
            let a = arena.alloc(layout(32, 8));
            arena.dealloc(a, layout(32, 8));
            assert_eq!(arena.alloc(layout(32, 8)), a);
        }
    }

    #[test]
    fn past_the_arena_the_system_allocator_serves_and_reuses() {
        let arena = Arena::new();
        unsafe {
            let big = arena.alloc(layout(TEST_BYTES - 64, 8));
            assert!(arena.offset(big).is_some());
            // No room left: this comes from the system allocator, and
            // going back to it is a real free.
            let outside = arena.alloc(layout(4096, 8));
            assert!(!outside.is_null());
            assert!(arena.offset(outside).is_none());
            outside.write_bytes(7, 4096);
            let grown = arena.realloc(outside, layout(4096, 8), 8192);
            assert!(arena.offset(grown).is_none());
            assert_eq!(*grown.add(4095), 7);
            arena.dealloc(grown, layout(8192, 8));
            // An arena allocation too big to stay moves out, bytes intact.
            big.write_bytes(9, 16);
            let _pin = arena.alloc(layout(8, 8));
            let moved = arena.realloc(big, layout(TEST_BYTES - 64, 8), TEST_BYTES);
            assert!(arena.offset(moved).is_none());
            assert_eq!(*moved.add(15), 9);
            System.dealloc(moved, layout(TEST_BYTES, 8));
        }
    }
}
