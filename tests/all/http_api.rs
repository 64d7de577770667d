//! The HTTP API: answers, errors, authentication.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use triggerfish::auth::hash_key;

async fn api() -> (PluginsDir, Server) {
    let dir = PluginsDir::new();
    let deny = "[plugins.10-email-deny-list.config]\ndomains = \"spam.test\"\n";
    dir.plugin("open", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
        .settings("open", &format!("[auth]\nmode = \"none\"\n{deny}"));
    dir.plugin("locked", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
        .settings(
            "locked",
            &format!("[auth]\nkeys = [\"{}\"]\n{deny}", hash_key("key-a")),
        );
    dir.plugin("other", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
        .settings(
            "other",
            &format!("[auth]\nkeys = [\"{}\"]\n{deny}", hash_key("key-b")),
        );
    dir.plugin("nokeys", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
        .settings("nokeys", deny);
    dir.plugin("broken", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
        .file("broken", "20-garbage.wasm", b"\0asm but not really")
        .settings("broken", &format!("[auth]\nmode = \"none\"\n{deny}"));
    let server = Server::start(tenants(&dir).await).await;
    (dir, server)
}

async fn post(
    server: &Server,
    path: &str,
    body: impl Into<reqwest::Body>,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn error_kind(body: &Value) -> &str {
    body["error"]["kind"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_get_the_chain_answer_or_a_denial() {
    let (_dir, server) = api().await;
    let health: Value = reqwest::get(format!("{}/healthz", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ready");

    let event = pre_sign_up("jane@example.com");
    let (status, body) = post(&server, "/v1/tenants/open/events", event.to_string(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, event);

    let (status, body) = post(
        &server,
        "/v1/tenants/open/events",
        pre_sign_up("x@spam.test").to_string(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["error"],
        json!({
            "kind": "denied",
            "message": "PreSignUp failed with error Sign-ups from spam.test are not allowed.",
            "reason": "Sign-ups from spam.test are not allowed",
            "trigger": "PreSignUp",
            "plugin": "10-email-deny-list",
            "attempts": 1
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_precise_4xx() {
    let (_dir, server) = api().await;
    let path = "/v1/tenants/open/events";
    let mut wrong_types = pre_sign_up("jane@example.com");
    wrong_types["request"]["userAttributes"] = json!(["not", "an", "object"]);
    let mut wrong_value = pre_sign_up("jane@example.com");
    wrong_value["request"]["userAttributes"]["email"] = json!(42);
    let mut no_source = pre_sign_up("jane@example.com");
    no_source.as_object_mut().unwrap().remove("triggerSource");
    let mut unknown_source = pre_sign_up("jane@example.com");
    unknown_source["triggerSource"] = json!("PreSignUp_Teleport");
    let cases: Vec<(String, StatusCode, &str, &str)> = vec![
        (
            "{\"version\": ".into(),
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "not valid JSON",
        ),
        (
            "[1, 2]".into(),
            StatusCode::BAD_REQUEST,
            "unknown-trigger",
            "JSON object",
        ),
        (
            no_source.to_string(),
            StatusCode::BAD_REQUEST,
            "unknown-trigger",
            "triggerSource",
        ),
        (
            unknown_source.to_string(),
            StatusCode::BAD_REQUEST,
            "unknown-trigger",
            "PreSignUp_Teleport",
        ),
        (
            json!({"eventType": "SyncTrigger2"}).to_string(),
            StatusCode::BAD_REQUEST,
            "unknown-trigger",
            "SyncTrigger2",
        ),
        (
            wrong_types.to_string(),
            StatusCode::BAD_REQUEST,
            "invalid-event",
            "request.userAttributes",
        ),
        (
            wrong_value.to_string(),
            StatusCode::BAD_REQUEST,
            "invalid-event",
            "request.userAttributes.email",
        ),
        (
            json!({"triggerSource": "PreSignUp_SignUp", "request": {}}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid-event",
            "`version`: missing",
        ),
        (
            "x".repeat(2 << 20),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "1048576 bytes",
        ),
    ];
    for (body, status, kind, words) in cases {
        let (got, answer) = post(&server, path, body.clone(), None).await;
        assert_eq!(got, status, "{answer}");
        assert_eq!(error_kind(&answer), kind, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(words),
            "{message:?} should mention {words:?}"
        );
    }

    for tenant in ["a.b", "a%20b", "-x"] {
        let (status, answer) =
            post(&server, &format!("/v1/tenants/{tenant}/events"), "{}", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{tenant}");
        assert_eq!(error_kind(&answer), "unknown-tenant", "{tenant}: {answer}");
    }
}

/// Without credentials, a tenant that does not exist is answered exactly
/// as one that does: its name cannot be discovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tenants_answer_as_known_ones_do() {
    let (_dir, server) = api().await;
    for key in [None, Some("not-a-key"), Some("key-b")] {
        let known = post(&server, "/v1/tenants/locked/events", "{}", key).await;
        let unknown = post(&server, "/v1/tenants/nobody/events", "{}", key).await;
        assert_eq!(known.0, unknown.0, "{key:?}");
        assert_eq!(known.1, unknown.1, "{key:?}");
    }
}

/// Every malformed request gets a JSON error, the path included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_and_duplicate_keys_get_json_errors() {
    let (_dir, server) = api().await;
    // A percent-encoded byte that is not UTF-8.
    let (status, answer) = post(&server, "/v1/tenants/%FF/events", "{}", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(error_kind(&answer), "invalid-request", "{answer}");
    // The same key twice: a deny list and its caller could read different
    // values, so the event is refused.
    let event = r#"{"version":"1","triggerSource":"PreSignUp_SignUp","request":{"userAttributes":{"email":"x@spam.test","email":"jane@example.com"}}}"#;
    let (status, answer) = post(&server, "/v1/tenants/open/events", event, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(error_kind(&answer), "malformed-json", "{answer}");
    assert!(answer.to_string().contains("duplicate key"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_required_and_checked() {
    let (_dir, server) = api().await;
    let event = pre_sign_up("jane@example.com").to_string();
    let path = "/v1/tenants/locked/events";
    let (status, body) = post(&server, path, event.clone(), None).await;
    assert_eq!(
        (status, error_kind(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (status, _) = post(&server, path, event.clone(), Some("not-a-key")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = post(&server, path, event.clone(), Some("key-b")).await;
    assert_eq!(
        (status, error_kind(&body)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let (status, _) = post(&server, path, event.clone(), Some("key-a")).await;
    assert_eq!(status, StatusCode::OK);

    // Keys are the default; a tenant without any refuses everything.
    let (status, body) = post(&server, "/v1/tenants/nokeys/events", event, Some("key-a")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no API keys"));

    let response = reqwest::Client::new()
        .get(format!("{}/v1/tenants/locked/plugins", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_listed_with_their_load_errors() {
    let (_dir, server) = api().await;
    let body: Value = reqwest::get(format!("{}/v1/tenants/broken/plugins", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let plugins = body["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 1, "{body}");
    assert_eq!(plugins[0]["name"], "10-email-deny-list");
    assert_eq!(plugins[0]["triggers"], json!(["pre-sign-up"]));
    assert_eq!(plugins[0]["hash"].as_str().unwrap().len(), 64);
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["plugin"], "20-garbage");
    assert!(errors[0]["error"]
        .as_str()
        .unwrap()
        .contains("not a valid WebAssembly component"));

    // A chain missing a plugin it should have does not run.
    let (status, body) = post(
        &server,
        "/v1/tenants/broken/events",
        pre_sign_up("jane@example.com").to_string(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_kind(&body), "no-handler");
    assert!(body["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("20-garbage"));
}
