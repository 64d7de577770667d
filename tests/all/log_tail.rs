//! The logs of one invocation: `X-Amz-Log-Type: Tail` on the Lambda route
//! (checked with boto3) and on the `/v1` events route.

use crate::common::*;
use crate::lambda::boto3_path;
use base64::Engine as _;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;

fn decode(header: &reqwest::header::HeaderValue) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(header.as_bytes())
        .expect("base64");
    String::from_utf8(bytes).expect("UTF-8")
}

/// Invokes through boto3 with `LogType="Tail"`.
fn invoke_with_tail(endpoint: &str, function: &str, event: &Value) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/lambda_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args([endpoint, function, &event.to_string()])
        .env("PYTHONPATH", boto3_path())
        .env("TRIGGERFISH_LOG_TYPE", "Tail")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the boto3 client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the client prints JSON")
}

/// Tenants `alpha` and `beta`, each denying sign-ups from its own domain
/// (the deny list logs each refusal), with no keys.
fn two_tenants() -> PluginsDir {
    let dir = PluginsDir::new();
    for name in ["alpha", "beta"] {
        dir.plugin(name, "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
            .plugin(name, "20-probe.wasm", guests::PRESIGNUP_PROBE)
            .settings(
                name,
                &format!(
                    "[auth]\nmode = \"none\"\n\
                     [plugins.10-email-deny-list.config]\ndomains = \"{name}-spam.test\"\n\
                     [plugins.20-probe.config]\nmode = \"auto-confirm\"\n"
                ),
            );
    }
    dir.plugin("noisy", "10-hostile.wasm", guests::HOSTILE)
        .settings("noisy", "[auth]\nmode = \"none\"\n");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_gets_the_log_tail_of_a_function_error() {
    let dir = two_tenants();
    let server = Server::start(tenants(&dir).await).await;
    let endpoint = server.base.clone();
    let answer = tokio::task::spawn_blocking(move || {
        invoke_with_tail(&endpoint, "alpha", &pre_sign_up("eve@alpha-spam.test"))
    })
    .await
    .unwrap();
    assert_eq!(answer["functionError"], "Unhandled", "{answer}");
    let log = answer["logResult"].as_str().expect("a LogResult");
    assert!(
        log.contains("INFO\t10-email-deny-list\trefused a sign-up from alpha-spam.test"),
        "{log}"
    );
    assert!(
        log.contains(
            "ERROR\t10-email-deny-list\tdenied: Sign-ups from alpha-spam.test are not allowed"
        ),
        "{log}"
    );
    assert!(!log.contains("beta"), "{log}");
    // Each line starts with its UTC time.
    assert!(
        log.lines().all(|l| l.len() > 24 && &l[23..24] == "Z"),
        "{log}"
    );

    // Without LogType, no LogResult.
    let event = pre_sign_up("eve@alpha-spam.test");
    let endpoint = server.base.clone();
    let answer = tokio::task::spawn_blocking(move || {
        crate::lambda::invoke_signed(&endpoint, "alpha", &event, None)
    })
    .await
    .unwrap();
    assert_eq!(answer["functionError"], "Unhandled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_of_one_invocation_never_reach_another_tenants_answer() {
    let dir = two_tenants();
    let server = Server::start(tenants(&dir).await).await;
    let client = reqwest::Client::new();
    let mut calls = Vec::new();
    for i in 0..40 {
        let tenant = if i % 2 == 0 { "alpha" } else { "beta" };
        let other = if i % 2 == 0 { "beta" } else { "alpha" };
        // Half through the Lambda route, half through /v1.
        let url = if i % 4 < 2 {
            format!("{}/2015-03-31/functions/{tenant}/invocations", server.base)
        } else {
            format!("{}/v1/tenants/{tenant}/events", server.base)
        };
        let request = client
            .post(url)
            .header("X-Amz-Log-Type", "Tail")
            .json(&pre_sign_up(&format!("user{i}@{tenant}-spam.test")));
        calls.push(tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let log = decode(&response.headers()["x-amz-log-result"]);
            assert!(
                log.contains(&format!("refused a sign-up from {tenant}-spam.test")),
                "{tenant}: {log}"
            );
            assert!(!log.contains(other), "{tenant} got {other}'s lines: {log}");
            // Only this invocation's own line, not its neighbours'.
            assert_eq!(log.matches("refused a sign-up").count(), 1, "{log}");
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_route_returns_the_tail_when_asked_and_bounds_it() {
    let dir = two_tenants();
    let server = Server::start(tenants(&dir).await).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/tenants/alpha/events", server.base);

    // Not asked: no header. Asked on a success: the header, empty here
    // (no plugin logged).
    let response = client
        .post(&url)
        .json(&pre_sign_up("jane@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-amz-log-result").is_none());
    let response = client
        .post(&url)
        .header("X-Amz-Log-Type", "Tail")
        .json(&pre_sign_up("jane@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(decode(&response.headers()["x-amz-log-result"]), "");
    let response = client
        .post(&url)
        .header("X-Amz-Log-Type", "Everything")
        .json(&pre_sign_up("jane@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // A flood: the last 4 KB, ending with the note that the budget ran out.
    let mut flood = pre_sign_up("jane@example.com");
    flood["request"]["clientMetadata"] = json!({"mode": "log-flood"});
    let response = client
        .post(format!("{}/v1/tenants/noisy/events", server.base))
        .header("X-Amz-Log-Type", "Tail")
        .json(&flood)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let log = decode(&response.headers()["x-amz-log-result"]);
    assert!(log.len() <= 4096 && log.len() > 3500, "{}", log.len());
    assert!(log.contains("10-hostile\tflood line"), "{log}");
    assert!(
        log.trim_end().ends_with("further lines are dropped"),
        "{log}"
    );

    // A trap is in the tail, as Lambda's runtime logs an exception.
    let mut panic = pre_sign_up("jane@example.com");
    panic["request"]["clientMetadata"] = json!({"mode": "panic"});
    let response = client
        .post(format!(
            "{}/2015-03-31/functions/noisy/invocations",
            server.base
        ))
        .header("X-Amz-Log-Type", "Tail")
        .json(&panic)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-amz-function-error"], "Unhandled");
    let log = decode(&response.headers()["x-amz-log-result"]);
    assert!(log.contains("ERROR\t10-hostile\ttrap:"), "{log}");
    assert!(log.contains("panicked on purpose"), "{log}");
}
