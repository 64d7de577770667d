//! The `triggerfish` command line: invoke, check, hash-key.

use crate::common::*;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn triggerfish(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_triggerfish"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

#[test]
fn invoke_prints_the_event_or_the_denial() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-email-deny-list.wasm", guests::EMAIL_DENY_LIST)
        .settings(
            "t",
            "[plugins.10-email-deny-list.config]\ndomains = \"spam.test\"\n",
        );
    let plugins_dir = dir.path().to_str().unwrap();
    let base = [
        "invoke",
        "--no-cache",
        "--plugins-dir",
        plugins_dir,
        "--tenant",
        "t",
    ];

    let event = pre_sign_up("jane@example.com");
    let out = triggerfish(&base, Some(&event.to_string()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, event);

    // From a file, and denied: exit 1, Cognito's words on stderr.
    let file = dir.path().join("event.json");
    std::fs::write(&file, pre_sign_up("x@spam.test").to_string()).unwrap();
    let out = triggerfish(&[&base[..], &[file.to_str().unwrap()]].concat(), None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PreSignUp failed with error Sign-ups from spam.test are not allowed."),
        "{stderr}"
    );

    // Not an event, or not a tenant: exit 2 with the reason.
    let out = triggerfish(&base, Some("{not json"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
    let out = triggerfish(
        &["invoke", "--plugins-dir", plugins_dir, "--tenant", "../t"],
        Some("{}"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a tenant name"));
}

#[test]
fn check_says_what_a_component_serves_or_why_it_is_not_a_plugin() {
    let out = triggerfish(&["check", guests::ROUTING_PROBE], None);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("a valid plugin"), "{stdout}");
    assert!(
        stdout.contains("triggerfish:user-pool/pre-sign-up@0.1.0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("triggerfish:sync/sync-trigger@0.1.0"),
        "{stdout}"
    );

    let out = triggerfish(&["check", guests::NOT_A_PLUGIN], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("implements no trigger"));

    let dir = PluginsDir::new();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm at all").unwrap();
    let out = triggerfish(&["check", garbage.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid WebAssembly component"));
}

#[test]
fn hash_key_prints_what_tenant_toml_stores() {
    let out = triggerfish(&["hash-key", "abc"], None);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        triggerfish::auth::hash_key("abc")
    );
    let help = triggerfish(&["serve", "--help"], None);
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--plugins-dir",
        "--listen",
        "--no-watch",
        "--cache-dir",
        "--max-instances",
    ] {
        assert!(help.contains(flag), "serve --help mentions {flag}");
    }
}
