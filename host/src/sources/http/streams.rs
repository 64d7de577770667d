//! The stream routes:
//!
//! - `POST /v1/tenants/{tenant}/streams/{stream}/records` appends records
//!   (bodies in [`crate::streams::ingest`]), creating the stream on first
//!   use, and answers like PutRecords (SQS: like SendMessageBatch) once
//!   they are durable;
//! - `GET` on the same path reads them back (`?after=SEQ&limit=N`), each as
//!   the Lambda record a consumer would deliver;
//! - `GET /v1/tenants/{tenant}/event-sources` lists the tenant's mappings
//!   with their counts and lag.
//!
//! Same bearer-key auth as the events route. Errors are
//! `{"error": {"kind", "message"}}`.

use super::events::authorized_tenant;
use super::Api;
use crate::sources::streams::lag;
use crate::streams::engine::{EngineError, StoredRecord};
use crate::streams::ingest::{self, IngestError};
use crate::streams::records::{self, shard_id};
use crate::streams::{is_stream_name, Counters, StreamId, StreamKind, Streams};
use crate::tenant::Tenant;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

/// Records one GET returns by default, and at most.
pub const DEFAULT_READ_LIMIT: usize = 100;
pub const MAX_READ_LIMIT: usize = 1_000;

/// A refused request's answer (boxed: a `Response` is large).
type Refused = Box<Response>;

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Refused {
    Box::new(
        (
            status,
            Json(json!({"error": {"kind": kind, "message": message.into()}})),
        )
            .into_response(),
    )
}

fn enabled(api: &Api) -> Result<&Arc<Streams>, Refused> {
    api.streams.as_ref().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "streams-off",
            "this host keeps no streams",
        )
    })
}

/// The tenant and stream a path names, after auth.
fn target(
    api: &Api,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    headers: &HeaderMap,
) -> Result<(Arc<Tenant>, StreamId), Refused> {
    let Path((tenant, stream)) = path.map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            format!("the path cannot be read: {}", e.body_text()),
        )
    })?;
    let tenant =
        authorized_tenant(api, &tenant, headers).map_err(|e| Box::new(e.into_response()))?;
    if !is_stream_name(&stream) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid-stream-name",
            format!("{stream:?} is not a stream name: 1 to 128 letters, digits, -, _ or ., starting with a letter or digit"),
        ));
    }
    let id = StreamId::new(&tenant.name, &stream);
    Ok((tenant, id))
}

fn engine_error(e: EngineError) -> Refused {
    match e {
        EngineError::KindMismatch { .. } => {
            error(StatusCode::CONFLICT, "kind-mismatch", e.to_string())
        }
        EngineError::StorageQuota { .. } => error(
            StatusCode::INSUFFICIENT_STORAGE,
            "stored-bytes-quota",
            format!("{e}: [quotas] stream-stored-mib"),
        ),
        EngineError::Store(_) => {
            tracing::error!(error = %e, "stream store failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store-failed",
                e.to_string(),
            )
        }
    }
}

fn ingest_error(e: IngestError) -> Refused {
    let status = match e.kind {
        "kind-mismatch" => StatusCode::CONFLICT,
        "record-too-large" | "payload-too-large" => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e.kind, e.message)
}

/// The body, within [`ingest::MAX_BODY_BYTES`].
async fn read_records_body(headers: &HeaderMap, body: Body) -> Result<Value, Refused> {
    let limit = ingest::MAX_BODY_BYTES;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!("the body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    crate::sources::json::parse_strict(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// The kind of a stream: as created, or as a mapping or failure
/// destination of the tenant names it, or as the body is written.
async fn kind_for(
    streams: &Streams,
    tenant: &Tenant,
    id: &StreamId,
    body: &Value,
) -> Result<StreamKind, Refused> {
    if let Some(info) = streams.engine.stream(id).await.map_err(engine_error)? {
        return Ok(info.kind);
    }
    let mapped = tenant.event_sources.iter().find_map(|m| {
        if m.stream == id.stream {
            Some(m.kind)
        } else if m.on_failure.as_deref() == Some(id.stream.as_str()) {
            Some(StreamKind::Sqs)
        } else {
            None
        }
    });
    mapped.or_else(|| ingest::kind_of_body(body)).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid-records",
            "cannot tell the stream's kind from the body: send Kinesis PutRecords {\"Records\": [{\"Data\", \"PartitionKey\"}]}, \
             SQS {\"Messages\": [{\"Body\"}]}, DynamoDB {\"Records\": [{\"eventName\", \"Keys\", \"NewImage\"}]} or an S3 notification",
        )
    })
}

pub(super) async fn append(
    State(api): State<Api>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match append_records(&api, path, &headers, body).await {
        Ok(response) => response,
        Err(refused) => *refused,
    }
}

