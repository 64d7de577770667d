//! AWS Signature Version 4, verified on the Lambda-shaped route, so an AWS
//! SDK configured with a tenant's access key pair can call the host.
//!
//! The signature covers the method, the path, the query, the signed
//! headers and the body. A request more than [`MAX_SKEW`] away from the
//! host's clock is refused, as AWS does.

use crate::encoding::hex;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far a request's `X-Amz-Date` may be from the host's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    #[error("the Authorization header is not a valid AWS4-HMAC-SHA256 signature header")]
    Malformed,
    #[error("the access key id {0} is not one of this tenant's")]
    UnknownAccessKey(String),
    #[error("the request has no valid X-Amz-Date")]
    MissingDate,
    #[error("the request's X-Amz-Date is more than 15 minutes from the server's time")]
    Skewed,
    #[error("the request signature we calculated does not match the signature you provided; check your AWS secret access key")]
    Mismatch,
}

/// What of the request the signature covers.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path as sent, still percent-encoded.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

impl SignedRequest<'_> {
    /// Every value of a header, in order (values that are not text are
    /// left out: they cannot have been signed as text).
    fn header(&self, name: &str) -> impl Iterator<Item = &str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
    }
}

/// Whether the `Authorization` header value is a SigV4 signature.
pub fn is_sigv4(authorization: &str) -> bool {
    authorization.starts_with(ALGORITHM)
}

/// The access key id an `Authorization` header names, if it is a
/// well-formed SigV4 header.
pub fn access_key_of(authorization: &str) -> Option<&str> {
    let fields = authorization.strip_prefix(ALGORITHM)?;
    let credential = fields
        .split(',')
        .find_map(|part| part.trim().strip_prefix("Credential="))?;
    credential.split('/').next()
}

/// Verifies `authorization` for `request`; `secret_of` gives the secret
/// access key of an access key id. Returns the access key id.
pub fn verify(
    authorization: &str,
    request: &SignedRequest<'_>,
    secret_of: impl Fn(&str) -> Option<String>,
    now: SystemTime,
) -> Result<String, SigV4Error> {
    let fields = authorization
        .strip_prefix(ALGORITHM)
        .ok_or(SigV4Error::Malformed)?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in fields.split(',') {
        let (key, value) = part.trim().split_once('=').ok_or(SigV4Error::Malformed)?;
        match key {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            _ => {}
        }
    }
    let (credential, signed_headers, signature) = (
        credential.ok_or(SigV4Error::Malformed)?,
        signed_headers.ok_or(SigV4Error::Malformed)?,
        signature.ok_or(SigV4Error::Malformed)?,
    );
    // AKID/20261122/us-east-1/lambda/aws4_request
    let mut scope = credential.splitn(2, '/');
    let access_key = scope.next().ok_or(SigV4Error::Malformed)?;
    let scope = scope.next().ok_or(SigV4Error::Malformed)?;
    let scope_parts: Vec<&str> = scope.split('/').collect();
    let [day, region, service, "aws4_request"] = scope_parts.as_slice() else {
        return Err(SigV4Error::Malformed);
    };
    let secret =
        secret_of(access_key).ok_or_else(|| SigV4Error::UnknownAccessKey(access_key.to_owned()))?;

    let amz_date = request
        .header("x-amz-date")
        .next()
        .ok_or(SigV4Error::MissingDate)?;
    let signed_at = parse_amz_date(amz_date).ok_or(SigV4Error::MissingDate)?;
    let skew = now
        .duration_since(signed_at)
        .unwrap_or_else(|e| e.duration());
    if skew > MAX_SKEW {
        return Err(SigV4Error::Skewed);
    }
    if !amz_date.starts_with(day) {
        return Err(SigV4Error::Malformed);
    }

    let canonical = canonical_request(request, signed_headers);
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let key = [day, region, service, &"aws4_request"]
        .iter()
        .fold(format!("AWS4{secret}").into_bytes(), |key, part| {
            hmac(&key, part.as_bytes())
        });
    let expected = hex(&hmac(&key, string_to_sign.as_bytes()));
    if crate::auth::constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        Ok(access_key.to_owned())
    } else {
        Err(SigV4Error::Mismatch)
    }
}

fn canonical_request(request: &SignedRequest<'_>, signed_headers: &str) -> String {
    let mut headers = String::new();
    for name in signed_headers.split(';') {
        let values: Vec<String> = request
            .header(name)
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let payload = request
        .header("x-amz-content-sha256")
        .next()
        .map(str::to_owned)
        .unwrap_or_else(|| hex(&Sha256::digest(request.body)));
    format!(
        "{}\n{}\n{}\n{headers}\n{signed_headers}\n{payload}",
        request.method,
        uri_encode(request.path, false),
        canonical_query(request.query.unwrap_or_default()),
    )
}

/// The query with each name and value encoded the SigV4 way, sorted.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                uri_encode(&percent_decode(k), true),
                uri_encode(&percent_decode(v), true),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// What SigV4 leaves unencoded: the unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes all but the unreserved characters (and `/`, unless
/// `encode_slash`). Applied to a path as sent, this encodes it a second
/// time, which is what SigV4 asks of every service but S3.
fn uri_encode(text: &str, encode_slash: bool) -> String {
    if encode_slash {
        return utf8_percent_encode(text, UNRESERVED).to_string();
    }
    text.split('/')
        .map(|segment| utf8_percent_encode(segment, UNRESERVED).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// Decodes a query name or value as a form field: `%XX` and `+` for space.
fn percent_decode(text: &str) -> String {
    percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// `20261122T001500Z` as a time.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let digits = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    if text.len() != 16 || text.as_bytes()[8] != b'T' || !text.ends_with('Z') {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (hour, minute, second) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(seconds)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of AWS's SigV4 test suite ("get-vanilla"): GET / on
    /// example.amazonaws.com, service "service", with the documented key.
    #[test]
    fn verifies_the_aws_test_suite_example() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        let request = SignedRequest {
            method: "GET",
            path: "/",
            query: None,
            headers: &headers,
            body: b"",
        };
        let authorization =
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        let secret = |id: &str| {
            (id == "AKIDEXAMPLE").then(|| "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned())
        };
        let at = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(
            verify(authorization, &request, secret, at),
            Ok("AKIDEXAMPLE".into())
        );
        let wrong = |_: &str| Some("not the secret".to_owned());
        assert_eq!(
            verify(authorization, &request, wrong, at),
            Err(SigV4Error::Mismatch)
        );
        let later = at + Duration::from_secs(3600);
        assert_eq!(
            verify(authorization, &request, secret, later),
            Err(SigV4Error::Skewed)
        );
        let none = |_: &str| None;
        assert!(matches!(
            verify(authorization, &request, none, at),
            Err(SigV4Error::UnknownAccessKey(_))
        ));
    }

    #[test]
    fn dates_and_encodings() {
        assert_eq!(
            parse_amz_date("19700101T000001Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1))
        );
        assert_eq!(parse_amz_date("2026-11-22"), None);
        assert_eq!(uri_encode("/a%3Ab c", false), "/a%253Ab%20c");
        assert_eq!(canonical_query("b=2&a=1&c=x%2Fy"), "a=1&b=2&c=x%2Fy");
        assert_eq!(canonical_query("q=a+b%20c"), "q=a%20b%20c");
    }
}
