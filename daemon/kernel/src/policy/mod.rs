//! Policies: Rego sources in replicated state, versioned per name, and the
//! decisions they make.
//!
//! ```text
//!  PutPolicy{name, source, expected_version?} ──apply──► compile (program.rs)
//!        ──► probe inputs (context.rs), each result undefined or a decision
//!        ──► version N+1 of `name` stored (last POLICY_VERSIONS_KEPT kept)
//!  Evaluate(context) on a node ──► latest version of the name (default `main`)
//!        ──► input document at the node's applied revision ──► PolicyDecision
//! ```
//!
//! Activation is by name: the latest version of a name is its active
//! version, and admission asks the policy named [`ACTIVE_POLICY_NAME`]. A put
//! is all-or-nothing: a source that does not compile, calls a forbidden
//! builtin, or yields a malformed decision for any probe is a rejection that
//! changes nothing. A put of the latest version's exact source is an
//! idempotent success (no new version).
//!
//! Decisions fail closed: no policy, an undefined result or a failed
//! evaluation is a deny with a reason saying which.

pub mod context;
pub mod program;

use crate::ids::Name;
use crate::judge::{self, Applying, Judgement};
use crate::limits::{Limit, POLICY_VERSIONS_KEPT};
use crate::persistent::Map;
use crate::registry::Registry;
use crate::rejection::Rejection;
use crate::state_budget::{Charged, ITEM_OVERHEAD_BYTES, StateBudget};
use crate::tenant::Tenants;
pub use context::{
    EvaluationContext, data_class_from_name, data_class_name, decision_id, input_document, probe_inputs,
};
pub use program::{Decision, DecisionLimits, EvaluationError, PolicyProgram};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The policy admission (and `Evaluate` without a name) asks.
pub const ACTIVE_POLICY_NAME: &str = "main";
/// The policy version reported for a `Test` candidate.
pub const CANDIDATE_POLICY_VERSION: &str = "candidate";

/// One stored version of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPolicy {
    /// The policy's name.
    pub name: Name,
    /// 1 for the first put of the name, then +1 per change.
    pub version: u64,
    /// Rego source as sent.
    pub source: String,
    /// Lowercase hex SHA-256 of `source`.
    pub source_sha256: String,
    /// Revision of the put.
    pub put_revision: u64,
    /// Leader-stamped time of the put, Unix ms.
    pub put_time_ms: u64,
}

impl StoredPolicy {
    /// `name@version`, as decisions report it.
    pub fn policy_version(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// The policies' replicated state: per name, the last [`POLICY_VERSIONS_KEPT`] versions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policies {
    /// Persistent, like every large part of `KernelState`.
    policies: Map<Name, Map<u64, Arc<StoredPolicy>>>,
}

/// A decision with its provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDecision {
    /// Whether the call may run.
    pub allow: bool,
    /// Why.
    pub reason: String,
    /// Limits on an allowed call, when the policy sets them.
    pub limits: Option<DecisionLimits>,
    /// Whether the call may run while a dependency's breaker is open.
    pub allow_degraded: bool,
    /// `name@version` of the policy that decided; empty when none exists.
    pub policy_version: String,
    /// See [`decision_id`].
    pub decision_id: String,
    /// The revision whose state the decision saw.
    pub revision: u64,
}

/// One case of a `Test` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTestCase {
    /// The request.
    pub context: EvaluationContext,
    /// The expected `allow`.
    pub expect_allow: bool,
    /// The expected reason, when the case checks it.
    pub expect_reason: Option<String>,
}

/// The result of one `Test` case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTestResult {
    /// What the candidate decided.
    pub decision: PolicyDecision,
    /// Whether it matched the expectation.
    pub passed: bool,
}

impl Charged for StoredPolicy {
    fn charged_bytes(&self) -> usize {
        ITEM_OVERHEAD_BYTES + self.name.as_str().len() + self.source.len() + self.source_sha256.len()
    }
}

