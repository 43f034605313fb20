//! Membership changes: add a learner, promote it, remove a member.
//!
//! ```text
//!  add_learner ─► leader? ─► checks (id free, addresses free, MEMBERS_MAX) ─► raft.add_learner ─► learner holds the entry
//!  promote     ─► leader? ─► checks (known; already a voter → no change)   ─► change_membership(AddVoterIds)
//!  remove      ─► leader? ─► checks (known, not last voter)                ─► change_membership(RemoveVoters | RemoveNodes)
//! ```
//!
//! Only the leader changes membership; any other node answers `NOT_LEADER`
//! with the leader's client address, which clients follow. The checks run on
//! the leader's current membership before proposing, so a refused change
//! proposes nothing.

use super::{Replica, ReplicaError};
use crate::raft::{KeelNode, NodeId};
use keel_kernel::limits::Limit;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Membership};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

/// A membership refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MembershipError {
    /// The node id is taken.
    #[error("node {node_id} is already a member")]
    AlreadyExists {
        /// The id.
        node_id: NodeId,
    },
    /// An address is taken.
    #[error("address {addr} is already used by node {node_id}")]
    AddressInUse {
        /// The address.
        addr: String,
        /// Who uses it.
        node_id: NodeId,
    },
    /// No such member.
    #[error("node {node_id} is not a member")]
    NotFound {
        /// The id.
        node_id: NodeId,
    },
    /// Leadership can only move to a voter.
    #[error("node {node_id} is a learner; leadership can only move to a voter")]
    NotVoter {
        /// The id.
        node_id: NodeId,
    },
    /// Removing it would leave no voter.
    #[error("node {node_id} is the last voter; add and promote another member first")]
    LastVoter {
        /// The id.
        node_id: NodeId,
    },
}

impl MembershipError {
    /// The stable reason.
    pub fn reason(&self) -> &'static str {
        match self {
            MembershipError::AlreadyExists { .. } => "MEMBER_ALREADY_EXISTS",
            MembershipError::AddressInUse { .. } => "ADDRESS_IN_USE",
            MembershipError::NotFound { .. } => "MEMBER_NOT_FOUND",
            MembershipError::LastVoter { .. } => "LAST_VOTER",
            MembershipError::NotVoter { .. } => "MEMBER_NOT_VOTER",
        }
    }
}

/// A committed membership change: the membership it wrote and its revision.
#[derive(Debug, Clone)]
pub struct MembershipWritten {
    /// The membership after the change.
    pub membership: Membership<NodeId, KeelNode>,
    /// The revision (log index) of the change, or the current revision when
    /// nothing had to change.
    pub revision: u64,
}

impl Replica {
    /// Adds `node_id` at `node` as a learner and waits until it holds the
    /// membership entry.
    pub async fn add_learner(
        &self,
        node_id: NodeId,
        node: KeelNode,
        deadline: Duration,
    ) -> Result<MembershipWritten, ReplicaError> {
        let started = tokio::time::Instant::now();
        let current = self.leader_membership()?;
        check_add(&current, node_id, &node)?;
        tracing::info!(node_id, %node, "adding a learner");
        let written = within(deadline, self.raft.add_learner(node_id, node, false)).await?;
        // openraft's own "blocking" add only waits until the learner is within
        // replication_lag_threshold entries, which a short log satisfies at
        // once; wait instead until the learner holds the membership entry.
        let remaining = deadline.saturating_sub(started.elapsed());
        self.wait_caught_up(node_id, written.log_id.index, remaining).await?;
        Ok(self.written(written.membership, written.log_id.index))
    }

    /// Makes the learner `node_id` a voter (nothing to change if it is one).
    pub async fn promote(&self, node_id: NodeId, deadline: Duration) -> Result<MembershipWritten, ReplicaError> {
        let current = self.leader_membership()?;
        if current.get_node(&node_id).is_none() {
            return Err(MembershipError::NotFound { node_id }.into());
        }
        if current.voter_ids().any(|id| id == node_id) {
            return Ok(MembershipWritten { membership: current, revision: self.shared.read().revision() });
        }
        tracing::info!(node_id, "promoting a learner to voter");
        let change = ChangeMembers::AddVoterIds(BTreeSet::from([node_id]));
        let written = within(deadline, self.raft.change_membership(change, false)).await?;
        Ok(self.written(written.membership, written.log_id.index))
    }

