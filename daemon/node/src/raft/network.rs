//! [`NoPeerNetwork`]: the Raft network of the single-node slice, in which no
//! peer is reachable.
//!
//! The gRPC peer transport (`keel.raft.v1` on the peer port) arrives with
//! multi-node clusters. Until then every RPC to a peer fails with
//! [`RPCError::Unreachable`], which openraft treats as a transient failure
//! (it backs off and retries), and the error says why. A single-node cluster
//! never sends an RPC, so it runs normally on this network.

use super::{KeelNode, NodeId, TypeConfig};
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

/// Connects to no one: every peer is unreachable (no peer transport yet).
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
#[error(
    "Raft peer {target} at {peer_addr:?} is unreachable: this build has no peer transport yet (keel.raft.v1 comes with multi-node clusters)"
)]
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
    use openraft::Vote;

    #[tokio::test]
    async fn every_rpc_is_unreachable_and_says_why() {
        let node = KeelNode { peer_addr: "10.0.0.2:7401".into(), ..KeelNode::default() };
        let mut connection = NoPeerNetwork.new_client(2, &node).await;
        let vote = VoteRequest { vote: Vote::new(1, 1), last_log_id: None };
        let error = connection
            .vote(vote, RPCOption::new(std::time::Duration::from_secs(1)))
            .await
            .expect_err("no peer is reachable");
        assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");
        let text = error.to_string();
        assert!(text.contains("10.0.0.2:7401") && text.contains("no peer transport"), "{text}");
    }
}
