//! Reading a component's exports: which triggers it serves, how to call
//! them, and whether their types match the contract.

use super::{Handler, PluginError};
use crate::engine::bindings;
use crate::engine::convert::Plan;
use crate::engine::state::CallState;
use crate::engine::Runtime;
use crate::trigger::Trigger;
use std::collections::BTreeMap;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Instance, InstancePre, Type};
use wasmtime::Store;

/// Finds the trigger interfaces a component exports and how to call them.
pub(super) fn handlers(
    runtime: &Runtime,
    component: &Component,
) -> Result<BTreeMap<Trigger, Handler>, PluginError> {
    let engine = runtime.engine();
    let ty = component.component_type();
    let mut handlers = BTreeMap::new();
    let mut other_exports = Vec::new();
    for (name, export) in ty.exports(engine) {
        let Some(trigger) = Trigger::from_export_name(name) else {
            other_exports.push(name.to_owned());
            continue;
        };
        let mismatch = |reason: &str| PluginError::Mismatch {
            export: name.to_owned(),
            reason: reason.to_owned(),
        };
        let ComponentItem::ComponentInstance(instance) = export.ty else {
            return Err(mismatch("it is not an instance"));
        };
        let Some(handle) = instance.get_export(engine, "handle") else {
            return Err(mismatch("it has no `handle` function"));
        };
        let ComponentItem::ComponentFunc(func) = handle.ty else {
            return Err(mismatch("`handle` is not a function"));
        };
        let params: Vec<(String, Type)> = func
            .params()
            .map(|(name, ty)| (name.to_owned(), ty))
            .collect();
        if !matches!(func.results().next(), Some(Type::Result(_))) {
            return Err(mismatch("`handle` must return a result"));
        }
        let instance_index = component
            .get_export_index(None, name)
            .ok_or_else(|| mismatch("it cannot be looked up"))?;
        let func = component
            .get_export_index(Some(&instance_index), "handle")
            .ok_or_else(|| mismatch("`handle` cannot be looked up"))?;
        let plans = params
            .iter()
            .map(|(_, ty)| std::sync::Arc::new(Plan::new(ty)))
            .collect();
        handlers.insert(
            trigger,
            Handler {
                func,
                params,
                plans,
            },
        );
    }
    if handlers.is_empty() {
        return Err(PluginError::NoTrigger(other_exports));
    }
    Ok(handlers)
}

/// Checks one trigger export against the host's own bindings of the
/// contract, so a plugin built from another version of the WIT is refused
/// at load rather than failing on its first event.
pub(super) fn typecheck(
    trigger: Trigger,
    pre: &InstancePre<CallState>,
    store: &mut Store<CallState>,
    instance: &Instance,
) -> wasmtime::Result<()> {
    use bindings::exports::triggerfish::records::{dynamodb_stream, kinesis, s3, sqs};
    use bindings::exports::triggerfish::sync::sync_trigger;
    use bindings::exports::triggerfish::user_pool::*;
    macro_rules! check {
        ($module:ident) => {{
            $module::GuestIndices::new(pre)?.load(&mut *store, instance)?;
        }};
    }
    match trigger {
        Trigger::PreSignUp => check!(pre_sign_up),
        Trigger::PostConfirmation => check!(post_confirmation),
        Trigger::PreAuthentication => check!(pre_authentication),
        Trigger::PostAuthentication => check!(post_authentication),
        Trigger::DefineAuthChallenge => check!(define_auth_challenge),
        Trigger::CreateAuthChallenge => check!(create_auth_challenge),
        Trigger::VerifyAuthChallengeResponse => check!(verify_auth_challenge_response),
        Trigger::PreTokenGeneration => check!(pre_token_generation),
        Trigger::PreTokenGenerationV2 => check!(pre_token_generation_v2),
        Trigger::UserMigration => check!(user_migration),
        Trigger::CustomMessage => check!(custom_message),
        Trigger::CustomEmailSender => check!(custom_email_sender),
        Trigger::CustomSmsSender => check!(custom_sms_sender),
        Trigger::Sync => check!(sync_trigger),
        Trigger::Kinesis => check!(kinesis),
        Trigger::DynamodbStream => check!(dynamodb_stream),
        Trigger::Sqs => check!(sqs),
        Trigger::S3 => check!(s3),
    }
    Ok(())
}
