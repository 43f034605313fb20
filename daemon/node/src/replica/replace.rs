//! Members that replace themselves: the leader's side, and the dead-member rule.
//!
//! ```text
//!  Rejoin{node, incarnation} ─► leader? ─ no ─► answer with the leader it knows
//!        │ yes: the id is a member (voter, or learner demoted by the rule below), at the same addresses
//!        ▼
//!  one membership job at a time (a replacement or a dead-member removal):
//!    voter? ─► remaining voters answer (a majority of them)? ─► RemoveVoters(retain as learner)
//!    event {kind: "replacing"} at index t ─► wait until the learner matched t
//!    ─► promote ─► done at the promoting index
//!    ─► event `keel-members` {kind: "replaced"} and status `member_changes`
//!
//!  dead-member rule (leader, every DEAD_MEMBER_CHECK_INTERVAL_MS, when remove_unreachable_after_ms > 0):
//!    a voter silent for longer than that (counted within this leadership), voters − 1 ≥ min_voters,
//!    a majority of the rest answer ─► demote it to a learner ─► event {kind: "removed"}
//!    (back, it asks to rejoin like a replaced member; `keelctl cluster remove` removes for good)
//! ```
//!
//! Every step is a membership change through the log (joint consensus in
//! openraft), so a leader change halfway leaves a consistent membership; the
//! member asks again and the new leader continues from what it finds.

use super::Replica;
use super::rejoin::{RejoinAnswer, RejoinAsk, Step};
use crate::limits::REJOIN_CATCH_UP_MS_MAX;
use crate::raft::NodeId;
use openraft::ChangeMembers;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Longest one membership change may take to commit.
pub const MEMBERSHIP_CHANGE_DEADLINE_MS: u64 = 10_000;
/// Automatic membership changes kept for status.
pub const MEMBER_CHANGES_KEPT: usize = 16;
/// How often the leader applies the dead-member rule.
pub const DEAD_MEMBER_CHECK_INTERVAL_MS: u64 = 1_000;
/// A voter that answered a peer call this recently counts as healthy.
pub const HEALTHY_WITHIN_MS: u64 = 2_000;
/// The event topic of automatic membership changes.
pub const MEMBER_EVENTS_TOPIC: &str = "keel-members";
/// Longest publishing the event of a change may take.
const MEMBER_EVENT_DEADLINE_MS: u64 = 5_000;

/// One automatic membership change, as status shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemberChange {
    /// The member.
    pub node_id: NodeId,
    /// `replaced` or `removed`.
    pub kind: &'static str,
    /// Wall clock of the leader that made it, Unix ms.
    pub at_ms: u64,
    /// The membership's log index.
    pub revision: u64,
    /// What happened.
    pub detail: String,
}

#[derive(Debug)]
struct Job {
    /// The incarnation asking last: a task replaces that one.
    incarnation: String,
    step: Step,
    voter_index: u64,
    detail: String,
    /// A task for this member is queued or running (at most one per member).
    has_task: bool,
}

#[derive(Debug, Default)]
struct Book {
    jobs: BTreeMap<NodeId, Job>,
    changes: VecDeque<MemberChange>,
}

/// The leader's replacements and removals.
#[derive(Debug, Default)]
pub struct Replacements {
    book: std::sync::Mutex<Book>,
    /// One membership job at a time.
    job: tokio::sync::Mutex<()>,
}

impl Replacements {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records how far the replacement of `incarnation` got (nothing if a
    /// newer incarnation asks meanwhile: its task starts over).
    fn set_step(&self, node_id: NodeId, incarnation: &str, step: Step, detail: impl Into<String>) {
        if let Some(job) = self.book().jobs.get_mut(&node_id)
            && job.incarnation == incarnation
        {
            job.step = step;
            job.detail = detail.into();
        }
    }

    fn record(&self, change: MemberChange) {
        let mut book = self.book();
        if book.changes.len() >= MEMBER_CHANGES_KEPT {
            book.changes.pop_front();
        }
        book.changes.push_back(change);
    }

    /// The automatic changes this node made as leader, oldest first.
    pub fn changes(&self) -> Vec<MemberChange> {
        self.book().changes.iter().cloned().collect()
    }
}

impl Replica {
    /// The peer address of the leader this member knows.
    pub fn leader_peer_addr(&self) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        metrics.membership_config.membership().get_node(&leader).map(|node| node.peer_addr.clone())
    }

