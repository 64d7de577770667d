//! Write Triggerfish plugins in Rust.
//!
//! A plugin is a WebAssembly component that exports one interface of the
//! contract (`wit/`) per trigger it handles. This crate holds the bindings
//! of every trigger, generated once: pick the trigger's module, implement
//! its `Guest` trait, and name the triggers in [`export!`]. A complete
//! plugin:
//!
//! ```
//! use triggerfish_sdk::pre_sign_up::{Context, Guest, Request, Response};
//! use triggerfish_sdk::{config, deny, info};
//!
//! struct TrustedDomain;
//!
//! impl Guest for TrustedDomain {
//!     fn handle(_: Context, request: Request, mut response: Response) -> Result<Response, String> {
//!         let trusted = config::require("domain")?;
//!         let Some(domain) = request.email_domain() else { deny!("An email address is required") };
//!         if domain == trusted {
//!             info!("confirmed a sign-up from {domain}");
//!             response.confirm_user().verify_email();
//!         }
//!         Ok(response)
//!     }
//! }
//!
//! triggerfish_sdk::export!(TrustedDomain: pre_sign_up);
//! ```
//!
//! `cargo xtask new <name> --trigger <trigger>` writes a plugin crate like
//! this one, with a test; `cargo xtask build-plugins` builds it for
//! `wasm32-wasip2`, and the `.wasm` goes into a tenant's folder.
//!
//! # What a handler gets
//!
//! - a module per trigger ([`pre_sign_up`], [`pre_token_generation_v2`],
//!   [`sync_trigger`], ...) with its `Request`, `Response` and `Guest`
//!   trait, and helper methods on them: [`pre_sign_up::Request::email`],
//!   [`pre_sign_up::Response::confirm_user`],
//!   [`pre_token_generation::Response::add_claim`],
//!   [`pre_token_generation_v2::Response::access_token`],
//!   [`define_auth_challenge::Request::failures`] and so on;
//! - [`config`]: the plugin's values from `tenant.toml`, with errors that
//!   name the missing key;
//! - [`deny!`] (or [`deny()`]) to refuse an event with a message, which the
//!   caller sees as `"<Trigger> failed with error <message>."`;
//! - [`trace!`], [`debug!`], [`info!`], [`warn!`], [`error!`] to log into
//!   the host's tracing, in the span of the call.
//!
//! A plugin serving several triggers implements several `Guest` traits on
//! one type and names them all: `export!(Plugin: define_auth_challenge,
//! create_auth_challenge, verify_auth_challenge_response)`. The component
//! then exports exactly those interfaces.
//!
//! # Testing a plugin natively
//!
//! The bindings compile for the host too, so a plugin's logic can be unit
//! tested with `cargo test -p <plugin>`: outside WebAssembly, [`config`]
//! reads the values set with [`testing::set_config`] and log lines are kept
//! for [`testing::logs`]. Every `Request`, `Response` and [`Context`]
//! implements `Default`.
//!
//! # Limits
//!
//! Nothing survives between calls: every event gets a fresh instance. A
//! plugin has no filesystem, environment, network or arguments; it can log
//! and read its config. A panic is reported as a `trap` and stops the chain.
//!
//! Because the instance lives for one call, the SDK's allocator is the
//! [`arena`]: a call's first 256 KiB of allocations are a pointer bump and
//! are never freed; past them, the system allocator takes over.
//!
//! Plugins that need a world of their own (another WIT copy, or every
//! trigger at once) can still generate bindings in their crate with
//! [`bindings!`].

// The generated bindings name this crate by path, from inside it and from
// the plugin crates their export macros expand in.
extern crate self as triggerfish_sdk;

#[doc(hidden)]
pub use wit_bindgen;

pub mod arena;
#[doc(hidden)]
pub mod bindings;
pub mod config;
mod dynamodb;
mod helpers;
pub mod http;
mod log;
pub mod testing;

/// Every plugin built with the SDK allocates from the call arena (see
/// [`arena`]); `default-features = false` leaves the allocator to the
/// plugin.
#[cfg(all(feature = "call-arena", target_family = "wasm"))]
#[global_allocator]
static CALL_ARENA: arena::CallArena = arena::CallArena::new();

