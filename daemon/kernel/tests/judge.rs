//! Judgements are total: an evaluator panic inside `apply` is a
//! deterministic rejection that changes nothing, and `judgements_of` names
//! every judgement `apply` asks for (so a node can work them out first).
//!
//! The memory-budget half of the class (one instruction asking for
//! gigabytes) needs the node's sandbox and is tested there
//! (`daemon/node/tests/judge.rs`).

mod fixture;

use fixture::*;
use keel_kernel::command::Command;
use keel_kernel::judge::{self, Judge, Judgement, Verdict};
use keel_kernel::{KernelState, Rejection};
use std::cell::RefCell;

/// Rego whose decision formats with `format` (a Rego string literal body).
fn sprintf_policy(format: &str) -> String {
    format!("package keel.policy\n\ndecision := {{\"allow\": false, \"reason\": sprintf(\"{format}\", [1])}}\n")
}

fn put(source: &str) -> Command {
    Command::PutPolicy { name: name("main"), source: source.to_owned(), expected_version: None }
}

/// A state with the trust store bootstrapped and one policy version.
fn state() -> KernelState {
    let mut state = KernelState::default();
    state.apply(1, &now(bootstrap(&[ROOT]))).expect("bootstrap");
    state
        .apply(2, &now(put("package keel.policy\n\ndecision := {\"allow\": true, \"reason\": \"ok\"}\n")))
        .expect("put");
    state
}

fn failure(rejection: &Rejection) -> (&'static str, String) {
    match rejection {
        Rejection::EvaluationAborted { evaluator, failure, .. } => {
            (rejection.reason(), format!("{evaluator}/{failure}"))
        }
        other => (other.reason(), String::new()),
    }
}

#[test]
fn evaluator_panics_at_put_are_rejections_that_change_nothing() {
    // Each of these panics inside regorus's sprintf: a numeric character
    // that is not a decimal digit, and a width that overflows u32 (checked
    // arithmetic in every profile, see the workspace manifest).
    let poisons = ["%①d", "%٣d", "%99999999999d", "%.99999999999f"];
    for format in poisons {
        let mut state = state();
        let digest = state.digest();
        let outcome = state.apply(3, &now(put(&sprintf_policy(format))));
        let rejection = outcome.expect_err(format);
        assert_eq!(failure(&rejection), ("EVALUATION_ABORTED", "policy/panic".to_owned()), "{format}");
        assert_eq!(state.digest(), digest, "{format}: a refused put changes nothing");
        // The same entry again (a restart replaying the log): the same verdict.
        let again = state.apply(3, &now(put(&sprintf_policy(format)))).expect_err(format);
        assert_eq!(again, rejection, "{format}");
    }
}

#[test]
fn an_input_that_makes_evaluation_panic_fails_that_evaluation_only() {
    let source = "package keel.policy\n\ndecision := {\"allow\": true, \"reason\": sprintf(input.fmt, [1])}\n";
    // The probes have no `fmt`: the put is accepted.
    assert_eq!(judge::run(&Judgement::PolicyPut { source: source.to_owned() }), Verdict::Accepted);
    let decide = |fmt: &str| {
        judge::run(&Judgement::PolicyDecide {
            source: source.to_owned(),
            inputs: vec![serde_json::json!({ "fmt": fmt })],
            with_probes: false,
        })
    };
    assert!(matches!(decide("%d"), Verdict::Decisions(results) if results.len() == 1 && results[0].is_ok()));
    match decide("%①d") {
        Verdict::Rejected(rejection) => assert_eq!(failure(&rejection).1, "policy/panic"),
        other => panic!("expected an aborted evaluation, got {other:?}"),
    }
}

/// Records what `apply` asks for, judging in-process.
#[derive(Default)]
struct Recording {
    asked: RefCell<Vec<Judgement>>,
}

impl Judge for Recording {
    fn judge(&self, judgement: &Judgement) -> Verdict {
        self.asked.borrow_mut().push(judgement.clone());
        judge::run(judgement)
    }
}

#[test]
fn judgements_of_names_every_judgement_apply_asks_for() {
    let mut schema_manifest = manifest_value("billing", "1.0.0");
    schema_manifest["actions"][0]["output_schema"] = serde_json::json!({"type": "string", "pattern": "^a+$"});
    let mut bad_schema = manifest_value("billing", "1.0.1");
    bad_schema["actions"][0]["input_schema"] = serde_json::json!({"type": 7});
    let commands = vec![
        add_key(publisher_spec(PUBLISHER), &[ROOT]),
        publish(json_bytes(&schema_manifest), PUBLISHER),
        publish(json_bytes(&bad_schema), PUBLISHER),
        publish(b"not json".to_vec(), PUBLISHER),
        put(&sprintf_policy("%d")),
        put(&sprintf_policy("%①d")),
        put("package keel.policy\n\ndecision := time.now_ns()\n"),
        create_tenant("acme", "Acme"),
    ];
    let mut state = state();
    for (offset, command) in commands.into_iter().enumerate() {
        let recording = Recording::default();
        let _ = state.apply_judged(3 + offset as u64, &now(command.clone()), &recording);
        let listed = judge::judgements_of(&command);
        for asked in recording.asked.borrow().iter() {
            assert!(listed.contains(asked), "{offset}: apply asked for {asked:?}, judgements_of listed {listed:?}");
        }
        if !listed.is_empty() {
            assert!(judge::needs_judgement(&command), "{offset}: judged commands need the semantics check");
        }
    }
}

#[test]
fn the_verdict_is_the_same_judged_in_process_or_through_the_node_protocol() {
    // The node sends judgements and verdicts as JSON: both round-trip.
    let judgement = Judgement::PolicyDecide {
        source: sprintf_policy("%d"),
        inputs: vec![serde_json::json!({"a": [1, 2.5, "x", null]})],
        with_probes: true,
    };
    let bytes = serde_json::to_vec(&judgement).expect("encode");
    assert_eq!(serde_json::from_slice::<Judgement>(&bytes).expect("decode"), judgement);
    let verdict = judge::run(&judgement);
    let bytes = serde_json::to_vec(&verdict).expect("encode");
    assert_eq!(serde_json::from_slice::<Verdict>(&bytes).expect("decode"), verdict);
}
