//! Many tenants on one host: credentials, quotas, containment, fairness.

use crate::common::*;
use crate::lambda::invoke_signed;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use triggerfish::chain::{self, InvokeError};

const DENY: &str = "[plugins.10-email-deny-list.config]\ndomains = \"spam.test\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_sdk_signs_with_the_tenants_key_pair() {
    let dir = PluginsDir::new();
    let credentials = |id: &str, secret: &str| {
        format!("[[auth.aws-credentials]]\naccess-key-id = \"{id}\"\nsecret-access-key = \"{secret}\"\n{DENY}")
    };
    dir.plugin("pool", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
        .settings("pool", &credentials("AKIAPOOL", "pool-secret"));
    dir.plugin("other", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
        .settings("other", &credentials("AKIAOTHER", "other-secret"));
    let server = Server::start(host(&dir).await).await;
    let base = server.base.clone();
    let call = move |credentials: (&'static str, &'static str)| {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            invoke_signed(
                &base,
                "pool",
                &pre_sign_up("jane@example.com"),
                Some(credentials),
            )
        })
    };

    let answer = call(("AKIAPOOL", "pool-secret")).await.unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["payload"]["userName"], "jane");

    let answer = call(("AKIAPOOL", "a-wrong-secret")).await.unwrap();
    assert_eq!(answer["error"], "InvalidSignatureException", "{answer}");
    let answer = call(("AKIAOTHER", "other-secret")).await.unwrap();
    assert_eq!(
        answer["error"], "AccessDeniedException",
        "another tenant's key pair: {answer}"
    );
    let answer = call(("AKIANOBODY", "x")).await.unwrap();
    assert_eq!(answer["error"], "UnrecognizedClientException", "{answer}");

    // Unsigned requests are refused too.
    let response = reqwest::Client::new()
        .post(format!(
            "{}/2015-03-31/functions/pool/invocations",
            server.base
        ))
        .body(pre_sign_up("jane@example.com").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_concurrency_a_tenant_gets_a_fast_429() {
    let dir = PluginsDir::new();
    dir.plugin("busy", "10-hostile.wasm", guests::HOSTILE).settings(
        "busy",
        "[auth]\nmode = \"none\"\n[quotas]\nconcurrency = 2\n[limits]\ntimeout-ms = 1500\nattempts = 1\n\
         [plugins.10-hostile.config]\nmode = \"sleep\"\n",
    );
    let host = host(&dir).await;
    let server = Server::start(host.clone()).await;
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let tenant = host.tenant("busy").unwrap();
            tokio::spawn(async move { chain::invoke(&tenant, pre_sign_up("a@b.test")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let refused = chain::invoke(&host.tenant("busy").unwrap(), pre_sign_up("a@b.test")).await;
    assert!(
        matches!(refused, Err(InvokeError::TooManyRequests { limit: 2 })),
        "{refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "refused at once, not queued"
    );

    let http = reqwest::Client::new();
    let response = http
        .post(format!(
            "{}/2015-03-31/functions/busy/invocations",
            server.base
        ))
        .body(pre_sign_up("a@b.test").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(
        response.headers()["x-amzn-errortype"],
        "TooManyRequestsException"
    );
    let response = http
        .post(format!("{}/v1/tenants/busy/events", server.base))
        .body(pre_sign_up("a@b.test").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "too-many-requests");

    for task in slow {
        assert!(matches!(task.await.unwrap(), Err(InvokeError::Chain(_))));
    }
    // The slots are free again.
    let again = chain::invoke(&host.tenant("busy").unwrap(), pre_sign_up("a@b.test")).await;
    assert!(matches!(again, Err(InvokeError::Chain(_))), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_count_and_size_quotas() {
    let dir = PluginsDir::new();
    dir.plugin("few", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
        .plugin("few", "20-email-allow-list.wasm", guests::EMAIL_ALLOW_LIST)
        .settings("few", &format!("[quotas]\nplugins = 1\n{DENY}"));
    dir.plugin("small", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
        .settings("small", &format!("[quotas]\nwasm-kib = 8\n{DENY}"));
    let host = host(&dir).await;

    let few = host.tenant("few").unwrap();
    assert_eq!(few.plugins.len(), 1);
    let failure = few
        .failure_of("20-email-allow-list")
        .expect("the second plugin is refused");
    assert!(
        failure.error.contains("quota of 1 plugins"),
        "{}",
        failure.error
    );

    let small = host.tenant("small").unwrap();
    assert!(small.plugins.is_empty());
    let failure = small.failure_of("10-email-deny-list").unwrap();
    assert!(
        failure.error.contains("quota of 8192 bytes"),
        "{}",
        failure.error
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_cannot_reach_outside_the_plugins_folder() {
    use std::os::unix::fs::symlink;
    let outside = PluginsDir::new();
    outside
        .plugin(
            "elsewhere",
            "10-email-deny-list.wasm",
            guests::EMAIL_DENY_LIST,
        )
        .settings("elsewhere", "[auth]\nmode = \"none\"\n");
    let dir = PluginsDir::new();
    let tenant_dir = dir.tenant_dir("linked");
    symlink(
        outside
            .tenant_dir("elsewhere")
            .join("10-email-deny-list.wasm"),
        tenant_dir.join("10-link.wasm"),
    )
    .unwrap();
    symlink(
        outside.tenant_dir("elsewhere").join("tenant.toml"),
        tenant_dir.join("tenant.toml"),
    )
    .unwrap();
    symlink(outside.tenant_dir("elsewhere"), dir.path().join("borrowed")).unwrap();
    let host = host(&dir).await;

    assert!(
        host.tenant("borrowed").is_none(),
        "a linked folder is not a tenant"
    );
    let linked = host.tenant("linked").unwrap();
    assert!(linked.plugins.is_empty());
    let plugin = linked
        .failure_of("10-link")
        .expect("a linked plugin is refused");
    assert!(plugin.error.contains("is a link"), "{}", plugin.error);
    let settings = linked
        .failure_of("tenant.toml")
        .expect("a linked tenant.toml is refused");
    assert!(settings.error.contains("is a link"), "{}", settings.error);
    // And with its settings refused, the tenant keeps the safe defaults:
    // authentication on, with no key that could pass.
    assert_eq!(linked.auth.mode, triggerfish::tenant::AuthMode::Keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_runaway_plugin_does_not_slow_another() {
    let _cpu = timing_sensitive().await;
    let dir = PluginsDir::new();
    dir.plugin("attacker", "10-hostile.wasm", guests::HOSTILE)
        .settings(
            "attacker",
            "[limits]\nfuel = 10_000_000_000_000\ntimeout-ms = 2000\nattempts = 1\n\
         [plugins.10-hostile.config]\nmode = \"spin\"\n",
        );
    dir.plugin("victim", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
        .settings("victim", DENY);
    let host = host(&dir).await;

    let attack: Vec<_> = (0..12)
        .map(|_| {
            let tenant = host.tenant("attacker").unwrap();
            tokio::spawn(async move { chain::invoke(&tenant, pre_sign_up("a@b.test")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let victim = Arc::new(host.tenant("victim").unwrap());
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        let allowed = chain::invoke(&victim, pre_sign_up("jane@example.com")).await;
        assert!(
            allowed.is_ok(),
            "the victim's chain answers under attack: {allowed:?}"
        );
        let denied = chain::invoke(&victim, pre_sign_up("x@spam.test")).await;
        assert!(
            matches!(&denied, Err(InvokeError::Chain(e)) if e.kind == triggerfish::chain::ErrorKind::Denied),
            "{denied:?}"
        );
        answered += 2;
    }
    assert!(
        answered >= 10,
        "only {answered} answers in 1.5 s under attack"
    );
    for task in attack {
        let result = task.await.unwrap();
        assert!(
            matches!(result, Err(InvokeError::Chain(ref e)) if e.kind == triggerfish::chain::ErrorKind::Timeout),
            "{result:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_wait_for_a_free_instance_slot_instead_of_failing() {
    use triggerfish::plugin::PluginLoader;
    use triggerfish::runtime::{Runtime, RuntimeConfig};
    let dir = PluginsDir::new();
    dir.plugin("t", "10-auto-confirm.wasm", guests::PRESIGNUP_PROBE)
        .settings(
            "t",
            "[plugins.10-auto-confirm.config]\nmode = \"auto-confirm\"\n",
        );
    // A pool of two instances for sixteen events at once.
    let runtime = Runtime::new(RuntimeConfig {
        max_instances: 2,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let tenant = Arc::new(
        triggerfish::tenant::Tenant::load(
            &PluginLoader::new(Arc::new(runtime), None),
            "t",
            &dir.tenant_dir("t"),
            None,
        )
        .await,
    );
    let events: Vec<_> = (0..16)
        .map(|_| {
            let tenant = tenant.clone();
            tokio::spawn(
                async move { chain::invoke(&tenant, pre_sign_up("jane@example.com")).await },
            )
        })
        .collect();
    for event in events {
        let out = event.await.unwrap().expect("every event is answered");
        assert_eq!(out["response"]["autoConfirmUser"], true);
    }
}
