//! Per-tenant limits and quotas, and their defaults.
//!
//! The operator sets each tenant's quotas and the ceiling of every limit
//! (`serve --operator-config`, see [`crate::tenant::operator`]); the built-in
//! defaults below apply where it says nothing. A tenant's `tenant.toml`
//! may lower any of them under `[limits]` and `[quotas]`, and the per-call
//! limits again per plugin under `[plugins.<file stem>.limits]`; a value
//! above its ceiling is a load error that names the key.

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

/// A value of `tenant.toml` above what the operator allows.
pub fn above_ceiling(
    table: &str,
    key: &str,
    value: impl std::fmt::Display,
    ceiling: impl std::fmt::Display,
) -> String {
    format!("[{table}] {key} = {value} is above the operator's ceiling of {ceiling} for this tenant; ask the operator to raise it")
}

/// One key of a table checked against its ceiling: its name, the value as
/// written (none: not written, nothing to check), the value resolved and
/// the ceiling, in the same unit.
type CeilingCheck<'a> = (&'a str, Option<u64>, u64, u64);

/// The first written key above its ceiling, as an error naming it.
fn within_ceilings(table: &str, checks: &[CeilingCheck<'_>]) -> Result<(), String> {
    for &(key, written, value, ceiling) in checks {
        if let Some(written) = written {
            if value > ceiling {
                return Err(above_ceiling(table, key, written, ceiling));
            }
        }
    }
    Ok(())
}

impl LimitsConfig {
    /// These settings, with any unset key taken from `base`, each checked
    /// against `ceiling`; `table` names where they were written, for the
    /// error (`limits`, `plugins.10-a.limits`).
    pub fn within(&self, base: &Limits, ceiling: &Limits, table: &str) -> Result<Limits, String> {
        let limits = self.over(base);
        let checks: [CeilingCheck; 7] = [
            (
                "timeout-ms",
                self.timeout_ms,
                limits.timeout.as_millis() as u64,
                ceiling.timeout.as_millis() as u64,
            ),
            (
                "attempts",
                self.attempts.map(u64::from),
                u64::from(limits.attempts),
                u64::from(ceiling.attempts),
            ),
            ("fuel", self.fuel, limits.fuel, ceiling.fuel),
            (
                "memory-mib",
                self.memory_mib,
                limits.memory_bytes >> 20,
                ceiling.memory_bytes >> 20,
            ),
            (
                "table-elements",
                self.table_elements.map(|n| n as u64),
                limits.table_elements as u64,
                ceiling.table_elements as u64,
            ),
            (
                "output-kib",
                self.output_kib,
                limits.output_bytes >> 10,
                ceiling.output_bytes >> 10,
            ),
            (
                "log-kib",
                self.log_kib,
                limits.log_bytes >> 10,
                ceiling.log_bytes >> 10,
            ),
        ];
        within_ceilings(table, &checks)?;
        Ok(limits)
    }

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

impl Limits {
    /// Each of these limits, at most `ceiling`'s.
    pub fn capped_at(&self, ceiling: &Limits) -> Limits {
        Limits {
            timeout: self.timeout.min(ceiling.timeout),
            attempts: self.attempts.min(ceiling.attempts),
            fuel: self.fuel.min(ceiling.fuel),
            memory_bytes: self.memory_bytes.min(ceiling.memory_bytes),
            table_elements: self.table_elements.min(ceiling.table_elements),
            output_bytes: self.output_bytes.min(ceiling.output_bytes),
            log_bytes: self.log_bytes.min(ceiling.log_bytes),
        }
    }
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

/// Records per second a tenant may append to its streams (a Kinesis
/// shard's write rate), with a burst of one second's worth.
pub const DEFAULT_STREAM_RECORDS_PER_SECOND: u64 = 1_000;
/// Bytes a tenant's streams may hold, in MiB.
pub const DEFAULT_STREAM_STORED_MIB: u64 = 1_024;
/// How long stream records are kept (Kinesis's default, 24 hours).
pub const DEFAULT_STREAM_RETENTION_S: u64 = 86_400;

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
    /// Records per second the tenant may append to its streams.
    pub stream_records_per_second: Option<u64>,
    /// Bytes the tenant's streams may hold, in MiB.
    pub stream_stored_mib: Option<u64>,
    /// How long the tenant's stream records are kept, in seconds.
    pub stream_retention_s: Option<u64>,
}

/// A tenant's quotas, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quotas {
    pub concurrency: usize,
    pub plugins: usize,
    pub wasm_bytes: u64,
    pub stream_records_per_second: u64,
    pub stream_stored_bytes: u64,
    pub stream_retention: Duration,
}

impl Default for Quotas {
    fn default() -> Self {
        QuotasConfig::default().resolve()
    }
}

impl QuotasConfig {
    /// These quotas, with any unset key taken from the built-in defaults.
    pub fn resolve(&self) -> Quotas {
        self.over(&Quotas {
            concurrency: DEFAULT_CONCURRENCY,
            plugins: DEFAULT_MAX_PLUGINS,
            wasm_bytes: DEFAULT_MAX_WASM_KIB * 1024,
            stream_records_per_second: DEFAULT_STREAM_RECORDS_PER_SECOND,
            stream_stored_bytes: DEFAULT_STREAM_STORED_MIB << 20,
            stream_retention: Duration::from_secs(DEFAULT_STREAM_RETENTION_S),
        })
    }

    /// These quotas, with any unset key taken from `base`.
    pub fn over(&self, base: &Quotas) -> Quotas {
        Quotas {
            concurrency: self.concurrency.unwrap_or(base.concurrency).max(1),
            plugins: self.plugins.unwrap_or(base.plugins),
            wasm_bytes: self
                .wasm_kib
                .map(|k| k.saturating_mul(1024))
                .unwrap_or(base.wasm_bytes),
            stream_records_per_second: self
                .stream_records_per_second
                .unwrap_or(base.stream_records_per_second),
            stream_stored_bytes: self
                .stream_stored_mib
                .map(|m| m.saturating_mul(1 << 20))
                .unwrap_or(base.stream_stored_bytes),
            stream_retention: self
                .stream_retention_s
                .map(Duration::from_secs)
                .unwrap_or(base.stream_retention),
        }
    }

    /// These quotas, unset keys taken from `ceiling`, none above it.
    pub fn within(&self, ceiling: &Quotas) -> Result<Quotas, String> {
        let quotas = self.over(ceiling);
        let checks: [CeilingCheck; 6] = [
            (
                "concurrency",
                self.concurrency.map(|n| n as u64),
                quotas.concurrency as u64,
                ceiling.concurrency as u64,
            ),
            (
                "plugins",
                self.plugins.map(|n| n as u64),
                quotas.plugins as u64,
                ceiling.plugins as u64,
            ),
            (
                "wasm-kib",
                self.wasm_kib,
                quotas.wasm_bytes >> 10,
                ceiling.wasm_bytes >> 10,
            ),
            (
                "stream-records-per-second",
                self.stream_records_per_second,
                quotas.stream_records_per_second,
                ceiling.stream_records_per_second,
            ),
            (
                "stream-stored-mib",
                self.stream_stored_mib,
                quotas.stream_stored_bytes >> 20,
                ceiling.stream_stored_bytes >> 20,
            ),
            (
                "stream-retention-s",
                self.stream_retention_s,
                quotas.stream_retention.as_secs(),
                ceiling.stream_retention.as_secs(),
            ),
        ];
        within_ceilings("quotas", &checks)?;
        Ok(quotas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_may_lower_but_not_raise() {
        let ceiling = Limits::default();
        let lower = LimitsConfig {
            fuel: Some(10),
            ..LimitsConfig::default()
        };
        assert_eq!(lower.within(&ceiling, &ceiling, "limits").unwrap().fuel, 10);
        let higher = LimitsConfig {
            memory_mib: Some(DEFAULT_MEMORY_MIB + 1),
            ..LimitsConfig::default()
        };
        let error = higher.within(&ceiling, &ceiling, "limits").unwrap_err();
        assert!(error.contains("[limits] memory-mib = 65"), "{error}");
        let greedy = QuotasConfig {
            concurrency: Some(100_000),
            ..QuotasConfig::default()
        };
        let error = greedy.within(&Quotas::default()).unwrap_err();
        assert!(error.contains("[quotas] concurrency = 100000"), "{error}");
        assert!(error.contains("ceiling of 16"), "{error}");
    }
}
