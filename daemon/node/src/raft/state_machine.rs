//! [`KernelStateMachine`]: applies committed entries to the kernel and
//! builds, installs and serves snapshots of it.
//!
//! ```text
//!  committed entries ──apply──► SharedState (a new state published per batch) ◄── API reads
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
use crate::judge::{JudgedVerdicts, NodeJudge};
use keel_kernel::judge::{self, Verdict};
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
    judge: NodeJudge,
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
        KernelStateMachine { shared, snapshots: SnapshotStore::in_memory(), judge: NodeJudge::default() }
    }

    /// A state machine over `shared` with snapshots in `snapshots`. If a
    /// snapshot is current there, `shared` is replaced by its state.
    pub async fn open(shared: Arc<SharedState>, snapshots: SnapshotStore) -> Result<Self, StorageError> {
        if let Some(snapshot) = snapshots.current().await {
            let restored = decode_snapshot_data(&snapshot.data, &snapshot.meta).map_err(|e| {
                StorageError::from(StorageIOError::read_snapshot(Some(snapshot.meta.signature()), AnyError::new(&e)))
            })?;
            shared.publish(restored);
            tracing::info!(
                snapshot_id = %snapshot.meta.snapshot_id,
                revision = shared.read().revision(),
                "state machine restored from snapshot"
            );
        }
        Ok(KernelStateMachine { shared, snapshots, judge: NodeJudge::default() })
    }

    /// This state machine judging third-party evaluations with `judge`.
    pub fn with_judge(mut self, judge: NodeJudge) -> Self {
        self.judge = judge;
        self
    }

    /// Works out every judgement `entries` will ask for, before the state
    /// lock is taken. An entry proposed under other evaluation semantics, or
    /// a judgement the judge cannot answer, stops the state machine (fatal):
    /// a member never applies an entry it might judge differently.
    async fn prejudge(&self, entries: &[Entry<TypeConfig>]) -> Result<JudgedVerdicts, StorageError> {
        let mut verdicts = JudgedVerdicts::default();
        for entry in entries {
            let EntryPayload::Normal(proposal) = &entry.payload else {
                continue;
            };
            if !judge::needs_judgement(&proposal.command) {
                continue;
            }
            if proposal.semantics_version != judge::SEMANTICS_VERSION {
                return Err(fatal(
                    entry.log_id,
                    format!(
                        "entry {} was proposed under evaluation semantics {} but this build judges under {}; \
                         run the same keeld version on every member",
                        entry.log_id,
                        proposal.semantics_version,
                        judge::SEMANTICS_VERSION
                    ),
                ));
            }
            for judgement in judge::judgements_of(&proposal.command) {
                if verdicts.contains(&judgement) {
                    continue;
                }
                let verdict = self.judge.judge_for_apply(&judgement).await;
                if let Verdict::Unavailable { detail } = &verdict {
                    return Err(fatal(entry.log_id, format!("entry {} could not be judged: {detail}", entry.log_id)));
                }
                verdicts.insert(judgement, verdict);
            }
        }
        Ok(verdicts)
    }

    /// The applied state this state machine writes.
    pub fn shared(&self) -> &Arc<SharedState> {
        &self.shared
    }
}

/// A fatal apply error: logged once here, then openraft stops this member.
fn fatal(log_id: LogId, message: String) -> StorageError {
    tracing::error!(%log_id, "{message}; this member stops applying and reports not ready");
    StorageError::from(StorageIOError::apply(log_id, AnyError::error(message)))
}

/// Applies one entry to `applied`, advancing `last_applied`. Third-party
/// evaluations are answered from `verdicts`; if one is missing there the
/// entry is not applied (the kernel refused it, changing nothing) and the
/// caller stops.
fn apply_entry(applied: &mut AppliedState, entry: Entry<TypeConfig>, verdicts: &JudgedVerdicts) -> ApplyResponse {
    let log_id = entry.log_id;
    let response = match entry.payload {
        EntryPayload::Blank => ApplyResponse::NoCommand,
        EntryPayload::Normal(proposal) => match applied.kernel.apply_judged(log_id.index, &proposal, verdicts) {
            Ok(done) => ApplyResponse::Applied(done),
            Err(_) if verdicts.take_missed() => return ApplyResponse::NoCommand,
            Err(rejection) => ApplyResponse::Rejected(rejection),
        },
        EntryPayload::Membership(membership) => {
            applied.membership = StoredMembership::new(Some(log_id), membership);
            ApplyResponse::NoCommand
        }
    };
    applied.last_applied = Some(log_id);
    response
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
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        // Third-party evaluations run first, outside the lock (in a child
        // process on keeld): they may take a while and must not stall readers.
        let verdicts = self.prejudge(&entries).await?;
        // The batch applies to a clone of the published state (O(1): the
        // kernel's maps are persistent), published whole: readers see whole
        // batches, never a prefix, and never wait for one.
        let mut responses = Vec::with_capacity(entries.len());
        let mut missed = None;
        let mut applied = AppliedState::clone(&self.shared.read());
        for entry in entries {
            let log_id = entry.log_id;
            responses.push(apply_entry(&mut applied, entry, &verdicts));
            if applied.last_applied != Some(log_id) {
                missed = Some(log_id);
                break;
            }
        }
        self.shared.publish(applied);
        match missed {
            Some(log_id) => Err(fatal(log_id, format!("entry {log_id} asked for a judgement that was not worked out"))),
            None => Ok(responses),
        }
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
        self.shared.publish(restored);
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
        // One published state is one consistent point; encoding it holds no
        // lock, so apply and readers go on meanwhile.
        let started = std::time::Instant::now();
        let applied = self.shared.read();
        let (last_applied, membership) = (applied.last_applied, applied.membership.clone());
        let data = tokio::task::spawn_blocking(move || encode_snapshot_data(&applied))
            .await
            .map_err(|e| StorageError::from(StorageIOError::read_state_machine(AnyError::new(&e))))?
            .map_err(|e| StorageError::from(StorageIOError::read_state_machine(AnyError::new(&e))))?;
        let build_number = self.snapshots.next_build_number().await;
        let snapshot_id = match last_applied {
            Some(log_id) => format!("{}-{}-{build_number}", log_id.leader_id.term, log_id.index),
            None => format!("0-0-{build_number}"),
        };
        let meta = KeelSnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        let is_current = self.snapshots.save_built(StoredSnapshot { meta: meta.clone(), data: data.clone() }).await?;
        let bytes = u64::try_from(data.len()).unwrap_or(u64::MAX);
        let build_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.shared.record_snapshot(last_applied.map_or(0, |log_id| log_id.index), bytes, build_ms);
        tracing::info!(snapshot_id = %meta.snapshot_id, is_current, bytes, build_ms, "snapshot built");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}
