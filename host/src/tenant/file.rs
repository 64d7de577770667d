//! `tenant.toml`, as written: strictly parsed, so a typo is an error that
//! names the key.

use crate::auth::AuthConfig;
use crate::engine::outbound::OutboundConfig;
use crate::limits::{LimitsConfig, QuotasConfig};
use serde::Deserialize;
use std::collections::BTreeMap;

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
    /// Event source mappings: streams whose records feed the plugins.
    #[serde(default)]
    pub event_sources: Vec<crate::streams::mapping::EventSourceFile>,
    /// Cognito Streams: where applied syncs are published.
    #[serde(default)]
    pub cognito_streams: Option<crate::streams::cognito_streams::CognitoStreamsFile>,
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
    pub(crate) fn to_config_string(&self) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let error = TenantFile::parse("[limits]\nfuell = 3\n").unwrap_err();
        assert!(error.contains("fuell"), "{error}");
        let error = TenantFile::parse("[auth]\nmode = \"open\"\n").unwrap_err();
        assert!(error.contains("open"), "{error}");
    }
}
