//! The triggers Triggerfish serves, and how an incoming event finds one.
//!
//! Each trigger is one exported WIT interface (see `wit/`). An event is
//! routed by its `triggerSource` (user pool events), its `eventType`
//! (Cognito Sync) or the `eventSource` of its `Records` (stream records);
//! the pre token generation trigger also looks at `version`, because
//! events of version 2 and 3 carry the access-token shape.

use serde_json::Value;

/// A kind of trigger event, with its own shape and folding rule (each
/// implemented in [`crate::families`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    UserPool,
    Sync,
    Records,
}

/// One lifecycle event a plugin can handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Trigger {
    PreSignUp,
    PostConfirmation,
    PreAuthentication,
    PostAuthentication,
    DefineAuthChallenge,
    CreateAuthChallenge,
    VerifyAuthChallengeResponse,
    PreTokenGeneration,
    PreTokenGenerationV2,
    UserMigration,
    CustomMessage,
    CustomEmailSender,
    CustomSmsSender,
    Sync,
    Kinesis,
    DynamodbStream,
    Sqs,
    S3,
}

/// The version of the WIT packages this host implements.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// Everything the host knows about one trigger, written once in [`TABLE`].
#[derive(Debug)]
pub struct TriggerSpec {
    pub trigger: Trigger,
    /// The WIT package of its interface, such as `triggerfish:user-pool`.
    pub package: &'static str,
    /// The interface's name in WIT, such as `pre-sign-up`.
    pub wit_name: &'static str,
    /// The name AWS gives it: Cognito's, used in its error text
    /// ("`PreSignUp` failed with error ..."), or the event source's.
    pub aws_name: &'static str,
    /// Every `triggerSource` value Cognito sends for it, or for stream
    /// records every `eventSource` of their records (none for sync, which
    /// is routed by `eventType`).
    pub trigger_sources: &'static [&'static str],
    pub family: Family,
}

const USER_POOL: &str = "triggerfish:user-pool";
const TOKEN_GENERATION: &[&str] = &[
    "TokenGeneration_HostedAuth",
    "TokenGeneration_Authentication",
    "TokenGeneration_NewPasswordChallenge",
    "TokenGeneration_AuthenticateDevice",
    "TokenGeneration_RefreshTokens",
];

const fn user_pool(
    trigger: Trigger,
    wit_name: &'static str,
    aws_name: &'static str,
    trigger_sources: &'static [&'static str],
) -> TriggerSpec {
    TriggerSpec {
        trigger,
        package: USER_POOL,
        wit_name,
        aws_name,
        trigger_sources,
        family: Family::UserPool,
    }
}

const fn records(
    trigger: Trigger,
    wit_name: &'static str,
    aws_name: &'static str,
    event_sources: &'static [&'static str],
) -> TriggerSpec {
    TriggerSpec {
        trigger,
        package: "triggerfish:records",
        wit_name,
        aws_name,
        trigger_sources: event_sources,
        family: Family::Records,
    }
}

