//! Cognito Streams: every sync a tenant's SyncTrigger chain accepts is
//! applied to the tenant's dataset state and published, as one record in
//! the seed's shape, to the Kinesis stream `[cognito-streams]` names.
//!
//! - [`state`]: the dataset state and the rule that applies a sync.
//! - [`Cognito`]: what the dispatcher calls after a sync's chain
//!   succeeded ([`Cognito::after_sync`]), the payload URLs of oversized
//!   records (HMAC-signed, expiring), and bulk publish.
//!
//! Publish, or it did not happen: the state change and the record are
//! written by the engine in one step (`Datasets::apply_sync`); if that
//! fails the caller learns that the sync failed. Records are delivered
//! at least once (see the engines for their crash windows).

pub mod bulk;
pub mod bulk_record;
pub mod state;

pub use crate::streams::cognito_streams::{CognitoStreams, CognitoStreamsFile};
use crate::streams::engine::{BuiltRecord, EngineError, NewRecord, SyncPublish, SyncWrite};
use crate::streams::{now_ms, StreamId, Streams};
use crate::tenant::Tenant;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use state::{Applied, DatasetId, KeyState, Op, Update};
use std::sync::Arc;

/// The engine secret that signs payload URLs.
const URL_KEY: &str = "cognito-payload-url-key";

/// Why a sync's outcome could not be kept or published.
#[derive(Debug, thiserror::Error)]
pub enum SyncStoreError {
    #[error("the sync event has no {0}")]
    Event(&'static str),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Dataset state and publishing, on the host's engine.
pub struct Cognito {
    pub streams: Arc<Streams>,
    /// The host's address as consumers reach it (`serve --public-url`):
    /// payload URLs start with it.
    pub public_url: String,
    key: tokio::sync::OnceCell<Vec<u8>>,
}

impl Cognito {
    pub fn new(streams: Arc<Streams>, public_url: &str) -> Cognito {
        Cognito {
            streams,
            public_url: public_url.trim_end_matches('/').to_owned(),
            key: tokio::sync::OnceCell::new(),
        }
    }

    /// Publishes, in the background, the records syncs left in an outbox
    /// (a host died between keeping a sync and publishing its record; see
    /// `Datasets::sweep_outboxes`). `serve` calls it once at start-up.
    pub fn sweep_outboxes(&self) {
        let engine = self.streams.engine.clone();
        tokio::spawn(async move {
            match engine.sweep_outboxes().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(records = n, "sync records left in outboxes published"),
                Err(error) => {
                    tracing::error!(%error, "publishing the records left in outboxes failed")
                }
            }
        });
    }

    async fn url_key(&self) -> Result<&[u8], EngineError> {
        let key = self
            .key
            .get_or_try_init(|| self.streams.engine.secret(URL_KEY))
            .await?;
        Ok(key)
    }

    /// Applies a sync the tenant's chain accepted (`event` as the chain
    /// left it) and publishes its record, in one engine step. An error
    /// means neither happened (or, on NATS, that the record waits in the
    /// outbox): the caller must learn that the sync failed.
    pub async fn after_sync(&self, tenant: &Tenant, event: &Value) -> Result<(), SyncStoreError> {
        let text = |field: &'static str| {
            event
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(SyncStoreError::Event(field))
        };
        let dataset = DatasetId {
            tenant: tenant.name.clone(),
            pool: text("identityPoolId")?,
            identity: text("identityId")?,
            dataset: text("datasetName")?,
        };
        let records = event
            .get("datasetRecords")
            .and_then(Value::as_object)
            .ok_or(SyncStoreError::Event("datasetRecords"))?;
        let updates = records
            .iter()
            .map(|(key, record)| update(key, record))
            .collect();
        let publish = match &tenant.cognito_streams {
            Some(config) if config.enabled => Some(self.publisher(tenant, config).await?),
            _ => None,
        };
        let wake = publish.as_ref().map(|p| p.stream.clone());
        let applied = self
            .streams
            .engine
            .apply_sync(SyncWrite {
                dataset,
                updates,
                now_ms: now_ms(),
                publish,
            })
            .await?;
        if let (Some(_), Some(stream)) = (applied, wake) {
            self.streams.waker(&stream).notify_waiters();
        }
        Ok(())
    }

    /// How a tenant's applied syncs become records.
    pub(crate) async fn publisher(
        &self,
        tenant: &Tenant,
        config: &CognitoStreams,
    ) -> Result<SyncPublish, EngineError> {
        let key = self.url_key().await?.to_vec();
        let (limit, ttl) = (config.inline_limit_bytes, config.payload_url_ttl);
        let base = self.public_url.clone();
        let tenant_name = tenant.name.clone();
        Ok(SyncPublish {
            stream: StreamId::new(&tenant.name, &config.stream),
            max_tenant_bytes: tenant.quotas.stream_stored_bytes,
            build: Arc::new(move |applied: &Applied| {
                build_record(applied, &applied.changed, limit, |payload| {
                    let expires = now_ms() + ttl.as_millis() as u64;
                    let signature = sign(&key, &tenant_name, payload, expires);
                    format!(
                        "{base}/v1/tenants/{tenant_name}/sync-payloads/{payload}?expires={expires}&signature={signature}"
                    )
                })
            }),
        })
    }

