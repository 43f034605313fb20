//! `keel.v1.AdmissionService`: the admission pipeline on this member's
//! applied state (see `admission` and ARCHITECTURE.md → Admission).
//!
//! ```text
//!  Admit ─► validate ─► tenant scope ─► idempotency record? (the first decision)
//!        ─► serializable read (no barrier, no Raft write)
//!        ─► admission::resolve (tenant, version, signers, action)
//!        ─► judge ActionInput (when the action has an input schema and input was sent)
//!        ─► api::policy::decide ("main", the call's context; cached evaluations)
//!        ─► breaker seen open? dependencies' breakers closed (or allow_degraded)?
//!        ─► RedisLimiter (the cluster's limit, one script, + the idempotency record) when
//!           [redis] is set, else or in its outage (mode local) LocalLimiter at this
//!           member's share (limit ÷ voters)
//!        ─► breaker gate (a probe when half-open)
//!        ─► AdmitResponse (a denial is an answer with a reason)
//!  ReportOutcome ─► Breakers::report
//! ```

use super::context::{ApiContext, Call};
use super::error::ApiError;
use crate::admission::breaker::{Breakers, Gate};
use crate::admission::limiter::{Limited, LocalLimiter, Remaining};
use crate::admission::records::{LocalRecords, Recorded};
use crate::admission::redis_limiter::{Record, RedisAnswer, RedisLimiter, RedisUnavailable};
use crate::admission::{Admission, AdmissionConfig, Denial, LimiterHealth, OnUnavailable, resolve};
use crate::limits::{
    ADMISSION_BATCH_MAX, ADMISSION_COST_MAX, ADMISSION_IDEMPOTENCY_WINDOW_MS, ADMISSION_INPUT_BYTES_MAX,
    READ_DEADLINE_DEFAULT_MS,
};
use crate::raft::shared_state::AppliedState;
use keel_kernel::judge::Judgement;
use keel_kernel::policy::{ACTIVE_POLICY_NAME, EvaluationContext};
use keel_kernel::{Name, Rejection, Verdict};
use keel_proto::v1 as pb;
use prost::Message;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The service.
#[derive(Clone)]
pub struct AdmissionApi {
    pub(crate) ctx: ApiContext,
    limits: Arc<Limits>,
}

/// How admissions are limited.
pub(super) struct Limits {
    config: AdmissionConfig,
    local: LocalLimiter,
    /// Idempotency records without Redis (or in its outage).
    records: LocalRecords,
    /// Circuit breakers.
    breakers: Breakers,
    /// Parsed manifests.
    manifests: crate::admission::Manifests,
    /// The shared limiter, when `[redis]` names a server or a cluster.
    redis: Option<RedisLimiter>,
    /// Whether Redis answers (transitions are logged once).
    health: Arc<LimiterHealth>,
}

/// What a limit check found.
enum Outcome {
    /// Charged; the room left per scope.
    Admitted(Vec<Remaining>),
    /// The idempotency key was seen: the first decision (encoded), nothing charged.
    Replayed(Vec<u8>),
}

/// A limit check's outcome.
struct Checked {
    answer: Result<Outcome, Denial>,
    /// Why the decision used a fallback, if it did.
    degraded: Option<String>,
}

impl AdmissionApi {
    /// The service with `config`'s limits: shared through Redis when
    /// `[redis]` names a server or a cluster, else in this process.
    pub fn new(
        ctx: ApiContext,
        config: &crate::config::Config,
        health: Arc<LimiterHealth>,
    ) -> anyhow::Result<AdmissionApi> {
        let redis = config.redis.limiter()?;
        let limits = Limits {
            config: config.admission.clone(),
            local: LocalLimiter::default(),
            records: LocalRecords::default(),
            breakers: Breakers::new(config.breaker.clone(), redis.clone(), Arc::clone(&health)),
            manifests: crate::admission::Manifests::default(),
            redis,
            health,
        };
        Ok(AdmissionApi { ctx, limits: Arc::new(limits) })
    }

    /// The limits, for the other APIs that admit (Envoy's).
    pub(super) fn limits(&self) -> Arc<Limits> {
        Arc::clone(&self.limits)
    }