/// The one list of triggers, in [`Trigger`]'s order. Routing, loading,
/// the typecheck and `triggerfish check` read it; the WIT `every-trigger`
/// world, the SDK's `export!` macro and `cargo xtask new`'s templates are
/// tested against it (`tests/all/trigger_table.rs`).
pub const TABLE: [TriggerSpec; 18] = [
    user_pool(
        Trigger::PreSignUp,
        "pre-sign-up",
        "PreSignUp",
        &[
            "PreSignUp_SignUp",
            "PreSignUp_AdminCreateUser",
            "PreSignUp_ExternalProvider",
        ],
    ),
    user_pool(
        Trigger::PostConfirmation,
        "post-confirmation",
        "PostConfirmation",
        &[
            "PostConfirmation_ConfirmSignUp",
            "PostConfirmation_ConfirmForgotPassword",
        ],
    ),
    user_pool(
        Trigger::PreAuthentication,
        "pre-authentication",
        "PreAuthentication",
        &["PreAuthentication_Authentication"],
    ),
    user_pool(
        Trigger::PostAuthentication,
        "post-authentication",
        "PostAuthentication",
        &["PostAuthentication_Authentication"],
    ),
    user_pool(
        Trigger::DefineAuthChallenge,
        "define-auth-challenge",
        "DefineAuthChallenge",
        &["DefineAuthChallenge_Authentication"],
    ),
    user_pool(
        Trigger::CreateAuthChallenge,
        "create-auth-challenge",
        "CreateAuthChallenge",
        &["CreateAuthChallenge_Authentication"],
    ),
    user_pool(
        Trigger::VerifyAuthChallengeResponse,
        "verify-auth-challenge-response",
        "VerifyAuthChallengeResponse",
        &["VerifyAuthChallengeResponse_Authentication"],
    ),
    // Both token generation interfaces serve the same sources; `route`
    // picks one by the event's `version`.
    user_pool(
        Trigger::PreTokenGeneration,
        "pre-token-generation",
        "PreTokenGeneration",
        TOKEN_GENERATION,
    ),
    user_pool(
        Trigger::PreTokenGenerationV2,
        "pre-token-generation-v2",
        "PreTokenGeneration",
        TOKEN_GENERATION,
    ),
    user_pool(
        Trigger::UserMigration,
        "user-migration",
        "UserMigration",
        &[
            "UserMigration_Authentication",
            "UserMigration_ForgotPassword",
        ],
    ),
    user_pool(
        Trigger::CustomMessage,
        "custom-message",
        "CustomMessage",
        &[
            "CustomMessage_SignUp",
            "CustomMessage_AdminCreateUser",
            "CustomMessage_ResendCode",
            "CustomMessage_ForgotPassword",
            "CustomMessage_UpdateUserAttribute",
            "CustomMessage_VerifyUserAttribute",
            "CustomMessage_Authentication",
        ],
    ),
    user_pool(
        Trigger::CustomEmailSender,
        "custom-email-sender",
        "CustomEmailSender",
        &[
            "CustomEmailSender_SignUp",
            "CustomEmailSender_ResendCode",
            "CustomEmailSender_ForgotPassword",
            "CustomEmailSender_UpdateUserAttribute",
            "CustomEmailSender_VerifyUserAttribute",
            "CustomEmailSender_AdminCreateUser",
            "CustomEmailSender_AccountTakeOverNotification",
        ],
    ),
    user_pool(
        Trigger::CustomSmsSender,
        "custom-sms-sender",
        "CustomSMSSender",
        &[
            "CustomSMSSender_SignUp",
            "CustomSMSSender_ResendCode",
            "CustomSMSSender_ForgotPassword",
            "CustomSMSSender_UpdateUserAttribute",
            "CustomSMSSender_VerifyUserAttribute",
            "CustomSMSSender_Authentication",
            "CustomSMSSender_AdminCreateUser",
        ],
    ),
    TriggerSpec {
        trigger: Trigger::Sync,
        package: "triggerfish:sync",
        wit_name: "sync-trigger",
        aws_name: "SyncTrigger",
        trigger_sources: &[],
        family: Family::Sync,
    },
    records(Trigger::Kinesis, "kinesis", "Kinesis", &["aws:kinesis"]),
    records(
        Trigger::DynamodbStream,
        "dynamodb-stream",
        "DynamoDBStreams",
        &["aws:dynamodb"],
    ),
    records(Trigger::Sqs, "sqs", "SQS", &["aws:sqs"]),
    // MinIO, the usual S3-compatible store, names itself in its events.
    records(Trigger::S3, "s3", "S3", &["aws:s3", "minio:s3"]),
];

impl Trigger {
    /// Every trigger, in the table's order.
    pub fn all() -> impl Iterator<Item = Trigger> {
        TABLE.iter().map(|spec| spec.trigger)
    }

