//! [`SnapshotReception`]: which snapshot chunks a follower accepts, so a
//! peer cannot make it grow a receive buffer without bound.
//!
//! openraft 0.9 writes each chunk at its offset into an in-memory cursor;
//! a chunk at offset 2^40 would make it allocate a terabyte. A chunk is
//! accepted only when it ends within `SNAPSHOT_BYTES_MAX` and starts at or
//! before the end of what was received of the same snapshot (offset 0 starts
//! a snapshot; a resent chunk may overlap, a gap is refused).

use super::snapshot_store::KeelSnapshotMeta;
use crate::limits::SNAPSHOT_BYTES_MAX;

/// Why a chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkRefused {
    /// The chunk ends past `SNAPSHOT_BYTES_MAX`.
    #[error("snapshot chunk at offset {offset} of {bytes} bytes ends past SNAPSHOT_BYTES_MAX ({SNAPSHOT_BYTES_MAX})")]
    TooLarge {
        /// The chunk's offset.
        offset: u64,
        /// Its length.
        bytes: u64,
    },
    /// The chunk does not continue a snapshot being received.
    #[error(
        "snapshot chunk at offset {offset} of {snapshot_id} does not continue what was received ({received} bytes)"
    )]
    OutOfOrder {
        /// The chunk's snapshot.
        snapshot_id: String,
        /// The chunk's offset.
        offset: u64,
        /// Bytes received of that snapshot (0 if another one is being received).
        received: u64,
    },
}

/// The snapshot being received, if any.
#[derive(Debug, Default)]
pub struct SnapshotReception {
    current: Option<(String, u64)>,
}

impl SnapshotReception {
    /// Admits a chunk of `bytes` bytes at `offset` of the snapshot `meta`,
    /// recording how far the snapshot has been received.
    pub fn admit(&mut self, meta: &KeelSnapshotMeta, offset: u64, bytes: u64, done: bool) -> Result<(), ChunkRefused> {
        let end = offset.checked_add(bytes).filter(|end| *end <= SNAPSHOT_BYTES_MAX);
        let Some(end) = end else {
            return Err(ChunkRefused::TooLarge { offset, bytes });
        };
        let received = match &self.current {
            Some((snapshot_id, received)) if *snapshot_id == meta.snapshot_id => *received,
            _ => 0,
        };
        if offset > received {
            return Err(ChunkRefused::OutOfOrder { snapshot_id: meta.snapshot_id.clone(), offset, received });
        }
        self.current = if done { None } else { Some((meta.snapshot_id.clone(), received.max(end))) };
        Ok(())
    }

    /// Forgets the snapshot being received (its install failed).
    pub fn reset(&mut self) {
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(snapshot_id: &str) -> KeelSnapshotMeta {
        KeelSnapshotMeta { snapshot_id: snapshot_id.to_owned(), ..Default::default() }
    }

    #[test]
    fn chunks_must_continue_their_snapshot_within_the_bound() {
        let mut reception = SnapshotReception::default();
        let a = meta("a");
        assert!(matches!(reception.admit(&a, 1 << 40, 10, false), Err(ChunkRefused::TooLarge { .. })));
        assert!(matches!(reception.admit(&a, u64::MAX, 10, false), Err(ChunkRefused::TooLarge { .. })));
        assert!(matches!(reception.admit(&a, 100, 10, false), Err(ChunkRefused::OutOfOrder { received: 0, .. })));
        reception.admit(&a, 0, 100, false).expect("first chunk");
        reception.admit(&a, 0, 100, false).expect("a resent chunk overlaps");
        reception.admit(&a, 100, 100, false).expect("next chunk");
        assert!(matches!(reception.admit(&a, 300, 1, false), Err(ChunkRefused::OutOfOrder { received: 200, .. })));
        assert!(matches!(reception.admit(&meta("b"), 200, 1, false), Err(ChunkRefused::OutOfOrder { .. })));
        reception.admit(&a, 200, 5, true).expect("last chunk");
        assert!(matches!(reception.admit(&a, 205, 1, false), Err(ChunkRefused::OutOfOrder { received: 0, .. })));
    }
}
