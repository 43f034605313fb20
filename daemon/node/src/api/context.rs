//! What every client service shares, and the one shape of a handler.
//!
//! ```text
//!  handler ─► ctx.serve(request, default deadline, |body, call| async move {
//!                 convert the request ─► call.read(consistency) │ call.write(command, key, typed outcome)
//!                 ─► convert the result })
//!          ◄─ Response + keel-node-id, keel-region, keel-revision, keel-leader │ Status (status::to_status)
//! ```
//!
//! A handler converts the request, states its read or its write, and
//! converts what came back; the deadline, the revision the answer is at,
//! the response metadata and the error's wire form are [`ApiContext::serve`]'s.

use super::error::ApiError;
use super::watch_queue::WatchBudget;
use crate::edge::authn::Authenticated;
use crate::judge::NodeJudge;
use crate::raft::shared_state::AppliedState;
use crate::replica::{Consistency, Replica, ReplicaError, Write};
use base64::Engine as _;
use keel_kernel::limits::{LIST_PAGE_BYTES_MAX, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX};
use keel_kernel::token::Principal;
use keel_kernel::{Judgement, Name, Outcome, Rejection, Verdict};
use keel_proto::v1 as pb;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

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
    pub budget: WatchBudget,
}

impl WatchStats {
    /// Admission for at most `watchers_max` streams at once.
    pub fn new(watchers_max: usize) -> Self {
        WatchStats {
            active: AtomicU64::new(0),
            cut_off_total: AtomicU64::new(0),
            permits: Arc::new(tokio::sync::Semaphore::new(watchers_max)),
            watchers_max,
            budget: WatchBudget::default(),
        }
    }

    /// A permit for one more stream, or the error when all are taken.
    pub fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManyWatchers { watchers_max: self.watchers_max })
    }
}

