//! `cargo xtask new <name> --trigger <trigger>`: a new plugin crate that
//! builds, passes its own tests and loads in the host as written.
//!
//! Every template is the same small, working plugin: it refuses events for
//! the users listed in its config (`blocked-users`; `blocked-identities`
//! for the sync trigger; for stream records, it reports failed the records
//! whose payload holds a text listed in `poison`) and lets the rest through
//! unchanged, with a unit test of both. That shows the parts every handler has (config, a
//! denial, logging, a test) and leaves one place to write the real logic.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// How a trigger's `handle` is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `handle(context, request, response) -> Result<Response, String>`
    Respond,
    /// `handle(context, request) -> Result<(), String>`
    Notify,
    /// `handle(event, records) -> Result<DatasetRecords, String>`
    Sync,
    /// `handle(records) -> Result<Vec<String>, String>` (failed ids), or
    /// for S3 `Result<(), String>`
    Records(Batch),
}

/// How a stream-record template reads its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Batch {
    /// The record type in the SDK module.
    item: &'static str,
    /// An expression over `record`: the payload as text.
    payload: &'static str,
    /// An expression over `record`: its identifier in a failure report;
    /// none where the event fails whole (S3).
    id: Option<&'static str>,
    /// A `testing::` call making a sample record from `{id}` and
    /// `{payload}` (both replaced by string literals).
    sample: &'static str,
}

/// A trigger a template can be written for.
#[derive(Debug, Clone, Copy)]
pub struct TriggerTemplate {
    /// The name on the command line: the WIT interface name.
    pub name: &'static str,
    /// The SDK module (and `export!` name).
    pub module: &'static str,
    shape: Shape,
    /// A `triggerSource` of this trigger (for tests).
    pub source: &'static str,
    /// Whether the request has `user_attributes` (for `request.email()`).
    has_email: bool,
    /// One comment line pointing at the SDK helpers for this trigger.
    hint: &'static str,
}

const fn t(
    name: &'static str,
    module: &'static str,
    shape: Shape,
    source: &'static str,
    has_email: bool,
    hint: &'static str,
) -> TriggerTemplate {
    TriggerTemplate {
        name,
        module,
        shape,
        source,
        has_email,
        hint,
    }
}

