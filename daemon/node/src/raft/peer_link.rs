//! [`PeerLink`]: how a follower reaches the leader for its callers — it
//! forwards writes and asks for read indices over the peer transport, within
//! the caller's deadline.
//!
//! ```text
//!  ApiContext::propose (follower) ──forward(write, deadline)──► leader's RaftPeerService::forward
//!  ApiContext::read_barrier      ──read_index(deadline)─────────► leader's RaftPeerService::read_index
//!           ▲                                                          │
//!           └── ApiError ◄── LeaderFailure (the leader's answer) ◄─────┘
//!                      ◄── unreachable → NO_LEADER, no answer in time → DEADLINE_EXCEEDED
//! ```
//!
//! A leader that cannot be reached answers `NO_LEADER`, which clients retry
//! after a short delay (an election is likely under way). A leader that does
//! not serve the peer methods (an older build) answers `NOT_LEADER` with its
//! client address, so the client goes there itself.

use super::peer_channels::{PeerCallError, PeerChannels, duration_ms};
use super::peer_message::{Forwarded, LeaderFailure, pack, unpack};
use super::{ApplyResponse, KeelNode};
use crate::api::context::Write;
use crate::api::context::{LeaderLink, MemberProgress};
use crate::api::error::ApiError;
use keel_proto::raft::v1 as pb;
use std::sync::Arc;
use std::time::Duration;

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
}

/// The API error for a call to the leader that got no answer from it.
fn call_failure(leader_id: u64, leader: &KeelNode, deadline: Duration, error: PeerCallError) -> ApiError {
    match error {
        PeerCallError::TimedOut { .. } => ApiError::DeadlineExceeded { after_ms: duration_ms(deadline) },
        PeerCallError::Unreachable { .. } | PeerCallError::Address { .. } => {
            tracing::warn!(leader_id, peer_addr = %leader.peer_addr, error = ?error, "leader unreachable");
            ApiError::NoLeader
        }
        PeerCallError::Failed { status, .. } if status.code() == tonic::Code::Unimplemented => {
            ApiError::NotLeader { leader_id: Some(leader_id), leader_addr: Some(leader.client_addr.clone()) }
        }
        PeerCallError::Pack { .. } | PeerCallError::Failed { .. } | PeerCallError::Garbage { .. } => {
            ApiError::internal(anyhow::Error::new(error).context(format!("calling leader {leader_id}")))
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
        let answer = self
            .channels
            .call(peer_addr, deadline, pb::ProgressRequest {}, |mut client, request| async move {
                client.progress(request).await
            })
            .await
            .ok()?;
        Some(MemberProgress { applied_index: answer.applied_index, state_digest: answer.state_digest })
    }

    async fn forward(
        &self,
        leader_id: u64,
        leader: &KeelNode,
        write: Write,
        deadline: Duration,
    ) -> Result<(ApplyResponse, u64), ApiError> {
        let peer_addr = leader.peer_addr.as_str();
        let message: pb::ForwardRequest = pack(&write).map_err(|source| {
            call_failure(leader_id, leader, deadline, PeerCallError::Pack { peer_addr: peer_addr.to_owned(), source })
        })?;
        let answer = self
            .channels
            .call(peer_addr, deadline, message, |mut client, request| async move { client.forward(request).await })
            .await
            .map_err(|error| call_failure(leader_id, leader, deadline, error))?;
        let result: Result<Forwarded, LeaderFailure> = unpack(answer).map_err(|source| {
            call_failure(
                leader_id,
                leader,
                deadline,
                PeerCallError::Garbage { peer_addr: peer_addr.to_owned(), source },
            )
        })?;
        let forwarded = result.map_err(|failure| failure.into_api_error(leader_id))?;
        Ok((forwarded.response, forwarded.revision))
    }

    async fn read_index(&self, leader_id: u64, leader: &KeelNode, deadline: Duration) -> Result<u64, ApiError> {
        let peer_addr = leader.peer_addr.as_str();
        let message: pb::ReadIndexRequest = pack(&()).map_err(|source| {
            call_failure(leader_id, leader, deadline, PeerCallError::Pack { peer_addr: peer_addr.to_owned(), source })
        })?;
        let answer = self
            .channels
            .call(peer_addr, deadline, message, |mut client, request| async move { client.read_index(request).await })
            .await
            .map_err(|error| call_failure(leader_id, leader, deadline, error))?;
        let result: Result<u64, LeaderFailure> = unpack(answer).map_err(|source| {
            call_failure(
                leader_id,
                leader,
                deadline,
                PeerCallError::Garbage { peer_addr: peer_addr.to_owned(), source },
            )
        })?;
        result.map_err(|failure| failure.into_api_error(leader_id))
    }
}
