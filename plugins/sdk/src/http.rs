//! Outbound HTTP through `wasi:http`, blocking, in a few calls.
//!
//! The host sends a request only to hosts the tenant lists in
//! `[outbound] allowed-hosts`; anything else fails here with an error that
//! says the request was denied. Each request is also held to the tenant's
//! outbound timeout and to the chain's budget.
//!
//! ```ignore
//! let answer = triggerfish_sdk::http::post_json("http://127.0.0.1:9000/verify", r#"{"token":"x"}"#)?;
//! if answer.status != 200 { return Err(format!("verifier said {}", answer.status)); }
//! ```

use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

/// The largest response body read; a longer one is an error.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// How an error of this module ends when the host refused the request.
const DENIED: &str = "denied: the host is not in the tenant's [outbound] allowed-hosts";

/// Whether `error`, as one of this module's functions returned it, says
/// the host refused to send the request because the URL's host is not in
/// the tenant's `[outbound] allowed-hosts`: a setting to fix, where any
/// other error may be a service that is down or slow. A plugin that
/// carries on when a service cannot be reached can still fail loudly on a
/// misconfiguration.
pub fn is_denied(error: &str) -> bool {
    error.starts_with("request to ") && error.ends_with(DENIED)
}

/// An HTTP response, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// A response, as a fake service in a test would give it.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            body: body.into(),
        }
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters: for a
/// query parameter or a form field.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// `Bearer <token>` for an `authorization` header, from the config value
/// `key` (usually a secret), when it is set and not blank.
pub fn bearer_from_config(key: &str) -> Option<String> {
    crate::config::get(key)
        .map(|token| token.trim().to_owned())
        .filter(|token| !token.is_empty())
        .map(|token| format!("Bearer {token}"))
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, String> {
    request("GET", url, &[], None)
}

/// `POST url` with a JSON body.
pub fn post_json(url: &str, json: &str) -> Result<Response, String> {
    request(
        "POST",
        url,
        &[("content-type", "application/json")],
        Some(json.as_bytes()),
    )
}

/// `POST url` with a form body (`a=1&b=2`).
pub fn post_form(url: &str, form: &str) -> Result<Response, String> {
    request(
        "POST",
        url,
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(form.as_bytes()),
    )
}

/// Any request. `url` is `http://` or `https://`, host, optional port and
/// path.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, String> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest),
        Some(("https", rest)) => (Scheme::Https, rest),
        _ => return Err(format!("{url:?} is not an http:// or https:// URL")),
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|e| format!("header {name}: {e:?}"))?;
    }
    let outgoing = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_owned()),
    };
    let invalid = |what: &str| format!("invalid {what} in {url:?}");
    outgoing
        .set_method(&method)
        .map_err(|_| invalid("method"))?;
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|_| invalid("scheme"))?;
    outgoing
        .set_authority(Some(authority))
        .map_err(|_| invalid("host"))?;
    outgoing
        .set_path_with_query(Some(path))
        .map_err(|_| invalid("path"))?;

    let outgoing_body = outgoing
        .body()
        .map_err(|_| "the request body is unavailable".to_owned())?;
    let pending = outgoing_handler::handle(outgoing, None).map_err(|e| describe(url, &e))?;
    // A request the host refuses fails its body stream at once; the reason
    // comes with the response, so a send error is reported only if the
    // response has none.
    let sent = send_body(outgoing_body, body.unwrap_or_default(), url);
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(describe(url, &e)),
        _ => {
            return Err(sent
                .err()
                .unwrap_or_else(|| format!("request to {url} failed")))
        }
    };
    sent?;
    let status = response.status();
    let incoming = response
        .consume()
        .map_err(|_| "the response body is unavailable".to_owned())?;
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|_| "the response body is unavailable".to_owned())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_RESPONSE_BYTES {
                        return Err(format!(
                            "the response from {url} is larger than {MAX_RESPONSE_BYTES} bytes"
                        ));
                    }
                }
                Err(StreamError::Closed) => break,
                Err(e) => return Err(format!("reading the response from {url} failed: {e:?}")),
            }
        }
    }
    Ok(Response { status, body })
}

fn send_body(outgoing: OutgoingBody, body: &[u8], url: &str) -> Result<(), String> {
    {
        let stream = outgoing
            .write()
            .map_err(|_| "the request body is unavailable".to_owned())?;
        // The stream takes at most 4096 bytes per blocking write.
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("sending the request body to {url} failed: {e:?}"))?;
        }
    }
    OutgoingBody::finish(outgoing, None).map_err(|e| describe(url, &e))
}

fn describe(url: &str, error: &ErrorCode) -> String {
    match error {
        ErrorCode::HttpRequestDenied => format!("request to {url} {DENIED}"),
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout => {
            format!("request to {url} timed out")
        }
        ErrorCode::ConnectionRefused => format!("request to {url} failed: connection refused"),
        other => format!("request to {url} failed: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_are_told_apart() {
        let denied = describe("http://api.test/x", &ErrorCode::HttpRequestDenied);
        assert_eq!(
            denied,
            "request to http://api.test/x denied: the host is not in the tenant's [outbound] allowed-hosts"
        );
        assert!(is_denied(&denied));
        let refused = describe("http://api.test/x", &ErrorCode::ConnectionRefused);
        assert!(!is_denied(&refused), "{refused}");
        assert!(!is_denied(&format!("wrapped: {denied} and more")));
    }
}
