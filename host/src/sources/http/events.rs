//! The `/v1` routes: events, a tenant's plugins, and health.

use super::{
    authorization, chain_status, check_tenant_name, json_response, log_tail, parse_event,
    read_body, Api, PathName, RequestError, RequestErrorKind,
};
use crate::auth::{sigv4, Credentials};
use crate::dispatch::ChainError;
use crate::tenant::Tenant;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

/// Readiness for a load balancer (see [`crate::sources::drain`]):
/// `200 {"status": "ready"}` once every tenant is loaded (and, at start,
/// the stream engine is connected); `503 {"status": "starting"}` before,
/// and `503 {"status": "draining"}` from SIGTERM on, each with a `reason`.
/// `tenants` counts the tenants loaded; `engine` (when the host keeps
/// streams) is `connected` or `reconnecting`.
pub(super) async fn healthz(State(api): State<Api>) -> Response {
    use crate::sources::drain::Readiness;
    let engine = api.streams.as_ref().map(|s| s.engine.connected());
    let readiness = api
        .health
        .ready(api.tenants.is_ready(), engine.unwrap_or(true));
    let (code, status, reason) = match readiness {
        Readiness::Ready => (StatusCode::OK, "ready", None),
        Readiness::Starting(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            Some(why.to_owned()),
        ),
        Readiness::Draining(signal) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            Some(format!(
                "stopping on {signal}: finishing the requests in flight, then exiting"
            )),
        ),
    };
    let mut body = json!({"status": status, "tenants": api.tenants.count()});
    if let Some(reason) = reason {
        body["reason"] = json!(reason);
    }
    if let Some(connected) = engine {
        body["engine"] = json!(if connected {
            "connected"
        } else {
            "reconnecting"
        });
    }
    (code, Json(body)).into_response()
}

/// The tenant a `/v1` path names, if the caller's bearer key may use it.
pub(super) fn authorized_tenant(
    api: &Api,
    name: &str,
    headers: &HeaderMap,
) -> Result<Arc<Tenant>, RequestError> {
    check_tenant_name(name)?;
    if authorization(headers).is_some_and(sigv4::is_sigv4) {
        return Err(RequestError::new(
            StatusCode::UNAUTHORIZED,
            RequestErrorKind::Unauthorized,
            "AWS signatures are accepted on the Lambda route only; use `Authorization: Bearer <key>`",
        ));
    }
    Ok(api
        .tenants
        .authorize(name, &Credentials::bearer(authorization(headers)))?)
}

fn chain_error_body(error: &ChainError) -> Value {
    json!({"error": {
        "kind": error.kind.as_str(),
        "message": error.cognito_message(),
        "reason": error.message,
        "trigger": error.trigger.aws_name(),
        "plugin": error.plugin,
        "attempts": error.attempts,
    }})
}

pub(super) async fn event(
    State(api): State<Api>,
    PathName(tenant): PathName,
    // The request whole rather than `HeaderMap`, which clones the headers.
    request: Request,
) -> Result<Response, RequestError> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let tenant = authorized_tenant(&api, &tenant, headers)?;
    let tail = log_tail::wanted(headers)?;
    let body = read_body(headers, body).await?;
    let event = parse_event(&body)?;
    let (result, lines) = log_tail::dispatch(&api, &tenant, event, tail).await;
    let mut response = match result? {
        Ok(event) => json_response(StatusCode::OK, &event, body.len()),
        Err(error) => (chain_status(error.kind), Json(chain_error_body(&error))).into_response(),
    };
    log_tail::attach(&mut response, lines.as_deref());
    Ok(response)
}

pub(super) async fn plugins(
    State(api): State<Api>,
    PathName(tenant): PathName,
    headers: HeaderMap,
) -> Result<Json<Value>, RequestError> {
    let tenant = authorized_tenant(&api, &tenant, &headers)?;
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
