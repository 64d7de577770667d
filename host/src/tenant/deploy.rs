//! Deploying: a tenant's plugins and `tenant.toml` replaced through the
//! API instead of a shell on the host.
//!
//! Every change is checked the way loading checks it before anything on
//! disk changes: a plugin goes through the host's own [`PluginLoader`]
//! (shape limits, the bounded compiler, linking, the typecheck against the
//! contract, a probe instance under the limits it will run with), a
//! `tenant.toml` is parsed strictly and resolved within the operator's
//! policy. Only then is the file written, atomically (a temporary name in
//! the same folder created with `O_EXCL`, synced, renamed over the old
//! one, the folder synced), and the tenant reloaded; the deploy returns
//! once the new version serves. Something refused changes nothing: the
//! last good version keeps serving.
//!
//! Deploys to one tenant run one at a time (each holds the tenant's turn
//! from its check to the end of its reload); other tenants deploy and
//! reload meanwhile.

use super::file::TenantFile;
use super::files::{self, off_worker, write_atomically};
use super::registry::Tenants;
use super::{LoadFailure, Settings, Tenant, TENANT_FILE};
use crate::auth::{self, rights, AuthError, Credentials};
use crate::plugin::{Origin, PluginError};
use crate::trigger::Trigger;
use std::sync::Arc;

pub use super::files::MAX_PLUGIN_NAME_BYTES;

/// Who asks for a deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deployer {
    /// A key of the tenant with the deploy right (`[auth] deploy-keys`),
    /// by its hash.
    TenantKey { hash: String },
    /// The operator (a key of `serve --admin-keys`): may deploy to any
    /// tenant, and may write a `tenant.toml` that drops every deploy key.
    Operator,
}

/// Why a deploy changed nothing (or, for [`DeployError::NotLive`], was
/// written but is not serving).
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{name:?} is not a plugin name: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("the tenant {0:?} does not exist")]
    UnknownTenant(String),
    #[error("not a valid plugin, nothing was changed: {0}")]
    InvalidPlugin(PluginError),
    #[error(
        "the tenant already has {limit} plugins, its quota ([quotas] plugins); \
         delete one first or replace one by its name"
    )]
    TooManyPlugins { limit: usize },
    #[error("the tenant has no plugin {0:?}")]
    UnknownPlugin(String),
    #[error("tenant.toml is not valid, nothing was changed: {0}")]
    InvalidConfig(String),
    #[error(
        "the new tenant.toml does not list the hash of this request's key in [auth] deploy-keys, \
         so it would lock this key out of deploying; keep it there (to rotate a key, deploy a \
         tenant.toml with both, then one without the old key using the new one)"
    )]
    WouldLockOut,
    #[error("cannot write to the tenant folder: {0}")]
    Io(std::io::Error),
    #[error("written, but the reload did not take it: {0}")]
    NotLive(String),
    #[error("the shared store failed: {0}")]
    Store(crate::streams::engine::EngineError),
    #[error(
        "creating or removing a tenant over the API needs `serve --shared-plugins`; \
         with a plugins folder, create or remove the tenant's folder"
    )]
    NotShared,
}

/// A plugin deployed and serving.
#[derive(Debug)]
pub struct DeployedPlugin {
    pub tenant: String,
    /// The file stem: its place in the chain and its key in `tenant.toml`.
    pub plugin: String,
    /// SHA-256 of the file, hex.
    pub hash: String,
    pub triggers: Vec<Trigger>,
    /// Whether a plugin by this name was replaced (else it is new).
    pub replaced: bool,
    pub origin: Origin,
    /// The tenant's other files that do not load (a deploy does not fix
    /// them; one with no last good version stops the tenant's chains).
    pub failures: Vec<LoadFailure>,
}

/// A `tenant.toml` deployed and serving.
#[derive(Debug)]
pub struct DeployedConfig {
    pub tenant: String,
    /// The tenant's plugin files that do not load under the new settings
    /// (their last good version keeps serving, if any).
    pub failures: Vec<LoadFailure>,
}

