//! The HTTP API, a [`Source`] of events.
//!
//! - `POST /v1/tenants/{tenant}/events`, `GET /v1/tenants/{tenant}/plugins`,
//!   `GET /healthz` ([`events`]);
//! - `POST|GET /v1/tenants/{tenant}/streams/{stream}/records`,
//!   `GET /v1/tenants/{tenant}/event-sources` ([`streams`]);
//! - `GET /v1/tenants/{tenant}/datasets/{identityId}/{datasetName}`,
//!   `POST|GET /v1/tenants/{tenant}/bulk-publish`,
//!   `GET /v1/tenants/{tenant}/sync-payloads/{payload}` ([`cognito`]);
//! - `POST /2015-03-31/functions/{tenant}/invocations`, AWS Lambda's Invoke
//!   API, so Cognito emulators and AWS SDKs can call the host ([`lambda`]);
//! - `GET /metrics`, `GET /status`, `POST /status/login|logout`, the
//!   operator's routes, off without `serve --admin-keys` ([`admin`]);
//! - `PUT|DELETE /v1/tenants/{tenant}/plugins/{name}`, `PUT
//!   /v1/tenants/{tenant}/config`: deploying ([`deploy`]);
//! - served by [`server`]: hyper with header, body and idle timeouts and
//!   caps on connections.
//!
//! Every error is JSON: `{"error": {"kind", "message"}}` on the `/v1`
//! routes, Lambda's own shapes on the Lambda route.

mod admin;
mod cognito;
mod deploy;
mod error;
mod events;
mod lambda;
mod log_tail;
pub mod server;
mod streams;

use super::{Source, Stop};
use crate::auth::AuthError;
use crate::dispatch::{Dispatcher, ErrorKind, InvokeError};
use crate::tenant::registry::Tenants;
use crate::tenant::{is_tenant_name, Tenant};
use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use error::not_found;
pub(crate) use error::{RequestError, RequestErrorKind};
use serde_json::{json, Value};
use server::ServerLimits;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Largest request body accepted, in bytes. Cognito's events are a few
/// kilobytes; Lambda's own limit for a synchronous payload is 6 MB.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What every handler needs: the tenants and the dispatcher.
#[derive(Clone)]
pub struct Api {
    pub tenants: Arc<Tenants>,
    pub dispatcher: Arc<Dispatcher>,
    /// The streams the host keeps; none: the stream routes answer 503.
    pub streams: Option<Arc<crate::streams::Streams>>,
    /// The operator's keys, metrics and status page; `None` (the routes
    /// answer 404) without `serve --admin-keys`.
    pub admin: Option<Arc<crate::ops::Admin>>,
    /// What `/healthz` reports: draining, and whether it said ready yet.
    pub health: super::drain::Health,
}

/// The API's routes.
pub fn router(api: Api) -> Router {
    let admin = api.admin.clone();
    let router = Router::new()
        .route("/healthz", get(events::healthz))
        .route("/v1/tenants/{tenant}/events", post(events::event))
        .route("/v1/tenants/{tenant}/plugins", get(events::plugins))
        .route(
            "/v1/tenants/{tenant}/streams/{stream}/records",
            post(streams::append).get(streams::read),
        )
        .route(
            "/v1/tenants/{tenant}/event-sources",
            get(streams::event_sources),
        )
        .route(
            "/v1/tenants/{tenant}/datasets/{identity}/{dataset}",
            get(cognito::dataset),
        )
        .route(
            "/v1/tenants/{tenant}/bulk-publish",
            post(cognito::start_bulk_publish).get(cognito::bulk_publish_status),
        )
        .route(
            "/v1/tenants/{tenant}/sync-payloads/{payload}",
            get(cognito::sync_payload),
        )
        .route(
            "/v1/tenants/{tenant}/plugins/{name}",
            put(deploy::put_plugin).delete(deploy::delete_plugin),
        )
        .route("/v1/tenants/{tenant}/config", put(deploy::put_config))
        .route(
            "/v1/tenants/{tenant}",
            axum::routing::delete(deploy::delete_tenant),
        )
        .route(
            "/2015-03-31/functions/{function}/invocations",
            post(lambda::invoke),
        )
        .route("/metrics", get(admin::metrics))
        .route("/status", get(admin::status))
        .route("/status/login", post(admin::login))
        .route("/status/logout", post(admin::logout))
        .fallback(not_found)
        .with_state(api);
    match admin {
        Some(admin) => admin::count_refusals(router, admin),
        None => router,
    }
}

/// The HTTP API on a listener, as a source `serve` starts and stops.
pub struct HttpSource {
    pub listener: tokio::net::TcpListener,
    pub api: Api,
    /// Timeouts and connection caps ([`server`]).
    pub limits: ServerLimits,
    /// How long to serve on after the stop signal (while `/healthz` says
    /// draining) before the listener closes: `--drain-grace-ms`.
    pub drain_grace: std::time::Duration,
}

