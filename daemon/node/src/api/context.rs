//! What every service needs: the Raft handle, the applied state, this node's
//! identity, and the common request mechanics (leader-stamped proposals,
//! consistent reads, deadlines, response metadata, page tokens).
//!
//! ```text
//!  handler ──propose(Command)──► stamp leader_time_ms (monotonic) ──► raft.client_write ──► ApplyResponse
//!  handler ──read(consistency)─► [LINEARIZABLE: raft.ensure_linearizable] ──► SharedState (published state)
//!  handler ──reply(msg, revision)──► + keel-node-id, keel-region, keel-revision, keel-leader
//! ```

use super::error::ApiError;
use crate::judge::NodeJudge;
use crate::leader_clock::LeaderClock;
use crate::raft::shared_state::{AppliedState, SharedState};
use crate::raft::{ApplyResponse, KeelNode, KeelRaft};
use base64::Engine as _;
use keel_kernel::limits::{LIST_PAGE_BYTES_MAX, Limit, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX};
use keel_kernel::{Applied, Command, Judgement, Proposal, Verdict};
use keel_proto::v1 as pb;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response};

/// Deadline for a write when the caller sets none.
pub const WRITE_DEADLINE_DEFAULT_MS: u64 = 10_000;
/// Deadline for a linearizable read barrier when the caller sets none.
pub const READ_DEADLINE_DEFAULT_MS: u64 = 5_000;
/// The longest deadline honoured; longer ones are capped.
pub const DEADLINE_MAX_MS: u64 = 60_000;

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

/// Watch admission and counters, shared by the event service and the ops endpoints.
#[derive(Debug)]
pub struct WatchStats {
    /// Watch streams open on this node.
    pub active: AtomicU64,
    /// Watchers cut off for not reading (`WATCHER_TOO_SLOW`) since start.
    pub cut_off_total: AtomicU64,
    /// One permit per watch stream this node admits.
    permits: Arc<tokio::sync::Semaphore>,
    watchers_max: usize,
    /// Bytes queued for all watchers (`WATCH_NODE_BUFFER_BYTES_MAX`).
    pub budget: super::watch_queue::WatchBudget,
}

impl WatchStats {
    /// Admission for at most `watchers_max` streams at once.
    pub fn new(watchers_max: usize) -> Self {
        WatchStats {
            active: AtomicU64::new(0),
            cut_off_total: AtomicU64::new(0),
            permits: Arc::new(tokio::sync::Semaphore::new(watchers_max)),
            watchers_max,
            budget: super::watch_queue::WatchBudget::default(),
        }
    }

    /// A permit for one more stream, or the error when all are taken.
    pub fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManyWatchers { watchers_max: self.watchers_max })
    }
}

impl Default for WatchStats {
    fn default() -> Self {
        WatchStats::new(keel_kernel::limits::WATCHERS_PER_NODE_MAX)
    }
}

/// Refuses a write whose log entry would be over `PROPOSAL_BYTES_MAX`:
/// the leader could append it but never send it to a follower, and no later
/// write would commit. Measured as the bincode the log stores: bincode
/// writes a struct as the tuple of its fields, and the stamp fields have a
/// fixed size, so this tuple measures exactly what the `Proposal` will.
pub fn check_proposal_bytes(write: &Write) -> Result<(), ApiError> {
    let fields = (0u64, 0u32, &write.command, &write.idempotency_key);
    let bytes = bincode::serialized_size(&fields).map_err(|error| ApiError::internal(anyhow::Error::new(error)))?;
    let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    Limit::ProposalBytes.check(bytes)?;
    Ok(())
}

