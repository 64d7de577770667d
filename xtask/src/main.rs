//! `cargo xtask <task>`: project tasks that need nothing but Cargo.
//!
//! - `build-plugins`: build every guest for wasm32-wasip2.
//! - `demo [--listen ADDR]`: build the plugins, lay out a `demo` tenant in
//!   `target/demo/`, make an operator key (`target/demo-operator/`, kept
//!   across runs) for `/metrics` and `/status`, and serve it.
//! - `bench [--seconds N] [--out FILE] [--only SECTION,...]`: build in
//!   release mode and write BENCHMARKS.md, or print only the named
//!   sections (see `bench/`).
//! - `demo-plugins`: build the plugins and lay out the demo tenant again
//!   (a running demo host picks them up).
//! - `build-js`: build the JavaScript plugins (componentize-js from npm,
//!   installed into `target/js-tools`).
//! - `build-py`: build the Python plugins (componentize-py from PyPI,
//!   installed into `target/py-tools`).
//! - `new <name> --trigger <trigger> [--lang rust|python]`: write a new
//!   plugin in `plugins/<name>` that builds (and, in Rust, passes its
//!   tests) as it is.
//! - `install <name> [--tenant T] [--as FILE.wasm] [--config 'KEY = VALUE']...`:
//!   build the plugins (a Python one with `build-py`) and put one into a
//!   tenant folder of the demo
//!   (`30-<name>.wasm` in `demo` by default), copied then renamed so a
//!   running host never sees half of it; `--config` lines replace the
//!   plugin's `[plugins.<stem>.config]` section of that tenant's
//!   `tenant.toml`, written before the plugin.

use std::path::Path;
use std::process::{Command, ExitCode};
use xtask::{
    build_guests, demo_admin_key, install_plugin, new_plugin, template, with_plugin_config,
    workspace_root, Guest,
};

const USAGE: &str =
    "usage: cargo xtask build-plugins | build-js | build-py | demo [--listen ADDR] | demo-plugins
       | bench [--seconds N] [--out FILE] [--only SECTION,...]
       | new <name> --trigger <trigger> [--lang rust|python]
       | install <name> [--tenant T] [--as FILE.wasm] [--config 'KEY = VALUE']...
                        [--url URL [--key KEY]]";

/// The demo tenant's chain: (file name in the tenant folder, package).
const DEMO_CHAIN: &[(&str, &str)] = &[
    ("10-email-deny-list.wasm", "email-deny-list"),
    ("20-email-allow-list.wasm", "email-allow-list"),
    ("40-override-token-claims.wasm", "override-token-claims"),
    ("40-custom-auth-challenge.wasm", "custom-auth-challenge"),
    ("40-custom-message-link.wasm", "custom-message-link"),
    ("50-sync-sample.wasm", "sync-sample"),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build-plugins") => build_guests().map(|guests| {
            for guest in guests {
                println!("{}", guest.wasm.display());
            }
        }),
        Some("demo") => demo(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("demo-plugins") => {
            build_guests().and_then(|guests| lay_out_demo(&guests, &demo_dir()))
        }
        Some("build-js") => build_js(),
        Some("build-py") => build_py(),
        Some("new") => new(&args[1..]),
        Some("install") => install(&args[1..]),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the host and the benchmarks in release mode and writes
/// BENCHMARKS.md. Needs wrk (installed from Debian's packages if missing
/// and we may) and Node.js for the HTTP baselines.
fn bench(args: &[String]) -> Result<(), String> {
    let have = |program: &str| Command::new(program).arg("--version").output().is_ok();
    if !have("wrk") {
        eprintln!("xtask: wrk is missing; installing it with apt-get");
        let installed = Command::new("apt-get")
            .args(["install", "-y", "wrk"])
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            return Err("wrk is needed for the HTTP figures: apt-get install wrk".to_owned());
        }
    }
    if !have("node") {
        return Err("Node.js is needed for the baseline: install node".to_owned());
    }
    build_guests()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let built = Command::new(&cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--release",
            "-p",
            "triggerfish",
            "-p",
            "triggerfish-bench",
        ])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !built.success() {
        return Err("the release build failed".to_owned());
    }
    let mut report = Command::new(workspace_root().join("target/release/triggerfish-bench"));
    report
        .current_dir(workspace_root())
        .arg("report")
        .args(args)
        // Error paths must not capture backtraces while being timed.
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0");
    let status = report
        .status()
        .map_err(|e| format!("cannot run the benchmarks: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| "the benchmarks failed".to_owned())
}

fn demo(args: &[String]) -> Result<(), String> {
    let listen = match args {
        [] => "127.0.0.1:8080".to_owned(),
        [flag, addr] if flag == "--listen" => addr.clone(),
        _ => return Err("usage: cargo xtask demo [--listen ADDR]".to_owned()),
    };
    let guests = build_guests()?;
    lay_out_demo(&guests, &demo_dir())?;
    let plugins_dir = workspace_root().join("target").join("demo");
    println!("demo tenant ready in {}", plugins_dir.display());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // The operator's key, for /metrics and /status; kept across runs.
    let operator_dir = workspace_root().join("target").join("demo-operator");
    let (key, keys_file) = demo_admin_key(&operator_dir, |key| hash_key(&cargo, key))?;
    let key_file = operator_dir.join("admin-key");
    let key_file = key_file
        .strip_prefix(workspace_root())
        .unwrap_or(&key_file)
        .display();
    println!(
        "\noperator key: {key}\n  (kept in {key_file}; its hash in {})\n\
         metrics:     curl -s -H \"Authorization: Bearer $(cat {key_file})\" http://{listen}/metrics\n\
         status page: http://{listen}/status (log in with the key)\n",
        keys_file.display()
    );
    let status = Command::new(&cargo)
        .current_dir(workspace_root())
        .args(["run", "-p", "triggerfish", "--", "serve", "--plugins-dir"])
        .arg(&plugins_dir)
        .args(["--listen", &listen])
        .arg("--admin-keys")
        .arg(&keys_file)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| "the host exited with an error".to_owned())
}