async fn append_records(
    api: &Api,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refused> {
    let streams = enabled(api)?;
    let (tenant, id) = target(api, path, headers)?;
    let body = read_records_body(headers, body).await?;
    let kind = kind_for(streams, &tenant, &id, &body).await?;
    let new = ingest::parse(kind, &body).map_err(ingest_error)?;
    let rate = tenant.quotas.stream_records_per_second;
    if !streams.take_rate(&tenant.name, new.len(), rate) {
        return Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-requests",
            format!("the tenant may append {rate} records per second to its streams, its [quotas] stream-records-per-second; try again shortly"),
        ));
    }
    let appended = streams
        .engine
        .append(&id, kind, new, tenant.quotas.stream_stored_bytes)
        .await
        .map_err(engine_error)?;
    streams.waker(&id).notify_waiters();
    let answer = match kind {
        StreamKind::Sqs => {
            let bodies = body["Messages"].as_array().cloned().unwrap_or_default();
            let successful: Vec<Value> = appended
                .iter()
                .zip(bodies)
                .enumerate()
                .map(|(i, (a, message))| {
                    let text = message["Body"].as_str().unwrap_or_default();
                    json!({
                        "Id": message.get("Id").cloned().unwrap_or(json!(i.to_string())),
                        "MessageId": records::message_id(&id, a.seq),
                        "MD5OfMessageBody": records::md5_hex(text.as_bytes()),
                        "SequenceNumber": a.seq.to_string(),
                    })
                })
                .collect();
            json!({"Successful": successful, "Failed": []})
        }
        _ => json!({
            "FailedRecordCount": 0,
            "Records": appended.iter().map(|a| json!({
                "SequenceNumber": a.seq.to_string(),
                "ShardId": shard_id(a.partition),
            })).collect::<Vec<_>>(),
        }),
    };
    Ok(Json(answer).into_response())
}

/// `after` and `limit` from the query; anything else is an error.
fn read_query(query: Option<&str>) -> Result<(u64, usize), Refused> {
    let (mut after, mut limit) = (0u64, DEFAULT_READ_LIMIT);
    let bad = |m: String| error(StatusCode::BAD_REQUEST, "invalid-request", m);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "after" => {
                after = value
                    .parse()
                    .map_err(|_| bad(format!("after={value:?} is not a sequence number")))?
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_READ_LIMIT).contains(n))
                    .ok_or_else(|| {
                        bad(format!(
                            "limit={value:?} is not a number from 1 to {MAX_READ_LIMIT}"
                        ))
                    })?
            }
            other => {
                return Err(bad(format!(
                    "unknown query parameter {other:?}; this route takes after and limit"
                )))
            }
        }
    }
    Ok((after, limit))
}

pub(super) async fn read(
    State(api): State<Api>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let result: Result<Response, Refused> = async {
        let streams = enabled(&api)?;
        let (_, id) = target(&api, path, &headers)?;
        let (after, limit) = read_query(query.as_deref())?;
        let Some(info) = streams.engine.stream(&id).await.map_err(engine_error)? else {
            return Err(error(
                StatusCode::NOT_FOUND,
                "unknown-stream",
                format!("the tenant has no stream {:?}", id.stream),
            ));
        };
        let mut found: Vec<StoredRecord> = Vec::new();
        for partition in 0..info.kind.partitions() {
            found.extend(
                streams
                    .engine
                    .read(&id, partition, after, limit)
                    .await
                    .map_err(engine_error)?,
            );
        }
        found.sort_by_key(|r| r.seq);
        found.truncate(limit);
        let next = found.last().map_or(after, |r| r.seq);
        let listed: Vec<Value> = found
            .iter()
            .map(|r| {
                json!({
                    "sequenceNumber": r.seq.to_string(),
                    "shardId": shard_id(r.partition),
                    "arrivedAt": records::iso8601(r.arrived_ms),
                    "record": records::lambda_record(&id, info.kind, r, None),
                })
            })
            .collect();
        Ok(Json(json!({
            "stream": id.stream,
            "kind": info.kind,
            "lastSequenceNumber": info.last_seq.to_string(),
            "records": listed,
            "nextAfter": next.to_string(),
        }))
        .into_response())
    }
    .await;
    match result {
        Ok(response) => response,
        Err(refused) => *refused,
    }
}

pub(super) async fn event_sources(
    State(api): State<Api>,
    super::PathName(tenant): super::PathName,
    headers: HeaderMap,
) -> Response {
    let result: Result<Response, Refused> = async {
        let streams = enabled(&api)?;
        let tenant =
            authorized_tenant(&api, &tenant, &headers).map_err(|e| Box::new(e.into_response()))?;
        let mut listed = Vec::new();
        for m in &tenant.event_sources {
            let counters = streams.counters(&tenant.name, &m.name);
            let lag = lag(streams, &tenant.name, m).await.map_err(engine_error)?;
            listed.push(json!({
                "name": m.name,
                "stream": m.stream,
                "kind": m.kind,
                "enabled": m.enabled,
                "batchSize": m.batch_size,
                "onFailure": m.on_failure,
                "recordsIn": Counters::get(&counters.records_in),
                "processed": Counters::get(&counters.processed),
                "failed": Counters::get(&counters.failed),
                "retried": Counters::get(&counters.retried),
                "sentToFailureDestination": Counters::get(&counters.sent_to_failure_destination),
                "lag": lag,
            }));
        }
        let stored = streams
            .engine
            .tenant_bytes(&tenant.name)
            .await
            .map_err(engine_error)?;
        Ok(Json(json!({
            "tenant": tenant.name,
            "storedBytes": stored,
            "storedBytesQuota": tenant.quotas.stream_stored_bytes,
            "eventSources": listed,
        }))
        .into_response())
    }
    .await;
    match result {
        Ok(response) => response,
        Err(refused) => *refused,
    }
}
