//! `keel.v1.PolicyService`: put, read, list, evaluate and test policies.
//!
//! ```text
//!  PutPolicy ──propose──► apply: compile + probe (kernel `policy`) ──► version N+1
//!  Evaluate ──read barrier──► under the state lock: latest version + input document
//!           ──► outside it: compiled program (ProgramCache) ──► decision at that revision
//!  Test ──► compile + probe the candidate ──► inputs under the lock ──► cases, on a blocking thread
//! ```
//!
//! Compiling is the slow part, so compiled programs are cached per
//! `(name, version, source digest)`, at most `POLICY_PROGRAMS_CACHED_MAX`.

use super::context::{self, ApiContext, READ_DEADLINE_DEFAULT_MS, WRITE_DEADLINE_DEFAULT_MS};
use super::convert;
use super::error::ApiError;
use keel_kernel::limits::POLICY_PROGRAMS_CACHED_MAX;
use keel_kernel::policy::{self, ACTIVE_POLICY_NAME, PolicyProgram, StoredPolicy};
use keel_kernel::{Command, Name, Outcome};
use keel_proto::v1 as pb;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

/// The service.
pub struct PolicyApi {
    pub(crate) ctx: ApiContext,
    pub(crate) programs: Arc<ProgramCache>,
}

impl PolicyApi {
    /// The service with an empty program cache.
    pub fn new(ctx: ApiContext) -> PolicyApi {
        PolicyApi { ctx, programs: Arc::new(ProgramCache::default()) }
    }
}

/// Compiled programs by `(name, version, source sha256)`, evicting the
/// least recently used beyond `POLICY_PROGRAMS_CACHED_MAX`.
#[derive(Default)]
pub struct ProgramCache {
    entries: Mutex<CacheEntries>,
}

#[derive(Default)]
struct CacheEntries {
    /// Program and the tick of its last use.
    programs: BTreeMap<(Name, u64, String), (PolicyProgram, u64)>,
    tick: u64,
}

impl ProgramCache {
    /// The program of a stored policy, compiled on first use. A stored policy
    /// compiled when it was put, so a failure here is an internal error.
    pub fn program(&self, policy: &StoredPolicy) -> Result<PolicyProgram, ApiError> {
        let key = (policy.name.clone(), policy.version, policy.source_sha256.clone());
        if let Some(program) = self.lookup(&key) {
            return Ok(program);
        }
        let program = PolicyProgram::compile(&policy.source).map_err(|rejection| {
            ApiError::internal(anyhow::anyhow!(
                "stored policy {} does not compile: {rejection}",
                policy.policy_version()
            ))
        })?;
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.tick += 1;
        let tick = entries.tick;
        entries.programs.insert(key, (program.clone(), tick));
        while entries.programs.len() > POLICY_PROGRAMS_CACHED_MAX {
            let oldest = entries.programs.iter().min_by_key(|(_, (_, used))| *used).map(|(key, _)| key.clone());
            match oldest {
                Some(oldest) => entries.programs.remove(&oldest),
                None => break,
            };
        }
        Ok(program)
    }

    fn lookup(&self, key: &(Name, u64, String)) -> Option<PolicyProgram> {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.tick += 1;
        let tick = entries.tick;
        let (program, used) = entries.programs.get_mut(key)?;
        *used = tick;
        Some(program.clone())
    }

    /// Number of cached programs.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).programs.len()
    }

    /// Whether none is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[tonic::async_trait]
impl pb::policy_service_server::PolicyService for PolicyApi {
    async fn put_policy(
        &self,
        request: Request<pb::PutPolicyRequest>,
    ) -> Result<Response<pb::PutPolicyResponse>, Status> {
        let deadline = context::deadline(&request, WRITE_DEADLINE_DEFAULT_MS);
        let result = async {
            let body = request.into_inner();
            let name = convert::policy_name("policy", &body.policy)?;
            policy::check_source(&body.source)?;
            let command = Command::PutPolicy { name, source: body.source, expected_version: body.expected_version };
            let (applied, revision) = self.ctx.propose_idempotent(command, body.idempotency_key, deadline).await?;
            match applied.outcome {
                Outcome::PolicyPut { policy, created } => {
                    Ok((pb::PutPolicyResponse { policy: Some(convert::policy_to_pb(&policy)), created }, revision))
                }
                other => Err(ApiError::internal(anyhow::anyhow!("a policy put answered with {other:?}"))),
            }
        }
        .await;
        self.ctx.answer(result)
    }

