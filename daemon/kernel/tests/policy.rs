//! Table-driven policy decisions: the example policies in `deploy/policies/`
//! (and a few edge cases) against contexts and replicated facts, all through
//! one [`check`] helper.

mod fixture;

use fixture::*;
use keel_kernel::KernelState;
use keel_kernel::command::{Command, Proposal};
use keel_kernel::manifest::DataClass;
use keel_kernel::policy::{self, EvaluationContext, PolicyTestCase};
use keel_kernel::tenant::{TenantSpec, TenantStatus, TenantTier};
use std::collections::BTreeSet;

const CRITICAL_RISK: &str = include_str!("../../../deploy/policies/critical_risk.rego");
const RESIDENCY: &str = include_str!("../../../deploy/policies/residency.rego");
const TIER_LIMITS: &str = include_str!("../../../deploy/policies/tier_limits.rego");
const MAIN: &str = include_str!("../../../deploy/policies/main.rego");

/// The facts every case sees: tenants `acme` (enterprise, eu-west), `bolt`
/// (basic, us-east), `sleepy` (standard, eu-west, suspended); engines
/// `billing` and `search` published.
fn state() -> KernelState {
    let tenant = |id: &str, tier, region: &str, status| Command::CreateTenant {
        spec: TenantSpec {
            tenant_id: name(id),
            display_name: id.to_owned(),
            tier,
            home_region: name(region),
            status,
            enabled_engines: BTreeSet::new(),
        },
    };
    let setup: Vec<Proposal> = vec![
        now(bootstrap(&[ROOT])),
        now(add_key(publisher_spec(PUBLISHER), &[ROOT])),
        now(publish(manifest("billing", "1.0.0"), PUBLISHER)),
        now(publish(manifest("search", "2.1.0"), PUBLISHER)),
        now(tenant("acme", TenantTier::Enterprise, "eu-west", TenantStatus::Active)),
        now(tenant("bolt", TenantTier::Basic, "us-east", TenantStatus::Active)),
        now(tenant("sleepy", TenantTier::Standard, "eu-west", TenantStatus::Suspended)),
    ];
    let mut state = KernelState::default();
    for (index, proposal) in setup.iter().enumerate() {
        state.apply(index as u64 + 1, proposal).unwrap_or_else(|rejection| panic!("setup {proposal}: {rejection}"));
    }
    state
}

fn context(tenant: &str, engine: &str, risk_band: Option<&str>) -> EvaluationContext {
    EvaluationContext {
        tenant: name(tenant),
        engine: name(engine),
        version: None,
        action: name("echo"),
        role: Some(name("operator")),
        risk_band: risk_band.map(name),
        region: Some(name("eu-west")),
        data_classes: BTreeSet::from([DataClass::Pii]),
    }
}

