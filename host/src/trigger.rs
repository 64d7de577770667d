//! The triggers Triggerfish serves, and how an incoming event finds one.
//!
//! Each trigger is one exported WIT interface (see `wit/`). An event is
//! routed by its `triggerSource` (user pool events) or `eventType` (Cognito
//! Sync); the pre token generation trigger also looks at `version`, because
//! events of version 2 and 3 carry the access-token shape.

use serde_json::Value;

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
}

/// The version of the WIT packages this host implements.
pub const CONTRACT_VERSION: &str = "0.1.0";

impl Trigger {
    pub const ALL: [Trigger; 14] = [
        Trigger::PreSignUp,
        Trigger::PostConfirmation,
        Trigger::PreAuthentication,
        Trigger::PostAuthentication,
        Trigger::DefineAuthChallenge,
        Trigger::CreateAuthChallenge,
        Trigger::VerifyAuthChallengeResponse,
        Trigger::PreTokenGeneration,
        Trigger::PreTokenGenerationV2,
        Trigger::UserMigration,
        Trigger::CustomMessage,
        Trigger::CustomEmailSender,
        Trigger::CustomSmsSender,
        Trigger::Sync,
    ];

    /// The interface's name in WIT, such as `pre-sign-up`.
    pub fn wit_name(self) -> &'static str {
        match self {
            Trigger::PreSignUp => "pre-sign-up",
            Trigger::PostConfirmation => "post-confirmation",
            Trigger::PreAuthentication => "pre-authentication",
            Trigger::PostAuthentication => "post-authentication",
            Trigger::DefineAuthChallenge => "define-auth-challenge",
            Trigger::CreateAuthChallenge => "create-auth-challenge",
            Trigger::VerifyAuthChallengeResponse => "verify-auth-challenge-response",
            Trigger::PreTokenGeneration => "pre-token-generation",
            Trigger::PreTokenGenerationV2 => "pre-token-generation-v2",
            Trigger::UserMigration => "user-migration",
            Trigger::CustomMessage => "custom-message",
            Trigger::CustomEmailSender => "custom-email-sender",
            Trigger::CustomSmsSender => "custom-sms-sender",
            Trigger::Sync => "sync-trigger",
        }
    }

    /// The fully qualified name of the interface a plugin exports to serve
    /// this trigger, such as `triggerfish:user-pool/pre-sign-up@0.1.0`.
    pub fn export_name(self) -> String {
        let package = match self {
            Trigger::Sync => "triggerfish:sync",
            _ => "triggerfish:user-pool",
        };
        format!("{package}/{}@{CONTRACT_VERSION}", self.wit_name())
    }

    pub fn from_export_name(name: &str) -> Option<Trigger> {
        Trigger::ALL.into_iter().find(|t| t.export_name() == name)
    }

    /// The name Cognito uses in its error text: "`PreSignUp` failed with
    /// error ...".
    pub fn cognito_name(self) -> &'static str {
        match self {
            Trigger::PreSignUp => "PreSignUp",
            Trigger::PostConfirmation => "PostConfirmation",
            Trigger::PreAuthentication => "PreAuthentication",
            Trigger::PostAuthentication => "PostAuthentication",
            Trigger::DefineAuthChallenge => "DefineAuthChallenge",
            Trigger::CreateAuthChallenge => "CreateAuthChallenge",
            Trigger::VerifyAuthChallengeResponse => "VerifyAuthChallengeResponse",
            Trigger::PreTokenGeneration | Trigger::PreTokenGenerationV2 => "PreTokenGeneration",
            Trigger::UserMigration => "UserMigration",
            Trigger::CustomMessage => "CustomMessage",
            Trigger::CustomEmailSender => "CustomEmailSender",
            Trigger::CustomSmsSender => "CustomSMSSender",
            Trigger::Sync => "SyncTrigger",
        }
    }

    /// Every `triggerSource` value Cognito sends for this trigger (the
    /// sync trigger has none: it is routed by `eventType`).
    pub fn trigger_sources(self) -> &'static [&'static str] {
        match self {
            Trigger::PreSignUp => &[
                "PreSignUp_SignUp",
                "PreSignUp_AdminCreateUser",
                "PreSignUp_ExternalProvider",
            ],
            Trigger::PostConfirmation => &[
                "PostConfirmation_ConfirmSignUp",
                "PostConfirmation_ConfirmForgotPassword",
            ],
            Trigger::PreAuthentication => &["PreAuthentication_Authentication"],
            Trigger::PostAuthentication => &["PostAuthentication_Authentication"],
            Trigger::DefineAuthChallenge => &["DefineAuthChallenge_Authentication"],
            Trigger::CreateAuthChallenge => &["CreateAuthChallenge_Authentication"],
            Trigger::VerifyAuthChallengeResponse => &["VerifyAuthChallengeResponse_Authentication"],
            Trigger::PreTokenGeneration | Trigger::PreTokenGenerationV2 => &[
                "TokenGeneration_HostedAuth",
                "TokenGeneration_Authentication",
                "TokenGeneration_NewPasswordChallenge",
                "TokenGeneration_AuthenticateDevice",
                "TokenGeneration_RefreshTokens",
            ],
            Trigger::UserMigration => &[
                "UserMigration_Authentication",
                "UserMigration_ForgotPassword",
            ],
            Trigger::CustomMessage => &[
                "CustomMessage_SignUp",
                "CustomMessage_AdminCreateUser",
                "CustomMessage_ResendCode",
                "CustomMessage_ForgotPassword",
                "CustomMessage_UpdateUserAttribute",
                "CustomMessage_VerifyUserAttribute",
                "CustomMessage_Authentication",
            ],
            Trigger::CustomEmailSender => &[
                "CustomEmailSender_SignUp",
                "CustomEmailSender_ResendCode",
                "CustomEmailSender_ForgotPassword",
                "CustomEmailSender_UpdateUserAttribute",
                "CustomEmailSender_VerifyUserAttribute",
                "CustomEmailSender_AdminCreateUser",
                "CustomEmailSender_AccountTakeOverNotification",
            ],
            Trigger::CustomSmsSender => &[
                "CustomSMSSender_SignUp",
                "CustomSMSSender_ResendCode",
                "CustomSMSSender_ForgotPassword",
                "CustomSMSSender_UpdateUserAttribute",
                "CustomSMSSender_VerifyUserAttribute",
                "CustomSMSSender_Authentication",
                "CustomSMSSender_AdminCreateUser",
            ],
            Trigger::Sync => &[],
        }
    }

    /// Finds the trigger an event is for.
    pub fn route(event: &Value) -> Result<Trigger, RouteError> {
        let Some(object) = event.as_object() else {
            return Err(RouteError::NotAnObject);
        };
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
        let trigger = Trigger::ALL
            .into_iter()
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
        "the event has neither `triggerSource` (user pool events) nor `eventType` (sync events)"
    )]
    Missing,
    #[error("unknown triggerSource {0}")]
    UnknownTriggerSource(String),
    #[error("unknown eventType {0}: the only one is \"SyncTrigger\"")]
    UnknownEventType(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_source_routes_to_its_own_trigger() {
        for trigger in Trigger::ALL {
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
    fn export_names_round_trip() {
        for trigger in Trigger::ALL {
            assert_eq!(
                Trigger::from_export_name(&trigger.export_name()),
                Some(trigger)
            );
        }
    }
}
