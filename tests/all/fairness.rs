//! Fair CPU between tenants: one tenant's looping plugins, within its
//! quota, neither stall another tenant nor get retried.

use crate::common::*;
use std::time::{Duration, Instant};
use triggerfish::dispatch::{ErrorKind, InvokeError};

/// The 3-plugin PreSignUp chain of the example plugins, over HTTP.
fn victim(dir: &PluginsDir) {
    dir.plugin("victim", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
        .plugin(
            "victim",
            "20-email-allow-list.wasm",
            guests::EMAIL_ALLOW_LIST,
        )
        .plugin("victim", "30-auto-confirm.wasm", guests::PRESIGNUP_PROBE)
        .settings(
            "victim",
            "[auth]\nmode = \"none\"\n\
             [plugins.10-email-deny-list.config]\ndomains = [\"spam.test\"]\n\
             [plugins.20-email-allow-list.config]\ndomains = [\"example.com\"]\n\
             [plugins.30-auto-confirm.config]\nmode = \"auto-confirm\"\n",
        );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_loops_of_one_tenant_neither_stall_another_nor_are_retried() {
    let _cpu = timing_sensitive().await;
    let dir = PluginsDir::new();
    // The default quota (16 at once), fuel and attempts (3); a shorter
    // budget only to keep the test short. The plugin loops on a host call:
    // a bare spin uses up the default fuel in tens of milliseconds and
    // ends as `out-of-fuel`, never reaching the budget.
    dir.plugin("looper", "10-hostile.wasm", guests::HOSTILE)
        .settings(
            "looper",
            "[limits]\ntimeout-ms = 1000\n[plugins.10-hostile.config]\nmode = \"host-calls\"\n",
        );
    victim(&dir);
    let tenants = tenants(&dir).await;
    let looper = tenants.tenant("looper").unwrap();
    assert!(looper.failures.is_empty(), "{:?}", looper.failures);
    assert_eq!(looper.quotas.concurrency, 16);
    assert_eq!(looper.limits.attempts, 3);
    let server = Server::start(tenants.clone()).await;

    let loops: Vec<_> = (0..16)
        .map(|_| {
            let tenant = looper.clone();
            tokio::spawn(async move { invoke(&tenant, pre_sign_up("a@b.test")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let http = reqwest::Client::new();
    let url = format!("{}/v1/tenants/victim/events", server.base);
    let body = pre_sign_up("jane@example.com").to_string();
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        let sent = Instant::now();
        let response = http.post(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let event: serde_json::Value = response.json().await.unwrap();
        assert_eq!(event["response"]["autoConfirmUser"], true, "{event}");
        let took = sent.elapsed();
        // A liveness bound, not a speed figure: before fair scheduling an
        // event waited behind the loops for their whole budget.
        assert!(
            took < Duration::from_secs(1),
            "event {answered} of the other tenant took {took:?} while the loops ran"
        );
        answered += 1;
    }
    assert!(answered > 0);

    for task in loops {
        match task.await.unwrap() {
            Err(InvokeError::Chain(e)) => {
                assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
                assert_eq!(
                    e.attempts, 1,
                    "a loop slowed by its own tenant's loops is not retried: {e}"
                );
            }
            other => panic!("a loop ended with {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_call_that_barely_ran_is_still_retried() {
    let dir = PluginsDir::new();
    // Sleeping in the host holds no CPU turn: the call times out having
    // run almost nothing, with no call of its tenant competing.
    dir.plugin("sleeper", "10-hostile.wasm", guests::HOSTILE)
        .settings(
        "sleeper",
        "[limits]\ntimeout-ms = 300\nattempts = 2\n[plugins.10-hostile.config]\nmode = \"sleep\"\n",
    );
    let tenant = tenant(&dir, "sleeper").await;
    let error = chain_error(&tenant, pre_sign_up("a@b.test")).await;
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert_eq!(error.attempts, 2, "{error}");
}
