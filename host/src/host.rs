//! The host: every tenant of one plugins folder, and who may call them.

use crate::plugin::{content_hash, PluginLoader};
use crate::runtime::Runtime;
use crate::tenant::{is_tenant_name, AuthMode, Tenant};
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

/// Why a request may not reach a tenant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this tenant requires `Authorization: Bearer <key>`")]
    MissingKey,
    #[error("the key is not valid")]
    UnknownKey,
    #[error("the key does not belong to this tenant")]
    WrongTenant,
    #[error("the tenant has no API keys configured, so every request is refused; add keys in tenant.toml, or set [auth] mode = \"none\" for local use")]
    NoKeys,
}

/// The form in which `tenant.toml` stores an API key: `sha256:<hex>`.
pub fn hash_key(key: &str) -> String {
    format!("sha256:{}", content_hash(key.as_bytes()))
}

/// Compares in time that depends only on the lengths, not on where the
/// inputs first differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

    pub fn runtime(&self) -> &Arc<Runtime> {
        self.loader.runtime()
    }

    /// The plugins folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rescans the plugins folder: new tenant folders are loaded, removed
    /// ones stop serving, and every other tenant is reloaded (files whose
    /// bytes did not change are kept as they are).
    pub async fn reload_all(&self) -> anyhow::Result<()> {
        let names = self.tenant_folders()?;
        let known: Vec<String> = self.tenants.load().keys().cloned().collect();
        self.reload_tenants(names.into_iter().chain(known)).await;
        Ok(())
    }

    /// The tenant folders in the plugins folder, by name.
    fn tenant_folders(&self) -> anyhow::Result<Vec<String>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            anyhow::anyhow!("cannot read the plugins folder {}: {e}", self.dir.display())
        })?;
        let mut names = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            // Links are not followed: a tenant is a real folder here.
            if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
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
            let is_folder = std::fs::symlink_metadata(&dir)
                .map(|m| m.is_dir())
                .unwrap_or(false);
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

    /// Checks a request's bearer key (the `Authorization` header's value,
    /// if any) against the tenant's keys.
    pub fn authorize(&self, tenant: &Tenant, authorization: Option<&str>) -> Result<(), AuthError> {
        if tenant.auth.mode == AuthMode::None {
            return Ok(());
        }
        if tenant.auth.keys.is_empty() {
            return Err(AuthError::NoKeys);
        }
        let key = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(AuthError::MissingKey)?;
        let hashed = hash_key(key);
        let matches = |t: &Tenant| {
            // Check every key so the time taken does not tell which matched.
            t.auth.keys.iter().fold(false, |found, k| {
                found | constant_time_eq(k.as_bytes(), hashed.as_bytes())
            })
        };
        if matches(tenant) {
            return Ok(());
        }
        if self.tenants.load().values().any(|t| matches(t)) {
            Err(AuthError::WrongTenant)
        } else {
            Err(AuthError::UnknownKey)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_to_sha256() {
        assert_eq!(
            hash_key("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
