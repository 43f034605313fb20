//! [`RocksLogStore`]: the Raft log, vote and log pointers in RocksDB.
//!
//! ```text
//!  openraft core ──append/truncate/purge/save_vote──► RocksLogStore ──WriteBatch──► cf "logs"
//!  replication   ◄──────────try_get_log_entries────── (clone, reads)               cf "store_meta"
//! ```
//!
//! Durability follows openraft's contract: a vote or an append is synced to
//! the write-ahead log before the call returns, and the append's flush
//! callback fires only after that. Truncation is synced too (it is rare and
//! must not resurface a conflicting suffix); purges and the committed pointer
//! are not, since losing them only means re-reading or re-applying, and any
//! later synced write makes them durable anyway (one WAL, written in order).
//!
//! The committed log id is persisted so a restart re-applies committed entries
//! after the last snapshot before serving. Everything read back is decoded
//! through [`super::codec`]: corrupt bytes become a [`StorageError`], never a
//! panic.

use super::codec::{self, DecodeError};
use super::rocks_db::{CF_LOGS, CF_STORE_META, RaftDb};
use super::{LogId, NodeId, StorageError, TypeConfig};
use crate::limits::LOG_ENTRY_BYTES_MAX;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, OptionalSend, RaftLogReader, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// Format version of log entry records (`[version] + bincode(Entry)`).
/// Version 2: `Proposal` carries an idempotency key. Version 3: `Proposal`
/// carries the evaluation semantics it was proposed under. Version 4:
/// `Proposal` carries its actor (who asked), commands and events gained
/// token revocation. Older records are refused (a data dir from before must
/// be recreated), as older snapshots are.
pub const LOG_ENTRY_FORMAT_VERSION: u8 = 4;
/// Format version of the vote and log-pointer records in `store_meta`.
pub const STORE_META_FORMAT_VERSION: u8 = 1;
// A proposal that fits a gRPC message must always decode from the log.
const _: () = assert!(LOG_ENTRY_BYTES_MAX > keel_kernel::limits::GRPC_MESSAGE_BYTES_MAX as u64);
/// Largest vote or log-pointer record this store decodes.
const STORE_META_BYTES_MAX: u64 = 4 * 1024;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// The Raft log store over the shared [`RaftDb`]. Cloning is cheap; clones
/// serve as log readers for replication while the Raft core owns the writer.
#[derive(Debug, Clone)]
pub struct RocksLogStore {
    db: Arc<RaftDb>,
}

/// What is wrong with a log record, beyond a decode failure.
#[derive(Debug, thiserror::Error)]
enum LogRecordError {
    #[error("log key is {key_bytes} bytes; keys are 8-byte big-endian indexes")]
    BadKey { key_bytes: usize },
    #[error("log entry stored under index {key_index} carries index {entry_index}")]
    IndexMismatch { key_index: u64, entry_index: u64 },
    #[error("log has a hole: index {found} follows index {previous}")]
    Hole { previous: u64, found: u64 },
    #[error("log entry at index {index} does not decode")]
    Decode {
        index: u64,
        #[source]
        source: DecodeError,
    },
}

/// The 8-byte key of log index `index`.
pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of_key(key: &[u8]) -> Result<u64, LogRecordError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| LogRecordError::BadKey { key_bytes: key.len() })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Encodes one log entry as stored under its index.
pub fn encode_entry(entry: &Entry<TypeConfig>) -> Result<Vec<u8>, codec::EncodeError> {
    codec::encode(LOG_ENTRY_FORMAT_VERSION, entry)
}

/// Decodes a log entry record.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry<TypeConfig>, DecodeError> {
    codec::decode(LOG_ENTRY_FORMAT_VERSION, bytes, LOG_ENTRY_BYTES_MAX)
}

fn read_logs_error(error: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(AnyError::new(&error)).into()
}

fn write_logs_error(error: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&error)).into()
}

fn write_vote_error(error: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_vote(AnyError::new(&error)).into()
}

impl RocksLogStore {
    /// A log store over `db`, which [`RaftDb::open`] opened.
    pub fn new(db: Arc<RaftDb>) -> Self {
        RocksLogStore { db }
    }

