//! Several hosts, one set of tenants (`serve --shared-plugins`): tenants'
//! plugins and `tenant.toml` files live in the shared store
//! (`streams::shared_store`, NATS JetStream), and each host follows it as
//! a single host follows its plugins folder.
//!
//! Each host keeps a mirror of the store on its own disk (the folder
//! `.triggerfish-shared` inside `--plugins-dir`, which it owns: it is
//! emptied at start) and loads tenants from there with the registry's
//! usual code, so everything a folder gives holds here too: compiling
//! off the request path, the last good version kept when a file does not
//! load, the compile cache by content hash (a plugin compiles once per
//! host), and each tenant swapped in whole.
//!
//! - At start ([`load`]), the host reads the whole store into its mirror
//!   before it loads any tenant, so it reports ready (`GET /healthz`) only
//!   once it serves what the others serve.
//! - Then ([`follow`]) it watches the bucket from the revision it read up to: each
//!   change is written into the mirror (a blob fetched only when the
//!   mirror does not hold those bytes already) and the changed tenants
//!   are reloaded.
//! - When the watch fails or ends (the server restarted, the network
//!   broke), or stays quiet while the bucket moved on, the host reads the
//!   whole store again, reloads what changed, and watches on. Meanwhile it
//!   serves what it had.
//!
//! A deploy ([`super::deploy`]) is checked on the host that got it as a
//! folder deploy is, then stored (the blob, then the bucket entry) and
//! written into that host's mirror, so it serves there when the request
//! is answered and on the others as soon as their watch brings it.