/// Every trigger of the contract.
pub const TRIGGERS: &[TriggerTemplate] = &[
    t("pre-sign-up", "pre_sign_up", Shape::Respond, "PreSignUp_SignUp", true,
      "response.confirm_user().verify_email();"),
    t("post-confirmation", "post_confirmation", Shape::Notify, "PostConfirmation_ConfirmSignUp", true,
      "welcome the new user; Ok(()) lets the flow go on."),
    t("pre-authentication", "pre_authentication", Shape::Notify, "PreAuthentication_Authentication", true,
      "deny!(...) refuses the sign-in; Ok(()) lets it go on."),
    t("post-authentication", "post_authentication", Shape::Notify, "PostAuthentication_Authentication", true,
      "react to the sign-in (request.new_device_used, ...)."),
    t("define-auth-challenge", "define_auth_challenge", Shape::Respond, "DefineAuthChallenge_Authentication", true,
      "response.next_challenge(\"CUSTOM_CHALLENGE\"), .finish_with_tokens(), request.failures(...)"),
    t("create-auth-challenge", "create_auth_challenge", Shape::Respond, "CreateAuthChallenge_Authentication", true,
      "response.set_public(\"question\", ...).set_private(\"answer\", ...)"),
    t("verify-auth-challenge-response", "verify_auth_challenge_response", Shape::Respond,
      "VerifyAuthChallengeResponse_Authentication", true,
      "response.answer_correct = Some(request.private_parameter(\"answer\") == Some(&request.challenge_answer))"),
    t("pre-token-generation", "pre_token_generation", Shape::Respond, "TokenGeneration_Authentication", true,
      "response.add_claim(\"department\", \"sales\").suppress_claim(\"email\")"),
    t("pre-token-generation-v2", "pre_token_generation_v2", Shape::Respond, "TokenGeneration_Authentication", true,
      "response.id_token().add_claim(\"tier\", \"gold\"); response.access_token().add_scope(\"api/read\")"),
    t("user-migration", "user_migration", Shape::Respond, "UserMigration_Authentication", false,
      "response.set_attribute(\"email\", ...); response.final_user_status = Some(\"CONFIRMED\".into())"),
    t("custom-message", "custom_message", Shape::Respond, "CustomMessage_SignUp", true,
      "response.set_email(subject, body): the body must contain request.code_parameter"),
    t("custom-email-sender", "custom_email_sender", Shape::Notify, "CustomEmailSender_SignUp", true,
      "deliver the message; request.code is encrypted with the pool's KMS key."),
    t("custom-sms-sender", "custom_sms_sender", Shape::Notify, "CustomSMSSender_SignUp", true,
      "deliver the message; request.code is encrypted with the pool's KMS key."),
    t("sync", "sync_trigger", Shape::Sync, "SyncTrigger", false,
      "Return the records to change: a returned key replaces or adds, Op::Remove removes."),
    t("kinesis", "kinesis", Shape::Records(Batch {
        item: "KinesisRecord",
        payload: "String::from_utf8_lossy(&record.kinesis.data)",
        id: Some("record.kinesis.sequence_number"),
        sample: "testing::kinesis_record({id}, {payload}.as_bytes())",
      }), "aws:kinesis", false,
      "record.kinesis.partition_key orders records; a failure is retried in order."),
    t("dynamodb-stream", "dynamodb_stream", Shape::Records(Batch {
        item: "DynamodbRecord",
        payload: "record.dynamodb.new_image.as_deref().unwrap_or_default()",
        id: Some("record.dynamodb.sequence_number"),
        sample: "testing::dynamodb_record({id}, &format!(r#\"{{\"note\":{{\"S\":\"{}\"}}}}\"#, {payload}))",
      }), "aws:dynamodb", false,
      "triggerfish_sdk::dynamodb_stream::unmarshall(&record.dynamodb.keys) reads the keys as JSON."),
    t("sqs", "sqs", Shape::Records(Batch {
        item: "Message",
        payload: "record.body.as_str()",
        id: Some("record.message_id"),
        sample: "testing::sqs_message({id}, {payload})",
      }), "aws:sqs", false,
      "a failed message comes back after the visibility timeout."),
    t("s3", "s3", Shape::Records(Batch {
        item: "S3Record",
        payload: "record.s3.object.key.as_str()",
        id: None,
        sample: "testing::s3_record({payload})",
      }), "aws:s3", false,
      "record.event_name says what happened (ObjectCreated:Put, ObjectRemoved:Delete)."),
];

/// The trigger called `name` (`pre-sign-up` or `pre_sign_up`).
pub fn trigger(name: &str) -> Option<&'static TriggerTemplate> {
    let name = name.trim().replace('_', "-");
    let name = if name == "sync-trigger" {
        "sync"
    } else {
        &name
    };
    TRIGGERS.iter().find(|t| t.name == name)
}

/// The names `--trigger` takes.
pub fn trigger_names() -> String {
    TRIGGERS
        .iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ")
}

const RESERVED: &[&str] = &[
    "sdk",
    "triggerfish",
    "triggerfish-sdk",
    "triggerfish-test-support",
    "xtask",
    "test",
    "core",
    "std",
    "alloc",
];

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use",
    "where", "while", "abstract", "become", "box", "do", "final", "macro", "override", "priv",
    "typeof", "unsized", "virtual", "yield", "try", "gen",
];

/// Checks a plugin name: lower-case letters, digits and `-`, starting with
/// a letter, as Cargo and the plugins folder both accept.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        return Err(format!(
            "`{name}` cannot name a plugin: use lower-case letters, digits and single dashes, \
             starting with a letter (such as `block-users`)"
        ));
    }
    if RESERVED.contains(&name) || KEYWORDS.contains(&name) {
        return Err(format!("`{name}` is taken: choose another name"));
    }
    Ok(())
}

/// `block-users` → `BlockUsers`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// Writes the crate `plugins_dir/<name>` for `trigger` and returns its
/// folder. Refuses to overwrite anything.
pub fn new_plugin(plugins_dir: &Path, name: &str, trigger_name: &str) -> Result<PathBuf, String> {
    write_new(plugins_dir, name, trigger_name, |trigger| {
        [
            ("Cargo.toml", cargo_toml(name, trigger)),
            ("README.md", readme(name, trigger)),
            ("src/lib.rs", lib_rs(name, trigger)),
        ]
    })
}

