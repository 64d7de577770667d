//! What the integration tests share: the built guests, and plugin folders
//! laid out in a temporary directory.

use std::path::{Path, PathBuf};

/// The project tasks (`cargo xtask`), for tests of what they write.
pub use xtask;

/// Paths of the built guests, one constant per crate (`EMAIL_DENY_LIST`,
/// `HOSTILE`, ...).
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// A plugins folder in a temporary directory, removed when dropped.
pub struct PluginsDir {
    root: tempfile::TempDir,
}

impl Default for PluginsDir {
    fn default() -> Self {
        PluginsDir::new()
    }
}

impl PluginsDir {
    pub fn new() -> PluginsDir {
        PluginsDir {
            root: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }

    pub fn tenant_dir(&self, tenant: &str) -> PathBuf {
        let dir = self.root.path().join(tenant);
        std::fs::create_dir_all(&dir).expect("a tenant folder");
        dir
    }

    /// Copies a built guest into a tenant folder as `file_name`.
    pub fn plugin(&self, tenant: &str, file_name: &str, guest: &str) -> &Self {
        std::fs::copy(guest, self.tenant_dir(tenant).join(file_name)).expect("copy a guest");
        self
    }

    /// Writes any bytes into a tenant folder.
    pub fn file(&self, tenant: &str, file_name: &str, bytes: impl AsRef<[u8]>) -> &Self {
        std::fs::write(self.tenant_dir(tenant).join(file_name), bytes).expect("write a file");
        self
    }

    /// Writes the tenant's `tenant.toml`.
    pub fn settings(&self, tenant: &str, toml: &str) -> &Self {
        self.file(tenant, "tenant.toml", toml)
    }
}