/// The plugin's file stem for a name given in a request
/// ([`files::plugin_stem`]), or why it is refused.
pub fn plugin_stem(name: &str) -> Result<String, DeployError> {
    files::plugin_stem(name)
        .map(str::to_owned)
        .map_err(|reason| DeployError::InvalidName {
            name: name.chars().take(MAX_PLUGIN_NAME_BYTES).collect(),
            reason,
        })
}

impl Tenants {
    /// The tenant named `name`, if `credentials` carry one of its keys with
    /// the deploy right; with the hash of that key. Refused like
    /// [`Tenants::authorize`] refuses (an unknown tenant as a known one
    /// whose keys these are not), and [`AuthError::NoDeployRight`] for a
    /// key of the tenant that may only send events.
    pub fn authorize_deploy(
        &self,
        name: &str,
        credentials: &Credentials<'_>,
    ) -> Result<(Arc<Tenant>, Deployer), AuthError> {
        let tenants = self.all();
        let others = || tenants.values().map(|t| &t.auth);
        match tenants.get(name) {
            Some(tenant) => {
                let hash = rights::authorize_deploy(&tenant.auth, credentials, others())?;
                Ok((tenant.clone(), Deployer::TenantKey { hash }))
            }
            None => Err(auth::refuse_unknown_tenant(credentials, others())),
        }
    }