    /// The leader's answer to a member asking to be replaced; starts the
    /// replacement if it is new.
    pub fn answer_rejoin(&self, ask: RejoinAsk) -> RejoinAnswer {
        let leader_id = self.raft.metrics().borrow().current_leader;
        let leader_peer_addr = self.leader_peer_addr().unwrap_or_default();
        let answer = |is_leader: bool, step: Step, voter_index: u64, detail: String| RejoinAnswer {
            is_leader,
            leader_id,
            leader_peer_addr: leader_peer_addr.clone(),
            step,
            voter_index,
            detail,
        };
        let Ok(membership) = self.leader_membership() else {
            return answer(false, Step::Queued, 0, "not the leader".into());
        };
        if ask.node_id == self.identity.node_id {
            return answer(true, Step::Refused, 0, "the leader cannot replace itself".into());
        }
        // Only a member (a voter, or a learner the dead-member rule demoted):
        // one removed by hand stays removed.
        let Some(known) = membership.get_node(&ask.node_id).cloned() else {
            return answer(
                true,
                Step::Refused,
                0,
                format!("node {} is not a member (removed by hand?); join it with keelctl cluster join", ask.node_id),
            );
        };
        if known.peer_addr != ask.peer_addr || known.client_addr != ask.client_addr {
            return answer(
                true,
                Step::Refused,
                0,
                format!(
                    "node {} is at client={} peer={} but asks from client={} peer={}; remove it and join it by hand",
                    ask.node_id, known.client_addr, known.peer_addr, ask.client_addr, ask.peer_addr
                ),
            );
        }
        let mut book = self.replacements.book();
        let job = book.jobs.entry(ask.node_id).or_insert_with(|| Job {
            incarnation: String::new(),
            step: Step::Failed,
            voter_index: 0,
            detail: String::new(),
            has_task: false,
        });
        if job.incarnation == ask.incarnation && job.step != Step::Failed {
            return answer(true, job.step, job.voter_index, job.detail.clone());
        }
        tracing::warn!(node_id = ask.node_id, incarnation = %ask.incarnation, "a member asks to be replaced");
        job.incarnation = ask.incarnation.clone();
        job.step = Step::Queued;
        job.voter_index = 0;
        job.detail = String::new();
        // One task per member: a queued or running one picks up the newest
        // incarnation when it starts (or again when it finishes).
        if !job.has_task {
            job.has_task = true;
            let replica = self.clone();
            let (node_id, peer_addr) = (ask.node_id, ask.peer_addr.clone());
            tokio::spawn(async move { replica.run_replacement(node_id, peer_addr).await });
        }
        answer(true, Step::Queued, 0, String::new())
    }

    /// Replaces `node_id` until the incarnation it replaced is the newest
    /// that asked (one membership job at a time across the cluster's members).
    async fn run_replacement(&self, node_id: NodeId, peer_addr: String) {
        let _one_at_a_time = self.replacements.job.lock().await;
        loop {
            let Some(incarnation) = self.replacements.book().jobs.get(&node_id).map(|job| job.incarnation.clone())
            else {
                return;
            };
            let outcome = self.replace(node_id, &peer_addr, &incarnation).await;
            // Some(change to publish) when this incarnation's outcome stands.
            let settled = {
                let mut book = self.replacements.book();
                let Some(job) = book.jobs.get_mut(&node_id) else {
                    return;
                };
                if job.incarnation != incarnation {
                    None // a newer incarnation asked meanwhile: replace that one
                } else {
                    job.has_task = false;
                    Some(match outcome {
                        Ok(revision) => {
                            let detail = format!("incarnation {incarnation} promoted");
                            tracing::info!(node_id, revision, "member replaced: a voter again");
                            job.step = Step::Done;
                            job.voter_index = revision;
                            job.detail = detail.clone();
                            Some(MemberChange { node_id, kind: "replaced", at_ms: 0, revision, detail })
                        }
                        Err(detail) => {
                            tracing::warn!(node_id, %detail, "replacing a member failed; it will ask again");
                            job.step = Step::Failed;
                            job.detail = detail;
                            None
                        }
                    })
                }
            };
            match settled {
                None => continue,
                Some(Some(change)) => self.record_change(change).await,
                Some(None) => {}
            }
            return;
        }
    }

