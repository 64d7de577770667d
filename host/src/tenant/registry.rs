//! The registry of tenants: every tenant of one plugins folder, each
//! reloaded on its own and swapped in whole, and who may call them.

use super::files::{self, off_worker};
use super::operator::OperatorConfig;
use super::{is_tenant_name, Tenant};
use crate::auth::{self, AuthError, Credentials};
use crate::plugin::PluginLoader;
use arc_swap::ArcSwap;
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Tenants loaded at once. Each load is mostly compiling (bounded per
/// plugin, on blocking threads or child processes); a few at a time keep
/// one tenant's slow plugin from holding up the others without starting
/// a compile per tenant at once.
pub const CONCURRENT_TENANT_LOADS: usize = 8;

/// Every tenant found in the plugins folder.
pub struct Tenants {
    loader: PluginLoader,
    /// What the operator allows each tenant.
    operator: OperatorConfig,
    dir: PathBuf,
    /// Each tenant is swapped in whole when its reload finishes: an event
    /// runs on the tenant it started with, old or new, never on a mix.
    tenants: ArcSwap<BTreeMap<String, Arc<Tenant>>>,
    /// One reload at a time per tenant, so two cannot interleave; other
    /// tenants reload meanwhile.
    reloading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Whether the first load of every tenant has finished.
    ready: AtomicBool,
    /// Loads of each tenant by result, for the metrics; a removed
    /// tenant's are dropped with it.
    reloads: Mutex<BTreeMap<String, ReloadCounts>>,
    /// One deploy at a time per tenant (see `deploy.rs`).
    deploying: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The shared store `dir` mirrors (`serve --shared-plugins`); none:
    /// the folder is the tenants' source.
    shared: Option<Arc<super::shared::Shared>>,
}

/// How a tenant's loads (the first included) ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReloadCounts {
    /// Every file of the tenant loaded.
    pub ok: u64,
    /// Some file (a plugin or `tenant.toml`) was refused.
    pub failed: u64,
}

impl Tenants {
    /// Loads every tenant folder under `dir`, with the built-in defaults
    /// as every tenant's ceilings and no outbound host allowed.
    pub async fn open(loader: PluginLoader, dir: &Path) -> anyhow::Result<Tenants> {
        Tenants::open_with(loader, OperatorConfig::default(), dir).await
    }

    /// Loads every tenant folder under `dir`, each within what `operator`
    /// allows it.
    pub async fn open_with(
        loader: PluginLoader,
        operator: OperatorConfig,
        dir: &Path,
    ) -> anyhow::Result<Tenants> {
        let tenants = Tenants::new(loader, operator, dir);
        tenants.load_all().await?;
        Ok(tenants)
    }

    /// A registry of `dir` with nothing loaded yet, so that a host can
    /// listen (and say it is not ready) while its tenants load: call
    /// [`Tenants::load_all`] next.
    pub fn new(loader: PluginLoader, operator: OperatorConfig, dir: &Path) -> Tenants {
        Tenants {
            loader,
            operator,
            dir: dir.to_owned(),
            tenants: ArcSwap::default(),
            reloading: Mutex::default(),
            ready: AtomicBool::new(false),
            reloads: Mutex::default(),
            deploying: Mutex::default(),
            shared: None,
        }
    }

    /// A registry of the shared store's tenants, loaded from the store's
    /// mirror (see `tenant::shared`: start it with `shared::serve`);
    /// deploys go to the store.
    pub fn with_shared(
        loader: PluginLoader,
        operator: OperatorConfig,
        shared: Arc<super::shared::Shared>,
    ) -> Tenants {
        Tenants {
            shared: Some(shared.clone()),
            ..Tenants::new(loader, operator, shared.dir())
        }
    }

    /// The shared store this registry follows, if any.
    pub fn shared(&self) -> Option<&Arc<super::shared::Shared>> {
        self.shared.as_ref()
    }

    /// The first load of every tenant; the registry is ready once it
    /// returns.
    pub async fn load_all(&self) -> anyhow::Result<()> {
        let loaded = self.reload_all().await;
        self.ready.store(true, Ordering::Release);
        loaded
    }

    /// Whether every tenant has been loaded once.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The plugins folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rescans the plugins folder: new tenant folders are loaded, removed
    /// ones stop serving, and every other tenant is reloaded (files whose
    /// bytes did not change are kept as they are).
    pub async fn reload_all(&self) -> anyhow::Result<()> {
        let names = self.tenant_folders().await?;
        let known: Vec<String> = self.tenants.load().keys().cloned().collect();
        self.reload_tenants(names.into_iter().chain(known)).await;
        Ok(())
    }

