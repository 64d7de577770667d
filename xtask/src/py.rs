//! Plugins written in Python, built into components with componentize-py
//! (CPython in WebAssembly) from PyPI.
//!
//! A Python plugin is a folder under `plugins/` with a `pyproject.toml`
//! whose `[tool.triggerfish]` table names the world of the contract it is
//! built against and the module componentize-py starts from:
//!
//! ```toml
//! [tool.triggerfish]
//! world = "triggerfish:records/dynamodb-stream-plugin@0.1.0"
//! module = "app"
//! ```
//!
//! The tool is installed once per version into
//! `target/py-tools/componentize-py-<version>` with `pip install
//! --require-hashes`, from `xtask/componentize-py.txt` (the version and the
//! hashes of its wheels), so every machine builds with the same tool;
//! nothing is installed globally. Builds go to `target/guests/py`, and a
//! build is skipped when the sources, the WIT and the tool are as they were
//! for the last one.
//!
//! A machine without Python 3 and pip, or without access to PyPI, gets
//! [`PyError::Unavailable`] rather than a failure, so the rest of the
//! project builds and tests without them.

use crate::{guest_target_dir, workspace_root};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Held by every build and install in this process.
static BUILDS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The componentize-py release the plugins are built with (also in
/// `xtask/componentize-py.txt`, with its hashes).
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// A Python plugin: a folder with a `pyproject.toml` that has a
/// `[tool.triggerfish]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyPlugin {
    /// Its folder's name, and the name of the `.wasm` (dashes become
    /// underscores).
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
    /// The world of the contract, such as
    /// `triggerfish:records/dynamodb-stream-plugin@0.1.0`.
    pub world: String,
    /// The module componentize-py starts from (`app` for `app.py`).
    pub module: String,
}

/// Why a Python plugin was not built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PyError {
    /// The tools cannot be had here: no `python3`, no pip, or pip could
    /// not install componentize-py (no registry). Not a fault of the
    /// plugin.
    Unavailable(String),
    /// The tools ran and the build failed, or the plugin's folder is not
    /// a Python plugin.
    Failed(String),
}

impl std::fmt::Display for PyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PyError::Unavailable(why) => write!(f, "the Python tools are not available: {why}"),
            PyError::Failed(why) => write!(f, "building the Python plugin failed: {why}"),
        }
    }
}

/// Where Python plugins are built to.
pub fn py_output_dir() -> PathBuf {
    guest_target_dir().join("py")
}

/// The `.wasm` a Python plugin builds to.
pub fn py_wasm(plugin: &PyPlugin) -> PathBuf {
    py_output_dir().join(format!("{}.wasm", plugin.name.replace('-', "_")))
}

/// The Python plugin in `dir`, read from its `pyproject.toml`.
pub fn py_plugin(dir: &Path) -> Result<PyPlugin, PyError> {
    let manifest = dir.join("pyproject.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| PyError::Failed(format!("cannot read {}: {e}", manifest.display())))?;
    let value = |key: &str| tool_value(&text, key);
    let world = value("world").ok_or_else(|| {
        PyError::Failed(format!(
            "{} has no `world = \"...\"` in [tool.triggerfish]",
            manifest.display()
        ))
    })?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| PyError::Failed(format!("{} has no name", dir.display())))?
        .to_owned();
    Ok(PyPlugin {
        name,
        dir: dir.to_owned(),
        world,
        module: value("module").unwrap_or_else(|| "app".to_owned()),
    })
}

/// `key = "value"` in the `[tool.triggerfish]` table of a `pyproject.toml`
/// (a small reader: xtask has no dependencies).
fn tool_value(pyproject: &str, key: &str) -> Option<String> {
    let mut in_table = false;
    for line in pyproject.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_table = line == "[tool.triggerfish]";
            continue;
        }
        if !in_table {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim() == key {
            let v = v.split(" #").next().unwrap_or("").trim();
            return Some(v.trim_matches('"').to_owned());
        }
    }
    None
}

