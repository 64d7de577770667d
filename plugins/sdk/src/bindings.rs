//! The contract's bindings, generated once here for every trigger.
//!
//! Each trigger's world is generated in its own module with
//! `pub_export_macro`, so the types and `Guest` traits live in this crate
//! (where the SDK can give them helper methods) and a plugin crate exports
//! only the triggers it names in [`export!`](crate::export). The shared
//! `types` interface and the host's imports are generated once and mapped
//! into every world with `with`, so `Context` is one type for all triggers.

/// The host's imports (`log`, `config`) and the shared user pool types.
pub mod host {
    wit_bindgen::generate!({
        path: "../../wit",
        inline: "
            package triggerfish:sdk;
            world shared {
                include triggerfish:host/imports@0.1.0;
                import triggerfish:user-pool/types@0.1.0;
            }
        ",
        world: "triggerfish:sdk/shared",
        additional_derives: [Default, PartialEq],
        additional_derives_ignore: ["level"],
        generate_all,
    });
}

macro_rules! trigger_world {
    ($module:ident, $world:literal, $macro:literal) => {
        trigger_world!($module, $world, $macro, {});
    };
    ($module:ident, $world:literal, $macro:literal, { $($selector:literal: [$($attr:tt)*]),* }) => {
        pub mod $module {
            wit_bindgen::generate!({
                path: "../../wit",
                world: $world,
                with: {
                    "triggerfish:host/log@0.1.0": crate::bindings::host::triggerfish::host::log,
                    "triggerfish:host/config@0.1.0": crate::bindings::host::triggerfish::host::config,
                    "triggerfish:user-pool/types@0.1.0": crate::bindings::host::triggerfish::user_pool::types,
                },
                additional_derives: [Default, PartialEq],
                additional_derives_ignore: ["claim-value"],
                additional_type_attributes: { $($selector: [$($attr)*]),* },
                runtime_path: "::triggerfish_sdk::wit_bindgen::rt",
                pub_export_macro: true,
                export_macro_name: $macro,
            });
        }
    };
}

trigger_world!(
    pre_sign_up,
    "triggerfish:user-pool/pre-sign-up-plugin@0.1.0",
    "export_pre_sign_up"
);
trigger_world!(
    post_confirmation,
    "triggerfish:user-pool/post-confirmation-plugin@0.1.0",
    "export_post_confirmation"
);
trigger_world!(
    pre_authentication,
    "triggerfish:user-pool/pre-authentication-plugin@0.1.0",
    "export_pre_authentication"
);
trigger_world!(
    post_authentication,
    "triggerfish:user-pool/post-authentication-plugin@0.1.0",
    "export_post_authentication"
);
trigger_world!(
    define_auth_challenge,
    "triggerfish:user-pool/define-auth-challenge-plugin@0.1.0",
    "export_define_auth_challenge"
);
trigger_world!(
    create_auth_challenge,
    "triggerfish:user-pool/create-auth-challenge-plugin@0.1.0",
    "export_create_auth_challenge"
);
trigger_world!(
    verify_auth_challenge_response,
    "triggerfish:user-pool/verify-auth-challenge-response-plugin@0.1.0",
    "export_verify_auth_challenge_response"
);
trigger_world!(
    pre_token_generation,
    "triggerfish:user-pool/pre-token-generation-plugin@0.1.0",
    "export_pre_token_generation"
);
trigger_world!(pre_token_generation_v2, "triggerfish:user-pool/pre-token-generation-v2-plugin@0.1.0", "export_pre_token_generation_v2", {
    // A variant has no obvious default; it can still be compared.
    "triggerfish:user-pool/pre-token-generation-v2@0.1.0/claim-value": [#[derive(PartialEq)]]
});
trigger_world!(
    user_migration,
    "triggerfish:user-pool/user-migration-plugin@0.1.0",
    "export_user_migration"
);
trigger_world!(
    custom_message,
    "triggerfish:user-pool/custom-message-plugin@0.1.0",
    "export_custom_message"
);
trigger_world!(
    custom_email_sender,
    "triggerfish:user-pool/custom-email-sender-plugin@0.1.0",
    "export_custom_email_sender"
);
trigger_world!(
    custom_sms_sender,
    "triggerfish:user-pool/custom-sms-sender-plugin@0.1.0",
    "export_custom_sms_sender"
);

pub mod sync_trigger {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "triggerfish:sync/sync-plugin@0.1.0",
        with: {
            "triggerfish:host/log@0.1.0": crate::bindings::host::triggerfish::host::log,
            "triggerfish:host/config@0.1.0": crate::bindings::host::triggerfish::host::config,
        },
        additional_derives: [Default, PartialEq],
        additional_derives_ignore: ["op", "dataset-record"],
        additional_type_attributes: {
            "triggerfish:sync/sync-trigger@0.1.0/dataset-record": [#[derive(PartialEq)]],
        },
        runtime_path: "::triggerfish_sdk::wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "export_sync_trigger",
    });
}

macro_rules! records_world {
    ($module:ident, $world:literal, $macro:literal) => {
        pub mod $module {
            wit_bindgen::generate!({
                path: "../../wit",
                world: $world,
                with: {
                    "triggerfish:host/log@0.1.0": crate::bindings::host::triggerfish::host::log,
                    "triggerfish:host/config@0.1.0": crate::bindings::host::triggerfish::host::config,
                },
                additional_derives: [PartialEq],
                runtime_path: "::triggerfish_sdk::wit_bindgen::rt",
                pub_export_macro: true,
                export_macro_name: $macro,
            });
        }
    };
}

records_world!(
    kinesis,
    "triggerfish:records/kinesis-plugin@0.1.0",
    "export_kinesis"
);
records_world!(
    dynamodb_stream,
    "triggerfish:records/dynamodb-stream-plugin@0.1.0",
    "export_dynamodb_stream"
);
records_world!(sqs, "triggerfish:records/sqs-plugin@0.1.0", "export_sqs");
records_world!(s3, "triggerfish:records/s3-plugin@0.1.0", "export_s3");
