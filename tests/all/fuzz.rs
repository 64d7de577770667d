//! Property tests of the event decoding (Cognito JSON to component values
//! and back), for every trigger of the contract: no input makes it panic,
//! and any valid event survives a round trip with its unmodelled fields
//! intact.
//!
//! CI runs a short bounded pass; for a long one:
//! `PROPTEST_CASES=20000 cargo test --test all fuzz`.

use crate::common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};
use std::sync::Arc;
use triggerfish::engine::convert::{json_name, to_val};
use triggerfish::plugin::Plugin;
use triggerfish::trigger::{Family, Trigger};
use wasmtime::component::Type;

/// The routing probe serves every trigger: its exports carry the
/// contract's types.
fn every_trigger_plugin() -> Arc<Plugin> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bytes = std::fs::read(guests::ROUTING_PROBE).unwrap();
        let limits = triggerfish::limits::Limits::default();
        Arc::new(loader().load("probe", bytes, &limits).await.unwrap())
    })
}

fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(48);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Keys that reach the modelled fields often, and others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "version",
            "triggerSource",
            "region",
            "userPoolId",
            "userName",
            "callerContext",
            "request",
            "response",
            "userAttributes",
            "clientMetadata",
            "session",
            "datasetRecords",
            "op",
            "newValue",
            "claimsOverrideDetails",
            "claimsToAddOrOverride",
            "eventType",
            "email",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z:_]{1,10}",
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// Keys the contract never models, for the round trip to carry.
fn unmodelled() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec(("x[A-Z][a-zA-Z]{0,8}", any_json()), 0..3)
        .prop_map(|pairs| pairs.into_iter().collect())
}

/// Valid JSON for a contract type, with unmodelled keys in its objects.
fn valid(ty: &Type) -> BoxedStrategy<Value> {
    match ty {
        Type::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Type::U32 => any::<u32>().prop_map(Value::from).boxed(),
        Type::U64 => any::<u64>().prop_map(Value::from).boxed(),
        Type::String => ".{0,16}".prop_map(Value::String).boxed(),
        Type::Float64 => prop_oneof![
            any::<i32>().prop_map(Value::from),
            (-1e6f64..1e6).prop_filter_map("fractional", |f| (f.fract() != 0.0)
                .then(|| serde_json::json!(f))),
        ]
        .boxed(),
        Type::Enum(cases) => {
            prop::sample::select(cases.names().map(str::to_owned).collect::<Vec<_>>())
                .prop_map(Value::String)
                .boxed()
        }
        // Bytes are base64 text, as Lambda writes them.
        Type::List(list) if list.ty() == Type::U8 => prop::collection::vec(any::<u8>(), 0..8)
            .prop_map(|bytes| {
                use base64::Engine as _;
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            })
            .boxed(),
        Type::List(list) => {
            let element = list.ty();
            let pair = match &element {
                Type::Tuple(t) => {
                    let types: Vec<Type> = t.types().collect();
                    (types.len() == 2 && matches!(types[0], Type::String)).then(|| types[1].clone())
                }
                _ => None,
            };
            match pair {
                Some(value) => prop::collection::vec(("[a-z:_]{1,10}", valid(&value)), 0..4)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
                    .boxed(),
                None => prop::collection::vec(valid(&element), 0..4)
                    .prop_map(Value::Array)
                    .boxed(),
            }
        }
        Type::Variant(variant) => {
            let mut cases: Vec<BoxedStrategy<Value>> = Vec::new();
            for case in variant.cases() {
                cases.push(match (case.name, &case.ty) {
                    ("json", _) => prop_oneof![
                        prop::collection::vec(any_json(), 0..3).prop_map(Value::Array),
                        prop::collection::vec((key(), any_json()), 0..3)
                            .prop_map(|p| Value::Object(p.into_iter().collect())),
                    ]
                    .boxed(),
                    (_, Some(payload)) => valid(payload),
                    (_, None) => continue,
                });
            }
            prop::strategy::Union::new(cases).boxed()
        }
        Type::Record(record) => {
            let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = record
                .fields()
                .map(|field| {
                    let key = json_name(field.name).into_owned();
                    match &field.ty {
                        // An option may be missing, null, or set.
                        Type::Option(inner) => {
                            let (k1, k2) = (key.clone(), key);
                            prop_oneof![
                                Just(None),
                                Just(Some((k1, Value::Null))),
                                valid(&inner.ty()).prop_map(move |v| Some((k2.clone(), v))),
                            ]
                            .boxed()
                        }
                        ty => valid(ty).prop_map(move |v| Some((key.clone(), v))).boxed(),
                    }
                })
                .collect();
            (fields, unmodelled())
                .prop_map(|(fields, extra)| {
                    let mut object: Map<String, Value> = fields.into_iter().flatten().collect();
                    object.extend(extra);
                    Value::Object(object)
                })
                .boxed()
        }
        other => panic!("the contract uses a type this generator does not know: {other:?}"),
    }
}

