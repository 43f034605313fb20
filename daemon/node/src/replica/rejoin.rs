//! Members that replace themselves: the member's side.
//!
//! Raft's safety rests on what a voter persisted: its vote and its log. A
//! member whose data dir was lost (a Kubernetes pod on a new volume) would,
//! started as before, vote with a forgotten vote and count as a holder of
//! entries it no longer has. So a member that starts with an empty Raft
//! store and a list of initial members first asks the others what exists:
//!
//! ```text
//!  fresh store (or the UNSETTLED marker of an earlier start) ─► write UNSETTLED (fsync)
//!  ─► Deciding (refuses every vote, never campaigns)
//!     probe every initial member (Progress) every REJOIN_PROBE_INTERVAL_MS
//!     ├─ someone holds more than the first membership (a log entry past it, a committed vote,
//!     │    an applied entry) ─► a cluster ran without this data ─► Rejoining
//!     ├─ someone holds the first membership and nothing more ─► the cluster is starting ─► Member
//!     ├─ every other initial member answers with an empty store ─► a new cluster:
//!     │    the lowest id initialises ─► Member
//!     └─ otherwise wait (it cannot tell yet)
//!  Rejoining (refuses votes, never campaigns)
//!     ask the leader (Rejoin RPC) every REJOIN_ASK_INTERVAL_MS; the leader replaces the old
//!     incarnation (replica::replace): remove voter (kept as learner) ─► caught up ─► promote
//!     └─ done at index i, and this member holds a membership ≥ i listing it as voter ─► Member
//!  Member ─► remove UNSETTLED
//! ```
//!
//! The marker makes the decision survive a crash: once a deciding member
//! received anything its store is no longer empty, and without the marker a
//! restart would take it for a member that kept its data.
//!
//! An initial member that finds itself a learner (the dead-member rule
//! demoted it while it was away), or that finds, after having no leader for
//! `LEADERLESS_CHECK_AFTER_MS`, that the cluster's leader no longer lists it
//! as a voter, asks the same way (a member removed by hand is refused).
//!
//! Refusing votes is always safe in Raft; campaigning is switched off with
//! openraft's runtime `elect` switch. Nothing here changes the log itself:
//! every membership change is the leader's, through the log.

use super::Replica;
use crate::raft::KeelNode;
use rand::RngCore;
use std::collections::BTreeMap;
use std::time::Duration;

/// How often an undecided member asks the others.
pub const REJOIN_PROBE_INTERVAL_MS: u64 = 250;
/// How long one probe of one member may take.
pub const REJOIN_PROBE_DEADLINE_MS: u64 = 500;
/// How often a rejoining member asks the leader how far its replacement got.
pub const REJOIN_ASK_INTERVAL_MS: u64 = 500;
/// How long one Rejoin call may take.
pub const REJOIN_ASK_DEADLINE_MS: u64 = 2_000;
/// A member without a leader for this long checks that it is still a member.
pub const LEADERLESS_CHECK_AFTER_MS: u64 = 3_000;
/// An undecided or rejoining member says why at most this often in its log.
const WAITING_LOG_INTERVAL_MS: u64 = 10_000;

/// The file whose presence says "this member has not settled": it must
/// decide (or rejoin) again after a restart.
pub const UNSETTLED_MARKER: &str = "UNSETTLED";
/// After the leader said done, how long a member waits to hold the
/// promoting membership before it asks again.
const PROMOTION_WAIT_MS: u64 = 30_000;
/// How long the initializer waits for the others to settle once every store
/// answered empty, before it initialises anyway.
pub const INITIALIZE_SETTLE_WAIT_MS: u64 = 5_000;
/// How long a member waits after a refusal before asking again.
const REFUSED_RETRY_MS: u64 = 5_000;

/// Why this member must not campaign now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Deciding or rejoining.
    Unsettled,
    /// Restarted, not yet following a leader.
    Quiet,
    /// Shutting down.
    Stopping,
    /// Handing leadership over (its own timer must not win it back).
    HandingOver,
}