    /// Installs or replaces the plugin `name` of `tenant` with `bytes`,
    /// once they load as the folder would load them, and returns when the
    /// new version serves. The caller has checked the size against the
    /// tenant's `[quotas] wasm-kib` (the loader is given the bytes whole).
    pub async fn deploy_plugin(
        &self,
        tenant: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<DeployedPlugin, DeployError> {
        let stem = plugin_stem(name)?;
        let _turn = self.deploy_turn(tenant).await;
        let current = self.current(tenant)?;
        let dir = self.dir().join(tenant);
        let present = {
            let dir = dir.clone();
            off_worker(move || files::wasm_files(&dir)).await
        };
        let replaced = present.iter().any(|(s, _)| *s == stem);
        if !replaced && present.len() >= current.quotas.plugins {
            return Err(DeployError::TooManyPlugins {
                limit: current.quotas.plugins,
            });
        }
        // Loaded as the reload will load it, under the limits it will run
        // with. Holding it keeps the compiled code in memory, so the reload
        // below shares it instead of compiling again.
        let limits = current.settings_for(&stem).limits.clone();
        let started = std::time::Instant::now();
        let checked = self
            .loader()
            .load(&stem, bytes.clone(), &limits)
            .await
            .map_err(DeployError::InvalidPlugin)?;
        let file_name = format!("{stem}.wasm");
        match self.shared() {
            // Stored for every host, and written into this one's mirror.
            Some(shared) => shared
                .publish(tenant, &file_name, bytes)
                .await
                .map_err(DeployError::Store)?,
            None => off_worker(move || write_atomically(&dir, &file_name, &bytes, 0o644))
                .await
                .map_err(DeployError::Io)?,
        }
        let checked_in = started.elapsed();
        let reloaded = self.reload_for_deploy(tenant).await?;
        tracing::info!(
            tenant,
            plugin = %stem,
            hash = %&checked.hash()[..12],
            replaced,
            check_ms = checked_in.as_millis() as u64,
            written_to_live_ms = (started.elapsed() - checked_in).as_millis() as u64,
            "plugin deployed"
        );
        let serving = reloaded
            .plugins
            .iter()
            .find(|p| p.name == stem)
            .filter(|p| p.hash() == checked.hash());
        match (serving, reloaded.failure_of(&stem)) {
            (Some(plugin), None) => Ok(DeployedPlugin {
                tenant: tenant.to_owned(),
                plugin: stem,
                hash: plugin.hash().to_owned(),
                triggers: plugin.triggers().collect(),
                replaced,
                origin: checked.origin,
                failures: reloaded.failures.clone(),
            }),
            (_, Some(failure)) => Err(DeployError::NotLive(failure.error.clone())),
            (None, None) => Err(DeployError::NotLive(
                "another change to the tenant folder replaced it meanwhile".to_owned(),
            )),
        }
    }

    /// Removes the plugin `name` of `tenant`, and returns once the tenant
    /// serves without it.
    pub async fn delete_plugin(&self, tenant: &str, name: &str) -> Result<(), DeployError> {
        let stem = plugin_stem(name)?;
        let _turn = self.deploy_turn(tenant).await;
        self.current(tenant)?;
        let dir = self.dir().join(tenant);
        let file_name = format!("{stem}.wasm");
        let removed = match self.shared() {
            Some(shared) => shared
                .unpublish(tenant, &file_name)
                .await
                .map_err(DeployError::Store)?,
            None => remove_plugin_file(dir, file_name)
                .await
                .map_err(DeployError::Io)?,
        };
        if !removed {
            return Err(DeployError::UnknownPlugin(stem));
        }
        tracing::info!(tenant, plugin = %stem, "plugin deleted");
        let reloaded = self.reload_for_deploy(tenant).await?;
        if reloaded.plugins.iter().any(|p| p.name == stem) {
            return Err(DeployError::NotLive(
                "another change to the tenant folder brought it back meanwhile".to_owned(),
            ));
        }
        Ok(())
    }

    /// The operator creates the tenant `tenant` in the shared store with
    /// its first `tenant.toml`, checked before anything is created (a
    /// refused file creates nothing), and returns once it serves; a tenant
    /// that exists gets the new file. Only with a shared store: with a
    /// plugins folder, a tenant is a folder the operator creates.
    pub async fn create_tenant(
        &self,
        tenant: &str,
        text: &[u8],
    ) -> Result<DeployedConfig, DeployError> {
        let shared = self.shared().ok_or(DeployError::NotShared)?;
        if !super::is_tenant_name(tenant) {
            return Err(DeployError::UnknownTenant(tenant.to_owned()));
        }
        self.check_config(tenant, text, &Deployer::Operator)?;
        {
            let _turn = self.deploy_turn(tenant).await;
            // A tenant with no tenant.toml has no keys: until the file
            // below is stored, it refuses every request.
            shared
                .create_tenant(tenant)
                .await
                .map_err(DeployError::Store)?;
            tracing::info!(tenant, "tenant created in the shared store");
            self.reload_for_deploy(tenant).await?;
        }
        self.deploy_config(tenant, text, &Deployer::Operator).await
    }

    /// `text` as a `tenant.toml` of `tenant` deployed by `by`: UTF-8,
    /// parsed strictly, keeping a deploying tenant key, within what the
    /// operator allows the tenant.
    fn check_config<'t>(
        &self,
        tenant: &str,
        text: &'t [u8],
        by: &Deployer,
    ) -> Result<&'t str, DeployError> {
        let text = std::str::from_utf8(text)
            .map_err(|_| DeployError::InvalidConfig("the file is not UTF-8".to_owned()))?;
        let file = TenantFile::parse(text).map_err(DeployError::InvalidConfig)?;
        if let Deployer::TenantKey { hash } = by {
            if !file.auth.may_deploy(hash) {
                return Err(DeployError::WouldLockOut);
            }
        }
        Settings::resolve(file, self.operator().for_tenant(tenant))
            .map_err(DeployError::InvalidConfig)?;
        Ok(text)
    }

    /// Removes the tenant `tenant` and all its files from the shared
    /// store, and returns once this host no longer serves it (the others
    /// follow as their watch brings the change).
    pub async fn remove_tenant(&self, tenant: &str) -> Result<(), DeployError> {
        let shared = self.shared().ok_or(DeployError::NotShared)?;
        let _turn = self.deploy_turn(tenant).await;
        if !shared
            .remove_tenant(tenant)
            .await
            .map_err(DeployError::Store)?
        {
            return Err(DeployError::UnknownTenant(tenant.to_owned()));
        }
        tracing::info!(tenant, "tenant removed from the shared store");
        self.reload_tenants([tenant.to_owned()]).await;
        Ok(())
    }

    /// Replaces the `tenant.toml` of `tenant` with `text`, once it parses
    /// strictly and resolves within what the operator allows the tenant,
    /// and returns once the new settings serve. A tenant key must keep
    /// itself in `[auth] deploy-keys` ([`DeployError::WouldLockOut`]).
    pub async fn deploy_config(
        &self,
        tenant: &str,
        text: &[u8],
        by: &Deployer,
    ) -> Result<DeployedConfig, DeployError> {
        let text = self.check_config(tenant, text, by)?;
        let _turn = self.deploy_turn(tenant).await;
        self.current(tenant)?;
        let dir = self.dir().join(tenant);
        let bytes = text.as_bytes().to_vec();
        match self.shared() {
            Some(shared) => shared
                .publish(tenant, TENANT_FILE, bytes)
                .await
                .map_err(DeployError::Store)?,
            // Secrets live in it: readable by the host's user only.
            None => off_worker(move || write_atomically(&dir, TENANT_FILE, &bytes, 0o600))
                .await
                .map_err(DeployError::Io)?,
        }
        tracing::info!(tenant, "tenant.toml deployed");
        let reloaded = self.reload_for_deploy(tenant).await?;
        if let Some(failure) = reloaded.failure_of(TENANT_FILE) {
            return Err(DeployError::NotLive(failure.error.clone()));
        }
        Ok(DeployedConfig {
            tenant: tenant.to_owned(),
            failures: reloaded.failures.clone(),
        })
    }

    /// The tenant as loaded now, if it still exists.
    fn current(&self, tenant: &str) -> Result<Arc<Tenant>, DeployError> {
        self.tenant(tenant)
            .ok_or_else(|| DeployError::UnknownTenant(tenant.to_owned()))
    }

    /// Reloads the tenant now (not waiting for the watcher) and returns it
    /// as it serves from now on.
    async fn reload_for_deploy(&self, tenant: &str) -> Result<Arc<Tenant>, DeployError> {
        self.reload_tenants([tenant.to_owned()]).await;
        self.current(tenant)
    }
}

