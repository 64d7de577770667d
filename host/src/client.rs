//! The client side of deploying: what `triggerfish deploy` sends to a
//! running host's deploy routes (`PUT|DELETE
//! /v1/tenants/{tenant}/plugins/{name}`, `PUT /v1/tenants/{tenant}/config`).
//!
//! A plain HTTP/1.1 client on hyper (already the server's HTTP stack): one
//! connection per request, a connect timeout and a whole-request timeout.
//! `http://` only: put TLS in front of the host and run the client where it
//! reaches the host over loopback or a private network, or send the same
//! requests with any HTTP client.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;
use std::time::Duration;

/// How long connecting to the host may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, the host's check of the plugin
/// included (a compile may take up to 120 s under the default limits).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Everything but the unreserved characters of RFC 3986 is encoded in a
/// path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Url(String),
    #[error("cannot connect to {address}: {error}")]
    Connect {
        address: String,
        error: std::io::Error,
    },
    #[error("no answer from {address} within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("the request to {address} failed: {error}")]
    Http { address: String, error: String },
}

/// An answer from the host: its status and its JSON body (`null` when the
/// body is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `error.kind` and `error.message` of an error answer, as the API
    /// writes them.
    pub fn error(&self) -> String {
        let error = &self.body["error"];
        match (error["kind"].as_str(), error["message"].as_str()) {
            (Some(kind), Some(message)) => format!("{} {kind}: {message}", self.status),
            _ => format!("{} {}", self.status, self.body),
        }
    }
}

/// A host's deploy routes, for one tenant, with one key.
pub struct DeployClient {
    /// `host:port`.
    address: String,
    /// The path the host's routes start at (empty, or a prefix a proxy adds).
    prefix: String,
    tenant: String,
    key: String,
}

impl DeployClient {
    /// A client for `url` (`http://HOST[:PORT][/PREFIX]`).
    pub fn new(url: &str, tenant: &str, key: &str) -> Result<DeployClient, ClientError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| ClientError::Url(format!("{url:?} is not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(ClientError::Url(
                    "https:// is not supported by this client: reach the host over http:// on \
                     loopback or a private network (or send the same requests with curl)"
                        .to_owned(),
                ))
            }
            _ => return Err(ClientError::Url(format!("{url:?} must start with http://"))),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| ClientError::Url(format!("{url:?} names no host")))?;
        if authority.as_str().contains('@') {
            return Err(ClientError::Url(
                "credentials in the URL are not used: pass the key with --key".to_owned(),
            ));
        }
        if !crate::tenant::is_tenant_name(tenant) {
            return Err(ClientError::Url(format!(
                "{tenant:?} is not a tenant name: tenant names are letters, digits, - and _"
            )));
        }
        Ok(DeployClient {
            address: format!(
                "{}:{}",
                authority.host(),
                authority.port_u16().unwrap_or(80)
            ),
            prefix: uri.path().trim_end_matches('/').to_owned(),
            tenant: tenant.to_owned(),
            key: key.to_owned(),
        })
    }

    /// `PUT /v1/tenants/{tenant}/plugins/{name}` with the `.wasm`.
    pub async fn put_plugin(&self, name: &str, wasm: Vec<u8>) -> Result<Answer, ClientError> {
        let path = self.plugin_path(name);
        self.send(Method::PUT, &path, "application/wasm", wasm)
            .await
    }

    /// `DELETE /v1/tenants/{tenant}/plugins/{name}`.
    pub async fn delete_plugin(&self, name: &str) -> Result<Answer, ClientError> {
        let path = self.plugin_path(name);
        self.send(
            Method::DELETE,
            &path,
            "application/octet-stream",
            Vec::new(),
        )
        .await
    }

    /// `PUT /v1/tenants/{tenant}/config` with a `tenant.toml`.
    pub async fn put_config(&self, toml: Vec<u8>) -> Result<Answer, ClientError> {
        let path = format!("{}/v1/tenants/{}/config", self.prefix, self.tenant);
        self.send(Method::PUT, &path, "application/toml", toml)
            .await
    }

    /// `DELETE /v1/tenants/{tenant}`: removes the tenant (an operator key,
    /// a host serving a shared store).
    pub async fn delete_tenant(&self) -> Result<Answer, ClientError> {
        let path = format!("{}/v1/tenants/{}", self.prefix, self.tenant);
        self.send(
            Method::DELETE,
            &path,
            "application/octet-stream",
            Vec::new(),
        )
        .await
    }

    fn plugin_path(&self, name: &str) -> String {
        format!(
            "{}/v1/tenants/{}/plugins/{}",
            self.prefix,
            self.tenant,
            utf8_percent_encode(name, SEGMENT)
        )
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Answer, ClientError> {
        let address = self.address.clone();
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&address))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return Err(ClientError::Connect { address, error }),
                Err(_) => {
                    return Err(ClientError::Timeout {
                        address,
                        timeout: CONNECT_TIMEOUT,
                    })
                }
            };
        let http = |error: hyper::Error| ClientError::Http {
            address: self.address.clone(),
            error: error.to_string(),
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        let connection = tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.address)
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.key))
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Url(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = sender.send_request(request).await.map_err(http)?;
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await.map_err(http)?;
            Ok(Answer {
                status,
                body: serde_json::from_slice(&bytes.to_bytes()).unwrap_or(Value::Null),
            })
        };
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await;
        connection.abort();
        answer.unwrap_or(Err(ClientError::Timeout {
            address: self.address.clone(),
            timeout: REQUEST_TIMEOUT,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_names() {
        let client = DeployClient::new("http://127.0.0.1:8080/", "acme", "k").unwrap();
        assert_eq!(client.address, "127.0.0.1:8080");
        assert_eq!(
            client.plugin_path("10-a b/../c"),
            "/v1/tenants/acme/plugins/10-a%20b%2F..%2Fc"
        );
        let proxied = DeployClient::new("http://host/triggerfish", "acme", "k").unwrap();
        assert_eq!(proxied.address, "host:80");
        assert_eq!(
            proxied.plugin_path("10-a"),
            "/triggerfish/v1/tenants/acme/plugins/10-a"
        );
        for bad in ["https://host", "ftp://host", "host:80", "http://u:p@host"] {
            assert!(DeployClient::new(bad, "acme", "k").is_err(), "{bad}");
        }
        assert!(DeployClient::new("http://host", "../acme", "k").is_err());
    }
}
