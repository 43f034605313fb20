//! The Raft network: [`GrpcNetwork`] sends openraft's RPCs to peers over
//! `keel.raft.v1` (see [`super::peer_channels`] for the channels and
//! [`super::peer_message`] for the bytes); [`NoPeerNetwork`] reaches no one
//! and remains only until `server.rs` switches to [`GrpcNetwork`].
//!
//! ```text
//!  openraft replication, elections
//!     │ AppendEntries │ Vote │ InstallSnapshot                 ▲ Ok, or RPCError::{Unreachable, Timeout,
//!     ▼                                                        │          Network, RemoteError}
//!  GrpcConnection ── fit the batch, pack ──► PeerChannels::call(peer_addr, ttl) ── unpack Result<_, RaftError>
//! ```
//!
//! Failures map onto openraft's retry semantics: a peer that cannot be
//! reached is `Unreachable` (openraft backs off, see [`GrpcConnection`]'s
//! backoff), one that does not answer within the RPC's ttl is `Timeout`, an
//! error the remote Raft returned is `RemoteError`, and anything else (a
//! peer that cannot decode us, an answer we cannot decode) is `Network`.
//!
//! Sizes: an AppendEntries carries at most [`APPEND_ENTRIES_MAX`] entries
//! (openraft's `max_payload_entries`) and, of those, the longest prefix that
//! fits [`APPEND_ENTRIES_BYTES_MAX`]; the rest is reported as not yet sent
//! (`PartialSuccess`) and goes in the next RPC. Snapshots go in chunks of
//! [`SNAPSHOT_CHUNK_BYTES_MAX`] (openraft's `snapshot_max_chunk_size`).

use super::codec;
use super::peer_channels::{PeerCallError, PeerChannels};
use super::peer_message::{Envelope, PEER_BODY_BYTES_MAX, PackError, pack, pack_snapshot_chunk, unpack};
use super::{KeelNode, LogId, NodeId, TypeConfig};
use crate::limits::{
    APPEND_ENTRIES_BYTES_MAX, APPEND_ENTRIES_MAX, PEER_BACKOFF_MAX_MS, PEER_BACKOFF_MIN_MS, SNAPSHOT_CHUNK_BYTES_MAX,
};
use keel_kernel::Proposal;
use keel_kernel::limits::MANIFEST_BYTES_MAX;
use keel_proto::raft::v1 as pb;
use keel_proto::raft::v1::raft_peer_client::RaftPeerClient;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{Entry, EntryPayload};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;

/// Room for an AppendEntries' fields other than its entries: the vote, two
/// log ids and the entry count (under 100 bytes), rounded up.
const APPEND_ENTRIES_FIELDS_BYTES_MAX: u64 = 4 * 1024;
/// The largest log entry the transport can replicate (see [`log_entry_wire_bytes`]).
/// The leader could append a larger one but never replicate it, which would
/// stall every entry behind it: the API must refuse such proposals.
pub const LOG_ENTRY_WIRE_BYTES_MAX: u64 = PEER_BODY_BYTES_MAX - APPEND_ENTRIES_FIELDS_BYTES_MAX;
/// Room for an InstallSnapshot's fields other than its chunk: the vote, the
/// snapshot metadata with the membership (every member's addresses), offset
/// and flag.
const INSTALL_SNAPSHOT_FIELDS_BYTES_MAX: u64 = 256 * 1024;

// A snapshot chunk and its metadata fit one peer message.
const _: () = assert!(SNAPSHOT_CHUNK_BYTES_MAX + INSTALL_SNAPSHOT_FIELDS_BYTES_MAX <= PEER_BODY_BYTES_MAX);
// A full batch, or any single entry the transport accepts, fits one peer message.
const _: () = assert!(APPEND_ENTRIES_BYTES_MAX <= LOG_ENTRY_WIRE_BYTES_MAX);
const _: () = assert!(LOG_ENTRY_WIRE_BYTES_MAX + APPEND_ENTRIES_FIELDS_BYTES_MAX <= PEER_BODY_BYTES_MAX);
// The largest command the API builds (a manifest at its limit, its
// signatures) goes in an ordinary batch, with room to spare.
const _: () = assert!(2 * MANIFEST_BYTES_MAX as u64 <= APPEND_ENTRIES_BYTES_MAX);
// Every proposal the API admits fits one AppendEntries message alone (the
// entry's log id and payload tag add well under 1 KiB to the proposal).
const _: () = assert!(keel_kernel::limits::PROPOSAL_BYTES_MAX as u64 + 1024 <= LOG_ENTRY_WIRE_BYTES_MAX);
const _: () = assert!(APPEND_ENTRIES_MAX >= 1);

