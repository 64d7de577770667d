//! Many tenants on one host: credentials, quotas, containment, fairness.

use crate::common::*;
use crate::lambda::invoke_signed;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use triggerfish::dispatch::InvokeError;
use triggerfish::tenant::registry::Tenants;

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
    let server = Server::start(tenants(&dir).await).await;
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
    let tenants = tenants(&dir).await;
    let server = Server::start(tenants.clone()).await;
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let tenant = tenants.tenant("busy").unwrap();
            tokio::spawn(async move { invoke(&tenant, pre_sign_up("a@b.test")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let refused = invoke(&tenants.tenant("busy").unwrap(), pre_sign_up("a@b.test")).await;
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
    let again = invoke(&tenants.tenant("busy").unwrap(), pre_sign_up("a@b.test")).await;
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
    let tenants = tenants(&dir).await;

    let few = tenants.tenant("few").unwrap();
    assert_eq!(few.plugins.len(), 1);
    let failure = few
        .failure_of("20-email-allow-list")
        .expect("the second plugin is refused");
    assert!(
        failure.error.contains("quota of 1 plugins"),
        "{}",
        failure.error
    );

    let small = tenants.tenant("small").unwrap();
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
    let tenants = tenants(&dir).await;

    assert!(
        tenants.tenant("borrowed").is_none(),
        "a linked folder is not a tenant"
    );
    let linked = tenants.tenant("linked").unwrap();
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
    assert_eq!(linked.auth.mode, triggerfish::auth::AuthMode::Keys);
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
    let tenants = tenants(&dir).await;

    let attack: Vec<_> = (0..12)
        .map(|_| {
            let tenant = tenants.tenant("attacker").unwrap();
            tokio::spawn(async move { invoke(&tenant, pre_sign_up("a@b.test")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let victim = Arc::new(tenants.tenant("victim").unwrap());
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        let allowed = invoke(&victim, pre_sign_up("jane@example.com")).await;
        assert!(
            allowed.is_ok(),
            "the victim's chain answers under attack: {allowed:?}"
        );
        let denied = invoke(&victim, pre_sign_up("x@spam.test")).await;
        assert!(
            matches!(&denied, Err(InvokeError::Chain(e)) if e.kind == triggerfish::dispatch::ErrorKind::Denied),
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
            matches!(result, Err(InvokeError::Chain(ref e)) if e.kind == triggerfish::dispatch::ErrorKind::Timeout),
            "{result:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_wait_for_a_free_instance_slot_instead_of_failing() {
    use triggerfish::engine::{Runtime, RuntimeConfig};
    use triggerfish::plugin::PluginLoader;
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
    let tenant =
        Arc::new(tenant_with(&PluginLoader::new(Arc::new(runtime), None), &dir, "t").await);
    let events: Vec<_> = (0..16)
        .map(|_| {
            let tenant = tenant.clone();
            tokio::spawn(async move { invoke(&tenant, pre_sign_up("jane@example.com")).await })
        })
        .collect();
    for event in events {
        let out = event.await.unwrap().expect("every event is answered");
        assert_eq!(out["response"]["autoConfirmUser"], true);
    }
}

/// Quotas, the ceilings of limits and the outbound hosts are the
/// operator's: a tenant.toml that asks for more is refused whole, naming
/// the key, and the tenant keeps what the operator gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_raise_what_the_operator_owns() {
    use triggerfish::tenant::operator::OperatorConfig;
    let operator = OperatorConfig::parse(
        "[defaults.quotas]\nconcurrency = 4\n\
         [defaults.outbound]\nallowed-hosts = [\"127.0.0.1\"]\n\
         [tenants.big.limits]\nmemory-mib = 100\n",
        128 << 20,
    )
    .unwrap();
    let dir = PluginsDir::new();
    let settings = [
        ("greedy", "[quotas]\nconcurrency = 100000\n", Some("[quotas] concurrency = 100000")),
        ("slow", "[limits]\ntimeout-ms = 60000\n", Some("[limits] timeout-ms = 60000")),
        ("memory", "[limits]\nmemory-mib = 100\n", Some("[limits] memory-mib = 100")),
        ("net", "[outbound]\nallowed-hosts = [\"evil.test\"]\n", Some("\"evil.test\"")),
        ("plugin", "[plugins.10-email-deny-list.limits]\nfuel = 99_000_000_000\n", Some("[plugins.10-email-deny-list.limits] fuel")),
        ("big", "[limits]\nmemory-mib = 100\n[quotas]\nconcurrency = 2\n[outbound]\nallowed-hosts = [\"127.0.0.1:9\"]\n", None),
    ];
    for (tenant, toml, _) in &settings {
        dir.plugin(tenant, "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
            .settings(tenant, &format!("{toml}{DENY}"));
    }
    let tenants = Tenants::open_with(loader(), operator, dir.path())
        .await
        .unwrap();
    for (name, _, refused) in settings {
        let tenant = tenants.tenant(name).unwrap();
        let failure = tenant.failure_of("tenant.toml").map(|f| f.error.clone());
        match refused {
            Some(key) => {
                let error = failure.unwrap_or_else(|| panic!("{name}: tenant.toml accepted"));
                assert!(error.contains(key), "{name}: {error}");
                assert!(error.contains("operator"), "{name}: {error}");
                // It keeps the operator's quota, not the one it asked for.
                assert_eq!(tenant.quotas.concurrency, 4, "{name}");
            }
            None => {
                assert_eq!(failure, None, "{name}");
                assert_eq!(tenant.limits.memory_bytes, 100 << 20);
                assert_eq!(tenant.quotas.concurrency, 2);
            }
        }
    }
}
