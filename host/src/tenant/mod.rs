//! Tenants: a folder of plugins and an optional `tenant.toml`.
//!
//! ```text
//! plugins/                  the plugins folder (`--plugins-dir`)
//!   demo/                   a tenant: a plain identifier
//!     tenant.toml           optional settings
//!     10-email-deny-list.wasm
//!     20-add-to-group.wasm  run after 10-…: chains run in file-name order
//! ```

pub mod deploy;
pub mod file;
pub mod files;
pub mod operator;
pub mod registry;
pub mod shared;
pub mod watch;

use crate::auth::AuthConfig;
use crate::encoding::sha256_hex;
use crate::engine::outbound::Outbound;
use crate::engine::state::PluginConfig;
use crate::limits::{Limits, Quotas};
use crate::plugin::{Plugin, PluginLoader};
use crate::streams::mapping::EventSource;
use file::TenantFile;
use files::{off_worker, read_folder};
use operator::TenantPolicy;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// The name of a tenant's settings file inside its folder.
pub const TENANT_FILE: &str = "tenant.toml";
/// The largest `tenant.toml` read (1 MiB); a larger one is refused.
pub const TENANT_FILE_MAX_BYTES: u64 = 1 << 20;

/// Whether `name` can name a tenant: 1 to 64 ASCII letters, digits, `-` or
/// `_`, starting with a letter or digit. Anything else (dots, slashes,
/// spaces) is refused, so a name can never reach outside the plugins folder.
pub fn is_tenant_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A plugin's settings, resolved.
#[derive(Debug, Default, Clone)]
pub struct PluginSettings {
    pub config: Arc<PluginConfig>,
    pub limits: Limits,
    pub outbound: Arc<Outbound>,
}

/// A tenant's settings: its `tenant.toml`, resolved within the operator's
/// policy.
pub(super) struct Settings {
    auth: AuthConfig,
    limits: Limits,
    quotas: Quotas,
    plugin_settings: BTreeMap<String, PluginSettings>,
    default_settings: PluginSettings,
    event_sources: Vec<EventSource>,
    cognito_streams: Option<crate::streams::cognito_streams::CognitoStreams>,
}

impl Settings {
    /// The settings `file` asks for, or the first key that asks for more
    /// than `policy` allows.
    pub(super) fn resolve(file: TenantFile, policy: &TenantPolicy) -> Result<Settings, String> {
        file.auth.check()?;
        // The built-in defaults, unless the operator's ceiling is lower.
        let defaults = Limits::default().capped_at(&policy.limits);
        let limits = file.limits.within(&defaults, &policy.limits, "limits")?;
        let quotas = file.quotas.within(&policy.quotas)?;
        // Plugins reach nothing unless tenant.toml names hosts, and it may
        // name only hosts the operator allows.
        let no_hosts = Outbound {
            allowed_hosts: Vec::new(),
            ..policy.outbound.clone()
        };
        let outbound = file
            .outbound
            .within(&no_hosts, &policy.outbound, "outbound")?;
        let event_sources = crate::streams::mapping::resolve_all(&file.event_sources)?;
        let cognito_streams = file
            .cognito_streams
            .as_ref()
            .map(|c| c.resolve())
            .transpose()?;
        let mut plugin_settings = BTreeMap::new();
        for (stem, plugin) in file.plugins {
            let table = |part: &str| format!("plugins.{stem}.{part}");
            let mut config: PluginConfig = plugin
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.to_config_string()))
                .collect();
            config.extend(plugin.secrets);
            let settings = PluginSettings {
                config: Arc::new(config),
                limits: plugin
                    .limits
                    .within(&limits, &policy.limits, &table("limits"))?,
                outbound: Arc::new(plugin.outbound.within(
                    &outbound,
                    &policy.outbound,
                    &table("outbound"),
                )?),
            };
            plugin_settings.insert(stem, settings);
        }
        Ok(Settings {
            auth: file.auth,
            default_settings: PluginSettings {
                config: Arc::default(),
                limits: limits.clone(),
                outbound: Arc::new(outbound),
            },
            limits,
            quotas,
            plugin_settings,
            event_sources,
            cognito_streams,
        })
    }
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
    /// Event source mappings (`[[event-sources]]`), run by the stream
    /// consumers.
    pub event_sources: Vec<EventSource>,
    /// `[cognito-streams]`: where applied syncs are published.
    pub cognito_streams: Option<crate::streams::cognito_streams::CognitoStreams>,
}

