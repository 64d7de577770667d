//! Trigger families: how a family's events become a handler's arguments,
//! and how each plugin's result folds back into the event.
//!
//! - [`user_pool`]: Cognito user pool events; the `response` is carried
//!   from plugin to plugin, each replacing it whole.
//! - [`sync`]: Cognito Sync events; the `datasetRecords` are carried and
//!   merged by key.
//! - [`records`]: stream-record batches; the `Records` are carried, each
//!   plugin's failures leave them, and the answer is Lambda's partial
//!   batch response.
//!
//! The chain runner knows nothing of either: it asks the event's family
//! for the arguments, hands each plugin's `ok` value back to [`Args::fold`]
//! and, at the end, has [`Args::into_event`] write the result back. A new
//! family is a new module here and a case of [`Family`].

pub mod records;
pub mod sync;
pub mod user_pool;

pub use crate::trigger::Family;

use crate::engine::convert::{ConvertError, Plan};
use crate::plugin::{Handler, Plugin};
use crate::trigger::Trigger;
use records::Batch;
use serde_json::Value;
use std::sync::Arc;
use wasmtime::component::Val;

/// Where a handler parameter comes from in the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// Read-only fields at the top of the event (`context`, sync `event`).
    Top,
    /// A read-only object under a key (`request`).
    Under(&'static str),
    /// The part plugins change, carried from plugin to plugin (`response`,
    /// sync `datasetRecords`).
    Carried(&'static str),
}

impl Family {
    /// Where the handler parameter named `param` comes from.
    fn part(self, param: &str) -> Part {
        match self {
            Family::UserPool => user_pool::part(param),
            Family::Sync => sync::part(param),
            Family::Records => records::part(param),
        }
    }

    /// The answer to an event no plugin serves: the event as it came, or
    /// for stream records a batch with no failures.
    pub fn unserved(self, event: Value) -> Value {
        match self {
            Family::UserPool | Family::Sync => event,
            Family::Records => records::Batch::no_failures(),
        }
    }

    /// The message a caller gets when a chain of this family stops on an
    /// error: Cognito's wording for its triggers; for stream records the
    /// handler's own, as Lambda reports it.
    pub fn failure_message(self, trigger: Trigger, message: &str) -> String {
        match self {
            Family::UserPool | Family::Sync => user_pool::cognito_wording(trigger, message),
            Family::Records => message.to_owned(),
        }
    }
}

/// The arguments of one chain run: the event as component values.
pub(crate) struct Args {
    family: Family,
    pub(crate) values: Vec<Val>,
    /// Index, conversion plan and event key of the carried argument.
    carried: Option<(usize, Arc<Plan>, &'static str)>,
    /// Stream records: the batch's identifiers and failures.
    batch: Option<Batch>,
}

impl Args {
    /// The event as the arguments `trigger`'s `handler` takes.
    pub(crate) fn from_event(
        trigger: Trigger,
        handler: &Handler,
        event: &Value,
    ) -> Result<Args, ConvertError> {
        let family = trigger.family();
        let event = match family {
            Family::Records => records::prepare(trigger, event),
            Family::UserPool | Family::Sync => std::borrow::Cow::Borrowed(event),
        };
        let event = event.as_ref();
        let mut values = Vec::with_capacity(handler.params.len());
        let mut carried = None;
        for (i, ((name, _), plan)) in handler.params.iter().zip(&handler.plans).enumerate() {
            let value = match family.part(name) {
                Part::Top => plan.to_val(Some(event))?,
                Part::Under(key) => plan.to_val(event.get(key)).map_err(|e| e.within(key))?,
                Part::Carried(key) => {
                    carried = Some((i, plan.clone(), key));
                    plan.to_val(event.get(key)).map_err(|e| e.within(key))?
                }
            };
            values.push(value);
        }
        let batch = match (family, &carried) {
            (Family::Records, Some((index, _, _))) => Some(Batch::new(trigger, &values[*index])),
            _ => None,
        };
        Ok(Args {
            family,
            values,
            carried,
            batch,
        })
    }

    /// Takes a plugin's `ok` value into the carried argument, by the
    /// family's rule: a user pool response replaces the one before, sync
    /// records merge by key, failed stream records leave the batch. An
    /// answer the rule cannot take (a failure report naming a record the
    /// plugin was not given) is the error.
    pub(crate) fn fold(&mut self, ok: Option<Val>) -> Result<(), String> {
        let (Some((index, _, _)), Some(returned)) = (&self.carried, ok) else {
            return Ok(());
        };
        let carried = &mut self.values[*index];
        match (self.family, &mut self.batch) {
            (Family::UserPool, _) => *carried = returned,
            (Family::Sync, _) => sync::merge_records(carried, returned),
            (Family::Records, Some(batch)) => batch.fold(carried, returned)?,
            (Family::Records, None) => {}
        }
        Ok(())
    }

    /// Whether nothing is left for the next plugin: every record of a
    /// batch has failed.
    pub(crate) fn is_spent(&self) -> bool {
        match (&self.batch, &self.carried) {
            (Some(_), Some((index, _, _))) => records::is_empty(&self.values[*index]),
            _ => false,
        }
    }

    /// The chain's answer. For Cognito's families, the carried argument
    /// written back into the event, where every field the contract does
    /// not model stays as it came; for stream records, Lambda's partial
    /// batch response.
    pub(crate) fn into_event(self, mut event: Value) -> Result<Value, ConvertError> {
        if let Some(batch) = &self.batch {
            return Ok(batch.response());
        }
        if let Some((index, plan, key)) = &self.carried {
            let json = plan
                .to_json(&self.values[*index], event.get(*key))
                .map_err(|e| e.within(*key))?;
            if let Value::Object(object) = &mut event {
                object.insert((*key).to_owned(), json);
            }
        }
        Ok(event)
    }
}

/// Converts `event` to the values `plugin`'s handler for `trigger` takes
/// and back, as a chain whose plugins change nothing would: what tests and
/// fuzzing use to check that conversion loses nothing.
pub fn round_trip(plugin: &Plugin, trigger: Trigger, event: Value) -> Result<Value, ConvertError> {
    let Some(handler) = plugin.compiled.handlers.get(&trigger) else {
        return Ok(event);
    };
    Args::from_event(trigger, handler, &event)?.into_event(event)
}