    /// Publishes every breaker transition this member makes as an event
    /// (topic `keel-breaker`, the engine, a JSON payload), through Raft, off
    /// the admission path, until `stop`.
    pub fn publish_breaker_events(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        use tokio::sync::broadcast::error::RecvError;
        let mut transitions = self.limits.breakers.subscribe();
        let replica = self.ctx.replica.clone();
        let audit = self.ctx.audit.clone();
        let is_shared = self.limits.breakers.is_shared();
        tokio::spawn(async move {
            let Ok(topic) = Name::parse("topic", crate::admission::breaker::BREAKER_TOPIC) else {
                return;
            };
            loop {
                let transition = tokio::select! {
                    _ = stop.wait_for(|stopped| *stopped) => return,
                    transition = transitions.recv() => match transition {
                        Ok(transition) => transition,
                        Err(RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "breaker transitions were not published: too many at once");
                            continue;
                        }
                        Err(RecvError::Closed) => return,
                    },
                };
                let (engine, action) = match transition.breaker.split_once('/') {
                    Some((engine, action)) => (engine, Some(action)),
                    None => (transition.breaker.as_str(), None),
                };
                let payload = serde_json::json!({
                    "breaker": transition.breaker,
                    "engine": engine,
                    "action": action,
                    "from": transition.from.as_str(),
                    "to": transition.to.as_str(),
                    "node_id": replica.identity.node_id,
                    "shared": is_shared,
                });
                // Recorded on this member, which saw the transition.
                let record = keel_audit::Record {
                    kind: keel_audit::Kind::Breaker,
                    engine: engine.to_owned(),
                    action: transition.breaker.clone(),
                    decision: transition.to.as_str().to_owned(),
                    reason: format!("BREAKER_{}", transition.to.as_str().to_uppercase()),
                    detail: format!("from {} (shared through redis: {is_shared})", transition.from.as_str()),
                    ..keel_audit::Record::default()
                };
                audit.record_later(audit.stamp(record));
                let command = keel_kernel::Command::PublishEvent {
                    topic: topic.clone(),
                    tenant: None,
                    engine: Name::parse("engine", engine).ok(),
                    payload: payload.to_string().into_bytes(),
                };
                let write = crate::replica::Write { command, idempotency_key: None, actor: None };
                let deadline = std::time::Duration::from_millis(crate::limits::BREAKER_EVENT_DEADLINE_MS);
                if let Err(error) = replica.propose(write, deadline).await {
                    tracing::warn!(%error, breaker = %transition.breaker, "a breaker transition was not published as an event");
                }
            }
        });
    }

    /// Probes a Redis that failed every `REDIS_PROBE_INTERVAL_MS` until it
    /// answers again (so `/readyz` recovers without an admission), until `stop`.
    pub fn probe_redis(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(redis) = self.limits.redis.clone() else {
            return;
        };
        let health = Arc::clone(&self.limits.health);
        tokio::spawn(async move {
            let interval = std::time::Duration::from_millis(crate::limits::REDIS_PROBE_INTERVAL_MS);
            loop {
                tokio::select! {
                    _ = stop.wait_for(|stopped| *stopped) => return,
                    () = tokio::time::sleep(interval) => {}
                }
                if health.is_degraded() && redis.ping().await && health.record(true) {
                    tracing::info!("the shared rate limiter (redis) answers again");
                }
            }
        });
    }
}

fn limited(denial: Limited) -> Denial {
    match denial {
        Limited::Exceeded { scope, retry_after } => Denial::RateLimited {
            scope: scope.key,
            retry_after_ms: u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX).max(1),
        },
        Limited::Full => Denial::RateLimited { scope: "(limiter full)".to_owned(), retry_after_ms: 1_000 },
    }
}

impl Limits {
    /// The decision recorded under the tenant's idempotency key, if any:
    /// in Redis when it answers, else in this process.
    async fn recorded(&self, tenant: &str, key: &str) -> Option<Vec<u8>> {
        if let Some(redis) = &self.redis
            && !self.health.is_degraded()
            && let Ok(recorded) = redis.recorded(tenant, key).await
        {
            return recorded;
        }
        self.records.get(tenant, key)
    }