/// openraft's runtime `elect` switch, set from every reason to hold back at
/// once, so one reason ending never turns campaigning on while another holds.
#[derive(Debug, Default)]
pub struct ElectSwitch {
    holds: std::sync::Mutex<[bool; 4]>,
}

impl ElectSwitch {
    /// Sets (`on`) or clears one hold and applies the result to `raft`.
    pub fn hold(&self, raft: &crate::raft::KeelRaft, hold: Hold, on: bool) {
        let mut holds = self.holds.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        holds[hold as usize] = on;
        // Applied under the lock: two callers cannot apply in the wrong order.
        raft.runtime_config().elect(!holds.iter().any(|held| *held));
    }

    /// Whether `hold` is set.
    pub fn is_held(&self, hold: Hold) -> bool {
        self.holds.lock().unwrap_or_else(|poisoned| poisoned.into_inner())[hold as usize]
    }
}

/// Whether this member may vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// A voter or learner like any other.
    Member,
    /// A fresh data dir asking the others whether a cluster ran without it.
    Deciding,
    /// Being replaced by the leader: refuses votes until promoted again.
    Rejoining,
}

impl Standing {
    /// The name in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Member => "member",
            Standing::Deciding => "deciding",
            Standing::Rejoining => "rejoining",
        }
    }
}

/// This member's standing and what it waits for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StandingState {
    /// The standing.
    pub standing: Standing,
    /// What it waits for (empty for a member).
    pub detail: String,
}

impl Default for StandingState {
    fn default() -> Self {
        StandingState { standing: Standing::Member, detail: String::new() }
    }
}

/// What a member says of the cluster it knows (its Progress answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerView {
    /// Its node id.
    pub node_id: u64,
    /// It holds a membership.
    pub initialized: bool,
    /// openraft's last applied index there.
    pub last_applied_index: u64,
    /// The index of its last log entry (0: only the first membership, or none).
    pub last_log_index: u64,
    /// Its term.
    pub term: u64,
    /// The leader it knows.
    pub leader_id: Option<u64>,
    /// That leader's peer address (empty if unknown).
    pub leader_peer_addr: String,
    /// The voters of the membership it holds.
    pub voter_ids: Vec<u64>,
    /// It may vote (not deciding or rejoining itself).
    pub is_settled: bool,
}

/// A member's request to be replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejoinAsk {
    /// Who asks.
    pub node_id: u64,
    /// The address clients use now.
    pub client_addr: String,
    /// The address peers use now.
    pub peer_addr: String,
    /// Random per replacement.
    pub incarnation: String,
}

/// How far a replacement got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Another membership change goes first.
    Queued,
    /// Removing the old incarnation as a voter.
    Removing,
    /// The learner is receiving the log.
    CatchingUp,
    /// Making it a voter.
    Promoting,
    /// A voter again.
    Done,
    /// The leader will not replace it (see the detail).
    Refused,
    /// A step failed; asking again starts over.
    Failed,
}

impl Step {
    /// The wire and status name.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Queued => "queued",
            Step::Removing => "removing",
            Step::CatchingUp => "catching_up",
            Step::Promoting => "promoting",
            Step::Done => "done",
            Step::Refused => "refused",
            Step::Failed => "failed",
        }
    }

    /// The step named `name`; unknown names read as failed.
    pub fn parse(name: &str) -> Step {
        [Step::Queued, Step::Removing, Step::CatchingUp, Step::Promoting, Step::Done, Step::Refused]
            .into_iter()
            .find(|step| step.as_str() == name)
            .unwrap_or(Step::Failed)
    }
}