impl Policies {
    /// Every kept policy version, for a recount of the state budget.
    pub(crate) fn charged(&self) -> impl Iterator<Item = &dyn Charged> {
        self.policies.values().flat_map(|versions| versions.values().map(|policy| policy.as_ref() as &dyn Charged))
    }

    /// Stores `source` as the next version of `name`; returns it and whether it is new.
    pub(crate) fn put(
        &mut self,
        name: &Name,
        source: &str,
        expected_version: Option<u64>,
        applying: Applying<'_>,
        budget: &mut StateBudget,
    ) -> Result<(StoredPolicy, bool), Rejection> {
        let Applying { revision, at_ms, judge } = applying;
        check_source(source)?;
        let latest = self.latest(name);
        // The latest source again is a success that changes nothing, even with
        // a stale expected version: that is what a retried put looks like.
        if let Some(latest) = latest
            && latest.source == source
        {
            return Ok((StoredPolicy::clone(latest), false));
        }
        let current = latest.map_or(0, |policy| policy.version);
        if let Some(expected) = expected_version
            && expected != current
        {
            return Err(Rejection::PolicyVersionMismatch { name: name.to_string(), expected, current });
        }
        if latest.is_none() {
            Limit::Policies.check(self.policies.len() + 1)?;
        }
        judge::accepted(judge, &Judgement::PolicyPut { source: source.to_owned() })?;
        let policy = StoredPolicy {
            name: name.clone(),
            version: current + 1,
            source: source.to_owned(),
            source_sha256: hex::encode(Sha256::digest(source.as_bytes())),
            put_revision: revision,
            put_time_ms: at_ms,
        };
        // The oldest version goes when the kept versions are full.
        let evicted_bytes = self
            .policies
            .get(name)
            .filter(|versions| versions.len() >= POLICY_VERSIONS_KEPT)
            .and_then(|versions| versions.values().next())
            .map_or(0, |oldest| oldest.charged_bytes());
        budget.charge(evicted_bytes, policy.charged_bytes())?;
        let versions = self.policies.entry(name.clone()).or_default();
        versions.insert(policy.version, Arc::new(policy.clone()));
        while versions.len() > POLICY_VERSIONS_KEPT {
            let Some(&oldest) = versions.keys().next() else { break };
            versions.remove(&oldest);
        }
        Ok((policy, true))
    }

    /// The latest (active) version of `name`.
    pub fn latest(&self, name: &Name) -> Option<&StoredPolicy> {
        self.policies.get(name)?.values().next_back().map(Arc::as_ref)
    }

    /// One version, or the latest when `version` is `None`.
    pub fn get(&self, name: &Name, version: Option<u64>) -> Option<&StoredPolicy> {
        match version {
            Some(version) => self.policies.get(name)?.get(&version).map(Arc::as_ref),
            None => self.latest(name),
        }
    }

    /// The latest version of each policy, in name order strictly after `after`.
    pub fn latest_from<'a>(&'a self, after: Option<&Name>) -> impl Iterator<Item = &'a StoredPolicy> + 'a {
        let start = match after {
            Some(after) => std::ops::Bound::Excluded(after.clone()),
            None => std::ops::Bound::Unbounded,
        };
        self.policies
            .range((start, std::ops::Bound::Unbounded))
            .filter_map(|(_, versions)| versions.values().next_back().map(Arc::as_ref))
    }

    /// Number of policy names.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

/// The checks on a source that need no state: present and within
/// `POLICY_SOURCE_BYTES_MAX`. The node runs them at the edge too.
pub fn check_source(source: &str) -> Result<(), Rejection> {
    if source.trim().is_empty() {
        return Err(Rejection::FieldRequired { field: "policy.source".into() });
    }
    Limit::PolicySourceBytes.check(source.len())
}