    /// Charges `cost` to the admission's scopes, in Redis (the whole
    /// cluster's limit) or, without Redis, here at this member's share;
    /// when admitted, records `record` (the key and the encoded decision).
    async fn check(
        &self,
        admission: &Admission,
        tier: keel_kernel::tenant::TenantTier,
        policy: Option<keel_kernel::policy::DecisionLimits>,
        voters: u64,
        record: Option<(&str, &[u8])>,
    ) -> Checked {
        let ttl = std::time::Duration::from_millis(ADMISSION_IDEMPOTENCY_WINDOW_MS);
        let local = |degraded: Option<String>| {
            let scopes = self.config.scopes(admission, tier, policy, voters);
            let check = || self.local.check(&scopes, admission.cost).map_err(limited);
            let answer = match record {
                None => check().map(Outcome::Admitted),
                Some((key, value)) => match self.records.admit(admission.tenant.as_str(), key, value, ttl, check) {
                    Recorded::Replayed(first) => Ok(Outcome::Replayed(first)),
                    Recorded::Checked(checked) => checked.map(Outcome::Admitted),
                },
            };
            Checked { answer, degraded }
        };
        let Some(redis) = &self.redis else {
            return local(None);
        };
        let scopes = self.config.scopes(admission, tier, policy, 1);
        let record = record.map(|(key, value)| Record { key, value, ttl });
        let checked = match self.health.should_try() {
            true => redis.check(admission.tenant.as_str(), &scopes, admission.cost, record).await,
            false => Err(RedisUnavailable::Down),
        };
        match checked {
            Ok(answer) => {
                if self.health.record(true) {
                    tracing::info!("the shared rate limiter (redis) answers again");
                }
                let answer = match answer {
                    RedisAnswer::Admitted(remaining) => Ok(Outcome::Admitted(remaining)),
                    RedisAnswer::Replayed(first) => Ok(Outcome::Replayed(first)),
                    RedisAnswer::Limited { scope, retry_after } => {
                        Err(limited(Limited::Exceeded { scope, retry_after }))
                    }
                };
                Checked { answer, degraded: None }
            }
            Err(unavailable) => {
                if self.health.record(false) {
                    tracing::warn!(error = %unavailable, mode = ?self.health.on_unavailable, "the shared rate limiter (redis) is unavailable");
                }
                let why = format!("{unavailable}; redis.on_unavailable = {:?}", self.health.on_unavailable);
                match self.health.on_unavailable {
                    OnUnavailable::FailClosed => {
                        Checked { answer: Err(Denial::LimiterUnavailable { detail: why.clone() }), degraded: Some(why) }
                    }
                    OnUnavailable::FailOpen => {
                        Checked { answer: Ok(Outcome::Admitted(Vec::new())), degraded: Some(why) }
                    }
                    OnUnavailable::Local => local(Some(why)),
                }
            }
        }
    }
}

/// The first decision for an idempotency key, answered again.
pub fn replayed(first: &[u8]) -> Result<pb::AdmitResponse, ApiError> {
    let mut response = pb::AdmitResponse::decode(first)
        .map_err(|error| ApiError::internal(anyhow::anyhow!("an idempotency record does not decode: {error}")))?;
    response.idempotent_replay = true;
    response.remaining.clear();
    Ok(response)
}

fn invalid(field: &'static str, problem: &'static str) -> Rejection {
    Rejection::FieldInvalid { field: field.into(), problem: problem.into() }
}

/// The request, validated (a request that cannot be judged is an error).
pub fn admission_of(request: &pb::AdmitRequest) -> Result<(Admission, EvaluationContext), Rejection> {
    let optional =
        |field: &'static str, value: &str| (!value.is_empty()).then(|| Name::parse(field, value)).transpose();
    keel_kernel::limits::Limit::NameBytes.check(request.version.len())?;
    let version = (!request.version.is_empty())
        .then(|| keel_kernel::manifest::parse_version("version", &request.version))
        .transpose()?;
    if request.cost > ADMISSION_COST_MAX {
        return Err(invalid("cost", "is over ADMISSION_COST_MAX"));
    }
    if request.input_json.len() > ADMISSION_INPUT_BYTES_MAX {
        return Err(invalid("input_json", "is over ADMISSION_INPUT_BYTES_MAX"));
    }
    let input = match request.input_json.is_empty() {
        true => None,
        false => Some(serde_json::from_str(&request.input_json).map_err(|_| invalid("input_json", "is not JSON"))?),
    };
    let admission = Admission {
        tenant: Name::parse("tenant", &request.tenant)?,
        engine: Name::parse("engine", &request.engine)?,
        version,
        action: Name::parse("action", &request.action)?,
        input,
        cost: request.cost.max(1),
    };
    if request.idempotency_key.len() > keel_kernel::limits::IDEMPOTENCY_KEY_BYTES_MAX {
        return Err(invalid("idempotency_key", "is over IDEMPOTENCY_KEY_BYTES_MAX"));
    }
    let context = EvaluationContext {
        tenant: admission.tenant.clone(),
        engine: admission.engine.clone(),
        version: admission.version.clone(),
        action: admission.action.clone(),
        role: optional("role", &request.role)?,
        risk_band: optional("risk_band", &request.risk_band)?,
        region: optional("region", &request.region)?,
        data_classes: Default::default(),
    };
    Ok((admission, context))
}

