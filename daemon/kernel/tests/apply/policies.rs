//! Policies.

use super::*;

// ---------------------------------------------------------------- policies

const ALLOW_ALL: &str = "package keel.policy\n\ndecision := {\"allow\": true, \"reason\": \"ok\"}\n";
const DENY_ALL: &str = "package keel.policy\n\ndecision := {\"allow\": false, \"reason\": \"no\"}\n";

fn put_policy(name_text: &str, source: &str, expected_version: Option<u64>) -> Command {
    Command::PutPolicy { name: name(name_text), source: source.to_owned(), expected_version }
}

fn policy_put(name_text: &str, version: u64) -> EventKind {
    EventKind::PolicyPut { name: name(name_text), version }
}

#[test]
fn policy_put_stores_version_one() {
    let checked = check(&[], now(put_policy("main", ALLOW_ALL, None)), Expect::Events(vec![policy_put("main", 1)]));
    let policy = checked.state.policies().latest(&name("main")).expect("stored");
    assert_eq!((policy.version, policy.source.as_str(), policy.put_revision), (1, ALLOW_ALL, 1));
    assert_eq!(policy.policy_version(), "main@1");
}

#[test]
fn policy_put_of_other_source_makes_the_next_version() {
    let setup = vec![now(put_policy("main", ALLOW_ALL, None))];
    check(&setup, now(put_policy("main", DENY_ALL, Some(1))), Expect::Events(vec![policy_put("main", 2)]));
}

#[test]
fn policy_put_of_the_latest_source_changes_nothing() {
    let setup = vec![now(put_policy("main", ALLOW_ALL, None))];
    check(&setup, now(put_policy("main", ALLOW_ALL, None)), Expect::NoChange);
}

#[test]
fn policy_put_keeps_the_last_versions_only() {
    let sources: Vec<String> = (0..=POLICY_VERSIONS_KEPT).map(|i| format!("{ALLOW_ALL}# revision {i}\n")).collect();
    let setup: Vec<Proposal> =
        sources[..POLICY_VERSIONS_KEPT].iter().map(|s| now(put_policy("main", s, None))).collect();
    let last = POLICY_VERSIONS_KEPT as u64 + 1;
    let checked = check(
        &setup,
        now(put_policy("main", &sources[POLICY_VERSIONS_KEPT], None)),
        Expect::Events(vec![policy_put("main", last)]),
    );
    let policies = checked.state.policies();
    assert!(policies.get(&name("main"), Some(1)).is_none(), "the oldest version is dropped");
    assert!(policies.get(&name("main"), Some(2)).is_some());
    assert_eq!(policies.latest(&name("main")).map(|p| p.version), Some(last));
}

