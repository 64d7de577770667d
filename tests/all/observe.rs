//! Operating the host: `/metrics` and `/status` behind operator keys
//! (`serve --admin-keys`), and `serve --log-format json`, against the real
//! binary.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use triggerfish::auth::hash_key;

pub const ADMIN_KEY: &str = "operator-key-1";
pub const TENANT_KEY: &str = "acme-key";

/// A tenant `acme` running the hostile guest (its mode from each event's
/// `clientMetadata.mode`) with a short budget, one attempt and one
/// invocation at a time; and an `--admin-keys` file beside it.
pub fn acme(dir: &PluginsDir) -> std::path::PathBuf {
    dir.plugin("acme", "10-hostile.wasm", guests::HOSTILE)
        .settings(
            "acme",
            &format!(
                "[auth]\nkeys = [\"{}\"]\n[limits]\ntimeout-ms = 400\nattempts = 1\n\
             [quotas]\nconcurrency = 1\n",
                hash_key(TENANT_KEY)
            ),
        );
    let keys = dir.path().join(".admin-keys");
    std::fs::write(&keys, format!("# operators\n{}\n", hash_key(ADMIN_KEY))).unwrap();
    keys
}

/// A sign-up whose `clientMetadata.mode` tells the hostile guest what to
/// do: `ok`, `sleep` (runs past the budget), anything else is denied
/// ("unknown mode ...").
pub fn sign_up(mode: &str) -> Value {
    let mut event = pre_sign_up("jane@example.com");
    event["request"]["clientMetadata"]["mode"] = json!(mode);
    event
}