/// `response` as a denial for `denial`.
fn deny(mut response: pb::AdmitResponse, denial: Denial) -> pb::AdmitResponse {
    response.allowed = false;
    response.reason = denial.reason().to_owned();
    response.detail = denial.detail();
    if let Denial::RateLimited { retry_after_ms, .. } | Denial::CircuitOpen { retry_after_ms, .. } = denial {
        response.retry_after_ms = retry_after_ms;
    }
    response
}

/// An admission that passed every check before the limits.
pub(super) struct ToCharge {
    /// The answer so far (provenance, decision).
    response: pb::AdmitResponse,
    admission: Admission,
    tier: keel_kernel::tenant::TenantTier,
    policy_limits: Option<keel_kernel::policy::DecisionLimits>,
    /// This member's share of a limit kept in process.
    voters: u64,
    /// The idempotency key and the encoded decision a retry gets.
    record: Option<(String, Vec<u8>)>,
    breaker: String,
    degraded_dependencies: Vec<String>,
}

/// An admission up to its limit check.
pub(super) enum Prepared {
    /// Decided already (a denial, or the recorded first decision).
    Answered(Box<pb::AdmitResponse>),
    /// To be charged.
    ToCharge(Box<ToCharge>),
}

/// Everything before the limits, on one published state (`state`).
async fn prepare(
    call: &Call<'_>,
    limits: &Limits,
    state: &AppliedState,
    body: &pb::AdmitRequest,
) -> Result<Prepared, ApiError> {
    let (admission, mut context) = admission_of(body)?;
    call.check_tenant(admission.tenant.as_str())?;
    let key = (!body.idempotency_key.is_empty()).then_some(body.idempotency_key.as_str());
    if let Some(key) = key
        && let Some(first) = limits.recorded(admission.tenant.as_str(), key).await
    {
        return replayed(&first).map(|first| Prepared::Answered(Box::new(first)));
    }
    let identity = &call.ctx().replica.identity;
    let mut response = pb::AdmitResponse {
        trust_root_version: state.kernel.trust().root().version,
        revision: state.revision(),
        served_by: Some(pb::ServedBy {
            node_id: identity.node_id,
            region: identity.region.clone(),
            zone: identity.zone.clone(),
        }),
        ..pb::AdmitResponse::default()
    };
    let answered = |response, denial| Ok(Prepared::Answered(Box::new(deny(response, denial))));
    let resolved = match resolve(&state.kernel, &limits.manifests, &admission) {
        Ok(resolved) => resolved,
        Err(denial) => return answered(response, denial),
    };
    response.engine_version = resolved.version.to_string();
    if let (Some(schema), Some(input)) = (&resolved.input_schema, &admission.input) {
        let judgement = Judgement::ActionInput {
            action: admission.action.to_string(),
            schema: schema.clone(),
            input: input.clone(),
        };
        match call.judge(judgement).await? {
            Verdict::Accepted => {}
            Verdict::Rejected(Rejection::InputInvalid { problem, .. }) => {
                return answered(response, Denial::InputInvalid { problem });
            }
            Verdict::Rejected(rejection) => {
                return answered(response, Denial::InputInvalid { problem: rejection.to_string() });
            }
            Verdict::Decisions(_) | Verdict::Unavailable { .. } => {
                return Err(ApiError::internal(anyhow::anyhow!("input validation gave no verdict")));
            }
        }
    }
    context.version = Some(resolved.version.clone());
    let name = Name::parse("policy", ACTIVE_POLICY_NAME)?;
    let decision = super::policy::decide(call, state, &name, &context).await?;
    response.decision_id = decision.decision_id.clone();
    response.policy_version = decision.policy_version.clone();
    response.limits = decision.limits.map(|limits| pb::DecisionLimits {
        calls_per_minute: limits.calls_per_minute,
        burst: limits.burst,
        max_duration_ms: limits.max_duration_ms,
    });
    if !decision.allow {
        return answered(response, Denial::PolicyDenied { reason: decision.reason });
    }
    // A breaker seen open stops the admission before any scope is charged.
    let breaker = limits.breakers.config().breaker_of(admission.engine.as_str(), admission.action.as_str());
    if let Some(Gate::Refuse { retry_after_ms }) = limits.breakers.refuses_now(&breaker) {
        return answered(response, Denial::CircuitOpen { breaker, retry_after_ms });
    }
    let mut degraded_dependencies = Vec::new();
    for dependency in &resolved.dependencies {
        if !limits.breakers.is_closed(dependency.as_str()).await {
            if !decision.allow_degraded {
                return answered(response, Denial::DependencyUnavailable { dependency: dependency.to_string() });
            }
            degraded_dependencies.push(dependency.to_string());
        }
    }
    // What a retry with the same key is answered with, if this admits.
    let record = key.map(|key| {
        let mut first = response.clone();
        first.allowed = true;
        (key.to_owned(), first.encode_to_vec())
    });
    Ok(Prepared::ToCharge(Box::new(ToCharge {
        response,
        tier: resolved.tier,
        policy_limits: decision.limits,
        // Without a shared limiter each member limits at its share, so
        // the cluster's total stays within the limit.
        voters: u64::try_from(call.ctx().replica.voter_count()).unwrap_or(1).max(1),
        admission,
        record,
        breaker,
        degraded_dependencies,
    })))
}

