//! Plugins in Python: `plugins/dynamodb-stream-logger-py` (CPython in a
//! component, built by `xtask::py` with componentize-py from PyPI) through
//! the real host, against the Rust `dynamodb-stream-logger`; and the
//! Python plugins `cargo xtask new --lang python` writes.
//!
//! componentize-py is installed into `target/py-tools` on first use. Where
//! Python 3 with pip, or PyPI, is not there, these tests skip themselves,
//! unless `TRIGGERFISH_REQUIRE_PY` is set (CI sets it).

use crate::common::*;
use aws_lambda_events::event::dynamodb::Event as DynamoDbEvent;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use triggerfish_test_support::xtask::{
    self,
    py::{self, PyError},
    template,
};

/// `result` of a build, or None (with a note) when the Python tools cannot
/// be had here and CI did not ask for them.
fn available<T>(result: Result<T, PyError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(PyError::Unavailable(why)) if std::env::var_os("TRIGGERFISH_REQUIRE_PY").is_none() => {
            eprintln!("skipped: the Python plugin cannot be built here: {why}");
            None
        }
        Err(error) => panic!("{error}"),
    }
}

/// The example Python plugin's `.wasm`, built if needed.
async fn python_logger() -> Option<String> {
    let built = tokio::task::spawn_blocking(|| py::build_py_plugin("dynamodb-stream-logger-py"))
        .await
        .unwrap();
    available(built).map(|wasm| wasm.display().to_string())
}

/// The messages plugins of tenant `tenant` logged, in order, read from the
/// host's log lines (`INFO invoke{tenant=T ...}:plugin{plugin=P}: plugin:
/// MESSAGE`).
fn plugin_lines(host: &ServeProcess, tenant: &str) -> Vec<String> {
    let tag = format!("invoke{{tenant={tenant} ");
    host.last_log()
        .lines()
        .filter(|line| line.contains(&tag))
        .filter_map(|line| line.split_once("}: plugin: "))
        .map(|(_, message)| message.to_owned())
        .collect()
}

