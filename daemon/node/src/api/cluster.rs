//! `keel.v1.ClusterService`: status, membership changes and leadership
//! transfer — conversions around the replica, which does the work.

use super::context::ApiContext;
use super::error::ApiError;
use crate::limits::MEMBERSHIP_DEADLINE_DEFAULT_MS;
use crate::limits::PROGRESS_PROBE_TIMEOUT_MS;
use crate::limits::READ_DEADLINE_DEFAULT_MS;
use crate::limits::TRANSFER_DEADLINE_DEFAULT_MS;
use crate::raft::{KeelNode, NodeId};
use crate::replica::status::{NodeStatus, Role};
use crate::replica::{MemberProgress, MembershipWritten};
use keel_kernel::{Name, Rejection};
use keel_proto::v1 as pb;
use openraft::Membership;
use std::collections::BTreeSet;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// The service.
pub struct ClusterApi {
    pub(crate) ctx: ApiContext,
    pub(crate) boot_time_ms: u64,
}

#[tonic::async_trait]
impl pb::cluster_service_server::ClusterService for ClusterApi {
    async fn get_status(&self, request: Request<pb::GetStatusRequest>) -> Result<Response<pb::ClusterStatus>, Status> {
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |_body, call| async move {
                let status = NodeStatus::collect(&call.ctx().replica, self.boot_time_ms);
                let health = self.member_health(&status).await;
                call.at_revision(status.applied_index);
                Ok(status_to_pb(status, health))
            })
            .await
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.ctx
            .serve(request, MEMBERSHIP_DEADLINE_DEFAULT_MS, |body, call| async move {
                let (node_id, node) = learner_from(body)?;
                if call.ctx().plaintext_peers {
                    for (field, addr) in
                        [("member.client_addr", &node.client_addr), ("member.peer_addr", &node.peer_addr)]
                    {
                        if !crate::config::is_loopback_address(addr) {
                            return Err(invalid(
                                field,
                                "is not on loopback, and this cluster's peers talk plaintext: configure [tls]",
                            ));
                        }
                    }
                }
                let written = call.ctx().replica.add_learner(node_id, node, call.deadline()).await?;
                Ok(membership_reply(&call, written))
            })
            .await
    }

    async fn promote_member(
        &self,
        request: Request<pb::PromoteMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.ctx
            .serve(request, MEMBERSHIP_DEADLINE_DEFAULT_MS, |body, call| async move {
                let written = call.ctx().replica.promote(body.node_id, call.deadline()).await?;
                Ok(membership_reply(&call, written))
            })
            .await
    }

    async fn transfer_leadership(
        &self,
        request: Request<pb::TransferLeadershipRequest>,
    ) -> Result<Response<pb::TransferLeadershipResponse>, Status> {
        self.ctx
            .serve(request, TRANSFER_DEADLINE_DEFAULT_MS, |body, call| async move {
                let replica = &call.ctx().replica;
                replica.hand_over(body.node_id, call.deadline()).await?;
                let metrics = replica.raft.metrics().borrow().clone();
                call.at_revision(metrics.last_applied.map_or(0, |log_id| log_id.index));
                Ok(pb::TransferLeadershipResponse {
                    leader_id: metrics.current_leader.unwrap_or(0),
                    term: metrics.current_term,
                })
            })
            .await
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.ctx
            .serve(request, MEMBERSHIP_DEADLINE_DEFAULT_MS, |body, call| async move {
                let written = call.ctx().replica.remove(body.node_id, call.deadline()).await?;
                Ok(membership_reply(&call, written))
            })
            .await
    }
}

impl ClusterApi {
    /// Every member's health: this node's own progress, and a concurrent,
    /// bounded probe of every other member.
    async fn member_health(&self, status: &NodeStatus) -> Vec<pb::MemberHealth> {
        let probe_timeout = Duration::from_millis(PROGRESS_PROBE_TIMEOUT_MS);
        let link = self.ctx.replica.link();
        let probes = status.members.iter().map(|member| async move {
            if member.node_id == status.node_id {
                return Some(MemberProgress {
                    applied_index: status.state_digest_revision,
                    state_digest: status.state_digest.clone(),
                });
            }
            link.progress(&member.peer_addr, probe_timeout).await
        });
        let answers = futures::future::join_all(probes).await;
        status
            .members
            .iter()
            .zip(answers)
            .map(|(member, progress)| pb::MemberHealth {
                node_id: member.node_id,
                is_reachable: progress.is_some(),
                last_answer_ms_ago: member.last_answer_ms_ago,
                applied_index: progress.as_ref().map(|p| p.applied_index),
                state_digest: progress.map(|p| p.state_digest),
            })
            .collect()
    }
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn status_to_pb(status: NodeStatus, member_health: Vec<pb::MemberHealth>) -> pb::ClusterStatus {
    pb::ClusterStatus {
        node_id: status.node_id,
        region: status.region,
        zone: status.zone,
        version: status.version.to_owned(),
        role: role_to_pb(status.role) as i32,
        term: status.term,
        leader_id: status.leader_id.unwrap_or(0),
        // openraft 0.9 does not expose the commit index in metrics; on a
        // single node everything applied is committed.
        commit_index: status.applied_index,
        applied_index: status.applied_index,
        state_digest: status.state_digest,
        state_digest_revision: status.state_digest_revision,
        members: status
            .members
            .into_iter()
            .map(|m| pb::Member {
                node_id: m.node_id,
                region: m.region,
                zone: m.zone,
                client_addr: m.client_addr,
                peer_addr: m.peer_addr,
                is_voter: m.is_voter,
            })
            .collect(),
        member_health,
        key_count: count(status.key_count),
        engine_count: count(status.engine_count),
        engine_version_count: count(status.engine_version_count),
        tenant_count: count(status.tenant_count),
        boot_time_ms: i64::try_from(status.boot_time_ms).unwrap_or(i64::MAX),
        standing: status.standing.standing.as_str().to_owned(),
        standing_detail: status.standing.detail,
        member_changes: status
            .member_changes
            .into_iter()
            .map(|change| pb::MemberChange {
                node_id: change.node_id,
                kind: change.kind.to_owned(),
                at_ms: change.at_ms,
                revision: change.revision,
                detail: change.detail,
            })
            .collect(),
    }
}

fn role_to_pb(role: Role) -> pb::RaftRole {
    match role {
        Role::Leader => pb::RaftRole::Leader,
        Role::Follower => pb::RaftRole::Follower,
        Role::Candidate => pb::RaftRole::Candidate,
        Role::Learner => pb::RaftRole::Learner,
        Role::Shutdown => pb::RaftRole::Shutdown,
    }
}

fn membership_reply(call: &super::context::Call<'_>, written: MembershipWritten) -> pb::MembershipResponse {
    call.at_revision(written.revision);
    pb::MembershipResponse { members: members_to_pb(&written.membership), revision: written.revision }
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

#[cfg(test)]
mod tests {
    use super::*;

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