/// Compiles `source` and evaluates it on every probe input: each result must
/// be undefined or a well-formed decision. Returns the program.
pub fn check_program(source: &str) -> Result<PolicyProgram, Rejection> {
    check_source(source)?;
    let program = PolicyProgram::compile(source)?;
    for (probe, input) in probe_inputs() {
        match program.evaluate(&input) {
            Ok(_) => {}
            Err(EvaluationError::Failed { detail }) => {
                return Err(Rejection::PolicyEvaluationFailed { probe: probe.to_owned(), detail });
            }
            Err(EvaluationError::Malformed { detail }) => {
                return Err(Rejection::PolicyDecisionMalformed { probe: probe.to_owned(), detail });
            }
        }
    }
    Ok(program)
}

/// Decides `context` with `policy` (its version and compiled program)
/// against the given state at `revision`. Fails closed: without a policy, on
/// an undefined result or on a failed evaluation the decision is a deny.
pub fn decide(
    policy: Option<(&str, &PolicyProgram)>,
    context: &EvaluationContext,
    tenants: &Tenants,
    registry: &Registry,
    revision: u64,
) -> PolicyDecision {
    decide_input(policy, &input_document(context, tenants, registry), revision)
}

/// [`decide`] on an input document already built by [`input_document`],
/// evaluating in this thread.
pub fn decide_input(
    policy: Option<(&str, &PolicyProgram)>,
    input: &serde_json::Value,
    revision: u64,
) -> PolicyDecision {
    decision_of(policy.map(|(version, program)| (version, program.evaluate(input))), input, revision)
}

/// The decision for `input` from what evaluating it gave (`None`: no
/// policy). Fails closed: without a policy, on an undefined result or on a
/// failed evaluation the decision is a deny.
pub fn decision_of(
    evaluated: Option<(&str, Result<Option<Decision>, EvaluationError>)>,
    input: &serde_json::Value,
    revision: u64,
) -> PolicyDecision {
    let policy_version = evaluated.as_ref().map(|(version, _)| (*version).to_owned()).unwrap_or_default();
    let decision_id = decision_id(revision, &policy_version, input);
    let deny = |reason: String| (false, reason, None, false);
    let (allow, reason, limits, allow_degraded) = match evaluated {
        None => deny("no policy is active (default deny)".to_owned()),
        Some((_, Ok(Some(decision)))) => (decision.allow, decision.reason, decision.limits, decision.allow_degraded),
        Some((_, Ok(None))) => deny("the policy made no decision (default deny)".to_owned()),
        Some((_, Err(error))) => deny(program::truncate(format!("policy evaluation failed (default deny): {error}"))),
    };
    PolicyDecision { allow, reason, limits, allow_degraded, policy_version, decision_id, revision }
}

/// Runs one `Test` case with a candidate program on its input document.
pub fn test_case(
    program: &PolicyProgram,
    case: &PolicyTestCase,
    input: &serde_json::Value,
    revision: u64,
) -> PolicyTestResult {
    test_case_of(case, program.evaluate(input), input, revision)
}

/// One `Test` case's result from what evaluating the candidate gave.
pub fn test_case_of(
    case: &PolicyTestCase,
    evaluated: Result<Option<Decision>, EvaluationError>,
    input: &serde_json::Value,
    revision: u64,
) -> PolicyTestResult {
    let decision = decision_of(Some((CANDIDATE_POLICY_VERSION, evaluated)), input, revision);
    let passed = decision.allow == case.expect_allow
        && case.expect_reason.as_ref().is_none_or(|reason| *reason == decision.reason);
    PolicyTestResult { decision, passed }
}

/// Runs a candidate policy against `cases` without storing it: the source
/// must pass the same checks as a put.
pub fn test(
    source: &str,
    cases: &[PolicyTestCase],
    tenants: &Tenants,
    registry: &Registry,
    revision: u64,
) -> Result<Vec<PolicyTestResult>, Rejection> {
    Limit::PolicyTestCases.check(cases.len())?;
    let program = check_program(source)?;
    Ok(cases
        .iter()
        .map(|case| test_case(&program, case, &input_document(&case.context, tenants, registry), revision))
        .collect())
}