/// The leader's answer to a [`RejoinAsk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejoinAnswer {
    /// The answering member leads.
    pub is_leader: bool,
    /// The leader it knows.
    pub leader_id: Option<u64>,
    /// That leader's peer address.
    pub leader_peer_addr: String,
    /// How far the replacement got.
    pub step: Step,
    /// With `Done`: the index of the membership that promoted it.
    pub voter_index: u64,
    /// Why, for refusals and failures.
    pub detail: String,
}

/// What an undecided member does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write the first membership (only the initializer).
    Initialize,
    /// Take part as a member: no cluster ran without it.
    Settle,
    /// A cluster ran without this data: be replaced.
    Rejoin,
    /// Not enough answers to tell; why.
    Wait(String),
}

/// Decides from the answers of the other initial members (`answers`; the
/// silent ones left out) what a member with a fresh store does.
/// `initial_members` counts every initial member, this one included.
/// `all_empty_for` is how long every initial member has been answering
/// with an empty store (the initializer waits up to
/// `INITIALIZE_SETTLE_WAIT_MS` of it for the others to settle).
pub fn decide(is_initializer: bool, initial_members: usize, answers: &[PeerView], all_empty_for: Duration) -> Decision {
    // Evidence that a cluster ran: a second term, or anything past the first
    // membership (index 0) and the first leader's blank entry (index 1). This
    // member's store is empty, so whatever it held of that is lost.
    //
    // The first term is the cluster's start, and joining it is safe: the
    // only candidate in term 1 is the initializer (the others learn the
    // membership from its appends as leader), so a vote this member may have
    // cast there and forgotten went to that same leader; the most it may have
    // held is the blank entry, which changes no state. Without this window a
    // member a few hundred ms slower to start than the others is replaced.
    let ran =
        |view: &PeerView| view.initialized && (view.term > 1 || view.last_log_index > 1 || view.last_applied_index > 1);
    if answers.iter().any(ran) {
        return Decision::Rejoin;
    }
    // Someone holds the first membership and at most the first term: the
    // cluster is starting now.
    if answers.iter().any(|view| view.initialized) {
        return Decision::Settle;
    }
    // A new cluster only when every initial member answers with an empty
    // store: with some silent, this could be the wiped majority of a cluster
    // whose survivors are down, and a second cluster under the same name
    // would fork it when they return.
    let fresh = answers.iter().filter(|view| !view.initialized).count() + 1;
    if fresh == initial_members {
        if !is_initializer {
            return Decision::Settle;
        }
        // The initializer writes the membership once the others settled
        // (they do on seeing every store empty): its first election, which
        // openraft starts at once, then finds voters, and none of them meets
        // a running cluster and has itself replaced. A member that cannot
        // settle (it cannot reach everyone) is waited for a while only: it
        // is replaced later instead.
        let settled = answers.iter().filter(|view| view.is_settled).count() + 1;
        if settled == initial_members || all_empty_for >= Duration::from_millis(INITIALIZE_SETTLE_WAIT_MS) {
            return Decision::Initialize;
        }
        return Decision::Wait(format!(
            "every store is empty; {settled} of {initial_members} initial members settled, waiting for the rest"
        ));
    }
    Decision::Wait(format!(
        "{fresh} of {initial_members} initial members answered with an empty store (this one included); \
         all must before a new cluster starts, or one must report a running cluster"
    ))
}

/// What the member-side task needs.
pub struct RejoinPlan {
    /// This member's addresses and place as it runs now.
    pub me: KeelNode,
    /// Every initial member, this one included.
    pub initial_members: BTreeMap<u64, KeelNode>,
    /// The store was empty at start, or an earlier start had not settled:
    /// decide before voting.
    pub must_decide: bool,
    /// The data dir (for the UNSETTLED marker).
    pub data_dir: std::path::PathBuf,
}

/// Whether an earlier start left the UNSETTLED marker in `data_dir`.
pub fn is_unsettled(data_dir: &std::path::Path) -> bool {
    data_dir.join(UNSETTLED_MARKER).exists()
}

