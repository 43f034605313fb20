//! `keel.v1.ClusterService` and the node status report shared with `/diagz`.

use super::context::{self, ApiContext};
use super::error::ApiError;
use super::membership::{self, MembershipError};
use keel_proto::v1 as pb;
use openraft::ChangeMembers;
use openraft::ServerState;
use serde::Serialize;
use std::collections::BTreeSet;
use tonic::{Request, Response, Status};

/// keeld's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One member as this node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    /// Raft node id.
    pub node_id: u64,
    /// Region name.
    pub region: String,
    /// Zone name.
    pub zone: String,
    /// Client address.
    pub client_addr: String,
    /// Peer address.
    pub peer_addr: String,
    /// Voter (true) or learner.
    pub is_voter: bool,
    /// This node itself, or a peer whose RPCs answered within
    /// [`PEER_REACHABLE_WINDOW_MS`] (from this node's view: authoritative on
    /// the leader, which contacts every member each heartbeat).
    pub is_reachable: bool,
    /// How long ago a peer RPC to it last got an answer, if ever.
    pub last_answer_ms_ago: Option<u64>,
}

/// A member counts as reachable when a peer RPC to it answered this recently.
pub const PEER_REACHABLE_WINDOW_MS: u64 = 5_000;

/// A node's Raft role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

impl From<ServerState> for Role {
    fn from(state: ServerState) -> Role {
        match state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        }
    }
}

impl From<Role> for pb::RaftRole {
    fn from(role: Role) -> pb::RaftRole {
        match role {
            Role::Leader => pb::RaftRole::Leader,
            Role::Follower => pb::RaftRole::Follower,
            Role::Candidate => pb::RaftRole::Candidate,
            Role::Learner => pb::RaftRole::Learner,
            Role::Shutdown => pb::RaftRole::Shutdown,
        }
    }
}

/// This node's view of itself and the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// This node.
    pub node_id: u64,
    /// Its region.
    pub region: String,
    /// Its zone.
    pub zone: String,
    /// keeld version.
    pub version: &'static str,
    /// Raft role.
    pub role: Role,
    /// Raft term.
    pub term: u64,
    /// Leader id, when known.
    pub leader_id: Option<u64>,
    /// Index of the last log entry this node holds.
    pub last_log_index: u64,
    /// Index of the last applied entry (the revision).
    pub applied_index: u64,
    /// SHA-256 of the kernel state at `state_digest_revision`.
    pub state_digest: String,
    /// The revision the digest is of: worked out in the background, so at
    /// most `DIGEST_INTERVAL_MIN_MS` (plus one digest) behind `applied_index`.
    pub state_digest_revision: u64,
    /// Members of the cluster.
    pub members: Vec<MemberStatus>,
    /// Keys in the trust store.
    pub key_count: usize,
    /// Engines in the registry.
    pub engine_count: usize,
    /// Engine versions in the registry.
    pub engine_version_count: usize,
    /// Tenants.
    pub tenant_count: usize,
    /// Whether root keys are installed.
    pub is_trust_bootstrapped: bool,
    /// Unix ms at which this process started.
    pub boot_time_ms: u64,
    /// Whether the Raft core is running (false after a fatal error).
    pub is_raft_running: bool,
    /// Whether the last clock check found this node's wall clock out of
    /// agreement with a majority of the voters (it will not lead).
    pub is_clock_distrusted: bool,
    /// A configuration conflict found at run time, if any.
    pub config_conflict: Option<String>,
    /// Events retained in the replicated history.
    pub event_history_events: usize,
    /// Highest revision no longer in the history (0: none compacted).
    pub event_history_compacted_through: u64,
    /// Idempotency keys remembered.
    pub idempotency_keys: usize,
    /// Watch streams open on this node.
    pub watchers_active: u64,
    /// Watchers cut off for not reading, since start.
    pub watchers_cut_off_total: u64,
}