/// Removes the plugin file `dir/file_name` of a plugins folder; whether
/// there was one.
async fn remove_plugin_file(dir: std::path::PathBuf, file_name: String) -> std::io::Result<bool> {
    off_worker(move || -> std::io::Result<bool> {
        let path = dir.join(&file_name);
        // A plugin is any non-folder entry by that name (a link or a
        // FIFO the folder refuses by name included); `symlink_metadata`
        // does not follow a link.
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if !meta.is_dir() => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        std::fs::remove_file(&path)?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(true)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_cannot_leave_the_folder() {
        assert_eq!(plugin_stem("10-deny").unwrap(), "10-deny");
        assert_eq!(plugin_stem("10-deny.wasm").unwrap(), "10-deny");
        assert_eq!(plugin_stem("20 allow é").unwrap(), "20 allow é");
        for bad in [
            "",
            ".wasm",
            "..",
            "../10-x",
            "a/b",
            "a\\b",
            ".hidden",
            "a\nb",
            "a\0b",
            &"x".repeat(201),
        ] {
            assert!(plugin_stem(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_atomic_write_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("tf-deploy-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_atomically(&dir, "10-a.wasm", b"one", 0o644).unwrap();
        write_atomically(&dir, "10-a.wasm", b"two", 0o644).unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["10-a.wasm"]);
        assert_eq!(std::fs::read(dir.join("10-a.wasm")).unwrap(), b"two");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