/// Checks the plugin's name and trigger, then writes `files` for that
/// trigger into the new folder `plugins_dir/<name>`, which must not exist
/// yet; returns the folder.
fn write_new<const N: usize>(
    plugins_dir: &Path,
    name: &str,
    trigger_name: &str,
    files: impl FnOnce(&TriggerTemplate) -> [(&'static str, String); N],
) -> Result<PathBuf, String> {
    check_name(name)?;
    let trigger = trigger(trigger_name).ok_or_else(|| {
        format!(
            "`{trigger_name}` is not a trigger; use one of: {}",
            trigger_names()
        )
    })?;
    let dir = plugins_dir.join(name);
    if dir.exists() {
        return Err(format!("{} already exists", dir.display()));
    }
    for (path, text) in files(trigger) {
        let path = dir.join(path);
        let folder = path.parent().unwrap_or(&dir);
        std::fs::create_dir_all(folder)
            .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(dir)
}

fn cargo_toml(name: &str, trigger: &TriggerTemplate) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
description = "{trigger}: refuses events for blocked users (generated by cargo xtask new)"
edition.workspace = true
license.workspace = true
publish.workspace = true

[lib]
crate-type = ["cdylib"]

[dependencies]
triggerfish-sdk = {{ path = "../sdk" }}
"#,
        trigger = trigger.name
    )
}

fn readme(name: &str, trigger: &TriggerTemplate) -> String {
    let key = config_key(trigger);
    let what = match trigger.shape {
        Shape::Sync => "refuses events for the identity IDs listed in `blocked-identities` and \
                        lets every\nother event through unchanged"
            .to_owned(),
        Shape::Records(_) => format!(
            "reports failed the records whose payload holds a text listed in\n`{key}` \
             and logs the others"
        ),
        _ => "refuses events for the user names listed in `blocked-users` and lets every\n\
              other event through unchanged"
            .to_owned(),
    };
    let who = match trigger.shape {
        Shape::Sync => "the identity IDs to refuse",
        Shape::Records(_) => "texts that fail a record",
        _ => "the user names to refuse",
    };
    format!(
        r#"# {name}

`{trigger}`: {what}. (Written by `cargo xtask new`: replace this
with what your plugin does.)

## Config

| key | what it does |
|---|---|
| `{key}` | list: {who} |

```toml
[plugins.30-{name}.config]
{key} = ["mallory"]
```

## Build and test

```sh
cargo test -p {name}          # the unit tests, natively
cargo xtask build-plugins     # target/guests/wasm32-wasip2/guest/{file}.wasm
cargo xtask install {name}    # into the demo tenant, as 30-{name}.wasm
```
"#,
        trigger = trigger.name,
        file = name.replace('-', "_"),
    )
}

/// The config key a template reads its list from.
pub fn config_key(trigger: &TriggerTemplate) -> &'static str {
    match trigger.shape {
        Shape::Sync => "blocked-identities",
        Shape::Records(_) => "poison",
        _ => "blocked-users",
    }
}