impl prometheus_client::collector::Collector for WatchStats {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let gauges = [
            ("keel_watchers", "Watch streams open on this node", self.active.load(Ordering::Relaxed)),
            (
                "keel_watchers_cut_off",
                "Watchers cut off for not reading, since start",
                self.cut_off_total.load(Ordering::Relaxed),
            ),
            (
                "keel_watch_queued_bytes",
                "Bytes queued for watchers on this node (bound WATCH_NODE_BUFFER_BYTES_MAX)",
                u64::try_from(self.budget.queued_bytes()).unwrap_or(u64::MAX),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

impl Default for WatchStats {
    fn default() -> Self {
        WatchStats::new(keel_kernel::limits::WATCHERS_PER_NODE_MAX)
    }
}

/// Shared by every client service.
#[derive(Clone)]
pub struct ApiContext {
    /// This node as a member: proposing, reading, membership, transfer.
    pub replica: Replica,
    /// Watch streams on this node.
    pub watch_stats: Arc<WatchStats>,
    /// Where third-party evaluations run (policies, action schemas).
    pub judge: NodeJudge,
    /// Policy evaluations already made (deterministic, so reusable).
    pub decisions: Arc<super::policy::DecisionCache>,
    /// Requests refused by the in-flight bound.
    pub shed_stats: Arc<crate::edge::load_shed::ShedStats>,
    /// Per-RPC latency and response counts (the edge records, `/metrics` reads).
    pub rpc_metrics: crate::edge::RpcMetrics,
    /// Peers talk plaintext (no `[tls]`): members, learners included, must
    /// then be on loopback, as configured members must.
    pub plaintext_peers: bool,
    /// This node's audit log (admissions, mutations, security events).
    pub audit: crate::audit::AuditLog,
    /// Channels to the other members' peer ports (audit queries fan out).
    pub peer_channels: Option<Arc<crate::raft::peer_channels::PeerChannels>>,
}

impl ApiContext {
    /// The context of the services over `replica`.
    pub fn new(replica: Replica) -> ApiContext {
        ApiContext {
            replica,
            watch_stats: Arc::default(),
            judge: NodeJudge::default(),
            decisions: Arc::default(),
            shed_stats: Arc::default(),
            rpc_metrics: crate::edge::RpcMetrics::default(),
            plaintext_peers: false,
            audit: crate::audit::AuditLog::disabled(),
            peer_channels: None,
        }
    }

    /// This context reaching the other members over `channels`.
    pub fn with_peer_channels(mut self, channels: Arc<crate::raft::peer_channels::PeerChannels>) -> ApiContext {
        self.peer_channels = Some(channels);
        self
    }

    /// This context recording into `audit`.
    pub fn with_audit(mut self, audit: crate::audit::AuditLog) -> ApiContext {
        self.audit = audit;
        self
    }

    /// This context for a node whose peers talk plaintext (or not).
    pub fn with_plaintext_peers(mut self, plaintext_peers: bool) -> ApiContext {
        self.plaintext_peers = plaintext_peers;
        self
    }

    /// This context judging with `judge`.
    pub fn with_judge(mut self, judge: NodeJudge) -> ApiContext {
        self.judge = judge;
        self
    }

    /// This context judging RPCs against `slo`.
    pub fn with_slo(mut self, slo: &crate::edge::slo::SloConfig) -> ApiContext {
        self.rpc_metrics = self.rpc_metrics.with_slo(slo);
        self
    }

    /// This context with watch admission for at most `watchers_max` streams.
    pub fn with_watchers_max(mut self, watchers_max: usize) -> ApiContext {
        self.watch_stats = Arc::new(WatchStats::new(watchers_max));
        self
    }

    /// Serves one unary RPC: runs `handler` on the request's body with a
    /// [`Call`] carrying the request's deadline (`grpc-timeout`, else
    /// `default_deadline_ms`), and answers its result with the response
    /// metadata at the revision the call read or wrote.
    pub async fn serve<'s, B, T, F, Fut>(
        &'s self,
        request: Request<B>,
        default_deadline_ms: u64,
        handler: F,
    ) -> Result<Response<T>, Status>
    where
        F: FnOnce(B, Call<'s>) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let principal = request.extensions().get::<Authenticated>().and_then(|authenticated| authenticated.0.clone());
        let request_id = request
            .metadata()
            .get(crate::edge::observe::REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let call = Call {
            ctx: self,
            deadline: deadline(&request, default_deadline_ms),
            revision: Arc::default(),
            is_replay: AtomicBool::new(false),
            principal,
            request_id,
            method: request
                .extensions()
                .get::<crate::edge::observe::RpcMethod>()
                .map(|method| method.0.clone())
                .unwrap_or_default(),
        };
        let revision = Arc::clone(&call.revision);
        match handler(request.into_inner(), call).await {
            Ok(message) => Ok(self.reply(message, revision.load(Ordering::Acquire))),
            Err(error) => Err(self.fail(error)),
        }
    }

    /// Wraps `message` with the response metadata every RPC carries; at
    /// revision 0 (the call read nothing) the current revision.
    pub fn reply<T>(&self, message: T, revision: u64) -> Response<T> {
        let mut response = Response::new(message);
        self.stamp_metadata(response.metadata_mut(), revision);
        response
    }

    /// Maps an error to a status carrying the same metadata as a reply.
    pub fn fail(&self, error: ApiError) -> Status {
        let reason = crate::edge::observe::ReasonLabels { reason: error.reason().to_owned() };
        self.rpc_metrics.errors.get_or_create(&reason).inc();
        let mut status = error.into_status();
        self.stamp_metadata(status.metadata_mut(), 0);
        status
    }

    fn stamp_metadata(&self, metadata: &mut tonic::metadata::MetadataMap, revision: u64) {
        let replica = &self.replica;
        let revision = if revision == 0 { replica.shared.read().revision() } else { revision };
        metadata.insert("keel-node-id", MetadataValue::from(replica.identity.node_id));
        if let Ok(region) = MetadataValue::try_from(replica.identity.region.as_str()) {
            metadata.insert("keel-region", region);
        }
        metadata.insert("keel-revision", MetadataValue::from(revision));
        if let Some(leader) = replica.current_leader() {
            metadata.insert("keel-leader", MetadataValue::from(leader));
        }
    }
}

/// One RPC in progress: its deadline, its caller, and the revision its
/// answer is at.
pub struct Call<'s> {
    ctx: &'s ApiContext,
    deadline: Duration,
    revision: Arc<AtomicU64>,
    is_replay: AtomicBool,
    principal: Option<Arc<Principal>>,
    /// The edge's request id.
    request_id: String,
    /// The RPC's method name.
    method: String,
}

impl Call<'_> {
    /// An audit record of this call: who, which request, which trace.
    pub fn audit_record(&self, kind: keel_audit::Kind) -> keel_audit::Record {
        keel_audit::Record {
            kind,
            principal: self.principal.as_ref().map(|principal| principal.actor.sub.clone()).unwrap_or_default(),
            request_id: self.request_id.clone(),
            trace_id: crate::telemetry::current_trace_id(),
            action: self.method.clone(),
            ..keel_audit::Record::default()
        }
    }

    /// The caller the edge authenticated (`None`: a root-signed request
    /// without a token, or authentication off).
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_deref()
    }

