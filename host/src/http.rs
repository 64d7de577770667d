//! The HTTP API.
//!
//! - `POST /v1/tenants/{tenant}/events`: a Cognito event in, the event with
//!   its response out; errors as `{"error": {"kind", "message", ...}}`.
//! - `POST /2015-03-31/functions/{tenant}/invocations`: the same, shaped as
//!   AWS Lambda's Invoke API so Cognito emulators and AWS SDKs can call it.
//! - `GET /v1/tenants/{tenant}/plugins`: what a tenant has loaded.
//! - `GET /healthz`.

use crate::auth::{AuthError, Credentials};
use crate::chain::{self, ChainError, ErrorKind, InvokeError};
use crate::host::Host;
use crate::sigv4::{self, SignedRequest};
use crate::tenant::{is_tenant_name, Tenant};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

/// Largest request body accepted, in bytes. Cognito's events are a few
/// kilobytes; Lambda's own limit for a synchronous payload is 6 MB.
pub const MAX_BODY_BYTES: usize = 1 << 20;

pub fn router(host: Arc<Host>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/tenants/{tenant}/events", post(event))
        .route("/v1/tenants/{tenant}/plugins", get(plugins))
        .route(
            "/2015-03-31/functions/{tenant}/invocations",
            post(lambda_invoke),
        )
        .fallback(not_found)
        .with_state(host)
}

/// A request that did not reach a chain, and its HTTP answer.
#[derive(Debug)]
struct RequestError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl RequestError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        RequestError {
            status,
            kind,
            message: message.into(),
        }
    }

    /// The name AWS gives this error in `x-amzn-ErrorType`.
    fn aws_type(&self) -> &'static str {
        match self.kind {
            "unknown-tenant" => "ResourceNotFoundException",
            "payload-too-large" => "RequestTooLargeException",
            "unauthorized" => "UnrecognizedClientException",
            "forbidden" => "AccessDeniedException",
            "invalid-signature" => "InvalidSignatureException",
            "too-many-requests" => "TooManyRequestsException",
            _ => "InvalidRequestContentException",
        }
    }
}

impl From<AuthError> for RequestError {
    fn from(error: AuthError) -> Self {
        let (status, kind) = match error {
            AuthError::WrongTenant => (StatusCode::FORBIDDEN, "forbidden"),
            AuthError::Signature(_) => (StatusCode::FORBIDDEN, "invalid-signature"),
            AuthError::MissingKey | AuthError::UnknownKey | AuthError::NoKeys => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
        };
        RequestError::new(status, kind, error.to_string())
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"error": {"kind": self.kind, "message": self.message}})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

async fn not_found() -> RequestError {
    RequestError::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "no such route; see the README for the API",
    )
}

async fn healthz(State(host): State<Arc<Host>>) -> Json<Value> {
    Json(json!({"status": "ok", "tenants": host.tenant_count()}))
}

/// Finds the tenant a path names.
fn find_tenant(host: &Host, name: &str) -> Result<Arc<Tenant>, RequestError> {
    if !is_tenant_name(name) {
        return Err(RequestError::new(
            StatusCode::NOT_FOUND,
            "unknown-tenant",
            format!("{name:?} is not a tenant name: tenant names are letters, digits, - and _"),
        ));
    }
    host.tenant(name).ok_or_else(|| {
        RequestError::new(
            StatusCode::NOT_FOUND,
            "unknown-tenant",
            format!("no tenant named {name:?}"),
        )
    })
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// Finds the tenant and checks the caller's bearer key.
fn tenant_for(host: &Host, name: &str, headers: &HeaderMap) -> Result<Arc<Tenant>, RequestError> {
    let tenant = find_tenant(host, name)?;
    if authorization(headers).is_some_and(sigv4::is_sigv4) {
        return Err(RequestError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "AWS signatures are accepted on the Lambda route only; use `Authorization: Bearer <key>`",
        ));
    }
    host.authorize(&tenant, &Credentials::bearer(authorization(headers)))?;
    Ok(tenant)
}

