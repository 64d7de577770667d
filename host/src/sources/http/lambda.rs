//! AWS Lambda's Invoke API: `POST /2015-03-31/functions/{tenant}/invocations`.
//!
//! Request errors come back as Lambda's service errors
//! (`x-amzn-ErrorType`); handler errors as Lambda reports them: status
//! 200, `X-Amz-Function-Error: Unhandled`, and `{"errorMessage",
//! "errorType"}` with the handler's own message (Cognito, or an emulator,
//! adds the "failed with error" wording itself).

use super::{
    authorization, check_tenant_name, log_tail, parse_event, read_body, Api, PathName,
    RequestError, RequestErrorKind,
};
use crate::auth::sigv4::{self, SignedRequest};
use crate::auth::Credentials;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub(super) async fn invoke(
    State(api): State<Api>,
    function: Result<PathName, RequestError>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let answer = match function {
        Ok(PathName(function)) => invoke_inner(api, function, uri, headers, body).await,
        Err(error) => Err(error),
    };
    answer.unwrap_or_else(service_error)
}

/// A request error in Lambda's shape.
fn service_error(error: RequestError) -> Response {
    let mut response = (
        error.status,
        Json(json!({"Type": "User", "message": error.message, "kind": error.kind.as_str()})),
    )
        .into_response();
    response.headers_mut().insert(
        "x-amzn-ErrorType",
        HeaderValue::from_static(error.kind.aws_type()),
    );
    // For the metrics of refused requests.
    response.extensions_mut().insert(error.kind);
    response
}

/// The tenant a function name stands for: SDKs may send a full ARN or
/// `name:qualifier`; the tenant is the name.
fn tenant_name(function: &str) -> &str {
    let name = function.rsplit(":function:").next().unwrap_or(function);
    name.split(':').next().unwrap_or_default()
}

async fn invoke_inner(
    api: Api,
    function: String,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RequestError> {
    let name = tenant_name(&function);
    check_tenant_name(name)?;
    // A signature covers the body, so it is read before checking.
    let body = read_body(&headers, body).await?;
    let credentials = match authorization(&headers) {
        Some(signed) if sigv4::is_sigv4(signed) => Credentials::Signed {
            authorization: signed,
            request: SignedRequest {
                method: "POST",
                path: uri.path(),
                query: uri.query(),
                headers: &headers,
                body: &body,
            },
        },
        other => Credentials::bearer(other),
    };
    let tenant = api.tenants.authorize(name, &credentials)?;
    let event = parse_event(&body)?;
    let invocation_type = headers
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("RequestResponse");
    match invocation_type {
        "RequestResponse" => {}
        "DryRun" => return Ok(StatusCode::NO_CONTENT.into_response()),
        "Event" => {
            tokio::spawn(async move {
                if let Err(error) = api.dispatcher.dispatch(&tenant, event).await {
                    tracing::warn!(%error, "asynchronous invocation failed");
                }
            });
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        other => {
            return Err(RequestError::new(
                StatusCode::BAD_REQUEST,
                RequestErrorKind::InvalidRequest,
                format!(
                    "unknown X-Amz-Invocation-Type {other:?}: use RequestResponse, Event or DryRun"
                ),
            ))
        }
    }
    let tail = log_tail::wanted(&headers)?;
    let (result, lines) = log_tail::dispatch(&api, &tenant, event, tail).await;
    let mut response = match result? {
        Ok(event) => super::json_response(StatusCode::OK, &event, body.len()),
        Err(error) => {
            let mut response = Json(json!({
                "errorMessage": error.message,
                "errorType": error.kind.error_type(),
            }))
            .into_response();
            response.headers_mut().insert(
                "x-amz-function-error",
                HeaderValue::from_static("Unhandled"),
            );
            response
        }
    };
    response.headers_mut().insert(
        "x-amz-executed-version",
        HeaderValue::from_static("$LATEST"),
    );
    log_tail::attach(&mut response, lines.as_deref());
    Ok(response)
}
