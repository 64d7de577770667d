//! Several hosts as one (`serve --shared-plugins`): real `triggerfish
//! serve` processes sharing their tenants through a real `nats-server`
//! (Debian's 2.9.10 in CI). A deploy through one host serves on every
//! host; a refused one changes none; a removed tenant is gone on all; a
//! host started later serves the same chains before it says it is ready;
//! the hosts ride out a restart of the server.
//!
//! Without `nats-server` on the PATH these tests say so and pass, unless
//! `CI` is set (see `nats.rs`).

use crate::common::*;
use crate::nats::NatsServer;
use serde_json::Value;
use std::time::{Duration, Instant};
use triggerfish::auth::hash_key;

const OPERATOR_KEY: &str = "cluster-operator-key";
const EVENTS_KEY: &str = "acme-events-key";
const DEPLOY_KEY: &str = "acme-deploy-key";

/// How long a change may take to reach every host.
const SPREAD: Duration = Duration::from_secs(2);

/// `acme`'s settings: one key that sends events, one that deploys, and
/// the probe `10-gate` in `mode` (`auto-confirm`, or `deny` with a
/// message).
fn acme_toml(mode: &str) -> String {
    format!(
        "[auth]\nkeys = [\"{}\"]\ndeploy-keys = [\"{}\"]\n\
         [plugins.10-gate.config]\nmode = \"{mode}\"\nmessage = \"closed by {mode}\"\n",
        hash_key(EVENTS_KEY),
        hash_key(DEPLOY_KEY)
    )
}

/// One nats-server and the hosts sharing it, each with a plugins folder
/// of its own (empty: the tenants come from the store).
struct Cluster {
    hosts: Vec<ServeProcess>,
    _folders: Vec<tempfile::TempDir>,
    keys: tempfile::TempDir,
    nats: NatsServer,
}

impl Cluster {
    fn start(hosts: usize) -> Option<Cluster> {
        let nats = NatsServer::start()?;
        let keys = tempfile::tempdir().unwrap();
        std::fs::write(
            keys.path().join("admin-keys"),
            format!("{}\n", hash_key(OPERATOR_KEY)),
        )
        .unwrap();
        let mut cluster = Cluster {
            hosts: Vec::new(),
            _folders: Vec::new(),
            keys,
            nats,
        };
        for _ in 0..hosts {
            cluster.add_host();
        }
        Some(cluster)
    }

    /// Starts one more host; returns once it says it serves.
    fn add_host(&mut self) -> &ServeProcess {
        let folder = tempfile::tempdir().unwrap();
        let keys = self.keys.path().join("admin-keys");
        let host = ServeProcess::start(
            folder.path(),
            &[
                "--streams",
                &self.nats.url,
                "--shared-plugins",
                "--admin-keys",
                keys.to_str().unwrap(),
            ],
        );
        self._folders.push(folder);
        self.hosts.push(host);
        self.hosts.last().unwrap()
    }

    fn base(&self, host: usize) -> &str {
        &self.hosts[host].base
    }