    /// This trigger's row of [`TABLE`].
    pub fn spec(self) -> &'static TriggerSpec {
        // The table is in the enum's order (checked by a test).
        &TABLE[self as usize]
    }

    /// The interface's name in WIT, such as `pre-sign-up`.
    pub fn wit_name(self) -> &'static str {
        self.spec().wit_name
    }

    /// The fully qualified name of the interface a plugin exports to serve
    /// this trigger, such as `triggerfish:user-pool/pre-sign-up@0.1.0`.
    pub fn export_name(self) -> String {
        let spec = self.spec();
        format!("{}/{}@{CONTRACT_VERSION}", spec.package, spec.wit_name)
    }

    pub fn from_export_name(name: &str) -> Option<Trigger> {
        Trigger::all().find(|t| t.export_name() == name)
    }

    /// The name Cognito uses in its error text.
    pub fn aws_name(self) -> &'static str {
        self.spec().aws_name
    }

    /// Every `triggerSource` value Cognito sends for this trigger.
    pub fn trigger_sources(self) -> &'static [&'static str] {
        self.spec().trigger_sources
    }

    /// The family that shapes this trigger's events.
    pub fn family(self) -> Family {
        self.spec().family
    }

    /// Finds the trigger an event is for.
    pub fn route(event: &Value) -> Result<Trigger, RouteError> {
        let Some(object) = event.as_object() else {
            return Err(RouteError::NotAnObject);
        };
        if let Some(records) = object.get("Records") {
            return Trigger::route_records(records);
        }
        if let Some(event_type) = object.get("eventType") {
            return match event_type.as_str() {
                Some("SyncTrigger") => Ok(Trigger::Sync),
                _ => Err(RouteError::UnknownEventType(event_type.to_string())),
            };
        }
        let source = match object.get("triggerSource") {
            None | Some(Value::Null) => return Err(RouteError::Missing),
            Some(Value::String(source)) => source.as_str(),
            Some(other) => return Err(RouteError::UnknownTriggerSource(other.to_string())),
        };
        let trigger = Trigger::all()
            .find(|t| t.trigger_sources().contains(&source))
            .ok_or_else(|| RouteError::UnknownTriggerSource(source.to_owned()))?;
        if trigger == Trigger::PreTokenGeneration {
            // Version 1 events carry the ID-token-only shape; 2 and 3 the
            // access-token shape. Cognito sends the version as a string.
            let version = object.get("version").and_then(Value::as_str).unwrap_or("1");
            if version != "1" {
                return Ok(Trigger::PreTokenGenerationV2);
            }
        }
        Ok(trigger)
    }

    /// Routes a batch of stream records by their `eventSource`; every
    /// record of a batch must come from the same kind of source.
    fn route_records(records: &Value) -> Result<Trigger, RouteError> {
        let Some(records) = records.as_array() else {
            return Err(RouteError::RecordsNotAnArray);
        };
        let mut routed = None;
        for (index, record) in records.iter().enumerate() {
            let source = record.get("eventSource").and_then(Value::as_str);
            let trigger = source
                .and_then(|source| {
                    Trigger::all().find(|t| {
                        t.family() == Family::Records && t.trigger_sources().contains(&source)
                    })
                })
                .ok_or_else(|| RouteError::UnknownEventSource {
                    index,
                    event_source: source.map(str::to_owned),
                })?;
            match routed {
                Some(first) if first != trigger => {
                    return Err(RouteError::MixedEventSources { index })
                }
                _ => routed = Some(trigger),
            }
        }
        routed.ok_or(RouteError::EmptyBatch)
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.wit_name())
    }
}

/// Why an event could not be routed to a trigger.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("the event must be a JSON object")]
    NotAnObject,
    #[error(
        "the event has no `triggerSource` (user pool events), `eventType` (sync events) or `Records` (stream records)"
    )]
    Missing,
    #[error("unknown triggerSource {0}")]
    UnknownTriggerSource(String),
    #[error("unknown eventType {0}: the only one is \"SyncTrigger\"")]
    UnknownEventType(String),
    #[error("`Records` must be an array of stream records")]
    RecordsNotAnArray,
    #[error("`Records` is empty: a batch has at least one record")]
    EmptyBatch,
    #[error(
        "`Records[{index}].eventSource` is {}: use aws:kinesis, aws:dynamodb, aws:sqs or aws:s3",
        event_source.as_deref().map_or("missing".to_owned(), |s| format!("{s:?}"))
    )]
    UnknownEventSource {
        index: usize,
        event_source: Option<String>,
    },
    #[error(
        "`Records[{index}]` comes from another kind of source than `Records[0]`: a batch has one"
    )]
    MixedEventSources { index: usize },
}

#[cfg(test)]
mod tests;