impl Limits {
    /// The limit check of a prepared admission.
    async fn charge(&self, prepared: &ToCharge) -> Checked {
        let record = prepared.record.as_ref().map(|(key, value)| (key.as_str(), value.as_slice()));
        self.check(&prepared.admission, prepared.tier, prepared.policy_limits, prepared.voters, record).await
    }
}

/// Everything after the limits: the breaker's gate and the answer.
async fn finish(limits: &Limits, prepared: ToCharge, checked: Checked) -> Result<pb::AdmitResponse, ApiError> {
    let ToCharge { mut response, breaker, degraded_dependencies, .. } = prepared;
    let mut degraded: Vec<String> = checked.degraded.into_iter().collect();
    if !degraded_dependencies.is_empty() {
        degraded.push(format!("open circuit breakers of dependencies: {}", degraded_dependencies.join(", ")));
    }
    let remaining = match checked.answer {
        Ok(Outcome::Replayed(first)) => return replayed(&first),
        Ok(Outcome::Admitted(remaining)) => remaining,
        Err(denial) => {
            if !degraded.is_empty() {
                response.degraded = true;
                response.degraded_reason = degraded.join("; ");
            }
            return Ok(deny(response, denial));
        }
    };
    let gated = limits.breakers.admit(&breaker).await;
    if gated.is_local_fallback {
        degraded.push("circuit breaker decided by this member alone (redis unavailable)".to_owned());
    }
    if !degraded.is_empty() {
        response.degraded = true;
        response.degraded_reason = degraded.join("; ");
    }
    if let Gate::Refuse { retry_after_ms } = gated.gate {
        return Ok(deny(response, Denial::CircuitOpen { breaker, retry_after_ms }));
    }
    response.allowed = true;
    response.remaining = remaining
        .into_iter()
        .map(|room| pb::ScopeRemaining {
            scope: room.scope.key,
            calls_per_minute: room.scope.calls_per_minute,
            burst: room.scope.burst,
            remaining: room.remaining,
        })
        .collect();
    Ok(response)
}

