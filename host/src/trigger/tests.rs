//! The trigger table against the enums, the contract and routing.

use super::*;
use serde_json::json;

#[test]
fn the_table_is_in_the_enums_order() {
    for (index, spec) in TABLE.iter().enumerate() {
        assert_eq!(spec.trigger as usize, index, "{:?}", spec.trigger);
    }
}

/// The host checks plugins against the `every-trigger` world of `wit/`:
/// it must export exactly the table's interfaces.
#[test]
fn the_table_matches_the_every_trigger_world() {
    let worlds = include_str!("../../../wit/worlds.wit");
    let world = worlds
        .split("world every-trigger {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("wit/worlds.wit has an every-trigger world");
    let mut exported: Vec<String> = world
        .lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .map(|name| {
            let name = name.trim_end_matches(';');
            if name.contains(':') {
                name.to_owned()
            } else {
                format!("{USER_POOL}/{name}@{CONTRACT_VERSION}")
            }
        })
        .collect();
    let mut table: Vec<String> = Trigger::all().map(Trigger::export_name).collect();
    exported.sort();
    table.sort();
    assert_eq!(exported, table);
}

#[test]
fn every_source_routes_to_its_own_trigger() {
    for trigger in Trigger::all() {
        for source in trigger.trigger_sources() {
            let routed = Trigger::route(&json!({"version": "1", "triggerSource": source}));
            let expected = match trigger {
                Trigger::PreTokenGenerationV2 => Trigger::PreTokenGeneration,
                t => t,
            };
            assert_eq!(routed, Ok(expected), "{source}");
        }
    }
}

#[test]
fn token_generation_version_picks_the_shape() {
    let v2 = json!({"version": "2", "triggerSource": "TokenGeneration_Authentication"});
    assert_eq!(Trigger::route(&v2), Ok(Trigger::PreTokenGenerationV2));
}

#[test]
fn unknown_sources_are_refused() {
    assert!(matches!(
        Trigger::route(&json!({"triggerSource": "PreSignUp_Nope"})),
        Err(RouteError::UnknownTriggerSource(_))
    ));
    assert_eq!(Trigger::route(&json!({})), Err(RouteError::Missing));
    assert!(matches!(
        Trigger::route(&json!({"eventType": "Other"})),
        Err(RouteError::UnknownEventType(_))
    ));
}

#[test]
fn records_route_by_their_event_source() {
    let batch = |sources: &[&str]| {
        let records: Vec<Value> = sources.iter().map(|s| json!({"eventSource": s})).collect();
        json!({ "Records": records })
    };
    assert_eq!(
        Trigger::route(&batch(&["aws:kinesis"])),
        Ok(Trigger::Kinesis)
    );
    assert_eq!(
        Trigger::route(&batch(&["aws:dynamodb", "aws:dynamodb"])),
        Ok(Trigger::DynamodbStream)
    );
    assert_eq!(Trigger::route(&batch(&["aws:sqs"])), Ok(Trigger::Sqs));
    assert_eq!(Trigger::route(&batch(&["minio:s3"])), Ok(Trigger::S3));
    assert_eq!(Trigger::route(&batch(&[])), Err(RouteError::EmptyBatch));
    assert_eq!(
        Trigger::route(&batch(&["aws:sqs", "aws:kinesis"])),
        Err(RouteError::MixedEventSources { index: 1 })
    );
    assert_eq!(
        Trigger::route(&batch(&["aws:sns"]))
            .unwrap_err()
            .to_string(),
        "`Records[0].eventSource` is \"aws:sns\": use aws:kinesis, aws:dynamodb, aws:sqs or aws:s3"
    );
    assert_eq!(
        Trigger::route(&json!({"Records": {}})),
        Err(RouteError::RecordsNotAnArray)
    );
}

#[test]
fn export_names_round_trip() {
    for trigger in Trigger::all() {
        assert_eq!(
            Trigger::from_export_name(&trigger.export_name()),
            Some(trigger)
        );
    }
}