#[test]
fn policy_put_rejections_change_nothing() {
    let one = vec![now(put_policy("main", ALLOW_ALL, None))];
    let cases: &[(&[Proposal], &str, Option<u64>, &str)] = &[
        (&[], "", None, "FIELD_REQUIRED policy.source"),
        (&[], "package keel.policy\ndecision := {", None, "POLICY_COMPILE_FAILED"),
        (&[], "package other\ndecision := {\"allow\": true, \"reason\": \"x\"}", None, "POLICY_COMPILE_FAILED"),
        (&[], "package keel.policy\nallow := true", None, "POLICY_COMPILE_FAILED"),
        (&[], "package keel.policy\ndecision := f(1)", None, "POLICY_COMPILE_FAILED"),
        (
            &[],
            "package keel.policy\ndecision := {\"allow\": true, \"reason\": \"x\", \"t\": time.now_ns()}",
            None,
            "POLICY_BUILTIN_FORBIDDEN",
        ),
        (
            &[],
            "package keel.policy\ndecision := {\"allow\": rand.intn(\"k\", 2) == 1, \"reason\": \"x\"}",
            None,
            "POLICY_BUILTIN_FORBIDDEN",
        ),
        (
            &[],
            "package keel.policy\ndecision := {\"allow\": true, \"reason\": uuid.rfc4122(\"k\")}",
            None,
            "POLICY_BUILTIN_FORBIDDEN",
        ),
        (
            &[],
            "package keel.policy\ndecision := http.send({\"method\": \"get\", \"url\": \"http://x\"})",
            None,
            "POLICY_BUILTIN_FORBIDDEN",
        ),
        (&[], "package keel.policy\ndecision := true", None, "POLICY_DECISION_MALFORMED"),
        (
            &[],
            "package keel.policy\ndecision := {\"allow\": \"yes\", \"reason\": \"x\"}",
            None,
            "POLICY_DECISION_MALFORMED",
        ),
        (&[], "package keel.policy\ndecision := {\"allow\": true}", None, "POLICY_DECISION_MALFORMED"),
        (
            &[],
            "package keel.policy\ndecision := {\"allow\": true, \"reason\": \"x\", \"extra\": 1}",
            None,
            "POLICY_DECISION_MALFORMED",
        ),
        (
            &[],
            "package keel.policy\ndecision := {\"allow\": true, \"reason\": \"x\", \"limits\": {\"burst\": 1}}",
            None,
            "POLICY_DECISION_MALFORMED",
        ),
        (
            &[],
            "package keel.policy\ndecision := {\"allow\": true, \"reason\": \"x\", \"limits\": {\"calls_per_minute\": -1, \"burst\": 1, \"max_duration_ms\": 1}}",
            None,
            "POLICY_DECISION_MALFORMED",
        ),
        (
            &[],
            "package keel.policy\ndecision := {\"allow\": true, \"reason\": \"x\"} if input.risk_band == \"low\"\ndecision := {\"allow\": true, \"reason\": 7} if input.risk_band == \"high\"",
            None,
            "POLICY_DECISION_MALFORMED",
        ),
        (
            &[],
            "package keel.policy\nxs := [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49]\nn := count([1 | some a in xs; some b in xs; some c in xs])\ndecision := {\"allow\": n > 0, \"reason\": \"big\"}",
            None,
            "POLICY_EVALUATION_FAILED",
        ),
        (&one, DENY_ALL, Some(0), "POLICY_VERSION_MISMATCH"),
        (&one, DENY_ALL, Some(2), "POLICY_VERSION_MISMATCH"),
        (&[], DENY_ALL, Some(1), "POLICY_VERSION_MISMATCH"),
    ];
    for (setup, source, expected_version, label) in cases {
        check(setup, now(put_policy("main", source, *expected_version)), Expect::Rejected(label));
    }
    // One instruction that allocates as its arguments say is refused at put.
    let range =
        "package keel.policy\nxs := numbers.range(0, 1000000000000)\ndecision := {\"allow\": true, \"reason\": \"x\"}";
    check(&[], now(put_policy("main", range, None)), Expect::Rejected("POLICY_BUILTIN_FORBIDDEN"));
    // Deep nesting is refused before parsing (regorus's parse time doubles per level).
    let depth = POLICY_NESTING_DEPTH_MAX + 1;
    let nested = format!("package keel.policy\ndecision := {}1{}", "[".repeat(depth), "]".repeat(depth));
    check(&[], now(put_policy("main", &nested, None)), Expect::Rejected("LIMIT_EXCEEDED POLICY_NESTING_DEPTH_MAX"));
    let nested = format!("package keel.policy\ndecision := {}1{}", "[".repeat(20_000), "]".repeat(20_000));
    check(&[], now(put_policy("main", &nested, None)), Expect::Rejected("LIMIT_EXCEEDED POLICY_NESTING_DEPTH_MAX"));
}

#[test]
fn policy_put_over_the_source_limit_is_refused() {
    let source = format!("{ALLOW_ALL}#{}", "x".repeat(POLICY_SOURCE_BYTES_MAX));
    check(&[], now(put_policy("main", &source, None)), Expect::Rejected("LIMIT_EXCEEDED POLICY_SOURCE_BYTES_MAX"));
}

#[test]
fn policy_put_of_a_name_over_the_count_limit_is_refused() {
    let setup: Vec<Proposal> = (0..POLICIES_MAX).map(|i| now(put_policy(&format!("p{i}"), ALLOW_ALL, None))).collect();
    check(&setup, now(put_policy("one-more", ALLOW_ALL, None)), Expect::Rejected("LIMIT_EXCEEDED POLICIES_MAX"));
}