    /// Whether a payload URL's signature is ours and not expired.
    pub async fn check_url(
        &self,
        tenant: &str,
        payload: &str,
        expires: u64,
        signature: &str,
    ) -> Result<bool, EngineError> {
        let key = self.url_key().await?;
        // Compared in constant time by the MAC itself.
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
        mac.update(signed_text(tenant, payload, expires).as_bytes());
        let given = decode_hex(signature);
        let valid = given.is_some_and(|g| mac.verify_slice(&g).is_ok());
        Ok(valid && now_ms() <= expires)
    }
}

/// One key as the chain left it: `op: remove` or a null value removes.
fn update(key: &str, record: &Value) -> Update {
    let removed = record.get("op").and_then(Value::as_str) == Some("remove");
    let value = match record.get("newValue") {
        _ if removed => None,
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    Update {
        key: key.to_owned(),
        value,
        device_last_modified: record.get("deviceLastModifiedDate").and_then(Value::as_u64),
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Replace => "replace",
        Op::Remove => "remove",
    }
}

/// The seed's `kinesisSyncRecords` entries.
pub fn sync_records(keys: &[KeyState]) -> Value {
    keys.iter()
        .map(|k| {
            json!({
                "key": k.key,
                "value": k.value,
                "syncCount": k.sync_count,
                "lastModifiedDate": k.last_modified_date,
                "deviceLastModifiedDate": k.device_last_modified_date,
                "op": op_name(k.op),
            })
        })
        .collect()
}

/// The id of an applied sync's payload: the same for the same sync, on
/// any host, and unique per tenant (the dataset's key and sync count).
pub fn payload_id(dataset: &DatasetId, sync_count: u64) -> String {
    let digest = Sha256::digest(format!("{}/{sync_count}", dataset.key()).as_bytes());
    encode_hex(&digest[..16])
}

/// The stream record of `keys` of an applied sync (or of a bulk publish):
/// inline when its JSON fits `limit` bytes, else with the records behind
/// `url(payload id)`.
pub fn build_record(
    applied: &Applied,
    keys: &[KeyState],
    limit: usize,
    url: impl FnOnce(&str) -> String,
) -> BuiltRecord {
    let operation = if keys.iter().all(|k| k.op == Op::Remove) {
        "remove"
    } else {
        "replace"
    };
    let records = sync_records(keys);
    let mut body = json!({
        "identityPoolId": applied.dataset.pool,
        "identityId": applied.dataset.identity,
        "dataSetName": applied.dataset.dataset,
        "operation": operation,
        "kinesisSyncRecords": records,
        "lastModifiedDate": applied.last_modified_date,
        "syncCount": applied.sync_count,
        "payloadType": "Inline",
    });
    let mut payload = None;
    if body.to_string().len() > limit {
        let id = payload_id(&applied.dataset, applied.sync_count);
        body["kinesisSyncRecords"] = json!([]);
        body["kinesisSyncRecordsURL"] = json!(url(&id));
        body["payloadType"] = json!("S3Url");
        payload = Some((id, records));
    }
    let data = base64::engine::general_purpose::STANDARD.encode(body.to_string());
    BuiltRecord {
        record: NewRecord {
            key: applied.dataset.identity.clone(),
            body: json!({ "data": data }),
        },
        payload,
    }
}

fn signed_text(tenant: &str, payload: &str, expires: u64) -> String {
    format!("{tenant}\n{payload}\n{expires}")
}

/// The hex HMAC-SHA256 of a payload URL.
pub fn sign(key: &[u8], tenant: &str, payload: &str, expires: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(signed_text(tenant, payload, expires).as_bytes());
    encode_hex(&mac.finalize().into_bytes())
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(value: &str) -> Applied {
        Applied {
            dataset: DatasetId {
                tenant: "t".into(),
                pool: "us-east-1:p".into(),
                identity: "us-east-1:i".into(),
                dataset: "d".into(),
            },
            sync_count: 3,
            last_modified_date: 5,
            changed: vec![KeyState {
                key: "k".into(),
                value: Some(value.into()),
                sync_count: 2,
                last_modified_date: 5,
                device_last_modified_date: 4,
                op: Op::Replace,
            }],
        }
    }

    fn decoded(built: &BuiltRecord) -> Value {
        let data = built.record.body["data"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn small_records_are_inline_and_large_ones_behind_a_url() {
        let a = applied("v");
        let built = build_record(&a, &a.changed, 1000, |_| unreachable!());
        let body = decoded(&built);
        assert_eq!(body["payloadType"], "Inline");
        assert_eq!(body["kinesisSyncRecords"][0]["syncCount"], 2);
        assert_eq!(built.record.key, "us-east-1:i");
        let a = applied(&"x".repeat(2000));
        let built = build_record(&a, &a.changed, 1000, |id| format!("u/{id}"));
        let body = decoded(&built);
        assert_eq!(body["payloadType"], "S3Url");
        let (id, records) = built.payload.unwrap();
        assert_eq!(body["kinesisSyncRecordsURL"], format!("u/{id}"));
        assert_eq!(records[0]["value"].as_str().unwrap().len(), 2000);
    }

    #[test]
    fn signatures_bind_tenant_payload_and_expiry() {
        let s = sign(b"k", "t", "p", 1);
        assert_ne!(s, sign(b"k", "t", "p", 2));
        assert_ne!(s, sign(b"k", "u", "p", 1));
        assert_ne!(s, sign(b"other", "t", "p", 1));
        assert_eq!(decode_hex(&s).map(|b| b.len()), Some(32));
    }
}
