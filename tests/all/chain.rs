//! Chains: order, what each plugin sees, and where a denial stops them.

use crate::common::*;
use serde_json::Value;
use triggerfish::dispatch::ErrorKind;

fn probe_settings(modes: &[(&str, &str)]) -> String {
    let mut toml = String::new();
    for (plugin, mode) in modes {
        toml.push_str(&format!(
            "[plugins.{plugin}.config]\nmode = \"{mode}\"\nmessage = \"{plugin} ran\"\n"
        ));
    }
    toml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_plugin_sees_the_response_the_previous_one_left() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-auto-confirm.wasm", guests::PRESIGNUP_PROBE)
        .plugin("t", "20-copy.wasm", guests::PRESIGNUP_PROBE)
        .settings(
            "t",
            &probe_settings(&[("10-auto-confirm", "auto-confirm"), ("20-copy", "copy")]),
        );
    let out = invoke(&tenant(&dir, "t").await, pre_sign_up("jane@example.com"))
        .await
        .unwrap();
    assert_eq!(out["response"]["autoConfirmUser"], Value::Bool(true));
    // The copy ran second and saw the first plugin's decision.
    assert_eq!(out["response"]["autoVerifyEmail"], Value::Bool(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_names_decide_the_order() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-copy.wasm", guests::PRESIGNUP_PROBE)
        .plugin("t", "20-auto-confirm.wasm", guests::PRESIGNUP_PROBE)
        .settings(
            "t",
            &probe_settings(&[("20-auto-confirm", "auto-confirm"), ("10-copy", "copy")]),
        );
    let out = invoke(&tenant(&dir, "t").await, pre_sign_up("jane@example.com"))
        .await
        .unwrap();
    assert_eq!(out["response"]["autoConfirmUser"], Value::Bool(true));
    // The copy ran first, before anything confirmed the user.
    assert_eq!(out["response"]["autoVerifyEmail"], Value::Bool(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_stops_the_chain() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
        .plugin("t", "20-deny.wasm", guests::PRESIGNUP_PROBE)
        .settings(
            "t",
            "[plugins.10-email-deny-list.config]\ndomains = [\"spam.test\"]\n\
             [plugins.20-deny.config]\nmode = \"deny\"\nmessage = \"the second plugin ran\"\n",
        );
    let tenant = tenant(&dir, "t").await;
    let error = chain_error(&tenant, pre_sign_up("bot@mail.spam.test")).await;
    assert_eq!(error.kind, ErrorKind::Denied);
    assert_eq!(error.plugin.as_deref(), Some("10-email-deny-list"));
    assert_eq!(
        error.message,
        "Sign-ups from mail.spam.test are not allowed"
    );
    assert_eq!(
        error.cognito_message(),
        "PreSignUp failed with error Sign-ups from mail.spam.test are not allowed."
    );
    assert_eq!(error.attempts, 1, "a denial is never retried");

    // An address the first plugin lets through reaches the second.
    let error = chain_error(&tenant, pre_sign_up("jane@example.com")).await;
    assert_eq!(error.plugin.as_deref(), Some("20-deny"));
    assert_eq!(error.message, "the second plugin ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmodelled_fields_come_back_untouched() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-auto-confirm.wasm", guests::PRESIGNUP_PROBE)
        .settings("t", &probe_settings(&[("10-auto-confirm", "auto-confirm")]));
    let mut event = pre_sign_up("jane@example.com");
    event["newTopLevelField"] = serde_json::json!({"nested": [1, 2, 3]});
    event["request"]["someFutureField"] = "kept".into();
    event["response"]["futureResponseField"] = "kept too".into();
    let out = invoke(&tenant(&dir, "t").await, event.clone())
        .await
        .unwrap();
    assert_eq!(out["newTopLevelField"], event["newTopLevelField"]);
    assert_eq!(out["request"], event["request"]);
    assert_eq!(out["response"]["futureResponseField"], "kept too");
    assert_eq!(out["response"]["autoConfirmUser"], true);
    // Everything outside the response is as it came.
    let (mut out_rest, mut event_rest) = (out.clone(), event.clone());
    out_rest.as_object_mut().unwrap().remove("response");
    event_rest.as_object_mut().unwrap().remove("response");
    assert_eq!(out_rest, event_rest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_config_key_is_a_clear_error() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST);
    let error = chain_error(&tenant(&dir, "t").await, pre_sign_up("jane@example.com")).await;
    assert_eq!(error.kind, ErrorKind::Denied);
    assert!(error.message.contains("`domains`"), "{}", error.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_and_deny_lists_work_together() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
        .plugin("t", "20-email-allow-list.wasm", guests::EMAIL_ALLOW_LIST)
        .settings(
            "t",
            "[plugins.10-email-deny-list.config]\ndomains = \"spam.test\"\n\
             [plugins.20-email-allow-list.config]\ndomains = [\"example.com\"]\nauto-confirm = true\n",
        );
    let tenant = tenant(&dir, "t").await;
    let out = invoke(&tenant, pre_sign_up("jane@example.com"))
        .await
        .unwrap();
    assert_eq!(out["response"]["autoConfirmUser"], true);
    assert_eq!(out["response"]["autoVerifyEmail"], true);
    let error = chain_error(&tenant, pre_sign_up("x@spam.test")).await;
    assert_eq!(error.plugin.as_deref(), Some("10-email-deny-list"));
    let error = chain_error(&tenant, pre_sign_up("x@elsewhere.test")).await;
    assert_eq!(error.plugin.as_deref(), Some("20-email-allow-list"));
    assert_eq!(
        error.message,
        "Sign-ups from elsewhere.test are not allowed"
    );
}
