//! Plugin files that failed to load, remembered by their content.
//!
//! A file that fails to compile, link or instantiate fails the same way
//! every time: loading it again only spends the host's CPU (a compile that
//! runs into its limit, a probe that spins until its timeout). The loader
//! remembers the last [`REMEMBERED_FAILURES`] failures by the SHA-256 of
//! the file, and refuses the same bytes at once with the same error. A
//! failure of the load-time probe depends on the limits it ran with, so it
//! is remembered for those limits only: the same bytes under other limits
//! are probed again.
//!
//! Failures that say nothing about the file (the compiler process could
//! not run, the host was too busy to finish a compile in time) are not
//! remembered. A remembered failure is forgotten when the host restarts or
//! when [`REMEMBERED_FAILURES`] newer ones push it out.

use crate::limits::Limits;
use crate::plugin::PluginError;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How many failures the loader remembers; the oldest is forgotten first.
pub const REMEMBERED_FAILURES: usize = 1_024;

/// The limits a load-time probe runs with: what a probe's outcome can
/// depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ProbeLimits {
    fuel: u64,
    memory_bytes: u64,
    table_elements: usize,
    log_bytes: u64,
    timeout: Duration,
}

impl ProbeLimits {
    pub(crate) fn of(limits: &Limits, timeout: Duration) -> ProbeLimits {
        ProbeLimits {
            fuel: limits.fuel,
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
            log_bytes: limits.log_bytes,
            timeout,
        }
    }
}

/// What a failure depends on, besides the file's bytes.
enum Scope {
    /// Nothing: the same bytes always fail so.
    Content,
    /// The limits of the probe.
    Limits,
    /// The host's state: not remembered.
    Host,
}

fn scope(error: &PluginError) -> Scope {
    match error {
        PluginError::Compile(_)
        | PluginError::Link(_)
        | PluginError::NoTrigger(_)
        | PluginError::Mismatch { .. } => Scope::Content,
        PluginError::CompileLimit(e) if e.is_about_the_plugin() => Scope::Content,
        PluginError::CompileLimit(_) => Scope::Host,
        PluginError::Instantiate(_) => Scope::Limits,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    hash: String,
    limits: Option<ProbeLimits>,
}

/// The last [`REMEMBERED_FAILURES`] load failures, by content hash.
#[derive(Default)]
pub(crate) struct Failures {
    inner: Mutex<FailuresInner>,
}

#[derive(Default)]
struct FailuresInner {
    errors: HashMap<Key, PluginError>,
    /// Keys from the oldest to the newest.
    order: VecDeque<Key>,
}

impl Failures {
    /// The failure remembered for these bytes (by `hash`) under these
    /// probe limits, if any.
    pub(crate) fn recall(&self, hash: &str, limits: ProbeLimits) -> Option<PluginError> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = Key {
            hash: hash.to_owned(),
            limits: None,
        };
        if let Some(error) = inner.errors.get(&key) {
            return Some(error.clone());
        }
        key.limits = Some(limits);
        inner.errors.get(&key).cloned()
    }

    /// Remembers that the bytes with `hash` failed so under these probe
    /// limits, unless the failure says nothing about them.
    pub(crate) fn remember(&self, hash: &str, limits: ProbeLimits, error: &PluginError) {
        let key = Key {
            hash: hash.to_owned(),
            limits: match scope(error) {
                Scope::Content => None,
                Scope::Limits => Some(limits),
                Scope::Host => return,
            },
        };
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.errors.insert(key.clone(), error.clone()).is_none() {
            inner.order.push_back(key);
        }
        while inner.order.len() > REMEMBERED_FAILURES {
            if let Some(oldest) = inner.order.pop_front() {
                inner.errors.remove(&oldest);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .errors
            .len()
    }
}

/// What a loader has done since it was made, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadCounts {
    /// Components compiled (not read from the compile cache or shared).
    pub compiled: u64,
    /// Load-time probes run.
    pub probed: u64,
    /// Loads refused at once because the same bytes had failed before.
    pub refused_as_remembered: u64,
    /// Failures remembered now.
    pub remembered: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) compiled: AtomicU64,
    pub(crate) probed: AtomicU64,
    pub(crate) refused_as_remembered: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, failures: &Failures) -> LoadCounts {
        LoadCounts {
            compiled: self.compiled.load(Ordering::Relaxed),
            probed: self.probed.load(Ordering::Relaxed),
            refused_as_remembered: self.refused_as_remembered.load(Ordering::Relaxed),
            remembered: failures.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::compile::CompileError;

    fn limits(fuel: u64) -> ProbeLimits {
        let limits = Limits {
            fuel,
            ..Limits::default()
        };
        ProbeLimits::of(&limits, limits.timeout)
    }

    #[test]
    fn content_failures_hold_under_any_limits() {
        let failures = Failures::default();
        let error = PluginError::Link("no such import".into());
        failures.remember("aa", limits(1), &error);
        assert_eq!(failures.recall("aa", limits(2)), Some(error));
        assert_eq!(failures.recall("bb", limits(1)), None);
    }

    #[test]
    fn probe_failures_hold_for_their_limits_only() {
        let failures = Failures::default();
        let error = PluginError::Instantiate("out of memory".into());
        failures.remember("aa", limits(1), &error);
        assert_eq!(failures.recall("aa", limits(1)), Some(error));
        assert_eq!(failures.recall("aa", limits(2)), None);
    }

    #[test]
    fn host_faults_are_not_remembered() {
        let failures = Failures::default();
        let error = PluginError::CompileLimit(CompileError::Worker("cannot run".into()));
        failures.remember("aa", limits(1), &error);
        assert_eq!(failures.recall("aa", limits(1)), None);
    }

    #[test]
    fn the_oldest_failure_is_forgotten_first() {
        let failures = Failures::default();
        let error = PluginError::Compile("bad".into());
        for n in 0..=REMEMBERED_FAILURES {
            failures.remember(&format!("{n}"), limits(1), &error);
        }
        assert_eq!(failures.len(), REMEMBERED_FAILURES);
        assert_eq!(failures.recall("0", limits(1)), None);
        assert!(failures.recall("1", limits(1)).is_some());
    }
}
