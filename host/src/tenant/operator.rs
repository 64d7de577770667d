//! What the operator allows each tenant: `serve --operator-config FILE`,
//! a file the tenants cannot write.
//!
//! ```toml
//! [defaults.quotas]          # every tenant, unless named below
//! concurrency = 16
//! [defaults.limits]          # the ceiling of each limit
//! memory-mib = 128
//! [defaults.outbound]        # the hosts plugins may ever reach
//! allowed-hosts = []
//!
//! [tenants.acme.limits]      # one tenant: over the defaults
//! memory-mib = 200
//! [tenants.acme.outbound]
//! allowed-hosts = ["*.acme.test"]
//! ```
//!
//! A tenant gets the quotas as written, and the built-in default of each
//! limit unless its ceiling is lower. Its `tenant.toml` may lower every
//! quota, raise a limit up to its ceiling, and name outbound hosts within
//! these; anything above is a load error naming the key. With no file,
//! the built-in defaults are the ceilings and no outbound host may be
//! reached.

use crate::engine::outbound::{Outbound, OutboundConfig};
use crate::limits::{Limits, LimitsConfig, Quotas, QuotasConfig};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct OperatorFile {
    #[serde(default)]
    defaults: PolicyFile,
    #[serde(default)]
    tenants: BTreeMap<String, PolicyFile>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PolicyFile {
    #[serde(default)]
    quotas: QuotasConfig,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    outbound: OutboundConfig,
}

/// What the operator allows one tenant (by default: the built-in limits
/// and quotas, and no outbound host).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TenantPolicy {
    /// The tenant's quotas; `tenant.toml` may lower them.
    pub quotas: Quotas,
    /// The ceiling of each limit (a tenant's default is the built-in one,
    /// at most this).
    pub limits: Limits,
    /// The hosts the tenant's plugins may ever reach, and the longest
    /// outbound timeout.
    pub outbound: Outbound,
}

impl PolicyFile {
    fn over(&self, base: &TenantPolicy) -> TenantPolicy {
        TenantPolicy {
            quotas: self.quotas.over(&base.quotas),
            limits: self.limits.over(&base.limits),
            outbound: self.outbound.over(&base.outbound),
        }
    }
}

/// The operator's configuration, resolved per tenant.
#[derive(Debug, Default, Clone)]
pub struct OperatorConfig {
    defaults: TenantPolicy,
    tenants: BTreeMap<String, TenantPolicy>,
}

impl OperatorConfig {
    /// Reads and checks the file; `max_memory_bytes` is the most memory
    /// the engine's pool gives an instance (`serve --max-memory-mib`).
    pub fn load(path: &Path, max_memory_bytes: u64) -> anyhow::Result<OperatorConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        OperatorConfig::parse(&text, max_memory_bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str, max_memory_bytes: u64) -> Result<OperatorConfig, String> {
        let file: OperatorFile =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        let defaults = file.defaults.over(&TenantPolicy::default());
        let mut config = OperatorConfig {
            defaults,
            tenants: BTreeMap::new(),
        };
        for (name, policy) in &file.tenants {
            if !super::is_tenant_name(name) {
                return Err(format!("[tenants.{name}]: {name:?} is not a tenant name"));
            }
            config
                .tenants
                .insert(name.clone(), policy.over(&config.defaults));
        }
        for (name, policy) in std::iter::once(("defaults", &config.defaults))
            .chain(config.tenants.iter().map(|(n, p)| (n.as_str(), p)))
        {
            if policy.limits.memory_bytes > max_memory_bytes {
                return Err(format!(
                    "{name}: memory-mib {} is above the engine's --max-memory-mib {}",
                    policy.limits.memory_bytes >> 20,
                    max_memory_bytes >> 20
                ));
            }
        }
        Ok(config)
    }

    /// What the operator allows the tenant `name`.
    pub fn for_tenant(&self, name: &str) -> &TenantPolicy {
        self.tenants.get(name).unwrap_or(&self.defaults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_inherit_the_defaults_and_override_them() {
        let config = OperatorConfig::parse(
            "[defaults.quotas]\nconcurrency = 4\n\
             [defaults.outbound]\nallowed-hosts = [\"127.0.0.1\"]\n\
             [tenants.acme.limits]\nmemory-mib = 100\n",
            256 << 20,
        )
        .unwrap();
        let acme = config.for_tenant("acme");
        assert_eq!(acme.quotas.concurrency, 4);
        assert_eq!(acme.limits.memory_bytes, 100 << 20);
        assert!(acme.outbound.allows("127.0.0.1", None));
        assert_eq!(config.for_tenant("other").limits, Limits::default());
    }

    #[test]
    fn mistakes_are_named() {
        let error = OperatorConfig::parse("[defaults.limits]\nfuell = 1\n", 1 << 30).unwrap_err();
        assert!(error.contains("fuell"), "{error}");
        let error = OperatorConfig::parse("[tenants.acme.limits]\nmemory-mib = 512\n", 256 << 20)
            .unwrap_err();
        assert!(error.contains("--max-memory-mib 256"), "{error}");
        let error = OperatorConfig::parse("[tenants.\"../x\"]\n", 1 << 30).unwrap_err();
        assert!(error.contains("not a tenant name"), "{error}");
    }
}
