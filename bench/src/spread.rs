//! `spread`: how long a deploy takes to reach every host of a shared
//! store (`serve --shared-plugins`): three release `triggerfish serve`
//! processes and one `nats-server` on loopback, each host with a compile
//! cache of its own (as on three machines, each compiles a new plugin
//! once). A new build of a plugin is deployed through host A; the time is
//! from A's answer (200: checked, stored, serving on A) to the last host
//! listing the new build as the one it serves.

use crate::fixtures::variant;
use crate::harness::{ms, table, Stats};
use crate::rig::{server_binary, wait_for_port};
use anyhow::Context;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use triggerfish_test_support::{guests, PluginsDir};

const OPERATOR_KEY: &str = "bench-operator-key";
const HOSTS: usize = 3;
const DEPLOYS: usize = 21;

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn spread() -> anyhow::Result<String> {
    let nats_port = free_port()?;
    let store = PluginsDir::new();
    let _nats = Process(
        Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &nats_port.to_string(),
                "-sd",
            ])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("nats-server (apt-get install nats-server)")?,
    );
    wait_for_port(&format!("127.0.0.1:{nats_port}"))?;
    let keys = PluginsDir::new();
    let keys_file = keys.path().join("admin-keys");
    std::fs::write(
        &keys_file,
        format!("{}\n", triggerfish::auth::hash_key(OPERATOR_KEY)),
    )?;
    let triggerfish = server_binary()?;
    let mut hosts = Vec::new();
    let mut folders = Vec::new();
    for _ in 0..HOSTS {
        let (folder, cache) = (PluginsDir::new(), PluginsDir::new());
        let addr = format!("127.0.0.1:{}", free_port()?);
        let child = Command::new(&triggerfish)
            .args(["serve", "--listen", &addr, "--streams"])
            .arg(format!("nats://127.0.0.1:{nats_port}"))
            .arg("--shared-plugins")
            .arg("--admin-keys")
            .arg(&keys_file)
            .arg("--cache-dir")
            .arg(cache.path())
            .arg("--plugins-dir")
            .arg(folder.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        hosts.push((Process(child), format!("http://{addr}")));
        folders.push((folder, cache));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let bases: Vec<String> = hosts.iter().map(|(_, b)| b.clone()).collect();
    let (new, known, deploy) = rt.block_on(measure(&bases))?;
    let row = |what: &str, stats: Stats| {
        vec![
            what.to_owned(),
            ms(stats.median),
            ms(stats.min),
            ms(stats.max),
        ]
    };
    Ok(format!(
        "## Spread of a deploy across hosts\n\n{HOSTS} hosts (`serve --shared-plugins`, release builds, each with a compile cache of its own) and one `nats-server` on loopback, on this machine's cores. {DEPLOYS} new builds of a {} KB plugin, each deployed through host A, alternating with a deploy of the build before it (which every host has compiled). The time is from A's answer (checked, stored, serving on A) to the last of the other hosts serving the deployed build (its plugin listing shows its hash); for a new build, the other hosts each fetch and compile it, at the same time, on the same cores:\n\n{}\nThe deploy request of a new build itself (A checks and compiles it, stores it, serves it): median {}.\n\n",
        std::fs::read(guests::PRESIGNUP_PROBE)?.len() / 1024,
        table(&["deployed", "median", "min", "worst"], &[row("a new build", new), row("a build every host compiled before", known)]),
        ms(deploy.median),
    ))
}

/// The spread of new builds and of known ones, and the deploy requests'
/// own times (new builds).
async fn measure(bases: &[String]) -> anyhow::Result<(Stats, Stats, Stats)> {
    let http = reqwest::Client::new();
    for base in bases {
        wait_ready(&http, base).await?;
    }
    let config = "[auth]\nmode = \"none\"\n[plugins.10-gate.config]\nmode = \"auto-confirm\"\n";
    let answer = http
        .put(format!("{}/v1/tenants/spread/config", bases[0]))
        .bearer_auth(OPERATOR_KEY)
        .body(config)
        .send()
        .await?;
    anyhow::ensure!(
        answer.status() == 200,
        "creating the tenant: {}",
        answer.text().await?
    );
    let probe = std::fs::read(guests::PRESIGNUP_PROBE)?;
    let (mut new, mut known, mut deploys) = (Vec::new(), Vec::new(), Vec::new());
    // New builds alternate with the build before them, which every host
    // has compiled already: the second figure is the spread alone, the
    // first adds each host's compile. The first round warms up.
    for n in 0..=DEPLOYS {
        let (took, spread) = deploy(&http, bases, variant(&probe, 1_000_000 + n)).await?;
        if n > 0 {
            new.push(spread);
            deploys.push(took);
            let (_, spread) = deploy(&http, bases, variant(&probe, 1_000_000 + n - 1)).await?;
            known.push(spread);
        }
    }
    Ok((Stats::of(new), Stats::of(known), Stats::of(deploys)))
}

/// Deploys `bytes` as `10-gate` through the first host; how long the
/// request took, and from its answer to every other host serving it.
async fn deploy(
    http: &reqwest::Client,
    bases: &[String],
    bytes: Vec<u8>,
) -> anyhow::Result<(Duration, Duration)> {
    let hash = triggerfish::encoding::sha256_hex(&bytes);
    let sent = Instant::now();
    let answer = http
        .put(format!("{}/v1/tenants/spread/plugins/10-gate", bases[0]))
        .bearer_auth(OPERATOR_KEY)
        .body(bytes)
        .send()
        .await?;
    anyhow::ensure!(
        answer.status().is_success(),
        "a deploy: {}",
        answer.text().await?
    );
    let answered = Instant::now();
    for base in &bases[1..] {
        while serving(http, base).await.as_deref() != Some(hash.as_str()) {
            anyhow::ensure!(
                answered.elapsed() < Duration::from_secs(60),
                "a deploy never reached {base}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let spread = answered.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok((answered - sent, spread))
}

/// The hash of the plugin `10-gate` the host serves now.
async fn serving(http: &reqwest::Client, base: &str) -> Option<String> {
    let listing: Value = http
        .get(format!("{base}/v1/tenants/spread/plugins"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    listing["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == "10-gate")?["hash"]
        .as_str()
        .map(str::to_owned)
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(answer) = http.get(format!("{base}/healthz")).send().await {
            if answer.status() == 200 {
                return Ok(());
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "{base} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
