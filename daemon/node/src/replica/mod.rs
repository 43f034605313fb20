//! The replica: what makes this node one member of the replicated state
//! machine, below every service that uses it and above Raft.
//!
//! ```text
//!  api/ (client services)   replica::peer_service (peer port)   ops
//!          │                        │ Forward, ReadIndex             │
//!          ▼                        ▼                                ▼
//!  Replica ── propose(Write) ─► leads? ─ yes ─► stamp (LeaderClock) ─► raft.client_write ─► ApplyResponse
//!          │                           └ no ──► LeaderLink::forward ──► the leader's Replica::propose_here
//!          ├─ read(consistency) ─► [linearizable: ensure_linearizable here, or the leader's read index]
//!          │                      ─► Arc<AppliedState> (published per applied batch, never locked)
//!          ├─ transfer (hand_over), membership (add/promote/remove), status, clock check
//!          ▼
//!  raft/ (openraft, storage, state machine, Raft RPC client)
//! ```
//!
//! Every failure is a [`ReplicaError`], which is also what the leader
//! answers a forwarded write or a read index with: a forwarded write enters
//! the replica once, on the leader, and its outcome comes back unchanged.

pub mod clock_check;
mod error;
mod link;
pub mod membership;
pub mod peer_link;
pub mod peer_service;
#[cfg(test)]
mod peer_tests;
pub mod rejoin;
pub mod replace;
pub mod status;
pub mod transfer;

pub use error::ReplicaError;
pub use link::{Forwarded, LeaderLink, MemberProgress, NoLeaderLink, Route, Write};
pub use membership::{MembershipError, MembershipWritten};

use crate::leader_clock::LeaderClock;
use crate::raft::shared_state::{AppliedState, SharedState};
use crate::raft::{ApplyResponse, KeelNode, KeelRaft};
use keel_kernel::limits::Limit;
use keel_kernel::{Applied, Proposal};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Who this node is.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Raft node id.
    pub node_id: u64,
    /// Region name.
    pub region: String,
    /// Zone name.
    pub zone: String,
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read began: the leader
    /// confirms its leadership with a quorum, and this node has applied
    /// the leader's commit index.
    Linearizable,
    /// This node's applied state as it is, possibly behind the leader.
    Serializable,
}

/// Refuses a write whose log entry would be over `PROPOSAL_BYTES_MAX`:
/// the leader could append it but never send it to a follower, and no later
/// write would commit. Measured as the bincode the log stores: bincode
/// writes a struct as the tuple of its fields, and the stamp fields have a
/// fixed size, so this tuple measures exactly what the `Proposal` will.
pub fn check_proposal_bytes(write: &Write) -> Result<(), ReplicaError> {
    let fields = (0u64, 0u32, &write.command, &write.idempotency_key, &write.actor);
    let bytes = bincode::serialized_size(&fields).map_err(ReplicaError::internal)?;
    Limit::ProposalBytes.check(usize::try_from(bytes).unwrap_or(usize::MAX))?;
    Ok(())
}

/// Where a linearizable barrier on this node ended.
enum Barrier {
    /// This node leads and has applied up to the read index.
    Passed(u64),
    /// Another node leads.
    Leader(u64, KeelNode),
}

/// This node as a member: its Raft, its published state, and the mechanics
/// of proposing and reading. Cheap to clone.
#[derive(Clone)]
pub struct Replica {
    /// The Raft handle.
    pub raft: KeelRaft,
    /// The applied state, published per batch.
    pub shared: Arc<SharedState>,
    /// This node.
    pub identity: Arc<Identity>,
    /// Stamps proposals: monotonic, and bounded by the time the voters
    /// agree on (see `leader_clock`).
    pub clock: Arc<LeaderClock>,
    /// How this node reaches the leader when it does not lead.
    link: Arc<dyn LeaderLink>,
    /// A configuration conflict found at run time (e.g. initial members that
    /// disagree with the cluster); the node reports it as not ready.
    config_conflict: Arc<std::sync::Mutex<Option<String>>>,
    /// Set while this leader hands leadership over (one at a time).
    is_transferring: Arc<AtomicBool>,
    /// Every write proposed here holds a read permit until it is answered;
    /// a leadership transfer takes the write side, so new writes are refused
    /// (retryable) and the ones in flight are done before the transfer reads
    /// the log's end.
    write_gate: Arc<tokio::sync::RwLock<()>>,
    /// Whether this member may vote (see `rejoin`).
    standing: Arc<std::sync::Mutex<rejoin::StandingState>>,
    /// Whether this member campaigns: every reason to hold back, in one place.
    pub elect: Arc<rejoin::ElectSwitch>,
    /// As leader: members being replaced, and automatic changes made (see `replace`).
    pub replacements: Arc<replace::Replacements>,
}