/// One admission, judged on one published state (`state`), audited.
async fn admit_one(
    call: &Call<'_>,
    limits: &Limits,
    state: &AppliedState,
    body: &pb::AdmitRequest,
) -> Result<pb::AdmitResponse, ApiError> {
    let decided = match prepare(call, limits, state, body).await {
        Ok(Prepared::Answered(response)) => Ok(*response),
        Ok(Prepared::ToCharge(prepared)) => {
            let checked = limits.charge(&prepared).await;
            finish(limits, *prepared, checked).await
        }
        Err(error) => Err(error),
    };
    let mut answers = audited(call, std::slice::from_ref(body), vec![decided]).await;
    answers.pop().unwrap_or_else(|| Err(ApiError::internal(anyhow::anyhow!("an admission went unanswered"))))
}

/// The audit record of one decided admission.
fn admission_record(call: &Call<'_>, body: &pb::AdmitRequest, answer: &pb::AdmitResponse) -> keel_audit::Record {
    let mut record = call.audit_record(keel_audit::Kind::Admission);
    record.tenant.clone_from(&body.tenant);
    record.engine.clone_from(&body.engine);
    record.action.clone_from(&body.action);
    record.decision = if answer.allowed { "allowed" } else { "denied" }.to_owned();
    record.reason = if answer.allowed { "OK".to_owned() } else { answer.reason.clone() };
    record.detail = if answer.idempotent_replay {
        "idempotent replay of the first decision".to_owned()
    } else {
        answer.detail.clone()
    };
    record.decision_id.clone_from(&answer.decision_id);
    record.policy_version.clone_from(&answer.policy_version);
    record.revision = answer.revision;
    if answer.degraded {
        record.degraded.clone_from(&answer.degraded_reason);
    }
    call.ctx().audit.stamp(record)
}

/// Makes the records of every decided admission durable (one batch) and
/// stamps their audit ids; when they are not durable in time every
/// decision is answered `AUDIT_UNAVAILABLE` instead (none unaudited). A
/// request that was not decided (an invalid one) has no record.
async fn audited(
    call: &Call<'_>,
    bodies: &[pb::AdmitRequest],
    answers: Vec<Result<pb::AdmitResponse, ApiError>>,
) -> Vec<Result<pb::AdmitResponse, ApiError>> {
    let records: Vec<keel_audit::Record> = bodies
        .iter()
        .zip(&answers)
        .filter_map(|(body, answer)| answer.as_ref().ok().map(|answer| admission_record(call, body, answer)))
        .collect();
    if records.is_empty() {
        return answers;
    }
    match call.ctx().audit.record(records).await {
        Ok(ids) => {
            let mut ids = ids.into_iter();
            answers
                .into_iter()
                .map(|answer| {
                    answer.map(|mut answer| {
                        answer.audit_id = ids.next().unwrap_or_default();
                        answer
                    })
                })
                .collect()
        }
        Err(error) => answers.into_iter().map(|answer| answer.and(Err(ApiError::from(error.clone())))).collect(),
    }
}

/// Many admissions on one published state, each judged alone: prepared in
/// turn (yielding between them, so a large batch never holds a worker
/// thread), their limit checks sent together (one Redis round trip for the
/// lot on one server), then finished in order.
pub(super) async fn admit_many(
    call: &Call<'_>,
    limits: &Limits,
    state: &AppliedState,
    bodies: &[pb::AdmitRequest],
) -> Vec<Result<pb::AdmitResponse, ApiError>> {
    let mut prepared = Vec::with_capacity(bodies.len());
    for body in bodies {
        prepared.push(prepare(call, limits, state, body).await);
        tokio::task::yield_now().await;
    }
    let checks = futures::future::join_all(prepared.iter().map(|prepared| async move {
        match prepared {
            Ok(Prepared::ToCharge(prepared)) => Some(limits.charge(prepared).await),
            _ => None,
        }
    }))
    .await;
    let mut answers = Vec::with_capacity(bodies.len());
    for (prepared, checked) in prepared.into_iter().zip(checks) {
        answers.push(match (prepared, checked) {
            (Ok(Prepared::ToCharge(prepared)), Some(checked)) => finish(limits, *prepared, checked).await,
            (Ok(Prepared::Answered(response)), _) => Ok(*response),
            (Err(error), _) => Err(error),
            (Ok(Prepared::ToCharge(_)), None) => {
                Err(ApiError::internal(anyhow::anyhow!("an admission was not charged")))
            }
        });
    }
    audited(call, bodies, answers).await
}

