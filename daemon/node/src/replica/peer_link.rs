//! [`PeerLink`]: how a follower reaches the leader for its callers — it
//! forwards writes and asks for read indices over the peer transport, within
//! the caller's deadline.
//!
//! ```text
//!  Replica::propose (follower) ──forward(write, deadline)──► leader's RaftPeerService::forward
//!  Replica::read (follower)    ──read_index(deadline)─────────► leader's RaftPeerService::read_index
//!           ▲                                                          │
//!           └──────── ReplicaError (the leader's own answer) ◄─────────┘
//!                      ◄── unreachable → NO_LEADER, no answer in time → DEADLINE_EXCEEDED
//! ```
//!
//! A leader that cannot be reached answers `NO_LEADER`, which clients retry
//! after a short delay (an election is likely under way). A leader that does
//! not serve the peer methods (an older build) answers `NOT_LEADER` with its
//! client address, so the client goes there itself.

use super::rejoin::{PeerView, RejoinAnswer, RejoinAsk, Step};
use super::{Forwarded, LeaderLink, MemberProgress, ReplicaError, Write};
use crate::raft::KeelNode;
use crate::raft::peer_channels::{PeerCallError, PeerChannels, duration_ms};
use crate::raft::peer_message::{Envelope, pack, unpack};
use keel_proto::raft::v1 as pb;
use keel_proto::raft::v1::raft_peer_client::RaftPeerClient;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;

/// The leader link over the peer transport's channels.
#[derive(Debug)]
pub struct PeerLink {
    channels: Arc<PeerChannels>,
}

impl PeerLink {
    /// A link over `channels` (shared with the Raft network).
    pub fn new(channels: Arc<PeerChannels>) -> Self {
        PeerLink { channels }
    }

    /// The channels (shared with the Raft network), for other peer calls
    /// (the audit copies).
    pub fn channels(&self) -> Arc<PeerChannels> {
        Arc::clone(&self.channels)
    }
}

/// The error for a call to the leader that got no answer from it.
fn call_failure(leader_id: u64, leader: &KeelNode, deadline: Duration, error: PeerCallError) -> ReplicaError {
    match error {
        PeerCallError::TimedOut { .. } => ReplicaError::DeadlineExceeded { after_ms: duration_ms(deadline) },
        PeerCallError::Unreachable { .. } | PeerCallError::Address { .. } => {
            tracing::warn!(leader_id, peer_addr = %leader.peer_addr, error = ?error, "leader unreachable");
            ReplicaError::NoLeader
        }
        PeerCallError::Failed { status, .. } if status.code() == tonic::Code::Unimplemented => {
            ReplicaError::NotLeader { leader_id: Some(leader_id), leader_addr: Some(leader.client_addr.clone()) }
        }
        PeerCallError::Pack { .. } | PeerCallError::Failed { .. } | PeerCallError::Garbage { .. } => {
            ReplicaError::internal(anyhow::Error::new(error).context(format!("calling leader {leader_id}")))
        }
    }
}

#[tonic::async_trait]
impl LeaderLink for PeerLink {
    fn since_last_answer(&self, peer_addr: &str) -> Option<Duration> {
        self.channels.since_last_answer(peer_addr)
    }

    async fn timeout_now(
        &self,
        target: &KeelNode,
        leader_id: u64,
        term: u64,
        wait: Duration,
        deadline: Duration,
    ) -> bool {
        let request = pb::TimeoutNowRequest { leader_id, term, wait_ms: duration_ms(wait) };
        self.channels
            .call(&target.peer_addr, deadline, request, |mut client, request| async move {
                client.timeout_now(request).await
            })
            .await
            .is_ok()
    }

    async fn wall_clock(&self, peer_addr: &str, deadline: Duration) -> Option<u64> {
        let answer =
            self.channels
                .call(peer_addr, deadline, pb::ClockRequest {}, |mut client, request| async move {
                    client.clock(request).await
                })
                .await
                .ok()?;
        Some(answer.wall_clock_ms)
    }

    async fn progress(&self, peer_addr: &str, deadline: Duration) -> Option<MemberProgress> {
        let answer = self.progress_answer(peer_addr, deadline).await?;
        Some(MemberProgress { applied_index: answer.applied_index, state_digest: answer.state_digest })
    }

    async fn standing(&self, peer_addr: &str, deadline: Duration) -> Option<PeerView> {
        let answer = self.progress_answer(peer_addr, deadline).await?;
        Some(PeerView {
            node_id: answer.node_id,
            initialized: answer.initialized,
            last_applied_index: answer.last_applied_index,
            leader_id: (answer.leader_id != 0).then_some(answer.leader_id),
            leader_peer_addr: answer.leader_peer_addr,
            voter_ids: answer.voter_ids,
            is_settled: answer.is_settled,
            last_log_index: answer.last_log_index,
            term: answer.term,
        })
    }

