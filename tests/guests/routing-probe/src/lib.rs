//! Test guest: serves every trigger, and refuses each event with the name
//! of the interface that received it, so a test can see where events go.

triggerfish_sdk::bindings!("../../../wit", "triggerfish:user-pool/every-trigger");

use exports::triggerfish::records::{dynamodb_stream, kinesis, s3, sqs};
use exports::triggerfish::sync::sync_trigger;
use exports::triggerfish::user_pool::*;

struct Probe;

impl pre_sign_up::Guest for Probe {
    fn handle(
        _: pre_sign_up::Context,
        _: pre_sign_up::Request,
        _: pre_sign_up::Response,
    ) -> Result<pre_sign_up::Response, String> {
        Err("handled by pre-sign-up".into())
    }
}

impl post_confirmation::Guest for Probe {
    fn handle(_: post_confirmation::Context, _: post_confirmation::Request) -> Result<(), String> {
        Err("handled by post-confirmation".into())
    }
}

impl pre_authentication::Guest for Probe {
    fn handle(
        _: pre_authentication::Context,
        _: pre_authentication::Request,
    ) -> Result<(), String> {
        Err("handled by pre-authentication".into())
    }
}

impl post_authentication::Guest for Probe {
    fn handle(
        _: post_authentication::Context,
        _: post_authentication::Request,
    ) -> Result<(), String> {
        Err("handled by post-authentication".into())
    }
}

impl define_auth_challenge::Guest for Probe {
    fn handle(
        _: define_auth_challenge::Context,
        _: define_auth_challenge::Request,
        _: define_auth_challenge::Response,
    ) -> Result<define_auth_challenge::Response, String> {
        Err("handled by define-auth-challenge".into())
    }
}

impl create_auth_challenge::Guest for Probe {
    fn handle(
        _: create_auth_challenge::Context,
        _: create_auth_challenge::Request,
        _: create_auth_challenge::Response,
    ) -> Result<create_auth_challenge::Response, String> {
        Err("handled by create-auth-challenge".into())
    }
}

impl verify_auth_challenge_response::Guest for Probe {
    fn handle(
        _: verify_auth_challenge_response::Context,
        _: verify_auth_challenge_response::Request,
        _: verify_auth_challenge_response::Response,
    ) -> Result<verify_auth_challenge_response::Response, String> {
        Err("handled by verify-auth-challenge-response".into())
    }
}

impl pre_token_generation::Guest for Probe {
    fn handle(
        _: pre_token_generation::Context,
        _: pre_token_generation::Request,
        _: pre_token_generation::Response,
    ) -> Result<pre_token_generation::Response, String> {
        Err("handled by pre-token-generation".into())
    }
}

impl pre_token_generation_v2::Guest for Probe {
    fn handle(
        _: pre_token_generation_v2::Context,
        _: pre_token_generation_v2::Request,
        _: pre_token_generation_v2::Response,
    ) -> Result<pre_token_generation_v2::Response, String> {
        Err("handled by pre-token-generation-v2".into())
    }
}

impl user_migration::Guest for Probe {
    fn handle(
        _: user_migration::Context,
        _: user_migration::Request,
        _: user_migration::Response,
    ) -> Result<user_migration::Response, String> {
        Err("handled by user-migration".into())
    }
}

impl custom_message::Guest for Probe {
    fn handle(
        _: custom_message::Context,
        _: custom_message::Request,
        _: custom_message::Response,
    ) -> Result<custom_message::Response, String> {
        Err("handled by custom-message".into())
    }
}

impl custom_email_sender::Guest for Probe {
    fn handle(
        _: custom_email_sender::Context,
        _: custom_email_sender::Request,
    ) -> Result<(), String> {
        Err("handled by custom-email-sender".into())
    }
}

impl custom_sms_sender::Guest for Probe {
    fn handle(_: custom_sms_sender::Context, _: custom_sms_sender::Request) -> Result<(), String> {
        Err("handled by custom-sms-sender".into())
    }
}

impl sync_trigger::Guest for Probe {
    fn handle(
        _: sync_trigger::Event,
        _: sync_trigger::DatasetRecords,
    ) -> Result<sync_trigger::DatasetRecords, String> {
        Err("handled by sync-trigger".into())
    }
}

impl kinesis::Guest for Probe {
    fn handle(_: Vec<kinesis::KinesisRecord>) -> Result<Vec<String>, String> {
        Err("handled by kinesis".into())
    }
}

impl dynamodb_stream::Guest for Probe {
    fn handle(_: Vec<dynamodb_stream::DynamodbRecord>) -> Result<Vec<String>, String> {
        Err("handled by dynamodb-stream".into())
    }
}

impl sqs::Guest for Probe {
    fn handle(_: Vec<sqs::Message>) -> Result<Vec<String>, String> {
        Err("handled by sqs".into())
    }
}

impl s3::Guest for Probe {
    fn handle(_: Vec<s3::S3Record>) -> Result<(), String> {
        Err("handled by s3".into())
    }
}

export!(Probe);
