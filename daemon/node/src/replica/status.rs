//! This node's view of itself and the cluster: what `/readyz`, `/diagz`,
//! `/metrics` and `GetStatus` report. Collecting it reads Raft's metrics and
//! the published state, never the whole state: the digest is the one the
//! background digester last published.

use super::Replica;
use openraft::ServerState;
use serde::Serialize;

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
    /// most `DIGEST_STALE_MAX_MS` (plus one digest) behind `applied_index`, and
    /// equal to it `DIGEST_QUIET_MS` after writes pause.
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
    /// What the snapshot builder last did.
    pub snapshot: crate::raft::shared_state::SnapshotStats,
    /// Idempotency keys remembered.
    pub idempotency_keys: usize,
    /// Whether this member votes, and what it waits for if not.
    pub standing: super::rejoin::StandingState,
    /// Automatic membership changes made while leading.
    pub member_changes: Vec<super::replace::MemberChange>,
}

impl NodeStatus {
    /// Collects the report.
    pub fn collect(replica: &Replica, boot_time_ms: u64) -> NodeStatus {
        let metrics = replica.raft.metrics().borrow().clone();
        let (state_digest_revision, digest) = replica.shared.digest();
        let applied = replica.shared.read();
        let applied_index = applied.revision();
        let membership = applied.membership.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let since_last_answer = replica.link().since_last_answer(&node.peer_addr);
                MemberStatus {
                    node_id: *id,
                    region: node.region.clone(),
                    zone: node.zone.clone(),
                    client_addr: node.client_addr.clone(),
                    peer_addr: node.peer_addr.clone(),
                    is_voter: voters.contains(id),
                    is_reachable: *id == replica.identity.node_id
                        || since_last_answer
                            .is_some_and(|ago| ago < std::time::Duration::from_millis(PEER_REACHABLE_WINDOW_MS)),
                    last_answer_ms_ago: since_last_answer.map(|ago| u64::try_from(ago.as_millis()).unwrap_or(u64::MAX)),
                }
            })
            .collect();
        let kernel = &applied.kernel;
        NodeStatus {
            node_id: replica.identity.node_id,
            region: replica.identity.region.clone(),
            zone: replica.identity.zone.clone(),
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
            is_clock_distrusted: replica.clock.is_distrusted(),
            config_conflict: replica.config_conflict(),
            event_history_events: kernel.history().len(),
            event_history_compacted_through: kernel.history().compacted_through(),
            snapshot: replica.shared.snapshot_stats(),
            idempotency_keys: kernel.idempotency().len(),
            standing: replica.standing(),
            member_changes: replica.replacements.changes(),
        }
    }
}
