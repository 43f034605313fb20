//! Peer envelopes (every request a peer can send) and snapshot chunks.
#![no_main]

use keel_node::raft::peer_message::{self, Envelope};
use keel_node::raft::snapshot_reception::SnapshotReception;
use keel_node::raft::{NodeId, TypeConfig};
use keel_node::replica::Write;
use keel_proto::raft::v1 as pb;
use libfuzzer_sys::fuzz_target;
use openraft::raft::{AppendEntriesRequest, VoteRequest};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let version = rest.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let body = rest.get(4..).unwrap_or_default().to_vec();
    match kind % 4 {
        0 => {
            let _ = peer_message::unpack::<AppendEntriesRequest<TypeConfig>, _>(pb::AppendEntriesRequest::wrap(
                version, body,
            ));
        }
        1 => {
            let _ = peer_message::unpack::<VoteRequest<NodeId>, _>(pb::VoteRequest::wrap(version, body));
        }
        2 => {
            let _ = peer_message::unpack::<Write, _>(pb::ForwardRequest::wrap(version, body));
        }
        _ => {
            let split = body.len() / 2;
            let (header, chunk) = body.split_at(split);
            let message =
                pb::InstallSnapshotRequest { format_version: version, body: header.to_vec(), data: chunk.to_vec() };
            if let Ok(request) = peer_message::unpack_snapshot_chunk(message) {
                let mut reception = SnapshotReception::default();
                let _ = reception.admit(&request.meta, request.offset, request.data.len() as u64, request.done);
            }
        }
    }
});