impl NodeStatus {
    /// Collects the report.
    pub fn collect(ctx: &ApiContext, boot_time_ms: u64) -> NodeStatus {
        let metrics = ctx.raft.metrics().borrow().clone();
        let (state_digest_revision, digest) = ctx.shared.digest();
        let applied = ctx.shared.read();
        let applied_index = applied.revision();
        let membership = applied.membership.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberStatus {
                node_id: *id,
                region: node.region.clone(),
                zone: node.zone.clone(),
                client_addr: node.client_addr.clone(),
                peer_addr: node.peer_addr.clone(),
                is_voter: voters.contains(id),
                is_reachable: *id == ctx.identity.node_id
                    || ctx
                        .since_last_peer_answer(&node.peer_addr)
                        .is_some_and(|ago| ago < std::time::Duration::from_millis(PEER_REACHABLE_WINDOW_MS)),
                last_answer_ms_ago: ctx
                    .since_last_peer_answer(&node.peer_addr)
                    .map(|ago| u64::try_from(ago.as_millis()).unwrap_or(u64::MAX)),
            })
            .collect();
        let kernel = &applied.kernel;
        NodeStatus {
            node_id: ctx.identity.node_id,
            region: ctx.identity.region.clone(),
            zone: ctx.identity.zone.clone(),
            version: VERSION,
            role: metrics.state.into(),
            term: metrics.current_term,
            leader_id: metrics.current_leader,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index,
            state_digest: digest.to_string(),
            state_digest_revision,
            members,
            key_count: kernel.trust().len(),
            engine_count: kernel.registry().engine_count(),
            engine_version_count: kernel.registry().version_count(),
            tenant_count: kernel.tenants().len(),
            is_trust_bootstrapped: kernel.trust().is_bootstrapped(),
            boot_time_ms,
            is_raft_running: metrics.running_state.is_ok(),
            is_clock_distrusted: ctx.clock.is_distrusted(),
            config_conflict: ctx.config_conflict(),
            event_history_events: kernel.history().len(),
            event_history_compacted_through: kernel.history().compacted_through(),
            idempotency_keys: kernel.idempotency().len(),
            watchers_active: ctx.watch_stats.active.load(std::sync::atomic::Ordering::Relaxed),
            watchers_cut_off_total: ctx.watch_stats.cut_off_total.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The service.
pub struct ClusterApi {
    pub(crate) ctx: ApiContext,
    pub(crate) boot_time_ms: u64,
}

#[tonic::async_trait]
impl pb::cluster_service_server::ClusterService for ClusterApi {
    async fn get_status(&self, _request: Request<pb::GetStatusRequest>) -> Result<Response<pb::ClusterStatus>, Status> {
        let status = NodeStatus::collect(&self.ctx, self.boot_time_ms);
        let health = self.member_health(&status).await;
        let message = pb::ClusterStatus {
            node_id: status.node_id,
            region: status.region,
            zone: status.zone,
            version: status.version.to_owned(),
            role: pb::RaftRole::from(status.role) as i32,
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
            member_health: health,
            key_count: count(status.key_count),
            engine_count: count(status.engine_count),
            engine_version_count: count(status.engine_version_count),
            tenant_count: count(status.tenant_count),
            boot_time_ms: i64::try_from(status.boot_time_ms).unwrap_or(i64::MAX),
        };
        Ok(self.ctx.reply(message, status.applied_index))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let deadline = context::deadline(&request, MEMBERSHIP_DEADLINE_DEFAULT_MS);
        let result = async {
            let (node_id, node) = membership::learner_from(request.into_inner())?;
            let current = membership::leader_membership(&self.ctx)?;
            membership::check_add(&current, node_id, &node)?;
            tracing::info!(node_id, %node, "adding a learner");
            let started = tokio::time::Instant::now();
            let written = membership::within(deadline, self.ctx.raft.add_learner(node_id, node, false)).await?;
            // openraft's own "blocking" add only waits until the learner is within
            // replication_lag_threshold entries, which a short log satisfies at
            // once; wait instead until the learner holds the membership entry.
            membership::wait_learner_caught_up(
                &self.ctx,
                node_id,
                written.log_id.index,
                deadline - started.elapsed().min(deadline),
            )
            .await?;
            Ok(self.membership_reply(written.membership, written.log_id.index))
        }
        .await;
        self.ctx.answer(result)
    }

    async fn promote_member(
        &self,
        request: Request<pb::PromoteMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let deadline = context::deadline(&request, MEMBERSHIP_DEADLINE_DEFAULT_MS);
        let result = async {
            let node_id = request.into_inner().node_id;
            let current = membership::leader_membership(&self.ctx)?;
            if current.get_node(&node_id).is_none() {
                return Err(ApiError::Membership(MembershipError::NotFound { node_id }));
            }
            if current.voter_ids().any(|id| id == node_id) {
                // Already a voter: nothing to change.
                let revision = self.ctx.shared.read().revision();
                return Ok(self.membership_reply(Some(current), revision));
            }
            tracing::info!(node_id, "promoting a learner to voter");
            let change = ChangeMembers::AddVoterIds(BTreeSet::from([node_id]));
            let written = membership::within(deadline, self.ctx.raft.change_membership(change, false)).await?;
            Ok(self.membership_reply(written.membership, written.log_id.index))
        }
        .await;
        self.ctx.answer(result)
    }

    async fn transfer_leadership(
        &self,
        request: Request<pb::TransferLeadershipRequest>,
    ) -> Result<Response<pb::TransferLeadershipResponse>, Status> {
        let deadline = context::deadline(&request, TRANSFER_DEADLINE_DEFAULT_MS);
        let result = async {
            let node_id = request.into_inner().node_id;
            hand_over(&self.ctx, node_id, deadline).await?;
            Ok(self.transfer_reply())
        }
        .await;
        self.ctx.answer(result)
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let deadline = context::deadline(&request, MEMBERSHIP_DEADLINE_DEFAULT_MS);
        let result = async {
            let node_id = request.into_inner().node_id;
            let current = membership::leader_membership(&self.ctx)?;
            let change = membership::removal(&current, node_id)?;
            tracing::info!(node_id, "removing a member");
            let written = membership::within(deadline, self.ctx.raft.change_membership(change, false)).await?;
            Ok(self.membership_reply(written.membership, written.log_id.index))
        }
        .await;
        self.ctx.answer(result)
    }
}

/// Hands leadership from this leader to the voter `node_id` within
/// `deadline`: new writes wait (`NO_LEADER`, retryable) until the target
/// holds the whole log, heartbeats stop, and the target is told to campaign
/// just after the followers' lease. `Ok` once the target leads (or this
/// node is the target).
pub async fn hand_over(ctx: &ApiContext, node_id: u64, deadline: std::time::Duration) -> Result<(), ApiError> {
    let started = tokio::time::Instant::now();
    let remaining = || deadline.saturating_sub(started.elapsed());
    let current = membership::leader_membership(ctx)?;
    let target = current.get_node(&node_id).cloned().ok_or(MembershipError::NotFound { node_id })?;
    if !current.voter_ids().any(|id| id == node_id) {
        return Err(ApiError::Membership(MembershipError::NotVoter { node_id }));
    }
    if node_id == ctx.identity.node_id {
        return Ok(());
    }
    // New writes wait (NO_LEADER, retryable) so the target can hold the
    // whole log; the ones in flight finish first. Writes are paused from here.
    let pause = std::time::Duration::from_millis(TRANSFER_CATCH_UP_MS_MAX);
    let guard = ctx.begin_transfer(remaining().min(pause)).await?;
    let (last_log_index, term) = {
        let metrics = ctx.raft.metrics();
        let metrics = metrics.borrow();
        (metrics.last_log_index.unwrap_or(0), metrics.current_term)
    };
    // Writes wait meanwhile: a target that cannot catch up quickly is not
    // worth holding them for.
    let catch_up = remaining().min(pause.saturating_sub(started.elapsed()));
    membership::wait_learner_caught_up(ctx, node_id, last_log_index, catch_up).await?;
    tracing::info!(node_id, term, "handing leadership over");
    // Without heartbeats the followers' leader lease (election_timeout_max)
    // runs out; the target campaigns just after, before any other
    // follower's election timer (lease + a full election timeout) fires.
    guard.pause_heartbeats();
    let lease = std::time::Duration::from_millis(ctx.raft.config().election_timeout_max);
    let wait = lease + std::time::Duration::from_millis(TRANSFER_LEASE_MARGIN_MS);
    if !ctx.send_timeout_now(&target, term, wait, remaining()).await {
        return Err(ApiError::NodeUnavailable { detail: format!("transfer target {node_id} did not answer") });
    }
    let after_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
    ctx.raft
        .wait(Some(remaining()))
        .metrics(|m| m.current_leader == Some(node_id), "leadership transferred")
        .await
        .map_err(|_| ApiError::DeadlineExceeded { after_ms })?;
    drop(guard);
    Ok(())
}

/// Deadline of a leadership transfer when the caller sets none.
pub const TRANSFER_DEADLINE_DEFAULT_MS: u64 = 10_000;
/// Longest a transfer waits, with writes paused, for the writes in flight
/// and then for the target to hold the whole log. Writes are paused for at
/// most this plus the target's election, and where the old leader's vote
/// and the target's are not a majority (or the old leader is younger than
/// its lease), plus the followers' lease (`election_timeout_max`) and
/// `TRANSFER_LEASE_MARGIN_MS`.
pub const TRANSFER_CATCH_UP_MS_MAX: u64 = 500;
/// How long after the followers' lease the target campaigns.
pub const TRANSFER_LEASE_MARGIN_MS: u64 = 100;

/// How long GetStatus waits for each member's progress probe (all run at once).
pub const PROGRESS_PROBE_TIMEOUT_MS: u64 = 500;

/// Deadline of a membership change when the caller sets none (a learner may
/// need a snapshot before it has caught up).
pub const MEMBERSHIP_DEADLINE_DEFAULT_MS: u64 = 30_000;

impl ClusterApi {
    /// Every member's health: this node's own progress, and a concurrent,
    /// bounded probe of every other member.
    async fn member_health(&self, status: &NodeStatus) -> Vec<pb::MemberHealth> {
        let probe_timeout = std::time::Duration::from_millis(PROGRESS_PROBE_TIMEOUT_MS);
        let probes = status.members.iter().map(|member| async move {
            if member.node_id == status.node_id {
                return Some(context::MemberProgress {
                    applied_index: status.state_digest_revision,
                    state_digest: status.state_digest.clone(),
                });
            }
            self.ctx.member_progress(&member.peer_addr, probe_timeout).await
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

    fn transfer_reply(&self) -> (pb::TransferLeadershipResponse, u64) {
        let metrics = self.ctx.raft.metrics();
        let metrics = metrics.borrow();
        let response = pb::TransferLeadershipResponse {
            leader_id: metrics.current_leader.unwrap_or(0),
            term: metrics.current_term,
        };
        (response, metrics.last_applied.map_or(0, |log_id| log_id.index))
    }

    fn membership_reply(
        &self,
        written: Option<openraft::Membership<u64, crate::raft::KeelNode>>,
        revision: u64,
    ) -> (pb::MembershipResponse, u64) {
        let membership = written.unwrap_or_else(|| self.ctx.shared.read().membership.membership().clone());
        (pb::MembershipResponse { members: membership::members_to_pb(&membership), revision }, revision)
    }
}
