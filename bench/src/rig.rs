//! Servers out of process and the load against them: `triggerfish serve`
//! and wrk, for the sections over HTTP.

use crate::fixtures::event;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use triggerfish_test_support::PluginsDir;

/// A server under test, killed when dropped.
pub(crate) struct Server(pub(crate) Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn wait_for_port(addr: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "{addr} never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Waits for `/healthz` to answer 200: every tenant loaded.
pub(crate) fn wait_for_ready(addr: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let status = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{addr}/healthz"),
            ])
            .output()?;
        if status.stdout == b"200" {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "{addr} never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) struct Load {
    pub(crate) rps: f64,
    pub(crate) p50: String,
    pub(crate) p99: String,
    pub(crate) errors: u64,
}

impl Load {
    pub(crate) fn p50_ms(&self) -> f64 {
        wrk_ms(&self.p50)
    }

    pub(crate) fn p99_ms(&self) -> f64 {
        wrk_ms(&self.p99)
    }
}

/// A latency as wrk prints it (`150.00us`, `1.23ms`, `2.00s`), in ms.
fn wrk_ms(text: &str) -> f64 {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let value: f64 = text[..split].parse().unwrap_or(f64::NAN);
    value
        * match &text[split..] {
            "us" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            _ => f64::NAN,
        }
}

/// The release `triggerfish` binary next to this one.
pub(crate) fn server_binary() -> anyhow::Result<PathBuf> {
    let bench = std::env::current_exe()?;
    let triggerfish = bench
        .parent()
        .context("the binary's folder")?
        .join("triggerfish");
    anyhow::ensure!(
        triggerfish.is_file(),
        "{} is missing: build it with `cargo build --release -p triggerfish`",
        triggerfish.display()
    );
    Ok(triggerfish)
}

/// A wrk script that posts the benchmark event.
pub(crate) fn post_script(dir: &PluginsDir) -> anyhow::Result<PathBuf> {
    let script = dir.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [[{}]]\n",
            event()
        ),
    )?;
    Ok(script)
}

/// `triggerfish serve` on `addr` for the tenants in `plugins`.
pub(crate) fn serve(triggerfish: &Path, addr: &str, plugins: &Path) -> anyhow::Result<Server> {
    let child = Command::new(triggerfish)
        .args([
            "serve",
            "--no-watch",
            "--no-cache",
            "--listen",
            addr,
            "--plugins-dir",
        ])
        .arg(plugins)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Server(child))
}

pub(crate) fn wrk(
    url: &str,
    connections: usize,
    seconds: u64,
    script: &Path,
) -> anyhow::Result<Load> {
    let threads = connections.clamp(1, 2).to_string();
    let out = Command::new("wrk")
        .args([
            "-t",
            &threads,
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .context("wrk runs (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    let errors = field("Non-2xx or 3xx responses:").parse().unwrap_or(0);
    Ok(Load {
        rps: field("Requests/sec:").parse().unwrap_or(0.0),
        p50: field("50%"),
        p99: field("99%"),
        errors,
    })
}

pub(crate) fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