/// Reads the body, within [`MAX_BODY_BYTES`].
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, RequestError> {
    let too_large = || {
        RequestError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!("the body is larger than the limit of {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        discard(body).await;
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large())
}

fn parse_event(bytes: &[u8]) -> Result<Value, RequestError> {
    serde_json::from_slice(bytes).map_err(|e| {
        RequestError::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// Reads and drops a refused body, up to a bound, so the client gets to
/// read the 413 instead of a connection reset mid-upload.
async fn discard(mut body: Body) {
    use http_body_util::BodyExt;
    const DISCARD_LIMIT: usize = 16 * MAX_BODY_BYTES;
    let mut seen = 0;
    while seen <= DISCARD_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
}

/// Splits an invocation error into a chain that failed, or an event that
/// was not run because it is malformed.
fn chain_failure(error: InvokeError) -> Result<ChainError, RequestError> {
    match error {
        InvokeError::Chain(error) => Ok(error),
        InvokeError::Route(e) => Err(RequestError::new(
            StatusCode::BAD_REQUEST,
            "unknown-trigger",
            e.to_string(),
        )),
        shape @ InvokeError::Shape { .. } => Err(RequestError::new(
            StatusCode::BAD_REQUEST,
            "invalid-event",
            shape.to_string(),
        )),
        busy @ InvokeError::TooManyRequests { .. } => Err(RequestError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-requests",
            busy.to_string(),
        )),
    }
}

/// The HTTP status of a chain that stopped on an error.
fn chain_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Denied => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::NoHandler => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::OutOfFuel
        | ErrorKind::OutOfMemory
        | ErrorKind::Trap
        | ErrorKind::InvalidOutput => StatusCode::BAD_GATEWAY,
    }
}

fn chain_error_body(error: &ChainError) -> Value {
    json!({"error": {
        "kind": error.kind.as_str(),
        "message": error.cognito_message(),
        "reason": error.message,
        "trigger": error.trigger.cognito_name(),
        "plugin": error.plugin,
        "attempts": error.attempts,
    }})
}

async fn event(
    State(host): State<Arc<Host>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RequestError> {
    let tenant = tenant_for(&host, &tenant, &headers)?;
    let event = parse_event(&read_body(&headers, body).await?)?;
    match chain::invoke(&tenant, event).await {
        Ok(event) => Ok(Json(event).into_response()),
        Err(error) => {
            let error = chain_failure(error)?;
            Ok((chain_status(error.kind), Json(chain_error_body(&error))).into_response())
        }
    }
}

async fn plugins(
    State(host): State<Arc<Host>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, RequestError> {
    let tenant = tenant_for(&host, &tenant, &headers)?;
    let plugins: Vec<Value> = tenant
        .plugins
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "triggers": p.triggers().map(|t| t.wit_name()).collect::<Vec<_>>(),
                "hash": p.hash(),
                "size": p.compiled.size,
                "loadedAt": unix_millis(p.loaded_at),
                "origin": p.origin.as_str(),
                "lastError": tenant.failure_of(&p.name).map(|f| &f.error),
            })
        })
        .collect();
    let errors: Vec<Value> = tenant
        .failures
        .iter()
        .map(|f| {
            json!({
                "plugin": f.plugin,
                "error": f.error,
                "servingPrevious": f.serving_previous,
                "at": unix_millis(f.at),
            })
        })
        .collect();
    Ok(Json(
        json!({"tenant": tenant.name, "plugins": plugins, "errors": errors}),
    ))
}

fn unix_millis(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Lambda's Invoke API. Request errors come back as Lambda's service
/// errors (`x-amzn-ErrorType`); handler errors as Lambda reports them:
/// status 200, `X-Amz-Function-Error: Unhandled`, and
/// `{"errorMessage", "errorType"}` with the handler's own message.
async fn lambda_invoke(
    State(host): State<Arc<Host>>,
    Path(function): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match lambda_invoke_inner(host, function, uri, headers, body).await {
        Ok(response) => response,
        Err(error) => {
            let aws_type = error.aws_type();
            let mut response = (
                error.status,
                Json(json!({"Type": "User", "message": error.message, "kind": error.kind})),
            )
                .into_response();
            response
                .headers_mut()
                .insert("x-amzn-ErrorType", HeaderValue::from_static(aws_type));
            response
        }
    }
}

async fn lambda_invoke_inner(
    host: Arc<Host>,
    function: String,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RequestError> {
    // SDKs may send a full ARN or `name:qualifier`; the tenant is the name.
    let name = function
        .rsplit(":function:")
        .next()
        .unwrap_or(&function)
        .split(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let tenant = find_tenant(&host, &name)?;
    // A signature covers the body, so it is read before checking.
    let body = read_body(&headers, body).await?;
    // (In a block of its own: the credentials borrow a closure that must
    // not live across an await.)
    {
        let credentials = match authorization(&headers) {
            Some(signed) if sigv4::is_sigv4(signed) => Credentials::Signed {
                authorization: signed,
                request: SignedRequest {
                    method: "POST",
                    path: uri.path(),
                    query: uri.query(),
                    header: &|name: &str| {
                        headers
                            .get_all(name)
                            .iter()
                            .filter_map(|v| v.to_str().ok().map(str::to_owned))
                            .collect()
                    },
                    body: &body,
                },
            },
            other => Credentials::bearer(other),
        };
        host.authorize(&tenant, &credentials)?;
    }
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
                if let Err(error) = chain::invoke(&tenant, event).await {
                    tracing::warn!(%error, "asynchronous invocation failed");
                }
            });
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        other => {
            return Err(RequestError::new(
                StatusCode::BAD_REQUEST,
                "invalid-request",
                format!(
                    "unknown X-Amz-Invocation-Type {other:?}: use RequestResponse, Event or DryRun"
                ),
            ))
        }
    }
    let mut response = match chain::invoke(&tenant, event).await {
        Ok(event) => Json(event).into_response(),
        Err(error) => {
            let error = chain_failure(error)?;
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
    Ok(response)
}
