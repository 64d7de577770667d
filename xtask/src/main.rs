//! `cargo xtask <task>`: project tasks that need nothing but Cargo.
//!
//! - `build-plugins`: build every guest for wasm32-wasip2.
//! - `demo [--listen ADDR]`: build the plugins, lay out a `demo` tenant in
//!   `target/demo/`, and serve it.
//! - `bench [--seconds N] [--out FILE]`: build in release mode and write
//!   BENCHMARKS.md (see `bench/`).
//! - `demo-plugins`: build the plugins and lay out the demo tenant again
//!   (a running demo host picks them up).

use std::path::Path;
use std::process::{Command, ExitCode};
use xtask::{build_guests, workspace_root, Guest};

/// The demo tenant's chain: (file name in the tenant folder, package).
const DEMO_CHAIN: &[(&str, &str)] = &[
    ("10-email-deny-list.wasm", "email-deny-list"),
    ("20-email-allow-list.wasm", "email-allow-list"),
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
        _ => {
            Err("usage: cargo xtask build-plugins | demo [--listen ADDR] | demo-plugins | bench [--seconds N] [--out FILE]".to_owned())
        }
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
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["run", "-p", "triggerfish", "--", "serve", "--plugins-dir"])
        .arg(&plugins_dir)
        .args(["--listen", &listen])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| "the host exited with an error".to_owned())
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
        // Copy, then rename into place: a host watching the folder never
        // sees a half-written plugin.
        let partial = tenant_dir.join(format!(".{file}.partial"));
        std::fs::copy(&guest.wasm, &partial)
            .and_then(|_| std::fs::rename(&partial, tenant_dir.join(file)))
            .map_err(|e| format!("cannot copy {}: {e}", guest.wasm.display()))?;
    }
    let settings = workspace_root()
        .join("xtask")
        .join("demo")
        .join("tenant.toml");
    std::fs::copy(&settings, tenant_dir.join("tenant.toml"))
        .map_err(|e| format!("cannot copy {}: {e}", settings.display()))?;
    Ok(())
}
