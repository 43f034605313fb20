//! `keel.v1.PolicyService`: put, read, list, evaluate and test policies.
//!
//! ```text
//!  PutPolicy ──prejudge (sandbox, request deadline)──► propose ──► apply: judged again ──► version N+1
//!  Evaluate ──read barrier──► published state: latest version + input document
//!           ──► judge PolicyDecide{source, [input]} ──► decision at that revision
//!  Test ──► inputs from the published state ──► judge PolicyDecide{candidate, inputs, probes} ──► cases
//! ```
//!
//! Every compile and evaluation runs through the node's judge (a child
//! process on keeld, see `judge`): a policy or an input that makes regorus
//! panic or allocate without bound costs one request, never the process.
//! The pool of judges bounds the work (`JUDGES_CONCURRENT_MAX`; beyond it
//! `RESOURCE_EXHAUSTED` with `RetryInfo`).

use super::context::{self, ApiContext};
use super::convert;
use super::error::ApiError;
use crate::limits::{
    DECISION_CACHE_ENTRIES_MAX, DECISION_CACHE_INPUT_BYTES_MAX, READ_DEADLINE_DEFAULT_MS, WRITE_DEADLINE_DEFAULT_MS,
};
use crate::raft::shared_state::AppliedState;
use keel_kernel::Name;
use keel_kernel::judge::Judgement;
use keel_kernel::policy::{self, ACTIVE_POLICY_NAME, EvaluationError};
use keel_kernel::{Command, Outcome, Verdict};
use keel_proto::v1 as pb;
use std::collections::HashMap;
use tonic::{Request, Response, Status};

/// The service.
pub struct PolicyApi {
    pub(crate) ctx: ApiContext,
}

impl PolicyApi {
    /// The service.
    pub fn new(ctx: ApiContext) -> PolicyApi {
        PolicyApi { ctx }
    }
}

/// One evaluation's result from a `PolicyDecide` verdict: a refusal of the
/// stored source or an aborted evaluation is a failed evaluation (the
/// decision fails closed).
fn evaluation_of(verdict: Verdict) -> Result<Option<policy::Decision>, EvaluationError> {
    match verdict {
        Verdict::Decisions(mut results) if results.len() == 1 => results.remove(0),
        Verdict::Rejected(rejection) => Err(EvaluationError::Failed { detail: rejection.to_string() }),
        other => Err(EvaluationError::Failed { detail: format!("unexpected verdict {other:?}") }),
    }
}

/// What one evaluation gave.
type Evaluated = Result<Option<policy::Decision>, EvaluationError>;

/// Evaluations already made, by `name@version` and canonical input
/// document. Evaluation is deterministic (the same program on the same input
/// gives the same result on every member), so a cached result is the result;
/// the decision id is still derived from the revision each time. At most
/// `DECISION_CACHE_ENTRIES_MAX` entries, each at most
/// `DECISION_CACHE_INPUT_BYTES_MAX` of input; when full, entries of older
/// policy versions go first, then everything.
#[derive(Debug, Default)]
pub struct DecisionCache {
    entries: std::sync::Mutex<HashMap<(String, String), Evaluated>>,
    /// Whole decisions by (revision, policy name, request): the same
    /// revision is the same state (and the same latest policy version), so
    /// the same request gets the same decision, id included, without
    /// building, serializing or hashing its input again.
    recent: std::sync::Mutex<HashMap<(u64, Name, policy::EvaluationContext), policy::PolicyDecision>>,
}

impl DecisionCache {
    fn get(&self, key: &(String, String)) -> Option<Evaluated> {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.get(key).cloned()
    }

    fn insert(&self, key: (String, String), evaluated: Evaluated) {
        if key.1.len() > DECISION_CACHE_INPUT_BYTES_MAX {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= DECISION_CACHE_ENTRIES_MAX {
            entries.retain(|(version, _), _| *version == key.0);
            if entries.len() >= DECISION_CACHE_ENTRIES_MAX {
                entries.clear();
            }
        }
        entries.insert(key, evaluated);
    }

    fn recent(&self, key: &(u64, Name, policy::EvaluationContext)) -> Option<policy::PolicyDecision> {
        let recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        recent.get(key).cloned()
    }

    fn remember(&self, key: (u64, Name, policy::EvaluationContext), decision: policy::PolicyDecision) {
        let mut recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() >= DECISION_CACHE_ENTRIES_MAX {
            // Older revisions first: they are asked for only by slow readers.
            recent.retain(|(revision, ..), _| *revision == key.0);
            if recent.len() >= DECISION_CACHE_ENTRIES_MAX {
                recent.clear();
            }
        }
        recent.insert(key, decision);
    }
}

/// The decision of the latest version of the policy `name` on `context`, at
/// `state`'s revision (default deny when there is no such policy); shared by
/// `Evaluate` and admission. Evaluations are cached ([`DecisionCache`]).
pub async fn decide(
    call: &context::Call<'_>,
    state: &AppliedState,
    name: &keel_kernel::Name,
    context: &policy::EvaluationContext,
) -> Result<policy::PolicyDecision, ApiError> {
    let kernel = &state.kernel;
    let revision = state.revision();
    let cache = &call.ctx().decisions;
    let recent_key = (revision, name.clone(), context.clone());
    if let Some(decision) = cache.recent(&recent_key) {
        return Ok(decision);
    }
    let stored = kernel.policies().latest(name);
    let input = policy::input_document(context, kernel.tenants(), kernel.registry());
    let Some(stored) = stored else {
        return Ok(policy::decision_of(None, &input, revision));
    };
    let policy_version = stored.policy_version();
    let key = (policy_version.clone(), input.to_string());
    let evaluated = match cache.get(&key) {
        Some(evaluated) => evaluated,
        None => {
            let judgement = Judgement::PolicyDecide {
                source: stored.source.clone(),
                inputs: vec![input.clone()],
                with_probes: false,
            };
            let evaluated = evaluation_of(call.judge(judgement).await?);
            cache.insert(key, evaluated.clone());
            evaluated
        }
    };
    let decision = policy::decision_of(Some((&policy_version, evaluated)), &input, revision);
    cache.remember(recent_key, decision.clone());
    Ok(decision)
}

#[tonic::async_trait]
impl pb::policy_service_server::PolicyService for PolicyApi {
    async fn put_policy(
        &self,
        request: Request<pb::PutPolicyRequest>,
    ) -> Result<Response<pb::PutPolicyResponse>, Status> {
        self.ctx
            .serve(request, WRITE_DEADLINE_DEFAULT_MS, |body, call| async move {
                let name = convert::policy_name("policy", &body.policy)?;
                policy::check_source(&body.source)?;
                call.prejudge(Some(Judgement::PolicyPut { source: body.source.clone() })).await?;
                let command = Command::PutPolicy { name, source: body.source, expected_version: body.expected_version };
                call.write(command, body.idempotency_key, |outcome| match outcome {
                    Outcome::PolicyPut { policy, created } => {
                        Some(pb::PutPolicyResponse { policy: Some(convert::policy_to_pb(policy)), created: *created })
                    }
                    _ => None,
                })
                .await
            })
            .await
    }