/// Expected decision: allow, reason, limits as (calls_per_minute, burst, max_duration_ms).
type Expected = (bool, &'static str, Option<(u64, u64, u64)>);

/// Compiles `source` (which must pass the put checks), decides every case
/// against [`state`], and compares.
fn check(source: &str, cases: &[(EvaluationContext, Expected)]) {
    let program = policy::check_program(source).unwrap_or_else(|rejection| panic!("policy refused: {rejection}"));
    let state = state();
    for (context, (allow, reason, limits)) in cases {
        let decision = policy::decide(Some(("p@1", &program)), context, state.tenants(), state.registry(), 9);
        let got_limits = decision.limits.map(|l| (l.calls_per_minute, l.burst, l.max_duration_ms));
        assert_eq!(
            (decision.allow, decision.reason.as_str(), got_limits),
            (*allow, *reason, *limits),
            "context {context:?}"
        );
        assert_eq!(decision.policy_version, "p@1");
        assert_eq!(decision.revision, 9);
        assert_eq!(decision.decision_id.len(), 32, "{}", decision.decision_id);
    }
}

#[test]
fn critical_risk_band_is_denied() {
    check(
        CRITICAL_RISK,
        &[
            (context("acme", "billing", Some("critical")), (false, "critical risk band is denied", None)),
            (context("acme", "billing", Some("high")), (true, "risk band accepted", None)),
            (context("acme", "billing", None), (true, "risk band accepted", None)),
        ],
    );
}

#[test]
fn residency_requires_the_tenant_region_among_the_engine_regions() {
    let outside = "the tenant's home region is not among the engine's allowed regions";
    check(
        RESIDENCY,
        &[
            (context("acme", "billing", None), (true, "data stays in an allowed region", None)),
            (context("bolt", "billing", None), (false, outside, None)),
            (context("bolt", "search", None), (true, "data stays in an allowed region", None)),
            (context("acme", "unlisted", None), (false, outside, None)),
            (context("nobody", "billing", None), (false, "unknown tenant", None)),
        ],
    );
}

#[test]
fn tier_limits_follow_the_tenant_tier() {
    check(
        TIER_LIMITS,
        &[
            (context("acme", "billing", None), (true, "enterprise tier", Some((6000, 1000, 120_000)))),
            (context("bolt", "billing", None), (true, "basic tier", Some((60, 10, 5000)))),
            (context("sleepy", "billing", None), (false, "tenant is suspended", None)),
            (context("nobody", "billing", None), (false, "unknown tenant", None)),
        ],
    );
}

#[test]
fn the_combined_example_applies_its_rules_in_order() {
    let outside = "the tenant's home region is not among the engine's allowed regions";
    check(
        MAIN,
        &[
            (context("acme", "billing", Some("critical")), (false, "critical risk band is denied", None)),
            (context("nobody", "billing", Some("low")), (false, "unknown tenant", None)),
            (context("sleepy", "billing", Some("low")), (false, "tenant is suspended", None)),
            (context("bolt", "billing", Some("low")), (false, outside, None)),
            (context("bolt", "search", Some("low")), (true, "basic tier", Some((60, 10, 5000)))),
            (context("acme", "billing", None), (true, "enterprise tier", Some((6000, 1000, 120_000)))),
        ],
    );
}

#[test]
fn policies_see_the_request_and_the_engine_facts() {
    let source = r#"package keel.policy

decision := {"allow": true, "reason": concat(",", [input.action, input.region, input.facts.engine.version, input.facts.engine.tier, input.data_classes[0]])}
"#;
    check(source, &[(context("acme", "search", None), (true, "echo,eu-west,2.1.0,standard,pii", None))]);
}

#[test]
fn an_undefined_decision_denies() {
    let source =
        "package keel.policy\n\ndecision := {\"allow\": true, \"reason\": \"low\"} if input.risk_band == \"low\"\n";
    check(
        source,
        &[
            (context("acme", "billing", Some("low")), (true, "low", None)),
            (context("acme", "billing", Some("high")), (false, "the policy made no decision (default deny)", None)),
        ],
    );
}

#[test]
fn no_policy_denies() {
    let state = state();
    let decision = policy::decide(None, &context("acme", "billing", None), state.tenants(), state.registry(), 3);
    assert!(!decision.allow);
    assert_eq!(decision.reason, "no policy is active (default deny)");
    assert_eq!(decision.policy_version, "");
}

#[test]
fn an_evaluation_over_the_instruction_budget_denies() {
    // The probes never name tenant `acme`, so the put checks pass; a real
    // request for `acme` runs past POLICY_EVAL_INSTRUCTIONS_MAX.
    let source = r#"package keel.policy

xs := [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49]

decision := {"allow": true, "reason": "counted"} if {
	input.tenant == "acme"
	count([1 | some a in xs; some b in xs; some c in xs]) > 0
}

decision := {"allow": true, "reason": "other"} if input.tenant != "acme"
"#;
    let program = policy::check_program(source).expect("the probes pass");
    let state = state();
    let decide = |tenant| {
        policy::decide(Some(("p@1", &program)), &context(tenant, "billing", None), state.tenants(), state.registry(), 1)
    };
    let decision = decide("acme");
    assert!(!decision.allow, "{decision:?}");
    assert!(decision.reason.starts_with("policy evaluation failed (default deny)"), "{}", decision.reason);
    assert!(decision.reason.contains("instruction"), "{}", decision.reason);
    assert!(decide("bolt").allow);
}

#[test]
fn decision_ids_depend_on_revision_version_and_request_only() {
    let program = policy::check_program(CRITICAL_RISK).expect("compiles");
    let state = state();
    let decide = |revision, version: &str, tenant: &str| {
        policy::decide(
            Some((version, &program)),
            &context(tenant, "billing", None),
            state.tenants(),
            state.registry(),
            revision,
        )
        .decision_id
    };
    assert_eq!(decide(5, "p@1", "acme"), decide(5, "p@1", "acme"));
    assert_ne!(decide(5, "p@1", "acme"), decide(6, "p@1", "acme"));
    assert_ne!(decide(5, "p@1", "acme"), decide(5, "p@2", "acme"));
    assert_ne!(decide(5, "p@1", "acme"), decide(5, "p@1", "bolt"));
}

#[test]
fn test_runs_a_candidate_against_cases_without_storing_it() {
    let state = state();
    let before = state.digest();
    let cases = vec![
        PolicyTestCase {
            context: context("acme", "billing", Some("critical")),
            expect_allow: false,
            expect_reason: None,
        },
        PolicyTestCase {
            context: context("acme", "billing", Some("low")),
            expect_allow: true,
            expect_reason: Some("risk band accepted".to_owned()),
        },
        PolicyTestCase { context: context("acme", "billing", Some("low")), expect_allow: false, expect_reason: None },
    ];
    let results =
        policy::test(CRITICAL_RISK, &cases, state.tenants(), state.registry(), 7).expect("candidate compiles");
    assert_eq!(results.iter().map(|r| r.passed).collect::<Vec<_>>(), vec![true, true, false]);
    assert_eq!(results[0].decision.policy_version, policy::CANDIDATE_POLICY_VERSION);
    assert_eq!(state.digest(), before);
    let refused = policy::test("package keel.policy\ndecision := 1", &cases, state.tenants(), state.registry(), 7);
    assert_eq!(refused.map(|_| ()).map_err(|r| r.reason()), Err("POLICY_DECISION_MALFORMED"));
}

/// Sources a generated log puts: three good ones, then a malformed decision,
/// one that does not compile and one with a forbidden builtin.
const VOCABULARY: &[&str] = &[
    "package keel.policy\ndecision := {\"allow\": true, \"reason\": \"a\"}\n",
    "package keel.policy\ndecision := {\"allow\": false, \"reason\": \"b\"}\n",
    "package keel.policy\ndefault decision := {\"allow\": false, \"reason\": \"c\"}\n",
    "package keel.policy\ndecision := [1]\n",
    "package keel.policy\ndecision := {\n",
    "package keel.policy\ndecision := {\"allow\": true, \"reason\": uuid.rfc4122(\"x\")}\n",
];
const GOOD_SOURCES: usize = 3;
const NAMES: &[&str] = &["main", "staging"];

/// What a naive model predicts per name: (latest version, index of its source).
type PolicyModel = std::collections::BTreeMap<usize, (u64, usize)>;

/// Applies one put to the model; `None` when the kernel must refuse it.
fn model_put(model: &mut PolicyModel, name: usize, source: usize, expected: Option<u64>) -> Option<bool> {
    let (current, latest) = model.get(&name).copied().map_or((0, None), |(version, source)| (version, Some(source)));
    if latest == Some(source) {
        return Some(false);
    }
    if expected.is_some_and(|expected| expected != current) || source >= GOOD_SOURCES {
        return None;
    }
    model.insert(name, (current + 1, source));
    Some(true)
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 24, ..proptest::test_runner::Config::default() })]

    /// Random puts (good and bad sources, with and without compare-and-set):
    /// the kernel agrees with the model, a refused or repeated put leaves the
    /// digest as it was, and replaying the log gives the same digest.
    #[test]
    fn policy_puts_agree_with_a_model_and_replay_to_the_same_digest(
        ops in proptest::collection::vec(
            (0..NAMES.len(), 0..VOCABULARY.len(), proptest::option::of(0u64..4)),
            1..24,
        )
    ) {
        let log: Vec<Proposal> = ops
            .iter()
            .map(|(name_index, source, expected)| now(Command::PutPolicy {
                name: name(NAMES[*name_index]),
                source: VOCABULARY[*source].to_owned(),
                expected_version: *expected,
            }))
            .collect();
        let mut state = KernelState::default();
        let mut model = PolicyModel::new();
        for (index, (proposal, (name_index, source, expected))) in log.iter().zip(&ops).enumerate() {
            let before = state.digest();
            let result = state.apply(index as u64 + 1, proposal);
            let predicted = model_put(&mut model, *name_index, *source, *expected);
            match (&result, predicted) {
                (Ok(applied), Some(true)) => proptest::prop_assert_eq!(applied.events.len(), 1),
                (Ok(applied), Some(false)) => {
                    proptest::prop_assert!(applied.events.is_empty());
                    proptest::prop_assert_eq!(state.digest(), before);
                }
                (Err(_), None) => proptest::prop_assert_eq!(state.digest(), before),
                _ => proptest::prop_assert!(false, "entry {}: kernel {:?}, model {:?}", index, result, predicted),
            }
            for (name_index, policy_name) in NAMES.iter().enumerate() {
                let stored = state.policies().latest(&name(policy_name)).map(|p| (p.version, p.source.clone()));
                let expected = model.get(&name_index).map(|(version, source)| (*version, VOCABULARY[*source].to_owned()));
                proptest::prop_assert_eq!(stored, expected);
            }
        }
        let mut replayed = KernelState::default();
        for (index, proposal) in log.iter().enumerate() {
            let _ = replayed.apply(index as u64 + 1, proposal);
        }
        proptest::prop_assert_eq!(replayed.digest(), state.digest());
    }
}