fn lib_rs(name: &str, trigger: &TriggerTemplate) -> String {
    let ty = type_name(name);
    let module = trigger.module;
    let mut src = String::new();
    let w = &mut src;
    match trigger.shape {
        Shape::Respond | Shape::Notify => {
            let respond = trigger.shape == Shape::Respond;
            let _ = writeln!(
                w,
                "//! `{}`: refuses events for the users listed in config `blocked-users`\n\
                 //! and lets every other event through. Written by `cargo xtask new`:\n\
                 //! replace this with what the plugin does, and its config keys.\n",
                trigger.name
            );
            let imports = if respond {
                "Context, Guest, Request, Response"
            } else {
                "Context, Guest, Request"
            };
            let _ = writeln!(w, "use triggerfish_sdk::{module}::{{{imports}}};");
            let _ = writeln!(w, "use triggerfish_sdk::{{config, deny, info}};\n");
            let _ = writeln!(w, "struct {ty};\n");
            let _ = writeln!(w, "impl Guest for {ty} {{");
            let request = if trigger.has_email {
                "request"
            } else {
                "_request"
            };
            if respond {
                let _ = writeln!(
                    w,
                    "    fn handle(context: Context, {request}: Request, response: Response) -> Result<Response, String> {{"
                );
            } else {
                let _ = writeln!(
                    w,
                    "    fn handle(context: Context, {request}: Request) -> Result<(), String> {{"
                );
            }
            let _ = writeln!(
                w,
                "        // Values from tenant.toml, [plugins.<file stem>.config].\n\
                 \x20       let blocked = config::list(\"blocked-users\");\n\
                 \x20       let user = context.user_name.as_deref().unwrap_or_default();\n\
                 \x20       if blocked.iter().any(|b| b == user) {{\n\
                 \x20           deny!(\"{{user}} is blocked\");\n\
                 \x20       }}"
            );
            if trigger.has_email {
                let _ = writeln!(
                    w,
                    "        info!(\n\
                     \x20           \"{{}} for {{user}} ({{}})\",\n\
                     \x20           context.trigger_source,\n\
                     \x20           request.email().unwrap_or(\"no email\")\n\
                     \x20       );"
                );
            } else {
                let _ = writeln!(
                    w,
                    "        info!(\"{{}} for {{user}}\", context.trigger_source);"
                );
            }
            let _ = writeln!(
                w,
                "        // TODO: the plugin's own logic. For instance: {}",
                trigger.hint
            );
            let _ = writeln!(
                w,
                "        {}",
                if respond { "Ok(response)" } else { "Ok(())" }
            );
            let _ = writeln!(w, "    }}\n}}\n");
        }
        Shape::Sync => {
            let _ = writeln!(
                w,
                "//! SyncTrigger: refuses syncs of the identities listed in config\n\
                 //! `blocked-identities` and leaves every other dataset as it is.\n\
                 //! Written by `cargo xtask new`: replace this with what the plugin\n\
                 //! does, and its config keys.\n"
            );
            let _ = writeln!(
                w,
                "use triggerfish_sdk::sync_trigger::{{DatasetRecords, Event, Guest}};\n\
                 use triggerfish_sdk::{{config, deny, info}};\n\n\
                 struct {ty};\n\n\
                 impl Guest for {ty} {{\n\
                 \x20   fn handle(event: Event, records: DatasetRecords) -> Result<DatasetRecords, String> {{\n\
                 \x20       // Values from tenant.toml, [plugins.<file stem>.config].\n\
                 \x20       let blocked = config::list(\"blocked-identities\");\n\
                 \x20       if blocked.contains(&event.identity_id) {{\n\
                 \x20           deny!(\"{{}} is blocked\", event.identity_id);\n\
                 \x20       }}\n\
                 \x20       info!(\"sync of {{}} ({{}} records)\", event.dataset_name, records.len());\n\
                 \x20       // TODO: the plugin's own logic. {hint}\n\
                 \x20       Ok(Vec::new())\n\
                 \x20   }}\n\
                 }}\n",
                hint = trigger.hint
            );
        }
        Shape::Records(batch) => records_handler(w, &ty, trigger, batch),
    }
    let _ = writeln!(w, "triggerfish_sdk::export!({ty}: {module});\n");
    tests(w, &ty, trigger);
    src
}

