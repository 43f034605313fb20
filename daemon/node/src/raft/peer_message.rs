//! The wire format of the peer transport (`keel.raft.v1`): every message is
//! an envelope `{format_version, body}` whose body is bare bincode of a Rust
//! value (see `proto/keel/raft/v1/raft.proto` for which value each carries).
//!
//! ```text
//!  value ──pack──► bincode body (≤ PEER_BODY_BYTES_MAX) ──► pb::XRequest{format_version: 1, body}
//!  pb::XResponse ──unpack──► check format_version ──► bincode (bounded, no trailing bytes) ──► value
//! ```
//!
//! Snapshot chunks are the exception: their bytes travel raw in a `data`
//! field beside the bincode header ([`pack_snapshot_chunk`]).
//!
//! The replica's own calls (a forwarded write, a read index) travel in the
//! same envelopes; their values (`replica::Write`, `replica::Forwarded`,
//! `replica::ReplicaError`) are the replica's.

use super::codec::{self, DecodeError, EncodeError};
use super::{KeelNode, NodeId, TypeConfig};
use keel_kernel::limits::GRPC_MESSAGE_BYTES_MAX;
use keel_proto::raft::v1 as pb;
use openraft::raft::InstallSnapshotRequest;
use openraft::{SnapshotMeta, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Layout of every peer message body this build writes and reads. Bump it
/// (and keep reading the previous one) when any body's bincode changes: an
/// openraft upgrade that changes its types, or a change to a type carried in
/// a body (`Command`, `ApplyResponse`, `KeelNode`, `ReplicaError`, ...).
/// Enum variants are only appended, so an older build still reads the
/// variants it knew.
/// Version 3: `Proposal` carries its evaluation semantics version.
/// Version 4: `Proposal` and a forwarded `Write` carry the actor.
pub const PEER_FORMAT_VERSION: u32 = 4;

/// Room in every peer message for the protobuf envelope around the body (and
/// a snapshot chunk's data): three field tags, the version varint and two
/// length varints (under 25 bytes), rounded up.
const ENVELOPE_BYTES_MAX: u64 = 64;

/// The largest body of any peer message, so that every message stays within
/// [`GRPC_MESSAGE_BYTES_MAX`].
pub const PEER_BODY_BYTES_MAX: u64 = GRPC_MESSAGE_BYTES_MAX as u64 - ENVELOPE_BYTES_MAX;

const _: () = assert!(PEER_BODY_BYTES_MAX + ENVELOPE_BYTES_MAX <= GRPC_MESSAGE_BYTES_MAX as u64);

/// A generated `keel.raft.v1` message: a version and a bincode body.
pub trait Envelope: Sized {
    /// Wraps a body.
    fn wrap(format_version: u32, body: Vec<u8>) -> Self;
    /// The version and the body.
    fn open(self) -> (u32, Vec<u8>);
}

macro_rules! envelopes {
    ($($message:ty),* $(,)?) => {$(
        impl Envelope for $message {
            fn wrap(format_version: u32, body: Vec<u8>) -> Self {
                Self { format_version, body }
            }
            fn open(self) -> (u32, Vec<u8>) {
                (self.format_version, self.body)
            }
        }
    )*};
}

envelopes!(
    pb::AppendEntriesRequest,
    pb::AppendEntriesResponse,
    pb::VoteRequest,
    pb::VoteResponse,
    pb::InstallSnapshotResponse,
    pb::ForwardRequest,
    pb::ForwardResponse,
    pb::ReadIndexRequest,
    pb::ReadIndexResponse,
);

/// Why a value could not be packed into a peer message.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// bincode refused the value.
    #[error("peer message body does not encode")]
    Encode(#[from] EncodeError),
    /// The body would push the message over the gRPC message limit.
    #[error("peer message body is {bytes} bytes, over PEER_BODY_BYTES_MAX = {bytes_max}")]
    TooLarge {
        /// Encoded body size.
        bytes: u64,
        /// [`PEER_BODY_BYTES_MAX`].
        bytes_max: u64,
    },
}

/// Why a peer message could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The sender wrote a layout this build does not read.
    #[error("peer message format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// Version in the envelope.
        found: u32,
        /// [`PEER_FORMAT_VERSION`].
        supported: u32,
    },
    /// The body does not decode as the expected value.
    #[error("peer message body does not decode")]
    Body(#[from] DecodeError),
}

