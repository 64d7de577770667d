//! The Cognito Streams routes (see `crate::cognito`):
//!
//! - `GET /v1/tenants/{tenant}/datasets/{identityId}/{datasetName}`: the
//!   dataset's records with their sync counts, removals included
//!   (`?identityPoolId=` names the pool; without it, the one pool that
//!   has this identity's dataset, or 400 if several do);
//! - `POST /v1/tenants/{tenant}/bulk-publish` starts a bulk publish (202),
//!   `GET` tells its status (Cognito's GetBulkPublishDetails), as the
//!   engine keeps it for every host;
//! - `GET /v1/tenants/{tenant}/sync-payloads/{payload}?expires=&signature=`:
//!   the full records of an oversized sync record, without credentials
//!   but only with the HMAC signature the record's URL carries, until it
//!   expires (403 otherwise).
//!
//! The first two take the same bearer-key auth as the other `/v1` routes.

// The helpers answer with the route's own error response, built once;
// boxing it would only move the allocation.
#![allow(clippy::result_large_err)]

use super::events::authorized_tenant;
use super::Api;
use crate::cognito::bulk::{self, BulkError};
use crate::cognito::state::DatasetId;
use crate::cognito::{sync_records, Cognito};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

type Params = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"kind": kind, "message": message.into()}})),
    )
        .into_response()
}

fn enabled(api: &Api) -> Result<Arc<Cognito>, Response> {
    api.dispatcher.cognito().cloned().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "streams-off",
            "this host keeps no dataset state",
        )
    })
}

fn store_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "dataset store failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "store-failed",
        e.to_string(),
    )
}

fn params(query: Params) -> Result<HashMap<String, String>, Response> {
    query.map(|Query(q)| q).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            format!("the query cannot be read: {}", e.body_text()),
        )
    })
}

fn either(result: Result<Response, Response>) -> Response {
    result.unwrap_or_else(|e| e)
}

pub(super) async fn dataset(
    State(api): State<Api>,
    Path((tenant, identity, dataset)): Path<(String, String, String)>,
    query: Params,
    headers: HeaderMap,
) -> Response {
    either(
        async {
            let cognito = enabled(&api)?;
            let tenant =
                authorized_tenant(&api, &tenant, &headers).map_err(IntoResponse::into_response)?;
            let query = params(query)?;
            let engine = &cognito.streams.engine;
            let pool = match query.get("identityPoolId") {
                Some(pool) => pool.clone(),
                None => {
                    let all = engine.datasets(&tenant.name).await.map_err(store_error)?;
                    let pools: Vec<String> = all
                        .into_iter()
                        .filter(|d| d.identity == identity && d.dataset == dataset)
                        .map(|d| d.pool)
                        .collect();
                    match &pools[..] {
                        [one] => one.clone(),
                        [] => return Err(not_found(&identity, &dataset)),
                        _ => {
                            return Err(error(
                                StatusCode::BAD_REQUEST,
                                "identity-pool-required",
                                format!(
                                    "{} identity pools have this dataset; name one with ?identityPoolId=",
                                    pools.len()
                                ),
                            ))
                        }
                    }
                }
            };
            let id = DatasetId {
                tenant: tenant.name.clone(),
                pool,
                identity: identity.clone(),
                dataset: dataset.clone(),
            };
            let Some(state) = engine.dataset(&id).await.map_err(store_error)? else {
                return Err(not_found(&identity, &dataset));
            };
            let keys: Vec<_> = state.records.into_values().collect();
            Ok(Json(json!({
                "identityPoolId": id.pool,
                "identityId": id.identity,
                "datasetName": id.dataset,
                "syncCount": state.sync_count,
                "lastModifiedDate": state.last_modified_date,
                "records": sync_records(&keys),
            }))
            .into_response())
        }
        .await,
    )
}

fn not_found(identity: &str, dataset: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown-dataset",
        format!("no sync stored the dataset {dataset:?} of {identity:?}"),
    )
}

pub(super) async fn start_bulk_publish(
    State(api): State<Api>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    either(
        async {
            let cognito = enabled(&api)?;
            let tenant =
                authorized_tenant(&api, &tenant, &headers).map_err(IntoResponse::into_response)?;
            match bulk::start(cognito, tenant).await {
                Ok(status) => Ok((StatusCode::ACCEPTED, Json(status)).into_response()),
                Err(e @ BulkError::NotConfigured) => Err(error(
                    StatusCode::BAD_REQUEST,
                    "cognito-streams-off",
                    e.to_string(),
                )),
                Err(e @ BulkError::InProgress) => Err(error(
                    StatusCode::CONFLICT,
                    "bulk-publish-in-progress",
                    e.to_string(),
                )),
                Err(e @ BulkError::TooSoon { .. }) => Err(error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "bulk-publish-too-soon",
                    e.to_string(),
                )),
                Err(BulkError::Store(e)) => Err(store_error(e)),
            }
        }
        .await,
    )
}

pub(super) async fn bulk_publish_status(
    State(api): State<Api>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    either(
        async {
            let cognito = enabled(&api)?;
            let tenant =
                authorized_tenant(&api, &tenant, &headers).map_err(IntoResponse::into_response)?;
            let status = bulk::status(&cognito, &tenant.name)
                .await
                .map_err(store_error)?;
            Ok(Json(status).into_response())
        }
        .await,
    )
}

pub(super) async fn sync_payload(
    State(api): State<Api>,
    Path((tenant, payload)): Path<(String, String)>,
    query: Params,
) -> Response {
    either(
        async {
            let cognito = enabled(&api)?;
            let query = params(query)?;
            let forbidden = || {
                error(
                    StatusCode::FORBIDDEN,
                    "invalid-signature",
                    "the URL's signature is not valid, or it expired",
                )
            };
            let expires = query
                .get("expires")
                .and_then(|e| e.parse::<u64>().ok())
                .ok_or_else(forbidden)?;
            let signature = query.get("signature").ok_or_else(forbidden)?;
            let valid = cognito
                .check_url(&tenant, &payload, expires, signature)
                .await
                .map_err(store_error)?;
            if !valid {
                return Err(forbidden());
            }
            let records: Option<Value> = cognito
                .streams
                .engine
                .sync_payload(&tenant, &payload)
                .await
                .map_err(store_error)?;
            let records = records.ok_or_else(|| {
                error(
                    StatusCode::NOT_FOUND,
                    "unknown-payload",
                    "the payload is no longer kept",
                )
            })?;
            Ok(Json(json!({ "kinesisSyncRecords": records })).into_response())
        }
        .await,
    )
}