    /// The one tenant a tenant-scoped caller may see and affect.
    pub fn tenant_scope(&self) -> Option<&Name> {
        self.principal.as_ref().and_then(|principal| principal.actor.tenant.as_ref())
    }

    /// Refuses (PERMISSION_DENIED / TENANT_OUT_OF_SCOPE) unless the caller
    /// may see or affect `tenant`; the same answer whether or not it exists.
    pub fn check_tenant(&self, tenant: &str) -> Result<(), ApiError> {
        match self.tenant_scope() {
            Some(scope) if scope.as_str() != tenant => Err(ApiError::Rejected(Rejection::TenantOutOfScope {
                scope: scope.to_string(),
                requested: tenant.to_owned(),
            })),
            _ => Ok(()),
        }
    }

    /// The request's deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The context.
    pub fn ctx(&self) -> &ApiContext {
        self.ctx
    }

    /// Answers at `revision` (a call that neither reads nor writes through
    /// the call, e.g. a status report or a membership change).
    pub fn at_revision(&self, revision: u64) {
        self.revision.store(revision, Ordering::Release);
    }

    /// The applied state once a read at `consistency` (the request's
    /// `keel.v1.ReadConsistency`) may be served from it; the answer is at
    /// its revision.
    pub async fn read(&self, consistency: i32) -> Result<Arc<AppliedState>, ApiError> {
        let consistency = match pb::ReadConsistency::try_from(consistency) {
            Ok(pb::ReadConsistency::Serializable) => Consistency::Serializable,
            Ok(pb::ReadConsistency::Linearizable | pb::ReadConsistency::Unspecified) => Consistency::Linearizable,
            Err(_) => {
                return Err(ApiError::Rejected(keel_kernel::Rejection::FieldInvalid {
                    field: "consistency".into(),
                    problem: "unknown read consistency".into(),
                }));
            }
        };
        let state = self.ctx.replica.read(consistency, self.deadline).await?;
        self.revision.store(state.revision(), Ordering::Release);
        Ok(state)
    }