impl Tenant {
    /// Loads a tenant folder. Never fails as a whole: a file that cannot
    /// be loaded is listed in `failures` with its reason, and the version
    /// of it in `previous` (the tenant as it was) keeps serving, if any.
    /// Files whose bytes have not changed since `previous` are not loaded
    /// again.
    ///
    /// `policy` is what the operator allows this tenant: `tenant.toml` is
    /// refused whole if it asks for more.
    pub async fn load(
        loader: &PluginLoader,
        policy: &TenantPolicy,
        name: &str,
        dir: &Path,
        previous: Option<&Tenant>,
    ) -> Tenant {
        let mut tenant = Tenant {
            name: name.to_owned(),
            ..Tenant::default()
        };
        // Everything from the folder at once, off the async workers: a
        // hostile folder can slow a blocking thread, never the host.
        let folder = {
            let dir = dir.to_owned();
            let policy = policy.clone();
            let fallback = previous.map(|p| p.quotas.clone());
            off_worker(move || read_folder(&dir, &policy, fallback)).await
        };
        match folder.settings {
            Ok(settings) => tenant.set(settings),
            Err(error) => {
                tracing::error!(tenant = name, %error, "tenant.toml refused");
                match previous {
                    Some(previous) => tenant.keep_settings_of(previous),
                    None => tenant.set(
                        Settings::resolve(TenantFile::default(), policy)
                            .expect("the defaults are within the policy"),
                    ),
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

        for (stem, read) in folder.plugins {
            let before = previous.and_then(|p| p.plugins.iter().find(|plugin| plugin.name == stem));
            let loaded = match read {
                Ok(bytes) if before.is_some_and(|b| b.hash() == sha256_hex(&bytes)) => {
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
        self.event_sources = previous.event_sources.clone();
        self.cognito_streams = previous.cognito_streams.clone();
    }

    /// The last load error of the plugin with this file stem, if its
    /// current file was refused.
    pub fn failure_of(&self, plugin: &str) -> Option<&LoadFailure> {
        self.failures.iter().find(|f| f.plugin == plugin)
    }

    fn set(&mut self, settings: Settings) {
        self.auth = settings.auth;
        self.limits = settings.limits;
        self.quotas = settings.quotas;
        self.plugin_settings = settings.plugin_settings;
        self.default_settings = settings.default_settings;
        self.event_sources = settings.event_sources;
        self.cognito_streams = settings.cognito_streams;
    }

    /// The settings of the plugin with this file stem (the tenant's
    /// defaults when `tenant.toml` names it not).
    pub fn settings_for(&self, plugin: &str) -> &PluginSettings {
        self.plugin_settings
            .get(plugin)
            .unwrap_or(&self.default_settings)
    }
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
    /// Invocations of this tenant running now.
    pub fn in_flight(&self) -> usize {
        self.quotas
            .concurrency
            .saturating_sub(self.inflight.0.available_permits())
    }

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
    fn settings_above_the_policy_are_refused_by_key() {
        let policy = TenantPolicy::default();
        let refused = |text: &str| {
            Settings::resolve(TenantFile::parse(text).unwrap(), &policy)
                .err()
                .unwrap_or_default()
        };
        assert!(refused("[quotas]\nconcurrency = 100000\n").contains("[quotas] concurrency"));
        assert!(refused("[limits]\ntimeout-ms = 60000\n").contains("[limits] timeout-ms"));
        assert!(refused("[plugins.10-a.limits]\nfuel = 99999999999\n")
            .contains("[plugins.10-a.limits] fuel"));
        assert!(refused("[outbound]\nallowed-hosts = [\"evil.test\"]\n").contains("\"evil.test\""));
        assert!(
            refused("[plugins.10-a.outbound]\nallowed-hosts = [\"*\"]\n")
                .contains("plugins.10-a.outbound")
        );
        assert!(refused("[quotas]\nstream-records-per-second = 100000\n")
            .contains("[quotas] stream-records-per-second = 100000 is above"));
        assert!(
            refused("[[event-sources]]\nstream = \"s\"\nkind = \"sqs\"\nbatch-size = 50\n")
                .contains("batch-size = 50")
        );
        assert!(refused("[limits]\nfuel = 5\n[quotas]\nconcurrency = 2\n").is_empty());
    }

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
    fn plugin_settings_inherit_tenant_limits() {
        let file = TenantFile::parse(
            "[limits]\nfuel = 10\ntimeout-ms = 100\n\
             [plugins.10-a.config]\ndomains = [\"a.test\", \"b.test\"]\n\
             [plugins.10-a.limits]\nmemory-mib = 2\n",
        )
        .unwrap();
        let mut tenant = Tenant::default();
        tenant.set(Settings::resolve(file, &TenantPolicy::default()).unwrap());
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