/// Writes the UNSETTLED marker durably (the file and its directory synced):
/// from here on a restart decides again.
pub fn mark_unsettled(data_dir: &std::path::Path) -> std::io::Result<()> {
    let path = data_dir.join(UNSETTLED_MARKER);
    let file = std::fs::File::create(&path)?;
    file.sync_all()?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// Removes the UNSETTLED marker durably.
fn clear_unsettled(data_dir: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_file(data_dir.join(UNSETTLED_MARKER)) {
        Ok(()) => std::fs::File::open(data_dir)?.sync_all(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

impl Replica {
    /// This member's standing.
    pub fn standing(&self) -> StandingState {
        self.standing.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Whether this member may vote and campaign.
    pub fn is_settled(&self) -> bool {
        self.standing().standing == Standing::Member
    }

    /// Sets the standing (and whether this member campaigns).
    pub fn set_standing(&self, standing: Standing, detail: String) {
        // Campaigning follows the standing; refusing votes reads it per vote.
        self.elect.hold(&self.raft, Hold::Unsettled, standing != Standing::Member);
        let mut state = self.standing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.standing != standing {
            tracing::info!(standing = standing.as_str(), %detail, "member standing changed");
        }
        *state = StandingState { standing, detail };
    }

    /// Asks every other initial member what it knows, at once; keeps only
    /// answers from the member asked (one member reached at two addresses
    /// counts once).
    async fn survey(&self, plan: &RejoinPlan) -> Vec<PeerView> {
        let deadline = Duration::from_millis(REJOIN_PROBE_DEADLINE_MS);
        let me = self.identity.node_id;
        let probes = plan.initial_members.iter().filter(|(id, _)| **id != me).map(|(id, node)| async move {
            self.link().standing(&node.peer_addr, deadline).await.filter(|view| view.node_id == *id)
        });
        futures::future::join_all(probes).await.into_iter().flatten().collect()
    }

    /// This member settled: it votes again, and a restart need not decide.
    fn settle(&self, plan: &RejoinPlan) {
        if let Err(error) = clear_unsettled(&plan.data_dir) {
            // It stays unsettled after a restart: safe, one extra decision.
            tracing::warn!(%error, "could not remove the UNSETTLED marker");
        }
        self.set_standing(Standing::Member, String::new());
    }
}

/// A new incarnation id: 128 random bits, hex.
fn new_incarnation() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A restarted member (its store intact) does not campaign for this long
/// after start unless it hears from a leader first: the leader's replication
/// to it may be backing off (up to `PEER_BACKOFF_MAX_MS`) while its own
/// election timer runs, and openraft 0.9 has no pre-vote, so an early
/// campaign would raise its term and depose a healthy leader (the rolling
/// restart's leaderless windows). Not campaigning is always safe.
pub fn quiet_start_ms(election_timeout_max_ms: u64, heartbeat_interval_ms: u64) -> u64 {
    election_timeout_max_ms + crate::limits::PEER_BACKOFF_MAX_MS + 2 * heartbeat_interval_ms
}

/// Holds a restarted member's campaigns back for `quiet` or until it
/// follows another member, whichever comes first. The caller set the
/// `Quiet` hold before the peer port served anything.
pub async fn quiet_start(replica: Replica, quiet: Duration) {
    let me = replica.identity.node_id;
    let waited = replica
        .raft
        .wait(Some(quiet))
        .metrics(|metrics| metrics.current_leader.is_some_and(|id| id != me), "another member leading after restart")
        .await;
    if let Ok(metrics) = waited {
        tracing::info!(leader = ?metrics.current_leader, "restarted: following a leader");
    }
    replica.elect.hold(&replica.raft, Hold::Quiet, false);
}

/// The member side, until `stop`: decides what a fresh store means, rejoins
/// when it must, and later watches for having been removed.
pub async fn run(replica: Replica, plan: RejoinPlan, mut stop: tokio::sync::watch::Receiver<bool>) {
    let me = replica.identity.node_id;
    let initializer = plan.initial_members.keys().next().copied() == Some(me);
    let mut must_rejoin = false;
    if plan.must_decide {
        replica.set_standing(Standing::Deciding, "asking the initial members whether a cluster ran".into());
        let mut last_said = None::<tokio::time::Instant>;
        let mut all_empty_since = None::<tokio::time::Instant>;
        loop {
            let answers = replica.survey(&plan).await;
            let is_all_empty =
                answers.len() + 1 == plan.initial_members.len() && answers.iter().all(|view| !view.initialized);
            let all_empty_for = if is_all_empty {
                all_empty_since.get_or_insert_with(tokio::time::Instant::now).elapsed()
            } else {
                all_empty_since = None;
                Duration::ZERO
            };
            match decide(initializer, plan.initial_members.len(), &answers, all_empty_for) {
                Decision::Initialize => {
                    tracing::info!(node_id = me, n_members = plan.initial_members.len(), "initialising a new cluster");
                    match replica.raft.initialize(plan.initial_members.clone()).await {
                        Ok(()) => {}
                        // Another start of this process got there (or a membership arrived meanwhile).
                        Err(openraft::error::RaftError::APIError(error)) => {
                            tracing::info!(%error, "the cluster was initialised meanwhile")
                        }
                        Err(openraft::error::RaftError::Fatal(fatal)) => {
                            tracing::error!(%fatal, "raft stopped while initialising");
                            return;
                        }
                    }
                    replica.settle(&plan);
                    break;
                }
                Decision::Settle => {
                    tracing::info!("fresh data dir, and no cluster ran without it: taking part as a new member");
                    replica.settle(&plan);
                    break;
                }
                Decision::Rejoin => {
                    must_rejoin = true;
                    break;
                }
                Decision::Wait(why) => {
                    if last_said.is_none_or(|at| at.elapsed() >= Duration::from_millis(WAITING_LOG_INTERVAL_MS)) {
                        tracing::warn!(%why, "fresh data dir: cannot tell yet whether a cluster ran without it");
                        last_said = Some(tokio::time::Instant::now());
                    }
                    replica.set_standing(Standing::Deciding, why);
                }
            }
            if sleep_or_stop(&mut stop, REJOIN_PROBE_INTERVAL_MS).await {
                return;
            }
        }
    }
    loop {
        if must_rejoin && !rejoin(&replica, &plan, &mut stop).await {
            return;
        }
        if !watch(&replica, &plan, &mut stop).await {
            return;
        }
        must_rejoin = true;
    }
}

/// Watches a settled member until it must rejoin (true) or `stop` (false):
/// an initial member the dead-member rule demoted to a learner asks to be a
/// voter again; one without a leader for a while checks it was not removed.
async fn watch(replica: &Replica, plan: &RejoinPlan, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    let me = replica.identity.node_id;
    let mut leaderless_since = None::<tokio::time::Instant>;
    loop {
        if sleep_or_stop(stop, REJOIN_PROBE_INTERVAL_MS * 4).await {
            return false;
        }
        let (has_leader, is_learner) = {
            let metrics = replica.raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            let is_learner = membership.get_node(&me).is_some() && !membership.voter_ids().any(|id| id == me);
            (metrics.current_leader.is_some(), is_learner)
        };
        if has_leader && is_learner {
            tracing::warn!("this initial member is a learner now (the dead-member rule demoted it): rejoining");
            return true;
        }
        if has_leader {
            leaderless_since = None;
            continue;
        }
        let since = *leaderless_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() < Duration::from_millis(LEADERLESS_CHECK_AFTER_MS) {
            continue;
        }
        let answers = replica.survey(plan).await;
        let removed = answers
            .iter()
            .any(|view| view.leader_id == Some(view.node_id) && view.is_settled && !view.voter_ids.contains(&me));
        if removed {
            tracing::warn!("the cluster's leader no longer lists this member as a voter: rejoining");
            return true;
        }
        leaderless_since = Some(tokio::time::Instant::now());
    }
}

/// Rejoining until the leader promoted this member and it applied that
/// membership; false when stopped.
async fn rejoin(replica: &Replica, plan: &RejoinPlan, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    let me = replica.identity.node_id;
    let ask = RejoinAsk {
        node_id: me,
        client_addr: plan.me.client_addr.clone(),
        peer_addr: plan.me.peer_addr.clone(),
        incarnation: new_incarnation(),
    };
    tracing::warn!(
        incarnation = %ask.incarnation,
        "a cluster ran without this member's data: refusing votes and asking the leader to replace the old incarnation"
    );
    replica.set_standing(Standing::Rejoining, "looking for the leader".into());
    let deadline = Duration::from_millis(REJOIN_ASK_DEADLINE_MS);
    let mut last_said = None::<tokio::time::Instant>;
    // The promoting index the leader answered, and since when it is awaited.
    let mut promoted = None::<(u64, tokio::time::Instant)>;
    loop {
        let mut pause = REJOIN_ASK_INTERVAL_MS;
        if let Some((index, since)) = promoted {
            // Held (appended), not necessarily applied: a membership entry
            // takes effect when appended, and holding it means holding the
            // whole log before it.
            let metrics = replica.raft.metrics().borrow().clone();
            let membership = &metrics.membership_config;
            let held = membership.log_id().map(|log_id| log_id.index).unwrap_or(0);
            if held >= index && membership.membership().voter_ids().any(|id| id == me) {
                tracing::info!(voter_index = index, "rejoined: a voter again");
                replica.settle(plan);
                return true;
            }
            if since.elapsed() >= Duration::from_millis(PROMOTION_WAIT_MS) {
                // The membership moved on before it reached this member: ask again.
                promoted = None;
            }
        } else {
            let answer = ask_leader(replica, plan, &ask, deadline).await;
            let detail = match &answer {
                Some(answer) if answer.step == Step::Done => {
                    promoted = Some((answer.voter_index, tokio::time::Instant::now()));
                    format!("promoted at index {}; receiving it", answer.voter_index)
                }
                Some(answer) => {
                    if answer.step == Step::Refused {
                        pause = REFUSED_RETRY_MS;
                    }
                    format!("{}: {}", answer.step.as_str(), answer.detail)
                }
                None => "no leader answered".to_owned(),
            };
            if last_said.is_none_or(|at| at.elapsed() >= Duration::from_millis(WAITING_LOG_INTERVAL_MS)) {
                tracing::info!(%detail, "rejoining");
                last_said = Some(tokio::time::Instant::now());
            }
            replica.set_standing(Standing::Rejoining, detail);
        }
        if sleep_or_stop(stop, pause).await {
            return false;
        }
    }
}

/// Sends `ask` to the leader: the one this member follows, else the one the
/// others name; `None` when no leader answered.
async fn ask_leader(replica: &Replica, plan: &RejoinPlan, ask: &RejoinAsk, deadline: Duration) -> Option<RejoinAnswer> {
    let mut candidates: Vec<String> = replica.leader_peer_addr().into_iter().collect();
    if candidates.is_empty() {
        let answers = replica.survey(plan).await;
        candidates.extend(
            answers.iter().filter(|view| !view.leader_peer_addr.is_empty()).map(|view| view.leader_peer_addr.clone()),
        );
        candidates.sort();
        candidates.dedup();
    }
    for peer_addr in candidates {
        let Some(answer) = replica.link().rejoin(&peer_addr, ask, deadline).await else {
            continue;
        };
        if answer.is_leader {
            return Some(answer);
        }
        if !answer.leader_peer_addr.is_empty()
            && answer.leader_peer_addr != peer_addr
            && let Some(answer) = replica.link().rejoin(&answer.leader_peer_addr, ask, deadline).await
            && answer.is_leader
        {
            return Some(answer);
        }
    }
    None
}

/// Sleeps `ms`; true if `stop` fired (or its sender is gone) meanwhile.
pub(super) async fn sleep_or_stop(stop: &mut tokio::sync::watch::Receiver<bool>, ms: u64) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => *stop.borrow(),
        changed = stop.changed() => changed.is_err() || *stop.borrow(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(node_id: u64) -> PeerView {
        PeerView { node_id, is_settled: true, ..PeerView::default() }
    }

    fn holding(node_id: u64, last_log_index: u64) -> PeerView {
        PeerView { node_id, initialized: true, last_log_index, voter_ids: vec![1, 2, 3], ..fresh(node_id) }
    }

    #[test]
    fn anything_past_the_first_term_anywhere_means_rejoin() {
        assert_eq!(decide(true, 3, &[holding(2, 7)], Duration::ZERO), Decision::Rejoin);
        assert_eq!(decide(false, 3, &[fresh(1), holding(3, 2)], Duration::ZERO), Decision::Rejoin);
        // A second term, even with nothing more in the log.
        let second_term = PeerView { term: 2, ..holding(1, 1) };
        assert_eq!(decide(false, 3, &[second_term, fresh(3)], Duration::ZERO), Decision::Rejoin);
        // Applied on a member whose own log was compacted away.
        let applied = PeerView { last_applied_index: 9, ..holding(1, 0) };
        assert_eq!(decide(false, 3, &[applied], Duration::ZERO), Decision::Rejoin);
        // The first leader and its blank entry: still the start.
        let started = PeerView { term: 1, ..holding(1, 1) };
        assert_eq!(decide(false, 3, &[started, fresh(3)], Duration::ZERO), Decision::Settle);
    }

    #[test]
    fn a_new_cluster_needs_every_initial_member_empty() {
        assert!(matches!(decide(true, 3, &[], Duration::ZERO), Decision::Wait(_)));
        assert!(matches!(decide(true, 3, &[fresh(2)], Duration::ZERO), Decision::Wait(_)));
        assert_eq!(decide(true, 3, &[fresh(2), fresh(3)], Duration::ZERO), Decision::Initialize);
        // ... once the others settled.
        let deciding = PeerView { is_settled: false, ..fresh(3) };
        assert!(matches!(decide(true, 3, &[fresh(2), deciding.clone()], Duration::ZERO), Decision::Wait(_)));
        // ... or after a while without them (one that cannot reach everyone is replaced later).
        let waited = Duration::from_millis(INITIALIZE_SETTLE_WAIT_MS);
        assert_eq!(decide(true, 3, &[fresh(2), deciding], waited), Decision::Initialize);
        assert!(matches!(decide(true, 5, &[fresh(2), fresh(3), fresh(4)], Duration::ZERO), Decision::Wait(_)));
        assert_eq!(decide(true, 1, &[], Duration::ZERO), Decision::Initialize);
        // Two of three wiped while the survivor is down: no second cluster.
        assert!(matches!(decide(false, 3, &[fresh(1)], Duration::ZERO), Decision::Wait(_)));
    }

    #[test]
    fn others_settle_on_a_starting_cluster_or_all_empty() {
        assert_eq!(decide(false, 3, &[holding(1, 0)], Duration::ZERO), Decision::Settle);
        assert_eq!(decide(false, 3, &[fresh(1), fresh(3)], Duration::ZERO), Decision::Settle);
        assert!(matches!(decide(false, 3, &[], Duration::ZERO), Decision::Wait(_)));
    }

    #[test]
    fn steps_round_trip_and_unknown_names_fail() {
        for step in [Step::Queued, Step::Removing, Step::CatchingUp, Step::Promoting, Step::Done, Step::Refused] {
            assert_eq!(Step::parse(step.as_str()), step);
        }
        assert_eq!(Step::parse("exploded"), Step::Failed);
    }
}
