//! Building the WebAssembly guests: the example plugins in `plugins/` and
//! the test guests in `tests/guests/`; and writing new plugin crates
//! ([`template`]).
//!
//! Used by `cargo xtask` and by the test support crate's build script, so
//! there is one way to build a plugin.

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod js;
pub mod py;
pub mod template;

/// The target plugins are built for.
pub const TARGET: &str = "wasm32-wasip2";
/// The Cargo profile plugins are built with (see the workspace manifest).
pub const PROFILE: &str = "guest";

/// A guest crate: its package name and the `.wasm` it builds.
#[derive(Debug, Clone)]
pub struct Guest {
    pub package: String,
    pub wasm: PathBuf,
}

/// The repository's top directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// Where guests are built. Separate from the host's target directory so a
/// build script can build guests while Cargo holds the host's build lock.
pub fn guest_target_dir() -> PathBuf {
    workspace_root().join("target").join("guests")
}

/// Every guest crate under `plugins/` and `tests/guests/`: each `cdylib`
/// package (a plugin) and each binary package (a WASI command, for tests
/// of components that are not plugins).
pub fn guests() -> Vec<Guest> {
    let root = workspace_root();
    let out = guest_target_dir().join(TARGET).join(PROFILE);
    let mut guests = Vec::new();
    for dir in ["plugins", "tests/guests"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(manifest) = std::fs::read_to_string(entry.path().join("Cargo.toml")) else {
                continue;
            };
            let is_command = entry.path().join("src/main.rs").is_file();
            if !manifest.contains("cdylib") && !is_command {
                continue;
            }
            if let Some(package) = package_name(&manifest) {
                // Cargo names a library's output after the crate (dashes
                // become underscores) and a binary's after the package.
                let stem = if is_command {
                    package.clone()
                } else {
                    package.replace('-', "_")
                };
                let wasm = out.join(format!("{stem}.wasm"));
                guests.push(Guest { package, wasm });
            }
        }
    }
    guests.sort_by(|a, b| a.package.cmp(&b.package));
    guests
}

fn package_name(manifest: &str) -> Option<String> {
    manifest
        .lines()
        .skip_while(|line| line.trim() != "[package]")
        .find_map(|line| {
            let value = line.trim().strip_prefix("name")?.trim().strip_prefix('=')?;
            Some(value.trim().trim_matches('"').to_owned())
        })
}

/// Makes sure the `wasm32-wasip2` target is installed. Machines with
/// `RUSTUP_AUTO_INSTALL=0` do not add it on their own.
pub fn ensure_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == TARGET) =>
        {
            Ok(())
        }
        Ok(_) => {
            let status = Command::new("rustup")
                .args(["target", "add", TARGET])
                .status()
                .map_err(|e| format!("cannot run rustup: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("`rustup target add {TARGET}` failed"))
            }
        }
        // No rustup: trust the toolchain to have the target, and let the
        // build say so if it does not.
        Err(_) => Ok(()),
    }
}

/// Builds every guest and returns them.
pub fn build_guests() -> Result<Vec<Guest>, String> {
    ensure_target()?;
    let guests = guests();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root())
        .args(["build", "--profile", PROFILE, "--target", TARGET])
        .env("CARGO_TARGET_DIR", guest_target_dir());
    for guest in &guests {
        command.args(["-p", &guest.package]);
    }
    // Settings meant for the outer build (a build script's environment)
    // must not leak into the guests' build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building the WebAssembly guests failed".to_owned());
    }
    Ok(guests)
}

/// Writes a new plugin crate under `plugins/` (see [`template`]) and
/// formats it with rustfmt when rustfmt is there.
pub fn new_plugin(name: &str, trigger: &str) -> Result<PathBuf, String> {
    // Cargo refuses two packages of one name in a workspace.
    if guests().iter().any(|guest| guest.package == name) {
        return Err(format!(
            "a crate named `{name}` exists already: choose another name"
        ));
    }
    let dir = template::new_plugin(&workspace_root().join("plugins"), name, trigger)?;
    format_crate(&dir);
    Ok(dir)
}

