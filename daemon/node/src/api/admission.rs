//! `keel.v1.AdmissionService`: the admission pipeline on this member's
//! applied state (see `admission`).
//!
//! ```text
//!  Admit ─► validate ─► tenant scope ─► serializable read (no barrier, no Raft write)
//!        ─► admission::resolve (tenant, version, signers, action)
//!        ─► judge ActionInput (when the action has an input schema and input was sent)
//!        ─► api::policy::decide ("main", the call's context)
//!        ─► LocalLimiter over the scopes (this member's share: limit ÷ voters)
//!        ─► AdmitResponse (a denial is an answer with a reason)
//! ```

use super::context::ApiContext;
use super::error::ApiError;
use crate::admission::limiter::{Limited, LocalLimiter};
use crate::admission::{Admission, AdmissionConfig, Denial, resolve};
use crate::limits::{ADMISSION_INPUT_BYTES_MAX, READ_DEADLINE_DEFAULT_MS};
use keel_kernel::judge::Judgement;
use keel_kernel::policy::{ACTIVE_POLICY_NAME, EvaluationContext};
use keel_kernel::{Name, Rejection, Verdict};
use keel_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The service.
pub struct AdmissionApi {
    pub(crate) ctx: ApiContext,
    config: Arc<AdmissionConfig>,
    limiter: Arc<LocalLimiter>,
}

impl AdmissionApi {
    /// The service with `config`'s limits, limiting in this process.
    pub fn new(ctx: ApiContext, config: AdmissionConfig) -> AdmissionApi {
        AdmissionApi { ctx, config: Arc::new(config), limiter: Arc::default() }
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

#[tonic::async_trait]
impl pb::admission_service_server::AdmissionService for AdmissionApi {
    async fn admit(&self, request: Request<pb::AdmitRequest>) -> Result<Response<pb::AdmitResponse>, Status> {
        let config = Arc::clone(&self.config);
        let limiter = Arc::clone(&self.limiter);
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let (admission, mut context) = admission_of(&body)?;
                call.check_tenant(admission.tenant.as_str())?;
                let state = call.read(pb::ReadConsistency::Serializable as i32).await?;
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
                let decision = super::policy::decide(&call, &state, &name, &context).await?;
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
                let scopes = config.scopes(&admission, resolved.tier, decision.limits, voters);
                match limiter.check(&scopes, admission.cost) {
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
                    Err(Limited::Exceeded { scope, retry_after }) => {
                        let retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX).max(1);
                        deny(response, Denial::RateLimited { scope: scope.key, retry_after_ms })
                    }
                    Err(Limited::Full) => deny(
                        response,
                        Denial::RateLimited { scope: "(limiter full)".to_owned(), retry_after_ms: 1_000 },
                    ),
                }
            })
            .await
    }
}
