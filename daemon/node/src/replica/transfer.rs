//! Leadership transfer: the leader hands over to a voter that holds the
//! whole log, pausing writes for as short a time as it can.
//!
//! ```text
//!  hand_over(target) ─► target a voter? ─► close the write gate (in-flight writes finish, new ones NO_LEADER)
//!     ─► target caught up to the log's end (≤ TRANSFER_CATCH_UP_MS_MAX) ─► heartbeats and own elections off
//!     ─► TimeoutNow(target, term, wait = lease + margin) ─► target campaigns at once, again after `wait`
//!     ─► target leads ─► gate reopens (the guard drops, whatever happened)
//! ```

use super::membership::{MembershipError, wait_error};
use super::{Replica, ReplicaError};
use crate::limits::{TRANSFER_CATCH_UP_MS_MAX, TRANSFER_LEASE_MARGIN_MS};
use crate::raft::KeelRaft;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Holds a leadership transfer open: heartbeats and this node's own
/// elections are off while it lives; on drop they are back on and writes
/// are accepted again, whatever happened.
struct TransferGuard {
    raft: KeelRaft,
    elect: Arc<super::rejoin::ElectSwitch>,
    is_transferring: Arc<AtomicBool>,
    _writes_held: tokio::sync::OwnedRwLockWriteGuard<()>,
}

impl TransferGuard {
    /// Stops this leader's heartbeats so the followers' lease runs out, and
    /// its election timer: once the target's campaign deposes it, it must
    /// not campaign against the target (a young leader refuses the target's
    /// first vote by its own lease and would otherwise win back with it).
    fn pause_heartbeats(&self) {
        self.raft.runtime_config().heartbeat(false);
        self.elect.hold(&self.raft, super::rejoin::Hold::HandingOver, true);
    }
}

impl Drop for TransferGuard {
    fn drop(&mut self) {
        self.raft.runtime_config().heartbeat(true);
        self.elect.hold(&self.raft, super::rejoin::Hold::HandingOver, false);
        self.is_transferring.store(false, Ordering::Release);
    }
}

impl Replica {
    /// Marks a leadership transfer in progress until the guard drops: new
    /// writes are refused from now on, and the guard is handed out once the
    /// writes in flight are answered (within `drain`), so nothing is appended
    /// after the caller reads the log's end.
    async fn begin_transfer(&self, drain: Duration) -> Result<TransferGuard, ReplicaError> {
        if self.is_transferring.swap(true, Ordering::AcqRel) {
            return Err(ReplicaError::MembershipChangeInProgress);
        }
        let drained = tokio::time::timeout(drain, Arc::clone(&self.write_gate).write_owned()).await;
        let Ok(writes_held) = drained else {
            self.is_transferring.store(false, Ordering::Release);
            return Err(ReplicaError::deadline(drain));
        };
        Ok(TransferGuard {
            raft: self.raft.clone(),
            elect: Arc::clone(&self.elect),
            is_transferring: self.is_transferring.clone(),
            _writes_held: writes_held,
        })
    }

    /// Hands leadership from this leader to the voter `node_id` within
    /// `deadline`: new writes wait (`NO_LEADER`, retryable) until the target
    /// holds the whole log, heartbeats stop, and the target is told to
    /// campaign. `Ok` once the target leads (or this node is the target).
    pub async fn hand_over(&self, node_id: u64, deadline: Duration) -> Result<(), ReplicaError> {
        let started = tokio::time::Instant::now();
        let remaining = || deadline.saturating_sub(started.elapsed());
        let current = self.leader_membership()?;
        let target = current.get_node(&node_id).cloned().ok_or(MembershipError::NotFound { node_id })?;
        if !current.voter_ids().any(|id| id == node_id) {
            return Err(MembershipError::NotVoter { node_id }.into());
        }
        if node_id == self.identity.node_id {
            return Ok(());
        }
        // New writes wait (NO_LEADER, retryable) so the target can hold the
        // whole log; the ones in flight finish first. Writes are paused from here.
        let pause = Duration::from_millis(TRANSFER_CATCH_UP_MS_MAX);
        let guard = self.begin_transfer(remaining().min(pause)).await?;
        let (last_log_index, term) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.last_log_index.unwrap_or(0), metrics.current_term)
        };
        // Writes wait meanwhile: a target that cannot catch up quickly is not
        // worth holding them for.
        let catch_up = remaining().min(pause.saturating_sub(started.elapsed()));
        self.wait_caught_up(node_id, last_log_index, catch_up).await?;
        tracing::info!(node_id, term, "handing leadership over");
        // Without heartbeats the followers' leader lease (election_timeout_max)
        // runs out; the target campaigns at once (the old leader's vote and
        // its own are a majority of three) and again just after the lease,
        // before any other follower's election timer (lease + a full
        // election timeout) fires.
        guard.pause_heartbeats();
        let lease = Duration::from_millis(self.raft.config().election_timeout_max);
        let wait = lease + Duration::from_millis(TRANSFER_LEASE_MARGIN_MS);
        let me = self.identity.node_id;
        if !self.link.timeout_now(&target, me, term, wait, remaining()).await {
            return Err(ReplicaError::NodeUnavailable { detail: format!("transfer target {node_id} did not answer") });
        }
        self.raft
            .wait(Some(remaining()))
            .metrics(|m| m.current_leader == Some(node_id), "leadership transferred")
            .await
            .map_err(|error| wait_error(error, deadline))?;
        drop(guard);
        Ok(())
    }

    /// Graceful stop: when this node leads and another voter exists, hands
    /// leadership to the voter whose log matches furthest (within
    /// `deadline`), so the cluster does not wait out an election timeout.
    /// Answers the new leader, or `None` when there was nothing to hand over.
    pub async fn step_down(&self, deadline: Duration) -> Result<Option<u64>, ReplicaError> {
        let Ok(membership) = self.leader_membership() else {
            return Ok(None);
        };
        let me = self.identity.node_id;
        let target = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let matched = |id: u64| {
                metrics
                    .replication
                    .as_ref()
                    .and_then(|replication| replication.get(&id).copied().flatten())
                    .map_or(0, |log_id| log_id.index)
            };
            membership.voter_ids().filter(|id| *id != me).max_by_key(|id| (matched(*id), std::cmp::Reverse(*id)))
        };
        let Some(target) = target else {
            return Ok(None);
        };
        self.hand_over(target, deadline).await?;
        Ok(Some(target))
    }
}