    /// The tenant folders in the plugins folder, by name (listed off the
    /// async workers).
    async fn tenant_folders(&self) -> anyhow::Result<Vec<String>> {
        let dir = self.dir.clone();
        let folders = off_worker(move || files::folders(&dir))
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot read the plugins folder {}: {e}", self.dir.display())
            })?;
        let mut names = Vec::new();
        // Links are not followed: a tenant is a real folder here.
        for name in folders {
            if is_tenant_name(&name) {
                names.push(name);
            } else if !name.starts_with('.') {
                tracing::warn!(folder = %name, "ignoring a folder whose name is not a plain identifier (letters, digits, - and _)");
            }
        }
        Ok(names)
    }

    /// Reloads these tenants from their folders (a tenant whose folder is
    /// gone is removed), several at once, each swapped in as soon as it is
    /// loaded: a tenant whose plugins are slow to load delays no other.
    pub async fn reload_tenants(&self, names: impl IntoIterator<Item = String>) {
        let names: BTreeSet<String> = names.into_iter().filter(|n| is_tenant_name(n)).collect();
        futures_util::stream::iter(names)
            .for_each_concurrent(CONCURRENT_TENANT_LOADS, |name| self.reload_one(name))
            .await;
    }

    async fn reload_one(&self, name: String) {
        let lock = {
            let mut reloading = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
            reloading.entry(name.clone()).or_default().clone()
        };
        let _one_at_a_time = lock.lock().await;
        let dir = self.dir.join(&name);
        let is_folder = {
            let dir = dir.clone();
            off_worker(move || files::is_folder(&dir)).await
        };
        if !is_folder {
            if self.tenant(&name).is_some() {
                self.tenants.rcu(|tenants| {
                    let mut tenants = BTreeMap::clone(tenants);
                    tenants.remove(&name);
                    tenants
                });
                tracing::info!(tenant = %name, "tenant folder removed; the tenant no longer serves");
            }
            self.reloads_lock().remove(&name);
            return;
        }
        let previous = self.tenant(&name);
        let policy = self.operator.for_tenant(&name);
        let tenant = Tenant::load(&self.loader, policy, &name, &dir, previous.as_deref()).await;
        {
            let mut reloads = self.reloads_lock();
            let counts = reloads.entry(name.clone()).or_default();
            if tenant.failures.is_empty() {
                counts.ok += 1;
            } else {
                counts.failed += 1;
            }
        }
        let tenant = Arc::new(tenant);
        self.tenants.rcu(|tenants| {
            let mut tenants = BTreeMap::clone(tenants);
            tenants.insert(name.clone(), tenant.clone());
            tenants
        });
    }

    fn reloads_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ReloadCounts>> {
        self.reloads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads of each tenant by result, since the host started.
    pub fn reload_counts(&self) -> BTreeMap<String, ReloadCounts> {
        self.reloads_lock().clone()
    }

    /// The loader every tenant's plugins go through.
    pub fn loader(&self) -> &PluginLoader {
        &self.loader
    }

    /// What the operator allows each tenant.
    pub fn operator(&self) -> &OperatorConfig {
        &self.operator
    }

    /// Every loaded tenant, as of now.
    pub fn all(&self) -> Arc<BTreeMap<String, Arc<Tenant>>> {
        self.tenants.load_full()
    }

    /// The engine the tenants' plugins run on.
    pub fn runtime(&self) -> &Arc<crate::engine::Runtime> {
        self.loader.runtime()
    }

    /// Waits for the tenant's turn to deploy: deploys to one tenant run
    /// one at a time (each holds this until its reload is done).
    pub(crate) async fn deploy_turn(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut deploying = self.deploying.lock().unwrap_or_else(|e| e.into_inner());
            deploying.retain(|_, lock| Arc::strong_count(lock) > 1);
            deploying.entry(name.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }

    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.load().get(name).cloned()
    }

    pub fn count(&self) -> usize {
        self.tenants.load().len()
    }

    /// The tenant named `name`, if what the request presents may use it.
    ///
    /// An unknown tenant is answered exactly as a known one whose keys
    /// the credentials do not match (401 without or with an unknown key,
    /// 403 with another tenant's), so tenant names cannot be discovered
    /// without credentials.
    pub fn authorize(
        &self,
        name: &str,
        credentials: &Credentials<'_>,
    ) -> Result<Arc<Tenant>, AuthError> {
        let tenants = self.tenants.load();
        let others = || tenants.values().map(|t| &t.auth);
        match tenants.get(name) {
            Some(tenant) => {
                auth::authorize(&tenant.auth, credentials, others())?;
                Ok(tenant.clone())
            }
            None => Err(auth::refuse_unknown_tenant(credentials, others())),
        }
    }
}