    async fn rejoin(&self, peer_addr: &str, ask: &RejoinAsk, deadline: Duration) -> Option<RejoinAnswer> {
        let request = pb::RejoinRequest {
            node_id: ask.node_id,
            client_addr: ask.client_addr.clone(),
            peer_addr: ask.peer_addr.clone(),
            incarnation: ask.incarnation.clone(),
        };
        let answer = self
            .channels
            .call(peer_addr, deadline, request, |mut client, request| async move { client.rejoin(request).await })
            .await
            .ok()?;
        Some(RejoinAnswer {
            is_leader: answer.is_leader,
            leader_id: (answer.leader_id != 0).then_some(answer.leader_id),
            leader_peer_addr: answer.leader_peer_addr,
            step: Step::parse(&answer.step),
            voter_index: answer.voter_index,
            detail: answer.detail,
        })
    }

    async fn forward(
        &self,
        leader_id: u64,
        leader: &KeelNode,
        write: Write,
        deadline: Duration,
    ) -> Result<Forwarded, ReplicaError> {
        let send = |mut client: RaftPeerClient<Channel>, request| async move { client.forward(request).await };
        self.ask_leader::<_, pb::ForwardRequest, _, _, _, _>(leader_id, leader, deadline, &write, send).await
    }

    async fn read_index(&self, leader_id: u64, leader: &KeelNode, deadline: Duration) -> Result<u64, ReplicaError> {
        let send = |mut client: RaftPeerClient<Channel>, request| async move { client.read_index(request).await };
        self.ask_leader::<_, pb::ReadIndexRequest, _, _, _, _>(leader_id, leader, deadline, &(), send).await
    }
}

impl PeerLink {
    /// A member's answer to `Progress`, or `None` if it does not answer within `deadline`.
    async fn progress_answer(&self, peer_addr: &str, deadline: Duration) -> Option<pb::ProgressResponse> {
        self.channels
            .call(peer_addr, deadline, pb::ProgressRequest {}, |mut client, request| async move {
                client.progress(request).await
            })
            .await
            .ok()
    }

    /// Sends `value` to the leader with `send` and returns what the leader
    /// answered — its own outcome or its own `ReplicaError` — or the error
    /// for an answer that never came or could not be read.
    async fn ask_leader<V, Q, A, T, F, Fut>(
        &self,
        leader_id: u64,
        leader: &KeelNode,
        deadline: Duration,
        value: &V,
        send: F,
    ) -> Result<T, ReplicaError>
    where
        V: serde::Serialize,
        Q: Envelope,
        A: Envelope,
        T: serde::de::DeserializeOwned,
        F: FnOnce(RaftPeerClient<Channel>, tonic::Request<Q>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<A>, tonic::Status>>,
    {
        let peer_addr = leader.peer_addr.as_str();
        let failure = |error| call_failure(leader_id, leader, deadline, error);
        let message: Q =
            pack(value).map_err(|source| failure(PeerCallError::Pack { peer_addr: peer_addr.to_owned(), source }))?;
        let answer = self.channels.call(peer_addr, deadline, message, send).await.map_err(failure)?;
        let result: Result<T, ReplicaError> = unpack(answer)
            .map_err(|source| failure(PeerCallError::Garbage { peer_addr: peer_addr.to_owned(), source }))?;
        result
    }
}

/// The client side of the peer transport: the Raft network for
/// `Raft::new` and the leader link for [`super::Replica::new`], sharing one
/// channel per peer address. `node_id` is this node; `cluster_id`, when
/// given, travels with every call (peers of another cluster refuse it). `tls`: `None` speaks
/// plaintext (dev mode, loopback); `Some` speaks HTTPS with that configuration.
/// `connector`: `None` opens TCP connections; `Some` opens them through the
/// seam (an in-process cluster's `transport::MemNetwork`).
pub fn peer_transport(
    node_id: crate::raft::NodeId,
    cluster_id: Option<&str>,
    tls: Option<tonic::transport::ClientTlsConfig>,
    connector: Option<Arc<dyn crate::transport::Connector>>,
) -> (crate::raft::GrpcNetwork, Arc<PeerLink>) {
    let channels = PeerChannels::new(tls);
    let channels = match cluster_id {
        Some(cluster_id) => channels.with_cluster_id(cluster_id),
        None => channels,
    };
    let channels = Arc::new(match connector {
        Some(connector) => channels.with_connector(connector),
        None => channels,
    });
    (crate::raft::GrpcNetwork::new(node_id, Arc::clone(&channels)), Arc::new(PeerLink::new(channels)))
}
