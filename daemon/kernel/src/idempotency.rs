//! [`IdempotencyTable`]: replicated deduplication of retried mutations.
//!
//! ```text
//!  Proposal{idempotency_key: K, command: C}
//!     K unknown (or expired) ──► apply C ──Ok──► record K → {sha256(C), revision, outcome}
//!     K known, same sha256(C) ──► answer the recorded outcome and revision; change nothing
//!     K known, other sha256(C) ──► IDEMPOTENCY_KEY_REUSED; change nothing
//! ```
//!
//! A key is remembered for [`IDEMPOTENCY_WINDOW_MS`] of leader-stamped time,
//! and the table is bounded in keys and bytes (the oldest records go first),
//! so a client may retry after a timeout — on any node, across a leader change
//! — without the command applying twice. Only successful applies are
//! recorded: a rejection changes nothing, so retrying it is already safe.

use crate::command::Command;
use crate::limits::{IDEMPOTENCY_KEYS_MAX, IDEMPOTENCY_RECORDS_BYTES_MAX, IDEMPOTENCY_WINDOW_MS, Limit};
use crate::persistent::{Map, Set};
use crate::rejection::Rejection;
use crate::state::Outcome;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What is remembered of one keyed mutation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// SHA-256 of the command's log encoding.
    pub request_sha256: [u8; 32],
    /// Revision of the entry that applied it.
    pub revision: u64,
    /// Leader-stamped time of that entry, Unix ms.
    pub recorded_ms: u64,
    /// What it answered.
    pub outcome: Outcome,
    /// Bytes charged against [`IDEMPOTENCY_RECORDS_BYTES_MAX`].
    charged_bytes: u64,
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Not seen inside the window: apply the command.
    Fresh,
    /// The same request was applied before: answer this.
    Replay(&'a IdempotencyRecord),
}

/// Keyed records, with an index by revision for eviction in log order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyTable {
    /// Persistent, like every large part of `KernelState`.
    /// Keys are shared strings: a write after a publish copies the tree
    /// nodes on its path, keys included (encoded as plain strings).
    records: Map<Arc<str>, Arc<IdempotencyRecord>>,
    by_revision: Set<(u64, Arc<str>)>,
    charged_bytes: u64,
}

/// Checks a key's shape: 1..=[`IDEMPOTENCY_KEY_BYTES_MAX`] printable ASCII bytes.
pub fn validate_key(key: &str) -> Result<(), Rejection> {
    if key.is_empty() {
        return Err(Rejection::FieldRequired { field: "idempotency_key".into() });
    }
    Limit::IdempotencyKeyBytes.check(key.len())?;
    if !key.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(Rejection::FieldInvalid {
            field: "idempotency_key".into(),
            problem: "must be printable ASCII without spaces".into(),
        });
    }
    Ok(())
}

/// SHA-256 of the command's bincode encoding — the same bytes on every node.
pub fn request_sha256(command: &Command) -> [u8; 32] {
    // Commands are plain data; encoding into a Vec cannot fail.
    let bytes = bincode::serialize(command).unwrap_or_default();
    Sha256::digest(bytes).into()
}

