//! Tenants' plugins and `tenant.toml` files kept in NATS JetStream, so
//! that several hosts serve the same chains (`serve --shared-plugins`).
//!
//! | what | where in JetStream |
//! |---|---|
//! | a tenant exists | the key-value bucket `TF_TENANTS`, key `<tenant>.tenant` |
//! | its `tenant.toml` | `TF_TENANTS`, key `<tenant>.config`: `{"sha256", "size"}` of the file's blob |
//! | a plugin | `TF_TENANTS`, key `<tenant>.plugins.<name>` (the name encoded as one token, as stream names are): `{"sha256", "size"}` |
//! | a file's bytes (a blob) | the stream `TF_PLUGIN_BLOBS`, subjects `tf-blobs.<sha256>.<chunk>`: 256 KiB chunks, one message per subject |
//!
//! Why chunks of our own rather than JetStream's object store: a plugin
//! is far larger than a message may be (the Python plugin is 18.5 MB
//! against NATS's default `max_payload` of 1 MiB), and content-addressed
//! chunks make every write idempotent: two hosts storing the same bytes
//! at once publish the same messages on the same subjects (one kept per
//! subject), while the object store names chunks by a random id and
//! purges the previous object's chunks on a second `put` of one name,
//! which can pull chunks from under a reader. The bucket entry is written
//! only once every chunk is acknowledged, so no host ever sees a
//! reference to a blob it cannot read whole. Both streams are created
//! here (not with `create_key_value`, which asks the server for account
//! fields Debian's nats-server 2.9.10 does not send).
//!
//! Limits: blobs are kept when nothing refers to them any more (a
//! replaced or deleted plugin's bytes stay in `TF_PLUGIN_BLOBS`; the same
//! bytes in many tenants are stored once). Purge the stream to reclaim
//! them when no deploy is running. Anyone who can publish to the server
//! can write these subjects: the NATS server's own accounts and
//! permissions are the boundary (see SECURITY.md).

use super::engine::EngineError;
use super::nats::{bucket_config, token, untoken};
use crate::encoding::sha256_hex;
use async_nats::jetstream::{self, kv, stream};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The bucket of tenants and their files.
pub const TENANTS: &str = "TF_TENANTS";
/// The stream of file contents, by SHA-256.
pub const BLOBS: &str = "TF_PLUGIN_BLOBS";
/// Bytes per blob message: well under NATS's default `max_payload` (1 MiB).
pub const CHUNK_BYTES: usize = 256 * 1024;
/// The file name `tenant.toml` has in a tenant's folder.
const CONFIG_FILE: &str = "tenant.toml";

fn store<E: std::fmt::Display>(error: E) -> EngineError {
    EngineError::Store(format!("NATS: {error}"))
}

/// A file's contents, by reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    pub size: u64,
}

/// One change in the bucket, as a watch delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The tenant was created (`true`) or removed (`false`).
    Tenant { tenant: String, exists: bool },
    /// A file of the tenant (`tenant.toml`, or `<name>.wasm`) was set to
    /// these bytes, or removed (`None`).
    File {
        tenant: String,
        file: String,
        to: Option<FileRef>,
    },
    /// A key this host does not know (a newer host's), or a value it
    /// cannot read: skipped.
    Other,
}

/// A change and the bucket revision it was written at.
#[derive(Debug, Clone)]
pub struct Revision {
    pub revision: u64,
    /// Changes after this one the server had when it sent this one: a
    /// read of the whole bucket is complete at one with none pending.
    pub pending: u64,
    pub change: Change,
}

/// The key of a tenant's file (`tenant.toml` or `<name>.wasm`).
fn file_key(tenant: &str, file: &str) -> String {
    match file.strip_suffix(".wasm") {
        Some(stem) if file != CONFIG_FILE => format!("{tenant}.plugins.{}", token(stem)),
        _ => format!("{tenant}.config"),
    }
}

fn tenant_key(tenant: &str) -> String {
    format!("{tenant}.tenant")
}

/// What a key names: the tenant, and its file (none: the tenant itself).
fn parse_key(key: &str) -> Option<(String, Option<String>)> {
    let (tenant, rest) = key.split_once('.')?;
    let file = match rest {
        "tenant" => None,
        "config" => Some(CONFIG_FILE.to_owned()),
        _ => {
            let stem = untoken(rest.strip_prefix("plugins.")?)?;
            if stem.is_empty() {
                return None;
            }
            Some(format!("{stem}.wasm"))
        }
    };
    Some((tenant.to_owned(), file))
}