/// `triggerfish hash-key`, the key on standard input (not in the process
/// list).
fn hash_key(cargo: &str, key: &str) -> Result<String, String> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["run", "-q", "-p", "triggerfish", "--", "hash-key"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(key.as_bytes())
        .map_err(|e| format!("cannot hand the key to hash-key: {e}"))?;
    let output = child
        .wait_with_output()
        .map_err(|e| format!("cannot run hash-key: {e}"))?;
    let hash = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || !hash.starts_with("sha256:") {
        return Err("`triggerfish hash-key` failed".to_owned());
    }
    Ok(hash)
}

fn build_js() -> Result<(), String> {
    for plugin in xtask::js::JS_PLUGINS {
        let wasm = xtask::js::build_js_plugin(plugin.name).map_err(|e| e.to_string())?;
        println!("{}", wasm.display());
    }
    Ok(())
}

fn build_py() -> Result<(), String> {
    for plugin in xtask::py::py_plugins() {
        let wasm = xtask::py::build(&plugin).map_err(|e| e.to_string())?;
        println!("{}", wasm.display());
    }
    Ok(())
}

fn new(args: &[String]) -> Result<(), String> {
    let usage = || {
        format!(
            "usage: cargo xtask new <name> --trigger <trigger> [--lang rust|python]\ntriggers: {}",
            template::trigger_names()
        )
    };
    let (mut name, mut trigger, mut lang) = (None, None, template::Lang::Rust);
    let mut rest = args;
    while let [first, tail @ ..] = rest {
        match (first.as_str(), tail) {
            ("--trigger", [value, tail @ ..]) => (trigger, rest) = (Some(value), tail),
            ("--lang", [value, tail @ ..]) => (lang, rest) = (template::Lang::parse(value)?, tail),
            (flag, _) if flag.starts_with("--") => return Err(usage()),
            (_, tail) if name.is_none() => (name, rest) = (Some(first), tail),
            _ => return Err(usage()),
        }
    }
    let (Some(name), Some(trigger)) = (name, trigger) else {
        return Err(usage());
    };
    if lang == template::Lang::Python {
        let dir = xtask::new_py_plugin(name, trigger)?;
        let file = name.replace('-', "_");
        println!(
            "wrote {dir} (and excluded it from the Cargo workspace in Cargo.toml)\n\nnext:\n  \
             cargo xtask build-py          # target/guests/py/{file}.wasm\n  \
             cargo xtask install {name}  # into the running demo (cargo xtask demo)",
            dir = dir.display()
        );
        return Ok(());
    }
    let dir = new_plugin(name, trigger)?;
    let file = name.replace('-', "_");
    println!(
        "wrote {dir}\n\nnext:\n  cargo test -p {name}\n  cargo xtask build-plugins   \
         # target/guests/wasm32-wasip2/guest/{file}.wasm\n  cargo xtask install {name}  \
         # into the running demo (cargo xtask demo)",
        dir = dir.display()
    );
    Ok(())
}

