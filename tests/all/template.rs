//! `cargo xtask new`: a crate generated for each trigger passes its own
//! tests, builds for wasm32-wasip2, and works in the host as generated.
//!
//! The crates are generated into a small workspace of their own under
//! `target/template-test` (the SDK, the WIT and a copy of the manifest and
//! lock file), never into `plugins/`, and built with the guests' target
//! directory, where the SDK's dependencies are already compiled.

use crate::common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use triggerfish::dispatch::ErrorKind;
use triggerfish_test_support::xtask::{self, template};

/// Writes `bytes` to `path` unless it holds them already, so Cargo does
/// not rebuild what did not change.
fn sync_file(path: &Path, bytes: &[u8]) {
    if std::fs::read(path).ok().as_deref() != Some(bytes) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

fn sync_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (from, to) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            sync_dir(&from, &to);
        } else {
            sync_file(&to, &std::fs::read(&from).unwrap());
        }
    }
}

/// The repository's manifest with the plugins as the only members: its
/// `members` and `default-members` arrays (on one line or several) give
/// way to `members = ["plugins/*"]`; profiles and shared settings stay.
fn scratch_manifest(manifest: &str) -> String {
    let mut out = String::new();
    let mut in_array = false;
    for line in manifest.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        if in_array || key == "members" || key == "default-members" {
            if !in_array && key == "members" {
                out.push_str("members = [\"plugins/*\"]\n");
            }
            // Skip to the line that closes the array.
            in_array = !line.contains(']');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The scratch workspace, with a fresh crate per trigger; returns its root
/// and the crates' (package, trigger) names.
fn template_workspace() -> (PathBuf, Vec<(String, &'static str)>) {
    let repo = xtask::workspace_root();
    let root = repo.join("target").join("template-test");
    let manifest = std::fs::read_to_string(repo.join("Cargo.toml")).unwrap();
    sync_file(
        &root.join("Cargo.toml"),
        scratch_manifest(&manifest).as_bytes(),
    );
    // The repository's versions, whatever Cargo trimmed from the copy.
    sync_file(
        &root.join("Cargo.lock"),
        &std::fs::read(repo.join("Cargo.lock")).unwrap(),
    );
    sync_dir(&repo.join("wit"), &root.join("wit"));
    sync_dir(&repo.join("plugins/sdk"), &root.join("plugins/sdk"));

    // Generate into a scratch folder, then copy what changed.
    let scratch = root.join("scratch");
    let _ = std::fs::remove_dir_all(&scratch);
    let mut crates = Vec::new();
    for trigger in template::TRIGGERS {
        let name = format!("tpl-{}", trigger.name);
        let dir = template::new_plugin(&scratch, &name, trigger.name).unwrap();
        xtask::format_crate(&dir);
        sync_dir(&dir, &root.join("plugins").join(&name));
        crates.push((name, trigger.name));
    }
    (root, crates)
}

fn cargo(root: &Path, args: &[&str], packages: &[(String, &str)]) {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(root)
        .args(args)
        .arg("--offline")
        .env("CARGO_TARGET_DIR", xtask::guest_target_dir());
    for (package, _) in packages {
        command.args(["-p", package]);
    }
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_TARGET"] {
        command.env_remove(var);
    }
    let out = command.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {args:?} failed in {}:\n{}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn base64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The triple of the machine, such as `x86_64-unknown-linux-gnu`.
fn host_triple() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

/// An event for the template's trigger from user (or identity) `who`; for
/// stream records, one record whose payload is `who`.
pub(crate) fn event_for(trigger: &str, who: &str) -> serde_json::Value {
    let record = |record: serde_json::Value| json!({ "Records": [record] });
    match trigger {
        "kinesis" => {
            return record(json!({
                "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "k",
                            "sequenceNumber": "7", "data": base64(who),
                            "approximateArrivalTimestamp": 1.5},
                "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": "shardId-0:7",
                "eventName": "aws:kinesis:record", "awsRegion": "local",
                "eventSourceARN": "arn:aws:kinesis:local:0:stream/s"
            }))
        }
        "dynamodb-stream" => {
            return record(json!({
                "eventID": "e", "eventName": "INSERT", "eventVersion": "1.1",
                "eventSource": "aws:dynamodb", "awsRegion": "local",
                "dynamodb": {"Keys": {"Id": {"N": "1"}}, "NewImage": {"note": {"S": who}},
                             "SequenceNumber": "7", "SizeBytes": 10,
                             "StreamViewType": "NEW_IMAGE"},
                "eventSourceARN": "arn:aws:dynamodb:local:0:table/t/stream/0"
            }))
        }
        "sqs" => {
            return record(json!({
                "messageId": "7", "receiptHandle": "r", "body": who, "attributes": {},
                "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:local:0:q", "awsRegion": "local"
            }))
        }
        "s3" => {
            return record(json!({
                "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "local",
                "eventTime": "1970-01-01T00:00:00.000Z", "eventName": "ObjectCreated:Put",
                "s3": {"s3SchemaVersion": "1.0", "configurationId": "c",
                       "bucket": {"name": "b", "arn": "arn:aws:s3:::b"},
                       "object": {"key": who, "size": 1}}
            }))
        }
        _ => {}
    }
    if trigger == "sync" {
        let mut event = sync_event();
        event["identityId"] = json!(who);
        return event;
    }
    let version = if trigger == "pre-token-generation-v2" {
        "2"
    } else {
        "1"
    };
    let source = template::trigger(trigger)
        .map(|t| t.source)
        .expect("a trigger");
    let mut event = user_pool_event(version, source);
    event["userName"] = json!(who);
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_plugins_pass_their_tests_and_run_in_the_host() {
    let (root, crates) = tokio::task::spawn_blocking(|| {
        let (root, crates) = template_workspace();
        // The generated unit tests, natively, as `cargo test -p <name>`
        // runs them; with the guest profile and an explicit target, so the
        // proc macros the wasm build compiled are used again (the dev
        // profile would compile wit-bindgen's for minutes on a cold cache),
        // but without LTO, which makes linking fourteen test binaries slow.
        let tenants = host_triple();
        cargo(
            &root,
            &[
                "test",
                "--quiet",
                "--profile",
                xtask::PROFILE,
                "--target",
                &tenants,
                "--config",
                "profile.guest.lto=false",
                "--config",
                "profile.guest.codegen-units=16",
            ],
            &crates,
        );
        cargo(
            &root,
            &[
                "build",
                "--quiet",
                "--profile",
                xtask::PROFILE,
                "--target",
                xtask::TARGET,
            ],
            &crates,
        );
        (root, crates)
    })
    .await
    .unwrap();

    let wasm_dir = xtask::guest_target_dir()
        .join(xtask::TARGET)
        .join(xtask::PROFILE);
    for (package, trigger) in &crates {
        let wasm = wasm_dir.join(format!("{}.wasm", package.replace('-', "_")));
        let dir = PluginsDir::new();
        let key = template::config_key(template::trigger(trigger).unwrap());
        dir.plugin("t", "30-generated.wasm", wasm.to_str().unwrap())
            .settings(
                "t",
                &format!("[plugins.30-generated.config]\n{key} = [\"mallory\"]\n"),
            );
        let tenant = tenant(&dir, "t").await;
        assert!(
            tenant.failures.is_empty(),
            "{trigger}: {:?}",
            tenant.failures
        );
        let served: Vec<_> = tenant.plugins[0].triggers().collect();
        assert_eq!(served.len(), 1, "{trigger}: {served:?}");

        // Anyone else passes through unchanged.
        let event = event_for(trigger, "jane");
        let out = invoke(&tenant, event.clone())
            .await
            .unwrap_or_else(|e| panic!("{trigger}: {e:?}"));
        if event.get("Records").is_some() {
            assert_eq!(out, json!({"batchItemFailures": []}), "{trigger}");
        } else if *trigger == "sync" {
            assert_eq!(out["datasetRecords"], event["datasetRecords"], "{trigger}");
        } else {
            assert_eq!(out["request"], event["request"], "{trigger}");
        }
        // A blocked user is refused with the template's message; a
        // poisoned record is reported failed (an S3 event fails whole).
        let blocked = event_for(trigger, "mallory");
        match *trigger {
            "kinesis" | "dynamodb-stream" | "sqs" => {
                let out = invoke(&tenant, blocked).await.unwrap();
                assert_eq!(
                    out,
                    json!({"batchItemFailures": [{"itemIdentifier": "7"}]}),
                    "{trigger}"
                );
            }
            _ => {
                let error = chain_error(&tenant, blocked).await;
                assert_eq!(error.kind, ErrorKind::Denied, "{trigger}");
                let expected = if *trigger == "s3" {
                    "mallory is poison"
                } else {
                    "mallory is blocked"
                };
                assert_eq!(error.message, expected, "{trigger}");
            }
        }
    }
    drop(root);
}