/// What a watched entry says.
fn revision_of(entry: kv::Entry) -> Result<Revision, EngineError> {
    let other = Revision {
        revision: entry.revision,
        pending: entry.delta,
        change: Change::Other,
    };
    let Some((tenant, file)) = parse_key(&entry.key) else {
        tracing::warn!(key = %entry.key, "ignoring an unknown key in {TENANTS}");
        return Ok(other);
    };
    let present = entry.operation == kv::Operation::Put;
    let change = match file {
        None => Change::Tenant {
            tenant,
            exists: present,
        },
        Some(file) if !present => Change::File {
            tenant,
            file,
            to: None,
        },
        Some(file) => match serde_json::from_slice::<FileRef>(&entry.value) {
            Ok(to) => Change::File {
                tenant,
                file,
                to: Some(to),
            },
            Err(error) => {
                tracing::warn!(key = %entry.key, %error, "ignoring a value that is not a file reference");
                return Ok(other);
            }
        },
    };
    Ok(Revision { change, ..other })
}

fn blob_subject(sha256: &str, chunk: u64) -> String {
    format!("tf-blobs.{sha256}.{chunk}")
}

fn chunks_of(size: u64) -> u64 {
    size.div_ceil(CHUNK_BYTES as u64)
}

/// The shared store of tenants' files.
pub struct SharedStore {
    js: jetstream::Context,
    kv: kv::Store,
    blobs: stream::Stream,
}

impl SharedStore {
    /// Connects to the server at `url` (`nats://HOST:PORT`) and opens the
    /// bucket and the blob stream, creating them on first use. The client
    /// reconnects by itself when the server restarts; operations fail
    /// meanwhile.
    pub async fn connect(url: &str) -> Result<SharedStore, EngineError> {
        let client = super::nats::connect_client(url, async_nats::ConnectOptions::new()).await?;
        let js = jetstream::new(client);
        js.get_or_create_stream(bucket_config(TENANTS))
            .await
            .map_err(|e| store(format!("cannot create the bucket {TENANTS}: {e}")))?;
        let kv = js.get_key_value(TENANTS).await.map_err(store)?;
        let blobs = js
            .get_or_create_stream(stream::Config {
                name: BLOBS.to_owned(),
                subjects: vec!["tf-blobs.>".to_owned()],
                max_messages_per_subject: 1,
                allow_direct: true,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| store(format!("cannot create the stream {BLOBS}: {e}")))?;
        Ok(SharedStore { js, kv, blobs })
    }

    /// The bucket's last revision: every change up to it is in a watch
    /// from revision 1.
    pub async fn last_revision(&self) -> Result<u64, EngineError> {
        let stream = self
            .js
            .get_stream(format!("KV_{TENANTS}"))
            .await
            .map_err(store)?;
        Ok(stream.cached_info().state.last_sequence)
    }

    /// Every change from `revision` on (1: the whole bucket, each key's
    /// latest value, then what comes), in order; keys the host does not
    /// know come as [`Change::Other`]. Ends, or yields an error, when the connection to
    /// the server is lost for good.
    pub async fn watch_from(
        &self,
        revision: u64,
    ) -> Result<BoxStream<'static, Result<Revision, EngineError>>, EngineError> {
        let watch = tokio::time::timeout(
            Duration::from_secs(10),
            self.kv.watch_all_from_revision(revision.max(1)),
        )
        .await
        .map_err(|_| store("no watch of the bucket within 10 s"))?
        .map_err(store)?;
        Ok(watch
            .map(|entry| revision_of(entry.map_err(store)?))
            .boxed())
    }

    /// Stores `bytes` as a blob (nothing is sent if it is stored already)
    /// and returns its reference.
    pub async fn put_blob(&self, bytes: &[u8]) -> Result<FileRef, EngineError> {
        let file = FileRef {
            sha256: sha256_hex(bytes),
            size: bytes.len() as u64,
        };
        let chunks = chunks_of(file.size);
        if chunks > 0
            && self
                .blobs
                .direct_get_last_for_subject(blob_subject(&file.sha256, chunks - 1))
                .await
                .is_ok()
        {
            return Ok(file);
        }
        // Published together, acknowledged after: one round trip per
        // window of chunks rather than per chunk.
        let mut acks = Vec::new();
        for (i, chunk) in bytes.chunks(CHUNK_BYTES).enumerate() {
            let ack = self
                .js
                .publish(blob_subject(&file.sha256, i as u64), chunk.to_vec().into())
                .await
                .map_err(store)?;
            acks.push(ack);
            if acks.len() >= 16 {
                for ack in acks.drain(..) {
                    ack.await.map_err(store)?;
                }
            }
        }
        for ack in acks {
            ack.await.map_err(store)?;
        }
        Ok(file)
    }

