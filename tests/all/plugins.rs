//! The example plugins through the real host: each with the behaviour its
//! README documents, including its error paths. Events are shaped as in
//! Cognito's documentation of each trigger.

use crate::common::*;
use serde_json::{json, Value};
use triggerfish::chain::{self, ErrorKind};
use triggerfish::tenant::Tenant;

/// A tenant `t` with one plugin and its config (`tenant.toml` text after
/// the `[plugins.<stem>.config]` header; empty for none).
async fn one_plugin(file: &str, guest: &str, config: &str) -> (PluginsDir, Tenant) {
    let dir = PluginsDir::new();
    dir.plugin("t", file, guest);
    if !config.is_empty() {
        let stem = file.trim_end_matches(".wasm");
        dir.settings("t", &format!("[plugins.{stem}.config]\n{config}"));
    }
    let tenant = tenant(&dir, "t").await;
    assert!(tenant.failures.is_empty(), "{:?}", tenant.failures);
    (dir, tenant)
}

async fn run(tenant: &Tenant, event: Value) -> Value {
    chain::invoke(tenant, event).await.expect("the chain runs")
}

/// The common parameters of a user pool event, around `request` and
/// `response`.
fn cognito_event(version: &str, source: &str, request: Value, response: Value) -> Value {
    json!({
        "version": version,
        "triggerSource": source,
        "region": "us-east-1",
        "userPoolId": "us-east-1_EXAMPLE",
        "userName": "jane.doe",
        "callerContext": {
            "awsSdkVersion": "aws-sdk-unknown-unknown",
            "clientId": "1example23456789"
        },
        "request": request,
        "response": response
    })
}

fn user_attributes() -> Value {
    json!({
        "sub": "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111",
        "cognito:user_status": "CONFIRMED",
        "email_verified": "true",
        "email": "jane@example.com",
        "custom:department": "engineering"
    })
}

// ---------------------------------------------------------------- tokens

/// A pre token generation event, version 1 (ID token only).
fn token_event_v1() -> Value {
    cognito_event(
        "1",
        "TokenGeneration_Authentication",
        json!({
            "userAttributes": user_attributes(),
            "groupConfiguration": {
                "groupsToOverride": ["employees", "admins"],
                "iamRolesToOverride": ["arn:aws:iam::123456789012:role/admins"],
                "preferredRole": "arn:aws:iam::123456789012:role/admins"
            },
            "clientMetadata": {}
        }),
        json!({"claimsOverrideDetails": null}),
    )
}

/// A pre token generation event of version 2 or 3 (ID and access tokens).
fn token_event_v2(version: &str) -> Value {
    cognito_event(
        version,
        "TokenGeneration_HostedAuth",
        json!({
            "userAttributes": user_attributes(),
            "groupConfiguration": {
                "groupsToOverride": ["employees"],
                "iamRolesToOverride": [],
                "preferredRole": null
            },
            "scopes": ["aws.cognito.signin.user.admin", "openid", "email"]
        }),
        json!({"claimsAndScopeOverrideDetails": null}),
    )
}