fn records_handler(w: &mut String, ty: &str, trigger: &TriggerTemplate, batch: Batch) {
    let module = trigger.module;
    let item = batch.item;
    let _ = writeln!(
        w,
        "//! `{}`: reports failed the records whose payload holds a text listed in\n\
         //! config `poison`, and logs the others. Written by `cargo xtask new`:\n\
         //! replace this with what the plugin does, and its config keys.\n",
        trigger.name
    );
    let (ret, failure, done) = match batch.id {
        Some(id) => (
            "Result<Vec<String>, String>",
            format!(
                "            // Reported failed: retried, then sent to the failure destination.\n\
                 \x20           failed.push({id}.clone());\n\
                 \x20           continue;"
            ),
            "Ok(failed)",
        ),
        None => (
            "Result<(), String>",
            "            // An S3 event fails whole, and is retried.\n\
             \x20           deny!(\"{payload} is poison\");"
                .to_owned(),
            "Ok(())",
        ),
    };
    let macros = if batch.id.is_some() {
        "config, info"
    } else {
        "config, deny, info"
    };
    let _ = writeln!(
        w,
        "use triggerfish_sdk::{module}::{{Guest, {item}}};\n\
         use triggerfish_sdk::{{{macros}}};\n\n\
         struct {ty};\n\n\
         impl Guest for {ty} {{\n\
         \x20   fn handle(records: Vec<{item}>) -> {ret} {{\n\
         \x20       // Values from tenant.toml, [plugins.<file stem>.config].\n\
         \x20       let poison = config::list(\"poison\");\n{failed}\
         \x20       for record in &records {{\n\
         \x20           let payload = {payload};\n\
         \x20           if poison.iter().any(|p| payload.contains(p.as_str())) {{\n\
         {failure}\n\
         \x20           }}\n\
         \x20           info!(\"{{}} bytes: {{payload}}\", payload.len());\n\
         \x20           // TODO: the plugin's own logic. {hint}\n\
         \x20       }}\n\
         \x20       {done}\n\
         \x20   }}\n\
         }}\n",
        payload = batch.payload,
        hint = trigger.hint,
        failed = if batch.id.is_some() {
            "        let mut failed = Vec::new();\n"
        } else {
            ""
        },
    );
}

fn tests(w: &mut String, ty: &str, trigger: &TriggerTemplate) {
    let _ = writeln!(
        w,
        "#[cfg(test)]\nmod tests {{\n    use super::*;\n    use triggerfish_sdk::testing;\n"
    );
    match trigger.shape {
        Shape::Respond | Shape::Notify => {
            let (ret, call, ok) = if trigger.shape == Shape::Respond {
                (
                    "Result<Response, String>",
                    format!("{ty}::handle(context, Request::default(), Response::default())"),
                    "Ok(Response::default())",
                )
            } else {
                (
                    "Result<(), String>",
                    format!("{ty}::handle(context, Request::default())"),
                    "Ok(())",
                )
            };
            let _ = writeln!(
                w,
                "    fn run(user: &str) -> {ret} {{\n\
                 \x20       let mut context = testing::context({source:?});\n\
                 \x20       context.user_name = Some(user.to_owned());\n\
                 \x20       {call}\n\
                 \x20   }}\n\n\
                 \x20   #[test]\n\
                 \x20   fn lets_other_users_through_unchanged() {{\n\
                 \x20       testing::set_config([(\"blocked-users\", \"mallory\")]);\n\
                 \x20       assert_eq!(run(\"jane\"), {ok});\n\
                 \x20   }}\n\n\
                 \x20   #[test]\n\
                 \x20   fn refuses_blocked_users() {{\n\
                 \x20       testing::set_config([(\"blocked-users\", \"mallory, eve\")]);\n\
                 \x20       assert_eq!(run(\"eve\").unwrap_err(), \"eve is blocked\");\n\
                 \x20   }}\n\
                 }}",
                source = trigger.source,
            );
        }
        Shape::Sync => {
            let _ = writeln!(
                w,
                "    fn run(identity: &str) -> Result<DatasetRecords, String> {{\n\
                 \x20       let event = Event {{\n\
                 \x20           identity_id: identity.to_owned(),\n\
                 \x20           ..Default::default()\n\
                 \x20       }};\n\
                 \x20       {ty}::handle(event, Vec::new())\n\
                 \x20   }}\n\n\
                 \x20   #[test]\n\
                 \x20   fn leaves_other_datasets_unchanged() {{\n\
                 \x20       testing::set_config([(\"blocked-identities\", \"mallory\")]);\n\
                 \x20       assert_eq!(run(\"jane\"), Ok(Vec::new()));\n\
                 \x20   }}\n\n\
                 \x20   #[test]\n\
                 \x20   fn refuses_blocked_identities() {{\n\
                 \x20       testing::set_config([(\"blocked-identities\", \"mallory\")]);\n\
                 \x20       assert_eq!(run(\"mallory\").unwrap_err(), \"mallory is blocked\");\n\
                 \x20   }}\n\
                 }}"
            );
        }
        Shape::Records(batch) => {
            let sample = |id: &str, payload: &str| {
                batch
                    .sample
                    .replace("{id}", &format!("{id:?}"))
                    .replace("{payload}", &format!("{payload:?}"))
            };
            let (jane, mallory) = (sample("1", "jane"), sample("2", "mallory"));
            let (good, bad) = match batch.id {
                Some(_) => (
                    "Ok(Vec::new())".to_owned(),
                    format!("{ty}::handle(vec![{jane}, {mallory}]), Ok(vec![\"2\".to_owned()])"),
                ),
                None => (
                    "Ok(())".to_owned(),
                    format!("{ty}::handle(vec![{mallory}]).unwrap_err(), \"mallory is poison\""),
                ),
            };
            let _ = writeln!(
                w,
                "    #[test]\n\
                 \x20   fn lets_other_records_through() {{\n\
                 \x20       testing::set_config([(\"poison\", \"mallory\")]);\n\
                 \x20       assert_eq!({ty}::handle(vec![{jane}]), {good});\n\
                 \x20   }}\n\n\
                 \x20   #[test]\n\
                 \x20   fn reports_poisoned_records() {{\n\
                 \x20       testing::set_config([(\"poison\", \"mallory\")]);\n\
                 \x20       assert_eq!({bad});\n\
                 \x20   }}\n\
                 }}"
            );
        }
    }
}