    /// Proposes `command` with the client's idempotency key (empty: none)
    /// and converts the outcome with `typed`, which names the one outcome
    /// this command has (any other is a bug, answered as internal). A
    /// replay answers the first outcome; the answer is at the revision that
    /// applied it.
    pub async fn write<T>(
        &self,
        command: keel_kernel::Command,
        idempotency_key: String,
        typed: impl FnOnce(&Outcome) -> Option<T>,
    ) -> Result<T, ApiError> {
        let idempotency_key = (!idempotency_key.is_empty()).then_some(idempotency_key);
        if let Some(key) = &idempotency_key {
            keel_kernel::idempotency::validate_key(key)?;
        }
        let actor = self.principal.as_ref().map(|principal| principal.actor.clone());
        if actor.is_none()
            && command.is_root_signed()
            && let Err(refused) = self.preflight(&command, idempotency_key.as_ref())
        {
            // A root-signed change refused before the log (a bad or missing
            // signature): a security record, without making the caller wait.
            let mut record = self.audit_record(keel_audit::Kind::Security);
            record.decision = "refused".to_owned();
            record.reason = refused.reason().to_owned();
            record.detail = refused.to_string();
            self.ctx.audit.record_later(self.ctx.audit.stamp(record));
            return Err(refused);
        }
        // Audited before it is proposed (who, what), then its outcome: a
        // change is never made by a call whose intent is not on disk.
        let mut intent = self.audit_record(keel_audit::Kind::Mutation);
        intent.tenant = command.tenant().map(|tenant| tenant.to_string()).unwrap_or_default();
        intent.decision = "proposed".to_owned();
        let audit = &self.ctx.audit;
        audit.record(vec![audit.stamp(intent.clone())]).await?;
        let write = Write { command, idempotency_key, actor };
        let proposed = self.ctx.replica.propose(write, self.deadline).await;
        let mut outcome = intent;
        match &proposed {
            Ok((_, revision)) => {
                outcome.decision = "applied".to_owned();
                outcome.reason = "OK".to_owned();
                outcome.revision = *revision;
            }
            Err(error) => {
                outcome.decision =
                    if matches!(error, ReplicaError::Rejected(_)) { "rejected" } else { "failed" }.to_owned();
                outcome.reason = crate::status::Fault::reason(error).to_owned();
                outcome.detail = error.to_string();
            }
        }
        let recorded = audit.record(vec![audit.stamp(outcome)]).await;
        let (applied, revision) = proposed?;
        recorded?;
        self.revision.store(revision, Ordering::Release);
        self.is_replay.store(applied.replay_of.is_some(), Ordering::Release);
        typed(&applied.outcome)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a write was answered with {:?}", applied.outcome)))
    }

    /// A root-signed write without a token is applied to a
    /// copy of the published state first (O(1): the state is persistent),
    /// and refused here if it would be refused: an unauthenticated caller
    /// can put nothing in the log that `apply` would not accept.
    fn preflight(&self, command: &keel_kernel::Command, idempotency_key: Option<&String>) -> Result<(), ApiError> {
        let state = self.ctx.replica.shared.read();
        let mut kernel = state.kernel.clone();
        let proposal = keel_kernel::Proposal {
            leader_time_ms: self.ctx.replica.clock.wall_now_ms(),
            semantics_version: keel_kernel::judge::SEMANTICS_VERSION,
            command: command.clone(),
            idempotency_key: idempotency_key.cloned(),
            actor: None,
        };
        kernel.apply(state.revision().saturating_add(1), &proposal)?;
        Ok(())
    }

    /// Whether the write answered a replayed idempotency key.
    pub fn is_replay(&self) -> bool {
        self.is_replay.load(Ordering::Acquire)
    }

    /// Fails fast before proposing: runs `judgement` (the same one `apply`
    /// will run) within the request's time, and refuses the write if it is
    /// refused. A judgement that cannot finish in time here never enters the
    /// log, so no member has to run a slow one in `apply`.
    pub async fn prejudge(&self, judgement: Option<Judgement>) -> Result<(), ApiError> {
        let Some(judgement) = judgement else {
            return Ok(());
        };
        match self.judge(judgement).await? {
            Verdict::Rejected(rejection) => Err(ApiError::Rejected(rejection)),
            Verdict::Accepted | Verdict::Decisions(_) => Ok(()),
            Verdict::Unavailable { detail } => Err(crate::judge::JudgeError::Unavailable { detail }.into()),
        }
    }

    /// Runs `judgement` for this request, within its deadline.
    pub async fn judge(&self, judgement: Judgement) -> Result<Verdict, ApiError> {
        Ok(self.ctx.judge.judge_for_request(judgement, self.deadline).await?)
    }
}

/// The caller's deadline from the `grpc-timeout` header, else `default_ms`,
/// capped at [`DEADLINE_MAX_MS`].
pub fn deadline<T>(request: &Request<T>, default_ms: u64) -> Duration {
    crate::deadline::from_metadata(request.metadata(), default_ms)
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