pub async fn send(base: &str, tenant: &str, event: &Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/tenants/{tenant}/events"))
        .bearer_auth(TENANT_KEY)
        .body(event.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `/metrics` with `key` as the bearer key: status, and the body.
async fn scrape_as(base: &str, key: Option<&str>) -> (StatusCode, String) {
    let mut request = reqwest::Client::new().get(format!("{base}/metrics"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// Every sample of a scrape, by series (`name{labels}`).
pub async fn scrape(base: &str) -> BTreeMap<String, f64> {
    let (status, text) = scrape_as(base, Some(ADMIN_KEY)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    parse_samples(&text)
}

fn parse_samples(text: &str) -> BTreeMap<String, f64> {
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            (series.to_owned(), value.parse::<f64>().expect("a number"))
        })
        .collect()
}

fn sample(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in {samples:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_events() {
    let dir = PluginsDir::new();
    let keys = acme(&dir);
    let host = ServeProcess::start(dir.path(), &["--admin-keys", keys.to_str().unwrap()]);
    let base = host.base.as_str();

    // Before any event: the gauges read from the tenants and the engine.
    let before = scrape(base).await;
    assert_eq!(
        sample(&before, r#"triggerfish_plugins_loaded{tenant="acme"}"#),
        1.0
    );
    assert_eq!(
        sample(&before, r#"triggerfish_plugins_failing{tenant="acme"}"#),
        0.0
    );
    assert_eq!(
        sample(
            &before,
            r#"triggerfish_reloads_total{tenant="acme",result="ok"}"#
        ),
        1.0
    );
    assert_eq!(sample(&before, "triggerfish_instance_slots"), 256.0);
    assert_eq!(sample(&before, "triggerfish_instance_slots_in_use"), 0.0);
    assert!(!before
        .keys()
        .any(|k| k.starts_with("triggerfish_invocations_total")));

    // A known sequence: allowed, denied, timed out, an event no trigger
    // serves, and a request for a tenant that does not exist.
    assert_eq!(send(base, "acme", &sign_up("ok")).await.0, StatusCode::OK);
    let (status, body) = send(base, "acme", &sign_up("no such mode")).await;
    assert_eq!(
        (status, body["error"]["kind"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("denied"))
    );
    let (status, body) = send(base, "acme", &sign_up("sleep")).await;
    assert_eq!(
        (status, body["error"]["kind"].as_str()),
        (StatusCode::GATEWAY_TIMEOUT, Some("timeout"))
    );
    let mut bad = sign_up("ok");
    bad["triggerSource"] = json!("NotATrigger_Source");
    assert_eq!(send(base, "acme", &bad).await.0, StatusCode::BAD_REQUEST);
    // acme's key for a tenant that does not exist: as for another tenant.
    assert_eq!(
        send(base, "ghost", &sign_up("ok")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(base, "no..name", &sign_up("ok")).await.0,
        StatusCode::NOT_FOUND
    );
    let malformed = reqwest::Client::new()
        .post(format!("{base}/v1/tenants/acme/events"))
        .bearer_auth(TENANT_KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);

    // Over the quota: one invocation runs (seen in the in-flight gauge),
    // the next is refused at once.
    let slow = tokio::spawn({
        let base = base.to_owned();
        async move { send(&base, "acme", &sign_up("sleep")).await.0 }
    });
    let started = Instant::now();
    loop {
        let samples = scrape(base).await;
        if samples.get(r#"triggerfish_tenant_invocations_in_flight{tenant="acme"}"#) == Some(&1.0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the slow event never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        send(base, "acme", &sign_up("ok")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(slow.await.unwrap(), StatusCode::GATEWAY_TIMEOUT);

    let after = scrape(base).await;
    let invocations = |trigger: &str, outcome: &str| {
        sample(
            &after,
            &format!(
                r#"triggerfish_invocations_total{{tenant="acme",trigger="{trigger}",outcome="{outcome}"}}"#
            ),
        )
    };
    assert_eq!(invocations("pre-sign-up", "ok"), 1.0);
    assert_eq!(invocations("pre-sign-up", "denied"), 1.0);
    assert_eq!(invocations("pre-sign-up", "timeout"), 2.0);
    assert_eq!(invocations("pre-sign-up", "too-many-requests"), 1.0);
    assert_eq!(invocations("none", "bad-event"), 1.0);
    let calls = |outcome: &str| {
        sample(
            &after,
            &format!(
                r#"triggerfish_plugin_calls_total{{tenant="acme",plugin="10-hostile",outcome="{outcome}"}}"#
            ),
        )
    };
    assert_eq!(
        (calls("ok"), calls("denied"), calls("timeout")),
        (1.0, 1.0, 2.0)
    );
    assert_eq!(
        sample(
            &after,
            r#"triggerfish_quota_refusals_total{tenant="acme",quota="concurrency"}"#
        ),
        1.0
    );
    // The 429 never reached a plugin: four calls used fuel.
    assert_eq!(
        sample(
            &after,
            r#"triggerfish_plugin_call_fuel_count{tenant="acme",plugin="10-hostile"}"#
        ),
        4.0
    );
    assert!(
        sample(
            &after,
            r#"triggerfish_plugin_call_fuel_sum{tenant="acme",plugin="10-hostile"}"#
        ) > 0.0
    );
    let durations =
        r#"triggerfish_invocation_duration_seconds_count{tenant="acme",trigger="pre-sign-up"}"#;
    assert_eq!(sample(&after, durations), 5.0);
    // Both timeouts took at least the 400 ms budget.
    let fast = after
        .iter()
        .find(|(k, _)| {
            k.starts_with("triggerfish_invocation_duration_seconds_bucket{")
                && k.contains(r#"tenant="acme",trigger="pre-sign-up""#)
                && k.contains(r#"le="0.25""#)
        })
        .map(|(_, v)| *v);
    assert_eq!(fast, Some(3.0), "{after:#?}");
    assert_eq!(
        sample(
            &after,
            r#"triggerfish_tenant_invocations_in_flight{tenant="acme"}"#
        ),
        0.0
    );
    // Requests refused before (or instead of) a chain, by kind.
    let refused = |kind: &str| {
        sample(
            &after,
            &format!(r#"triggerfish_http_refusals_total{{kind="{kind}"}}"#),
        )
    };
    assert_eq!(refused("unknown-trigger"), 1.0);
    assert_eq!(refused("forbidden"), 1.0);
    assert_eq!(refused("unknown-tenant"), 1.0);
    assert_eq!(refused("malformed-json"), 1.0);
    assert_eq!(refused("too-many-requests"), 1.0);
    assert!(!after.contains_key(r#"triggerfish_http_refusals_total{kind="unauthorized"}"#));
    // No series for a tenant that does not exist, or a name that cannot be one.
    assert!(
        !after
            .keys()
            .any(|k| k.contains("ghost") || k.contains("no..name")),
        "{after:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_routes_need_an_operator_key() {
    let dir = PluginsDir::new();
    let keys = acme(&dir);
    let host = ServeProcess::start(dir.path(), &["--admin-keys", keys.to_str().unwrap()]);
    let base = host.base.as_str();
    for key in [None, Some("wrong"), Some(TENANT_KEY), Some("")] {
        let (status, body) = scrape_as(base, key).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{key:?}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["kind"], "unauthorized", "{key:?}");
        // The status page answers alike to a program (no `Accept: text/html`).
        let mut request = reqwest::Client::new().get(format!("{base}/status"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{key:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["kind"], "unauthorized", "{key:?}");
    }
    let (status, _) = scrape_as(base, Some(ADMIN_KEY)).await;
    assert_eq!(status, StatusCode::OK);
    let status_page = reqwest::Client::new()
        .get(format!("{base}/status"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(status_page.status(), StatusCode::OK);
    assert!(status_page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));

    // A browser without a session gets the login form; a wrong key in it
    // gets the form again, a right one a session cookie.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = client
        .get(format!("{base}/status"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNAUTHORIZED);
    assert!(form
        .text()
        .await
        .unwrap()
        .contains("action=\"/status/login\""));
    let login = |key: &str| {
        client
            .post(format!("{base}/status/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("key={key}"))
            .send()
    };
    let refused = login("wrong").await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get("set-cookie").is_none());
    let accepted = login(ADMIN_KEY).await.unwrap();
    assert_eq!(accepted.status(), StatusCode::SEE_OTHER);
    assert_eq!(accepted.headers()["location"], "/status");
    let cookie = accepted.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/status"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains(ADMIN_KEY), "the cookie holds no key");
    let session = cookie.split(';').next().unwrap();
    let page = client
        .get(format!("{base}/status"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Tenant acme"));
    // The session opens the page, not the metrics.
    let metrics = client
        .get(format!("{base}/metrics"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_routes_are_off_without_admin_keys() {
    let dir = PluginsDir::new();
    acme(&dir);
    let server = Server::start(tenants(&dir).await).await;
    for (method, path) in [
        ("GET", "/metrics"),
        ("GET", "/status"),
        ("POST", "/status/login"),
    ] {
        let response = reqwest::Client::new()
            .request(method.parse().unwrap(), format!("{}{path}", server.base))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["kind"], "not-found");
    }
}

#[test]
fn a_bad_admin_keys_file_stops_serve_with_its_line() {
    let dir = PluginsDir::new();
    let keys = dir.path().join(".admin-keys");
    std::fs::write(&keys, format!("{}\nnot-a-hash\n", hash_key("k"))).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_triggerfish"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-watch",
            "--plugins-dir",
        ])
        .arg(dir.path())
        .arg("--admin-keys")
        .arg(&keys)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 2 of the admin keys file"), "{stderr}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_triggerfish"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-watch",
            "--plugins-dir",
        ])
        .arg(dir.path())
        .args(["--admin-keys", "/nonexistent/keys"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read the admin keys file /nonexistent/keys"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_invocation_fields() {
    let dir = PluginsDir::new();
    acme(&dir);
    let host = ServeProcess::start_with_log(
        dir.path(),
        &["--log-format", "json"],
        "info,triggerfish::dispatch=debug,cranelift=warn,wasmtime=warn",
    );
    assert_eq!(
        send(&host.base, "acme", &sign_up("ok")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&host.base, "acme", &sign_up("no such mode")).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let started = Instant::now();
    let lines = loop {
        let log = host.last_log();
        if log.matches("invocation finished").count() >= 2 {
            break log;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no invocation lines: {log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lines: Vec<Value> = lines
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    for line in &lines {
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
    }
    let call = |outcome: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "plugin call finished" && l["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no plugin call line with {outcome}: {lines:#?}"))
            .clone()
    };
    for outcome in ["ok", "denied"] {
        let line = call(outcome);
        assert_eq!(line["tenant"], "acme", "{line}");
        assert_eq!(line["trigger"], "pre-sign-up", "{line}");
        assert_eq!(line["plugin"], "10-hostile", "{line}");
        assert!(
            line["duration_us"].is_u64() && line["fuel"].as_u64() > Some(0),
            "{line}"
        );
    }
    let finished: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "invocation finished")
        .collect();
    assert_eq!(finished[0]["tenant"], "acme");
    assert_eq!(finished[0]["trigger"], "pre-sign-up");
    assert_eq!(finished[0]["outcome"], "ok");
    assert_eq!(finished[1]["outcome"], "denied");
    assert!(finished[1]["fuel"].as_u64() > Some(0) && finished[1]["duration_us"].is_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_a_removed_plugin_are_dropped_and_reloads_counted() {
    use triggerfish::auth::admin::AdminKeys;
    use triggerfish::dispatch::Dispatcher;
    use triggerfish::ops::Admin;

    let dir = PluginsDir::new();
    acme(&dir);
    dir.plugin("acme", "20-email-deny-list.wasm", guests::EMAIL_DENY_LIST);
    let tenants = tenants(&dir).await;
    let admin = Admin::new(
        AdminKeys::parse(&hash_key(ADMIN_KEY)).unwrap(),
        tenants.clone(),
    );
    let dispatcher = admin
        .sinks()
        .into_iter()
        .fold(Dispatcher::new(), Dispatcher::with_sink);
    let acme_tenant = tenants.tenant("acme").unwrap();
    // The deny-list has no `domains` configured: it denies.
    let denied = dispatcher.dispatch(&acme_tenant, sign_up("ok")).await;
    assert!(denied.is_err());
    let deny_list = r#"triggerfish_plugin_calls_total{tenant="acme",plugin="20-email-deny-list",outcome="denied"}"#;
    let samples = parse_samples(&admin.metrics.encode());
    assert_eq!(sample(&samples, deny_list), 1.0);

    // The plugin goes, and with the next scrape its series.
    std::fs::remove_file(dir.tenant_dir("acme").join("20-email-deny-list.wasm")).unwrap();
    tenants.reload_all().await.unwrap();
    let samples = parse_samples(&admin.metrics.encode());
    assert!(
        !samples.keys().any(|k| k.contains("20-email-deny-list")),
        "{samples:#?}"
    );
    assert_eq!(
        sample(
            &samples,
            r#"triggerfish_plugin_calls_total{tenant="acme",plugin="10-hostile",outcome="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &samples,
            r#"triggerfish_reloads_total{tenant="acme",result="ok"}"#
        ),
        2.0
    );

    // A broken file: a failed reload, and a failing file.
    dir.file("acme", "30-broken.wasm", b"not wasm");
    tenants.reload_all().await.unwrap();
    let samples = parse_samples(&admin.metrics.encode());
    assert_eq!(
        sample(
            &samples,
            r#"triggerfish_reloads_total{tenant="acme",result="failed"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&samples, r#"triggerfish_plugins_failing{tenant="acme"}"#),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_key_deploys_to_any_tenant() {
    let dir = PluginsDir::new();
    let keys = acme(&dir);
    let host = tokio::task::spawn_blocking({
        let path = dir.path().to_owned();
        move || ServeProcess::start(&path, &["--admin-keys", keys.to_str().unwrap()])
    })
    .await
    .unwrap();
    let wasm = std::fs::read(guests::EMAIL_DENY_LIST).unwrap();
    let put = |key: &'static str| {
        let url = format!("{}/v1/tenants/acme/plugins/20-deny.wasm", host.base);
        let wasm = wasm.clone();
        async move {
            reqwest::Client::new()
                .put(url)
                .bearer_auth(key)
                .body(wasm)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // acme lists no deploy keys: its own event key may not deploy...
    assert_eq!(put(TENANT_KEY).await, 403, "{}", host.last_log());
    // ...and an operator key may, to any tenant.
    assert_eq!(put(ADMIN_KEY).await, 201, "{}", host.last_log());
    assert!(dir.tenant_dir("acme").join("20-deny.wasm").exists());
}
