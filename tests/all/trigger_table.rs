//! The trigger table (`host/src/trigger.rs`) is the one list of triggers;
//! every other copy is checked against it here, so adding a trigger
//! without its SDK macro arm, its bindings or its template fails a test.
//! (The WIT `every-trigger` world is checked by the table's own unit test.)

use crate::common::*;
use std::collections::BTreeSet;
use triggerfish::trigger::Trigger;
use triggerfish_test_support::xtask::template;

/// The SDK's name for a trigger's module: its WIT name in snake case.
fn module(trigger: Trigger) -> String {
    trigger.wit_name().replace('-', "_")
}

fn sdk_source(file: &str) -> String {
    let path = triggerfish_test_support::xtask::workspace_root()
        .join("plugins/sdk/src")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_sdk_exports_every_trigger_of_the_table() {
    let lib = sdk_source("lib.rs");
    let bindings = sdk_source("bindings.rs");
    for trigger in Trigger::all() {
        let module = module(trigger);
        assert!(
            lib.contains(&format!("($plugin:ident, {module}) =>")),
            "the SDK's export! has no arm for {module}"
        );
        // Most through `trigger_world!` or `records_world!`; sync's
        // module is written out.
        assert!(
            bindings.contains(&format!("trigger_world!(\n    {module},"))
                || bindings.contains(&format!("trigger_world!({module},"))
                || bindings.contains(&format!("records_world!(\n    {module},"))
                || bindings.contains(&format!("records_world!({module},"))
                || bindings.contains(&format!("pub mod {module} {{")),
            "the SDK generates no bindings for {module}"
        );
        // The error for a name that is not a trigger lists every trigger.
        let listed = lib
            .split("is not a trigger: use one of")
            .nth(1)
            .expect("the SDK's error lists the triggers");
        assert!(
            listed.contains(&module),
            "the SDK's error text leaves out {module}"
        );
    }
}

#[test]
fn xtask_new_has_a_template_for_every_trigger_of_the_table() {
    let templates: BTreeSet<&str> = template::TRIGGERS.iter().map(|t| t.module).collect();
    let table: BTreeSet<String> = Trigger::all().map(module).collect();
    assert_eq!(
        templates,
        table.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    // Each template's sample event routes to the trigger it was written for.
    for template in template::TRIGGERS {
        let event = if template.source == "SyncTrigger" {
            sync_event()
        } else if template.source.starts_with("aws:") {
            serde_json::json!({"Records": [{"eventSource": template.source}]})
        } else {
            serde_json::json!({"version": "1", "triggerSource": template.source})
        };
        let routed = Trigger::route(&event).expect("the template's source routes");
        let expected = if template.module == "pre_token_generation_v2" {
            Trigger::PreTokenGeneration // v2 is picked by version, not source
        } else {
            Trigger::all()
                .find(|t| module(*t) == template.module)
                .unwrap()
        };
        assert_eq!(routed, expected, "{}", template.name);
    }
}
