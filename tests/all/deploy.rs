//! Deploying over HTTP: plugins and `tenant.toml` replaced through the
//! API, checked before anything changes, live when the answer comes.

use crate::common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use triggerfish::auth::hash_key;
use triggerfish::tenant::operator::OperatorConfig;
use triggerfish::tenant::registry::Tenants;

const EVENTS_KEY: &str = "acme-events-key";
const DEPLOY_KEY: &str = "acme-deploy-key";
const OTHER_DEPLOY_KEY: &str = "other-deploy-key";

/// `acme`: one key that sends events, one that also deploys; a plugin
/// `10-gate` (the probe: confirms every sign-up). `other`: its own keys.
fn acme_settings(extra: &str) -> String {
    format!(
        "[auth]\nkeys = [\"{}\"]\ndeploy-keys = [\"{}\"]\n\
         [plugins.10-gate.config]\nmode = \"auto-confirm\"\ndomains = [\"example.com\"]\n{extra}",
        hash_key(EVENTS_KEY),
        hash_key(DEPLOY_KEY)
    )
}

fn folder() -> PluginsDir {
    let dir = PluginsDir::new();
    dir.plugin("acme", "10-gate.wasm", guests::PRESIGNUP_PROBE)
        .settings("acme", &acme_settings(""));
    dir.settings(
        "other",
        &format!(
            "[auth]\ndeploy-keys = [\"{}\"]\n",
            hash_key(OTHER_DEPLOY_KEY)
        ),
    );
    dir
}

/// What the operator allows in these tests: few outbound hosts and a
/// concurrency quota a tenant must not raise.
fn operator() -> OperatorConfig {
    OperatorConfig::parse(
        "[defaults.quotas]\nconcurrency = 64\nplugins = 4\n\
         [defaults.outbound]\nallowed-hosts = [\"api.good.test\"]\n",
        128 << 20,
    )
    .unwrap()
}

