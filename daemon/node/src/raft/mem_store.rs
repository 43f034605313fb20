//! [`MemLogStore`]: the Raft log, vote and log pointers in memory, and
//! [`open_memory`], which pairs it with an in-memory state machine.
//!
//! Same semantics as the RocksDB store behind the same openraft traits, minus
//! durability: for tests and deterministic simulation, where RocksDB stays
//! out (it does real I/O on real threads). Entries are kept decoded; nothing
//! is serialised.

use super::log_store::index_span;
use super::shared_state::SharedState;
use super::state_machine::KernelStateMachine;
use super::{LogId, NodeId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, OptionalSend, RaftLogReader, Vote};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct MemLog {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

/// An in-memory Raft log store. Clones share the same log; they serve as
/// log readers.
#[derive(Debug, Clone, Default)]
pub struct MemLogStore {
    log: Arc<Mutex<MemLog>>,
}

impl MemLogStore {
    /// An empty log.
    pub fn new() -> Self {
        MemLogStore::default()
    }

    /// The log. No code holding the lock can panic halfway through a change
    /// (plain map and field updates), so a poisoned lock still guards a
    /// consistent log.
    fn lock(&self) -> MutexGuard<'_, MemLog> {
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The in-memory log store and a state machine over `shared` that keeps its
/// snapshots in memory.
pub fn open_memory(shared: Arc<SharedState>) -> (MemLogStore, KernelStateMachine) {
    (MemLogStore::new(), KernelStateMachine::in_memory(shared))
}

impl RaftLogReader<TypeConfig> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        // `BTreeMap::range` panics on inverted ranges; an empty answer is the
        // same as the RocksDB store's.
        let Some((start, end)) = index_span(&range) else {
            return Ok(Vec::new());
        };
        let log = self.lock();
        let entries = match end {
            Some(end) if end <= start => return Ok(Vec::new()),
            Some(end) => log.entries.range(start..end),
            None => log.entries.range(start..),
        };
        Ok(entries.map(|(_, entry)| entry.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let log = self.lock();
        let last_present = log.entries.last_key_value().map(|(_, entry)| entry.log_id);
        Ok(LogState { last_purged_log_id: log.last_purged, last_log_id: last_present.max(log.last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut log = self.lock();
            for entry in entries {
                log.entries.insert(entry.log_id.index, entry);
            }
        }
        // Memory is as durable as this store gets.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        drop(self.lock().entries.split_off(&log_id.index));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut log = self.lock();
        log.last_purged = Some(log_id);
        log.entries = match log_id.index.checked_add(1) {
            Some(first_kept) => log.entries.split_off(&first_kept),
            None => BTreeMap::new(),
        };
        Ok(())
    }
}
