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
//!
//! One file a job: the mirror's files and how a change of the store
//! lands in them (`mirror.rs`); the first load, the watch, and reading
//! the whole store again (`follow.rs`). Here: the store and the mirror
//! together, and the writes a deploy on this host makes to both.

mod follow;
mod mirror;

pub use follow::{follow, load};

use crate::streams::engine::EngineError;
use crate::streams::shared_store::SharedStore;
use std::collections::BTreeMap;
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