    async fn get_policy(&self, request: Request<pb::GetPolicyRequest>) -> Result<Response<pb::Policy>, Status> {
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let name = convert::policy_name("name", &body.name)?;
                let version = (body.version != 0).then_some(body.version);
                let state = call.read(body.consistency).await?;
                state.kernel.policies().get(&name, version).map(convert::policy_to_pb).ok_or_else(|| {
                    let resource = match version {
                        Some(version) => format!("policies/{name}/versions/{version}"),
                        None => format!("policies/{name}"),
                    };
                    ApiError::NotFound { reason: "POLICY_NOT_FOUND", resource }
                })
            })
            .await
    }

    async fn list_policies(
        &self,
        request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        const QUERY: &str = "policies";
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let page = context::page(QUERY, body.page_size, &body.page_token)?;
                let after = page
                    .after
                    .as_deref()
                    .map(|after| convert::policy_name("page_token", after))
                    .transpose()
                    .map_err(|_| ApiError::PageTokenInvalid)?;
                let state = call.read(body.consistency).await?;
                let policies: Vec<pb::Policy> = state
                    .kernel
                    .policies()
                    .latest_from(after.as_ref())
                    .take(page.size + 1)
                    .map(convert::policy_to_pb)
                    .collect();
                let (policies, next_page_token) = context::paginate(policies, &page, QUERY, |item| &item.policy);
                Ok(pb::ListPoliciesResponse { policies, next_page_token })
            })
            .await
    }

    async fn evaluate(&self, request: Request<pb::EvaluateRequest>) -> Result<Response<pb::PolicyDecision>, Status> {
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let name = if body.policy.is_empty() {
                    convert::policy_name("policy", ACTIVE_POLICY_NAME)?
                } else {
                    convert::policy_name("policy", &body.policy)?
                };
                let context = convert::evaluation_context(body.context)?;
                call.check_tenant(context.tenant.as_str())?;
                let state = call.read(body.consistency).await?;
                let decision = decide(&call, &state, &name, &context).await?;
                Ok(convert::policy_decision_to_pb(&decision))
            })
            .await
    }

    async fn test(&self, request: Request<pb::TestPolicyRequest>) -> Result<Response<pb::TestPolicyResponse>, Status> {
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                policy::check_source(&body.source)?;
                let cases = convert::policy_test_cases(body.cases)?;
                let state = call.read(body.consistency).await?;
                let kernel = &state.kernel;
                let inputs: Vec<_> = cases
                    .iter()
                    .map(|case| policy::input_document(&case.context, kernel.tenants(), kernel.registry()))
                    .collect();
                let revision = state.revision();
                let judgement =
                    Judgement::PolicyDecide { source: body.source, inputs: inputs.clone(), with_probes: true };
                let evaluations = match call.judge(judgement).await? {
                    Verdict::Decisions(evaluations) if evaluations.len() == cases.len() => evaluations,
                    Verdict::Rejected(rejection) => return Err(ApiError::Rejected(rejection)),
                    other => return Err(ApiError::internal(anyhow::anyhow!("a policy test was answered {other:?}"))),
                };
                let results: Vec<_> = cases
                    .iter()
                    .zip(evaluations)
                    .zip(&inputs)
                    .map(|((case, evaluated), input)| policy::test_case_of(case, evaluated, input, revision))
                    .collect();
                let passed_count = results.iter().filter(|result| result.passed).count();
                let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                Ok(pb::TestPolicyResponse {
                    passed_count: count(passed_count),
                    failed_count: count(results.len() - passed_count),
                    results: results
                        .iter()
                        .map(|result| pb::PolicyTestResult {
                            decision: Some(convert::policy_decision_to_pb(&result.decision)),
                            passed: result.passed,
                        })
                        .collect(),
                })
            })
            .await
    }
}
