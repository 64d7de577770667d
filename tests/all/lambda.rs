//! The Lambda-shaped route, called by a real AWS SDK (boto3).

use crate::common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;

/// A Python path where boto3 can be imported from: the system's if it has
/// boto3, else `target/py`, installed there from PyPI on first use.
pub fn boto3_path() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/py");
    let importable = |path: &PathBuf| {
        Command::new("python3")
            .args(["-c", "import boto3"])
            .env("PYTHONPATH", path)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !importable(&target) {
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&target)
            .arg("boto3")
            .status()
            .expect("python3 runs");
        assert!(
            status.success(),
            "pip could not install boto3 into {}",
            target.display()
        );
    }
    target
}

fn invoke_with_boto3(endpoint: &str, function: &str, event: &Value) -> Value {
    invoke_signed(endpoint, function, event, None)
}

/// Invokes through boto3, signing with `credentials` (access key id,
/// secret) when given.
pub fn invoke_signed(
    endpoint: &str,
    function: &str,
    event: &Value,
    credentials: Option<(&str, &str)>,
) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/lambda_client.py");
    let mut command = Command::new("python3");
    if let Some((id, secret)) = credentials {
        command
            .env("TRIGGERFISH_ACCESS_KEY_ID", id)
            .env("TRIGGERFISH_SECRET_ACCESS_KEY", secret);
    }
    let out = command
        .arg(script)
        .args([endpoint, function, &event.to_string()])
        .env("PYTHONPATH", boto3_path())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the boto3 client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the client prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_sdk_lambda_client_invokes_a_tenant() {
    let dir = PluginsDir::new();
    dir.plugin("pool", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST).settings(
        "pool",
        "[auth]\nmode = \"none\"\n[plugins.10-email-deny-list.config]\ndomains = \"spam.test\"\n",
    );
    let server = Server::start(tenants(&dir).await).await;
    let base = server.base.clone();

    let allowed = pre_sign_up("jane@example.com");
    let event = allowed.clone();
    let endpoint = base.clone();
    let answer = tokio::task::spawn_blocking(move || invoke_with_boto3(&endpoint, "pool", &event))
        .await
        .unwrap();
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["functionError"], Value::Null);
    assert_eq!(answer["payload"], allowed);

    let endpoint = base.clone();
    let answer = tokio::task::spawn_blocking(move || {
        invoke_with_boto3(&endpoint, "pool", &pre_sign_up("x@spam.test"))
    })
    .await
    .unwrap();
    // As Lambda reports a handler's error: 200, Unhandled, and the
    // handler's own message (Cognito adds "failed with error").
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["functionError"], "Unhandled");
    assert_eq!(
        answer["payload"],
        json!({"errorMessage": "Sign-ups from spam.test are not allowed", "errorType": "Denied"})
    );

    let endpoint = base.clone();
    let answer = tokio::task::spawn_blocking(move || {
        invoke_with_boto3(
            &endpoint,
            "arn:aws:lambda:us-east-1:123456789012:function:nobody",
            &json!({}),
        )
    })
    .await
    .unwrap();
    // Refused like a function whose keys the caller's are not: tenant
    // names cannot be discovered without credentials.
    assert_eq!(answer["error"], "UnrecognizedClientException");

    // The raw shape, header by header.
    let response = reqwest::Client::new()
        .post(format!("{base}/2015-03-31/functions/pool/invocations"))
        .body(pre_sign_up("x@spam.test").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-amz-function-error"], "Unhandled");
    let response = reqwest::Client::new()
        .post(format!("{base}/2015-03-31/functions/pool/invocations"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["x-amzn-errortype"],
        "InvalidRequestContentException"
    );

    // The other invocation types: a dry run checks access only; an event
    // is accepted and run in the background.
    for (invocation_type, status) in [("DryRun", 204), ("Event", 202), ("Sometime", 400)] {
        let response = reqwest::Client::new()
            .post(format!("{base}/2015-03-31/functions/pool/invocations"))
            .header("x-amz-invocation-type", invocation_type)
            .body(pre_sign_up("jane@example.com").to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{invocation_type}");
    }
}
