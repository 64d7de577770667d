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

/// A component that exports the pre sign-up interface (enough to look
/// like a plugin) and traps in its start function, so it fails while being
/// instantiated.
pub fn traps_when_instantiated() -> Vec<u8> {
    wat::parse_str(
        r#"(component
            (core module $m
                (func $start unreachable)
                (start $start)
                (func (export "handle") (result i32) i32.const 0))
            (core instance $i (instantiate $m))
            (func $handle (result (result)) (canon lift (core func $i "handle")))
            (instance $iface (export "handle" (func $handle)))
            (export "triggerfish:user-pool/pre-sign-up@0.1.0" (instance $iface)))"#,
    )
    .expect("valid component text")
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
