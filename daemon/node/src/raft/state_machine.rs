//! [`KernelStateMachine`]: applies committed entries to the kernel and
//! builds, installs and serves snapshots of it.
//!
//! ```text
//!  committed entries ──apply──► SharedState (write lock per batch) ◄── API reads
//!                                  │  kernel.apply(index, proposal)
//!                                  ▼
//!                    build_snapshot ──► SnapshotStore (memory, + cf "sm" with RocksDB)
//!  leader's snapshot ──install_snapshot──► decode fully ──► persist ──► swap SharedState
//! ```
//!
//! The state machine persists snapshots, not every applied entry: `apply`
//! only changes memory. On restart, [`KernelStateMachine::open`] restores the
//! persisted snapshot and openraft re-applies the committed log after it (the
//! log store persists the committed id), so applied state never goes back past
//! what clients were told. The revision passed to the kernel is the entry's
//! log index.

use super::shared_state::{AppliedState, SharedState};
use super::snapshot_store::{
    KeelSnapshotMeta, SnapshotStore, StoredSnapshot, decode_snapshot_data, encode_snapshot_data,
};
use super::{ApplyResponse, KeelNode, LogId, NodeId, StorageError, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, Entry, EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, StorageIOError, StoredMembership,
};
use std::io::Cursor;
use std::sync::Arc;

/// The Raft state machine over [`keel_kernel::KernelState`].
#[derive(Debug)]
pub struct KernelStateMachine {
    shared: Arc<SharedState>,
    snapshots: SnapshotStore,
}

/// Builds snapshots of the applied state; openraft runs it in its own task.
#[derive(Debug)]
pub struct KernelSnapshotBuilder {
    shared: Arc<SharedState>,
    snapshots: SnapshotStore,
}

impl KernelStateMachine {
    /// A state machine over `shared` that keeps snapshots in memory only.
    /// `shared` is used as it is (normally fresh).
    pub fn in_memory(shared: Arc<SharedState>) -> Self {
        KernelStateMachine { shared, snapshots: SnapshotStore::in_memory() }
    }

    /// A state machine over `shared` with snapshots in `snapshots`. If a
    /// snapshot is current there, `shared` is replaced by its state.
    pub async fn open(shared: Arc<SharedState>, snapshots: SnapshotStore) -> Result<Self, StorageError> {
        if let Some(snapshot) = snapshots.current().await {
            let restored = decode_snapshot_data(&snapshot.data, &snapshot.meta).map_err(|e| {
                StorageError::from(StorageIOError::read_snapshot(Some(snapshot.meta.signature()), AnyError::new(&e)))
            })?;
            *shared.write() = restored;
            shared.announce_applied();
            tracing::info!(
                snapshot_id = %snapshot.meta.snapshot_id,
                revision = shared.read().revision(),
                "state machine restored from snapshot"
            );
        }
        Ok(KernelStateMachine { shared, snapshots })
    }

    /// The applied state this state machine writes.
    pub fn shared(&self) -> &Arc<SharedState> {
        &self.shared
    }
}

/// Applies one entry to `applied`, advancing `last_applied`.
fn apply_entry(applied: &mut AppliedState, entry: Entry<TypeConfig>) -> ApplyResponse {
    applied.last_applied = Some(entry.log_id);
    match entry.payload {
        EntryPayload::Blank => ApplyResponse::NoCommand,
        EntryPayload::Normal(proposal) => match applied.kernel.apply(entry.log_id.index, &proposal) {
            Ok(done) => ApplyResponse::Applied(done),
            Err(rejection) => ApplyResponse::Rejected(rejection),
        },
        EntryPayload::Membership(membership) => {
            applied.membership = StoredMembership::new(Some(entry.log_id), membership);
            ApplyResponse::NoCommand
        }
    }
}

impl RaftStateMachine<TypeConfig> for KernelStateMachine {
    type SnapshotBuilder = KernelSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership<NodeId, KeelNode>), StorageError> {
        let applied = self.shared.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // One write lock per batch: readers see whole batches, never a prefix.
        let responses = {
            let mut applied = self.shared.write();
            entries.into_iter().map(|entry| apply_entry(&mut applied, entry)).collect()
        };
        self.shared.announce_applied();
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        KernelSnapshotBuilder { shared: Arc::clone(&self.shared), snapshots: self.snapshots.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &KeelSnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        // Decode and check everything before touching any state, so a bad
        // snapshot is an error and never half-installed.
        let restored = decode_snapshot_data(&data, meta).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e)))
        })?;
        self.snapshots.save_installed(StoredSnapshot { meta: meta.clone(), data }).await?;
        *self.shared.write() = restored;
        self.shared.announce_applied();
        tracing::info!(snapshot_id = %meta.snapshot_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self
            .snapshots
            .current()
            .await
            .map(|stored| Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for KernelSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Encode under the read lock so data, last_applied and membership are
        // one consistent point; apply waits for the encoding only.
        let (data, last_applied, membership) = {
            let applied = self.shared.read();
            let data = encode_snapshot_data(&applied)
                .map_err(|e| StorageError::from(StorageIOError::read_state_machine(AnyError::new(&e))))?;
            (data, applied.last_applied, applied.membership.clone())
        };
        let build_number = self.snapshots.next_build_number().await;
        let snapshot_id = match last_applied {
            Some(log_id) => format!("{}-{}-{build_number}", log_id.leader_id.term, log_id.index),
            None => format!("0-0-{build_number}"),
        };
        let meta = KeelSnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        let is_current = self.snapshots.save_built(StoredSnapshot { meta: meta.clone(), data: data.clone() }).await?;
        tracing::info!(snapshot_id = %meta.snapshot_id, is_current, "snapshot built");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}
