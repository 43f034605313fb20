//! The judging sandbox with the real `keeld` binary: poison policies and
//! inputs are refused deterministically, within the memory budget, and the
//! member that judged them is unharmed. What the kernel tests cannot do in
//! process (a single instruction asking for gigabytes) is done here.

use keel_kernel::command::{Command, Proposal};
use keel_kernel::judge::{self, Judgement, SEMANTICS_VERSION, Verdict};
use keel_kernel::{KernelState, Name, Rejection};
use keel_node::judge::{JudgedVerdicts, Sandbox};
use proptest::prelude::*;
use std::path::PathBuf;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

fn sandbox() -> Sandbox {
    Sandbox::new(PathBuf::from(env!("CARGO_BIN_EXE_keeld")))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn policy(decision: &str) -> String {
    format!("package keel.policy\n\n{decision}\n")
}

fn put(source: &str) -> Judgement {
    Judgement::PolicyPut { source: source.to_owned() }
}

fn failure(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Rejected(Rejection::EvaluationAborted { evaluator, failure, .. }) => format!("{evaluator}/{failure}"),
        Verdict::Rejected(rejection) => rejection.reason().to_owned(),
        Verdict::Accepted => "accepted".to_owned(),
        Verdict::Decisions(_) => "decisions".to_owned(),
        Verdict::Unavailable { detail } => format!("unavailable: {detail}"),
    }
}

/// Policies that allocate without bound: one instruction asking for 4 GiB,
/// a zero-padded variant, and values doubled per instruction.
fn memory_poisons() -> Vec<(&'static str, String)> {
    let mut doubling = String::from("package keel.policy\n\na0 := [1, 2, 3, 4]\n");
    for level in 1..=40 {
        doubling.push_str(&format!("a{level} := array.concat(a{}, a{})\n", level - 1, level - 1));
    }
    doubling.push_str("decision := {\"allow\": count(a40) > 0, \"reason\": \"big\"}\n");
    let mut strings = String::from("package keel.policy\n\ns0 := \"abcdefgh\"\n");
    for level in 1..=40 {
        strings.push_str(&format!("s{level} := concat(\"\", [s{}, s{}])\n", level - 1, level - 1));
    }
    strings.push_str("decision := {\"allow\": count(s40) > 0, \"reason\": \"big\"}\n");
    vec![
        ("width", policy("decision := {\"allow\": false, \"reason\": sprintf(\"%4294967295d\", [1])}")),
        ("zero padding", policy("decision := {\"allow\": false, \"reason\": sprintf(\"%04294967295d\", [1])}")),
        ("array doubling", doubling),
        ("string doubling", strings),
    ]
}

#[test]
fn poison_policies_are_refused_within_the_budget_the_same_way_twice() {
    let runtime = runtime();
    let sandbox = sandbox();
    for (label, source) in memory_poisons() {
        let first = runtime.block_on(sandbox.run(&put(&source), TIMEOUT));
        assert_eq!(failure(&first), "policy/memory_budget", "{label}: {first:?}");
        let second = runtime.block_on(sandbox.run(&put(&source), TIMEOUT));
        assert_eq!(second, first, "{label}: the verdict is deterministic");
    }
    let panics = policy("decision := {\"allow\": false, \"reason\": sprintf(\"%①d\", [1])}");
    assert_eq!(failure(&runtime.block_on(sandbox.run(&put(&panics), TIMEOUT))), "policy/panic");
    let fine = policy("decision := {\"allow\": true, \"reason\": sprintf(\"%5d\", [1])}");
    assert_eq!(runtime.block_on(sandbox.run(&put(&fine), TIMEOUT)), Verdict::Accepted);
}

/// Found by the `policy_put` fuzz target (a segfault: stack overflow on the
/// fuzzer's 8 MiB main thread): a long chain of binary operators makes
/// regorus's parser recurse once per operand. The judging thread's stack is
/// sized so that no source within POLICY_SOURCE_BYTES_MAX can overflow it,
/// so stack depth never decides a verdict.
#[test]
fn the_deepest_expression_a_policy_can_hold_does_not_overflow_the_judging_stack() {
    let runtime = runtime();
    for operator in ["+", "*", "-", "&"] {
        let line = format!("1{}", format!("{operator}1").repeat(450));
        let mut body = String::new();
        while body.len() + line.len() + 4 < keel_kernel::limits::POLICY_SOURCE_BYTES_MAX - 200 {
            body.push_str(&line);
            body.push_str(&format!(" {operator}\n"));
        }
        body.push('1');
        let source = policy(&format!("x := {body}\n\ndecision := {{\"allow\": x > 0, \"reason\": \"deep\"}}"));
        assert!(source.len() <= keel_kernel::limits::POLICY_SOURCE_BYTES_MAX);
        let verdict = runtime.block_on(sandbox().run(&put(&source), TIMEOUT));
        assert!(
            !matches!(&verdict, Verdict::Rejected(Rejection::EvaluationAborted { failure, .. }) if failure == "stack"),
            "{operator}: {verdict:?}"
        );
        assert!(!matches!(verdict, Verdict::Unavailable { .. }), "{operator}: {verdict:?}");
    }
}