/// Shared by every service.
#[derive(Clone)]
pub struct ApiContext {
    /// The Raft handle.
    pub raft: KeelRaft,
    /// The applied state.
    pub shared: Arc<SharedState>,
    /// This node.
    pub identity: Arc<Identity>,
    /// Stamps proposals: monotonic, and bounded by the time the voters
    /// agree on (see `leader_clock`).
    pub clock: Arc<LeaderClock>,
    /// How this node reaches the leader when it does not lead.
    leader_link: Arc<dyn LeaderLink>,
    /// A configuration conflict found at run time (e.g. initial members that
    /// disagree with the cluster); the node reports it as not ready.
    config_conflict: Arc<std::sync::Mutex<Option<String>>>,
    /// Set while this leader hands leadership over (one at a time).
    is_transferring: Arc<std::sync::atomic::AtomicBool>,
    /// Every write proposed here holds a read permit until it is answered;
    /// a leadership transfer takes the write side, so new writes are refused
    /// (retryable) and the ones in flight are done before the transfer reads
    /// the log's end.
    write_gate: Arc<tokio::sync::RwLock<()>>,
    /// Watch streams on this node.
    pub watch_stats: Arc<WatchStats>,
    /// Where third-party evaluations run (policies, action schemas).
    pub judge: NodeJudge,
    /// Requests refused by the in-flight bound.
    pub shed_stats: Arc<crate::load_shed::ShedStats>,
    /// Per-RPC latency and response counts (the edge records, `/metrics` reads).
    pub rpc_metrics: crate::edge::RpcMetrics,
}

/// Holds a leadership transfer open: heartbeats and this node's own
/// elections are off while it lives; on drop they are back on and writes
/// are accepted again, whatever happened.
pub struct TransferGuard {
    raft: KeelRaft,
    is_transferring: Arc<std::sync::atomic::AtomicBool>,
    _writes_held: tokio::sync::OwnedRwLockWriteGuard<()>,
}

impl TransferGuard {
    /// Stops this leader's heartbeats so the followers' lease runs out, and
    /// its election timer: once the target's campaign deposes it, it must
    /// not campaign against the target (a young leader refuses the target's
    /// first vote by its own lease and would otherwise win back with it).
    pub fn pause_heartbeats(&self) {
        let runtime = self.raft.runtime_config();
        runtime.heartbeat(false);
        runtime.elect(false);
    }
}

impl Drop for TransferGuard {
    fn drop(&mut self) {
        let runtime = self.raft.runtime_config();
        runtime.heartbeat(true);
        runtime.elect(true);
        self.is_transferring.store(false, Ordering::Release);
    }
}

/// Where a proposal went.
#[derive(Debug)]
pub enum Route {
    /// Applied here: the response and the entry's revision.
    Applied(ApplyResponse, u64),
    /// Another node leads; send the command there.
    Leader {
        /// The leader's node id.
        leader_id: u64,
        /// Its addresses.
        leader: KeelNode,
        /// The write, not yet proposed.
        write: Write,
    },
}

/// A write as a client asked for it: the command and its idempotency key.
/// This is what a follower forwards to the leader, which stamps its time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Write {
    /// The change.
    pub command: Command,
    /// The client's idempotency key, if any (validated).
    pub idempotency_key: Option<String>,
}

/// How a follower reaches the leader: forwarded writes and read indices.
/// The peer transport implements it; a lone node uses [`NoLeaderLink`].
#[tonic::async_trait]
pub trait LeaderLink: Send + Sync + 'static {
    /// Has the leader propose `write`; returns its apply response and revision.
    async fn forward(
        &self,
        leader_id: u64,
        leader: &KeelNode,
        write: Write,
        deadline: Duration,
    ) -> Result<(ApplyResponse, u64), ApiError>;

    /// The leader's read index, after it confirmed its leadership with a quorum.
    async fn read_index(&self, leader_id: u64, leader: &KeelNode, deadline: Duration) -> Result<u64, ApiError>;

    /// How long ago a peer RPC to `peer_addr` last got an answer, if ever.
    fn since_last_answer(&self, _peer_addr: &str) -> Option<Duration> {
        None
    }

    /// Tells `target` to campaign after `wait` (leadership transfer); whether it acknowledged.
    async fn timeout_now(
        &self,
        _target: &KeelNode,
        _leader_id: u64,
        _term: u64,
        _wait: Duration,
        _deadline: Duration,
    ) -> bool {
        false
    }

    /// Asks the member at `peer_addr` for its progress; `None` if it does not
    /// answer within `deadline`.
    async fn progress(&self, _peer_addr: &str, _deadline: Duration) -> Option<MemberProgress> {
        None
    }

    /// Asks the member at `peer_addr` for its wall clock (Unix ms); `None`
    /// if it does not answer within `deadline`.
    async fn wall_clock(&self, _peer_addr: &str, _deadline: Duration) -> Option<u64> {
        None
    }
}

