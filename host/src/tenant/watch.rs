//! Following the plugins folder, so a new build dropped in serves within a
//! second, with no restart and no failed request.
//!
//! File events are gathered per tenant and debounced: a reload starts once
//! the folder has been quiet for [`QUIET`], or at the latest [`MAX_DELAY`]
//! after the first event of a burst, so an editor's or a compiler's burst
//! of writes gives one reload. A file caught half-written fails validation
//! and changes nothing (the last good version keeps serving); the write's
//! last event brings another reload that picks up the whole file.

use super::files::{self, off_worker};
use super::is_tenant_name;
use super::registry::Tenants;
use notify::{EventKind, RecursiveMode, Watcher as _};
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
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
    /// Something happened in the plugins folder itself (a tenant folder
    /// came, went or was renamed), so the set of watched folders is
    /// brought up to date before the reload.
    folders: bool,
}

/// Watches the plugins folder for as long as it lives.
pub struct Watcher {
    _folders: Arc<Mutex<TenantFolders>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts following the plugins folder: the folder itself, to see
/// tenants come and go, and each tenant folder, to see its files change.
/// Nothing is watched recursively and no link is followed, so whatever a
/// tenant puts in its folder (sub-folders, links to large trees) costs at
/// most the one watch on its folder.
///
/// Lists the plugins folder and adds one watch per tenant folder before it
/// returns (so no change after it is missed): call it at start-up, not on
/// an async worker that must stay responsive. Later changes to the set of
/// watched folders happen off the async workers.
pub fn watch(registry: Arc<Tenants>) -> anyhow::Result<Watcher> {
    let dir = registry.dir().canonicalize()?;
    let pending = Arc::new(Mutex::new(Pending::default()));
    let events = Arc::new(AtomicU64::new(0));
    let wake = Arc::new(Notify::new());

    let (callback_pending, callback_events, callback_wake, root) =
        (pending.clone(), events.clone(), wake.clone(), dir.clone());
    let handler = move |event: notify::Result<notify::Event>| {
        let mut pending = callback_pending.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => return,
            // Lost events (a queue overflow, say): rescan everything.
            Ok(event) if event.need_rescan() || event.paths.is_empty() => {
                pending.all = true;
                pending.folders = true;
            }
            Ok(event) => {
                for path in &event.paths {
                    if path.parent() == Some(&root) || path == &root {
                        pending.folders = true;
                    }
                    match tenant_of(&root, path) {
                        Some(tenant) => {
                            pending.tenants.insert(tenant);
                        }
                        None => pending.all = true,
                    }
                }
            }
            // The watcher failed (out of watches, say): rescan everything.
            Err(_) => {
                pending.all = true;
                pending.folders = true;
            }
        }
        callback_events.fetch_add(1, Ordering::Relaxed);
        callback_wake.notify_one();
    };
    // Following links only matters to recursive watches, which are never
    // used here; off all the same.
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut watcher = notify::RecommendedWatcher::new(handler, config)?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let mut folders = TenantFolders {
        watcher,
        root: dir,
        watched: BTreeSet::new(),
    };
    folders.follow()?;
    let folders = Arc::new(Mutex::new(folders));

    let task_folders = folders.clone();
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
                tenants,
                folders,
            } = std::mem::take(&mut *pending.lock().unwrap_or_else(|e| e.into_inner()));
            // Watch a new tenant folder before loading it, so a change made
            // while it loads is not missed.
            if folders {
                let folders = task_folders.clone();
                let followed =
                    off_worker(move || folders.lock().unwrap_or_else(|e| e.into_inner()).follow())
                        .await;
                if let Err(error) = followed {
                    tracing::error!(%error, "cannot follow the tenant folders");
                }
            }
            // Reloads run on their own: the watcher goes on gathering
            // changes, and a tenant whose plugin takes long to load holds
            // up only its own next reload (one at a time per tenant).
            let registry = registry.clone();
            if all {
                tokio::spawn(async move {
                    if let Err(error) = registry.reload_all().await {
                        tracing::error!(%error, "reloading the plugins folder failed");
                    }
                });
            } else if !tenants.is_empty() {
                tracing::debug!(?tenants, "reloading after a change");
                tokio::spawn(async move { registry.reload_tenants(tenants).await });
            }
        }
    });
    Ok(Watcher {
        _folders: folders,
        task,
    })
}

/// The watches on tenant folders: one per real folder (not a link) with a
/// tenant's name, none below it.
struct TenantFolders {
    watcher: notify::RecommendedWatcher,
    root: PathBuf,
    watched: BTreeSet<String>,
}

impl TenantFolders {
    /// Brings the watches up to date with the tenant folders in the
    /// plugins folder. Every present folder's watch is added again: adding
    /// is idempotent, and notify drops a watch by itself when the folder
    /// is renamed or removed, even if one by the same name is back before
    /// this runs. Blocking.
    fn follow(&mut self) -> anyhow::Result<()> {
        let present: BTreeSet<String> = files::folders(&self.root)?
            .into_iter()
            .filter(|name| is_tenant_name(name))
            .collect();
        for gone in self.watched.difference(&present) {
            // Already dropped by notify when the folder went: not an error.
            let _ = self.watcher.unwatch(&self.root.join(gone));
        }
        self.watched.clear();
        for name in present {
            // The folder may have been replaced by a link since it was
            // listed (by whoever owns the plugins folder): never watch
            // through one. This only narrows that race; the plugins folder
            // itself is the operator's.
            let folder = self.root.join(&name);
            if !files::is_folder(&folder) {
                continue;
            }
            match self.watcher.watch(&folder, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(name);
                }
                Err(error) => {
                    tracing::error!(tenant = %name, %error, "cannot watch the tenant folder; changes to it are seen only on SIGHUP or a rescan");
                }
            }
        }
        Ok(())
    }
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
pub fn reload_on_sighup(registry: Arc<Tenants>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading every tenant");
            if let Err(error) = registry.reload_all().await {
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