    /// Removes the member `node_id` (a voter or a learner).
    pub async fn remove(&self, node_id: NodeId, deadline: Duration) -> Result<MembershipWritten, ReplicaError> {
        let current = self.leader_membership()?;
        let change = removal(&current, node_id)?;
        tracing::info!(node_id, "removing a member");
        let written = within(deadline, self.raft.change_membership(change, false)).await?;
        Ok(self.written(written.membership, written.log_id.index))
    }

    fn written(&self, membership: Option<Membership<NodeId, KeelNode>>, revision: u64) -> MembershipWritten {
        let membership = membership.unwrap_or_else(|| self.shared.read().membership.membership().clone());
        MembershipWritten { membership, revision }
    }

    /// The leader's current membership, or `NOT_LEADER`/`NO_LEADER`.
    pub fn leader_membership(&self) -> Result<Membership<NodeId, KeelNode>, ReplicaError> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        match metrics.current_leader {
            Some(leader) if leader == self.identity.node_id => Ok(membership.clone()),
            leader => Err(ReplicaError::not_leader(
                leader,
                leader.and_then(|id| membership.get_node(&id)).map(|node| node.client_addr.clone()),
            )),
        }
    }

    /// Waits until the leader's replication to `node_id` has matched `index`;
    /// `DEADLINE_EXCEEDED` after `deadline` (the member keeps catching up),
    /// `NOT_LEADER` at once if this node stops leading meanwhile.
    pub async fn wait_caught_up(&self, node_id: NodeId, index: u64, deadline: Duration) -> Result<(), ReplicaError> {
        let me = self.identity.node_id;
        let matched = |metrics: &openraft::RaftMetrics<NodeId, KeelNode>| {
            metrics
                .replication
                .as_ref()
                .and_then(|replication| replication.get(&node_id).copied().flatten())
                .is_some_and(|log_id| log_id.index >= index)
        };
        let metrics = self
            .raft
            .wait(Some(deadline))
            .metrics(|metrics| matched(metrics) || metrics.current_leader != Some(me), "member caught up")
            .await
            .map_err(|error| wait_error(error, deadline))?;
        if matched(&metrics) {
            return Ok(());
        }
        // Stopped leading (and may lead again by now: the wait is over either way).
        Err(self.leader_membership().err().unwrap_or_else(|| ReplicaError::not_leader(None, None)))
    }
}

/// A failed `raft.wait`.
pub(super) fn wait_error(error: openraft::metrics::WaitError, deadline: Duration) -> ReplicaError {
    match error {
        openraft::metrics::WaitError::Timeout(..) => ReplicaError::deadline(deadline),
        openraft::metrics::WaitError::ShuttingDown => ReplicaError::NodeUnavailable { detail: "shutting down".into() },
    }
}

/// Checks adding `node_id` with `node` against the current membership:
/// the id and addresses are free, and the cluster stays within `MEMBERS_MAX`.
pub fn check_add(
    membership: &Membership<NodeId, KeelNode>,
    node_id: NodeId,
    node: &KeelNode,
) -> Result<(), ReplicaError> {
    if membership.get_node(&node_id).is_some() {
        return Err(MembershipError::AlreadyExists { node_id }.into());
    }
    Limit::Members.check(membership.nodes().count() + 1)?;
    for (other_id, other) in membership.nodes() {
        for addr in [&node.client_addr, &node.peer_addr] {
            if addr == &other.client_addr || addr == &other.peer_addr {
                return Err(MembershipError::AddressInUse { addr: addr.clone(), node_id: *other_id }.into());
            }
        }
    }
    Ok(())
}

