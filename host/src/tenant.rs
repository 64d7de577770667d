//! Tenants: a folder of plugins and an optional `tenant.toml`.
//!
//! ```text
//! plugins/                  the plugins folder (`--plugins-dir`)
//!   demo/                   a tenant: a plain identifier
//!     tenant.toml           optional settings
//!     10-email-deny-list.wasm
//!     20-add-to-group.wasm  run after 10-…: chains run in file-name order
//! ```

use crate::limits::{Limits, LimitsConfig, Quotas, QuotasConfig};
use crate::outbound::{Outbound, OutboundConfig};
use crate::plugin::{content_hash, Plugin, PluginLoader};
use crate::runtime::PluginConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// The name of a tenant's settings file inside its folder.
pub const TENANT_FILE: &str = "tenant.toml";

/// Whether `name` can name a tenant: 1 to 64 ASCII letters, digits, `-` or
/// `_`, starting with a letter or digit. Anything else (dots, slashes,
/// spaces) is refused, so a name can never reach outside the plugins folder.
pub fn is_tenant_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `tenant.toml`. Unknown keys are errors, so a typo does not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TenantFile {
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub quotas: QuotasConfig,
    /// Where plugins may send HTTP requests.
    #[serde(default)]
    pub outbound: OutboundConfig,
    /// Settings per plugin, keyed by file stem (`10-email-deny-list`).
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginFile>,
}

/// How requests for this tenant authenticate.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuthConfig {
    #[serde(default)]
    pub mode: AuthMode,
    /// SHA-256 hashes of the tenant's API keys, as `sha256:<hex>` (see
    /// `triggerfish hash-key`). Keys themselves are never stored.
    #[serde(default)]
    pub keys: Vec<String>,
    /// AWS access key pairs accepted on the Lambda-shaped route (SigV4).
    /// SigV4 needs the secret itself, so it is stored as given: keep
    /// tenant.toml readable by the host's user only.
    #[serde(default)]
    pub aws_credentials: Vec<AwsCredential>,
}

/// One AWS access key pair.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AwsCredential {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for AwsCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredential")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Requests need `Authorization: Bearer <key>` with one of the keys;
    /// with no keys configured every request is refused.
    #[default]
    Keys,
    /// No authentication: for local development only.
    None,
}

/// One plugin's settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginFile {
    /// Values the plugin reads through its `config` import.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
    /// Like `config`, read the same way, but never logged or listed.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Overrides of the tenant's per-call limits for this plugin.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Replaces the tenant's `[outbound]` for this plugin.
    #[serde(default)]
    pub outbound: OutboundConfig,
}

/// A config value: a string, number or boolean, or a list of them (handed
/// to the plugin joined with commas).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    Scalar(Scalar),
    List(Vec<Scalar>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::String(s) => f.write_str(s),
            Scalar::Integer(n) => write!(f, "{n}"),
            Scalar::Float(n) => write!(f, "{n}"),
            Scalar::Boolean(b) => write!(f, "{b}"),
        }
    }
}