/// A member's progress as it reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberProgress {
    /// Its last applied index.
    pub applied_index: u64,
    /// Its state digest at that index.
    pub state_digest: String,
}

/// No path to a leader: callers are told where the leader is and go there themselves.
#[derive(Debug, Default)]
pub struct NoLeaderLink;

#[tonic::async_trait]
impl LeaderLink for NoLeaderLink {
    async fn forward(
        &self,
        leader_id: u64,
        leader: &KeelNode,
        _write: Write,
        _deadline: Duration,
    ) -> Result<(ApplyResponse, u64), ApiError> {
        Err(ApiError::NotLeader { leader_id: Some(leader_id), leader_addr: Some(leader.client_addr.clone()) })
    }

    async fn read_index(&self, leader_id: u64, leader: &KeelNode, _deadline: Duration) -> Result<u64, ApiError> {
        Err(ApiError::NotLeader { leader_id: Some(leader_id), leader_addr: Some(leader.client_addr.clone()) })
    }
}

/// Current wall clock, Unix ms (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl ApiContext {
    /// A context for one node.
    pub fn new(
        raft: KeelRaft,
        shared: Arc<SharedState>,
        identity: Identity,
        leader_link: Arc<dyn LeaderLink>,
    ) -> ApiContext {
        ApiContext {
            raft,
            shared,
            identity: Arc::new(identity),
            clock: Arc::new(LeaderClock::new(crate::config::CLOCK_SKEW_MAX_MS_DEFAULT, 0)),
            leader_link,
            config_conflict: Arc::default(),
            is_transferring: Arc::default(),
            write_gate: Arc::default(),
            watch_stats: Arc::default(),
            judge: NodeJudge::default(),
            shed_stats: Arc::default(),
            rpc_metrics: crate::edge::RpcMetrics::default(),
        }
    }

    /// This context stamping with `clock`.
    pub fn with_clock(mut self, clock: LeaderClock) -> ApiContext {
        self.clock = Arc::new(clock);
        self
    }

    /// This context judging with `judge`.
    pub fn with_judge(mut self, judge: NodeJudge) -> ApiContext {
        self.judge = judge;
        self
    }

    /// Fails fast before proposing: runs `judgement` (the same one `apply`
    /// will run) within the request's time, and refuses the write if it is
    /// refused. A judgement that cannot finish in time here never enters the
    /// log, so no member has to run a slow one in `apply`.
    pub async fn prejudge(&self, judgement: Option<Judgement>, deadline: Duration) -> Result<(), ApiError> {
        let Some(judgement) = judgement else {
            return Ok(());
        };
        match self.judge.judge_for_request(judgement, deadline).await? {
            Verdict::Rejected(rejection) => Err(ApiError::Rejected(rejection)),
            Verdict::Accepted | Verdict::Decisions(_) => Ok(()),
            Verdict::Unavailable { detail } => Err(ApiError::EvaluatorUnavailable { detail }),
        }
    }

    /// This context with watch admission for at most `watchers_max` streams.
    pub fn with_watchers_max(mut self, watchers_max: usize) -> ApiContext {
        self.watch_stats = Arc::new(WatchStats::new(watchers_max));
        self
    }

    /// Marks a leadership transfer in progress until the guard drops: new
    /// writes are refused from now on, and the guard is handed out once the
    /// writes in flight are answered (within `drain`), so nothing is appended
    /// after the caller reads the log's end.
    pub async fn begin_transfer(&self, drain: Duration) -> Result<TransferGuard, ApiError> {
        if self.is_transferring.swap(true, Ordering::AcqRel) {
            return Err(ApiError::MembershipChangeInProgress);
        }
        let drained = tokio::time::timeout(drain, Arc::clone(&self.write_gate).write_owned()).await;
        let Ok(writes_held) = drained else {
            self.is_transferring.store(false, Ordering::Release);
            return Err(ApiError::DeadlineExceeded { after_ms: duration_ms(drain) });
        };
        Ok(TransferGuard {
            raft: self.raft.clone(),
            is_transferring: self.is_transferring.clone(),
            _writes_held: writes_held,
        })
    }

    /// Tells `target` to campaign after `wait`.
    pub async fn send_timeout_now(&self, target: &KeelNode, term: u64, wait: Duration, deadline: Duration) -> bool {
        self.leader_link.timeout_now(target, self.identity.node_id, term, wait, deadline).await
    }

    /// How long ago this node last got an answer from the peer at `peer_addr`.
    pub fn since_last_peer_answer(&self, peer_addr: &str) -> Option<Duration> {
        self.leader_link.since_last_answer(peer_addr)
    }

    /// A member's wall clock over the peer transport.
    pub async fn member_wall_clock(&self, peer_addr: &str, deadline: Duration) -> Option<u64> {
        self.leader_link.wall_clock(peer_addr, deadline).await
    }

    /// Probes a member's progress over the peer transport.
    pub async fn member_progress(&self, peer_addr: &str, deadline: Duration) -> Option<MemberProgress> {
        self.leader_link.progress(peer_addr, deadline).await
    }

    /// Records a configuration conflict (reported by `/readyz` and `/diagz`).
    pub fn set_config_conflict(&self, conflict: String) {
        *self.config_conflict.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(conflict);
    }

    /// The configuration conflict, if any.
    pub fn config_conflict(&self) -> Option<String> {
        self.config_conflict.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Proposes `command` and waits for it to apply, here if this node leads,
    /// else through the leader (the [`LeaderLink`]). Returns the outcome and the
    /// revision it was applied at.
    pub async fn propose(&self, command: Command, deadline: Duration) -> Result<(Applied, u64), ApiError> {
        self.propose_keyed(Write { command, idempotency_key: None }, deadline).await
    }

    /// [`Self::propose`] with the client's idempotency key (empty: none). A
    /// replay answers the first outcome and the revision that applied it.
    pub async fn propose_idempotent(
        &self,
        command: Command,
        idempotency_key: String,
        deadline: Duration,
    ) -> Result<(Applied, u64), ApiError> {
        let idempotency_key = (!idempotency_key.is_empty()).then_some(idempotency_key);
        if let Some(key) = &idempotency_key {
            keel_kernel::idempotency::validate_key(key)?;
        }
        self.propose_keyed(Write { command, idempotency_key }, deadline).await
    }

    async fn propose_keyed(&self, write: Write, deadline: Duration) -> Result<(Applied, u64), ApiError> {
        check_proposal_bytes(&write)?;
        let (response, revision) = match self.propose_here(write, deadline).await? {
            Route::Applied(response, revision) => (response, revision),
            Route::Leader { leader_id, leader, write } => {
                self.leader_link.forward(leader_id, &leader, write, deadline).await?
            }
        };
        match response {
            ApplyResponse::Applied(applied) => {
                let revision = applied.replay_of.unwrap_or(revision);
                Ok((applied, revision))
            }
            ApplyResponse::Rejected(rejection) => Err(ApiError::Rejected(rejection)),
            ApplyResponse::NoCommand => {
                Err(ApiError::internal(anyhow::anyhow!("a command entry was answered as a non-command entry")))
            }
        }
    }

    /// Proposes `write` on this node, stamped with its clock (monotonic), if
    /// it leads; otherwise hands the write back with the leader to send it to.
    /// A forwarded write lands here on the leader. Leadership is checked before
    /// proposing because `client_write` consumes the command; if leadership is
    /// lost in between, the caller gets `NOT_LEADER` and retries.
    pub async fn propose_here(&self, write: Write, deadline: Duration) -> Result<Route, ApiError> {
        if let Some((leader_id, leader)) = self.other_leader() {
            return Ok(Route::Leader { leader_id, leader, write });
        }
        // Held until the write is answered (see `begin_transfer`).
        let Ok(_admitted) = self.write_gate.try_read() else {
            return Err(ApiError::NoLeader);
        };
        // A forwarded write lands here without passing `propose_keyed`.
        check_proposal_bytes(&write)?;
        let replicated_ms = self.shared.read().kernel.clock_ms();
        let leader_time_ms = self
            .clock
            .stamp(replicated_ms)
            .map_err(|disagrees| ApiError::LeaderClockSkew { skew_max_ms: disagrees.skew_max_ms })?;
        let proposal = Proposal {
            leader_time_ms,
            semantics_version: keel_kernel::judge::SEMANTICS_VERSION,
            command: write.command,
            idempotency_key: write.idempotency_key,
        };
        let write = self.raft.client_write(proposal);
        let response = tokio::time::timeout(deadline, write)
            .await
            .map_err(|_| ApiError::DeadlineExceeded { after_ms: duration_ms(deadline) })?;
        match response {
            Ok(response) => Ok(Route::Applied(response.data, response.log_id.index)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(self.not_leader(forward.leader_id, forward.leader_node.map(|node| node.client_addr)))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error))) => {
                Err(ApiError::internal(anyhow::Error::new(error)))
            }
            Err(RaftError::Fatal(fatal)) => Err(ApiError::NodeUnavailable { detail: fatal.to_string() }),
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

    fn not_leader(&self, leader_id: Option<u64>, leader_addr: Option<String>) -> ApiError {
        match leader_id {
            None => ApiError::NoLeader,
            Some(leader_id) => ApiError::NotLeader { leader_id: Some(leader_id), leader_addr },
        }
    }

    /// Waits until a read at `consistency` may be served from local state.
    pub async fn read_barrier(&self, consistency: i32, deadline: Duration) -> Result<(), ApiError> {
        match pb::ReadConsistency::try_from(consistency) {
            Ok(pb::ReadConsistency::Serializable) => Ok(()),
            Ok(pb::ReadConsistency::Linearizable | pb::ReadConsistency::Unspecified) => {
                let barrier = self.raft.ensure_linearizable();
                match tokio::time::timeout(deadline, barrier).await {
                    Err(_) => Err(ApiError::DeadlineExceeded { after_ms: duration_ms(deadline) }),
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
                        match (forward.leader_id, forward.leader_node) {
                            (Some(leader_id), Some(leader)) => {
                                self.follower_read_barrier(leader_id, &leader, deadline).await
                            }
                            (leader_id, _) => Err(self.not_leader(leader_id, None)),
                        }
                    }
                    Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => Err(ApiError::NoLeader),
                    Ok(Err(RaftError::Fatal(fatal))) => Err(ApiError::NodeUnavailable { detail: fatal.to_string() }),
                }
            }
            Err(_) => Err(ApiError::Rejected(keel_kernel::Rejection::FieldInvalid {
                field: "consistency".into(),
                problem: "unknown read consistency".into(),
            })),
        }
    }

    /// A follower's linearizable read: the leader confirms its leadership with a
    /// quorum and names its read index; this node waits until it has applied it.
    async fn follower_read_barrier(
        &self,
        leader_id: u64,
        leader: &KeelNode,
        deadline: Duration,
    ) -> Result<(), ApiError> {
        let started = tokio::time::Instant::now();
        let read_index = self.leader_link.read_index(leader_id, leader, deadline).await?;
        let remaining = deadline.saturating_sub(started.elapsed());
        self.raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(read_index), "linearizable read on a follower")
            .await
            .map(|_| ())
            .map_err(|error| match error {
                openraft::metrics::WaitError::Timeout(..) => {
                    ApiError::DeadlineExceeded { after_ms: duration_ms(deadline) }
                }
                openraft::metrics::WaitError::ShuttingDown => {
                    ApiError::NodeUnavailable { detail: "shutting down".into() }
                }
            })
    }

    /// Runs `read` against the applied state after the barrier; returns its
    /// result and the revision it saw.
    pub async fn read<T>(
        &self,
        consistency: i32,
        deadline: Duration,
        read: impl FnOnce(&AppliedState) -> Result<T, ApiError>,
    ) -> Result<(T, u64), ApiError> {
        self.read_barrier(consistency, deadline).await?;
        let applied = self.shared.read();
        let value = read(&applied)?;
        Ok((value, applied.revision()))
    }

    /// Wraps `message` with the response metadata every RPC carries.
    pub fn reply<T>(&self, message: T, revision: u64) -> Response<T> {
        let mut response = Response::new(message);
        self.stamp_metadata(response.metadata_mut(), revision);
        response
    }

    /// Answers an RPC: the message with metadata at its revision, or the error as a status.
    pub fn answer<T>(&self, result: Result<(T, u64), ApiError>) -> Result<Response<T>, tonic::Status> {
        result.map(|(message, revision)| self.reply(message, revision)).map_err(|error| self.fail(error))
    }

    /// Maps an error to a status carrying the same metadata as a reply.
    pub fn fail(&self, error: ApiError) -> tonic::Status {
        let revision = self.shared.read().revision();
        let mut status = error.into_status();
        self.stamp_metadata(status.metadata_mut(), revision);
        status
    }

    fn stamp_metadata(&self, metadata: &mut tonic::metadata::MetadataMap, revision: u64) {
        metadata.insert("keel-node-id", MetadataValue::from(self.identity.node_id));
        if let Ok(region) = MetadataValue::try_from(self.identity.region.as_str()) {
            metadata.insert("keel-region", region);
        }
        metadata.insert("keel-revision", MetadataValue::from(revision));
        if let Some(leader) = self.raft.metrics().borrow().current_leader {
            metadata.insert("keel-leader", MetadataValue::from(leader));
        }
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The caller's deadline from the `grpc-timeout` header, else `default_ms`,
/// capped at [`DEADLINE_MAX_MS`].
pub fn deadline<T>(request: &Request<T>, default_ms: u64) -> Duration {
    let requested =
        request.metadata().get("grpc-timeout").and_then(|value| value.to_str().ok()).and_then(parse_grpc_timeout);
    requested.unwrap_or(Duration::from_millis(default_ms)).min(Duration::from_millis(DEADLINE_MAX_MS))
}

/// Parses the gRPC wire timeout format: up to 8 digits and a unit (H M S m u n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at_checked(split)?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    match unit {
        "H" => Some(Duration::from_secs(amount.checked_mul(3600)?)),
        "M" => Some(Duration::from_secs(amount.checked_mul(60)?)),
        "S" => Some(Duration::from_secs(amount)),
        "m" => Some(Duration::from_millis(amount)),
        "u" => Some(Duration::from_micros(amount)),
        "n" => Some(Duration::from_nanos(amount)),
        _ => None,
    }
}

