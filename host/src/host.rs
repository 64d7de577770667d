//! The host: every tenant of one plugins folder, and who may call them.

use crate::plugin::content_hash;
use crate::runtime::Runtime;
use crate::tenant::{is_tenant_name, AuthMode, Tenant};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Every tenant found in the plugins folder.
pub struct Host {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    tenants: RwLock<Arc<BTreeMap<String, Arc<Tenant>>>>,
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
    pub async fn open(runtime: Arc<Runtime>, dir: &Path) -> anyhow::Result<Host> {
        let host = Host {
            runtime,
            dir: dir.to_owned(),
            tenants: RwLock::new(Arc::default()),
        };
        host.reload().await?;
        Ok(host)
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Loads all tenants again and swaps them in at once.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            anyhow::anyhow!("cannot read the plugins folder {}: {e}", self.dir.display())
        })?;
        let mut names = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_tenant_name(&name) {
                names.push(name);
            } else {
                tracing::warn!(folder = %name, "ignoring a folder whose name is not a plain identifier (letters, digits, - and _)");
            }
        }
        names.sort();
        let mut tenants = BTreeMap::new();
        for name in names {
            let tenant = Tenant::load(&self.runtime, &name, &self.dir.join(&name)).await;
            tenants.insert(name, Arc::new(tenant));
        }
        *self.tenants.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tenants);
        Ok(())
    }

    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn tenant_count(&self) -> usize {
        self.tenants.read().unwrap_or_else(|e| e.into_inner()).len()
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
        let tenants = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if tenants.values().any(|t| matches(t)) {
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
