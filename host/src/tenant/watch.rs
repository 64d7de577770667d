//! Following the plugins folder, so a new build dropped in serves within a
//! second, with no restart and no failed request.
//!
//! File events are gathered per tenant and debounced: a reload starts once
//! the folder has been quiet for [`QUIET`], or at the latest [`MAX_DELAY`]
//! after the first event of a burst, so an editor's or a compiler's burst
//! of writes gives one reload. A file caught half-written fails validation
//! and changes nothing (the last good version keeps serving); the write's
//! last event brings another reload that picks up the whole file.

use super::registry::Tenants;
use notify::{EventKind, RecursiveMode, Watcher as _};
use std::collections::BTreeSet;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long the folder must be quiet before a reload.
pub const QUIET: Duration = Duration::from_millis(100);
/// The longest a reload waits after the first event of a burst.
pub const MAX_DELAY: Duration = Duration::from_millis(500);

/// What changed since the last reload.
#[derive(Default)]
struct Pending {
    all: bool,
    tenants: BTreeSet<String>,
}

/// Watches the plugins folder for as long as it lives.
pub struct Watcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts following `host`'s plugins folder (recursively: tenants come and
/// go too).
pub fn watch(tenants: Arc<Tenants>) -> anyhow::Result<Watcher> {
    let dir = tenants.dir().canonicalize()?;
    let pending = Arc::new(Mutex::new(Pending::default()));
    let events = Arc::new(AtomicU64::new(0));
    let wake = Arc::new(Notify::new());

    let (callback_pending, callback_events, callback_wake, root) =
        (pending.clone(), events.clone(), wake.clone(), dir.clone());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let mut pending = callback_pending.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => return,
            Ok(event) => {
                for path in &event.paths {
                    match tenant_of(&root, path) {
                        Some(tenant) => {
                            pending.tenants.insert(tenant);
                        }
                        None => pending.all = true,
                    }
                }
            }
            // Lost events (a queue overflow, say): rescan everything.
            Err(_) => pending.all = true,
        }
        callback_events.fetch_add(1, Ordering::Relaxed);
        callback_wake.notify_one();
    })?;
    watcher.watch(&dir, RecursiveMode::Recursive)?;

    let task = tokio::spawn(async move {
        loop {
            wake.notified().await;
            let burst_started = Instant::now();
            // Wait for the folder to go quiet.
            loop {
                let seen = events.load(Ordering::Relaxed);
                let quiet_until = (Instant::now() + QUIET).min(burst_started + MAX_DELAY);
                tokio::time::sleep_until(quiet_until).await;
                if events.load(Ordering::Relaxed) == seen
                    || Instant::now() >= burst_started + MAX_DELAY
                {
                    break;
                }
            }
            let Pending {
                all,
                tenants: changed,
            } = std::mem::take(&mut *pending.lock().unwrap_or_else(|e| e.into_inner()));
            if all {
                if let Err(error) = tenants.reload_all().await {
                    tracing::error!(%error, "reloading the plugins folder failed");
                }
            } else if !changed.is_empty() {
                tracing::debug!(tenants = ?changed, "reloading after a change");
                tenants.reload_tenants(changed).await;
            }
        }
    });
    Ok(Watcher {
        _watcher: watcher,
        task,
    })
}

/// The tenant a changed path belongs to; none for the folder itself.
fn tenant_of(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    match relative.components().next()? {
        Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
        _ => None,
    }
}

/// Reloads everything on SIGHUP, for deployments that run with the watcher
/// off (and for anyone who wants to be sure).
#[cfg(unix)]
pub fn reload_on_sighup(tenants: Arc<Tenants>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading every tenant");
            if let Err(error) = tenants.reload_all().await {
                tracing::error!(%error, "reloading the plugins folder failed");
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_tenant() {
        let root = Path::new("/p");
        assert_eq!(
            tenant_of(root, Path::new("/p/demo/10-a.wasm")).as_deref(),
            Some("demo")
        );
        assert_eq!(
            tenant_of(root, Path::new("/p/demo")).as_deref(),
            Some("demo")
        );
        assert_eq!(tenant_of(root, Path::new("/p")), None);
        assert_eq!(tenant_of(root, Path::new("/elsewhere/x")), None);
    }
}