/// A valid event for `trigger`: the top-level record (context or sync
/// event) and the records under their keys, merged into one object.
fn valid_event(plugin: &Plugin, trigger: Trigger) -> BoxedStrategy<Value> {
    let parts: Vec<BoxedStrategy<(Option<&'static str>, Value)>> = plugin
        .params(trigger)
        .unwrap()
        .iter()
        .map(|(name, ty)| {
            let under = match name.as_str() {
                "request" => Some("request"),
                "response" => Some("response"),
                "records" => Some("datasetRecords"),
                _ => None,
            };
            valid(ty).prop_map(move |v| (under, v)).boxed()
        })
        .collect();
    (parts, unmodelled())
        .prop_map(|(parts, extra)| {
            let mut event = Map::new();
            for (under, value) in parts {
                match (under, value) {
                    (Some(key), value) => {
                        event.insert(key.to_owned(), value);
                    }
                    (None, Value::Object(fields)) => event.extend(fields),
                    (None, other) => panic!("a top-level parameter is not an object: {other}"),
                }
            }
            event.extend(extra);
            Value::Object(event)
        })
        .boxed()
}

#[test]
fn no_json_makes_the_decoding_panic() {
    let plugin = every_trigger_plugin();
    let mut runner = runner();
    runner
        .run(&any_json(), |json| {
            for trigger in Trigger::all() {
                for (_, ty) in plugin.params(trigger).unwrap() {
                    let _ = to_val(ty, Some(&json));
                }
                let _ = triggerfish::families::round_trip(&plugin, trigger, json.clone());
            }
            let _ = Trigger::route(&json);
            Ok(())
        })
        .unwrap();
}

#[test]
fn valid_events_survive_the_round_trip() {
    let plugin = every_trigger_plugin();
    for trigger in Trigger::all() {
        let mut runner = runner();
        runner
            .run(&valid_event(&plugin, trigger), |event| {
                let back = triggerfish::families::round_trip(&plugin, trigger, event.clone())
                    .map_err(|e| TestCaseError::fail(format!("{trigger}: {e}")))?;
                // A batch of stream records answers with its failures:
                // none, when no plugin reported any.
                let expected = match trigger.family() {
                    Family::Records => serde_json::json!({"batchItemFailures": []}),
                    Family::UserPool | Family::Sync => event,
                };
                prop_assert_eq!(back, expected, "{}", trigger);
                Ok(())
            })
            .unwrap();
    }
}

/// The conversion plans worked out at load convert exactly as the rules
/// do when walking the types on every call: the same values, the same
/// errors (with their paths), the same JSON back.
#[test]
fn conversion_plans_agree_with_the_rules() {
    use triggerfish::engine::convert::{to_json, Plan};
    let plugin = every_trigger_plugin();
    let agree = |json: &Value| -> Result<(), TestCaseError> {
        for trigger in Trigger::all() {
            for (_, ty) in plugin.params(trigger).unwrap() {
                let plan = Plan::new(ty);
                for json in [Some(json), json.get("request"), json.get("response"), None] {
                    let planned = plan.to_val(json);
                    prop_assert_eq!(&planned, &to_val(ty, json), "{}", trigger);
                    if let Ok(val) = planned {
                        prop_assert_eq!(
                            plan.to_json(&val, json),
                            to_json(ty, &val, json),
                            "{}",
                            trigger
                        );
                    }
                }
            }
        }
        Ok(())
    };
    runner().run(&any_json(), |json| agree(&json)).unwrap();
    for trigger in Trigger::all() {
        runner()
            .run(&valid_event(&plugin, trigger), |event| agree(&event))
            .unwrap();
    }
}
