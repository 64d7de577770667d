//! The host: every tenant of one plugins folder, and who may call them.

use crate::auth::{self, AuthError, Credentials};
use crate::plugin::PluginLoader;
use crate::tenant::{is_tenant_name, Tenant};
use crate::tenant_files::{self, off_worker};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Every tenant found in the plugins folder.
pub struct Host {
    loader: PluginLoader,
    dir: PathBuf,
    /// Swapped whole on every reload: an event runs on the tenant it
    /// started with, old or new, never on a mix.
    tenants: ArcSwap<BTreeMap<String, Arc<Tenant>>>,
    /// One reload at a time, so two cannot interleave their swaps.
    reloading: tokio::sync::Mutex<()>,
}

impl Host {
    /// Loads every tenant folder under `dir`.
    pub async fn open(loader: PluginLoader, dir: &Path) -> anyhow::Result<Host> {
        let host = Host {
            loader,
            dir: dir.to_owned(),
            tenants: ArcSwap::default(),
            reloading: tokio::sync::Mutex::new(()),
        };
        host.reload_all().await?;
        Ok(host)
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
        let folders = off_worker(move || tenant_files::folders(&dir))
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
    /// gone is removed) and swaps the result in at once.
    pub async fn reload_tenants(&self, names: impl IntoIterator<Item = String>) {
        let names: std::collections::BTreeSet<String> =
            names.into_iter().filter(|n| is_tenant_name(n)).collect();
        let _one_at_a_time = self.reloading.lock().await;
        let mut tenants = BTreeMap::clone(&self.tenants.load());
        for name in names {
            let dir = self.dir.join(&name);
            let is_folder = {
                let dir = dir.clone();
                off_worker(move || tenant_files::is_folder(&dir)).await
            };
            if !is_folder {
                if tenants.remove(&name).is_some() {
                    tracing::info!(tenant = %name, "tenant folder removed; the tenant no longer serves");
                }
                continue;
            }
            let previous = tenants.get(&name).cloned();
            let tenant = Tenant::load(&self.loader, &name, &dir, previous.as_deref()).await;
            tenants.insert(name, Arc::new(tenant));
        }
        self.tenants.store(Arc::new(tenants));
    }

    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.load().get(name).cloned()
    }

    pub fn tenant_count(&self) -> usize {
        self.tenants.load().len()
    }

    /// Checks what a request presents against the tenant's keys.
    pub fn authorize(
        &self,
        tenant: &Tenant,
        credentials: &Credentials<'_>,
    ) -> Result<(), AuthError> {
        let tenants = self.tenants.load();
        auth::authorize(tenant, credentials, tenants.values().map(|t| t.as_ref()))
    }
}