    fn logs(&self) -> String {
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| format!("--- host {i}:\n{}", h.last_log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `acme` created through host 0 by the operator, and `10-gate`
    /// deployed through it with the tenant's deploy key; returns once every
    /// host confirms sign-ups.
    async fn with_acme(&self) {
        let (status, body) = put(
            self.base(0),
            "/v1/tenants/acme/config",
            OPERATOR_KEY,
            acme_toml("auto-confirm").into_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = put(
            self.base(0),
            "/v1/tenants/acme/plugins/10-gate",
            DEPLOY_KEY,
            wasm(guests::PRESIGNUP_PROBE),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        self.until_all(Duration::from_secs(10), |answer| answer == &Ok(true))
            .await;
    }

    /// Waits until every host's answer to a sign-up passes `done`, for at
    /// most `within`; returns how long it took.
    async fn until_all(
        &self,
        within: Duration,
        done: impl Fn(&Result<bool, String>) -> bool,
    ) -> Duration {
        let started = Instant::now();
        for host in 0..self.hosts.len() {
            loop {
                let answer = signup(self.base(host)).await;
                if done(&answer) {
                    break;
                }
                assert!(
                    started.elapsed() < within,
                    "host {host} still answers {answer:?} after {within:?}\n{}",
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        started.elapsed()
    }
}

fn wasm(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

async fn put(base: &str, path: &str, key: &str, body: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .put(format!("{base}{path}"))
        .bearer_auth(key)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn delete(base: &str, path: &str, key: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .delete(format!("{base}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(base: &str, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The chain's answer to a sign-up of jane@example.com on `base`:
/// `autoConfirmUser`, or the status and error.
async fn signup(base: &str) -> Result<bool, String> {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/tenants/acme/events"))
        .bearer_auth(EVENTS_KEY)
        .json(&pre_sign_up("jane@example.com"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!(
            "{status} {}",
            body["error"]["message"].as_str().unwrap_or_default()
        ));
    }
    body["response"]["autoConfirmUser"]
        .as_bool()
        .ok_or_else(|| format!("no autoConfirmUser: {body}"))
}

/// Each host's plugins of `acme`: name and hash.
async fn plugins(cluster: &Cluster) -> Vec<Vec<(String, String)>> {
    let mut all = Vec::new();
    for host in 0..cluster.hosts.len() {
        let (status, body) = get(
            cluster.base(host),
            "/v1/tenants/acme/plugins",
            Some(EVENTS_KEY),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        all.push(
            body["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().to_owned(),
                        p["hash"].as_str().unwrap().to_owned(),
                    )
                })
                .collect(),
        );
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_through_one_host_serves_on_all_three_within_2_s() {
    let Some(cluster) = Cluster::start(3) else {
        return;
    };
    let _timing = timing_sensitive().await;
    // A tenant with no plugin yet: sign-ups come back unconfirmed.
    let (status, body) = put(
        cluster.base(0),
        "/v1/tenants/acme/config",
        OPERATOR_KEY,
        acme_toml("auto-confirm").into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    cluster
        .until_all(Duration::from_secs(10), |a| a == &Ok(false))
        .await;

    // The plugin, deployed through host 0, answers on hosts 1 and 2.
    let (status, body) = put(
        cluster.base(0),
        "/v1/tenants/acme/plugins/10-gate",
        DEPLOY_KEY,
        wasm(guests::PRESIGNUP_PROBE),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        signup(cluster.base(0)).await,
        Ok(true),
        "live on host 0 when answered"
    );
    let took = cluster.until_all(SPREAD, |a| a == &Ok(true)).await;
    eprintln!("the plugin served on all three {took:?} after the deploy's answer");
    let listed = plugins(&cluster).await;
    assert!(
        listed.iter().all(|l| l == &listed[0] && l.len() == 1),
        "{listed:?}"
    );

    // New settings, deployed through host 1, reach hosts 0 and 2.
    let (status, body) = put(
        cluster.base(1),
        "/v1/tenants/acme/config",
        DEPLOY_KEY,
        acme_toml("deny").into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    cluster
        .until_all(SPREAD, |a| {
            a.as_ref()
                .is_err_and(|e| e.starts_with("422") && e.contains("closed by deny"))
        })
        .await;

    // A plugin deleted through host 2 is gone from all three.
    let (status, body) = delete(
        cluster.base(2),
        "/v1/tenants/acme/plugins/10-gate",
        DEPLOY_KEY,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    cluster.until_all(SPREAD, |a| a == &Ok(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_plugin_or_tenant_toml_is_refused_and_no_host_changes() {
    let Some(cluster) = Cluster::start(3) else {
        return;
    };
    cluster.with_acme().await;
    let before = plugins(&cluster).await;

    let mut broken = wasm(guests::PRESIGNUP_PROBE);
    broken.truncate(broken.len() / 2);
    for (host, body) in [(0, b"not a component".to_vec()), (1, broken)] {
        let (status, answer) = put(
            cluster.base(host),
            "/v1/tenants/acme/plugins/10-gate",
            DEPLOY_KEY,
            body,
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["kind"], "invalid-plugin", "{answer}");
    }
    let (status, answer) = put(
        cluster.base(2),
        "/v1/tenants/acme/plugins/20-new",
        DEPLOY_KEY,
        b"\0asm".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = put(
        cluster.base(2),
        "/v1/tenants/acme/config",
        DEPLOY_KEY,
        b"[auth\nkeys = 1".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["kind"], "invalid-config", "{answer}");

    // A refused tenant.toml creates no tenant either.
    let (status, answer) = put(
        cluster.base(0),
        "/v1/tenants/newcomer/config",
        OPERATOR_KEY,
        b"[auth]\nmode = \"sometimes\"\n".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = put(
        cluster.base(0),
        "/v1/tenants/newcomer/plugins/10-gate",
        OPERATOR_KEY,
        wasm(guests::PRESIGNUP_PROBE),
    )
    .await;
    assert_eq!(status, 404, "{answer}");

    // Time for a change to spread, had there been one.
    tokio::time::sleep(SPREAD).await;
    assert_eq!(plugins(&cluster).await, before);
    for host in 0..3 {
        let (status, body) = get(cluster.base(host), "/healthz", None).await;
        assert_eq!(
            (status, &body["tenants"]),
            (200, &Value::from(1)),
            "host {host}: {body}"
        );
    }
    cluster.until_all(SPREAD, |a| a == &Ok(true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_removed_is_gone_on_all_three() {
    let Some(cluster) = Cluster::start(3) else {
        return;
    };
    cluster.with_acme().await;

    // Only the operator removes a tenant.
    let (status, body) = delete(cluster.base(1), "/v1/tenants/acme", DEPLOY_KEY).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = delete(cluster.base(1), "/v1/tenants/acme", OPERATOR_KEY).await;
    assert_eq!(status, 200, "{body}");
    // An unknown tenant is answered as a key it does not know.
    cluster
        .until_all(SPREAD, |a| a.as_ref().is_err_and(|e| e.starts_with("401")))
        .await;
    for host in 0..3 {
        let (status, body) = get(cluster.base(host), "/healthz", None).await;
        assert_eq!(
            (status, &body["tenants"]),
            (200, &Value::from(0)),
            "host {host}: {body}"
        );
    }
    let (status, body) = delete(cluster.base(2), "/v1/tenants/acme", OPERATOR_KEY).await;
    assert_eq!(status, 404, "{body}");

    // Created again, it starts from nothing.
    let (status, body) = put(
        cluster.base(2),
        "/v1/tenants/acme/config",
        OPERATOR_KEY,
        acme_toml("auto-confirm").into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    cluster.until_all(SPREAD, |a| a == &Ok(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_started_after_the_deploys_serves_the_same_chain_once_ready() {
    let Some(mut cluster) = Cluster::start(2) else {
        return;
    };
    // Seeded from a plugins folder by `triggerfish deploy --folder`, with
    // the operator's key: the tenant is created by its tenant.toml.
    let seed = PluginsDir::new();
    seed.plugin("acme", "10-gate.wasm", guests::PRESIGNUP_PROBE)
        .settings("acme", &acme_toml("deny"));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_triggerfish"))
        .args(["deploy", "--folder"])
        .arg(seed.path())
        .args(["--url", cluster.base(0)])
        .env("TRIGGERFISH_DEPLOY_KEY", OPERATOR_KEY)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("live as the tenant.toml of acme")
            && printed.contains("live as 10-gate in acme"),
        "{printed}"
    );
    cluster
        .until_all(Duration::from_secs(10), |a| {
            a.as_ref()
                .is_err_and(|e| e.starts_with("422") && e.contains("closed by deny"))
        })
        .await;

    // The new host's folder is empty: it says it is ready only once it
    // serves what the store holds.
    let late = cluster.add_host().base.clone();
    let (status, body) = get(&late, "/healthz", None).await;
    assert_eq!(status, 200, "{body}");
    let answer = signup(&late).await;
    assert!(
        answer
            .as_ref()
            .is_err_and(|e| e.starts_with("422") && e.contains("closed by deny")),
        "{answer:?}"
    );
    let listed = plugins(&cluster).await;
    assert!(
        listed.iter().all(|l| l == &listed[0] && l.len() == 1),
        "{listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_keep_serving_while_nats_restarts_and_follow_deploys_after() {
    let Some(mut cluster) = Cluster::start(3) else {
        return;
    };
    cluster.with_acme().await;

    cluster.nats.stop();
    // Without the store, every host serves what it had.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        cluster.until_all(SPREAD, |a| a == &Ok(true)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A deploy meanwhile is refused whole: nothing is stored anywhere.
    let (status, body) = put(
        cluster.base(0),
        "/v1/tenants/acme/config",
        DEPLOY_KEY,
        acme_toml("deny").into_bytes(),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    cluster.until_all(SPREAD, |a| a == &Ok(true)).await;

    cluster.nats.resume();
    // A deploy after the restart (once the host has reconnected) reaches
    // all three.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = put(
            cluster.base(2),
            "/v1/tenants/acme/config",
            DEPLOY_KEY,
            acme_toml("deny").into_bytes(),
        )
        .await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{status} {body}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster
        .until_all(Duration::from_secs(15), |a| {
            a.as_ref()
                .is_err_and(|e| e.starts_with("422") && e.contains("closed by deny"))
        })
        .await;
}
