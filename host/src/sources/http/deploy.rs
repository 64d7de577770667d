//! Deploying over HTTP:
//!
//! - `PUT /v1/tenants/{tenant}/plugins/{name}`: the body is the `.wasm`
//!   (at most the tenant's `[quotas] wasm-kib`, else 413); installs or
//!   replaces the plugin `name` once it loads, answers once it serves.
//! - `DELETE /v1/tenants/{tenant}/plugins/{name}`: removes it (404 if there
//!   is none).
//! - `PUT /v1/tenants/{tenant}/config`: the body is a new `tenant.toml`
//!   (at most 1 MiB), parsed strictly and resolved within the operator's
//!   policy first.
//!
//! - `DELETE /v1/tenants/{tenant}`: removes the tenant and all its files
//!   (an operator key, `serve --shared-plugins` only). There, an operator
//!   key's `PUT .../config` to a tenant that does not exist creates it.
//!
//! Each needs `Authorization: Bearer <key>` with a key the tenant lists in
//! `[auth] deploy-keys` (see `auth::rights`), or an operator key (see
//! [`operator_deploys`]). What is refused changes nothing
//! (`tenant::deploy`).

use super::{
    authorization, check_tenant_name, read_body_within, Api, RequestError, RequestErrorKind,
};
use crate::auth::{sigv4, Credentials};
use crate::tenant::deploy::{DeployError, Deployer};
use crate::tenant::{is_tenant_name, LoadFailure, Tenant, TENANT_FILE_MAX_BYTES};
use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

/// The tenant and plugin names of `/v1/tenants/{tenant}/plugins/{name}`,
/// with a JSON error for a path axum cannot decode.
pub(super) struct TenantAndPlugin(String, String);

impl<S: Send + Sync> FromRequestParts<S> for TenantAndPlugin {
    type Rejection = RequestError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<(String, String)>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path((tenant, plugin))) => Ok(TenantAndPlugin(tenant, plugin)),
            Err(rejection) => Err(RequestError::new(
                StatusCode::BAD_REQUEST,
                RequestErrorKind::InvalidRequest,
                format!("the path cannot be read: {}", rejection.body_text()),
            )),
        }
    }
}

/// Whether the request carries an operator key (`serve --admin-keys
/// FILE`), which may deploy to any tenant. Without the flag there are no
/// operator keys, and only tenant keys with the deploy right deploy.
fn operator_deploys(api: &Api, headers: &HeaderMap) -> bool {
    api.admin
        .as_ref()
        .is_some_and(|admin| admin.keys.authorize(headers).is_ok())
}

/// The tenant a deploy route names, if the request may deploy to it.
fn deployer(
    api: &Api,
    name: &str,
    headers: &HeaderMap,
) -> Result<(Arc<Tenant>, Deployer), RequestError> {
    check_tenant_name(name)?;
    if operator_deploys(api, headers) {
        let tenant = api.tenants.tenant(name).ok_or_else(|| {
            RequestError::new(
                StatusCode::NOT_FOUND,
                RequestErrorKind::UnknownTenant,
                if api.tenants.shared().is_some() {
                    format!("no tenant {name:?}: deploy its tenant.toml first (PUT .../config), which creates it")
                } else {
                    format!("no tenant {name:?}: create its folder in the plugins folder first")
                },
            )
        })?;
        return Ok((tenant, Deployer::Operator));
    }
    if authorization(headers).is_some_and(sigv4::is_sigv4) {
        return Err(RequestError::new(
            StatusCode::UNAUTHORIZED,
            RequestErrorKind::Unauthorized,
            "deploys take `Authorization: Bearer <key>` with a key listed in [auth] deploy-keys",
        ));
    }
    Ok(api
        .tenants
        .authorize_deploy(name, &Credentials::bearer(authorization(headers)))?)
}

impl From<DeployError> for RequestError {
    fn from(error: DeployError) -> Self {
        let (status, kind) = match &error {
            DeployError::InvalidName { .. } => {
                (StatusCode::BAD_REQUEST, RequestErrorKind::InvalidRequest)
            }
            DeployError::UnknownTenant(_) => {
                (StatusCode::NOT_FOUND, RequestErrorKind::UnknownTenant)
            }
            DeployError::InvalidPlugin(_) => {
                (StatusCode::BAD_REQUEST, RequestErrorKind::InvalidPlugin)
            }
            DeployError::TooManyPlugins { .. } => {
                (StatusCode::CONFLICT, RequestErrorKind::QuotaExceeded)
            }
            DeployError::UnknownPlugin(_) => {
                (StatusCode::NOT_FOUND, RequestErrorKind::UnknownPlugin)
            }
            DeployError::InvalidConfig(_) => {
                (StatusCode::BAD_REQUEST, RequestErrorKind::InvalidConfig)
            }
            DeployError::WouldLockOut => (StatusCode::CONFLICT, RequestErrorKind::WouldLockOut),
            DeployError::Io(_) | DeployError::NotLive(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                RequestErrorKind::DeployFailed,
            ),
            // The shared store did not answer: nothing was stored, try again.
            DeployError::Store(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                RequestErrorKind::DeployFailed,
            ),
            DeployError::NotShared => (StatusCode::BAD_REQUEST, RequestErrorKind::InvalidRequest),
        };
        if status.is_server_error() {
            tracing::error!(%error, "deploy failed");
        }
        RequestError::new(status, kind, error.to_string())
    }
}

