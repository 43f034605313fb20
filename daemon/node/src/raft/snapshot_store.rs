//! [`SnapshotStore`]: the snapshot data format and the one current snapshot,
//! kept in memory and, with RocksDB, persisted before it becomes current.
//!
//! Snapshot data (what peers receive and `install_snapshot` decodes) is a
//! framed record whose header repeats the snapshot's `last_applied` and
//! membership, so the bytes are self-describing and an install can check them
//! against the metadata they arrived with, and carries the kernel state's
//! digest, checked after decoding because bincode has no checksum. The
//! payload is the kernel's own versioned encoding
//! ([`KernelState::encode_snapshot`], with its own magic and version):
//!
//! ```text
//!  data:    [v1][u32 LE len][bincode{last_applied, membership, digest}][KernelState::encode_snapshot()]
//!  cf "sm" "snapshot":
//!           [v1][u32 LE len][bincode{meta, snapshots_built}][data]
//! ```
//!
//! ```text
//!  build_snapshot ───save_built─────┐
//!                                   ├──► SnapshotStore ──► cf "sm" (synced) ──► memory slot
//!  install_snapshot ─save_installed─┘
//!  open_rocks ──load_rocks──► cf "sm" ──► memory slot ──► state machine restores from it
//! ```
//!
//! Openraft builds snapshots in a spawned task that may finish after a newer
//! snapshot was installed; `save_built` therefore never replaces a newer
//! snapshot with an older one.

use super::codec::{self, DecodeError, EncodeError};
use super::rocks_db::{CF_SM, RaftDb};
use super::shared_state::AppliedState;
use super::{KeelNode, LogId, NodeId, StorageError};
use keel_kernel::{KernelState, SnapshotError, StateDigest};
use openraft::{AnyError, SnapshotMeta, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::Mutex;

/// Format version of snapshot data (the bytes sent to peers).
pub const SNAPSHOT_DATA_FORMAT_VERSION: u8 = 1;
/// Format version of the persisted snapshot record in cf `sm`.
pub const STORED_SNAPSHOT_FORMAT_VERSION: u8 = 1;
/// Largest snapshot or stored-snapshot header decoded: a log id, a
/// membership and a snapshot id, far below this even for large clusters.
const SNAPSHOT_HEADER_BYTES_MAX: u64 = 1024 * 1024;

const KEY_SNAPSHOT: &[u8] = b"snapshot";

/// Metadata of a snapshot, as openraft describes it.
pub type KeelSnapshotMeta = SnapshotMeta<NodeId, KeelNode>;

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotDataHeader {
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, KeelNode>,
    /// Digest of the kernel state. bincode has no checksum, so a damaged
    /// payload can still decode — into another state; the digest catches it.
    digest: StateDigest,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshotHeader {
    meta: KeelSnapshotMeta,
    snapshots_built: u64,
}

/// Why snapshot data cannot be installed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotDataError {
    /// The envelope does not decode.
    #[error("snapshot envelope does not decode")]
    Envelope(#[source] DecodeError),
    /// The kernel state inside does not decode.
    #[error("kernel state in the snapshot does not decode")]
    Kernel(#[source] SnapshotError),
    /// The kernel state decodes, but not to the state the snapshot was taken of.
    #[error("kernel state in the snapshot has digest {found}, but the snapshot was taken at digest {expected}")]
    DigestMismatch {
        /// Digest in the header.
        expected: StateDigest,
        /// Digest of the decoded state.
        found: StateDigest,
    },
    /// The data describes another point of the log than its metadata.
    #[error(
        "snapshot data is at {data_last_applied:?} with membership {data_membership} but its metadata says {meta_last_applied:?} with {meta_membership}"
    )]
    MetaMismatch {
        /// Last applied id in the data.
        data_last_applied: Option<LogId>,
        /// Last applied id in the metadata.
        meta_last_applied: Option<LogId>,
        /// Membership in the data.
        data_membership: String,
        /// Membership in the metadata.
        meta_membership: String,
    },
}

/// Why the persisted snapshot could not be loaded from RocksDB.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotLoadError {
    /// RocksDB failed to read it.
    #[error("RocksDB read of the persisted snapshot failed")]
    Read(#[source] rocksdb::Error),
    /// The record does not decode.
    #[error("persisted snapshot record does not decode")]
    Decode(#[source] DecodeError),
}

/// Encodes `applied` as snapshot data.
pub fn encode_snapshot_data(applied: &AppliedState) -> Result<Vec<u8>, EncodeError> {
    let header = SnapshotDataHeader {
        last_applied: applied.last_applied,
        membership: applied.membership.clone(),
        // The kernel encodes a second time to hash; snapshots are rare.
        digest: applied.kernel.digest(),
    };
    codec::encode_framed(SNAPSHOT_DATA_FORMAT_VERSION, &header, &applied.kernel.encode_snapshot())
}

/// Decodes snapshot data and checks it matches `meta`. The result is
/// complete or an error: nothing is half-decoded.
pub fn decode_snapshot_data(bytes: &[u8], meta: &KeelSnapshotMeta) -> Result<AppliedState, SnapshotDataError> {
    let (header, kernel_bytes): (SnapshotDataHeader, &[u8]) =
        codec::decode_framed(SNAPSHOT_DATA_FORMAT_VERSION, bytes, SNAPSHOT_HEADER_BYTES_MAX)
            .map_err(SnapshotDataError::Envelope)?;
    if header.last_applied != meta.last_log_id || header.membership != meta.last_membership {
        return Err(SnapshotDataError::MetaMismatch {
            data_last_applied: header.last_applied,
            meta_last_applied: meta.last_log_id,
            data_membership: header.membership.to_string(),
            meta_membership: meta.last_membership.to_string(),
        });
    }
    let kernel = KernelState::decode_snapshot(kernel_bytes).map_err(SnapshotDataError::Kernel)?;
    // Re-encoding is canonical, so this is the digest of the state as decoded.
    let found = kernel.digest();
    if found != header.digest {
        return Err(SnapshotDataError::DigestMismatch { expected: header.digest, found });
    }
    Ok(AppliedState { kernel, last_applied: header.last_applied, membership: header.membership })
}

/// A snapshot with its data in memory.
#[derive(Clone)]
pub struct StoredSnapshot {
    /// What openraft knows the snapshot by.
    pub meta: KeelSnapshotMeta,
    /// Snapshot data ([`encode_snapshot_data`]).
    pub data: Vec<u8>,
}

impl std::fmt::Debug for StoredSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSnapshot").field("meta", &self.meta).field("data_bytes", &self.data.len()).finish()
    }
}