// ---------------------------------------------------------------- Python

/// The languages `cargo xtask new --lang` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// A crate: `Cargo.toml`, `src/lib.rs` with unit tests, a README.
    Rust,
    /// A Python plugin built with componentize-py (`cargo xtask build-py`):
    /// `app.py`, `pyproject.toml` naming its world, a README.
    Python,
}

impl Lang {
    /// `rust` or `python` (`py` too).
    pub fn parse(name: &str) -> Result<Lang, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "rust" | "rs" => Ok(Lang::Rust),
            "python" | "py" => Ok(Lang::Python),
            other => Err(format!("`{other}` is not a language: use rust or python")),
        }
    }
}

/// The WIT interface a trigger's plugin exports (`sync` is `sync-trigger`).
fn interface(trigger: &TriggerTemplate) -> &'static str {
    if trigger.shape == Shape::Sync {
        "sync-trigger"
    } else {
        trigger.name
    }
}

/// The world of the contract a plugin of `trigger` is built against.
pub fn world(trigger: &TriggerTemplate) -> String {
    match trigger.shape {
        Shape::Sync => "triggerfish:sync/sync-plugin@0.1.0".to_owned(),
        Shape::Records(_) => format!("triggerfish:records/{}-plugin@0.1.0", trigger.name),
        _ => format!("triggerfish:user-pool/{}-plugin@0.1.0", trigger.name),
    }
}

/// The class componentize-py expects for an exported interface:
/// `pre-token-generation-v2` → `PreTokenGenerationV2`.
pub fn python_class(trigger: &TriggerTemplate) -> String {
    type_name(interface(trigger))
}

/// Writes the Python plugin `plugins_dir/<name>` for `trigger` (every
/// trigger of the contract) and returns its folder. Refuses to overwrite
/// anything.
pub fn new_py_plugin(
    plugins_dir: &Path,
    name: &str,
    trigger_name: &str,
) -> Result<PathBuf, String> {
    write_new(plugins_dir, name, trigger_name, |trigger| {
        [
            ("pyproject.toml", pyproject(name, trigger)),
            ("README.md", py_readme(name, trigger)),
            ("app.py", app_py(trigger)),
        ]
    })
}

fn pyproject(name: &str, trigger: &TriggerTemplate) -> String {
    format!(
        r#"[project]
name = "{name}"
version = "0.1.0"
description = "{trigger}: a Triggerfish plugin in Python (generated by cargo xtask new)"
requires-python = ">=3.10"

# Read by `cargo xtask build-py`: the world of the contract (wit/) the
# plugin is built against, and the module componentize-py starts from.
[tool.triggerfish]
world = "{world}"
module = "app"
"#,
        trigger = trigger.name,
        world = world(trigger),
    )
}