#[test]
fn an_input_cannot_make_an_evaluation_allocate_without_bound() {
    let runtime = runtime();
    let source = policy("decision := {\"allow\": true, \"reason\": sprintf(input.fmt, [1])}");
    let decide = |fmt: &str| Judgement::PolicyDecide {
        source: source.clone(),
        inputs: vec![serde_json::json!({ "fmt": fmt })],
        with_probes: false,
    };
    let verdict = runtime.block_on(sandbox().run(&decide("%4294967295d"), TIMEOUT));
    assert_eq!(failure(&verdict), "policy/memory_budget");
    let verdict = runtime.block_on(sandbox().run(&decide("%3d"), TIMEOUT));
    assert!(matches!(&verdict, Verdict::Decisions(results) if matches!(&results[..], [Ok(Some(_))])), "{verdict:?}");
}

#[test]
fn apply_refuses_each_poison_put_and_changes_nothing() {
    let runtime = runtime();
    let sandbox = sandbox();
    let mut state = KernelState::default();
    let stamp = |command: Command| Proposal {
        leader_time_ms: 1_700_000_000_000,
        semantics_version: SEMANTICS_VERSION,
        command,
        idempotency_key: None,
        actor: None,
    };
    let name = Name::parse("name", "main").expect("name");
    let mut poisons: Vec<String> = memory_poisons().into_iter().map(|(_, source)| source).collect();
    poisons.push(policy("decision := {\"allow\": false, \"reason\": sprintf(\"%①d\", [1])}"));
    for (offset, source) in poisons.into_iter().enumerate() {
        let command = Command::PutPolicy { name: name.clone(), source, expected_version: None };
        let mut verdicts = JudgedVerdicts::default();
        for judgement in judge::judgements_of(&command) {
            let verdict = runtime.block_on(sandbox.run(&judgement, TIMEOUT));
            verdicts.insert(judgement, verdict);
        }
        let digest = state.digest();
        let outcome = state.apply_judged(offset as u64 + 1, &stamp(command), &verdicts);
        assert!(matches!(outcome, Err(Rejection::EvaluationAborted { .. })), "{outcome:?}");
        assert!(!verdicts.take_missed());
        assert_eq!(state.digest(), digest);
    }
}

/// Format strings and numbers an attacker would try.
fn format_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("%".to_owned()),
        Just("%%".to_owned()),
        Just("①".to_owned()),
        Just("٣".to_owned()),
        Just(".".to_owned()),
        Just("0".to_owned()),
        "[dsvxXobeEfFgGcqt]",
        (0u64..=u64::MAX).prop_map(|n| n.to_string()),
        (0u32..100_000).prop_map(|n| n.to_string()),
        "[a-z ]{0,4}",
    ];
    proptest::collection::vec(piece, 1..6).prop_map(|pieces| pieces.concat())
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..=u64::MAX).prop_map(|n| n.to_string()),
        (i64::MIN..=i64::MAX).prop_map(|n| n.to_string()),
        Just("1e308".to_owned()),
        Just("-1e308".to_owned()),
        Just("123456789012345678901234567890".to_owned()),
        Just("0.5".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random Rego with format strings and large numbers through put and
    /// evaluate: the judge always answers (never a crash of the member),
    /// and the same judgement answers the same verdict.
    #[test]
    fn random_format_policies_are_always_judged(format in format_string(), n in number(), width in number()) {
        let runtime = runtime();
        let sandbox = sandbox();
        let format = format.replace('\\', "\\\\").replace('"', "\\\"");
        let source = policy(&format!(
            "decision := {{\"allow\": false, \"reason\": sprintf(\"{format}\", [{n}, {width}, input.x])}}"
        ));
        let judgement = Judgement::PolicyDecide {
            source,
            inputs: vec![serde_json::json!({"x": 1}), serde_json::json!({"x": "%4294967295d"})],
            with_probes: true,
        };
        let first = runtime.block_on(sandbox.run(&judgement, TIMEOUT));
        prop_assert!(!matches!(first, Verdict::Unavailable { .. }), "{:?}", first);
        let second = runtime.block_on(sandbox.run(&judgement, TIMEOUT));
        prop_assert_eq!(first, second);
    }
}