impl ConfigValue {
    fn to_config_string(&self) -> String {
        match self {
            ConfigValue::Scalar(s) => s.to_string(),
            ConfigValue::List(items) => items
                .iter()
                .map(Scalar::to_string)
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

impl TenantFile {
    pub fn parse(text: &str) -> Result<TenantFile, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }
}

/// A plugin's settings, resolved.
#[derive(Debug, Default, Clone)]
pub struct PluginSettings {
    pub config: Arc<PluginConfig>,
    pub limits: Limits,
    pub outbound: Arc<Outbound>,
}

/// A plugin file (or `tenant.toml`) that could not be loaded, and why.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    /// The file stem, like a loaded plugin's name (or `tenant.toml`).
    pub plugin: String,
    pub error: String,
    /// Whether the last good version still serves in its place. A failure
    /// with nothing serving in its place stops the tenant's chains.
    pub serving_previous: bool,
    pub at: SystemTime,
}

/// A loaded tenant: its chain and its settings.
#[derive(Debug, Default)]
pub struct Tenant {
    pub name: String,
    pub auth: AuthConfig,
    /// The tenant's limits (chain budget, attempts, and the defaults of
    /// its plugins' per-call limits).
    pub limits: Limits,
    pub quotas: Quotas,
    /// Slots for invocations running at once; kept across reloads while
    /// the quota stays the same, so a reload does not reset the count.
    inflight: Inflight,
    /// Loaded plugins, in file-name order.
    pub plugins: Vec<Arc<Plugin>>,
    /// Files that failed to load. While one has no last good version
    /// serving in its place, the tenant's events fail with `no-handler`:
    /// a chain missing a step must not run.
    pub failures: Vec<LoadFailure>,
    plugin_settings: BTreeMap<String, PluginSettings>,
    default_settings: PluginSettings,
}

impl Tenant {
    /// Loads a tenant folder. Never fails as a whole: a file that cannot
    /// be loaded is listed in `failures` with its reason, and the version
    /// of it in `previous` (the tenant as it was) keeps serving, if any.
    /// Files whose bytes have not changed since `previous` are not loaded
    /// again.
    pub async fn load(
        loader: &PluginLoader,
        name: &str,
        dir: &Path,
        previous: Option<&Tenant>,
    ) -> Tenant {
        let mut tenant = Tenant {
            name: name.to_owned(),
            ..Tenant::default()
        };
        match read_tenant_file(dir) {
            Ok(file) => tenant.apply(file),
            Err(error) => {
                tracing::error!(tenant = name, %error, "tenant.toml refused");
                if let Some(previous) = previous {
                    tenant.keep_settings_of(previous);
                }
                tenant.failures.push(LoadFailure {
                    plugin: TENANT_FILE.to_owned(),
                    error,
                    serving_previous: previous.is_some(),
                    at: SystemTime::now(),
                });
            }
        }

        tenant.inflight = match previous {
            Some(p) if p.quotas.concurrency == tenant.quotas.concurrency => p.inflight.clone(),
            _ => Inflight::new(tenant.quotas.concurrency),
        };

        for (index, (stem, path)) in wasm_files(dir).into_iter().enumerate() {
            let before = previous.and_then(|p| p.plugins.iter().find(|plugin| plugin.name == stem));
            let read = if index >= tenant.quotas.plugins {
                Err(format!(
                    "over the tenant's quota of {} plugins ([quotas] plugins in tenant.toml)",
                    tenant.quotas.plugins
                ))
            } else {
                read_plugin_file(&path, tenant.quotas.wasm_bytes)
            };
            let loaded = match read {
                Ok(bytes) if before.is_some_and(|b| b.hash() == content_hash(&bytes)) => {
                    tenant.plugins.push(before.unwrap().clone());
                    continue;
                }
                Ok(bytes) => loader
                    .load(&stem, bytes, &tenant.settings_for(&stem).limits)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match loaded {
                Ok(plugin) => {
                    tracing::info!(
                        tenant = name,
                        plugin = %stem,
                        triggers = ?plugin.triggers().collect::<Vec<_>>(),
                        hash = %&plugin.hash()[..12],
                        origin = plugin.origin.as_str(),
                        "plugin loaded"
                    );
                    tenant.plugins.push(Arc::new(plugin));
                }
                Err(error) => {
                    tracing::error!(tenant = name, plugin = %stem, %error, serving_previous = before.is_some(), "plugin refused");
                    if let Some(before) = before {
                        tenant.plugins.push(before.clone());
                    }
                    tenant.failures.push(LoadFailure {
                        plugin: stem,
                        error,
                        serving_previous: before.is_some(),
                        at: SystemTime::now(),
                    });
                }
            }
        }
        for stem in tenant.plugin_settings.keys() {
            if !tenant.plugins.iter().any(|p| &p.name == stem)
                && !tenant.failures.iter().any(|f| &f.plugin == stem)
            {
                tracing::warn!(tenant = name, plugin = %stem, "tenant.toml has settings for a plugin that is not in the folder");
            }
        }
        tenant
    }

    /// Keeps the settings of the tenant as it was, when its new
    /// `tenant.toml` is refused.
    fn keep_settings_of(&mut self, previous: &Tenant) {
        self.auth = previous.auth.clone();
        self.limits = previous.limits.clone();
        self.quotas = previous.quotas.clone();
        self.plugin_settings = previous.plugin_settings.clone();
        self.default_settings = previous.default_settings.clone();
    }

    /// The last load error of the plugin with this file stem, if its
    /// current file was refused.
    pub fn failure_of(&self, plugin: &str) -> Option<&LoadFailure> {
        self.failures.iter().find(|f| f.plugin == plugin)
    }

    fn apply(&mut self, file: TenantFile) {
        self.limits = file.limits.over(&Limits::default());
        self.quotas = file.quotas.resolve();
        self.auth = file.auth;
        let outbound = file.outbound.over(&Outbound::default());
        self.default_settings = PluginSettings {
            config: Arc::default(),
            limits: self.limits.clone(),
            outbound: Arc::new(outbound.clone()),
        };
        for (stem, plugin) in file.plugins {
            let mut config: PluginConfig = plugin
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.to_config_string()))
                .collect();
            config.extend(plugin.secrets);
            self.plugin_settings.insert(
                stem,
                PluginSettings {
                    config: Arc::new(config),
                    limits: plugin.limits.over(&self.limits),
                    outbound: Arc::new(plugin.outbound.over(&outbound)),
                },
            );
        }
    }