    async fn get_policy(&self, request: Request<pb::GetPolicyRequest>) -> Result<Response<pb::Policy>, Status> {
        let deadline = context::deadline(&request, READ_DEADLINE_DEFAULT_MS);
        let body = request.into_inner();
        let result = async {
            let name = convert::policy_name("name", &body.name)?;
            let version = (body.version != 0).then_some(body.version);
            self.ctx
                .read(body.consistency, deadline, |state| {
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
        .await;
        self.ctx.answer(result)
    }

    async fn list_policies(
        &self,
        request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        const QUERY: &str = "policies";
        let deadline = context::deadline(&request, READ_DEADLINE_DEFAULT_MS);
        let body = request.into_inner();
        let result = async {
            let page = context::page(QUERY, body.page_size, &body.page_token)?;
            let after = page
                .after
                .as_deref()
                .map(|after| convert::policy_name("page_token", after))
                .transpose()
                .map_err(|_| ApiError::PageTokenInvalid)?;
            self.ctx
                .read(body.consistency, deadline, |state| {
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
        .await;
        self.ctx.answer(result)
    }

    async fn evaluate(&self, request: Request<pb::EvaluateRequest>) -> Result<Response<pb::PolicyDecision>, Status> {
        let deadline = context::deadline(&request, READ_DEADLINE_DEFAULT_MS);
        let body = request.into_inner();
        let result = async {
            let name = if body.policy.is_empty() {
                convert::policy_name("policy", ACTIVE_POLICY_NAME)?
            } else {
                convert::policy_name("policy", &body.policy)?
            };
            let context = convert::evaluation_context(body.context)?;
            let ((stored, input), revision) = self
                .ctx
                .read(body.consistency, deadline, |state| {
                    let kernel = &state.kernel;
                    let stored = kernel.policies().latest(&name).cloned();
                    Ok((stored, policy::input_document(&context, kernel.tenants(), kernel.registry())))
                })
                .await?;
            // Compiling (on a cache miss) and evaluating are CPU work: off the async workers.
            let programs = Arc::clone(&self.programs);
            let decision = tokio::task::spawn_blocking(move || {
                let program = stored.as_ref().map(|stored| programs.program(stored)).transpose()?;
                let version = stored.as_ref().map(StoredPolicy::policy_version);
                let active = version.as_deref().zip(program.as_ref());
                Ok::<_, ApiError>(policy::decide_input(active, &input, revision))
            })
            .await
            .map_err(|error| ApiError::internal(anyhow::anyhow!("policy evaluation task: {error}")))??;
            Ok((convert::policy_decision_to_pb(&decision), revision))
        }
        .await;
        self.ctx.answer(result)
    }

    async fn test(&self, request: Request<pb::TestPolicyRequest>) -> Result<Response<pb::TestPolicyResponse>, Status> {
        let deadline = context::deadline(&request, READ_DEADLINE_DEFAULT_MS);
        let body = request.into_inner();
        let result = async {
            policy::check_source(&body.source)?;
            let cases = convert::policy_test_cases(body.cases)?;
            let source = body.source;
            let program = tokio::task::spawn_blocking(move || policy::check_program(&source))
                .await
                .map_err(|error| ApiError::internal(anyhow::anyhow!("policy compile task: {error}")))??;
            let (inputs, revision) = self
                .ctx
                .read(body.consistency, deadline, |state| {
                    let kernel = &state.kernel;
                    Ok(cases
                        .iter()
                        .map(|case| policy::input_document(&case.context, kernel.tenants(), kernel.registry()))
                        .collect::<Vec<_>>())
                })
                .await?;
            let results = tokio::task::spawn_blocking(move || {
                cases
                    .iter()
                    .zip(&inputs)
                    .map(|(case, input)| policy::test_case(&program, case, input, revision))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|error| ApiError::internal(anyhow::anyhow!("policy test task: {error}")))?;
            let passed_count = results.iter().filter(|result| result.passed).count();
            let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
            let response = pb::TestPolicyResponse {
                passed_count: count(passed_count),
                failed_count: count(results.len() - passed_count),
                results: results
                    .iter()
                    .map(|result| pb::PolicyTestResult {
                        decision: Some(convert::policy_decision_to_pb(&result.decision)),
                        passed: result.passed,
                    })
                    .collect(),
            };
            Ok((response, revision))
        }
        .await;
        self.ctx.answer(result)
    }
}
