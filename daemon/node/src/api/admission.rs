//! `keel.v1.AdmissionService`: the admission pipeline on this member's
//! applied state (see `admission`).
//!
//! ```text
//!  Admit ─► validate ─► tenant scope ─► serializable read (no barrier, no Raft write)
//!        ─► admission::resolve (tenant, version, signers, action)
//!        ─► judge ActionInput (when the action has an input schema and input was sent)
//!        ─► api::policy::decide ("main", the call's context)
//!        ─► RedisLimiter (the cluster's limit, one script) when [redis] url is set, else or in
//!           its outage (mode local) LocalLimiter at this member's share (limit ÷ voters)
//!        ─► AdmitResponse (a denial is an answer with a reason)
//! ```

use super::context::{ApiContext, Call};
use super::error::ApiError;
use crate::admission::limiter::{Limited, LocalLimiter, Remaining};
use crate::admission::redis_limiter::{RedisAnswer, RedisLimiter};
use crate::admission::{Admission, AdmissionConfig, Denial, LimiterHealth, OnUnavailable, RedisConfig, resolve};
use crate::limits::{ADMISSION_BATCH_MAX, ADMISSION_INPUT_BYTES_MAX, READ_DEADLINE_DEFAULT_MS};
use crate::raft::shared_state::AppliedState;
use keel_kernel::judge::Judgement;
use keel_kernel::policy::{ACTIVE_POLICY_NAME, EvaluationContext};
use keel_kernel::{Name, Rejection, Verdict};
use keel_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The service.
pub struct AdmissionApi {
    pub(crate) ctx: ApiContext,
    limits: Arc<Limits>,
}

/// How admissions are limited.
struct Limits {
    config: AdmissionConfig,
    local: LocalLimiter,
    /// The shared limiter, when `[redis] url` is set.
    redis: Option<RedisLimiter>,
    /// Whether Redis answers (transitions are logged once).
    health: Arc<LimiterHealth>,
}

/// A limit check's outcome.
struct Checked {
    answer: Result<Vec<Remaining>, Denial>,
    /// Why the decision used a fallback, if it did.
    degraded: Option<String>,
}

impl AdmissionApi {
    /// The service with `config`'s limits: shared through Redis when
    /// `redis.url` is set, else in this process.
    pub fn new(
        ctx: ApiContext,
        config: AdmissionConfig,
        redis: &RedisConfig,
        health: Arc<LimiterHealth>,
    ) -> anyhow::Result<AdmissionApi> {
        let timeout = std::time::Duration::from_millis(redis.timeout_ms);
        let shared = redis.url.as_deref().map(|url| RedisLimiter::new(url, timeout)).transpose();
        // The URL may hold a password: the error says what, never the URL.
        let shared =
            shared.map_err(|error| anyhow::anyhow!("redis.url is not a usable Redis URL ({:?})", error.kind()))?;
        let limits = Limits { config, local: LocalLimiter::default(), redis: shared, health };
        Ok(AdmissionApi { ctx, limits: Arc::new(limits) })
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
    /// Charges `cost` to the admission's scopes: in Redis (the whole
    /// cluster's limit) or, without Redis, here at this member's share.
    async fn check(
        &self,
        admission: &Admission,
        tier: keel_kernel::tenant::TenantTier,
        policy: Option<keel_kernel::policy::DecisionLimits>,
        voters: u64,
    ) -> Checked {
        let local = |degraded: Option<String>| Checked {
            answer: self
                .local
                .check(&self.config.scopes(admission, tier, policy, voters), admission.cost)
                .map_err(limited),
            degraded,
        };
        let Some(redis) = &self.redis else {
            return local(None);
        };
        let scopes = self.config.scopes(admission, tier, policy, 1);
        match redis.check(admission.tenant.as_str(), &scopes, admission.cost).await {
            Ok(answer) => {
                if self.health.record(true) {
                    tracing::info!("the shared rate limiter (redis) answers again");
                }
                let answer = match answer {
                    RedisAnswer::Admitted(remaining) => Ok(remaining),
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
                    OnUnavailable::FailOpen => Checked { answer: Ok(Vec::new()), degraded: Some(why) },
                    OnUnavailable::Local => local(Some(why)),
                }
            }
        }
    }
}

fn invalid(field: &'static str, problem: &'static str) -> Rejection {
    Rejection::FieldInvalid { field: field.into(), problem: problem.into() }
}

/// The request, validated (a request that cannot be judged is an error).
fn admission_of(request: &pb::AdmitRequest) -> Result<(Admission, EvaluationContext), Rejection> {
    let optional =
        |field: &'static str, value: &str| (!value.is_empty()).then(|| Name::parse(field, value)).transpose();
    keel_kernel::limits::Limit::NameBytes.check(request.version.len())?;
    let version = (!request.version.is_empty())
        .then(|| keel_kernel::manifest::parse_version("version", &request.version))
        .transpose()?;
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

/// One admission, judged on one published state (`state`).
async fn admit_one(
    call: &Call<'_>,
    limits: &Limits,
    state: &AppliedState,
    body: &pb::AdmitRequest,
) -> Result<pb::AdmitResponse, ApiError> {
    let (admission, mut context) = admission_of(body)?;
    call.check_tenant(admission.tenant.as_str())?;
    let mut response = pb::AdmitResponse {
        trust_root_version: state.kernel.trust().root().version,
        revision: state.revision(),
        ..pb::AdmitResponse::default()
    };
    let deny = |mut response: pb::AdmitResponse, denial: Denial| {
        response.allowed = false;
        response.reason = denial.reason().to_owned();
        response.detail = denial.detail();
        if let Denial::RateLimited { retry_after_ms, .. } = denial {
            response.retry_after_ms = retry_after_ms;
        }
        Ok(response)
    };
    let resolved = match resolve(&state.kernel, &admission) {
        Ok(resolved) => resolved,
        Err(denial) => return deny(response, denial),
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
                return deny(response, Denial::InputInvalid { problem });
            }
            Verdict::Rejected(rejection) => {
                return deny(response, Denial::InputInvalid { problem: rejection.to_string() });
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
        return deny(response, Denial::PolicyDenied { reason: decision.reason });
    }
    // Without a shared limiter each member limits at its share, so
    // the cluster's total stays within the limit.
    let voters = u64::try_from(call.ctx().replica.voter_count()).unwrap_or(1).max(1);
    let checked = limits.check(&admission, resolved.tier, decision.limits, voters).await;
    if let Some(why) = checked.degraded {
        response.degraded = true;
        response.degraded_reason = why;
    }
    match checked.answer {
        Ok(remaining) => {
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
        Err(denial) => deny(response, denial),
    }
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
                let mut items = Vec::with_capacity(body.requests.len());
                for request in &body.requests {
                    let item = match admit_one(&call, &limits, &state, request).await {
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
                    };
                    items.push(item);
                }
                Ok(pb::AdmitBatchResponse { items })
            })
            .await
    }
}