fn install(args: &[String]) -> Result<(), String> {
    let Some((name, mut rest)) = args.split_first() else {
        return Err(USAGE.to_owned());
    };
    let (mut tenant, mut file) = ("demo".to_owned(), format!("30-{name}.wasm"));
    let mut config = Vec::new();
    let (mut url, mut key) = (None, None);
    while let [flag, value, tail @ ..] = rest {
        match flag.as_str() {
            "--tenant" => tenant = value.clone(),
            "--as" => file = value.clone(),
            "--url" => url = Some(value.clone()),
            "--key" => key = Some(value.clone()),
            "--config" if value.contains('=') => config.push(value.clone()),
            "--config" => return Err(format!("--config takes `KEY = VALUE`, not `{value}`")),
            _ => return Err(USAGE.to_owned()),
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(USAGE.to_owned());
    }
    if !file.ends_with(".wasm") || file.contains(['/', '\\']) {
        return Err(format!("`{file}` must be a file name ending in .wasm"));
    }
    if url.is_some() && !config.is_empty() {
        return Err(
            "--config edits the local tenant.toml; against a host at --url, \
             deploy a whole tenant.toml with `triggerfish deploy --config FILE`"
                .to_owned(),
        );
    }
    if key.is_some() && url.is_none() {
        return Err("--key is for deploying to a host at --url".to_owned());
    }
    // A Python plugin (plugins/<name>/pyproject.toml) or a crate.
    let python = xtask::py::py_plugins()
        .into_iter()
        .find(|p| p.name == *name);
    let wasm = match python {
        Some(plugin) => xtask::py::build(&plugin).map_err(|e| e.to_string())?,
        None => {
            build_guests()?
                .into_iter()
                .find(|g| g.package == *name)
                .ok_or_else(|| format!("no plugin `{name}` under plugins/"))?
                .wasm
        }
    };
    if let Some(url) = url {
        return deploy_over_http(&wasm, &tenant, &file, &url, key.as_deref());
    }
    let dir = workspace_root().join("target").join("demo").join(&tenant);
    if !config.is_empty() {
        let path = dir.join("tenant.toml");
        let settings = std::fs::read_to_string(&path).unwrap_or_default();
        let stem = file.trim_end_matches(".wasm");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::write(&path, with_plugin_config(&settings, stem, &config))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("configured [plugins.{stem}.config] in {}", path.display());
    }
    let installed = install_plugin(&wasm, &dir, &file)?;
    println!("installed {}", installed.display());
    Ok(())
}

/// Deploys a built plugin to a running host with `triggerfish deploy`
/// (the key from `key`, else from TRIGGERFISH_DEPLOY_KEY).
fn deploy_over_http(
    wasm: &Path,
    tenant: &str,
    file: &str,
    url: &str,
    key: Option<&str>,
) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root())
        .args(["run", "--quiet", "-p", "triggerfish", "--", "deploy"])
        .arg(wasm)
        .args(["--tenant", tenant, "--url", url, "--name"])
        .arg(file.trim_end_matches(".wasm"));
    if let Some(key) = key {
        // Through the environment, not the command line, so that it stays
        // out of the process list.
        command.env("TRIGGERFISH_DEPLOY_KEY", key);
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| "the deploy failed (see above)".to_owned())
}

/// The demo tenant's folder.
fn demo_dir() -> std::path::PathBuf {
    workspace_root().join("target").join("demo").join("demo")
}

fn lay_out_demo(guests: &[Guest], tenant_dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(tenant_dir).map_err(|e| e.to_string())?;
    for (file, package) in DEMO_CHAIN {
        let guest = guests
            .iter()
            .find(|g| g.package == *package)
            .ok_or_else(|| format!("no guest crate {package}"))?;
        install_plugin(&guest.wasm, tenant_dir, file)?;
    }
    let settings = workspace_root()
        .join("xtask")
        .join("demo")
        .join("tenant.toml");
    std::fs::copy(&settings, tenant_dir.join("tenant.toml"))
        .map_err(|e| format!("cannot copy {}: {e}", settings.display()))?;
    Ok(())
}