/// The change that removes `node_id`, or why it cannot be removed.
pub fn removal(
    membership: &Membership<NodeId, KeelNode>,
    node_id: NodeId,
) -> Result<ChangeMembers<NodeId, KeelNode>, MembershipError> {
    if membership.get_node(&node_id).is_none() {
        return Err(MembershipError::NotFound { node_id });
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    if !voters.contains(&node_id) {
        return Ok(ChangeMembers::RemoveNodes(BTreeSet::from([node_id])));
    }
    if voters.len() == 1 {
        return Err(MembershipError::LastVoter { node_id });
    }
    Ok(ChangeMembers::RemoveVoters(BTreeSet::from([node_id])))
}

/// Maps a membership write's failure.
fn write_error(error: RaftError<NodeId, ClientWriteError<NodeId, KeelNode>>) -> ReplicaError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            ReplicaError::not_leader(forward.leader_id, forward.leader_node.map(|node| node.client_addr))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(error)) => match error {
            ChangeMembershipError::InProgress(_) => ReplicaError::MembershipChangeInProgress,
            ChangeMembershipError::LearnerNotFound(missing) => {
                MembershipError::NotFound { node_id: missing.node_id }.into()
            }
            ChangeMembershipError::EmptyMembership(_) => MembershipError::LastVoter { node_id: 0 }.into(),
        },
        RaftError::Fatal(fatal) => ReplicaError::NodeUnavailable { detail: fatal.to_string() },
    }
}

/// Runs a membership write within `deadline`.
pub(super) async fn within<T>(
    deadline: Duration,
    write: impl std::future::Future<Output = Result<T, RaftError<NodeId, ClientWriteError<NodeId, KeelNode>>>>,
) -> Result<T, ReplicaError> {
    tokio::time::timeout(deadline, write).await.map_err(|_| ReplicaError::deadline(deadline))?.map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_kernel::Rejection;
    use std::collections::BTreeMap;

    fn node(port: u16) -> KeelNode {
        KeelNode {
            client_addr: format!("127.0.0.1:{port}"),
            peer_addr: format!("127.0.0.1:{}", port + 1),
            region: "r".into(),
            zone: "z".into(),
        }
    }

    fn membership(voters: &[u64], learners: &[u64]) -> Membership<NodeId, KeelNode> {
        let nodes: BTreeMap<u64, KeelNode> =
            voters.iter().chain(learners).map(|id| (*id, node(7000 + 10 * *id as u16))).collect();
        Membership::new(vec![voters.iter().copied().collect()], nodes)
    }

    #[test]
    fn adding_refuses_taken_ids_and_addresses() {
        let m = membership(&[1, 2], &[]);
        assert!(matches!(
            check_add(&m, 2, &node(9000)),
            Err(ReplicaError::Membership(MembershipError::AlreadyExists { node_id: 2 }))
        ));
        assert!(matches!(
            check_add(&m, 3, &node(7010)),
            Err(ReplicaError::Membership(MembershipError::AddressInUse { node_id: 1, .. }))
        ));
        assert!(check_add(&m, 3, &node(9000)).is_ok());
        // A learner flood stops at MEMBERS_MAX, voters and learners together.
        let learners: Vec<u64> = (3..=keel_kernel::limits::MEMBERS_MAX as u64).collect();
        let full = membership(&[1, 2], &learners);
        assert!(matches!(
            check_add(&full, 100, &node(20_000)),
            Err(ReplicaError::Rejected(Rejection::LimitExceeded { limit: Limit::Members, .. }))
        ));
    }

    #[test]
    fn removal_keeps_a_voter_and_knows_learners() {
        assert_eq!(removal(&membership(&[1], &[]), 1).err(), Some(MembershipError::LastVoter { node_id: 1 }));
        assert_eq!(removal(&membership(&[1], &[]), 5).err(), Some(MembershipError::NotFound { node_id: 5 }));
        assert!(matches!(removal(&membership(&[1], &[2]), 2), Ok(ChangeMembers::RemoveNodes(_))));
        assert!(matches!(removal(&membership(&[1, 2], &[]), 2), Ok(ChangeMembers::RemoveVoters(_))));
    }
}