/// Bytes `proposal` takes in an AppendEntries, wrapped in its log entry. The
/// API checks it against [`LOG_ENTRY_WIRE_BYTES_MAX`] before proposing.
pub fn log_entry_wire_bytes(proposal: &Proposal) -> Result<u64, codec::EncodeError> {
    // A normal entry encodes as a blank one (log id, payload tag) plus its proposal.
    let blank: Entry<TypeConfig> = Entry { log_id: LogId::default(), payload: EntryPayload::Blank };
    Ok(codec::body_len(&blank)? + codec::body_len(proposal)?)
}

/// The Raft network over `keel.raft.v1`.
#[derive(Debug, Clone)]
pub struct GrpcNetwork {
    node_id: NodeId,
    channels: Arc<PeerChannels>,
}

impl GrpcNetwork {
    /// The network of node `node_id` over `channels`.
    pub fn new(node_id: NodeId, channels: Arc<PeerChannels>) -> Self {
        GrpcNetwork { node_id, channels }
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcConnection;

    async fn new_client(&mut self, target: NodeId, node: &KeelNode) -> Self::Network {
        GrpcConnection { node_id: self.node_id, target, node: node.clone(), channels: Arc::clone(&self.channels) }
    }
}

/// openraft's handle on one peer: its id and addresses and the shared channels.
#[derive(Debug)]
pub struct GrpcConnection {
    node_id: NodeId,
    target: NodeId,
    node: KeelNode,
    channels: Arc<PeerChannels>,
}

/// A log entry too large for any peer message.
#[derive(Debug, thiserror::Error)]
#[error(
    "log entry {index} is {bytes} bytes, over LOG_ENTRY_WIRE_BYTES_MAX = {bytes_max}: it cannot be replicated, which stalls the log"
)]
pub struct EntryTooLarge {
    /// The entry's log index.
    pub index: u64,
    /// Its encoded size.
    pub bytes: u64,
    /// [`LOG_ENTRY_WIRE_BYTES_MAX`].
    pub bytes_max: u64,
}

/// Cuts `rpc.entries` to the longest prefix whose encoding fits
/// [`APPEND_ENTRIES_BYTES_MAX`], or to the first entry alone when that one
/// is larger (up to [`LOG_ENTRY_WIRE_BYTES_MAX`]). Returns the id of the last
/// entry kept when it cut anything.
fn fit_entries(rpc: &mut AppendEntriesRequest<TypeConfig>) -> Result<Option<LogId>, FitError> {
    let mut batch_bytes = 0u64;
    let mut kept = 0usize;
    for entry in &rpc.entries {
        let bytes = codec::body_len(entry)?;
        if kept == 0 && bytes > LOG_ENTRY_WIRE_BYTES_MAX {
            return Err(FitError::TooLarge(EntryTooLarge {
                index: entry.log_id.index,
                bytes,
                bytes_max: LOG_ENTRY_WIRE_BYTES_MAX,
            }));
        }
        if kept > 0 && batch_bytes + bytes > APPEND_ENTRIES_BYTES_MAX {
            break;
        }
        batch_bytes += bytes;
        kept += 1;
    }
    if kept == rpc.entries.len() {
        return Ok(None);
    }
    rpc.entries.truncate(kept);
    Ok(rpc.entries.last().map(|entry| entry.log_id))
}