const TOKEN_CONFIG: &str = r#"
"claims.department" = "sales"
"claims.custom:tier" = "gold"
suppress-claims = ["email_verified", "custom:department"]
"access-claims.tenant" = "acme"
suppress-access-claims = ["username"]
scopes-to-add = ["api/orders.read", "api/orders.write"]
scopes-to-suppress = ["aws.cognito.signin.user.admin"]
groups = ["readers"]
preferred-role = "arn:aws:iam::123456789012:role/readers"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_token_claims_v1_changes_the_id_token_and_groups() {
    let (_dir, tenant) = one_plugin(
        "20-override-token-claims.wasm",
        guests::OVERRIDE_TOKEN_CLAIMS,
        TOKEN_CONFIG,
    )
    .await;
    let out = run(&tenant, token_event_v1()).await;
    assert_eq!(
        out["response"],
        json!({"claimsOverrideDetails": {
            "claimsToAddOrOverride": {"custom:tier": "gold", "department": "sales"},
            "claimsToSuppress": ["email_verified", "custom:department"],
            "groupOverrideDetails": {
                "groupsToOverride": ["readers"],
                "preferredRole": "arn:aws:iam::123456789012:role/readers"
            }
        }})
    );
    // The request is as Cognito sent it.
    assert_eq!(out["request"], token_event_v1()["request"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_token_claims_v2_and_v3_change_both_tokens_and_scopes() {
    let (_dir, tenant) = one_plugin(
        "20-override-token-claims.wasm",
        guests::OVERRIDE_TOKEN_CLAIMS,
        TOKEN_CONFIG,
    )
    .await;
    let expected = json!({"claimsAndScopeOverrideDetails": {
        "idTokenGeneration": {
            "claimsToAddOrOverride": {"custom:tier": "gold", "department": "sales"},
            "claimsToSuppress": ["email_verified", "custom:department"]
        },
        "accessTokenGeneration": {
            "claimsToAddOrOverride": {"tenant": "acme"},
            "claimsToSuppress": ["username"],
            "scopesToAdd": ["api/orders.read", "api/orders.write"],
            "scopesToSuppress": ["aws.cognito.signin.user.admin"]
        },
        "groupOverrideDetails": {
            "groupsToOverride": ["readers"],
            "preferredRole": "arn:aws:iam::123456789012:role/readers"
        }
    }});
    for version in ["2", "3"] {
        let out = run(&tenant, token_event_v2(version)).await;
        assert_eq!(out["response"], expected, "version {version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_token_claims_keeps_what_an_earlier_plugin_decided() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-roles.wasm", guests::OVERRIDE_TOKEN_CLAIMS)
        .plugin("t", "20-claims.wasm", guests::OVERRIDE_TOKEN_CLAIMS)
        .settings(
            "t",
            "[plugins.10-roles.config]\n\"claims.role\" = \"admin\"\n\"claims.team\" = \"blue\"\n\
             [plugins.20-claims.config]\n\"claims.role\" = \"reader\"\nscopes-to-add = \"api/read\"\n",
        );
    let out = run(&tenant(&dir, "t").await, token_event_v2("2")).await;
    let details = &out["response"]["claimsAndScopeOverrideDetails"];
    // The later plugin overrides `role`; `team` from the earlier one stays.
    assert_eq!(
        details["idTokenGeneration"]["claimsToAddOrOverride"],
        json!({"role": "reader", "team": "blue"})
    );
    assert_eq!(
        details["accessTokenGeneration"]["scopesToAdd"],
        json!(["api/read"])
    );
    // Nothing configured the groups: no override is sent.
    assert!(details.get("groupOverrideDetails").is_none(), "{details}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_token_claims_without_config_names_its_keys() {
    let (_dir, tenant) = one_plugin(
        "20-override-token-claims.wasm",
        guests::OVERRIDE_TOKEN_CLAIMS,
        "",
    )
    .await;
    let error = chain_error(&tenant, token_event_v1()).await;
    assert_eq!(error.kind, ErrorKind::Denied);
    assert!(
        error.message.contains("`claims.<name>`") && error.message.contains("`groups`"),
        "{}",
        error.message
    );
    assert!(
        error
            .cognito_message()
            .starts_with("PreTokenGeneration failed with error "),
        "{}",
        error.cognito_message()
    );

    let (_dir, tenant) = one_plugin(
        "20-override-token-claims.wasm",
        guests::OVERRIDE_TOKEN_CLAIMS,
        "supress-claims = [\"email\"]\n",
    )
    .await;
    let error = chain_error(&tenant, token_event_v2("2")).await;
    assert!(
        error.message.contains("unknown key `supress-claims`"),
        "{}",
        error.message
    );
}