/// Every Python plugin under `plugins/`, by name.
pub fn py_plugins() -> Vec<PyPlugin> {
    let Ok(entries) = std::fs::read_dir(workspace_root().join("plugins")) else {
        return Vec::new();
    };
    let mut plugins: Vec<PyPlugin> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("pyproject.toml").is_file())
        .filter_map(|entry| py_plugin(&entry.path()).ok())
        .collect();
    plugins.sort_by(|a, b| a.name.cmp(&b.name));
    plugins
}

/// Builds the Python plugin `name` under `plugins/` and returns its
/// `.wasm`, installing componentize-py first if needed.
pub fn build_py_plugin(name: &str) -> Result<PathBuf, PyError> {
    let dir = workspace_root().join("plugins").join(name);
    if !dir.join("pyproject.toml").is_file() {
        return Err(PyError::Failed(format!(
            "no Python plugin `{name}` (plugins/{name}/pyproject.toml)"
        )));
    }
    build(&py_plugin(&dir)?)
}

/// Builds a Python plugin (from any folder) against the repository's
/// `wit/` and returns its `.wasm` in [`py_output_dir`].
pub fn build(plugin: &PyPlugin) -> Result<PathBuf, PyError> {
    // One build at a time in a process (the tests build from several
    // threads): the install and the output files are shared, and a build
    // uses every core anyway.
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let root = workspace_root();
    let out_dir = py_output_dir();
    let wasm = py_wasm(plugin);
    let stamp_path = out_dir.join(format!("{}.stamp", plugin.name));

    let python = python()?;
    let tools = install_tools(&python)?;
    let stamp = format!(
        "componentize-py {COMPONENTIZE_PY}\n{} {}\n{:016x}\n",
        plugin.world,
        plugin.module,
        crate::js::fingerprint(&[&plugin.dir, &root.join("wit")])
            .map_err(|e| PyError::Failed(format!("cannot read the sources: {e}")))?
    );
    if wasm.exists() && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(&stamp) {
        return Ok(wasm);
    }
    std::fs::create_dir_all(&out_dir).map_err(|e| PyError::Failed(e.to_string()))?;
    let partial = out_dir.join(format!(".{}.wasm.partial", plugin.name));
    let out = componentize_py(&python, &tools)
        .current_dir(&plugin.dir)
        .arg("--wit-path")
        .arg(root.join("wit"))
        .args(["--world", &plugin.world, "--quiet", "componentize"])
        // Only the plugin's own folder: never the build machine's
        // site-packages.
        .arg("--python-path")
        .arg(&plugin.dir)
        .arg(&plugin.module)
        .arg("--output")
        .arg(&partial)
        .output()
        .map_err(|e| PyError::Failed(format!("cannot run {python}: {e}")))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(PyError::Failed(format!(
            "componentize-py: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    std::fs::rename(&partial, &wasm).map_err(|e| PyError::Failed(e.to_string()))?;
    std::fs::write(&stamp_path, stamp).map_err(|e| PyError::Failed(e.to_string()))?;
    Ok(wasm)
}

/// Writes componentize-py's Python bindings of `world` into `out`: stubs
/// of the contract's types and imports, for editors, type checkers and
/// tests run outside a component (their imports raise
/// `NotImplementedError`).
pub fn write_bindings(world: &str, out: &Path) -> Result<(), PyError> {
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let python = python()?;
    let tools = install_tools(&python)?;
    let result = componentize_py(&python, &tools)
        .arg("--wit-path")
        .arg(workspace_root().join("wit"))
        .args(["--world", world, "--quiet", "bindings"])
        .arg(out)
        .output()
        .map_err(|e| PyError::Failed(format!("cannot run {python}: {e}")))?;
    if !result.status.success() {
        return Err(PyError::Failed(format!(
            "componentize-py bindings: {}",
            String::from_utf8_lossy(&result.stderr)
        )));
    }
    Ok(())
}

/// The Python interpreter: `$PYTHON`, else `python3`.
fn python() -> Result<String, PyError> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let out = Command::new(&python)
        .args(["-c", "import sys; assert sys.version_info >= (3, 9)"])
        .output()
        .map_err(|e| PyError::Unavailable(format!("cannot run `{python}`: {e}")))?;
    if !out.status.success() {
        return Err(PyError::Unavailable(format!(
            "`{python}` is not Python 3.9 or newer"
        )));
    }
    Ok(python)
}

/// componentize-py's command line, run by `python` from `tools`.
fn componentize_py(python: &str, tools: &Path) -> Command {
    let mut command = Command::new(python);
    command
        .args([
            "-I",
            "-c",
            "import sys; sys.path.insert(0, sys.argv.pop(1)); import componentize_py; \
             sys.argv[0] = 'componentize-py'; sys.exit(componentize_py.script())",
        ])
        .arg(tools)
        // componentize-py adds a virtual environment's site-packages to
        // the plugin's path when one is active: the plugin gets only its
        // own folder.
        .env_remove("VIRTUAL_ENV")
        // Its errors are for the plugin's author, not a Rust backtrace.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    command
}

/// `pip install` of `xtask/componentize-py.txt` into
/// `target/py-tools/componentize-py-<version>`, once.
fn install_tools(python: &str) -> Result<PathBuf, PyError> {
    let requirements = workspace_root().join("xtask").join("componentize-py.txt");
    let wanted = std::fs::read(&requirements)
        .map_err(|e| PyError::Failed(format!("cannot read {}: {e}", requirements.display())))?;
    let parent = workspace_root().join("target").join("py-tools");
    let tools = parent.join(format!("componentize-py-{COMPONENTIZE_PY}"));
    let installed = tools.join(".installed-requirements.txt");
    if std::fs::read(&installed).ok().as_ref() == Some(&wanted) {
        return Ok(tools);
    }
    // Into a folder of its own, then renamed: an interrupted install is
    // never taken for a finished one, nor another process's for ours.
    let partial = parent.join(format!(
        ".componentize-py-{COMPONENTIZE_PY}.partial-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| PyError::Failed(e.to_string()))?;
    let out = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-deps", "--only-binary", ":all:", "--require-hashes"])
        .arg("--target")
        .arg(&partial)
        .arg("--requirement")
        .arg(&requirements)
        .output()
        .map_err(|e| PyError::Unavailable(format!("cannot run pip: {e}")))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(PyError::Unavailable(format!(
            "`pip install componentize-py=={COMPONENTIZE_PY}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::write(partial.join(".installed-requirements.txt"), &wanted)
        .map_err(|e| PyError::Failed(e.to_string()))?;
    let _ = std::fs::remove_dir_all(&tools);
    if let Err(e) = std::fs::rename(&partial, &tools) {
        let _ = std::fs::remove_dir_all(&partial);
        // Another process may have finished the same install first.
        if std::fs::read(&installed).ok().as_ref() != Some(&wanted) {
            return Err(PyError::Failed(format!(
                "cannot move the install into {}: {e}",
                tools.display()
            )));
        }
    }
    Ok(tools)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tool_table() {
        let text = "[project]\nname = \"x\"\nworld = \"no\"\n\n[tool.triggerfish]\n\
                    world = \"triggerfish:records/sqs-plugin@0.1.0\"  # the contract\n";
        assert_eq!(
            tool_value(text, "world").as_deref(),
            Some("triggerfish:records/sqs-plugin@0.1.0")
        );
        assert_eq!(tool_value(text, "module"), None);
    }

    #[test]
    fn finds_the_python_plugins_and_pins_the_tool() {
        let plugins = py_plugins();
        let logger = plugins
            .iter()
            .find(|p| p.name == "dynamodb-stream-logger-py")
            .expect("the example");
        assert_eq!(
            logger.world,
            "triggerfish:records/dynamodb-stream-plugin@0.1.0"
        );
        assert!(logger.dir.join("app.py").is_file());
        let pinned =
            std::fs::read_to_string(workspace_root().join("xtask/componentize-py.txt")).unwrap();
        assert!(
            pinned.contains(&format!("componentize-py=={COMPONENTIZE_PY} ")),
            "{pinned}"
        );
    }
}