use super::files::off_worker;
use super::registry::Tenants;
use super::{is_tenant_name, TENANT_FILE, TENANT_FILE_MAX_BYTES};
use crate::encoding::sha256_hex;
use crate::streams::engine::EngineError;
use crate::streams::shared_store::{Change, FileRef, SharedStore};
use futures_util::{FutureExt, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The mirror's folder inside `--plugins-dir` (a name starting with a dot
/// is never a tenant of the folder).
pub const MIRROR_DIR: &str = ".triggerfish-shared";
/// How long a quiet watch goes before the host checks that the bucket
/// has not moved on without it.
pub const QUIET_CHECK: Duration = Duration::from_secs(5);
/// How long the host waits before reading the store again after a failure.
pub const RETRY: Duration = Duration::from_secs(1);

/// What the mirror holds: tenant, then file name, then SHA-256.
type Files = BTreeMap<String, BTreeMap<String, String>>;

/// The store and this host's mirror of it.
pub struct Shared {
    store: Arc<SharedStore>,
    dir: PathBuf,
    /// What the mirror's files hold, so a change this host wrote itself
    /// (a deploy it took) is not fetched again.
    files: Mutex<Files>,
}

impl Shared {
    /// The store, mirrored into `dir` (created if missing, emptied: the
    /// store is the source of truth). Blocking.
    pub fn new(store: Arc<SharedStore>, dir: &Path) -> std::io::Result<Shared> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        create_private_dir(dir)?;
        Ok(Shared {
            store,
            dir: dir.to_owned(),
            files: Mutex::default(),
        })
    }

    /// The mirror's folder: the registry's plugins folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    fn files(&self) -> std::sync::MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a file of the tenant (`tenant.toml`, `<name>.wasm`) that was
    /// checked already, then writes it into this host's mirror.
    pub(super) async fn publish(
        &self,
        tenant: &str,
        file: &str,
        bytes: Vec<u8>,
    ) -> Result<(), EngineError> {
        let stored = self.store.put_blob(&bytes).await?;
        self.store.set_file(tenant, file, &stored).await?;
        self.write(tenant, file, bytes, &stored.sha256)
            .await
            .map_err(|e| EngineError::Store(format!("stored, but not written here: {e}")))
    }

    /// Removes a file of the tenant from the store and this host's mirror;
    /// whether the store had it.
    pub(super) async fn unpublish(&self, tenant: &str, file: &str) -> Result<bool, EngineError> {
        let removed = self.store.remove_file(tenant, file).await?;
        self.remove(tenant, file)
            .await
            .map_err(|e| EngineError::Store(format!("removed, but not here: {e}")))?;
        Ok(removed)
    }

    /// Creates the tenant in the store and this host's mirror.
    pub(super) async fn create_tenant(&self, tenant: &str) -> Result<(), EngineError> {
        self.store.create_tenant(tenant).await?;
        self.ensure_tenant(tenant)
            .await
            .map_err(|e| EngineError::Store(format!("created, but not here: {e}")))
    }

    /// Removes the tenant from the store and this host's mirror; whether
    /// the store had it.
    pub(super) async fn remove_tenant(&self, tenant: &str) -> Result<bool, EngineError> {
        let removed = self.store.remove_tenant(tenant).await?;
        self.drop_tenant(tenant)
            .await
            .map_err(|e| EngineError::Store(format!("removed, but not here: {e}")))?;
        Ok(removed)
    }

    async fn write(
        &self,
        tenant: &str,
        file: &str,
        bytes: Vec<u8>,
        sha256: &str,
    ) -> std::io::Result<()> {
        let dir = self.dir.join(tenant);
        let name = file.to_owned();
        // Secrets live in tenant.toml: readable by the host's user only.
        let mode = if file == TENANT_FILE { 0o600 } else { 0o644 };
        off_worker(move || {
            create_private_dir(&dir)?;
            super::files::write_atomically(&dir, &name, &bytes, mode)
        })
        .await?;
        self.files()
            .entry(tenant.to_owned())
            .or_default()
            .insert(file.to_owned(), sha256.to_owned());
        Ok(())
    }

    async fn remove(&self, tenant: &str, file: &str) -> std::io::Result<()> {
        let path = self.dir.join(tenant).join(file);
        off_worker(move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await?;
        if let Some(files) = self.files().get_mut(tenant) {
            files.remove(file);
        }
        Ok(())
    }

    async fn ensure_tenant(&self, tenant: &str) -> std::io::Result<()> {
        let dir = self.dir.join(tenant);
        off_worker(move || create_private_dir(&dir)).await?;
        self.files().entry(tenant.to_owned()).or_default();
        Ok(())
    }

    async fn drop_tenant(&self, tenant: &str) -> std::io::Result<()> {
        let dir = self.dir.join(tenant);
        off_worker(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await?;
        self.files().remove(tenant);
        Ok(())
    }

    /// The most bytes a file of the tenant may have.
    fn max_bytes(tenants: &Tenants, tenant: &str, file: &str) -> u64 {
        if file == TENANT_FILE {
            TENANT_FILE_MAX_BYTES
        } else {
            tenants.operator().for_tenant(tenant).quotas.wasm_bytes
        }
    }

    /// Sets a file of the mirror to `to` (fetching the blob unless the
    /// mirror holds those bytes already), or removes it; whether anything
    /// changed.
    async fn apply_file(
        &self,
        tenants: &Tenants,
        tenant: &str,
        file: &str,
        to: Option<&FileRef>,
    ) -> Result<bool, String> {
        let held = self
            .files()
            .get(tenant)
            .and_then(|files| files.get(file).cloned());
        match to {
            Some(to) if held.as_deref() == Some(to.sha256.as_str()) => Ok(false),
            Some(to) => {
                let bytes = self
                    .store
                    .fetch(to, Shared::max_bytes(tenants, tenant, file))
                    .await
                    .map_err(|e| e.to_string())?;
                let sha256 = sha256_hex(&bytes);
                self.write(tenant, file, bytes, &sha256)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(true)
            }
            None if held.is_none() => Ok(false),
            None => {
                self.remove(tenant, file).await.map_err(|e| e.to_string())?;
                Ok(true)
            }
        }
    }

    /// Applies one change to the mirror; the tenant it touched, if it
    /// changed anything. A blob that cannot be read is logged and left:
    /// the file's last good version keeps serving until the next change
    /// or the next full read.
    async fn apply(&self, tenants: &Tenants, change: Change) -> Option<String> {
        match change {
            Change::Tenant { tenant, .. } if !is_tenant_name(&tenant) => None,
            Change::File { tenant, .. } if !is_tenant_name(&tenant) => None,
            // Names the deploy routes would refuse never reach the folder,
            // whoever wrote them into the store.
            Change::File { file, .. } if !is_file_name(&file) => {
                tracing::warn!(%file, "ignoring a file in the shared store that is not a plugin name");
                None
            }
            Change::Other => None,
            Change::Tenant {
                tenant,
                exists: true,
            } => {
                if self.files().contains_key(&tenant) {
                    return None;
                }
                match self.ensure_tenant(&tenant).await {
                    Ok(()) => Some(tenant),
                    Err(error) => {
                        tracing::error!(%tenant, %error, "cannot create the tenant's mirror folder");
                        None
                    }
                }
            }
            Change::Tenant {
                tenant,
                exists: false,
            } => match self.drop_tenant(&tenant).await {
                Ok(()) => Some(tenant),
                Err(error) => {
                    tracing::error!(%tenant, %error, "cannot remove the tenant's mirror folder");
                    None
                }
            },
            Change::File { tenant, file, to } => {
                // A file of a tenant not created (or removed meanwhile)
                // waits for its tenant.
                if !self.files().contains_key(&tenant) {
                    return None;
                }
                match self.apply_file(tenants, &tenant, &file, to.as_ref()).await {
                    Ok(true) => Some(tenant),
                    Ok(false) => None,
                    Err(error) => {
                        tracing::error!(%tenant, %file, %error, "cannot take a file from the shared store; the last good version keeps serving");
                        None
                    }
                }
            }
        }
    }

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

/// `tenant.toml`, or `<name>.wasm` with a name the deploy routes take.
fn is_file_name(file: &str) -> bool {
    file == TENANT_FILE
        || file
            .strip_suffix(".wasm")
            .is_some_and(|stem| super::files::plugin_stem(stem) == Ok(stem))
}

/// Creates a folder readable by the host's user only (the mirror holds
/// tenants' secrets), if it does not exist.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
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