impl Source for HttpSource {
    fn name(&self) -> &'static str {
        "http"
    }

    fn run(
        self: Box<Self>,
        stop: Stop,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
        Box::pin(async move {
            let grace = self.drain_grace;
            let shutdown = async move {
                stop.stopped().await;
                // A load balancer learns from /healthz that this host
                // drains, and sends nothing more, before the door closes.
                tokio::time::sleep(grace).await;
            };
            let health = self.api.health.clone();
            let router = super::drain::close_connections_while_draining(router(self.api), health);
            server::serve(self.listener, router, self.limits, shutdown).await?;
            Ok(())
        })
    }
}

/// The path's one parameter (a tenant or function name), with a JSON error
/// for a path axum cannot decode (bad percent-encoding, invalid UTF-8).
pub(crate) struct PathName(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for PathName {
    type Rejection = RequestError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(name)) => Ok(PathName(name)),
            Err(rejection) => Err(RequestError::new(
                StatusCode::BAD_REQUEST,
                RequestErrorKind::InvalidRequest,
                format!("the path cannot be read: {}", rejection.body_text()),
            )),
        }
    }
}

/// Checks that `name` can name a tenant at all (anything else is a 404
/// that says so: such a name tells nothing about which tenants exist).
pub(crate) fn check_tenant_name(name: &str) -> Result<(), RequestError> {
    if is_tenant_name(name) {
        Ok(())
    } else {
        Err(RequestError::new(
            StatusCode::NOT_FOUND,
            RequestErrorKind::UnknownTenant,
            format!("{name:?} is not a tenant name: tenant names are letters, digits, - and _"),
        ))
    }
}

pub(crate) fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// Reads the body, within [`MAX_BODY_BYTES`].
pub(crate) async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, RequestError> {
    read_body_within(headers, body, MAX_BODY_BYTES, "").await
}

/// Reads the body, within `limit` bytes (413 past it, the message naming
/// the limit and `what` sets it).
pub(crate) async fn read_body_within(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    what: &str,
) -> Result<Bytes, RequestError> {
    let too_large = || {
        RequestError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            RequestErrorKind::PayloadTooLarge,
            format!("the body is larger than the limit of {limit} bytes{what}"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        discard(body).await;
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
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

/// `value` as a JSON answer, written once into a buffer of about
/// `size_hint` bytes (an event comes back about as large as it came, so
/// the request body's length), instead of one that starts small and grows.
pub(crate) fn json_response(status: StatusCode, value: &Value, size_hint: usize) -> Response {
    let mut body = Vec::with_capacity(size_hint + size_hint / 4 + 64);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        // A `Value` always serializes; kept as axum's `Json` answers.
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// The body as an event: JSON, with no key twice.
pub(crate) fn parse_event(bytes: &[u8]) -> Result<Value, RequestError> {
    super::json::parse_strict(bytes).map_err(|e| {
        RequestError::new(
            StatusCode::BAD_REQUEST,
            RequestErrorKind::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// Runs an event through the dispatcher, splitting its errors into a
/// chain that failed (answered by the route in its own shape) and an
/// event that never ran.
pub(crate) async fn dispatch(
    api: &Api,
    tenant: &Tenant,
    event: Value,
) -> Result<Result<Value, crate::dispatch::ChainError>, RequestError> {
    split_result(api.dispatcher.dispatch(tenant, event).await)
}

/// A dispatch's result, split as [`dispatch`] splits it.
pub(crate) fn split_result(
    result: Result<Value, InvokeError>,
) -> Result<Result<Value, crate::dispatch::ChainError>, RequestError> {
    match result {
        Ok(event) => Ok(Ok(event)),
        Err(InvokeError::Chain(error)) => Ok(Err(error)),
        Err(InvokeError::Route(e)) => Err(RequestError::new(
            StatusCode::BAD_REQUEST,
            RequestErrorKind::UnknownTrigger,
            e.to_string(),
        )),
        Err(shape @ InvokeError::Shape { .. }) => Err(RequestError::new(
            StatusCode::BAD_REQUEST,
            RequestErrorKind::InvalidEvent,
            shape.to_string(),
        )),
        Err(busy @ InvokeError::TooManyRequests { .. }) => Err(RequestError::new(
            StatusCode::TOO_MANY_REQUESTS,
            RequestErrorKind::TooManyRequests,
            busy.to_string(),
        )),
        Err(store @ InvokeError::SyncStore(_)) => Err(RequestError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            RequestErrorKind::SyncStoreFailed,
            store.to_string(),
        )),
    }
}

/// The HTTP status of a chain that stopped on an error.
pub(crate) fn chain_status(kind: ErrorKind) -> StatusCode {
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