fn py_readme(name: &str, trigger: &TriggerTemplate) -> String {
    let key = config_key(trigger);
    let what = match trigger.shape {
        Shape::Sync => {
            "refuses events for the identity IDs listed in `blocked-identities` and \
                        lets every\nother event through unchanged"
        }
        Shape::Records(_) => {
            "reports failed the records whose payload holds a text listed in\n\
                              `poison` and logs the others"
        }
        _ => {
            "refuses events for the user names listed in `blocked-users` and lets every\n\
              other event through unchanged"
        }
    };
    format!(
        r#"# {name}

`{trigger}`, in Python: {what}. (Written by `cargo xtask new --lang
python`: replace this with what your plugin does.)

The handler is the class `{class}` in `app.py`; componentize-py builds it,
with CPython, into a component of about 18 MB against the world
`{world}` of `wit/`.

## Config

```toml
[plugins.30-{name}.config]
{key} = ["mallory"]
```

## Build

```sh
cargo xtask build-py          # target/guests/py/{file}.wasm
cargo xtask install {name}    # into the demo tenant, as 30-{name}.wasm
```
"#,
        trigger = trigger.name,
        class = python_class(trigger),
        world = world(trigger),
        file = name.replace('-', "_"),
    )
}

fn app_py(trigger: &TriggerTemplate) -> String {
    let class = python_class(trigger);
    let key = config_key(trigger);
    let mut w = format!(
        r#""""`{trigger}`: written by `cargo xtask new --lang python`. Replace the
handler with what the plugin does, and its config keys.

The types of the arguments are in `wit/` (kebab-case names are snake_case
here); `raise Err("...")` denies the event (for stream records: fails the
whole batch).
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, log


def config_list(key: str) -> list[str]:
    """A list from tenant.toml, `[plugins.<file stem>.config]`: lists reach
    the plugin joined with commas."""
    value = config.get(key) or ""
    return [item.strip() for item in value.split(",") if item.strip()]


def info(message: str) -> None:
    log.write(log.Level.INFO, message)


class {class}(exports.{class}):
"#,
        trigger = trigger.name,
    );
    let body = match trigger.shape {
        Shape::Respond | Shape::Notify => {
            let respond = trigger.shape == Shape::Respond;
            let email = if trigger.has_email {
                " ({dict(request.user_attributes).get('email', 'no email')})"
            } else {
                ""
            };
            format!(
                r#"    def handle(self, context, request{response}):
        blocked = config_list("{key}")
        user = context.user_name or ""
        if user in blocked:
            raise Err(f"{{user}} is blocked")
        info(f"{{context.trigger_source}} for {{user}}{email}")
        # TODO: the plugin's own logic. {todo}
        return {ret}
"#,
                response = if respond { ", response" } else { "" },
                ret = if respond { "response" } else { "None" },
                todo = if respond {
                    "Change `response` (the fields of the\n        # trigger's `response` record in wit/, in snake_case) and return it."
                } else {
                    "Returning lets the flow go on."
                },
            )
        }
        Shape::Sync => format!(
            r#"    def handle(self, event, records):
        blocked = config_list("{key}")
        if event.identity_id in blocked:
            raise Err(f"{{event.identity_id}} is blocked")
        info(f"sync of {{event.dataset_name}} ({{len(records)}} records)")
        # TODO: the plugin's own logic. Return the records to change: a
        # returned key replaces or adds, Op.REMOVE removes.
        return []
"#
        ),
        Shape::Records(batch) => {
            let payload = match trigger.name {
                "kinesis" => "record.kinesis.data.decode(\"utf-8\", \"replace\")",
                "dynamodb-stream" => "record.dynamodb.new_image or \"\"",
                "sqs" => "record.body",
                _ => "record.s3.object.key",
            };
            let indent = " ".repeat(16);
            let (setup, failure, done) = match batch.id {
                Some(id) => (
                    "        failed = []\n",
                    format!(
                        "{indent}# Reported failed: retried, then sent to the failure destination.\n\
                         {indent}failed.append({id})\n\
                         {indent}continue\n"
                    ),
                    "failed",
                ),
                None => (
                    "",
                    format!(
                        "{indent}# An S3 event fails whole, and is retried.\n\
                         {indent}raise Err(f\"{{payload}} is poison\")\n"
                    ),
                    "None",
                ),
            };
            format!(
                r#"    def handle(self, records):
        poison = config_list("{key}")
{setup}        for record in records:
            payload = {payload}
            if any(p in payload for p in poison):
{failure}            info(f"{{len(payload.encode())}} bytes: {{payload}}")
            # TODO: the plugin's own logic. {hint}
        return {done}
"#,
                hint = match trigger.name {
                    "dynamodb-stream" => {
                        "json.loads(record.dynamodb.keys) reads the keys\n            \
                         # (DynamoDB JSON); plugins/dynamodb-stream-logger-py has an unmarshall."
                    }
                    _ => trigger.hint,
                },
            )
        }
    };
    w.push_str(&body);
    w
}

