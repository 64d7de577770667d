//! `spread`: how long a deploy takes to reach every host of a shared
//! store (`serve --shared-plugins`): three release `triggerfish serve`
//! processes and one `nats-server` on loopback, each host with a compile
//! cache of its own (as on three machines, each compiles a new plugin
//! once). A new build of a plugin is deployed through host A; the time is
//! from A's answer (200: checked, stored, serving on A) to the last host
//! listing the new build as the one it serves.

use crate::harness::{ms, table, Stats};
use crate::sections::{server_binary, variant, wait_for_port};
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
    let (stats, deploy) = rt.block_on(measure(&bases))?;
    Ok(format!(
        "## Spread of a deploy across hosts\n\n{HOSTS} hosts (`serve --shared-plugins`, release builds, each with a compile cache of its own) and one `nats-server` on loopback, on this machine's cores. {DEPLOYS} new builds of a {} KB plugin, each deployed through host A; from A's answer (checked, stored, serving on A) to the last host serving the new build (its plugin listing shows the new hash). The other hosts each fetch and compile it, at the same time, on the same cores:\n\n{}\nThe deploy request itself (A checks and compiles the plugin, stores it, serves it): median {}.\n\n",
        std::fs::read(guests::PRESIGNUP_PROBE)?.len() / 1024,
        table(&["median", "min", "worst"], &[vec![ms(stats.median), ms(stats.min), ms(stats.max)]]),
        ms(deploy.median),
    ))
}

/// Each deploy's spread time, and the deploy requests' own times.
async fn measure(bases: &[String]) -> anyhow::Result<(Stats, Stats)> {
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
    let (mut spread, mut deploys) = (Vec::new(), Vec::new());
    // One more than measured: the first build warms each host up.
    for n in 0..=DEPLOYS {
        let bytes = variant(&probe, 1_000_000 + n);
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
            "deploy {n}: {}",
            answer.text().await?
        );
        let answered = Instant::now();
        for base in &bases[1..] {
            while serving(&http, base).await.as_deref() != Some(hash.as_str()) {
                anyhow::ensure!(
                    answered.elapsed() < Duration::from_secs(60),
                    "deploy {n} never reached {base}"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        if n > 0 {
            spread.push(answered.elapsed());
            deploys.push(answered - sent);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok((Stats::of(spread), Stats::of(deploys)))
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