#[derive(Debug, thiserror::Error)]
enum FitError {
    #[error(transparent)]
    TooLarge(EntryTooLarge),
    #[error("log entry does not encode")]
    Encode(#[from] codec::EncodeError),
}

impl GrpcConnection {
    /// Sends `message` with `send` (one generated client method), decodes
    /// the peer's `Result`, and maps every failure onto openraft's [`RPCError`].
    async fn exchange<Q, A, R, E, F, Fut>(
        &self,
        action: RPCTypes,
        option: &RPCOption,
        message: Result<Q, PackError>,
        send: F,
    ) -> Result<R, RPCError<NodeId, KeelNode, RaftError<NodeId, E>>>
    where
        A: Envelope,
        R: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(RaftPeerClient<Channel>, tonic::Request<Q>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<A>, tonic::Status>>,
    {
        let peer_addr = self.node.peer_addr.as_str();
        let ttl = option.hard_ttl();
        let message = message.map_err(|source| {
            self.rpc_error(action, ttl, PeerCallError::Pack { peer_addr: peer_addr.to_owned(), source })
        })?;
        let answer = self
            .channels
            .call(peer_addr, ttl, message, send)
            .await
            .map_err(|error| self.rpc_error(action, ttl, error))?;
        let result: Result<R, RaftError<NodeId, E>> = unpack(answer).map_err(|source| {
            self.rpc_error(action, ttl, PeerCallError::Garbage { peer_addr: peer_addr.to_owned(), source })
        })?;
        result.map_err(|error| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), error)))
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        action: RPCTypes,
        ttl: Duration,
        error: PeerCallError,
    ) -> RPCError<NodeId, KeelNode, E> {
        match error {
            PeerCallError::TimedOut { .. } => {
                RPCError::Timeout(Timeout { action, id: self.node_id, target: self.target, timeout: ttl })
            }
            // A bad address will not improve by retrying at once: back off.
            PeerCallError::Unreachable { .. } | PeerCallError::Address { .. } => {
                RPCError::Unreachable(Unreachable::new(&error))
            }
            PeerCallError::Pack { .. } | PeerCallError::Failed { .. } | PeerCallError::Garbage { .. } => {
                RPCError::Network(NetworkError::new(&error))
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for GrpcConnection {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, KeelNode, RaftError<NodeId>>> {
        let sent_up_to = match fit_entries(&mut rpc) {
            Ok(sent_up_to) => sent_up_to,
            Err(FitError::TooLarge(too_large)) => {
                // openraft cannot split one entry: replication to this peer
                // stops here until an operator acts. Backing off keeps it from
                // spinning; the log line says why.
                tracing::error!(target_node = self.target, error = %too_large, "cannot replicate log entry");
                return Err(RPCError::Unreachable(Unreachable::new(&too_large)));
            }
            Err(error @ FitError::Encode(_)) => return Err(RPCError::Network(NetworkError::new(&error))),
        };
        let message = pack::<pb::AppendEntriesRequest, _>(&rpc);
        let response: AppendEntriesResponse<NodeId> = self
            .exchange(RPCTypes::AppendEntries, &option, message, |mut client, request| async move {
                client.append_entries(request).await
            })
            .await?;
        // The peer matched everything sent; openraft sends the rest next.
        Ok(match (response, sent_up_to) {
            (AppendEntriesResponse::Success, Some(last_sent)) => AppendEntriesResponse::PartialSuccess(Some(last_sent)),
            (response, _) => response,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, KeelNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        let message = pack_snapshot_chunk(rpc);
        self.exchange(RPCTypes::InstallSnapshot, &option, message, |mut client, request| async move {
            client.install_snapshot(request).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, KeelNode, RaftError<NodeId>>> {
        let message = pack::<pb::VoteRequest, _>(&rpc);
        self.exchange(RPCTypes::Vote, &option, message, |mut client, request| async move { client.vote(request).await })
            .await
    }

    /// Exponential from [`PEER_BACKOFF_MIN_MS`] to [`PEER_BACKOFF_MAX_MS`]:
    /// quick to notice a restarted peer, quiet about a dead one.
    fn backoff(&self) -> Backoff {
        let delays = std::iter::successors(Some(PEER_BACKOFF_MIN_MS), |ms| Some((ms * 2).min(PEER_BACKOFF_MAX_MS)));
        Backoff::new(delays.map(Duration::from_millis))
    }
}

/// Connects to no one: every peer is unreachable. The single-node network
/// from before the peer transport; delete it once nothing uses it.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPeerNetwork;

/// A "connection" to one peer that fails every RPC.
#[derive(Debug, Clone)]
pub struct NoPeerConnection {
    target: NodeId,
    peer_addr: String,
}

/// Why a peer RPC failed on [`NoPeerNetwork`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("Raft peer {target} at {peer_addr:?} is unreachable: this node runs without a peer transport")]
pub struct NoPeerTransport {
    /// The peer's node id.
    pub target: NodeId,
    /// The peer address from its membership entry.
    pub peer_addr: String,
}

impl NoPeerConnection {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<NodeId, KeelNode, E> {
        let reason = NoPeerTransport { target: self.target, peer_addr: self.peer_addr.clone() };
        RPCError::Unreachable(Unreachable::new(&reason))
    }
}

impl RaftNetworkFactory<TypeConfig> for NoPeerNetwork {
    type Network = NoPeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &KeelNode) -> Self::Network {
        NoPeerConnection { target, peer_addr: node.peer_addr.clone() }
    }
}

impl RaftNetwork<TypeConfig> for NoPeerConnection {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, KeelNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, KeelNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, KeelNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_kernel::Command;
    use keel_kernel::tenant::{TenantSpec, TenantStatus, TenantTier};
    use openraft::Vote;
    use openraft::testing::log_id;
    use std::collections::BTreeSet;

    fn entry(index: u64, payload_bytes: usize) -> Entry<TypeConfig> {
        let proposal = Proposal {
            leader_time_ms: 0,
            semantics_version: keel_kernel::judge::SEMANTICS_VERSION,
            command: Command::PublishEngineVersion { manifest: vec![b'x'; payload_bytes], signatures: Vec::new() },
            idempotency_key: None,
            actor: None,
        };
        Entry { log_id: log_id(1, 1, index), payload: EntryPayload::Normal(proposal) }
    }

    fn append(entries: Vec<Entry<TypeConfig>>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest { vote: Vote::new_committed(1, 1), prev_log_id: None, leader_commit: None, entries }
    }

    #[test]
    fn batches_are_cut_to_the_byte_budget() {
        let quarter = (APPEND_ENTRIES_BYTES_MAX / 4) as usize;
        let mut small = append((1..=5).map(|index| entry(index, 100)).collect());
        assert!(matches!(fit_entries(&mut small), Ok(None)), "small batches go whole");
        assert_eq!(small.entries.len(), 5);

        let mut large = append((1..=6).map(|index| entry(index, quarter)).collect());
        let cut = fit_entries(&mut large).ok().flatten();
        assert_eq!(large.entries.len(), 3, "three quarters and their headers fit; a fourth does not");
        assert_eq!(cut, Some(log_id(1, 1, 3)));

        let mut oversized_first = append(vec![entry(1, 2 * APPEND_ENTRIES_BYTES_MAX as usize), entry(2, 100)]);
        assert_eq!(fit_entries(&mut oversized_first).ok().flatten(), Some(log_id(1, 1, 1)), "a big entry goes alone");

        let mut unreplicable = append(vec![entry(1, LOG_ENTRY_WIRE_BYTES_MAX as usize)]);
        assert!(matches!(fit_entries(&mut unreplicable), Err(FitError::TooLarge(EntryTooLarge { index: 1, .. }))));
    }

    #[test]
    fn entry_wire_bytes_match_the_encoding() -> Result<(), Box<dyn std::error::Error>> {
        let spec = TenantSpec {
            tenant_id: keel_kernel::Name::parse("test", "acme")?,
            display_name: "Acme".into(),
            tier: TenantTier::Basic,
            home_region: keel_kernel::Name::parse("test", "eu-west")?,
            status: TenantStatus::Active,
            enabled_engines: BTreeSet::new(),
        };
        let proposal = Proposal {
            leader_time_ms: 5,
            semantics_version: keel_kernel::judge::SEMANTICS_VERSION,
            command: Command::CreateTenant { spec },
            idempotency_key: Some("retry-1".to_owned()),
            actor: None,
        };
        let entry: Entry<TypeConfig> =
            Entry { log_id: log_id(3, 2, 9), payload: EntryPayload::Normal(proposal.clone()) };
        assert_eq!(log_entry_wire_bytes(&proposal)?, codec::body_len(&entry)?);
        Ok(())
    }

    #[tokio::test]
    async fn backoff_grows_to_its_cap() {
        let network = GrpcNetwork::new(1, Arc::new(PeerChannels::new(None)));
        let connection = network.clone().new_client(2, &KeelNode::default()).await;
        let delays: Vec<u64> =
            connection.backoff().take(6).map(|delay| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
    }

    #[tokio::test]
    async fn every_no_peer_rpc_is_unreachable_and_says_why() {
        let node = KeelNode { peer_addr: "10.0.0.2:7401".into(), ..KeelNode::default() };
        let mut connection = NoPeerNetwork.new_client(2, &node).await;
        let vote = VoteRequest { vote: Vote::new(1, 1), last_log_id: None };
        let error =
            connection.vote(vote, RPCOption::new(Duration::from_secs(1))).await.expect_err("no peer is reachable");
        assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");
        assert!(error.to_string().contains("10.0.0.2:7401"), "{error}");
    }
}
