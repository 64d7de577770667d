//! What the in-process sections run: the bench's tenants, their chain of
//! example plugins, and the PreSignUp event.

use serde_json::{json, Value};
use std::sync::Arc;
use triggerfish::engine::{Metering, Runtime, RuntimeConfig};
use triggerfish::plugin::PluginLoader;
use triggerfish::tenant::Tenant;
use triggerfish_test_support::{guests, PluginsDir};

/// Settings every benchmark tenant shares: no authentication, and the
/// three PreSignUp steps' config.
pub(crate) const SETTINGS: &str = "[auth]\nmode = \"none\"\n\
    [plugins.10-email-deny-list.config]\ndomains = [\"spam.test\", \"throwaway.test\"]\n\
    [plugins.20-email-allow-list.config]\ndomains = [\"example.com\", \"example.org\"]\nauto-confirm = true\n\
    [plugins.30-auto-confirm.config]\nmode = \"auto-confirm\"\n\
    [plugins.40-email-deny-list.config]\ndomains = [\"spam.test\"]\n\
    [plugins.50-email-deny-list.config]\ndomains = [\"throwaway.test\"]\n";

/// The chain's plugins, by file name, in order; chains of N take the first N.
pub(crate) const CHAIN: [(&str, &str); 5] = [
    ("10-email-deny-list.wasm", guests::EMAIL_DENY_LIST),
    ("20-email-allow-list.wasm", guests::EMAIL_ALLOW_LIST),
    ("30-auto-confirm.wasm", guests::PRESIGNUP_PROBE),
    ("40-email-deny-list.wasm", guests::EMAIL_DENY_LIST),
    ("50-email-deny-list.wasm", guests::EMAIL_DENY_LIST),
];

/// A PreSignUp event of about 1 KB, from an allowed address.
pub fn event() -> Value {
    json!({
        "version": "1",
        "triggerSource": "PreSignUp_SignUp",
        "region": "eu-west-1",
        "userPoolId": "eu-west-1_AbCdEfGhI",
        "userName": "6a1b8c2d-0e3f-4a5b-9c7d-1e2f3a4b5c6d",
        "callerContext": {"awsSdkVersion": "aws-sdk-js-3.600.0", "clientId": "3n4b5urk1ft4fl3mg5e62d9ado"},
        "request": {
            "userAttributes": {
                "email": "jane.doe@example.com",
                "given_name": "Jane",
                "family_name": "Doe",
                "phone_number": "+441234567890",
                "locale": "en-GB",
                "zoneinfo": "Europe/London",
                "birthdate": "1990-01-01",
                "address": "{\"street_address\":\"1 High Street\",\"locality\":\"London\",\"postal_code\":\"N1 1AA\",\"country\":\"GB\"}",
                "custom:plan": "pro",
                "custom:referrer": "newsletter-2026-11",
                "custom:signup_source": "web",
                "custom:marketing_opt_in": "true"
            },
            "validationData": {"captcha": "03AGdBq25SxXT-pmSeBXjzScW-EiocHwwpwqtk1QXlJnGnU"},
            "clientMetadata": {"app": "web", "version": "4.2.1", "experiment": "signup-flow-b"}
        },
        "response": {"autoConfirmUser": false, "autoVerifyEmail": false, "autoVerifyPhone": false}
    })
}

/// [`event`] with its string maps emptied but for the `email` the
/// example plugins read: what the host and the plugin would still do if
/// the contract handed maps over as handles (read by key) instead of
/// lowering every entry. The difference from [`event`] is what lowering
/// those map entries costs (issue 13's open contract question).
pub(crate) fn event_without_maps() -> Value {
    let mut event = event();
    let request = &mut event["request"];
    request["userAttributes"] = json!({"email": request["userAttributes"]["email"].clone()});
    request["validationData"] = json!({});
    request["clientMetadata"] = json!({});
    event
}

/// How many entries an event's request maps hold.
pub(crate) fn map_entries(event: &Value) -> usize {
    ["userAttributes", "validationData", "clientMetadata"]
        .iter()
        .filter_map(|map| event["request"][map].as_object())
        .map(|map| map.len())
        .sum()
}

pub(crate) fn runtime_with(metering: Metering) -> Arc<Runtime> {
    Arc::new(
        Runtime::new(RuntimeConfig {
            max_instances: 128,
            metering,
            ..RuntimeConfig::default()
        })
        .expect("an engine"),
    )
}

pub(crate) fn chain_dir(lengths: &[usize]) -> PluginsDir {
    let dir = PluginsDir::new();
    for &n in lengths {
        let tenant = format!("chain{n}");
        for (file, guest) in &CHAIN[..n] {
            dir.plugin(&tenant, file, guest);
        }
        dir.settings(&tenant, SETTINGS);
    }
    dir
}

pub(crate) async fn load(runtime: Arc<Runtime>, dir: &PluginsDir, tenant: &str) -> Tenant {
    let tenant = Tenant::load(
        &PluginLoader::new(runtime, None),
        &triggerfish::tenant::operator::TenantPolicy::default(),
        tenant,
        &dir.tenant_dir(tenant),
        None,
    )
    .await;
    assert!(tenant.failures.is_empty(), "{:?}", tenant.failures);
    tenant
}

/// A component with a custom section appended: the same plugin with other
/// bytes, as a new build would be.
pub(crate) fn variant(bytes: &[u8], n: usize) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"triggerfish-bench-build";
    let mut content = Vec::new();
    leb(name.len(), &mut content);
    content.extend_from_slice(name);
    content.extend_from_slice(&n.to_le_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    leb(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}