/// `manifest` (the workspace's `Cargo.toml`) with `path` added to the
/// workspace's `exclude`: a Python plugin under `plugins/` is no crate,
/// and `members = ["plugins/*"]` would take it for one.
pub fn exclude_from_workspace(manifest: &str, path: &str) -> String {
    let entry = format!("\"{path}\"");
    if let Some(start) = manifest.find("\nexclude = [") {
        let at = start + "\nexclude = [".len();
        let end = manifest[at..].find(']').map_or(manifest.len(), |i| at + i);
        let inside = manifest[at..end].trim_end();
        if inside.contains(&entry) {
            return manifest.to_owned();
        }
        let separator = if inside.trim().is_empty() || inside.ends_with(',') {
            ""
        } else {
            ", "
        };
        let at = at + inside.len();
        return format!("{}{separator}{entry}{}", &manifest[..at], &manifest[at..]);
    }
    manifest.replacen(
        "[workspace]\n",
        &format!("[workspace]\nexclude = [{entry}]\n"),
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("block-users").is_ok());
        assert!(check_name("v2-claims").is_ok());
        for bad in ["Block", "9lives", "a_b", "a--b", "a-", "sdk", "match", ""] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(type_name("block-users-2"), "BlockUsers2");
    }

    #[test]
    fn triggers_by_either_spelling() {
        assert_eq!(trigger("pre_sign_up").unwrap().module, "pre_sign_up");
        assert_eq!(trigger("sync-trigger").unwrap().name, "sync");
        assert!(trigger("pre-signup").is_none());
        assert_eq!(TRIGGERS.len(), 18);
    }

    #[test]
    fn python_plugins_leave_the_workspace() {
        let manifest =
            "[workspace]\nmembers = [\"plugins/*\"]\nexclude = [\"plugins/README.md\"]\n";
        let out = exclude_from_workspace(manifest, "plugins/x");
        assert_eq!(
            out,
            "[workspace]\nmembers = [\"plugins/*\"]\nexclude = [\"plugins/README.md\", \"plugins/x\"]\n"
        );
        assert_eq!(exclude_from_workspace(&out, "plugins/x"), out);
        assert_eq!(
            exclude_from_workspace("[workspace]\nexclude = []\n", "plugins/x"),
            "[workspace]\nexclude = [\"plugins/x\"]\n"
        );
        assert_eq!(
            exclude_from_workspace("[workspace]\nresolver = \"2\"\n", "plugins/x"),
            "[workspace]\nexclude = [\"plugins/x\"]\nresolver = \"2\"\n"
        );
    }

    #[test]
    fn python_names_and_worlds() {
        let of = |name| trigger(name).unwrap();
        assert_eq!(
            python_class(of("pre-token-generation-v2")),
            "PreTokenGenerationV2"
        );
        assert_eq!(python_class(of("sync")), "SyncTrigger");
        assert_eq!(python_class(of("dynamodb-stream")), "DynamodbStream");
        assert_eq!(world(of("sync")), "triggerfish:sync/sync-plugin@0.1.0");
        assert_eq!(world(of("sqs")), "triggerfish:records/sqs-plugin@0.1.0");
        assert_eq!(
            world(of("custom-message")),
            "triggerfish:user-pool/custom-message-plugin@0.1.0"
        );
        assert_eq!(Lang::parse("Python"), Ok(Lang::Python));
        assert!(Lang::parse("cobol").is_err());
    }

    #[test]
    fn refuses_to_overwrite() {
        let dir = std::env::temp_dir().join(format!("xtask-new-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("taken")).unwrap();
        let error = new_plugin(&dir, "taken", "pre-sign-up").unwrap_err();
        assert!(error.contains("already exists"), "{error}");
        let error = new_plugin(&dir, "fresh", "pre-signup").unwrap_err();
        assert!(error.contains("pre-sign-up, post-confirmation"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
