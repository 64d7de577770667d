//! Operator keys: who may use the host's own routes (`GET /metrics`,
//! `GET /status`, and the admin API), as opposed to a tenant's.
//!
//! `serve --admin-keys FILE` reads them: one hash a line, as
//! `triggerfish hash-key` prints it (`sha256:<64 hex digits>`); blank lines
//! and lines starting with `#` are skipped. The keys themselves are never
//! stored, and a presented key is compared with every hash in constant
//! time, like tenant keys. Without the flag there are no operator keys and
//! the operator routes are off (404).

use super::{constant_time_eq, hash_key};
use std::path::{Path, PathBuf};

/// The largest `--admin-keys` file read: far more than any list of hashes.
pub const ADMIN_KEYS_MAX_BYTES: u64 = 1 << 20;

/// The hashes of the operator's keys.
#[derive(Clone)]
pub struct AdminKeys {
    hashes: Vec<String>,
}

impl std::fmt::Debug for AdminKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminKeys")
            .field("keys", &self.hashes.len())
            .finish()
    }
}

/// Why an `--admin-keys` file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AdminKeysError {
    #[error("cannot read the admin keys file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the admin keys file {} is larger than {ADMIN_KEYS_MAX_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("line {line} of the admin keys file is not a key hash ({reason}); each line holds one `sha256:<64 hex digits>` as `triggerfish hash-key` prints it")]
    BadLine { line: usize, reason: &'static str },
    #[error("the admin keys file has no key hash, so no one could use the operator routes; add one made by `triggerfish hash-key`")]
    Empty,
}

/// Why a request may not use an operator route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminAuthError {
    #[error("this route needs an operator key: `Authorization: Bearer <key>`, with the key's hash in the --admin-keys file")]
    MissingKey,
    #[error("the key is not an operator key")]
    UnknownKey,
}

impl AdminKeys {
    /// Reads `path` (at most [`ADMIN_KEYS_MAX_BYTES`]). Errors name the
    /// file, or the line that is not a key hash.
    pub fn load(path: &Path) -> Result<AdminKeys, AdminKeysError> {
        let read = |source| AdminKeysError::Read {
            path: path.to_owned(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > ADMIN_KEYS_MAX_BYTES {
            return Err(AdminKeysError::TooLarge {
                path: path.to_owned(),
            });
        }
        AdminKeys::parse(&std::fs::read_to_string(path).map_err(read)?)
    }

    /// Reads the hashes from the text of an `--admin-keys` file.
    pub fn parse(text: &str) -> Result<AdminKeys, AdminKeysError> {
        let mut hashes = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason| AdminKeysError::BadLine {
                line: index + 1,
                reason,
            };
            let hex = line
                .strip_prefix("sha256:")
                .ok_or_else(|| bad("it does not start with `sha256:`"))?;
            if hex.len() != 64 {
                return Err(bad("the hash is not 64 hex digits long"));
            }
            if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(bad("the hash has characters other than 0-9 and a-f"));
            }
            hashes.push(line.to_owned());
        }
        if hashes.is_empty() {
            return Err(AdminKeysError::Empty);
        }
        Ok(AdminKeys { hashes })
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Never true: a file without keys is refused.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether `key` (the key itself, not its hash) is an operator key.
    /// Compares with every hash in constant time, so the time taken does
    /// not tell which hash matched or where a wrong one differs.
    pub fn allows(&self, key: &str) -> bool {
        let hashed = hash_key(key);
        self.hashes.iter().fold(false, |found, h| {
            found | constant_time_eq(h.as_bytes(), hashed.as_bytes())
        })
    }

    /// Checks a request's `Authorization: Bearer <key>` header.
    pub fn authorize(&self, headers: &http::HeaderMap) -> Result<(), AdminAuthError> {
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match super::Credentials::bearer(authorization) {
            super::Credentials::Bearer(key) if self.allows(key) => Ok(()),
            super::Credentials::Bearer(_) => Err(AdminAuthError::UnknownKey),
            _ => Err(AdminAuthError::MissingKey),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_against_their_hashes() {
        let text = format!(
            "# operators\n\n{}\n  {}  \n",
            hash_key("k1"),
            hash_key("k2")
        );
        let keys = AdminKeys::parse(&text).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.allows("k1") && keys.allows("k2"));
        assert!(!keys.allows("k3") && !keys.allows(""));

        let mut headers = http::HeaderMap::new();
        assert_eq!(keys.authorize(&headers), Err(AdminAuthError::MissingKey));
        headers.insert("authorization", "Bearer k3".parse().unwrap());
        assert_eq!(keys.authorize(&headers), Err(AdminAuthError::UnknownKey));
        headers.insert("authorization", "Bearer k2".parse().unwrap());
        assert_eq!(keys.authorize(&headers), Ok(()));
    }

    #[test]
    fn bad_lines_are_refused_by_number() {
        let line_of = |text: &str| match AdminKeys::parse(text) {
            Err(AdminKeysError::BadLine { line, .. }) => line,
            other => panic!("{other:?}"),
        };
        let good = hash_key("k");
        assert_eq!(line_of(&format!("{good}\nk\n")), 2);
        assert_eq!(line_of("# c\nsha256:abc\n"), 2);
        assert_eq!(line_of(&format!("{}\n", good.to_uppercase())), 1);
        assert!(matches!(
            AdminKeys::parse("# nothing\n"),
            Err(AdminKeysError::Empty)
        ));
        let missing = AdminKeys::load(Path::new("/nonexistent/admin-keys")).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/admin-keys"));
    }
}