    /// The database, for tests that corrupt it on purpose.
    #[cfg(test)]
    pub(crate) fn db(&self) -> &Arc<RaftDb> {
        &self.db
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, LogReadError> {
        let Some(bytes) = self.db.db().get_pinned_cf(self.db.cf(CF_STORE_META), key).map_err(LogReadError::Rocks)?
        else {
            return Ok(None);
        };
        codec::decode(STORE_META_FORMAT_VERSION, &bytes, STORE_META_BYTES_MAX).map(Some).map_err(LogReadError::Meta)
    }

    /// The log id of the last entry present, if any.
    fn last_present(&self) -> Result<Option<LogId>, LogReadError> {
        let db = self.db.db();
        let mut newest_first = db.iterator_cf(self.db.cf(CF_LOGS), IteratorMode::End);
        let Some(item) = newest_first.next() else {
            return Ok(None);
        };
        let (key, value) = item.map_err(LogReadError::Rocks)?;
        Ok(Some(decode_at(&key, &value)?.log_id))
    }
}

/// A read failure: RocksDB's, or a record that is not what it should be.
#[derive(Debug, thiserror::Error)]
enum LogReadError {
    #[error("RocksDB read failed")]
    Rocks(#[source] rocksdb::Error),
    #[error("store_meta record does not decode")]
    Meta(#[source] DecodeError),
    #[error(transparent)]
    Record(#[from] LogRecordError),
}

/// Decodes the record under `key` and checks it is the entry for that index.
fn decode_at(key: &[u8], value: &[u8]) -> Result<Entry<TypeConfig>, LogRecordError> {
    let index = index_of_key(key)?;
    let entry = decode_entry(value).map_err(|source| LogRecordError::Decode { index, source })?;
    if entry.log_id.index != index {
        return Err(LogRecordError::IndexMismatch { key_index: index, entry_index: entry.log_id.index });
    }
    Ok(entry)
}

/// `[start, end)` of a range of indexes; `end` is `None` when unbounded.
pub(crate) fn index_span<RB: RangeBounds<u64>>(range: &RB) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&start) => start,
        Bound::Excluded(&start) => start.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&end) => end.checked_add(1),
        Bound::Excluded(&end) => Some(end),
        Bound::Unbounded => None,
    };
    Some((start, end))
}

impl RaftLogReader<TypeConfig> for RocksLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let Some((start, end)) = index_span(&range) else {
            return Ok(Vec::new());
        };
        if end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        let start_key = log_key(start);
        let iter = self.db.db().iterator_cf(self.db.cf(CF_LOGS), IteratorMode::From(&start_key, Direction::Forward));
        let mut entries: Vec<Entry<TypeConfig>> = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(read_logs_error)?;
            let index = index_of_key(&key).map_err(read_logs_error)?;
            if end.is_some_and(|end| index >= end) {
                break;
            }
            if let Some(previous) = entries.last().map(|entry| entry.log_id.index)
                && previous.checked_add(1) != Some(index)
            {
                return Err(read_logs_error(LogRecordError::Hole { previous, found: index }));
            }
            entries.push(decode_at(&key, &value).map_err(read_logs_error)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for RocksLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.get_meta(KEY_LAST_PURGED).map_err(read_logs_error)?;
        let last_log_id = self.last_present().map_err(read_logs_error)?.max(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes = codec::encode(STORE_META_FORMAT_VERSION, vote).map_err(write_vote_error)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.db.cf(CF_STORE_META), KEY_VOTE, bytes);
        self.db.write(batch, true).await.map_err(write_vote_error)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(KEY_VOTE).map_err(|e| StorageIOError::read_vote(AnyError::new(&e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        let cf = self.db.cf(CF_STORE_META);
        match committed {
            Some(log_id) => {
                let bytes = codec::encode(STORE_META_FORMAT_VERSION, &log_id).map_err(write_logs_error)?;
                batch.put_cf(cf, KEY_COMMITTED, bytes);
            }
            None => batch.delete_cf(cf, KEY_COMMITTED),
        }
        self.db.write(batch, false).await.map_err(write_logs_error)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.get_meta(KEY_COMMITTED).map_err(read_logs_error)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.db.cf(CF_LOGS);
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes =
                encode_entry(&entry).map_err(|e| StorageIOError::write_log_entry(entry.log_id, AnyError::new(&e)))?;
            batch.put_cf(cf, log_key(entry.log_id.index), bytes);
        }
        // Returning the error (rather than reporting it through the callback)
        // makes openraft stop the node: a failed log write is fatal.
        self.db.write(batch, true).await.map_err(write_logs_error)?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        // `u64::MAX` itself is never a log index in practice (the end is exclusive).
        batch.delete_range_cf(self.db.cf(CF_LOGS), log_key(log_id.index), log_key(u64::MAX));
        self.db.write(batch, true).await.map_err(write_logs_error)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = codec::encode(STORE_META_FORMAT_VERSION, &log_id).map_err(write_logs_error)?;
        let mut batch = WriteBatch::default();
        // The pointer and the deletion land atomically, so the log never has a
        // hole between the last purged id and the first present entry.
        batch.put_cf(self.db.cf(CF_STORE_META), KEY_LAST_PURGED, bytes);
        match log_id.index.checked_add(1) {
            Some(end) => batch.delete_range_cf(self.db.cf(CF_LOGS), log_key(0), log_key(end)),
            None => batch.delete_range_cf(self.db.cf(CF_LOGS), log_key(0), log_key(u64::MAX)),
        }
        self.db.write(batch, false).await.map_err(write_logs_error)
    }
}