/// A page request, validated.
#[derive(Debug)]
pub struct Page {
    /// Items to return.
    pub size: usize,
    /// Resume strictly after this key.
    pub after: Option<String>,
}

/// Validates `page_size` and decodes `page_token` issued for `query`.
pub fn page(query: &str, page_size: i32, page_token: &str) -> Result<Page, ApiError> {
    let size = match page_size {
        0 => PAGE_SIZE_DEFAULT,
        n if n < 0 => {
            return Err(ApiError::Rejected(keel_kernel::Rejection::FieldInvalid {
                field: "page_size".into(),
                problem: "must not be negative".into(),
            }));
        }
        n => usize::try_from(n).unwrap_or(PAGE_SIZE_MAX).min(PAGE_SIZE_MAX),
    };
    if page_token.is_empty() {
        return Ok(Page { size, after: None });
    }
    let decoded =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(page_token).map_err(|_| ApiError::PageTokenInvalid)?;
    let decoded = String::from_utf8(decoded).map_err(|_| ApiError::PageTokenInvalid)?;
    let after =
        decoded.strip_prefix(query).and_then(|rest| rest.strip_prefix('\n')).ok_or(ApiError::PageTokenInvalid)?;
    Ok(Page { size, after: Some(after.to_owned()) })
}

/// Cuts `items` (fetched as `size + 1`) to one page — at most `page.size`
/// items and `LIST_PAGE_BYTES_MAX` encoded bytes, but always one item — and
/// makes the token that resumes after its last item, or an empty token when
/// nothing follows.
pub fn paginate<T: prost::Message>(
    mut items: Vec<T>,
    page: &Page,
    query: &str,
    key: impl Fn(&T) -> &str,
) -> (Vec<T>, String) {
    let mut bytes = 0usize;
    let mut fit = 0usize;
    for item in items.iter().take(page.size) {
        // The item, its field tag and its length prefix.
        let item_bytes = item.encoded_len() + 8;
        if fit > 0 && bytes + item_bytes > LIST_PAGE_BYTES_MAX {
            break;
        }
        bytes += item_bytes;
        fit += 1;
    }
    if items.len() <= fit {
        return (items, String::new());
    }
    items.truncate(fit);
    let token = items.last().map(|last| page_token(query, key(last))).unwrap_or_default();
    (items, token)
}

