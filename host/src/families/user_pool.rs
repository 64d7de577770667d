//! Cognito user pool events: `context` is the event's read-only top,
//! `request` is read-only, and `response` is what plugins change, each
//! plugin getting the response the one before it returned.

use super::Part;
use crate::trigger::Trigger;

pub(super) fn part(param: &str) -> Part {
    match param {
        "request" => Part::Under("request"),
        "response" => Part::Carried("response"),
        _ => Part::Top,
    }
}

/// Cognito's wording of a failed trigger: "PreSignUp failed with error
/// <message>."
pub(super) fn cognito_wording(trigger: Trigger, message: &str) -> String {
    format!("{} failed with error {message}.", trigger.aws_name())
}
