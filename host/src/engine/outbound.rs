//! Outbound HTTP for plugins: `wasi:http`, and only to the hosts a tenant
//! allows. A request anywhere else fails inside the plugin with
//! `HTTP-request-denied`, and is logged.

use serde::Deserialize;
use std::future::Future;
use std::time::Duration;
use wasmtime_wasi_http::{default_send_request, Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Default time one outbound request may take: to connect, and to the
/// first byte of the answer. The chain's budget bounds it too.
pub const DEFAULT_OUTBOUND_TIMEOUT_MS: u64 = 2_000;

/// `[outbound]` in `tenant.toml` (and `[plugins.<stem>.outbound]`, which
/// replaces it for one plugin).
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OutboundConfig {
    /// Hosts plugins may call: `host` (any port), `host:port`, or
    /// `*.domain` (its subdomains); in the operator's configuration also
    /// `*` (any host). Empty or absent: no outbound HTTP.
    pub allowed_hosts: Option<Vec<String>>,
    /// Time one request may take to connect, and to its first byte.
    pub timeout_ms: Option<u64>,
}

impl OutboundConfig {
    /// This configuration, with unset keys taken from `base`, and nothing
    /// beyond what `ceiling` (the operator's) allows; `table` names where
    /// it was written, for the error.
    pub fn within(
        &self,
        base: &Outbound,
        ceiling: &Outbound,
        table: &str,
    ) -> Result<Outbound, String> {
        let outbound = self.over(base);
        if let Some(hosts) = &self.allowed_hosts {
            if let Some(host) = hosts.iter().find(|h| !ceiling.covers(h)) {
                return Err(format!(
                    "[{table}] allowed-hosts names {host:?}, which the operator does not allow this tenant to reach{}",
                    if ceiling.allowed_hosts.is_empty() {
                        " (it allows no outbound host)".to_owned()
                    } else {
                        format!(" (it allows {})", ceiling.allowed_hosts.join(", "))
                    }
                ));
            }
        }
        if self.timeout_ms.is_some() && outbound.timeout > ceiling.timeout {
            return Err(crate::limits::above_ceiling(
                table,
                "timeout-ms",
                outbound.timeout.as_millis(),
                ceiling.timeout.as_millis(),
            ));
        }
        Ok(outbound)
    }

    /// This configuration, with unset keys taken from `base`.
    pub fn over(&self, base: &Outbound) -> Outbound {
        Outbound {
            allowed_hosts: self
                .allowed_hosts
                .as_ref()
                .map(|hosts| {
                    hosts
                        .iter()
                        .map(|h| h.trim().to_ascii_lowercase())
                        .collect()
                })
                .unwrap_or_else(|| base.allowed_hosts.clone()),
            timeout: self
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(base.timeout),
        }
    }
}

/// Where a plugin may send HTTP requests, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub allowed_hosts: Vec<String>,
    pub timeout: Duration,
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound {
            allowed_hosts: Vec::new(),
            timeout: Duration::from_millis(DEFAULT_OUTBOUND_TIMEOUT_MS),
        }
    }
}

impl Outbound {
    /// Whether a request to `host` (and `port`, if the URL gave one) is
    /// allowed.
    pub fn allows(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.to_ascii_lowercase();
        self.allowed_hosts.iter().any(|allowed| {
            if allowed == "*" {
                return true;
            }
            if let Some(domain) = allowed.strip_prefix("*.") {
                return host.ends_with(&format!(".{domain}"));
            }
            match (allowed.rsplit_once(':'), port) {
                (Some((allowed_host, allowed_port)), Some(port)) => {
                    allowed_host == host && allowed_port == port.to_string()
                }
                (Some(_), None) => false,
                (None, _) => *allowed == host,
            }
        })
    }
}

impl Outbound {
    /// Whether every request `pattern` (an `allowed-hosts` entry) lets
    /// through, this policy lets through too: how a tenant's list is held
    /// to the operator's.
    pub fn covers(&self, pattern: &str) -> bool {
        let pattern = pattern.trim().to_ascii_lowercase();
        // `host:port` -> `host`; `*.domain` -> `.domain`.
        let host = match pattern.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => host,
            _ => pattern.as_str(),
        };
        let host = host.strip_prefix('*').unwrap_or(host);
        self.allowed_hosts.iter().any(|allowed| {
            if allowed == "*" || *allowed == pattern {
                return true;
            }
            if let Some(domain) = allowed.strip_prefix("*.") {
                return host.ends_with(&format!(".{domain}"));
            }
            // A bare host allows it on any port.
            !allowed.contains(':') && !host.starts_with('.') && host == allowed
        })
    }
}

/// The `wasi:http` hooks of one plugin call.
pub(crate) struct OutboundHooks {
    pub(crate) policy: std::sync::Arc<Outbound>,
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> ResponseFuture {
        _ = fut;
        let uri = request.uri();
        let host = uri.host().unwrap_or_default();
        if !self.policy.allows(host, uri.port_u16()) {
            tracing::warn!(target: "plugin", url = %uri, "outbound request refused: the host is not in the tenant's allowed-hosts");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let limit = self.policy.timeout;
        let within = |asked: Option<Duration>| Some(asked.map_or(limit, |a| a.min(limit)));
        let options = RequestOptions {
            connect_timeout: within(options.as_ref().and_then(|o| o.connect_timeout)),
            first_byte_timeout: within(options.as_ref().and_then(|o| o.first_byte_timeout)),
            between_bytes_timeout: within(options.as_ref().and_then(|o| o.between_bytes_timeout)),
        };
        tracing::debug!(target: "plugin", url = %uri, "outbound request");
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = default_send_request(request, Some(options)).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_hosts_match_host_port_and_subdomains() {
        let outbound = OutboundConfig {
            allowed_hosts: Some(vec![
                "127.0.0.1:9000".into(),
                "API.example.com".into(),
                "*.corp.test".into(),
            ]),
            timeout_ms: None,
        }
        .over(&Outbound::default());
        assert!(outbound.allows("127.0.0.1", Some(9000)));
        assert!(!outbound.allows("127.0.0.1", Some(9001)));
        assert!(!outbound.allows("127.0.0.1", None));
        assert!(outbound.allows("api.example.com", Some(443)));
        assert!(outbound.allows("api.example.com", None));
        assert!(outbound.allows("a.b.corp.test", None));
        assert!(!outbound.allows("corp.test", None));
        assert!(!outbound.allows("evil.test", None));
        assert!(!Outbound::default().allows("api.example.com", None));
    }

    #[test]
    fn an_operator_list_covers_what_it_allows() {
        let operator = OutboundConfig {
            allowed_hosts: Some(vec![
                "127.0.0.1".into(),
                "*.acme.test".into(),
                "api.b.test:443".into(),
            ]),
            timeout_ms: None,
        }
        .over(&Outbound::default());
        for covered in [
            "127.0.0.1",
            "127.0.0.1:9000",
            "x.acme.test",
            "*.acme.test",
            "*.eu.acme.test",
            "api.b.test:443",
        ] {
            assert!(operator.covers(covered), "{covered}");
        }
        for beyond in [
            "acme.test",
            "*.test",
            "api.b.test",
            "api.b.test:80",
            "10.0.0.1",
            "*",
        ] {
            assert!(!operator.covers(beyond), "{beyond}");
        }
        let any = OutboundConfig {
            allowed_hosts: Some(vec!["*".into()]),
            timeout_ms: None,
        }
        .over(&Outbound::default());
        assert!(any.covers("*") && any.covers("anything.test:1") && any.allows("x.test", None));
    }
}
