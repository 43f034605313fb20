//! Membership changes for `ClusterService`: add a learner, promote it, remove
//! a member.
//!
//! ```text
//!  AddLearner ─► leader? ─► checks (id free, addresses free) ─► raft.add_learner(blocking)
//!  Promote    ─► leader? ─► checks (known, learner)          ─► change_membership(AddVoterIds)
//!  Remove     ─► leader? ─► checks (known, not last voter)   ─► change_membership(RemoveVoters | RemoveNodes)
//! ```
//!
//! Only the leader changes membership; any other node answers `NOT_LEADER`
//! with the leader's client address, which clients follow. The checks run on
//! the leader's current membership before proposing, so a refused change
//! proposes nothing.

use super::context::ApiContext;
use super::error::ApiError;
use crate::raft::{KeelNode, NodeId};
use keel_kernel::limits::Limit;
use keel_kernel::{Name, Rejection};
use keel_proto::v1 as pb;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Membership};
use std::collections::BTreeSet;
use std::time::Duration;

/// A membership refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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

fn invalid(field: &'static str, problem: &'static str) -> ApiError {
    ApiError::Rejected(Rejection::FieldInvalid { field: field.into(), problem: problem.into() })
}

fn address(field: &'static str, value: &str) -> Result<String, ApiError> {
    if value.is_empty() {
        return Err(ApiError::Rejected(Rejection::FieldRequired { field: field.into() }));
    }
    let (host, port) = value.rsplit_once(':').ok_or_else(|| invalid(field, "must be host:port"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |port| port == 0) {
        return Err(invalid(field, "must be host:port with a port from 1 to 65535"));
    }
    if value.len() > keel_kernel::limits::NAME_BYTES_MAX {
        return Err(invalid(field, "is too long"));
    }
    Ok(value.to_owned())
}

/// The member in an AddLearner request, validated.
pub fn learner_from(request: pb::AddLearnerRequest) -> Result<(NodeId, KeelNode), ApiError> {
    let member =
        request.member.ok_or_else(|| ApiError::Rejected(Rejection::FieldRequired { field: "member".into() }))?;
    if member.node_id == 0 {
        return Err(invalid("member.node_id", "must be greater than 0"));
    }
    let node = KeelNode {
        client_addr: address("member.client_addr", &member.client_addr)?,
        peer_addr: address("member.peer_addr", &member.peer_addr)?,
        region: Name::parse("member.region", &member.region)?.to_string(),
        zone: Name::parse("member.zone", &member.zone)?.to_string(),
    };
    if node.client_addr == node.peer_addr {
        return Err(invalid("member.peer_addr", "must differ from member.client_addr"));
    }
    Ok((member.node_id, node))
}

/// Checks adding `node_id` with `node` against the current membership:
/// the id and addresses are free, and the cluster stays within `MEMBERS_MAX`.
pub fn check_add(membership: &Membership<NodeId, KeelNode>, node_id: NodeId, node: &KeelNode) -> Result<(), ApiError> {
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

/// Members for the wire.
pub fn members_to_pb(membership: &Membership<NodeId, KeelNode>) -> Vec<pb::Member> {
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, node)| pb::Member {
            node_id: *id,
            region: node.region.clone(),
            zone: node.zone.clone(),
            client_addr: node.client_addr.clone(),
            peer_addr: node.peer_addr.clone(),
            is_voter: voters.contains(id),
        })
        .collect()
}

/// The leader's current membership, or `NOT_LEADER`/`NO_LEADER`.
pub fn leader_membership(ctx: &ApiContext) -> Result<Membership<NodeId, KeelNode>, ApiError> {
    let metrics = ctx.raft.metrics();
    let metrics = metrics.borrow();
    match metrics.current_leader {
        Some(leader) if leader == ctx.identity.node_id => Ok(metrics.membership_config.membership().clone()),
        Some(leader) => Err(ApiError::NotLeader {
            leader_id: Some(leader),
            leader_addr: metrics.membership_config.membership().get_node(&leader).map(|n| n.client_addr.clone()),
        }),
        None => Err(ApiError::NoLeader),
    }
}

