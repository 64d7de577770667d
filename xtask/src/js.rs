//! Plugins written in JavaScript, built into components with
//! componentize-js (SpiderMonkey in WebAssembly) from npm.
//!
//! The tool is installed per plugin into `target/js-tools/<plugin>` with
//! `npm install`, from the `package.json` and `package-lock.json` committed
//! beside the plugin's sources, so every machine builds with the same
//! versions; nothing is installed globally. (Not `npm ci`: npm 11.19
//! refuses there the lock file it wrote itself, which leaves out optional
//! binaries for other systems, such as rolldown's.) A build is skipped when the
//! sources, the lock file and the WIT are as they were for the last one.
//!
//! A machine without Node.js and npm, or without access to the npm
//! registry, gets [`JsError::Unavailable`] rather than a failure, so the
//! rest of the project builds and tests without them.

use crate::{guest_target_dir, workspace_root};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A JavaScript plugin of this repository.
#[derive(Debug, Clone, Copy)]
pub struct JsPlugin {
    /// Its folder under `plugins/`, and the name of the `.wasm`.
    pub name: &'static str,
    /// The module componentize-js starts from (it imports the rest).
    pub entry: &'static str,
    /// The world of the contract it is built against.
    pub world: &'static str,
}

/// The JavaScript plugins.
pub const JS_PLUGINS: &[JsPlugin] = &[JsPlugin {
    name: "email-deny-list-js",
    entry: "lambda.mjs",
    world: "triggerfish:user-pool/pre-sign-up-plugin@0.1.0",
}];

/// Why a JavaScript plugin was not built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsError {
    /// The tools cannot be had here: no `node` or `npm`, or npm could not
    /// install them (no registry). Not a fault of the plugin.
    Unavailable(String),
    /// The tools ran and the build failed.
    Failed(String),
}

impl std::fmt::Display for JsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsError::Unavailable(why) => write!(f, "the JavaScript tools are not available: {why}"),
            JsError::Failed(why) => write!(f, "building the JavaScript plugin failed: {why}"),
        }
    }
}

/// Where JavaScript plugins are built to.
pub fn js_output_dir() -> PathBuf {
    guest_target_dir().join("js")
}

/// Builds the JavaScript plugin `name` (see [`JS_PLUGINS`]) and returns its
/// `.wasm`, installing componentize-js first if needed.
pub fn build_js_plugin(name: &str) -> Result<PathBuf, JsError> {
    let plugin = JS_PLUGINS
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| JsError::Failed(format!("no JavaScript plugin `{name}`")))?;
    let root = workspace_root();
    let source_dir = root.join("plugins").join(plugin.name);
    let out_dir = js_output_dir();
    let wasm = out_dir.join(format!("{}.wasm", plugin.name.replace('-', "_")));
    let stamp_path = out_dir.join(format!("{}.stamp", plugin.name));

    let node = version("node")?;
    version("npm")?;
    let tools = install_tools(plugin, &source_dir)?;

    let stamp = format!(
        "node {node}\n{:016x}\n",
        fingerprint(&[&source_dir, &root.join("wit")])
            .map_err(|e| JsError::Failed(format!("cannot read the sources: {e}")))?
    );
    if wasm.exists() && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(&stamp) {
        return Ok(wasm);
    }
    std::fs::create_dir_all(&out_dir).map_err(|e| JsError::Failed(e.to_string()))?;
    let partial = out_dir.join(format!(".{}.wasm.partial", plugin.name));
    let cli = tools.join("node_modules/@bytecodealliance/componentize-js/src/cli.js");
    let out = Command::new("node")
        .arg(&cli)
        .arg(source_dir.join(plugin.entry))
        .arg("--wit")
        .arg(root.join("wit"))
        .args(["--world-name", plugin.world])
        // The contract gives plugins no outbound HTTP and no HTTP server.
        .args(["--disable", "http", "fetch-event"])
        .arg("--out")
        .arg(&partial)
        .output()
        .map_err(|e| JsError::Failed(format!("cannot run node: {e}")))?;
    if !out.status.success() {
        return Err(JsError::Failed(format!(
            "componentize-js: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    std::fs::rename(&partial, &wasm).map_err(|e| JsError::Failed(e.to_string()))?;
    std::fs::write(&stamp_path, stamp).map_err(|e| JsError::Failed(e.to_string()))?;
    Ok(wasm)
}

/// `<tool> --version`, or why it cannot run.
fn version(tool: &str) -> Result<String, JsError> {
    let out = Command::new(tool)
        .arg("--version")
        .output()
        .map_err(|e| JsError::Unavailable(format!("cannot run `{tool}`: {e}")))?;
    if !out.status.success() {
        return Err(JsError::Unavailable(format!("`{tool} --version` failed")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `npm install` of the plugin's lock file into `target/js-tools/<plugin>`,
/// once per version of the lock file.
fn install_tools(plugin: &JsPlugin, source_dir: &Path) -> Result<PathBuf, JsError> {
    let tools = workspace_root()
        .join("target")
        .join("js-tools")
        .join(plugin.name);
    let read = |file: &str| {
        std::fs::read(source_dir.join(file))
            .map_err(|e| JsError::Failed(format!("cannot read {file} of {}: {e}", plugin.name)))
    };
    let (manifest, lock) = (read("package.json")?, read("package-lock.json")?);
    let installed_lock = tools.join("node_modules").join(".installed-lock.json");
    if std::fs::read(&installed_lock).ok().as_ref() == Some(&lock) {
        return Ok(tools);
    }
    std::fs::create_dir_all(&tools).map_err(|e| JsError::Failed(e.to_string()))?;
    std::fs::write(tools.join("package.json"), &manifest)
        .and_then(|_| std::fs::write(tools.join("package-lock.json"), &lock))
        .map_err(|e| JsError::Failed(e.to_string()))?;
    let out = Command::new("npm")
        .current_dir(&tools)
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .output()
        .map_err(|e| JsError::Unavailable(format!("cannot run npm: {e}")))?;
    if !out.status.success() {
        return Err(JsError::Unavailable(format!(
            "`npm install` in {} failed: {}",
            tools.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::write(&installed_lock, &lock).map_err(|e| JsError::Failed(e.to_string()))?;
    Ok(tools)
}

/// FNV-1a over the paths and contents of every file under `dirs`, in a
/// stable order (leaving out installed packages and Python's caches).
pub(crate) fn fingerprint(dirs: &[&Path]) -> std::io::Result<u64> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                if entry.file_name() != "node_modules" && entry.file_name() != "__pycache__" {
                    walk(&entry.path(), files)?;
                }
            } else {
                files.push(entry.path());
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for dir in dirs {
        walk(dir, &mut files)?;
    }
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for file in files {
        feed(file.to_string_lossy().as_bytes());
        feed(&std::fs::read(&file)?);
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_js_plugin_has_its_files() {
        for plugin in JS_PLUGINS {
            let dir = workspace_root().join("plugins").join(plugin.name);
            for file in [plugin.entry, "package.json", "package-lock.json"] {
                assert!(dir.join(file).is_file(), "{}/{file}", plugin.name);
            }
        }
    }
}
