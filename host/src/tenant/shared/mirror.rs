//! The mirror's files: a tenant's folder and files written (privately:
//! `tenant.toml` holds secrets), removed, and set to what a change of the
//! shared store says, fetching a blob only when the mirror does not hold
//! those bytes already.

use super::{create_private_dir, Shared};
use crate::encoding::sha256_hex;
use crate::streams::shared_store::{Change, FileRef};
use crate::tenant::files::off_worker;
use crate::tenant::registry::Tenants;
use crate::tenant::{is_tenant_name, TENANT_FILE, TENANT_FILE_MAX_BYTES};

impl Shared {
    pub(super) async fn write(
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
            crate::tenant::files::write_atomically(&dir, &name, &bytes, mode)
        })
        .await?;
        self.files()
            .entry(tenant.to_owned())
            .or_default()
            .insert(file.to_owned(), sha256.to_owned());
        Ok(())
    }

    pub(super) async fn remove(&self, tenant: &str, file: &str) -> std::io::Result<()> {
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

    pub(super) async fn ensure_tenant(&self, tenant: &str) -> std::io::Result<()> {
        let dir = self.dir.join(tenant);
        off_worker(move || create_private_dir(&dir)).await?;
        self.files().entry(tenant.to_owned()).or_default();
        Ok(())
    }

    pub(super) async fn drop_tenant(&self, tenant: &str) -> std::io::Result<()> {
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
    pub(super) async fn apply(&self, tenants: &Tenants, change: Change) -> Option<String> {
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
}

/// `tenant.toml`, or `<name>.wasm` with a name the deploy routes take.
fn is_file_name(file: &str) -> bool {
    file == TENANT_FILE
        || file
            .strip_suffix(".wasm")
            .is_some_and(|stem| crate::tenant::files::plugin_stem(stem) == Ok(stem))
}