impl IdempotencyTable {
    /// Looks `key` up for `command` at `at_ms`.
    pub(crate) fn lookup(&self, key: &str, command: &Command, at_ms: u64) -> Result<Lookup<'_>, Rejection> {
        validate_key(key)?;
        let Some(record) = self.records.get(key) else {
            return Ok(Lookup::Fresh);
        };
        if is_expired(record, at_ms) {
            return Ok(Lookup::Fresh);
        }
        if record.request_sha256 != request_sha256(command) {
            return Err(Rejection::IdempotencyKeyReused { key: key.to_owned(), revision: record.revision });
        }
        Ok(Lookup::Replay(record.as_ref()))
    }

    /// Remembers that `command` under `key` applied at `revision` with `outcome`.
    pub(crate) fn record(&mut self, key: &str, command: &Command, revision: u64, at_ms: u64, outcome: &Outcome) {
        self.remove(key);
        let charged_bytes = bincode::serialized_size(outcome)
            .unwrap_or(0)
            .saturating_add(u64::try_from(key.len()).unwrap_or(u64::MAX))
            .saturating_add(RECORD_OVERHEAD_BYTES);
        let record = IdempotencyRecord {
            request_sha256: request_sha256(command),
            revision,
            recorded_ms: at_ms,
            outcome: outcome.clone(),
            charged_bytes,
        };
        self.charged_bytes = self.charged_bytes.saturating_add(charged_bytes);
        let key: Arc<str> = Arc::from(key);
        self.by_revision.insert((revision, Arc::clone(&key)));
        self.records.insert(key, Arc::new(record));
    }

    /// Forgets expired records and, while over a bound, the oldest ones.
    pub(crate) fn retain(&mut self, at_ms: u64) {
        while let Some((_, key)) = self.by_revision.get_min() {
            let is_over = self.records.len() > IDEMPOTENCY_KEYS_MAX
                || self.charged_bytes > IDEMPOTENCY_RECORDS_BYTES_MAX as u64
                || self.records.get(key).is_none_or(|record| is_expired(record, at_ms));
            if !is_over {
                break;
            }
            let key = Arc::clone(key);
            self.remove(&key);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.records.remove(key) {
            self.by_revision.remove(&(old.revision, Arc::from(key)));
            self.charged_bytes = self.charged_bytes.saturating_sub(old.charged_bytes);
        }
    }

    /// Number of remembered keys.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// Fixed bytes charged per record on top of its outcome and key.
const RECORD_OVERHEAD_BYTES: u64 = 128;

fn is_expired(record: &IdempotencyRecord, at_ms: u64) -> bool {
    record.recorded_ms.saturating_add(IDEMPOTENCY_WINDOW_MS) <= at_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::IDEMPOTENCY_KEY_BYTES_MAX;

    fn command(version: u64) -> Command {
        Command::RevokeKey { key_id: format!("k{version}"), signatures: Vec::new() }
    }

    fn outcome() -> Outcome {
        Outcome::TrustBootstrapped { created: true }
    }

    #[test]
    fn replays_match_on_content_and_expire_with_the_window() {
        let mut table = IdempotencyTable::default();
        assert_eq!(table.lookup("k", &command(1), 0), Ok(Lookup::Fresh));
        table.record("k", &command(1), 7, 1_000, &outcome());
        match table.lookup("k", &command(1), 1_000 + IDEMPOTENCY_WINDOW_MS - 1) {
            Ok(Lookup::Replay(record)) => assert_eq!(record.revision, 7),
            other => panic!("expected a replay, got {other:?}"),
        }
        assert!(matches!(
            table.lookup("k", &command(2), 1_000),
            Err(Rejection::IdempotencyKeyReused { revision: 7, .. })
        ));
        assert_eq!(table.lookup("k", &command(2), 1_000 + IDEMPOTENCY_WINDOW_MS), Ok(Lookup::Fresh));
        table.retain(1_000 + IDEMPOTENCY_WINDOW_MS);
        assert!(table.is_empty());
        assert_eq!(table.charged_bytes, 0);
        assert!(table.by_revision.is_empty());
    }

    #[test]
    fn the_oldest_records_go_first_when_over_the_key_bound() {
        let mut table = IdempotencyTable::default();
        for revision in 1..=(IDEMPOTENCY_KEYS_MAX as u64 + 3) {
            table.record(&format!("key-{revision}"), &command(revision), revision, 0, &outcome());
            table.retain(0);
        }
        assert_eq!(table.len(), IDEMPOTENCY_KEYS_MAX);
        assert_eq!(table.lookup("key-3", &command(9), 0), Ok(Lookup::Fresh), "evicted");
        assert!(table.lookup("key-4", &command(9), 0).is_err(), "still remembered");
    }

    #[test]
    fn keys_are_short_printable_ascii() {
        assert!(validate_key("retry-2f9c").is_ok());
        assert!(matches!(validate_key(""), Err(Rejection::FieldRequired { .. })));
        assert!(matches!(validate_key("has space"), Err(Rejection::FieldInvalid { .. })));
        assert!(matches!(
            validate_key(&"k".repeat(IDEMPOTENCY_KEY_BYTES_MAX + 1)),
            Err(Rejection::LimitExceeded { .. })
        ));
    }
}