    /// The bytes of a blob, checked against its hash; refused past
    /// `max_bytes` before anything is read.
    pub async fn fetch(&self, file: &FileRef, max_bytes: u64) -> Result<Vec<u8>, EngineError> {
        if file.size > max_bytes {
            return Err(EngineError::Store(format!(
                "the blob {} has {} bytes, over the {max_bytes} this file may have",
                file.sha256, file.size
            )));
        }
        let mut bytes = Vec::with_capacity(file.size as usize);
        for chunk in 0..chunks_of(file.size) {
            let message = self
                .blobs
                .direct_get_last_for_subject(blob_subject(&file.sha256, chunk))
                .await
                .map_err(|e| {
                    store(format!(
                        "cannot read chunk {chunk} of the blob {}: {e}",
                        file.sha256
                    ))
                })?;
            bytes.extend_from_slice(&message.payload);
            if bytes.len() as u64 > file.size {
                break;
            }
        }
        if bytes.len() as u64 != file.size || sha256_hex(&bytes) != file.sha256 {
            return Err(EngineError::Store(format!(
                "the blob {} read back does not match its hash",
                file.sha256
            )));
        }
        Ok(bytes)
    }

    /// Whether the tenant exists in the store.
    pub async fn tenant_exists(&self, tenant: &str) -> Result<bool, EngineError> {
        Ok(self
            .kv
            .get(tenant_key(tenant))
            .await
            .map_err(store)?
            .is_some())
    }

    /// Creates the tenant (with no files) if it does not exist.
    pub async fn create_tenant(&self, tenant: &str) -> Result<(), EngineError> {
        if !self.tenant_exists(tenant).await? {
            self.kv
                .put(tenant_key(tenant), b"{}".to_vec().into())
                .await
                .map_err(store)?;
        }
        Ok(())
    }

    /// Sets a file of the tenant (`tenant.toml` or `<name>.wasm`) to a
    /// stored blob (see [`SharedStore::put_blob`]).
    pub async fn set_file(
        &self,
        tenant: &str,
        file: &str,
        to: &FileRef,
    ) -> Result<(), EngineError> {
        let value = serde_json::to_vec(to).map_err(store)?;
        self.kv
            .put(file_key(tenant, file), value.into())
            .await
            .map_err(store)?;
        Ok(())
    }

    /// Removes a file of the tenant; whether it was there.
    pub async fn remove_file(&self, tenant: &str, file: &str) -> Result<bool, EngineError> {
        let key = file_key(tenant, file);
        if self.kv.get(key.as_str()).await.map_err(store)?.is_none() {
            return Ok(false);
        }
        self.kv.delete(key).await.map_err(store)?;
        Ok(true)
    }

    /// Removes the tenant and every file of it; whether it was there.
    /// `tenant.toml` goes first, so that while the rest goes the tenant
    /// has no keys and refuses every request, then its plugins, then the
    /// tenant itself.
    pub async fn remove_tenant(&self, tenant: &str) -> Result<bool, EngineError> {
        if !self.tenant_exists(tenant).await? {
            return Ok(false);
        }
        let prefix = format!("{tenant}.");
        let mut keys: Vec<String> = self
            .kv
            .keys()
            .await
            .map_err(store)?
            .filter_map(|key| {
                let prefix = prefix.clone();
                async move { key.ok().filter(|k| k.starts_with(&prefix)) }
            })
            .collect()
            .await;
        let config = file_key(tenant, CONFIG_FILE);
        let marker = tenant_key(tenant);
        keys.retain(|k| *k != config && *k != marker);
        for key in std::iter::once(config).chain(keys).chain([marker]) {
            self.kv.delete(key).await.map_err(store)?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_tenant_and_file() {
        for file in [
            "tenant.toml",
            "10-deny.wasm",
            "20 allow é.wasm",
            "a.b_c.wasm",
        ] {
            let key = file_key("acme", file);
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "{key}"
            );
            assert_eq!(
                parse_key(&key),
                Some(("acme".to_owned(), Some(file.to_owned())))
            );
        }
        assert_eq!(parse_key("acme.tenant"), Some(("acme".to_owned(), None)));
        assert_eq!(parse_key("acme.other"), None);
        assert_eq!(parse_key("acme"), None);
    }

    #[test]
    fn blobs_are_cut_in_chunks_under_a_message() {
        assert_eq!(chunks_of(0), 0);
        assert_eq!(chunks_of(1), 1);
        assert_eq!(chunks_of(CHUNK_BYTES as u64), 1);
        assert_eq!(chunks_of(CHUNK_BYTES as u64 + 1), 2);
        assert_eq!(chunks_of(18_500_000), 71);
    }
}