/// Posts `event` to tenant `tenant`'s events route: (status, body).
async fn post(host: &ServeProcess, tenant: &str, event: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/tenants/{tenant}/events", host.base))
        .json(event)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A DynamoDB stream batch of one INSERT with `image` as keys and new
/// image.
fn dynamodb_batch(id: &str, image: Value) -> Value {
    json!({"Records": [{
        "eventID": id, "eventName": "INSERT", "eventVersion": "1.1",
        "eventSource": "aws:dynamodb", "awsRegion": "local",
        "dynamodb": {"Keys": image.clone(), "NewImage": image, "SequenceNumber": "7",
                     "SizeBytes": 10, "StreamViewType": "NEW_IMAGE"},
        "eventSourceARN": "arn:aws:dynamodb:local:0:table/t/stream/0"
    }]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamodb_logger_in_python_answers_and_logs_as_the_rust_one() {
    // Building and compiling CPython uses every core.
    let _cpu = timing_sensitive().await;
    let Some(python) = python_logger().await else {
        return;
    };
    let size = std::fs::metadata(&python).unwrap().len();
    eprintln!("the Python plugin is {:.1} MB", size as f64 / 1e6);

    let dir = PluginsDir::new();
    let settings = "[auth]\nmode = \"none\"\n";
    dir.plugin("rust", "10-logger.wasm", guests::DYNAMODB_STREAM_LOGGER)
        .settings("rust", settings)
        .plugin("py", "10-logger.wasm", &python)
        .settings("py", settings);
    // The binary, with its defaults: the compile in a child process under
    // the CPU-time and memory limits, no compile cache.
    let started = std::time::Instant::now();
    let host = ServeProcess::start(dir.path(), &["--no-cache"]);
    eprintln!(
        "both plugins compiled and loaded in {:?}",
        started.elapsed()
    );
    // Lambda's sample event (INSERT, MODIFY, REMOVE; numbers, strings) as
    // the crate's type prints it; every DynamoDB type, and numbers that
    // JSON and the two languages print differently; and images that are
    // not DynamoDB JSON, which fail the batch naming the attribute.
    let sample: DynamoDbEvent = crate::records::sample("example-dynamodb-event.json");
    let every_type = json!({
        "Id": {"N": "101"}, "s": {"S": "é \"quoted\"\n\u{1}\u{7f} 🦀"}, "b": {"B": "AAE="},
        "t": {"BOOL": true}, "f": {"BOOL": false}, "z": {"NULL": true},
        "m": {"M": {"inner": {"L": [{"S": "x"}, {"N": "1"}, {"M": {}}]}, "empty": {"L": []}}},
        "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2.5", "-0", "+7", "007"]}, "bs": {"BS": ["AA=="]},
        "n1": {"N": "1e16"}, "n2": {"N": "1e15"}, "n3": {"N": "0.00001"}, "n4": {"N": "0.0001"},
        "n5": {"N": "1.5e-7"}, "n6": {"N": "-0.0"}, "n7": {"N": "123456789012345678901234567890"},
        "n8": {"N": "18446744073709551615"}, "n9": {"N": "-9223372036854775808"},
        "n10": {"N": "-9223372036854775809"}, "n11": {"N": ".5"}, "n12": {"N": "5."},
        "n13": {"N": "1e-400"},
        "n14": {"N": "0.1"}, "n15": {"N": "100"}, "n16": {"N": "1e2"}, "n17": {"N": "5e-324"},
        "n18": {"N": "1.7976931348623157e308"}, "n19": {"N": "12345678.9"}, "n20": {"N": "-1.25E+3"},
        "zz": {"S": ""}, "long": {"N": format!("-{}7", "0".repeat(5000))},
        "long-float": {"N": format!("0.{}1", "0".repeat(5000))}
    });
    let bad = |attribute: Value| dynamodb_batch("bad", json!({"Id": {"N": "1"}, "a": attribute}));
    let events = [
        crate::records::printed(&sample),
        dynamodb_batch("every-type", every_type),
        bad(json!({"X": "1"})),
        bad(json!({"N": "ten"})),
        bad(json!({"N": "1e400"})),
        bad(json!({"N": " 1"})),
        bad(json!({"N": "1_000"})),
        bad(json!({"N": "inf"})),
        bad(json!({"N": "1".repeat(5000)})),
        bad(json!({"N": 1})),
        bad(json!({"S": "x", "N": "1"})),
        bad(json!({"M": {"inner": {"L": [{"S": "x"}, {"NS": ["1", "x"]}]}}})),
        bad(json!({"SS": "x"})),
        bad(json!({"BS": [1]})),
        bad(json!("plain")),
    ];
    let mut failures = 0;
    for (i, event) in events.iter().enumerate() {
        let rust = post(&host, "rust", event).await;
        let py = post(&host, "py", event).await;
        assert_eq!(py, rust, "event {i}: {event}\n{}", host.last_log());
        if rust.0 != 200 {
            failures += 1;
            assert_eq!(rust.1["error"]["kind"], "denied", "event {i}: {rust:?}");
            assert!(
                rust.1["error"]["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("attribute `a"),
                "event {i}: {rust:?}"
            );
        } else {
            assert_eq!(rust.1, json!({"batchItemFailures": []}), "event {i}");
        }
    }
    assert_eq!(failures, events.len() - 2);

    // Every line each plugin logged, the same, in the same order.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let (mut rust, mut py) = (Vec::new(), Vec::new());
    while std::time::Instant::now() < deadline {
        (rust, py) = (plugin_lines(&host, "rust"), plugin_lines(&host, "py"));
        if rust.len() >= 12 && py.len() >= rust.len() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(rust.len() >= 12, "{rust:?}\n{}", host.last_log());
    assert_eq!(py, rust, "\n{}", host.last_log());
    assert_eq!(rust[1], "INSERT");
    assert!(
        rust.iter().any(|line| line.contains(r#""new":{"Id":101"#)),
        "{rust:?}"
    );
}

/// Copies the template for `trigger` into `target/py-template-test`
/// (never into `plugins/`, and so not into the Cargo workspace).
fn generated(trigger: &str) -> py::PyPlugin {
    let root = xtask::workspace_root()
        .join("target")
        .join("py-template-test");
    let name = format!("tpl-{trigger}-py");
    let dir = root.join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&root).unwrap();
    template::new_py_plugin(&root, &name, trigger).unwrap();
    py::py_plugin(&dir).unwrap()
}

/// Whether the Python template of every trigger imports against
/// componentize-py's bindings of its world and defines the class that
/// world exports, with `handle` taking what the export's `handle` takes.
fn check_against_bindings(plugin: &py::PyPlugin, class: &str, bindings: &Path) {
    let out = std::process::Command::new("python3")
        .args([
            "-I",
            "-c",
            "import inspect, sys\n\
             sys.path[:0] = [sys.argv[1], sys.argv[2]]\n\
             import app, wit_world.exports as exports\n\
             mine, theirs = getattr(app, sys.argv[3]), getattr(exports, sys.argv[3])\n\
             assert theirs in mine.__mro__, mine\n\
             a = list(inspect.signature(mine.handle).parameters)\n\
             b = list(inspect.signature(theirs.handle).parameters)\n\
             assert a == b, (a, b)\n",
        ])
        .arg(bindings)
        .arg(&plugin.dir)
        .arg(class)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}: {}",
        plugin.name,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_python_plugins_build_and_run_in_the_host() {
    // Every trigger's template against its world's bindings (quick: no
    // CPython is built).
    let checked = tokio::task::spawn_blocking(|| {
        for trigger in template::TRIGGERS {
            let plugin = generated(trigger.name);
            let bindings = plugin.dir.with_extension("bindings");
            let _ = std::fs::remove_dir_all(&bindings);
            available(py::write_bindings(&plugin.world, &bindings))?;
            check_against_bindings(&plugin, &template::python_class(trigger), &bindings);
        }
        Some(())
    })
    .await
    .unwrap();
    if checked.is_none() {
        return;
    }

    // One built and run through the host: a DynamoDB stream plugin.
    let _cpu = timing_sensitive().await;
    let trigger = "dynamodb-stream";
    let wasm: PathBuf = tokio::task::spawn_blocking(move || py::build(&generated(trigger)))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = PluginsDir::new();
    dir.plugin("t", "30-generated.wasm", wasm.to_str().unwrap())
        .settings(
            "t",
            "[plugins.30-generated.config]\npoison = [\"mallory\"]\n",
        );
    let tenant = tenant(&dir, "t").await;
    assert!(tenant.failures.is_empty(), "{:?}", tenant.failures);
    let out = invoke(&tenant, crate::template::event_for(trigger, "jane"))
        .await
        .unwrap();
    assert_eq!(out, json!({"batchItemFailures": []}));
    let out = invoke(&tenant, crate::template::event_for(trigger, "mallory"))
        .await
        .unwrap();
    assert_eq!(out, json!({"batchItemFailures": [{"itemIdentifier": "7"}]}));
}