/// Writes a new Python plugin under `plugins/` (see
/// [`template::new_py_plugin`]) and excludes its folder from the Cargo
/// workspace, whose `plugins/*` would take it for a crate.
pub fn new_py_plugin(name: &str, trigger: &str) -> Result<PathBuf, String> {
    if guests().iter().any(|guest| guest.package == name)
        || py::py_plugins().iter().any(|plugin| plugin.name == name)
    {
        return Err(format!(
            "a plugin named `{name}` exists already: choose another name"
        ));
    }
    let dir = template::new_py_plugin(&workspace_root().join("plugins"), name, trigger)?;
    let manifest_path = workspace_root().join("Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path)
        .map_err(|e| format!("cannot read {}: {e}", manifest_path.display()))?;
    let excluded = template::exclude_from_workspace(&manifest, &format!("plugins/{name}"));
    std::fs::write(&manifest_path, excluded)
        .map_err(|e| format!("cannot write {}: {e}", manifest_path.display()))?;
    Ok(dir)
}

/// Runs rustfmt over a generated crate; a machine without rustfmt keeps
/// the generated text, which compiles all the same.
pub fn format_crate(dir: &Path) {
    let _ = Command::new("rustfmt")
        .args(["--edition", "2021"])
        .arg(dir.join("src").join("lib.rs"))
        .status();
}

/// Copies a built `.wasm` into a tenant folder as `file_name`: copied
/// beside it under a hidden name first, then renamed into place, so a host
/// watching the folder never loads a half-written plugin.
pub fn install_plugin(wasm: &Path, tenant_dir: &Path, file_name: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(tenant_dir)
        .map_err(|e| format!("cannot create {}: {e}", tenant_dir.display()))?;
    let target = tenant_dir.join(file_name);
    let partial = tenant_dir.join(format!(".{file_name}.partial"));
    std::fs::copy(wasm, &partial)
        .and_then(|_| std::fs::rename(&partial, &target))
        .map_err(|e| format!("cannot copy {}: {e}", wasm.display()))?;
    Ok(target)
}

/// `settings` (the text of `tenant.toml`, possibly empty) with the section
/// `[plugins.<stem>.config]` replaced by `lines`, or added at the end.
pub fn with_plugin_config(settings: &str, stem: &str, lines: &[String]) -> String {
    let header = format!("[plugins.{stem}.config]");
    let mut out = String::new();
    let mut skipping = false;
    for line in settings.lines() {
        let trimmed = line.trim();
        if trimmed == header {
            skipping = true;
            continue;
        }
        if skipping && trimmed.starts_with('[') {
            skipping = false;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    out.push_str(&header);
    out.push('\n');
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The demo's operator key: `dir/admin-key` holds the key (readable by
/// its owner only), `dir/admin-keys` its hash for `serve --admin-keys`.
/// An existing key is kept, so a key saved in a password manager goes on
/// working; a new one is 32 random bytes from the system, in hex.
/// `hash` turns a key into its stored form (`triggerfish hash-key`).
pub fn demo_admin_key(
    dir: &Path,
    hash: impl FnOnce(&str) -> Result<String, String>,
) -> Result<(String, PathBuf), String> {
    use std::io::Read;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let key_file = dir.join("admin-key");
    let keys_file = dir.join("admin-keys");
    let existing = std::fs::read_to_string(&key_file)
        .ok()
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty());
    let key = match existing {
        Some(key) => key,
        None => {
            let mut bytes = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut bytes))
                .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
            let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let key = format!("tf-admin-{key}");
            write_private(&key_file, &format!("{key}\n"))?;
            key
        }
    };
    write_private(&keys_file, &format!("{}\n", hash(&key)?))?;
    Ok((key, keys_file))
}

/// Writes `text` to `path`, readable and writable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_config_sections_are_replaced() {
        let settings = "[auth]\nmode = \"none\"\n\n[plugins.30-x.config]\na = 1\n\n[plugins.40-y.config]\nb = 2\n";
        let out = with_plugin_config(settings, "30-x", &["a = 2".to_owned()]);
        assert_eq!(
            out,
            "[auth]\nmode = \"none\"\n\n[plugins.40-y.config]\nb = 2\n\n[plugins.30-x.config]\na = 2\n"
        );
        assert_eq!(
            with_plugin_config("", "30-x", &["a = 1".to_owned()]),
            "[plugins.30-x.config]\na = 1\n"
        );
    }

    #[test]
    fn finds_the_example_plugins() {
        let names: Vec<String> = guests().into_iter().map(|g| g.package).collect();
        assert!(names.contains(&"email-deny-list".to_owned()), "{names:?}");
        assert!(names.contains(&"sync-sample".to_owned()), "{names:?}");
        assert!(!names.contains(&"triggerfish-sdk".to_owned()), "{names:?}");
    }

    #[test]
    fn the_demo_admin_key_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("xtask-admin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let hash = |key: &str| Ok(format!("sha256:of-{key}"));
        let (key, keys_file) = demo_admin_key(&dir, hash).unwrap();
        assert!(key.starts_with("tf-admin-") && key.len() == 9 + 64, "{key}");
        assert_eq!(
            std::fs::read_to_string(&keys_file).unwrap(),
            format!("sha256:of-{key}\n")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("admin-key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the key file is private");
        }
        let (again, _) = demo_admin_key(&dir, hash).unwrap();
        assert_eq!(again, key);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