    /// Remove as a voter (kept as a learner), catch up, promote; the
    /// promoting membership's index.
    async fn replace(&self, node_id: NodeId, peer_addr: &str, incarnation: &str) -> Result<u64, String> {
        let deadline = Duration::from_millis(MEMBERSHIP_CHANGE_DEADLINE_MS);
        let step = |step: Step, detail: String| self.replacements.set_step(node_id, incarnation, step, detail);
        let membership = self.leader_membership().map_err(|error| error.to_string())?;
        // Still at the address it asked from (it may have been removed by hand meanwhile).
        if membership.get_node(&node_id).is_none_or(|known| known.peer_addr != peer_addr) {
            return Err(format!("node {node_id} is no longer a member at {peer_addr}"));
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if voters.contains(&node_id) {
            let remaining: Vec<NodeId> = voters.iter().copied().filter(|id| *id != node_id).collect();
            self.check_majority_answers(&remaining)?;
            step(Step::Removing, "removing the old incarnation as a voter".into());
            let change = ChangeMembers::RemoveVoters(BTreeSet::from([node_id]));
            // retain: it stays a learner, so the log keeps flowing to it.
            super::membership::within(deadline, self.raft.change_membership(change, true))
                .await
                .map_err(|error| format!("removing the voter: {error}"))?;
        }
        // A fresh entry to catch up to: the leader's progress for this member
        // may still be the old incarnation's until a heartbeat meets the
        // empty log, so the target must lie past it.
        let event = MemberChange {
            node_id,
            kind: "replacing",
            at_ms: 0,
            revision: 0,
            detail: format!("incarnation {incarnation}: catching up before it votes"),
        };
        let target =
            self.publish_change(&event).await.map_err(|error| format!("recording the replacement: {error}"))?;
        step(Step::CatchingUp, format!("receiving the log up to index {target}"));
        self.wait_caught_up(node_id, target, Duration::from_millis(REJOIN_CATCH_UP_MS_MAX))
            .await
            .map_err(|error| format!("catching up: {error}"))?;
        step(Step::Promoting, "making it a voter".into());
        let written = self.promote(node_id, deadline).await.map_err(|error| format!("promoting: {error}"))?;
        Ok(written.revision)
    }

    /// Whether `peer` answered a peer call within `within` (this node always has).
    fn answered_within(&self, node_id: NodeId, peer_addr: &str, within: Duration) -> bool {
        node_id == self.identity.node_id || self.link().since_last_answer(peer_addr).is_some_and(|ago| ago <= within)
    }

    /// Err unless a majority of `voters` answered recently.
    fn check_majority_answers(&self, voters: &[NodeId]) -> Result<(), String> {
        let membership = self.leader_membership().map_err(|error| error.to_string())?;
        let within = Duration::from_millis(HEALTHY_WITHIN_MS);
        let answering = voters
            .iter()
            .filter(|id| {
                membership.get_node(id).is_some_and(|node| self.answered_within(**id, &node.peer_addr, within))
            })
            .count();
        let majority = voters.len() / 2 + 1;
        if answering < majority {
            return Err(format!(
                "only {answering} of the {} other voters answer; a majority ({majority}) must before a voter is removed",
                voters.len()
            ));
        }
        Ok(())
    }

    /// Keeps `change` for status and publishes it as a `keel-members` event.
    async fn record_change(&self, mut change: MemberChange) {
        change.at_ms = self.clock.wall_now_ms();
        self.replacements.record(change.clone());
        if let Err(error) = self.publish_change(&change).await {
            tracing::warn!(%error, node_id = change.node_id, "a membership change was not published as an event");
        }
    }

    /// Publishes `change` as a `keel-members` event; its revision.
    async fn publish_change(&self, change: &MemberChange) -> Result<u64, super::ReplicaError> {
        let topic = keel_kernel::Name::parse("topic", MEMBER_EVENTS_TOPIC).map_err(super::ReplicaError::Rejected)?;
        let payload = serde_json::json!({
            "kind": change.kind,
            "node_id": change.node_id,
            "revision": change.revision,
            "detail": change.detail,
        });
        let command = keel_kernel::Command::PublishEvent {
            topic,
            tenant: None,
            engine: None,
            payload: payload.to_string().into_bytes(),
        };
        let write = super::Write { command, idempotency_key: None, actor: None };
        let (_, revision) = self.propose(write, Duration::from_millis(MEMBER_EVENT_DEADLINE_MS)).await?;
        Ok(revision)
    }

    /// One pass of the dead-member rule on the leader: removes at most one
    /// voter silent for longer than `after` (counted within this
    /// leadership, which began `leading_for` ago).
    async fn apply_dead_member_rule(&self, after: Duration, min_voters: usize, leading_for: Duration) {
        // The checks below see the membership as it is once no other job runs.
        let _one_at_a_time = self.replacements.job.lock().await;
        let Ok(membership) = self.leader_membership() else {
            return;
        };
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let silent_for = |id: &NodeId| -> Duration {
            if *id == self.identity.node_id {
                return Duration::ZERO;
            }
            let since = membership
                .get_node(id)
                .and_then(|node| self.link().since_last_answer(&node.peer_addr))
                .unwrap_or(Duration::MAX);
            since.min(leading_for)
        };
        let Some(dead) = voters.iter().copied().find(|id| silent_for(id) > after) else {
            return;
        };
        let remaining: Vec<NodeId> = voters.iter().copied().filter(|id| *id != dead).collect();
        if remaining.len() < min_voters {
            tracing::debug!(dead, min_voters, "a voter is unreachable, but removing it would go below min_voters");
            return;
        }
        if let Err(why) = self.check_majority_answers(&remaining) {
            tracing::debug!(dead, %why, "a voter is unreachable, but the rest cannot remove it now");
            return;
        }
        let silent_ms = u64::try_from(silent_for(&dead).as_millis()).unwrap_or(u64::MAX);
        tracing::warn!(node_id = dead, silent_ms, "dead-member rule: removing a voter that does not answer");
        let change = ChangeMembers::RemoveVoters(BTreeSet::from([dead]));
        let deadline = Duration::from_millis(MEMBERSHIP_CHANGE_DEADLINE_MS);
        // retain: it stays a learner, so when it comes back (its disk kept
        // or not) it asks to be promoted again; `keelctl cluster remove`
        // takes it out for good.
        match super::membership::within(deadline, self.raft.change_membership(change, true)).await {
            Ok(written) => {
                let detail =
                    format!("no answer for {silent_ms} ms; {} voters remain; kept as a learner", remaining.len());
                let change =
                    MemberChange { node_id: dead, kind: "removed", at_ms: 0, revision: written.log_id.index, detail };
                self.record_change(change).await;
            }
            Err(error) => tracing::warn!(node_id = dead, %error, "dead-member rule: the removal failed"),
        }
    }
}

/// The dead-member rule, until `stop`: on the leader, every
/// `DEAD_MEMBER_CHECK_INTERVAL_MS`.
pub async fn run_dead_member_rule(
    replica: Replica,
    after: Duration,
    min_voters: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut leading_since = None::<tokio::time::Instant>;
    loop {
        if super::rejoin::sleep_or_stop(&mut stop, DEAD_MEMBER_CHECK_INTERVAL_MS).await {
            return;
        }
        let leads = replica.raft.metrics().borrow().current_leader == Some(replica.identity.node_id);
        if !leads {
            leading_since = None;
            continue;
        }
        let since = *leading_since.get_or_insert_with(tokio::time::Instant::now);
        replica.apply_dead_member_rule(after, min_voters, since.elapsed()).await;
    }
}
