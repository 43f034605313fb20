//! The clock check every member runs (see `leader_clock`): each
//! `CLOCK_CHECK_INTERVAL_MS` it asks every other voter for its wall clock
//! and records whether a majority agrees with its own. A leader found out of
//! agreement stops stamping (`LEADER_CLOCK_SKEW`) and hands leadership to a
//! voter that answered within the bound.
//!
//! ```text
//!  tick ─► voters from the applied membership ─► Clock RPC to each (≤ CLOCK_PROBE_DEADLINE_MS, all at once)
//!       ─► offset = their clock − our clock at the probe's midpoint
//!       ─► agreement(offsets) ─► LeaderClock::record
//!       ─► leader and distrusted ─► hand_over(a voter within the bound)
//! ```

use super::Replica;
use crate::leader_clock::{ClockAgreement, agreement};
use crate::limits::TRANSFER_DEADLINE_DEFAULT_MS;
use crate::limits::{CLOCK_CHECK_INTERVAL_MS, CLOCK_PROBE_DEADLINE_MS};
use std::time::Duration;
use tokio::sync::watch;

/// Runs the check until `stop` turns true.
pub async fn run(replica: Replica, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(CLOCK_CHECK_INTERVAL_MS));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => check_once(&replica).await,
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

async fn check_once(replica: &Replica) {
    let me = replica.identity.node_id;
    let voters: Vec<(u64, String)> = {
        let state = replica.shared.read();
        let membership = state.membership.membership();
        membership
            .voter_ids()
            .filter(|id| *id != me)
            .filter_map(|id| membership.get_node(&id).map(|node| (id, node.peer_addr.clone())))
            .collect()
    };
    let deadline = Duration::from_millis(CLOCK_PROBE_DEADLINE_MS);
    let probes = voters.iter().map(|(id, peer_addr)| async move {
        let sent_ms = replica.clock.wall_now_ms();
        let theirs = replica.link().wall_clock(peer_addr, deadline).await?;
        let received_ms = replica.clock.wall_now_ms();
        let midpoint_ms = sent_ms / 2 + received_ms / 2;
        let offset = i128::from(theirs) - i128::from(midpoint_ms);
        Some((*id, i64::try_from(offset).unwrap_or(if offset < 0 { i64::MIN } else { i64::MAX })))
    });
    let answers: Vec<Option<(u64, i64)>> = futures::future::join_all(probes).await;
    let offsets: Vec<Option<i64>> = answers.iter().map(|answer| answer.map(|(_, offset)| offset)).collect();
    let skew_max_ms = replica.clock.skew_max_ms();
    let found = agreement(&offsets, skew_max_ms);
    replica.clock.record(found);
    let is_leader = replica.raft.metrics().borrow().current_leader == Some(me);
    if found == ClockAgreement::Disagrees && is_leader {
        // A majority answered outside our bound, so the voters that answered
        // agree with each other more than with us: hand over to one of them.
        let target = answers.iter().flatten().map(|(id, _)| *id).next();
        if let Some(target) = target {
            tracing::warn!(target, "handing leadership over: this node's clock disagrees with the voters");
            let deadline = Duration::from_millis(TRANSFER_DEADLINE_DEFAULT_MS);
            if let Err(error) = replica.hand_over(target, deadline).await {
                tracing::warn!(%error, target, "handing leadership over failed; retrying at the next check");
            }
        }
    }
}