#[doc(hidden)]
pub use bindings::host;
pub use helpers::{attribute, domain_matches, email_domain, set_attribute};
pub use log::{log, Level};

/// The read-only parameters every user pool event shares, and the other
/// types of the contract's `types` interface.
pub use bindings::host::triggerfish::user_pool::types::{
    CallerContext, ChallengeResult, Context, GroupConfiguration, GroupOverrideDetails, StringMap,
};

macro_rules! trigger_module {
    ($(#[$doc:meta])* $module:ident => [$($item:ident),* $(,)?]) => {
        $(#[$doc])*
        pub mod $module {
            pub use crate::bindings::$module::exports::triggerfish::user_pool::$module::{
                Guest, $($item),*
            };
            pub use crate::Context;
        }
    };
}

trigger_module!(
    /// Pre sign-up: accept or deny a sign-up, and confirm or verify it
    /// early. `PreSignUp_SignUp`, `_AdminCreateUser`, `_ExternalProvider`.
    pre_sign_up => [Request, Response]
);
trigger_module!(
    /// Post confirmation: react to a confirmed user. Return `Ok(())` to let
    /// the flow go on. `PostConfirmation_ConfirmSignUp`,
    /// `_ConfirmForgotPassword`.
    post_confirmation => [Request]
);
trigger_module!(
    /// Pre authentication: accept or deny a sign-in.
    /// `PreAuthentication_Authentication`.
    pre_authentication => [Request]
);
trigger_module!(
    /// Post authentication: react to a successful sign-in.
    /// `PostAuthentication_Authentication`.
    post_authentication => [Request]
);
trigger_module!(
    /// Define auth challenge: decide the next step of a custom auth flow.
    /// `DefineAuthChallenge_Authentication`.
    define_auth_challenge => [Request, Response]
);
trigger_module!(
    /// Create auth challenge: build the challenge the user must answer.
    /// `CreateAuthChallenge_Authentication`.
    create_auth_challenge => [Request, Response]
);
trigger_module!(
    /// Verify auth challenge response: judge the user's answer.
    /// `VerifyAuthChallengeResponse_Authentication`.
    verify_auth_challenge_response => [Request, Response]
);
trigger_module!(
    /// Pre token generation, event version 1: ID token claims and groups.
    /// `TokenGeneration_*` events with `"version": "1"`.
    pre_token_generation => [Request, Response, ClaimsOverrideDetails]
);
trigger_module!(
    /// Pre token generation, event versions 2 and 3: claims and scopes of
    /// the ID and access tokens, and groups. `TokenGeneration_*` events with
    /// `"version": "2"` or `"3"`.
    pre_token_generation_v2 => [
        Request,
        Response,
        ClaimValue,
        ClaimsAndScopeOverrideDetails,
        IdTokenGeneration,
        AccessTokenGeneration,
    ]
);
trigger_module!(
    /// Migrate user: bring a user in from another directory.
    /// `UserMigration_Authentication`, `_ForgotPassword`.
    user_migration => [Request, Response]
);
trigger_module!(
    /// Custom message: write the email or SMS Cognito sends.
    /// `CustomMessage_SignUp`, `_AdminCreateUser`, `_ResendCode`,
    /// `_ForgotPassword`, `_UpdateUserAttribute`, `_VerifyUserAttribute`,
    /// `_Authentication`.
    custom_message => [Request, Response]
);
trigger_module!(
    /// Custom email sender: deliver Cognito's emails yourself.
    /// `CustomEmailSender_*`.
    custom_email_sender => [Request]
);
trigger_module!(
    /// Custom SMS sender: deliver Cognito's text messages yourself.
    /// `CustomSMSSender_*`.
    custom_sms_sender => [Request]
);

/// The Cognito Sync `SyncTrigger`: change the records of a dataset being
/// synchronised. Events with `"eventType": "SyncTrigger"`.
pub mod sync_trigger {
    pub use crate::bindings::sync_trigger::exports::triggerfish::sync::sync_trigger::{
        DatasetRecord, DatasetRecords, Event, Guest, Op,
    };
}

/// Kinesis data stream records: `handle` gets a batch and returns the
/// sequence numbers of the records that failed. Events whose `Records`
/// come from `aws:kinesis`.
pub mod kinesis {
    pub use crate::bindings::kinesis::exports::triggerfish::records::kinesis::{
        Guest, KinesisData, KinesisRecord,
    };
}

/// DynamoDB stream records: `handle` gets a batch of item changes and
/// returns the sequence numbers of the records that failed. Keys and
/// images are DynamoDB JSON text; [`dynamodb_stream::unmarshall`] reads
/// them as plain JSON. Events whose `Records` come from `aws:dynamodb`.
pub mod dynamodb_stream {
    pub use crate::bindings::dynamodb_stream::exports::triggerfish::records::dynamodb_stream::{
        DynamodbRecord, EventName, Guest, StreamRecord,
    };
    pub use crate::dynamodb::unmarshall;
}

/// SQS messages: `handle` gets a batch and returns the message ids of the
/// messages that failed, which come back after the visibility timeout.
/// Events whose `Records` come from `aws:sqs`.
pub mod sqs {
    pub use crate::bindings::sqs::exports::triggerfish::records::sqs::{
        Guest, Message, MessageAttribute,
    };
}

/// S3 object events: `handle` gets the event's records; an error fails
/// the whole event, which is retried. Events whose `Records` come from
/// `aws:s3` (or `minio:s3`).
pub mod s3 {
    pub use crate::bindings::s3::exports::triggerfish::records::s3::{
        Bucket, Entity, Guest, Object, S3Record, UserIdentity,
    };
}

/// Refuses the event: returns `Err` with a `format!`-style message from the
/// enclosing handler. The caller sees `"<Trigger> failed with error
/// <message>."` and the chain stops.
///
/// ```
/// fn check(domain: &str) -> Result<(), String> {
///     if domain == "spam.test" {
///         triggerfish_sdk::deny!("Sign-ups from {domain} are not allowed");
///     }
///     Ok(())
/// }
/// assert_eq!(check("spam.test").unwrap_err(), "Sign-ups from spam.test are not allowed");
/// ```
#[macro_export]
macro_rules! deny {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err(::std::format!($($arg)*))
    };
}

/// A denial with `message`, for use as an expression:
/// `return deny("not today")` or `.ok_or_else(...)`-free early exits.
pub fn deny<T>(message: impl Into<String>) -> Result<T, String> {
    Err(message.into())
}

/// Exports a type's `Guest` implementations as the plugin's triggers:
/// `export!(Plugin: pre_sign_up)`, or several at once,
/// `export!(Plugin: pre_token_generation, pre_token_generation_v2)`.
///
/// The names are the trigger modules of this crate: `pre_sign_up`,
/// `post_confirmation`, `pre_authentication`, `post_authentication`,
/// `define_auth_challenge`, `create_auth_challenge`,
/// `verify_auth_challenge_response`, `pre_token_generation`,
/// `pre_token_generation_v2`, `user_migration`, `custom_message`,
/// `custom_email_sender`, `custom_sms_sender`, `sync_trigger`, and for
/// stream records `kinesis`, `dynamodb_stream`, `sqs`, `s3`. Use it once
/// per plugin crate, at the top level.
#[macro_export]
macro_rules! export {
    ($plugin:ident : $($trigger:ident),+ $(,)?) => {
        // The exports exist in the component only. A native build (the
        // plugin's unit tests, a `cargo build` of the workspace) has none:
        // a native linker cannot take their names, and nothing calls them.
        #[cfg(target_family = "wasm")]
        const _: () = {
            $( $crate::__export_trigger!($plugin, $trigger); )+
        };
        #[cfg(not(target_family = "wasm"))]
        const _: fn() = || {
            let _ = ::core::marker::PhantomData::<$plugin>;
        };
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_trigger {
    ($plugin:ident, pre_sign_up) => {
        $crate::__export_pre_sign_up_plugin_impl!($plugin with_types_in $crate::bindings::pre_sign_up);
    };
    ($plugin:ident, post_confirmation) => {
        $crate::__export_post_confirmation_plugin_impl!($plugin with_types_in $crate::bindings::post_confirmation);
    };
    ($plugin:ident, pre_authentication) => {
        $crate::__export_pre_authentication_plugin_impl!($plugin with_types_in $crate::bindings::pre_authentication);
    };
    ($plugin:ident, post_authentication) => {
        $crate::__export_post_authentication_plugin_impl!($plugin with_types_in $crate::bindings::post_authentication);
    };
    ($plugin:ident, define_auth_challenge) => {
        $crate::__export_define_auth_challenge_plugin_impl!($plugin with_types_in $crate::bindings::define_auth_challenge);
    };
    ($plugin:ident, create_auth_challenge) => {
        $crate::__export_create_auth_challenge_plugin_impl!($plugin with_types_in $crate::bindings::create_auth_challenge);
    };
    ($plugin:ident, verify_auth_challenge_response) => {
        $crate::__export_verify_auth_challenge_response_plugin_impl!($plugin with_types_in $crate::bindings::verify_auth_challenge_response);
    };
    ($plugin:ident, pre_token_generation) => {
        $crate::__export_pre_token_generation_plugin_impl!($plugin with_types_in $crate::bindings::pre_token_generation);
    };
    ($plugin:ident, pre_token_generation_v2) => {
        $crate::__export_pre_token_generation_v2_plugin_impl!($plugin with_types_in $crate::bindings::pre_token_generation_v2);
    };
    ($plugin:ident, user_migration) => {
        $crate::__export_user_migration_plugin_impl!($plugin with_types_in $crate::bindings::user_migration);
    };
    ($plugin:ident, custom_message) => {
        $crate::__export_custom_message_plugin_impl!($plugin with_types_in $crate::bindings::custom_message);
    };
    ($plugin:ident, custom_email_sender) => {
        $crate::__export_custom_email_sender_plugin_impl!($plugin with_types_in $crate::bindings::custom_email_sender);
    };
    ($plugin:ident, custom_sms_sender) => {
        $crate::__export_custom_sms_sender_plugin_impl!($plugin with_types_in $crate::bindings::custom_sms_sender);
    };
    ($plugin:ident, sync_trigger) => {
        $crate::__export_sync_plugin_impl!($plugin with_types_in $crate::bindings::sync_trigger);
    };
    ($plugin:ident, kinesis) => {
        $crate::__export_kinesis_plugin_impl!($plugin with_types_in $crate::bindings::kinesis);
    };
    ($plugin:ident, dynamodb_stream) => {
        $crate::__export_dynamodb_stream_plugin_impl!($plugin with_types_in $crate::bindings::dynamodb_stream);
    };
    ($plugin:ident, sqs) => {
        $crate::__export_sqs_plugin_impl!($plugin with_types_in $crate::bindings::sqs);
    };
    ($plugin:ident, s3) => {
        $crate::__export_s3_plugin_impl!($plugin with_types_in $crate::bindings::s3);
    };
    ($plugin:ident, $other:ident) => {
        ::core::compile_error!(::core::concat!(
            "`", ::core::stringify!($other), "` is not a trigger: use one of pre_sign_up, ",
            "post_confirmation, pre_authentication, post_authentication, define_auth_challenge, ",
            "create_auth_challenge, verify_auth_challenge_response, pre_token_generation, ",
            "pre_token_generation_v2, user_migration, custom_message, custom_email_sender, ",
            "custom_sms_sender, sync_trigger, kinesis, dynamodb_stream, sqs, s3"
        ));
    };
}

/// Generates the bindings of any world of the contract in the calling
/// module (an `exports` module with the types and `Guest` traits, and an
/// `export!` macro), for plugins that need a world the trigger modules do
/// not cover, such as `every-trigger`. Most plugins want [`export!`].
///
/// The one-argument form reads the WIT from `../../wit` (a crate in this
/// repository's `plugins/`); pass the path first to use another copy.
#[macro_export]
macro_rules! bindings {
    ($world:literal) => {
        $crate::bindings!("../../wit", $world);
    };
    ($path:literal, $world:literal) => {
        $crate::wit_bindgen::generate!({
            path: $path,
            world: $world,
            runtime_path: "::triggerfish_sdk::wit_bindgen::rt",
            with: {
                "triggerfish:host/log@0.1.0": ::triggerfish_sdk::bindings::host::triggerfish::host::log,
                "triggerfish:host/config@0.1.0": ::triggerfish_sdk::bindings::host::triggerfish::host::config,
            },
            generate_all,
        });
    };
}
