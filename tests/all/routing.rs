//! Every trigger source reaches its interface; unserved events pass.

use crate::common::*;
use triggerfish::dispatch::ErrorKind;
use triggerfish::trigger::{Family, Trigger};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_trigger_source_reaches_its_interface() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-probe.wasm", guests::ROUTING_PROBE);
    let tenant = tenant(&dir, "t").await;
    assert!(tenant.failures.is_empty(), "{:?}", tenant.failures);

    let mut table: Vec<(String, &str, Trigger)> = Vec::new();
    for trigger in Trigger::all().filter(|t| t.family() == Family::UserPool) {
        for source in trigger.trigger_sources() {
            let version = if trigger == Trigger::PreTokenGenerationV2 {
                "2"
            } else {
                "1"
            };
            table.push((version.to_owned(), source, trigger));
        }
    }
    table.push((
        "3".to_owned(),
        "TokenGeneration_RefreshTokens",
        Trigger::PreTokenGenerationV2,
    ));
    assert!(
        table.len() > 40,
        "the table covers every source: {}",
        table.len()
    );

    for (version, source, trigger) in table {
        let error = chain_error(&tenant, user_pool_event(&version, source)).await;
        assert_eq!(error.kind, ErrorKind::Denied, "{source}: {error}");
        assert_eq!(
            error.message,
            format!("handled by {}", trigger.wit_name()),
            "{source} v{version}"
        );
        assert_eq!(error.trigger.aws_name(), trigger.aws_name());
    }

    let error = chain_error(&tenant, sync_event()).await;
    assert_eq!(error.message, "handled by sync-trigger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_no_plugin_serves_comes_back_unchanged() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
        .settings(
            "t",
            "[plugins.10-email-deny-list.config]\ndomains = \"example.com\"\n",
        );
    let tenant = tenant(&dir, "t").await;
    for event in [
        user_pool_event("1", "CustomMessage_SignUp"),
        user_pool_event("1", "PostConfirmation_ConfirmSignUp"),
        sync_event(),
    ] {
        let out = invoke(&tenant, event.clone()).await.unwrap();
        assert_eq!(out, event);
    }
    // An empty tenant serves nothing and changes nothing.
    let empty = PluginsDir::new();
    let tenant = crate::common::tenant(&empty, "empty").await;
    let event = pre_sign_up("jane@example.com");
    assert_eq!(invoke(&tenant, event.clone()).await.unwrap(), event);
}