/// Encodes `value` into a peer message.
pub fn pack<M: Envelope, T: Serialize>(value: &T) -> Result<M, PackError> {
    let body = codec::encode_body(value)?;
    let bytes = body.len() as u64;
    if bytes > PEER_BODY_BYTES_MAX {
        return Err(PackError::TooLarge { bytes, bytes_max: PEER_BODY_BYTES_MAX });
    }
    Ok(M::wrap(PEER_FORMAT_VERSION, body))
}

/// Decodes the value in a peer message, refusing other format versions.
pub fn unpack<T: DeserializeOwned, M: Envelope>(message: M) -> Result<T, UnpackError> {
    let (format_version, body) = message.open();
    unpack_body(format_version, &body)
}

fn unpack_body<T: DeserializeOwned>(format_version: u32, body: &[u8]) -> Result<T, UnpackError> {
    if format_version != PEER_FORMAT_VERSION {
        return Err(UnpackError::UnsupportedVersion { found: format_version, supported: PEER_FORMAT_VERSION });
    }
    Ok(codec::decode_body(body, PEER_BODY_BYTES_MAX)?)
}

/// An InstallSnapshot request without its chunk: the chunk travels raw in
/// the message's `data` field, so a megabyte of snapshot is copied, not
/// encoded byte by byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunkHeader {
    /// The leader's vote.
    pub vote: Vote<NodeId>,
    /// The snapshot the chunk belongs to.
    pub meta: SnapshotMeta<NodeId, KeelNode>,
    /// Byte offset of the chunk in the snapshot.
    pub offset: u64,
    /// Whether this is the last chunk.
    pub done: bool,
}

/// Packs a snapshot chunk: header in `body`, chunk in `data`.
pub fn pack_snapshot_chunk(rpc: InstallSnapshotRequest<TypeConfig>) -> Result<pb::InstallSnapshotRequest, PackError> {
    let InstallSnapshotRequest { vote, meta, offset, data, done } = rpc;
    let body = codec::encode_body(&SnapshotChunkHeader { vote, meta, offset, done })?;
    let bytes = (body.len() + data.len()) as u64;
    if bytes > PEER_BODY_BYTES_MAX {
        return Err(PackError::TooLarge { bytes, bytes_max: PEER_BODY_BYTES_MAX });
    }
    Ok(pb::InstallSnapshotRequest { format_version: PEER_FORMAT_VERSION, body, data })
}