#[derive(Debug, Default)]
struct SnapshotSlot {
    current: Option<StoredSnapshot>,
    /// Snapshots this node has built, ever; numbers snapshot ids.
    snapshots_built: u64,
}

/// The current snapshot, shared by the state machine and its snapshot
/// builders. Cloning shares the same slot.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    slot: Arc<Mutex<SnapshotSlot>>,
    /// Where snapshots are persisted; `None` keeps them in memory only.
    db: Option<Arc<RaftDb>>,
}

fn write_snapshot_error(meta: &KeelSnapshotMeta, error: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&error)).into()
}

impl SnapshotStore {
    /// A store that keeps the snapshot in memory only.
    pub fn in_memory() -> Self {
        SnapshotStore { slot: Arc::default(), db: None }
    }

    /// A store persisting into `db`, starting from the snapshot persisted
    /// there, if any.
    pub fn load_rocks(db: Arc<RaftDb>) -> Result<Self, SnapshotLoadError> {
        let pinned = db.db().get_pinned_cf(db.cf(CF_SM), KEY_SNAPSHOT);
        let slot = match pinned.map_err(SnapshotLoadError::Read)? {
            None => SnapshotSlot::default(),
            Some(bytes) => {
                let (header, data): (StoredSnapshotHeader, &[u8]) =
                    codec::decode_framed(STORED_SNAPSHOT_FORMAT_VERSION, &bytes, SNAPSHOT_HEADER_BYTES_MAX)
                        .map_err(SnapshotLoadError::Decode)?;
                SnapshotSlot {
                    current: Some(StoredSnapshot { meta: header.meta, data: data.to_vec() }),
                    snapshots_built: header.snapshots_built,
                }
            }
        };
        Ok(SnapshotStore { slot: Arc::new(Mutex::new(slot)), db: Some(db) })
    }

    /// A copy of the current snapshot.
    pub async fn current(&self) -> Option<StoredSnapshot> {
        self.slot.lock().await.current.clone()
    }

    /// Counts one more built snapshot and returns its number (from 1).
    pub async fn next_build_number(&self) -> u64 {
        let mut slot = self.slot.lock().await;
        slot.snapshots_built = slot.snapshots_built.saturating_add(1);
        slot.snapshots_built
    }

    /// Makes a snapshot this node built current, unless the current one is
    /// newer (an install overtook the build). Returns whether it became current.
    pub async fn save_built(&self, snapshot: StoredSnapshot) -> Result<bool, StorageError> {
        let mut slot = self.slot.lock().await;
        if let Some(current) = &slot.current
            && current.meta.last_log_id > snapshot.meta.last_log_id
        {
            return Ok(false);
        }
        self.persist(&snapshot, slot.snapshots_built).await?;
        slot.current = Some(snapshot);
        Ok(true)
    }

    /// Makes an installed snapshot current, replacing any other.
    pub async fn save_installed(&self, snapshot: StoredSnapshot) -> Result<(), StorageError> {
        let mut slot = self.slot.lock().await;
        self.persist(&snapshot, slot.snapshots_built).await?;
        slot.current = Some(snapshot);
        Ok(())
    }

    /// Writes `snapshot` to RocksDB (synced), when persisting. Called with
    /// the slot locked so disk and memory change in the same order.
    async fn persist(&self, snapshot: &StoredSnapshot, snapshots_built: u64) -> Result<(), StorageError> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        let header = StoredSnapshotHeader { meta: snapshot.meta.clone(), snapshots_built };
        let bytes = codec::encode_framed(STORED_SNAPSHOT_FORMAT_VERSION, &header, &snapshot.data)
            .map_err(|e| write_snapshot_error(&snapshot.meta, e))?;
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(db.cf(CF_SM), KEY_SNAPSHOT, bytes);
        db.write(batch, true).await.map_err(|e| write_snapshot_error(&snapshot.meta, e))
    }
}
