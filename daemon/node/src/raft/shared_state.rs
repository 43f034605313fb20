//! The applied state, published by the state machine (writer) to the API
//! and the snapshot builder (readers).
//!
//! ```text
//!  apply(batch): next = (*published).clone()   O(1): persistent maps (keel_kernel::persistent)
//!                apply every entry to next
//!                published = Arc::new(next)     the lock is held for the pointer swap only
//!  readers:      read() -> Arc<AppliedState>    an immutable whole batch, never a prefix
//!  digester:     once writes pause for DIGEST_QUIET_MS (or, under steady writes, every
//!                DIGEST_STALE_MAX_MS) hashes the latest published state on a blocking
//!                thread; digest() returns the last (revision, digest) pair, never computing one
//! ```

use super::{KeelNode, LogId, NodeId};
use keel_kernel::{KernelState, StateDigest};
use openraft::StoredMembership;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

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

/// Least time between two digests of a changing state: hashing the state is
/// O(state), so it runs at most this often.
pub const DIGEST_INTERVAL_MIN_MS: u64 = 200;
/// A digest is worked out once no batch has been applied for this long…
pub const DIGEST_QUIET_MS: u64 = 50;
/// …or, under writes that never pause, once the last digest is this old.
pub const DIGEST_STALE_MAX_MS: u64 = 2_000;
/// And at most this share of one core: after a digest that took `t`, the
/// next waits at least `t × DIGEST_PAUSE_PER_WORK` (a large state under
/// steady writes is digested less often, never at the writes' expense:
/// three members on two cores hashing a 100 000-tenant state every 200 ms
/// cost a quarter of the write throughput).
pub const DIGEST_PAUSE_PER_WORK: u32 = 19;

/// Shared handle to the published state.
#[derive(Debug)]
pub struct SharedState {
    published: RwLock<Arc<AppliedState>>,
    /// The last digest worked out, with the revision it is of.
    digest: Mutex<(u64, StateDigest)>,
    /// The applied revision, announced after each batch so watchers and the
    /// digester wake without polling.
    applied_revision: tokio::sync::watch::Sender<u64>,
    /// What the snapshot builder last did.
    snapshots: Mutex<SnapshotStats>,
}

/// The snapshot builder's record, for `/metrics` and `/diagz`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotStats {
    /// Snapshots built since start.
    pub builds_total: u64,
    /// Bytes of the last one.
    pub last_bytes: u64,
    /// How long encoding and storing the last one took, ms.
    pub last_build_ms: u64,
    /// The revision the last one is of.
    pub last_revision: u64,
}

impl Default for SharedState {
    fn default() -> Self {
        let empty = AppliedState::default();
        let digest = (0, empty.kernel.digest());
        SharedState {
            published: RwLock::new(Arc::new(empty)),
            digest: Mutex::new(digest),
            applied_revision: tokio::sync::watch::Sender::new(0),
            snapshots: Mutex::default(),
        }
    }
}

impl SharedState {
    /// Records a snapshot built at `revision`: `bytes` long, `build_ms` to build.
    pub fn record_snapshot(&self, revision: u64, bytes: u64, build_ms: u64) {
        let mut stats = self.snapshots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *stats = SnapshotStats {
            builds_total: stats.builds_total.saturating_add(1),
            last_bytes: bytes,
            last_build_ms: build_ms,
            last_revision: revision,
        };
    }

    /// What the snapshot builder last did.
    pub fn snapshot_stats(&self) -> SnapshotStats {
        *self.snapshots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The latest published state: an immutable whole batch. Holding it
    /// blocks nothing.
    pub fn read(&self) -> Arc<AppliedState> {
        Arc::clone(&self.published.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Publishes `next` (the state machine only) and announces its revision.
    pub(crate) fn publish(&self, next: AppliedState) {
        let revision = next.revision();
        *self.published.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(next);
        self.applied_revision.send_replace(revision);
    }

    /// A receiver that changes whenever the applied revision does.
    pub fn applied_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied_revision.subscribe()
    }

    /// `(revision, digest)`: the last digest the digester worked out and the
    /// revision it is of (≤ the applied revision; equal once writes pause for
    /// `DIGEST_INTERVAL_MIN_MS`). Never computes one.
    pub fn digest(&self) -> (u64, StateDigest) {
        *self.digest.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `(revision, digest)` of the latest published state, digesting it here
    /// if need be: O(state), for tests and tools, never a request path.
    pub fn digest_now(&self) -> (u64, StateDigest) {
        self.refresh_digest();
        self.digest()
    }

    /// Digests the latest published state (on the calling thread) unless
    /// the last digest is of it already.
    pub fn refresh_digest(&self) {
        let state = self.read();
        if self.digest().0 == state.revision() {
            return;
        }
        let digest = (state.revision(), state.kernel.digest());
        *self.digest.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = digest;
    }
}

/// Keeps `shared`'s digest current, off every request path: after a change
/// it waits until writes pause for `DIGEST_QUIET_MS` (at most
/// `DIGEST_STALE_MAX_MS` after the last digest), hashes on a blocking thread,
/// then rests at least `DIGEST_INTERVAL_MIN_MS` (and `DIGEST_PAUSE_PER_WORK`
/// times the hash's own time). Ends when `shared` is dropped by everyone else.
pub async fn run_digester(shared: std::sync::Weak<SharedState>) {
    let Some(mut changes) = shared.upgrade().map(|shared| shared.applied_changes()) else { return };
    let mut last_digest = tokio::time::Instant::now();
    loop {
        let Some(strong) = shared.upgrade() else { return };
        let started = std::time::Instant::now();
        let _ = tokio::task::spawn_blocking(move || strong.refresh_digest()).await;
        let pause = Duration::from_millis(DIGEST_INTERVAL_MIN_MS).max(started.elapsed() * DIGEST_PAUSE_PER_WORK);
        tokio::time::sleep(pause).await; // a rate limit, not a wait for anything
        if changes.changed().await.is_err() {
            return;
        }
        // Debounce: digest the state writes settle on, not every batch.
        let stale_at = last_digest + Duration::from_millis(DIGEST_STALE_MAX_MS);
        loop {
            let quiet = tokio::time::sleep(Duration::from_millis(DIGEST_QUIET_MS));
            tokio::select! {
                () = quiet => break,
                () = tokio::time::sleep_until(stale_at) => break,
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
        last_digest = tokio::time::Instant::now();
    }
}
