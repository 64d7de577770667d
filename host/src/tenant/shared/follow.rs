//! Keeping up with the shared store: the first load, then its watch, and
//! after a lost or quiet watch, the whole store read again.

use super::{Shared, QUIET_CHECK, RETRY};
use crate::streams::engine::EngineError;
use crate::streams::shared_store::{Change, FileRef};
use crate::tenant::registry::Tenants;
use futures_util::{FutureExt, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

impl Shared {
    /// Reads the whole store, brings the mirror to it (tenants and files
    /// the store no longer has are removed), and returns the revision it
    /// read up to with the tenants that changed.
    ///
    /// The bucket keeps one value per key, so a watch from the start
    /// replays each key's latest value, in revision order, and skips the
    /// revisions written over since: the read is complete only at a change
    /// with none pending after it (not at the last revision seen before
    /// the read, which a write made meanwhile may have replaced).
    async fn catch_up(&self, tenants: &Tenants) -> Result<(u64, BTreeSet<String>), EngineError> {
        let mut last = self.store.last_revision().await?;
        // Each key's latest value, as a watch from the start replays them.
        let mut wanted: BTreeMap<String, BTreeMap<String, Option<FileRef>>> = BTreeMap::new();
        let mut exists: BTreeSet<String> = BTreeSet::new();
        if last > 0 {
            let mut watch = self.store.watch_from(1).await?;
            let read = async {
                // A watch made while the server was coming back can stay
                // silent: a read that stalls fails, and is tried again.
                while let Some(revision) = tokio::time::timeout(QUIET_CHECK, watch.next())
                    .await
                    .map_err(|_| {
                        EngineError::Store(format!(
                            "the shared store's watch sent nothing for {QUIET_CHECK:?} while reading it"
                        ))
                    })?
                {
                    let revision = revision?;
                    let done = revision.pending == 0;
                    last = revision.revision;
                    match revision.change {
                        Change::Tenant { tenant, exists: e } => {
                            if e {
                                exists.insert(tenant);
                            } else {
                                exists.remove(&tenant);
                            }
                        }
                        Change::File { tenant, file, to } => {
                            wanted.entry(tenant).or_default().insert(file, to);
                        }
                        Change::Other => {}
                    }
                    if done {
                        return Ok(());
                    }
                }
                Err(EngineError::Store(
                    "the watch of the shared store ended while reading it".to_owned(),
                ))
            };
            tokio::time::timeout(Duration::from_secs(60), read)
                .await
                .map_err(|_| {
                    EngineError::Store("reading the shared store took over 60 s".to_owned())
                })??;
        }
        let mut changed = BTreeSet::new();
        let held: Vec<String> = self.files().keys().cloned().collect();
        for tenant in held {
            if !exists.contains(&tenant) {
                if let Some(t) = self
                    .apply(
                        tenants,
                        Change::Tenant {
                            tenant,
                            exists: false,
                        },
                    )
                    .await
                {
                    changed.insert(t);
                }
            }
        }
        for tenant in exists {
            if let Some(t) = self
                .apply(
                    tenants,
                    Change::Tenant {
                        tenant: tenant.clone(),
                        exists: true,
                    },
                )
                .await
            {
                changed.insert(t);
            }
            let wanted = wanted.remove(&tenant).unwrap_or_default();
            let held: Vec<String> = self
                .files()
                .get(&tenant)
                .map(|files| files.keys().cloned().collect())
                .unwrap_or_default();
            let gone: Vec<(String, Option<FileRef>)> = held
                .into_iter()
                .filter(|f| wanted.get(f).is_none_or(Option::is_none))
                .map(|f| (f, None))
                .collect();
            let changes: Vec<(String, Option<FileRef>)> = gone.into_iter().chain(wanted).collect();
            for (file, to) in changes {
                let change = Change::File {
                    tenant: tenant.clone(),
                    file,
                    to,
                };
                if let Some(t) = self.apply(tenants, change).await {
                    changed.insert(t);
                }
            }
        }
        Ok((last, changed))
    }
}

/// The first load from the shared store: reads it whole into the mirror
/// (retrying until the server answers), then loads every tenant (the
/// registry is ready then). Returns the revision read up to, to
/// [`follow`] from. `tenants` must have been made with
/// [`Tenants::with_shared`].
pub async fn load(tenants: &Tenants) -> anyhow::Result<u64> {
    let shared = tenants
        .shared()
        .ok_or_else(|| anyhow::anyhow!("this registry has no shared store"))?;
    let revision = loop {
        match shared.catch_up(tenants).await {
            Ok((revision, _)) => break revision,
            Err(error) => {
                tracing::warn!(%error, "cannot read the shared store yet; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    tenants.load_all().await?;
    tracing::info!(revision, "loaded the tenants of the shared store");
    Ok(revision)
}

/// Follows the shared store after `revision` for as long as the host
/// runs: each change into the mirror and the changed tenants reloaded;
/// after a lost watch, the whole store read again.
pub async fn follow(tenants: Arc<Tenants>, mut revision: u64) {
    let Some(shared) = tenants.shared().cloned() else {
        return;
    };
    loop {
        if let Err(error) = follow_watch(&shared, &tenants, &mut revision).await {
            tracing::warn!(%error, revision, "lost the shared store's changes; reading it again");
        }
        loop {
            tokio::time::sleep(RETRY).await;
            match shared.catch_up(&tenants).await {
                Ok((last, changed)) => {
                    revision = last;
                    if !changed.is_empty() {
                        tracing::info!(?changed, revision, "caught up with the shared store");
                        tenants.reload_tenants(changed).await;
                    }
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read the shared store yet; retrying");
                }
            }
        }
    }
}

/// Follows the bucket after `revision` until the watch fails, ends, or
/// stays quiet while the bucket moved on; reloads each batch of changed
/// tenants as soon as no further change is waiting.
async fn follow_watch(
    shared: &Shared,
    tenants: &Tenants,
    revision: &mut u64,
) -> Result<(), EngineError> {
    let mut watch = shared.store.watch_from(*revision + 1).await?;
    let mut changed = BTreeSet::new();
    loop {
        let next = match watch.next().now_or_never() {
            Some(next) => next,
            None => {
                if !changed.is_empty() {
                    tracing::debug!(?changed, "reloading after a change in the shared store");
                    tenants.reload_tenants(std::mem::take(&mut changed)).await;
                }
                match tokio::time::timeout(QUIET_CHECK, watch.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        if shared.store.last_revision().await? > *revision {
                            return Err(EngineError::Store("the watch missed changes".to_owned()));
                        }
                        continue;
                    }
                }
            }
        };
        let Some(next) = next else {
            return Err(EngineError::Store("the watch ended".to_owned()));
        };
        let next = next?;
        *revision = next.revision;
        if let Some(tenant) = shared.apply(tenants, next.change).await {
            changed.insert(tenant);
        }
    }
}
