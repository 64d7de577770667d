//! Who may call a tenant: bearer API keys (stored as SHA-256 hashes,
//! compared in constant time), or, on the Lambda-shaped route, AWS SigV4
//! signatures made with one of the tenant's access key pairs.

pub mod admin;
pub mod rights;
pub mod sigv4;

use crate::encoding::hex_into;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sigv4::{SigV4Error, SignedRequest};
use std::time::SystemTime;

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
    /// Hashes of the keys that may also deploy: replace the tenant's
    /// plugins and `tenant.toml` over HTTP (see [`rights`]). They may send
    /// events too. Checked strictly: each is `sha256:<64 hex digits>`.
    #[serde(default)]
    pub deploy_keys: Vec<String>,
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

/// What a request presents.
pub enum Credentials<'a> {
    None,
    /// `Authorization: Bearer <key>`.
    Bearer(&'a str),
    /// `Authorization: AWS4-HMAC-SHA256 ...`, with what it signs.
    Signed {
        authorization: &'a str,
        request: SignedRequest<'a>,
    },
}

impl<'a> Credentials<'a> {
    /// Reads a bearer key from an `Authorization` header value.
    pub fn bearer(authorization: Option<&'a str>) -> Credentials<'a> {
        match authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
        {
            Some(key) if !key.is_empty() => Credentials::Bearer(key),
            _ => Credentials::None,
        }
    }
}

/// Why a request may not reach a tenant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this tenant requires `Authorization: Bearer <key>`")]
    MissingKey,
    #[error("the key is not valid")]
    UnknownKey,
    #[error("the key does not belong to this tenant")]
    WrongTenant,
    #[error("the tenant has no API keys or AWS credentials configured, so every request is refused; add [auth] keys in tenant.toml, or set [auth] mode = \"none\" for local use")]
    NoKeys,
    #[error("{0}")]
    Signature(SigV4Error),
    /// A key of the tenant that may send events but not deploy.
    #[error("this key may send events but not deploy: deploying needs a key listed in [auth] deploy-keys of the tenant's tenant.toml")]
    NoDeployRight,
}

/// The form in which `tenant.toml` stores an API key: `sha256:<hex>`.
pub fn hash_key(key: &str) -> String {
    KeyHash::of(key).as_str().to_owned()
}

/// A presented key in its stored form, `sha256:<64 hex digits>`, made on
/// the stack: every request with a key makes one.
pub(crate) struct KeyHash([u8; KeyHash::LEN]);

impl KeyHash {
    const PREFIX: &'static [u8] = b"sha256:";
    const LEN: usize = Self::PREFIX.len() + 64;

    pub(crate) fn of(key: &str) -> KeyHash {
        let mut out = [0; Self::LEN];
        out[..Self::PREFIX.len()].copy_from_slice(Self::PREFIX);
        hex_into(
            &Sha256::digest(key.as_bytes()),
            &mut out[Self::PREFIX.len()..],
        );
        KeyHash(out)
    }

    pub(crate) fn as_str(&self) -> &str {
        // The prefix and hex digits are ASCII.
        std::str::from_utf8(&self.0).expect("ASCII")
    }
}

/// Compares in time that depends only on the lengths, not on where the
/// inputs first differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// Whether `hashed` is one of the tenant's keys (a deploy key is one too).
fn holds_key(auth: &AuthConfig, hashed: &str) -> bool {
    // Check every key so the time taken does not tell which one matched.
    auth.keys
        .iter()
        .chain(&auth.deploy_keys)
        .fold(false, |found, k| {
            found | constant_time_eq(k.as_bytes(), hashed.as_bytes())
        })
}

fn holds_access_key(auth: &AuthConfig, access_key: &str) -> bool {
    auth.aws_credentials
        .iter()
        .any(|c| c.access_key_id == access_key)
}

/// Checks `credentials` against a tenant's `auth`. `others` holds every
/// tenant's, to tell another tenant's credentials (403) from unknown ones
/// (401).
pub fn authorize<'t>(
    auth: &AuthConfig,
    credentials: &Credentials<'_>,
    others: impl Iterator<Item = &'t AuthConfig>,
) -> Result<(), AuthError> {
    if auth.mode == AuthMode::None {
        return Ok(());
    }
    // Without credentials every tenant answers alike, whatever its keys.
    if matches!(credentials, Credentials::None) {
        return Err(AuthError::MissingKey);
    }
    if auth.keys.is_empty() && auth.deploy_keys.is_empty() && auth.aws_credentials.is_empty() {
        return Err(AuthError::NoKeys);
    }
    match credentials {
        Credentials::None => Err(AuthError::MissingKey),
        Credentials::Bearer(key) => {
            let hashed = KeyHash::of(key);
            let hashed = hashed.as_str();
            if holds_key(auth, hashed) {
                Ok(())
            } else if others.into_iter().any(|t| holds_key(t, hashed)) {
                Err(AuthError::WrongTenant)
            } else {
                Err(AuthError::UnknownKey)
            }
        }
        Credentials::Signed {
            authorization,
            request,
        } => {
            let secret_of = |access_key: &str| {
                auth.aws_credentials
                    .iter()
                    .find(|c| c.access_key_id == access_key)
                    .map(|c| c.secret_access_key.clone())
            };
            match sigv4::verify(authorization, request, secret_of, SystemTime::now()) {
                Ok(_) => Ok(()),
                Err(SigV4Error::UnknownAccessKey(key)) => {
                    if others.into_iter().any(|t| holds_access_key(t, &key)) {
                        Err(AuthError::WrongTenant)
                    } else {
                        Err(AuthError::UnknownKey)
                    }
                }
                Err(e) => Err(AuthError::Signature(e)),
            }
        }
    }
}

/// The refusal for a tenant that does not exist: the same as a known
/// tenant with keys gives credentials that are not among them.
pub fn refuse_unknown_tenant<'t>(
    credentials: &Credentials<'_>,
    others: impl Iterator<Item = &'t AuthConfig>,
) -> AuthError {
    let mut others = others;
    match credentials {
        Credentials::None => AuthError::MissingKey,
        Credentials::Bearer(key) => {
            let hashed = KeyHash::of(key);
            if others.any(|t| holds_key(t, hashed.as_str())) {
                AuthError::WrongTenant
            } else {
                AuthError::UnknownKey
            }
        }
        Credentials::Signed { authorization, .. } => {
            let access_key = sigv4::access_key_of(authorization).unwrap_or_default();
            if others.any(|t| holds_access_key(t, access_key)) {
                AuthError::WrongTenant
            } else {
                AuthError::UnknownKey
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_to_sha256() {
        assert_eq!(
            hash_key("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(KeyHash::of("abc").as_str(), hash_key("abc"));
    }
}
