//! The logs of one invocation, for the caller who asks: `X-Amz-Log-Type:
//! Tail` on the Lambda route (as Lambda has it) and on the `/v1` events
//! route alike. The answer carries `X-Amz-Log-Result`: the base64 of the
//! last 4 KB of the invocation's plugin log lines (every plugin of its
//! chain, every attempt, and how a call failed), one line each:
//! `<UTC time>\t<LEVEL>\t<plugin>\t<message>`. The lines are gathered for
//! that invocation alone (`Dispatcher::dispatch_with_log_tail`).

use super::{split_result, Api, RequestError, RequestErrorKind};
use crate::dispatch::ChainError;
use crate::tenant::Tenant;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use serde_json::Value;

/// The request header that asks for the tail.
pub(crate) const LOG_TYPE: &str = "x-amz-log-type";
/// The response header that carries it.
pub(crate) const LOG_RESULT: &str = "x-amz-log-result";

/// Whether the request asks for its log tail: `X-Amz-Log-Type: Tail`
/// (`None`, or no header: no). Anything else is a 400 that says so.
pub(crate) fn wanted(headers: &HeaderMap) -> Result<bool, RequestError> {
    let Some(value) = headers.get(LOG_TYPE) else {
        return Ok(false);
    };
    match value.to_str().unwrap_or_default() {
        v if v.eq_ignore_ascii_case("Tail") => Ok(true),
        v if v.eq_ignore_ascii_case("None") => Ok(false),
        _ => Err(RequestError::new(
            StatusCode::BAD_REQUEST,
            RequestErrorKind::InvalidRequest,
            "X-Amz-Log-Type must be Tail or None",
        )),
    }
}

/// The outcome of an invocation, and its log tail when asked for.
pub(crate) type Dispatched = (
    Result<Result<Value, ChainError>, RequestError>,
    Option<String>,
);

/// Runs the event as `super::dispatch` does, gathering its log tail when
/// `tail` is set.
pub(crate) async fn dispatch(api: &Api, tenant: &Tenant, event: Value, tail: bool) -> Dispatched {
    if tail {
        let (result, lines) = api.dispatcher.dispatch_with_log_tail(tenant, event).await;
        (split_result(result), Some(lines))
    } else {
        (super::dispatch(api, tenant, event).await, None)
    }
}

/// Adds `X-Amz-Log-Result` to the answer, when a tail was gathered.
pub(crate) fn attach(response: &mut Response, lines: Option<&str>) {
    if let Some(lines) = lines {
        let encoded = base64::engine::general_purpose::STANDARD.encode(lines);
        if let Ok(value) = HeaderValue::from_str(&encoded) {
            response.headers_mut().insert(LOG_RESULT, value);
        }
    }
}