/// Maps a membership write's failure.
pub fn write_error(error: RaftError<NodeId, ClientWriteError<NodeId, KeelNode>>) -> ApiError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => match forward.leader_id {
            Some(leader_id) => ApiError::NotLeader {
                leader_id: Some(leader_id),
                leader_addr: forward.leader_node.map(|node| node.client_addr),
            },
            None => ApiError::NoLeader,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(error)) => match error {
            ChangeMembershipError::InProgress(_) => ApiError::MembershipChangeInProgress,
            ChangeMembershipError::LearnerNotFound(missing) => {
                ApiError::Membership(MembershipError::NotFound { node_id: missing.node_id })
            }
            ChangeMembershipError::EmptyMembership(_) => {
                ApiError::Membership(MembershipError::LastVoter { node_id: 0 })
            }
        },
        RaftError::Fatal(fatal) => ApiError::NodeUnavailable { detail: fatal.to_string() },
    }
}

/// Waits until the leader's replication to `node_id` has matched `index`;
/// `DEADLINE_EXCEEDED` after `deadline` (the learner keeps catching up).
pub async fn wait_learner_caught_up(
    ctx: &ApiContext,
    node_id: NodeId,
    index: u64,
    deadline: Duration,
) -> Result<(), ApiError> {
    let after_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
    let matched = |metrics: &openraft::RaftMetrics<NodeId, KeelNode>| {
        metrics
            .replication
            .as_ref()
            .and_then(|replication| replication.get(&node_id).copied().flatten())
            .is_some_and(|log_id| log_id.index >= index)
    };
    ctx.raft.wait(Some(deadline)).metrics(matched, "learner caught up").await.map(|_| ()).map_err(|error| match error {
        openraft::metrics::WaitError::Timeout(..) => ApiError::DeadlineExceeded { after_ms },
        openraft::metrics::WaitError::ShuttingDown => ApiError::NodeUnavailable { detail: "shutting down".into() },
    })
}

/// Runs a membership write within `deadline`.
pub async fn within<T>(
    deadline: Duration,
    write: impl std::future::Future<Output = Result<T, RaftError<NodeId, ClientWriteError<NodeId, KeelNode>>>>,
) -> Result<T, ApiError> {
    let after_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
    tokio::time::timeout(deadline, write)
        .await
        .map_err(|_| ApiError::DeadlineExceeded { after_ms })?
        .map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;
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
            Err(ApiError::Membership(MembershipError::AlreadyExists { node_id: 2 }))
        ));
        assert!(matches!(
            check_add(&m, 3, &node(7010)),
            Err(ApiError::Membership(MembershipError::AddressInUse { node_id: 1, .. }))
        ));
        assert!(check_add(&m, 3, &node(9000)).is_ok());
        // A learner flood stops at MEMBERS_MAX, voters and learners together.
        let learners: Vec<u64> = (3..=keel_kernel::limits::MEMBERS_MAX as u64).collect();
        let full = membership(&[1, 2], &learners);
        assert!(matches!(
            check_add(&full, 100, &node(20_000)),
            Err(ApiError::Rejected(Rejection::LimitExceeded { limit: Limit::Members, .. }))
        ));
    }

    #[test]
    fn removal_keeps_a_voter_and_knows_learners() {
        assert_eq!(removal(&membership(&[1], &[]), 1).err(), Some(MembershipError::LastVoter { node_id: 1 }));
        assert_eq!(removal(&membership(&[1], &[]), 5).err(), Some(MembershipError::NotFound { node_id: 5 }));
        assert!(matches!(removal(&membership(&[1], &[2]), 2), Ok(ChangeMembers::RemoveNodes(_))));
        assert!(matches!(removal(&membership(&[1, 2], &[]), 2), Ok(ChangeMembers::RemoveVoters(_))));
    }

    #[test]
    fn learner_requests_are_validated() {
        let member = |id, client: &str, peer: &str| pb::AddLearnerRequest {
            member: Some(pb::Member {
                node_id: id,
                client_addr: client.into(),
                peer_addr: peer.into(),
                region: "eu".into(),
                zone: "eu-a".into(),
                is_voter: true,
            }),
        };
        assert!(learner_from(member(4, "127.0.0.1:1", "127.0.0.1:2")).is_ok());
        assert!(learner_from(member(0, "127.0.0.1:1", "127.0.0.1:2")).is_err());
        assert!(learner_from(member(4, "nohost", "127.0.0.1:2")).is_err());
        assert!(learner_from(member(4, "127.0.0.1:1", "127.0.0.1:1")).is_err());
        assert!(learner_from(pb::AddLearnerRequest { member: None }).is_err());
    }
}
