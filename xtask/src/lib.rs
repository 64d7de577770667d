//! Building the WebAssembly guests: the example plugins in `plugins/` and
//! the test guests in `tests/guests/`.
//!
//! Used by `cargo xtask` and by the test support crate's build script, so
//! there is one way to build a plugin.

use std::path::{Path, PathBuf};
use std::process::Command;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_example_plugins() {
        let names: Vec<String> = guests().into_iter().map(|g| g.package).collect();
        assert!(names.contains(&"email-deny-list".to_owned()), "{names:?}");
        assert!(names.contains(&"sync-sample".to_owned()), "{names:?}");
        assert!(!names.contains(&"triggerfish-sdk".to_owned()), "{names:?}");
    }
}
