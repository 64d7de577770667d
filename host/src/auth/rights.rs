//! Who may deploy: a tenant's key with the deploy right.
//!
//! A tenant's `tenant.toml` lists two kinds of key hashes:
//!
//! ```toml
//! [auth]
//! keys = ["sha256:…"]          # may send events
//! deploy-keys = ["sha256:…"]   # may send events, and replace the tenant's
//!                              # plugins and tenant.toml over HTTP
//! ```
//!
//! A file without `deploy-keys` is as valid as before and deploys nothing
//! over HTTP. Deploying needs a bearer key whatever `[auth] mode` says:
//! `mode = "none"` opens the tenant's events, never its code. (The
//! operator's keys, `serve --admin-keys`, are the other way to deploy; see
//! `sources::http::deploy`.)

use super::{constant_time_eq, hash_key, holds_key, AuthConfig, AuthError, Credentials};

/// Whether `text` has the form `tenant.toml` stores a key in:
/// `sha256:` and 64 lowercase hex digits (what `triggerfish hash-key`
/// prints).
pub fn is_key_hash(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

impl AuthConfig {
    /// Refuses a `deploy-keys` entry that is not a key hash: a key pasted
    /// in clear would never match, and would sit in the file unhashed.
    pub fn check(&self) -> Result<(), String> {
        for key in &self.deploy_keys {
            if !is_key_hash(key) {
                return Err(format!(
                    "[auth] deploy-keys: {:?} is not a key hash (sha256: and 64 hex digits); \
                     `triggerfish hash-key KEY` prints one",
                    abbreviate(key)
                ));
            }
        }
        Ok(())
    }

    /// Whether the key with this hash may deploy.
    pub fn may_deploy(&self, hashed: &str) -> bool {
        self.deploy_keys.iter().fold(false, |found, k| {
            found | constant_time_eq(k.as_bytes(), hashed.as_bytes())
        })
    }
}

/// The first characters of what may be a secret pasted by mistake.
fn abbreviate(text: &str) -> String {
    let mut short: String = text.chars().take(12).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// Checks that `credentials` may deploy to the tenant whose settings are
/// `auth`, and returns the hash of the key that may. `others` holds every
/// tenant's settings, to tell another tenant's key (403) from an unknown
/// one (401), as [`super::authorize`] does.
///
/// Only bearer keys deploy: a signature (SigV4) is refused as an unknown
/// key would be. A key of the tenant without the deploy right gets
/// [`AuthError::NoDeployRight`] (403).
pub fn authorize_deploy<'t>(
    auth: &AuthConfig,
    credentials: &Credentials<'_>,
    others: impl Iterator<Item = &'t AuthConfig>,
) -> Result<String, AuthError> {
    let key = match credentials {
        Credentials::None => return Err(AuthError::MissingKey),
        Credentials::Signed { .. } => return Err(AuthError::UnknownKey),
        Credentials::Bearer(key) => key,
    };
    let hashed = hash_key(key);
    if auth.may_deploy(&hashed) {
        Ok(hashed)
    } else if holds_key(auth, &hashed) {
        Err(AuthError::NoDeployRight)
    } else if others.into_iter().any(|t| holds_key(t, &hashed)) {
        Err(AuthError::WrongTenant)
    } else {
        Err(AuthError::UnknownKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(keys: &[&str], deploy: &[&str]) -> AuthConfig {
        AuthConfig {
            keys: keys.iter().map(|k| hash_key(k)).collect(),
            deploy_keys: deploy.iter().map(|k| hash_key(k)).collect(),
            ..AuthConfig::default()
        }
    }

    #[test]
    fn only_deploy_keys_deploy() {
        let acme = auth(&["events"], &["ship"]);
        let other = auth(&["theirs"], &["their-ship"]);
        let deploy = |key: &str| {
            authorize_deploy(
                &acme,
                &Credentials::Bearer(key),
                [&acme, &other].into_iter(),
            )
        };
        assert_eq!(deploy("ship").unwrap(), hash_key("ship"));
        assert_eq!(deploy("events"), Err(AuthError::NoDeployRight));
        assert_eq!(deploy("their-ship"), Err(AuthError::WrongTenant));
        assert_eq!(deploy("theirs"), Err(AuthError::WrongTenant));
        assert_eq!(deploy("nobody"), Err(AuthError::UnknownKey));
        assert_eq!(
            authorize_deploy(&acme, &Credentials::None, std::iter::empty()),
            Err(AuthError::MissingKey)
        );
        // A deploy key sends events too.
        assert!(
            super::super::authorize(&acme, &Credentials::Bearer("ship"), std::iter::empty())
                .is_ok()
        );
        // `mode = "none"` opens events, not deploys.
        let open = AuthConfig {
            mode: super::super::AuthMode::None,
            ..AuthConfig::default()
        };
        assert_eq!(
            authorize_deploy(&open, &Credentials::Bearer("x"), std::iter::empty()),
            Err(AuthError::UnknownKey)
        );
    }

    #[test]
    fn deploy_keys_must_be_hashes() {
        assert!(auth(&[], &["a"]).check().is_ok());
        let clear = AuthConfig {
            deploy_keys: vec!["my-secret-deploy-key-in-clear".into()],
            ..AuthConfig::default()
        };
        let error = clear.check().unwrap_err();
        assert!(error.contains("[auth] deploy-keys"), "{error}");
        assert!(
            !error.contains("in-clear"),
            "the key is not repeated whole: {error}"
        );
        assert!(!is_key_hash(&format!("sha256:{}", "A".repeat(64))));
    }
}
