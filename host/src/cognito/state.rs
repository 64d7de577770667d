//! Dataset state: what a tenant's syncs stored, per identity pool,
//! identity, dataset and key, and the pure rule that applies a sync's
//! outcome to it. Both engines keep [`DatasetState`] values and call
//! [`apply`] inside their own transaction (redb) or compare-and-set loop
//! (NATS), so the rule is written once.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One dataset of one identity of one identity pool of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DatasetId {
    pub tenant: String,
    pub pool: String,
    pub identity: String,
    pub dataset: String,
}

impl DatasetId {
    /// A key that sorts a tenant's datasets together: the four names as a
    /// JSON array, so no name can run into another.
    pub fn key(&self) -> String {
        serde_json::to_string(&[&self.tenant, &self.pool, &self.identity, &self.dataset])
            .unwrap_or_default()
    }

    /// The prefix of [`DatasetId::key`] shared by a tenant's datasets.
    pub fn tenant_prefix(tenant: &str) -> String {
        let mut prefix = serde_json::to_string(&[tenant]).unwrap_or_default();
        prefix.pop(); // the closing `]`
        prefix.push(',');
        prefix
    }

    /// Reads a key back.
    pub fn from_key(key: &str) -> Option<DatasetId> {
        let [tenant, pool, identity, dataset]: [String; 4] = serde_json::from_str(key).ok()?;
        Some(DatasetId {
            tenant,
            pool,
            identity,
            dataset,
        })
    }
}

/// `replace` or `remove`, as Cognito names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Replace,
    Remove,
}

/// One key of a dataset as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyState {
    pub key: String,
    /// None once removed: a removal is kept, with its sync count.
    pub value: Option<String>,
    /// Grows by one on every change of this key.
    pub sync_count: u64,
    /// When the host applied the change (ms since the Unix epoch).
    pub last_modified_date: u64,
    /// When the device says it changed it (the record's own
    /// `deviceLastModifiedDate` if the event carries one, else the sync).
    pub device_last_modified_date: u64,
    pub op: Op,
}

/// A dataset as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetState {
    /// Grows by one on every sync that changed something.
    pub sync_count: u64,
    pub last_modified_date: u64,
    pub records: BTreeMap<String, KeyState>,
    /// The NATS engine's outbox: the record of the last applied sync while
    /// it is not yet known to be published (see `streams::nats`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<serde_json::Value>,
}

/// One key as a sync left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub key: String,
    /// None: removed (`op: remove`, or a null value).
    pub value: Option<String>,
    pub device_last_modified: Option<u64>,
}

/// What one sync changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub dataset: DatasetId,
    /// The dataset's sync count after this sync.
    pub sync_count: u64,
    pub last_modified_date: u64,
    /// The keys that changed, as they are now, in key order.
    pub changed: Vec<KeyState>,
}

/// Applies a sync's outcome to `state` at `now`. A key changes when it is
/// new or its value (or removal) differs from the stored one; keys the
/// sync left as stored do not count. Returns None when nothing changed:
/// the state is as it was and nothing is published.
pub fn apply(
    dataset: &DatasetId,
    state: &mut DatasetState,
    updates: &[Update],
    now: u64,
) -> Option<Applied> {
    let mut changed = Vec::new();
    for update in updates {
        let op = if update.value.is_some() {
            Op::Replace
        } else {
            Op::Remove
        };
        let previous = state.records.get(&update.key);
        if previous.is_some_and(|p| p.value == update.value && p.op == op) {
            continue;
        }
        let key = KeyState {
            key: update.key.clone(),
            value: update.value.clone(),
            sync_count: previous.map_or(0, |p| p.sync_count) + 1,
            last_modified_date: now,
            device_last_modified_date: update.device_last_modified.unwrap_or(now),
            op,
        };
        state.records.insert(key.key.clone(), key.clone());
        changed.push(key);
    }
    if changed.is_empty() {
        return None;
    }
    // Keys come from a JSON object: each appears once.
    state.sync_count += 1;
    state.last_modified_date = now;
    Some(Applied {
        dataset: dataset.clone(),
        sync_count: state.sync_count,
        last_modified_date: now,
        changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> DatasetId {
        DatasetId {
            tenant: "t".into(),
            pool: "p".into(),
            identity: "i".into(),
            dataset: "d".into(),
        }
    }

    fn update(key: &str, value: Option<&str>) -> Update {
        Update {
            key: key.into(),
            value: value.map(str::to_owned),
            device_last_modified: None,
        }
    }

    #[test]
    fn counts_grow_per_change_and_removals_stay() {
        let mut state = DatasetState::default();
        let first = apply(
            &id(),
            &mut state,
            &[update("a", Some("1")), update("b", None)],
            10,
        )
        .unwrap();
        assert_eq!(first.sync_count, 1);
        assert_eq!(first.changed.len(), 2);
        assert_eq!(first.changed[1].op, Op::Remove);
        // The same values again change nothing.
        assert!(apply(&id(), &mut state, &[update("a", Some("1"))], 20).is_none());
        let second = apply(&id(), &mut state, &[update("a", Some("2"))], 30).unwrap();
        assert_eq!(second.sync_count, 2);
        assert_eq!(second.changed[0].sync_count, 2);
        assert_eq!(state.records["b"].sync_count, 1);
        assert_eq!(state.records["b"].value, None);
    }

    #[test]
    fn keys_sort_by_tenant() {
        let key = id().key();
        assert!(key.starts_with(&DatasetId::tenant_prefix("t")));
        assert!(!key.starts_with(&DatasetId::tenant_prefix("t2")));
        assert_eq!(DatasetId::from_key(&key), Some(id()));
    }
}