    /// The settings of the plugin with this file stem (the tenant's
    /// defaults when `tenant.toml` names it not).
    pub fn settings_for(&self, plugin: &str) -> &PluginSettings {
        self.plugin_settings
            .get(plugin)
            .unwrap_or(&self.default_settings)
    }
}

/// Reads a plugin file: a regular file (never a link out of the folder)
/// of at most `limit` bytes.
fn read_plugin_file(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let cannot_read = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let metadata = std::fs::symlink_metadata(path).map_err(cannot_read)?;
    if !metadata.is_file() {
        return Err(
            "is a link or not a regular file: plugins must be files in the tenant folder"
                .to_owned(),
        );
    }
    let too_large = |size: u64| {
        format!("the file is {size} bytes, over the tenant's quota of {limit} bytes ([quotas] wasm-kib in tenant.toml)")
    };
    if metadata.len() > limit {
        return Err(too_large(metadata.len()));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .map_err(cannot_read)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

fn read_tenant_file(dir: &Path) -> Result<TenantFile, String> {
    let path = dir.join(TENANT_FILE);
    if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
        return Err(format!(
            "{TENANT_FILE} is a link or not a regular file: it must be a file in the tenant folder"
        ));
    }
    match std::fs::read_to_string(&path) {
        Ok(text) => TenantFile::parse(&text).map_err(|e| format!("{TENANT_FILE}: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TenantFile::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The `.wasm` entries of a tenant folder, by file stem, in file-name
/// order: regular files, and links (which are listed so that loading can
/// refuse them by name; they are never followed).
pub fn wasm_files(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, std::path::PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_type()
                .map(|t| t.is_file() || t.is_symlink())
                .unwrap_or(false)
        })
        .filter_map(|e| {
            let path = e.path();
            let is_wasm = path.extension().and_then(|x| x.to_str()) == Some("wasm");
            let stem = path.file_stem()?.to_str()?.to_owned();
            is_wasm.then_some((stem, path))
        })
        .collect();
    files.sort();
    files
}

/// A tenant's slots for invocations running at once.
#[derive(Debug, Clone)]
struct Inflight(Arc<tokio::sync::Semaphore>);

impl Inflight {
    fn new(slots: usize) -> Inflight {
        Inflight(Arc::new(tokio::sync::Semaphore::new(slots)))
    }
}

impl Default for Inflight {
    fn default() -> Self {
        Inflight::new(Quotas::default().concurrency)
    }
}

/// A running invocation's slot; given back when dropped.
pub struct InflightSlot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl Tenant {
    /// Takes a slot for an invocation, or none when the tenant already
    /// runs as many as its `[quotas] concurrency` allows.
    pub fn try_start(&self) -> Option<InflightSlot> {
        self.inflight
            .0
            .clone()
            .try_acquire_owned()
            .ok()
            .map(InflightSlot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_plain_identifiers() {
        for good in ["demo", "acme-1", "a_b", "X"] {
            assert!(is_tenant_name(good), "{good}");
        }
        for bad in [
            "",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "-x",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!is_tenant_name(bad), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let error = TenantFile::parse("[limits]\nfuell = 3\n").unwrap_err();
        assert!(error.contains("fuell"), "{error}");
        let error = TenantFile::parse("[auth]\nmode = \"open\"\n").unwrap_err();
        assert!(error.contains("open"), "{error}");
    }

    #[test]
    fn plugin_settings_inherit_tenant_limits() {
        let file = TenantFile::parse(
            "[limits]\nfuel = 10\ntimeout-ms = 100\n\
             [plugins.10-a.config]\ndomains = [\"a.test\", \"b.test\"]\n\
             [plugins.10-a.limits]\nmemory-mib = 2\n",
        )
        .unwrap();
        let mut tenant = Tenant::default();
        tenant.apply(file);
        let a = tenant.settings_for("10-a");
        assert_eq!(
            a.config.get("domains").map(String::as_str),
            Some("a.test,b.test")
        );
        assert_eq!(a.limits.fuel, 10);
        assert_eq!(a.limits.memory_bytes, 2 << 20);
        assert_eq!(tenant.settings_for("20-b").limits.fuel, 10);
    }
}