/// Unpacks a snapshot chunk packed by [`pack_snapshot_chunk`].
pub fn unpack_snapshot_chunk(
    message: pb::InstallSnapshotRequest,
) -> Result<InstallSnapshotRequest<TypeConfig>, UnpackError> {
    let pb::InstallSnapshotRequest { format_version, body, data } = message;
    let SnapshotChunkHeader { vote, meta, offset, done } = unpack_body(format_version, &body)?;
    Ok(InstallSnapshotRequest { vote, meta, offset, data, done })
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::error::RaftError;
    use openraft::raft::{AppendEntriesRequest, VoteRequest, VoteResponse};
    use openraft::testing::log_id;
    use openraft::{Entry, EntryPayload, StoredMembership};

    #[test]
    fn values_round_trip_and_other_versions_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let request = VoteRequest::<NodeId> { vote: Vote::new(3, 2), last_log_id: Some(log_id(2, 1, 9)) };
        let message: pb::VoteRequest = pack(&request)?;
        assert_eq!(message.format_version, PEER_FORMAT_VERSION);
        assert_eq!(unpack::<VoteRequest<NodeId>, _>(message.clone())?, request);

        let newer = pb::VoteRequest { format_version: PEER_FORMAT_VERSION + 1, ..message.clone() };
        assert!(matches!(unpack::<VoteRequest<NodeId>, _>(newer), Err(UnpackError::UnsupportedVersion { .. })));
        let mut trailing = message.clone();
        trailing.body.push(0);
        assert!(matches!(unpack::<VoteRequest<NodeId>, _>(trailing), Err(UnpackError::Body(_))));
        let truncated = pb::VoteRequest { body: message.body[..message.body.len() - 1].to_vec(), ..message };
        assert!(matches!(unpack::<VoteRequest<NodeId>, _>(truncated), Err(UnpackError::Body(_))));
        Ok(())
    }

    fn snapshot_chunk(data: Vec<u8>) -> InstallSnapshotRequest<TypeConfig> {
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(2, 1, 40)),
            last_membership: StoredMembership::default(),
            snapshot_id: "2-40-1".into(),
        };
        InstallSnapshotRequest { vote: Vote::new_committed(2, 1), meta, offset: 512, data, done: false }
    }

    #[test]
    fn snapshot_chunks_travel_raw_beside_their_header() -> Result<(), Box<dyn std::error::Error>> {
        let chunk = snapshot_chunk(b"snapshot bytes".to_vec());
        let message = pack_snapshot_chunk(chunk.clone())?;
        assert_eq!(message.data, b"snapshot bytes");
        assert_eq!(unpack_snapshot_chunk(message)?, chunk);
        Ok(())
    }

    #[test]
    fn bodies_over_the_limit_are_not_packed() {
        let result = pack_snapshot_chunk(snapshot_chunk(vec![0u8; PEER_BODY_BYTES_MAX as usize]));
        assert!(matches!(result, Err(PackError::TooLarge { .. })), "{result:?}");
        let result = pack::<pb::AppendEntriesRequest, _>(&vec![0u8; PEER_BODY_BYTES_MAX as usize]);
        assert!(matches!(result, Err(PackError::TooLarge { .. })), "{result:?}");
    }

    #[test]
    fn entries_travel_as_the_log_store_writes_them() -> Result<(), Box<dyn std::error::Error>> {
        // Same bincode as the log store's records (after its version byte), so
        // one golden file pins both.
        let entry: Entry<TypeConfig> = Entry { log_id: log_id(1, 1, 7), payload: EntryPayload::Blank };
        let request = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(log_id(1, 1, 6)),
            leader_commit: Some(log_id(1, 1, 6)),
            entries: vec![entry.clone()],
        };
        let message: pb::AppendEntriesRequest = pack(&request)?;
        let record = crate::raft::log_store::encode_entry(&entry)?;
        assert!(message.body.windows(record.len() - 1).any(|window| window == &record[1..]));
        let back: AppendEntriesRequest<TypeConfig> = unpack(message)?;
        assert_eq!(back.entries.len(), 1);
        assert_eq!(back.entries[0].log_id, entry.log_id);
        Ok(())
    }

    // Golden bytes of the peer wire format. If one of these changes, the wire
    // changed: bump PEER_FORMAT_VERSION and keep reading the old layout.
    #[rustfmt::skip]
    const GOLDEN_VOTE_REQUEST: &str = concat!(
        "0300000000000000", "0200000000000000", "00",              // vote: term 3, node 2, not committed
        "01", "0200000000000000", "0100000000000000", "0900000000000000", // last_log_id: Some(term 2, node 1, index 9)
    );
    #[rustfmt::skip]
    const GOLDEN_VOTE_RESPONSE: &str = concat!(
        "00000000",                                                // Ok
        "0300000000000000", "0300000000000000", "00",              // vote: term 3, node 3, not committed
        "01",                                                      // vote_granted
        "01", "0200000000000000", "0100000000000000", "0900000000000000", // last_log_id
    );
    #[test]
    fn wire_bodies_match_golden_bytes() -> Result<(), Box<dyn std::error::Error>> {
        let request = VoteRequest::<NodeId> { vote: Vote::new(3, 2), last_log_id: Some(log_id(2, 1, 9)) };
        let response: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            Ok(VoteResponse { vote: Vote::new(3, 3), vote_granted: true, last_log_id: Some(log_id(2, 1, 9)) });
        let cases = [
            ("vote request", hex::encode(pack::<pb::VoteRequest, _>(&request)?.body), GOLDEN_VOTE_REQUEST),
            ("vote response", hex::encode(pack::<pb::VoteResponse, _>(&response)?.body), GOLDEN_VOTE_RESPONSE),
        ];
        let mismatches: Vec<String> = cases
            .iter()
            .filter(|(_, encoded, golden)| encoded != golden)
            .map(|(name, encoded, _)| format!("{name}: {encoded}"))
            .collect();
        assert!(mismatches.is_empty(), "wire bodies changed:\n{}", mismatches.join("\n"));
        Ok(())
    }
}
