//! The applied state, shared between the state machine (writer) and the API
//! (readers).
//!
//! Readers take the read lock only long enough to copy out what they answer
//! with; the state machine takes the write lock per applied batch. The digest
//! is computed on demand and cached for the applied index it was taken at.

use super::{KeelNode, LogId, NodeId};
use keel_kernel::{KernelState, StateDigest};
use openraft::StoredMembership;
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Everything the state machine has applied.
#[derive(Debug, Clone, Default)]
pub struct AppliedState {
    /// The kernel state.
    pub kernel: KernelState,
    /// Last applied log id (`None` before the first entry).
    pub last_applied: Option<LogId>,
    /// Last applied membership.
    pub membership: StoredMembership<NodeId, KeelNode>,
}

impl AppliedState {
    /// The revision: index of the last applied entry, 0 before any.
    pub fn revision(&self) -> u64 {
        self.last_applied.map_or(0, |id| id.index)
    }
}

/// Shared handle to the applied state.
#[derive(Debug)]
pub struct SharedState {
    applied: RwLock<AppliedState>,
    digest_cache: Mutex<Option<(u64, StateDigest)>>,
    /// The applied revision, announced after each batch so watchers wake
    /// without polling.
    applied_revision: tokio::sync::watch::Sender<u64>,
}

impl Default for SharedState {
    fn default() -> Self {
        SharedState {
            applied: RwLock::default(),
            digest_cache: Mutex::default(),
            applied_revision: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl SharedState {
    /// Read access. A poisoned lock means a writer panicked mid-apply, which
    /// is fatal; readers still see the last consistent state the guard holds.
    pub fn read(&self) -> RwLockReadGuard<'_, AppliedState> {
        self.applied.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Write access, for the state machine only.
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, AppliedState> {
        self.applied.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Announces the current applied revision to [`Self::applied_changes`]
    /// subscribers; the state machine calls it after every batch it applies
    /// or snapshot it installs, once the write lock is released.
    pub(crate) fn announce_applied(&self) {
        let revision = self.read().revision();
        self.applied_revision.send_replace(revision);
    }

    /// A receiver that changes whenever the applied revision does.
    pub fn applied_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied_revision.subscribe()
    }

    /// `(applied_index, digest)` of the current state, cached per index.
    pub fn digest(&self) -> (u64, StateDigest) {
        let applied = self.read();
        let revision = applied.revision();
        let mut cache = self.digest_cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((cached_revision, digest)) = *cache
            && cached_revision == revision
        {
            return (revision, digest);
        }
        let digest = applied.kernel.digest();
        *cache = Some((revision, digest));
        (revision, digest)
    }
}