#[tonic::async_trait]
impl pb::admission_service_server::AdmissionService for AdmissionApi {
    async fn admit(&self, request: Request<pb::AdmitRequest>) -> Result<Response<pb::AdmitResponse>, Status> {
        let limits = Arc::clone(&self.limits);
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let state = call.read(pb::ReadConsistency::Serializable as i32).await?;
                admit_one(&call, &limits, &state, &body).await
            })
            .await
    }

    async fn report_outcome(
        &self,
        request: Request<pb::ReportOutcomeRequest>,
    ) -> Result<Response<pb::ReportOutcomeResponse>, Status> {
        use crate::admission::breaker::{Outcome as CallOutcome, Phase};
        let limits = Arc::clone(&self.limits);
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let tenant = Name::parse("tenant", &body.tenant)?;
                let engine = Name::parse("engine", &body.engine)?;
                let action = Name::parse("action", &body.action)?;
                call.check_tenant(tenant.as_str())?;
                // Outcomes of calls that could have been admitted only: a
                // report naming no such tenant, engine or action is refused
                // (and creates no breaker). A suspended tenant or a yanked
                // version still reports the calls that were running.
                let state = call.read(pb::ReadConsistency::Serializable as i32).await?;
                let asked = Admission {
                    tenant: tenant.clone(),
                    engine: engine.clone(),
                    version: None,
                    action: action.clone(),
                    input: None,
                    cost: 1,
                };
                match resolve(&state.kernel, &limits.manifests, &asked) {
                    Err(Denial::TenantNotFound) => {
                        return Err(ApiError::Rejected(Rejection::TenantNotFound { tenant_id: tenant.to_string() }));
                    }
                    Err(Denial::EngineNotEnabled | Denial::EngineVersionNotFound) => {
                        return Err(ApiError::Rejected(Rejection::EngineVersionNotFound {
                            engine: engine.to_string(),
                            version: "any enabled for the tenant".to_owned(),
                        }));
                    }
                    Err(Denial::ActionUnknown) => {
                        return Err(ApiError::Rejected(invalid("action", "is not an action of the engine")));
                    }
                    _ => {}
                }
                let outcome = match pb::CallOutcome::try_from(body.outcome) {
                    Ok(pb::CallOutcome::Ok) => CallOutcome::Ok,
                    Ok(pb::CallOutcome::Error) => CallOutcome::Error,
                    Ok(pb::CallOutcome::Timeout) => CallOutcome::Timeout,
                    _ => return Err(ApiError::Rejected(invalid("outcome", "must be OK, ERROR or TIMEOUT"))),
                };
                let breaker = limits.breakers.config().breaker_of(engine.as_str(), action.as_str());
                let state = match limits.breakers.report(&breaker, outcome).await {
                    Phase::Closed => pb::BreakerState::Closed,
                    Phase::Open => pb::BreakerState::Open,
                    Phase::HalfOpen => pb::BreakerState::HalfOpen,
                };
                Ok(pb::ReportOutcomeResponse { breaker, state: state as i32 })
            })
            .await
    }

    async fn admit_batch(
        &self,
        request: Request<pb::AdmitBatchRequest>,
    ) -> Result<Response<pb::AdmitBatchResponse>, Status> {
        let limits = Arc::clone(&self.limits);
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                if body.requests.len() > ADMISSION_BATCH_MAX {
                    return Err(ApiError::Rejected(Rejection::FieldInvalid {
                        field: "requests".into(),
                        problem: "more than ADMISSION_BATCH_MAX admissions".into(),
                    }));
                }
                // One state for the whole batch; each admission judged alone.
                let state = call.read(pb::ReadConsistency::Serializable as i32).await?;
                let items = admit_many(&call, &limits, &state, &body.requests)
                    .await
                    .into_iter()
                    .map(|answer| match answer {
                        Ok(response) => pb::AdmitBatchItem { response: Some(response), ..Default::default() },
                        Err(error) => {
                            let status = error.into_status();
                            let reason = tonic_types::StatusExt::get_details_error_info(&status)
                                .map(|info| info.reason)
                                .unwrap_or_default();
                            pb::AdmitBatchItem {
                                response: None,
                                error_code: status.code() as i32,
                                error_reason: reason,
                                error_message: status.message().to_owned(),
                            }
                        }
                    })
                    .collect();
                Ok(pb::AdmitBatchResponse { items })
            })
            .await
    }
}