impl Replica {
    /// The replica of one node, stamping with `clock`.
    pub fn new(
        raft: KeelRaft,
        shared: Arc<SharedState>,
        identity: Identity,
        link: Arc<dyn LeaderLink>,
        clock: LeaderClock,
    ) -> Replica {
        Replica {
            raft,
            shared,
            identity: Arc::new(identity),
            clock: Arc::new(clock),
            link,
            config_conflict: Arc::default(),
            is_transferring: Arc::default(),
            write_gate: Arc::default(),
            standing: Arc::default(),
            elect: Arc::default(),
            replacements: Arc::default(),
        }
    }

    /// The path to the leader.
    pub fn link(&self) -> &dyn LeaderLink {
        self.link.as_ref()
    }

    /// Records a configuration conflict (reported by `/readyz` and `/diagz`).
    pub fn set_config_conflict(&self, conflict: String) {
        *self.config_conflict.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(conflict);
    }

    /// The configuration conflict, if any.
    pub fn config_conflict(&self) -> Option<String> {
        self.config_conflict.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Proposes `write` and waits for it to apply, here if this node leads,
    /// else through the leader (the [`LeaderLink`]). Returns the outcome and
    /// the revision it was applied at (for a replayed idempotency key, the
    /// revision that first applied it).
    pub async fn propose(&self, write: Write, deadline: Duration) -> Result<(Applied, u64), ReplicaError> {
        check_proposal_bytes(&write)?;
        let Forwarded { response, revision } = match self.propose_here(write, deadline).await? {
            Route::Applied(forwarded) => forwarded,
            Route::Leader { leader_id, leader, write } => {
                self.link.forward(leader_id, &leader, write, deadline).await.map_err(|e| e.from_leader(leader_id))?
            }
        };
        match response {
            ApplyResponse::Applied(applied) => {
                let revision = applied.replay_of.unwrap_or(revision);
                Ok((applied, revision))
            }
            ApplyResponse::Rejected(rejection) => Err(ReplicaError::Rejected(rejection)),
            ApplyResponse::NoCommand => {
                Err(ReplicaError::internal(anyhow::anyhow!("a command entry was answered as a non-command entry")))
            }
        }
    }

    /// Proposes `write` on this node, stamped with its clock (monotonic), if
    /// it leads; otherwise hands the write back with the leader to send it to.
    /// A forwarded write lands here on the leader. Leadership is checked before
    /// proposing because `client_write` consumes the command; if leadership is
    /// lost in between, the caller gets `NOT_LEADER` and retries.
    pub async fn propose_here(&self, write: Write, deadline: Duration) -> Result<Route, ReplicaError> {
        if let Some((leader_id, leader)) = self.other_leader() {
            return Ok(Route::Leader { leader_id, leader, write });
        }
        // Held until the write is answered (see `transfer`).
        let Ok(_admitted) = self.write_gate.try_read() else {
            return Err(ReplicaError::NoLeader);
        };
        // A forwarded write lands here without passing `propose`.
        check_proposal_bytes(&write)?;
        let replicated_ms = self.shared.read().kernel.clock_ms();
        let leader_time_ms = self
            .clock
            .stamp(replicated_ms)
            .map_err(|disagrees| ReplicaError::LeaderClockSkew { skew_max_ms: disagrees.skew_max_ms })?;
        let proposal = Proposal {
            leader_time_ms,
            semantics_version: keel_kernel::judge::SEMANTICS_VERSION,
            command: write.command,
            idempotency_key: write.idempotency_key,
            actor: write.actor,
        };
        let response = tokio::time::timeout(deadline, self.raft.client_write(proposal))
            .await
            .map_err(|_| ReplicaError::deadline(deadline))?;
        match response {
            Ok(response) => Ok(Route::Applied(Forwarded { response: response.data, revision: response.log_id.index })),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(ReplicaError::not_leader(forward.leader_id, forward.leader_node.map(|node| node.client_addr)))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error))) => {
                Err(ReplicaError::internal(error))
            }
            Err(RaftError::Fatal(fatal)) => Err(ReplicaError::NodeUnavailable { detail: fatal.to_string() }),
        }
    }

    /// The leader and its addresses when another node leads.
    fn other_leader(&self) -> Option<(u64, KeelNode)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader_id = metrics.current_leader?;
        if leader_id == self.identity.node_id {
            return None;
        }
        let leader = metrics.membership_config.membership().get_node(&leader_id)?.clone();
        Some((leader_id, leader))
    }

    /// The applied state once a read at `consistency` may be served from it.
    pub async fn read(&self, consistency: Consistency, deadline: Duration) -> Result<Arc<AppliedState>, ReplicaError> {
        if consistency == Consistency::Linearizable {
            self.read_barrier(deadline).await?;
        }
        Ok(self.shared.read())
    }

    /// Waits until this node has applied everything committed before the
    /// call: on the leader after confirming its leadership with a quorum, on
    /// a follower after the leader named its read index.
    async fn read_barrier(&self, deadline: Duration) -> Result<(), ReplicaError> {
        let started = tokio::time::Instant::now();
        let (leader_id, leader) = match self.barrier_here(deadline).await? {
            Barrier::Passed(_) => return Ok(()),
            Barrier::Leader(leader_id, leader) => (leader_id, leader),
        };
        let read_index =
            self.link.read_index(leader_id, &leader, deadline).await.map_err(|error| error.from_leader(leader_id))?;
        let remaining = deadline.saturating_sub(started.elapsed());
        self.raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(read_index), "linearizable read on a follower")
            .await
            .map(|_| ())
            .map_err(|error| membership::wait_error(error, deadline))
    }

    /// The read index, if this node leads: it confirmed its leadership with
    /// a quorum and applied up to its commit index; 0 before any entry.
    /// What the leader answers a follower's `ReadIndex` with.
    pub async fn read_index_here(&self, deadline: Duration) -> Result<u64, ReplicaError> {
        match self.barrier_here(deadline).await? {
            Barrier::Passed(read_index) => Ok(read_index),
            Barrier::Leader(leader_id, leader) => {
                Err(ReplicaError::NotLeader { leader_id: Some(leader_id), leader_addr: Some(leader.client_addr) })
            }
        }
    }

    async fn barrier_here(&self, deadline: Duration) -> Result<Barrier, ReplicaError> {
        match tokio::time::timeout(deadline, self.raft.ensure_linearizable()).await {
            Err(_elapsed) => Err(ReplicaError::deadline(deadline)),
            Ok(Ok(read_log_id)) => Ok(Barrier::Passed(read_log_id.map_or(0, |log_id| log_id.index))),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
                match (forward.leader_id, forward.leader_node) {
                    (Some(leader_id), Some(leader)) => Ok(Barrier::Leader(leader_id, leader)),
                    (leader_id, _) => Err(ReplicaError::not_leader(leader_id, None)),
                }
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => Err(ReplicaError::NoLeader),
            Ok(Err(RaftError::Fatal(fatal))) => Err(ReplicaError::NodeUnavailable { detail: fatal.to_string() }),
        }
    }

    /// The leader this node knows of, if any.
    pub fn current_leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// Voters in the membership this member holds (at least 1).
    pub fn voter_count(&self) -> usize {
        self.raft.metrics().borrow().membership_config.membership().voter_ids().count().max(1)
    }

    /// Every member (voters and learners) this member knows: (id, peer address).
    pub fn member_peers(&self) -> Vec<(u64, String)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.membership_config.membership().nodes().map(|(id, node)| (*id, node.peer_addr.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_kernel::Command;

    #[test]
    fn a_write_is_measured_exactly_as_the_log_stores_its_proposal() {
        let command = Command::PublishEvent {
            topic: keel_kernel::Name::parse("topic", "deploys").expect("name"),
            tenant: None,
            engine: None,
            payload: vec![7; 1000],
        };
        for idempotency_key in [None, Some("k-1".to_owned())] {
            let write = Write { command: command.clone(), idempotency_key: idempotency_key.clone(), actor: None };
            let proposal = Proposal {
                leader_time_ms: u64::MAX,
                semantics_version: u32::MAX,
                command: command.clone(),
                idempotency_key,
                actor: None,
            };
            let fields = (0u64, 0u32, &write.command, &write.idempotency_key, &write.actor);
            assert_eq!(bincode::serialized_size(&fields).ok(), bincode::serialized_size(&proposal).ok());
        }
        let huge = Write {
            command: Command::PublishEvent {
                topic: keel_kernel::Name::parse("topic", "deploys").expect("name"),
                tenant: None,
                engine: None,
                payload: vec![7; keel_kernel::limits::PROPOSAL_BYTES_MAX],
            },
            idempotency_key: None,
            actor: None,
        };
        assert!(matches!(
            check_proposal_bytes(&huge),
            Err(ReplicaError::Rejected(keel_kernel::Rejection::LimitExceeded { limit: Limit::ProposalBytes, .. }))
        ));
    }
}