async fn serve(dir: &PluginsDir) -> (Server, Arc<Tenants>) {
    let tenants = Arc::new(
        Tenants::open_with(loader(), operator(), dir.path())
            .await
            .unwrap(),
    );
    (Server::start(tenants.clone()).await, tenants)
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn put(base: &str, path: &str, key: &str, body: Vec<u8>) -> (u16, Value) {
    let response = client()
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
    let response = client()
        .delete(format!("{base}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `autoConfirmUser` of the answer to a sign-up of jane@example.com.
async fn confirmed(base: &str) -> Result<bool, String> {
    let response = client()
        .post(format!("{base}/v1/tenants/acme/events"))
        .bearer_auth(EVENTS_KEY)
        .json(&pre_sign_up("jane@example.com"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    body["response"]["autoConfirmUser"]
        .as_bool()
        .ok_or_else(|| format!("no autoConfirmUser: {body}"))
}

fn wasm(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_plugin_serves_within_a_second_under_load_with_no_failed_request() {
    let _timing = timing_sensitive().await;
    let dir = folder();
    let (server, _tenants) = serve(&dir).await;
    assert_eq!(confirmed(&server.base).await, Ok(true));

    // Clients send events without pause while the plugin is replaced: the
    // allow-list (same config) leaves autoConfirmUser as it came.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let new_seen_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (base, stop, failed, sent, new_seen_at) = (
            server.base.clone(),
            stop.clone(),
            failed.clone(),
            sent.clone(),
            new_seen_at.clone(),
        );
        clients.push(tokio::spawn(async move {
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                match confirmed(&base).await {
                    Ok(true) => {}
                    Ok(false) => {
                        new_seen_at.lock().unwrap().get_or_insert_with(Instant::now);
                    }
                    Err(error) => {
                        eprintln!("failed: {error}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let deploy_started = Instant::now();
    let (status, body) = put(
        &server.base,
        "/v1/tenants/acme/plugins/10-gate",
        DEPLOY_KEY,
        wasm(guests::EMAIL_ALLOW_LIST),
    )
    .await;
    let answered = Instant::now();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plugin"], "10-gate");
    assert_eq!(body["replaced"], true);
    assert_eq!(body["live"], true);
    assert_eq!(body["triggers"], json!(["pre-sign-up"]));
    assert_eq!(body["errors"], json!([]));
    let hash = triggerfish::encoding::sha256_hex(&wasm(guests::EMAIL_ALLOW_LIST));
    assert_eq!(body["hash"], hash);
    // Live when the answer says so: the next event runs the new version.
    assert_eq!(confirmed(&server.base).await, Ok(false));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let live_after = answered - deploy_started;
    eprintln!(
        "deploy answered live after {live_after:?}; {} requests, {} failed",
        sent.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    // The whole deploy (upload, the check with its compile, the write and
    // the reload) within a liveness bound; the answer itself means live
    // (checked above: the very next event ran the new version).
    assert!(
        live_after < Duration::from_secs(5),
        "the deploy took {live_after:?}"
    );
    assert!(new_seen_at.lock().unwrap().is_some());
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(sent.load(Ordering::Relaxed) > 10);
    // The file is in the folder, whole, and nothing else was left there.
    let files: Vec<String> = std::fs::read_dir(dir.tenant_dir("acme"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(
        std::fs::read(dir.tenant_dir("acme").join("10-gate.wasm")).unwrap(),
        wasm(guests::EMAIL_ALLOW_LIST)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_plugin_is_refused_with_its_reason_and_nothing_changes() {
    let dir = folder();
    let (server, tenants) = serve(&dir).await;
    let before = tenants.tenant("acme").unwrap().plugins[0].hash().to_owned();
    let path = "/v1/tenants/acme/plugins/10-gate";

    let (status, body) = put(&server.base, path, DEPLOY_KEY, b"\0asm garbage".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["kind"], "invalid-plugin");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a valid WebAssembly component"),
        "{body}"
    );
    // A component that is no plugin: the reason names what it exports.
    let (status, body) = put(&server.base, path, DEPLOY_KEY, wasm(guests::NOT_A_PLUGIN)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("implements no trigger"),
        "{body}"
    );
    // One that traps when instantiated, under a new name: not installed.
    let (status, body) = put(
        &server.base,
        "/v1/tenants/acme/plugins/20-trap",
        DEPLOY_KEY,
        triggerfish_test_support::traps_when_instantiated(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("traps when instantiated"),
        "{body}"
    );

    let after = tenants.tenant("acme").unwrap();
    assert_eq!(after.plugins.len(), 1);
    assert_eq!(after.plugins[0].hash(), before);
    assert!(after.failures.is_empty(), "{:?}", after.failures);
    assert!(!dir.tenant_dir("acme").join("20-trap.wasm").exists());
    assert_eq!(
        std::fs::read(dir.tenant_dir("acme").join("10-gate.wasm")).unwrap(),
        wasm(guests::PRESIGNUP_PROBE)
    );
    assert_eq!(confirmed(&server.base).await, Ok(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_need_a_key_with_the_deploy_right() {
    let dir = folder();
    let (server, _tenants) = serve(&dir).await;
    let path = "/v1/tenants/acme/plugins/30-new";
    let body = || wasm(guests::EMAIL_DENY_LIST);

    let (status, answer) = put(&server.base, path, EVENTS_KEY, body()).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("deploy-keys"));
    let (status, _) = put(&server.base, path, OTHER_DEPLOY_KEY, body()).await;
    assert_eq!(status, 403);
    let (status, _) = put(&server.base, path, "no-such-key", body()).await;
    assert_eq!(status, 401);
    let response = client()
        .put(format!("{}{path}", server.base))
        .body(body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // AWS signatures never deploy.
    let response = client()
        .put(format!("{}{path}", server.base))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261123/us-east-1/lambda/aws4_request, \
             SignedHeaders=host, Signature=00",
        )
        .body(body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // An unknown tenant answers as a tenant whose keys these are not.
    let (status, _) = put(
        &server.base,
        "/v1/tenants/nobody/plugins/30-new",
        DEPLOY_KEY,
        body(),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = delete(&server.base, "/v1/tenants/acme/plugins/10-gate", EVENTS_KEY).await;
    assert_eq!(status, 403);
    let (status, _) = put(
        &server.base,
        "/v1/tenants/acme/config",
        EVENTS_KEY,
        acme_settings("").into_bytes(),
    )
    .await;
    assert_eq!(status, 403);
    assert!(!dir.tenant_dir("acme").join("30-new.wasm").exists());
    assert_eq!(confirmed(&server.base).await, Ok(true));

    // The deploy key sends events too.
    let response = client()
        .post(format!("{}/v1/tenants/acme/events", server.base))
        .bearer_auth(DEPLOY_KEY)
        .json(&pre_sign_up("jane@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_names_that_leave_the_folder_are_refused() {
    let dir = folder();
    let (server, _tenants) = serve(&dir).await;
    for name in [
        "..%2F..%2Fescaped",
        "..",
        "%2E%2E",
        "sub%2Fdir",
        "back%5Cslash",
        ".hidden",
        "new%0Aline",
        "%00",
    ] {
        let (status, body) = put(
            &server.base,
            &format!("/v1/tenants/acme/plugins/{name}"),
            DEPLOY_KEY,
            wasm(guests::EMAIL_DENY_LIST),
        )
        .await;
        // `..` as a whole segment is resolved by the client or the router
        // first: never a plugin.
        assert!(
            status == 400 || status == 404 || status == 405,
            "{name}: {status} {body}"
        );
        assert_ne!(status / 100, 2, "{name}");
    }
    let (status, body) = put(
        &server.base,
        "/v1/tenants/acme/plugins/..%2F..%2Fescaped",
        DEPLOY_KEY,
        wasm(guests::EMAIL_DENY_LIST),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("path separator"));
    // Nothing was written anywhere in the plugins folder or above it.
    let escaped = dir.path().parent().unwrap().join("escaped.wasm");
    assert!(!escaped.exists());
    let names: Vec<String> = std::fs::read_dir(dir.tenant_dir("acme"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_added_and_deleted_within_the_quotas() {
    let dir = folder();
    dir.settings(
        "acme",
        &acme_settings("[quotas]\nplugins = 2\nwasm-kib = 100\n"),
    );
    let (server, tenants) = serve(&dir).await;
    let path = "/v1/tenants/acme/plugins/20-deny.wasm";

    let (status, body) = put(
        &server.base,
        path,
        DEPLOY_KEY,
        wasm(guests::EMAIL_DENY_LIST),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["plugin"], "20-deny");
    assert_eq!(body["replaced"], false);
    let names: Vec<String> = tenants
        .tenant("acme")
        .unwrap()
        .plugins
        .iter()
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(names, ["10-gate", "20-deny"]);

    // Over `[quotas] plugins`.
    let (status, body) = put(
        &server.base,
        "/v1/tenants/acme/plugins/30-more",
        DEPLOY_KEY,
        wasm(guests::EMAIL_DENY_LIST),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["kind"], "quota-exceeded");
    // Over `[quotas] wasm-kib` (the body alone, before any check).
    let (status, body) = put(&server.base, path, DEPLOY_KEY, vec![0; 101 * 1024]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("wasm-kib"));

    let (status, body) = delete(&server.base, path, DEPLOY_KEY).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"], true);
    assert_eq!(tenants.tenant("acme").unwrap().plugins.len(), 1);
    assert!(!dir.tenant_dir("acme").join("20-deny.wasm").exists());
    let (status, body) = delete(&server.base, path, DEPLOY_KEY).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["kind"], "unknown-plugin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploys_to_one_tenant_all_land() {
    let dir = folder();
    let (server, tenants) = serve(&dir).await;
    let deploys = ["20-a", "21-b", "22-c"].map(|name| {
        let base = server.base.clone();
        tokio::spawn(async move {
            put(
                &base,
                &format!("/v1/tenants/acme/plugins/{name}"),
                DEPLOY_KEY,
                wasm(guests::EMAIL_DENY_LIST),
            )
            .await
        })
    });
    for deploy in deploys {
        let (status, body) = deploy.await.unwrap();
        assert_eq!(status, 201, "{body}");
    }
    let tenant = tenants.tenant("acme").unwrap();
    assert_eq!(tenant.plugins.len(), 4, "{:?}", tenant.plugins);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_toml_is_replaced_only_by_a_valid_file_within_the_operators_policy() {
    let dir = folder();
    let (server, tenants) = serve(&dir).await;
    let path = "/v1/tenants/acme/config";
    let config = |extra: &str| acme_settings(extra).into_bytes();

    // The probe now denies every sign-up with the configured message.
    let deny = acme_settings("").replace(
        "mode = \"auto-confirm\"",
        "mode = \"deny\"\nmessage = \"closed for now\"",
    );
    let (status, body) = put(&server.base, path, DEPLOY_KEY, deny.into_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["live"], true);
    assert_eq!(body["errors"], json!([]));
    let answer = confirmed(&server.base).await.unwrap_err();
    assert!(
        answer.starts_with("422") && answer.contains("closed for now"),
        "{answer}"
    );
    let live = std::fs::read_to_string(dir.tenant_dir("acme").join("tenant.toml")).unwrap();

    // Refused, and nothing changes: a typo, what the operator owns, a file
    // that would lock its deployer out.
    let refusals = [
        (config("[limits]\nfuell = 1\n"), 400, "fuell"),
        (
            config("[quotas]\nconcurrency = 100000\n"),
            400,
            "[quotas] concurrency",
        ),
        (
            config("[outbound]\nallowed-hosts = [\"evil.test\"]\n"),
            400,
            "evil.test",
        ),
        (
            config("[plugins.10-gate.outbound]\nallowed-hosts = [\"*\"]\n"),
            400,
            "plugins.10-gate.outbound",
        ),
        (config("[limits]\ntimeout-ms = 600000\n"), 400, "timeout-ms"),
        (
            b"[auth]\nmode = \"none\"\n".to_vec(),
            409,
            "lock this key out",
        ),
        (
            b"[auth]\ndeploy-keys = [\"my-key-in-clear\"]\n".to_vec(),
            409,
            "lock this key out",
        ),
        (vec![0xff, 0xfe], 400, "UTF-8"),
    ];
    for (body, status, says) in refusals {
        let (got, answer) = put(&server.base, path, DEPLOY_KEY, body).await;
        assert_eq!(got, status, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{says}: {message}");
        assert_eq!(
            std::fs::read_to_string(dir.tenant_dir("acme").join("tenant.toml")).unwrap(),
            live
        );
    }
    let tenant = tenants.tenant("acme").unwrap();
    assert!(tenant.failures.is_empty(), "{:?}", tenant.failures);
    assert_eq!(tenant.quotas.concurrency, 64);

    // Within the policy: lower quotas, an allowed host.
    let (status, body) = put(
        &server.base,
        path,
        DEPLOY_KEY,
        config("[quotas]\nconcurrency = 2\n[outbound]\nallowed-hosts = [\"api.good.test\"]\n"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(tenants.tenant("acme").unwrap().quotas.concurrency, 2);
    assert_eq!(confirmed(&server.base).await, Ok(true));
}

/// `triggerfish deploy ARGS`: its exit code, stdout and stderr.
fn deploy_cli(args: &[&str], key: Option<&str>) -> (i32, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_triggerfish"));
    command
        .arg("deploy")
        .args(args)
        .env_remove("TRIGGERFISH_DEPLOY_KEY");
    if let Some(key) = key {
        command.env("TRIGGERFISH_DEPLOY_KEY", key);
    }
    let out = command.output().expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_command_against_a_real_host() {
    let dir = folder();
    let host = tokio::task::spawn_blocking({
        let path = dir.path().to_owned();
        move || ServeProcess::start(&path, &["--no-cache"])
    })
    .await
    .unwrap();
    let base = host.base.clone();
    assert_eq!(confirmed(&base).await, Ok(true), "{}", host.last_log());

    let cli = |args: Vec<String>, key: Option<&'static str>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            deploy_cli(&args, key)
        })
    };
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend(["--tenant", "acme", "--url", &base].map(String::from));
        args
    };

    // A plugin, named by --name, with the key from the environment.
    let (code, stdout, stderr) = cli(
        args(&[guests::EMAIL_ALLOW_LIST, "--name", "10-gate"]),
        Some(DEPLOY_KEY),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{stderr}\n{}", host.last_log());
    assert!(
        stdout.contains("live as 10-gate in acme (replaced"),
        "{stdout}"
    );
    assert!(stdout.contains("triggers: pre-sign-up"), "{stdout}");
    assert_eq!(confirmed(&base).await, Ok(false));

    // A broken one: exit 1 and the host's reason; nothing changes.
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x0d\0\x01\0").unwrap();
    let mut broken_args = args(&[broken.to_str().unwrap(), "--name", "10-gate"]);
    broken_args.extend(["--key".into(), DEPLOY_KEY.into()]);
    let (code, _, stderr) = cli(broken_args, None).await.unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("400 invalid-plugin"), "{stderr}");
    assert_eq!(confirmed(&base).await, Ok(false));

    // A key without the deploy right.
    let (code, _, stderr) = cli(args(&[guests::EMAIL_DENY_LIST]), Some(EVENTS_KEY))
        .await
        .unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("403 forbidden"), "{stderr}");

    // tenant.toml: the probe is back under its own name with a config that
    // denies; a broken file is refused.
    let toml = dir.path().join("acme.toml");
    std::fs::write(
        &toml,
        acme_settings("[plugins.20-probe.config]\nmode = \"deny\"\nmessage = \"shut\"\n"),
    )
    .unwrap();
    let (code, stdout, stderr) = cli(
        args(&[
            "--config",
            toml.to_str().unwrap(),
            guests::PRESIGNUP_PROBE,
            "--name",
            "20-probe",
        ]),
        Some(DEPLOY_KEY),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("live as the tenant.toml of acme"),
        "{stdout}"
    );
    assert!(stdout.contains("live as 20-probe in acme (new"), "{stdout}");
    let denied = confirmed(&base).await.unwrap_err();
    assert!(denied.contains("shut"), "{denied}");
    std::fs::write(&toml, "[limits]\nfuell = 1\n").unwrap();
    let (code, _, stderr) = cli(
        args(&["--config", toml.to_str().unwrap()]),
        Some(DEPLOY_KEY),
    )
    .await
    .unwrap();
    assert_eq!(code, 1);
    assert!(
        stderr.contains("invalid-config") && stderr.contains("fuell"),
        "{stderr}"
    );

    // Delete it again.
    let (code, stdout, stderr) = cli(args(&["--delete", "20-probe"]), Some(DEPLOY_KEY))
        .await
        .unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("deleted 20-probe"), "{stdout}");
    assert_eq!(confirmed(&base).await, Ok(false));

    // No key, no host.
    let (code, _, stderr) = cli(args(&[guests::EMAIL_DENY_LIST]), None).await.unwrap();
    assert_eq!(code, 2);
    assert!(stderr.contains("TRIGGERFISH_DEPLOY_KEY"), "{stderr}");
    drop(host);
    let (code, _, stderr) = cli(args(&[guests::EMAIL_DENY_LIST]), Some(DEPLOY_KEY))
        .await
        .unwrap();
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot connect"), "{stderr}");
}