pub(super) async fn put_plugin(
    State(api): State<Api>,
    TenantAndPlugin(tenant, plugin): TenantAndPlugin,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RequestError> {
    let (tenant, _by) = deployer(&api, &tenant, &headers)?;
    let limit = usize::try_from(tenant.quotas.wasm_bytes).unwrap_or(usize::MAX);
    let bytes = read_body_within(
        &headers,
        body,
        limit,
        ", the tenant's quota for one plugin ([quotas] wasm-kib)",
    )
    .await?;
    let deployed = api
        .tenants
        .deploy_plugin(&tenant.name, &plugin, bytes.to_vec())
        .await?;
    let status = if deployed.replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = json!({
        "tenant": deployed.tenant,
        "plugin": deployed.plugin,
        "hash": deployed.hash,
        "triggers": deployed.triggers.iter().map(|t| t.wit_name()).collect::<Vec<_>>(),
        "replaced": deployed.replaced,
        "origin": deployed.origin.as_str(),
        "live": true,
        "errors": failures(&deployed.failures),
    });
    Ok((status, Json(body)).into_response())
}

pub(super) async fn delete_plugin(
    State(api): State<Api>,
    TenantAndPlugin(tenant, plugin): TenantAndPlugin,
    headers: HeaderMap,
) -> Result<Response, RequestError> {
    let (tenant, _by) = deployer(&api, &tenant, &headers)?;
    api.tenants.delete_plugin(&tenant.name, &plugin).await?;
    let plugin = plugin.strip_suffix(".wasm").unwrap_or(&plugin);
    Ok(Json(json!({"tenant": tenant.name, "plugin": plugin, "deleted": true})).into_response())
}

pub(super) async fn put_config(
    State(api): State<Api>,
    super::PathName(tenant): super::PathName,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RequestError> {
    // With a shared store, the operator creates a tenant by deploying its
    // first tenant.toml.
    let creates = api.tenants.shared().is_some()
        && is_tenant_name(&tenant)
        && api.tenants.tenant(&tenant).is_none()
        && operator_deploys(&api, &headers);
    let by = if creates {
        None
    } else {
        Some(deployer(&api, &tenant, &headers)?)
    };
    let bytes = read_body_within(
        &headers,
        body,
        TENANT_FILE_MAX_BYTES as usize,
        ", the largest tenant.toml",
    )
    .await?;
    let deployed = match by {
        Some((tenant, by)) => api.tenants.deploy_config(&tenant.name, &bytes, &by).await?,
        None => api.tenants.create_tenant(&tenant, &bytes).await?,
    };
    Ok(Json(json!({
        "tenant": deployed.tenant,
        "config": "tenant.toml",
        "live": true,
        "errors": failures(&deployed.failures),
    }))
    .into_response())
}

/// `DELETE /v1/tenants/{tenant}`: the operator removes a tenant from the
/// shared store; every host stops serving it.
pub(super) async fn delete_tenant(
    State(api): State<Api>,
    super::PathName(tenant): super::PathName,
    headers: HeaderMap,
) -> Result<Response, RequestError> {
    check_tenant_name(&tenant)?;
    if !operator_deploys(&api, &headers) {
        return Err(RequestError::new(
            StatusCode::UNAUTHORIZED,
            RequestErrorKind::Unauthorized,
            "removing a tenant takes an operator key (serve --admin-keys)",
        ));
    }
    api.tenants.remove_tenant(&tenant).await?;
    Ok(Json(json!({"tenant": tenant, "deleted": true})).into_response())
}

/// The tenant's files that do not load, as `GET .../plugins` lists them.
fn failures(failures: &[LoadFailure]) -> Vec<serde_json::Value> {
    failures
        .iter()
        .map(|f| json!({"plugin": f.plugin, "error": f.error, "servingPrevious": f.serving_previous}))
        .collect()
}
