//! How a follower reaches the leader ([`LeaderLink`]), and the values that
//! travel that way: a [`Write`] forwarded, a [`Forwarded`] outcome back.
//! The peer transport implements the link (`peer_link::PeerLink`); a lone
//! node or a test without peers uses [`NoLeaderLink`].

use super::ReplicaError;
use crate::raft::{ApplyResponse, KeelNode};
use keel_kernel::Command;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A write as a client asked for it: the command and its idempotency key.
/// This is what a follower forwards to the leader, which stamps its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// The change.
    pub command: Command,
    /// The client's idempotency key, if any (validated).
    pub idempotency_key: Option<String>,
    /// Who asks (from the token the edge verified), for `apply` to re-check.
    pub actor: Option<keel_kernel::token::Actor>,
}

/// A write applied by the leader: what `apply` answered, and the revision
/// (log index) of its entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    /// Applied, or rejected (state unchanged).
    pub response: ApplyResponse,
    /// The revision of the command's entry.
    pub revision: u64,
}

/// Where a proposal went.
#[derive(Debug)]
pub enum Route {
    /// Applied here.
    Applied(Forwarded),
    /// Another node leads; send the write there.
    Leader {
        /// The leader's node id.
        leader_id: u64,
        /// Its addresses.
        leader: KeelNode,
        /// The write, not yet proposed.
        write: Write,
    },
}

/// A member's progress as it reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberProgress {
    /// Its last applied index.
    pub applied_index: u64,
    /// Its state digest at that index.
    pub state_digest: String,
}

/// How this node reaches other members: the leader for forwarded writes and
/// read indices, any member for leadership transfer, progress and clocks.
/// Errors from the leader are its own [`ReplicaError`]s, as it answered them.
#[tonic::async_trait]
pub trait LeaderLink: Send + Sync + 'static {
    /// Has the leader propose `write`.
    async fn forward(
        &self,
        leader_id: u64,
        leader: &KeelNode,
        write: Write,
        deadline: Duration,
    ) -> Result<Forwarded, ReplicaError>;

    /// The leader's read index, after it confirmed its leadership with a quorum.
    async fn read_index(&self, leader_id: u64, leader: &KeelNode, deadline: Duration) -> Result<u64, ReplicaError>;

    /// How long ago a peer RPC to `peer_addr` last got an answer, if ever.
    fn since_last_answer(&self, _peer_addr: &str) -> Option<Duration> {
        None
    }

    /// Tells `target` to campaign after `wait` (leadership transfer); whether it acknowledged.
    async fn timeout_now(
        &self,
        _target: &KeelNode,
        _leader_id: u64,
        _term: u64,
        _wait: Duration,
        _deadline: Duration,
    ) -> bool {
        false
    }

    /// Asks the member at `peer_addr` for its progress; `None` if it does not
    /// answer within `deadline`.
    async fn progress(&self, _peer_addr: &str, _deadline: Duration) -> Option<MemberProgress> {
        None
    }

    /// Asks the member at `peer_addr` what cluster it knows (its Progress
    /// answer); `None` if it does not answer within `deadline`.
    async fn standing(&self, _peer_addr: &str, _deadline: Duration) -> Option<super::rejoin::PeerView> {
        None
    }

    /// Asks the member at `peer_addr` to have this member replaced; `None`
    /// if it does not answer within `deadline`.
    async fn rejoin(
        &self,
        _peer_addr: &str,
        _ask: &super::rejoin::RejoinAsk,
        _deadline: Duration,
    ) -> Option<super::rejoin::RejoinAnswer> {
        None
    }

    /// Asks the member at `peer_addr` for its wall clock (Unix ms); `None`
    /// if it does not answer within `deadline`.
    async fn wall_clock(&self, _peer_addr: &str, _deadline: Duration) -> Option<u64> {
        None
    }
}

/// No path to a leader: callers are told where the leader is and go there themselves.
#[derive(Debug, Default)]
pub struct NoLeaderLink;

#[tonic::async_trait]
impl LeaderLink for NoLeaderLink {
    async fn forward(
        &self,
        leader_id: u64,
        leader: &KeelNode,
        _write: Write,
        _deadline: Duration,
    ) -> Result<Forwarded, ReplicaError> {
        Err(ReplicaError::NotLeader { leader_id: Some(leader_id), leader_addr: Some(leader.client_addr.clone()) })
    }

    async fn read_index(&self, leader_id: u64, leader: &KeelNode, _deadline: Duration) -> Result<u64, ReplicaError> {
        Err(ReplicaError::NotLeader { leader_id: Some(leader_id), leader_addr: Some(leader.client_addr.clone()) })
    }
}