/// The token that resumes `query` after `last`.
pub fn page_token(query: &str, last: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{query}\n{last}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_measured_exactly_as_the_log_stores_its_proposal() {
        let command = Command::PublishEvent {
            topic: keel_kernel::Name::parse("topic", "deploys").expect("name"),
            tenant: None,
            engine: None,
            payload: vec![7; 1000],
        };
        for idempotency_key in [None, Some("k-1".to_owned())] {
            let write = Write { command: command.clone(), idempotency_key: idempotency_key.clone() };
            let proposal = Proposal {
                leader_time_ms: u64::MAX,
                semantics_version: u32::MAX,
                command: command.clone(),
                idempotency_key,
            };
            let fields = (0u64, 0u32, &write.command, &write.idempotency_key);
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
        };
        assert!(matches!(
            check_proposal_bytes(&huge),
            Err(ApiError::Rejected(keel_kernel::Rejection::LimitExceeded { limit: Limit::ProposalBytes, .. }))
        ));
    }

    #[test]
    fn grpc_timeouts_parse_per_the_wire_format() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
    }

    #[test]
    fn page_tokens_round_trip_and_are_bound_to_their_query() {
        let token = page_token("tenants", "acme");
        assert_eq!(page("tenants", 10, &token).map(|p| p.after).ok().flatten().as_deref(), Some("acme"));
        assert!(matches!(page("engines", 10, &token), Err(ApiError::PageTokenInvalid)));
        assert!(matches!(page("tenants", 10, "!!"), Err(ApiError::PageTokenInvalid)));
        assert_eq!(page("tenants", 0, "").map(|p| p.size).ok(), Some(PAGE_SIZE_DEFAULT));
        assert_eq!(page("tenants", 1_000_000, "").map(|p| p.size).ok(), Some(PAGE_SIZE_MAX));
        assert!(page("tenants", -1, "").is_err());
    }
}
