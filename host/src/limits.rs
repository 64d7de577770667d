//! Per-tenant limits and their defaults.
//!
//! Every limit can be set in a tenant's `tenant.toml` under `[limits]`, and
//! the per-call ones again per plugin under `[plugins.<file stem>.limits]`.

use serde::Deserialize;
use std::time::Duration;

/// Wall-clock budget for a whole chain, per attempt (Cognito's 5 seconds).
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Attempts per event, as Cognito makes; only failures that can pass
/// (a timeout of a plugin starved of CPU, an overloaded host) are retried.
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// Fuel per plugin call: roughly one unit per WebAssembly instruction, so
/// about a second of pure compute on a current core.
pub const DEFAULT_FUEL: u64 = 1_000_000_000;
/// Linear memory per plugin instance.
pub const DEFAULT_MEMORY_MIB: u64 = 64;
/// Elements per table of a plugin instance.
pub const DEFAULT_TABLE_ELEMENTS: usize = 20_000;
/// Size of what one plugin call may return: the strings of its response.
pub const DEFAULT_OUTPUT_KIB: u64 = 1_024;
/// Log bytes kept per invocation; past this, lines are dropped.
pub const DEFAULT_LOG_KIB: u64 = 64;

/// Limits as written in `tenant.toml`: every key optional.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitsConfig {
    /// Wall-clock budget for the whole chain, per attempt.
    pub timeout_ms: Option<u64>,
    /// Attempts per event (1 disables retries).
    pub attempts: Option<u32>,
    /// Fuel per plugin call.
    pub fuel: Option<u64>,
    /// Linear memory per plugin instance, in MiB.
    pub memory_mib: Option<u64>,
    /// Elements per table per plugin instance.
    pub table_elements: Option<usize>,
    /// Bytes of strings one plugin call may return, in KiB.
    pub output_kib: Option<u64>,
    /// Log bytes kept per invocation, in KiB.
    pub log_kib: Option<u64>,
}

impl LimitsConfig {
    /// These settings, with any unset key taken from `base`.
    pub fn over(&self, base: &Limits) -> Limits {
        Limits {
            timeout: self
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(base.timeout),
            attempts: self.attempts.unwrap_or(base.attempts).max(1),
            fuel: self.fuel.unwrap_or(base.fuel),
            memory_bytes: self
                .memory_mib
                .map(|m| m.saturating_mul(1 << 20))
                .unwrap_or(base.memory_bytes),
            table_elements: self.table_elements.unwrap_or(base.table_elements),
            output_bytes: self
                .output_kib
                .map(|k| k.saturating_mul(1024))
                .unwrap_or(base.output_bytes),
            log_bytes: self
                .log_kib
                .map(|k| k.saturating_mul(1024))
                .unwrap_or(base.log_bytes),
        }
    }
}

/// Limits in force for a chain or a plugin call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    pub attempts: u32,
    pub fuel: u64,
    pub memory_bytes: u64,
    pub table_elements: usize,
    pub output_bytes: u64,
    pub log_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            attempts: DEFAULT_ATTEMPTS,
            fuel: DEFAULT_FUEL,
            memory_bytes: DEFAULT_MEMORY_MIB << 20,
            table_elements: DEFAULT_TABLE_ELEMENTS,
            output_bytes: DEFAULT_OUTPUT_KIB * 1024,
            log_bytes: DEFAULT_LOG_KIB * 1024,
        }
    }
}

/// Invocations of one tenant running at once; past this, requests are
/// refused at once with 429 instead of queueing.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Plugin files in one tenant folder.
pub const DEFAULT_MAX_PLUGINS: usize = 32;
/// Size of one `.wasm` file. Rust plugins are tens of kilobytes; a
/// JavaScript one carries its engine and is about 12 MiB.
pub const DEFAULT_MAX_WASM_KIB: u64 = 32 * 1024;

/// `[quotas]` in `tenant.toml`: what one tenant may hold of the host.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct QuotasConfig {
    /// Invocations running at once.
    pub concurrency: Option<usize>,
    /// Plugin files in the tenant folder.
    pub plugins: Option<usize>,
    /// Size of one `.wasm` file, in KiB.
    pub wasm_kib: Option<u64>,
}

/// A tenant's quotas, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quotas {
    pub concurrency: usize,
    pub plugins: usize,
    pub wasm_bytes: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        QuotasConfig::default().resolve()
    }
}

impl QuotasConfig {
    pub fn resolve(&self) -> Quotas {
        Quotas {
            concurrency: self.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1),
            plugins: self.plugins.unwrap_or(DEFAULT_MAX_PLUGINS),
            wasm_bytes: self
                .wasm_kib
                .unwrap_or(DEFAULT_MAX_WASM_KIB)
                .saturating_mul(1024),
        }
    }
}
