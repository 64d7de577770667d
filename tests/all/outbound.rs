//! Outbound HTTP: only to the hosts a tenant allows, within a timeout.

use crate::common::*;
use axum::routing::post;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use triggerfish::dispatch::ErrorKind;

/// A local HTTP server that records the bodies it is sent.
async fn recording_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new()
        .route(
            "/check",
            post(move |body: String| async move {
                record.lock().unwrap().push(body);
                "ok"
            }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (authority, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_reach_only_allowed_hosts() {
    let (authority, seen) = recording_server().await;
    let dir = PluginsDir::new();
    let plugin = |tenant: &str, toml: String| {
        dir.plugin(tenant, "10-http.wasm", guests::HTTP_PROBE)
            .settings(tenant, &toml);
    };
    let url =
        |path: &str| format!("[plugins.10-http.config]\nurl = \"http://{authority}{path}\"\n");
    plugin(
        "allowed",
        format!(
            "[outbound]\nallowed-hosts = [\"{authority}\"]\n{}",
            url("/check")
        ),
    );
    plugin("nothing-allowed", url("/check"));
    plugin(
        "other-port",
        format!(
            "[outbound]\nallowed-hosts = [\"127.0.0.1:1\"]\n{}",
            url("/check")
        ),
    );
    plugin(
        "per-plugin",
        format!(
            "{}[plugins.10-http.outbound]\nallowed-hosts = [\"127.0.0.1\"]\n",
            url("/check")
        ),
    );
    plugin(
        "slow",
        format!(
            "[outbound]\nallowed-hosts = [\"{authority}\"]\ntimeout-ms = 300\n{}",
            url("/slow")
        ),
    );
    let tenants = tenants(&dir).await;

    for tenant in ["allowed", "per-plugin"] {
        let out = invoke(
            &tenants.tenant(tenant).unwrap(),
            pre_sign_up("jane@example.com"),
        )
        .await
        .unwrap_or_else(|e| panic!("{tenant}: {e}"));
        assert_eq!(out["response"]["autoConfirmUser"], true, "{tenant}");
    }
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [
            "{\"email\":\"jane@example.com\"}",
            "{\"email\":\"jane@example.com\"}"
        ]
    );

    for tenant in ["nothing-allowed", "other-port"] {
        let error = chain_error(
            &tenants.tenant(tenant).unwrap(),
            pre_sign_up("jane@example.com"),
        )
        .await;
        assert_eq!(error.kind, ErrorKind::Denied, "{tenant}");
        assert!(
            error.message.contains("denied"),
            "{tenant}: {}",
            error.message
        );
        assert!(
            error.message.contains("allowed-hosts"),
            "{tenant}: {}",
            error.message
        );
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "refused requests never left the host"
    );

    let started = Instant::now();
    let error = chain_error(
        &tenants.tenant("slow").unwrap(),
        pre_sign_up("jane@example.com"),
    )
    .await;
    assert!(error.message.contains("timed out"), "{}", error.message);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
