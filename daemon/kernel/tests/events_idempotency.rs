//! The event history and idempotency keys, against a plain model.
//!
//! Logs mix tenant writes and user events, each sometimes under an
//! idempotency key drawn from a small pool (so keys collide: replays of the
//! same request and reuses for other requests both happen), with the leader
//! clock jumping forward past the dedupe window now and then. The model says,
//! for every entry: applied fresh (events at this revision), replayed (the
//! first revision, nothing changed) or refused (`IDEMPOTENCY_KEY_REUSED`,
//! nothing changed). After the log, the history holds exactly the events the
//! model saw applied, in order, and replaying the same log on a fresh state
//! gives the same digest.

mod fixture;

use fixture::*;
use keel_kernel::command::{Command, Proposal};
use keel_kernel::limits::{EVENT_PAYLOAD_BYTES_MAX, IDEMPOTENCY_WINDOW_MS};
use keel_kernel::{Event, EventKind, KernelState, Outcome, Rejection};
use proptest::prelude::*;
use std::collections::BTreeMap;

const KEYS: [&str; 3] = ["retry-a", "retry-b", "retry-c"];
const TOPICS: [&str; 2] = ["deploys", "alerts"];
const TENANTS: [&str; 2] = ["acme", "globex"];

#[derive(Debug, Clone)]
enum Op {
    /// A user event: topic, tenant index (or none), payload byte.
    Publish { topic: usize, tenant: Option<usize>, payload: u8 },
    /// Creates or renames a tenant (create once, then updates).
    Tenant { tenant: usize, display: u8 },
}

#[derive(Debug, Clone)]
struct Step {
    op: Op,
    key: Option<usize>,
    /// Whether the clock jumps past the dedupe window before this entry.
    is_after_window: bool,
}

fn step() -> impl Strategy<Value = Step> {
    let op = prop_oneof![
        3 => (0..TOPICS.len(), proptest::option::of(0..TENANTS.len()), 0u8..3)
            .prop_map(|(topic, tenant, payload)| Op::Publish { topic, tenant, payload }),
        1 => (0..TENANTS.len(), 0u8..2).prop_map(|(tenant, display)| Op::Tenant { tenant, display }),
    ];
    (op, proptest::option::of(0..KEYS.len()), proptest::bool::weighted(0.1))
        .prop_map(|(op, key, is_after_window)| Step { op, key, is_after_window })
}

fn command(op: &Op, tenants_created: &BTreeMap<usize, ()>) -> Command {
    match op {
        Op::Publish { topic, tenant, payload } => Command::PublishEvent {
            topic: name(TOPICS[*topic]),
            tenant: tenant.map(|tenant| name(TENANTS[tenant])),
            engine: None,
            payload: vec![*payload; 4],
        },
        Op::Tenant { tenant, display } => {
            let display_name = format!("Tenant {display}");
            if tenants_created.contains_key(tenant) {
                update_tenant(TENANTS[*tenant], &display_name, None)
            } else {
                create_tenant(TENANTS[*tenant], &display_name)
            }
        }
    }
}

/// key → (command, first revision, time recorded).
type ModelKeys = BTreeMap<&'static str, (Command, u64, u64)>;

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn replays_answer_the_first_revision_and_the_history_holds_every_applied_event(
        steps in proptest::collection::vec(step(), 1..40)
    ) {
        let mut state = KernelState::default();
        let mut log: Vec<Proposal> = Vec::new();
        let mut model_keys: ModelKeys = BTreeMap::new();
        let mut tenants_created = BTreeMap::new();
        let mut expected_history: Vec<Event> = Vec::new();
        let mut time_ms = T0_MS;

        for (index, step) in steps.iter().enumerate() {
            let revision = index as u64 + 1;
            time_ms += if step.is_after_window { IDEMPOTENCY_WINDOW_MS } else { 10 };
            let command = command(&step.op, &tenants_created);
            let key = step.key.map(|key| KEYS[key]);
            let proposal = Proposal { leader_time_ms: time_ms, semantics_version: keel_kernel::judge::SEMANTICS_VERSION, command: command.clone(), idempotency_key: key.map(str::to_owned), actor: None };
            log.push(proposal.clone());
            let digest_before = state.digest();
            let result = state.apply(revision, &proposal);

            let remembered = key.and_then(|key| model_keys.get(key))
                .filter(|(_, _, recorded_ms)| recorded_ms + IDEMPOTENCY_WINDOW_MS > time_ms);
            match (remembered, result) {
                (Some((first, first_revision, _)), Ok(applied)) => {
                    prop_assert_eq!(first, &command, "a replay needs the same command");
                    prop_assert_eq!(applied.replay_of, Some(*first_revision));
                    prop_assert!(applied.events.is_empty());
                    prop_assert_eq!(state.digest(), digest_before, "a replay changes nothing");
                }
                (Some((first, first_revision, _)), Err(rejection)) => {
                    prop_assert_ne!(first, &command);
                    prop_assert_eq!(rejection, Rejection::IdempotencyKeyReused {
                        key: key.unwrap_or_default().to_owned(),
                        revision: *first_revision,
                    });
                    prop_assert_eq!(state.digest(), digest_before, "a refusal changes nothing");
                }
                (None, Ok(applied)) => {
                    prop_assert_eq!(applied.replay_of, None);
                    prop_assert_eq!(applied.events.len(), 1);
                    for event in &applied.events {
                        prop_assert_eq!(event.revision, revision);
                        prop_assert_eq!(event.time_ms, time_ms);
                    }
                    if let Outcome::EventPublished { revision: published } = applied.outcome {
                        prop_assert_eq!(published, revision);
                    }
                    if let Op::Tenant { tenant, .. } = step.op {
                        tenants_created.insert(tenant, ());
                    }
                    if let Some(key) = key {
                        model_keys.insert(key, (command, revision, time_ms));
                    }
                    expected_history.extend(applied.events);
                }
                (None, Err(rejection)) => prop_assert!(false, "fresh entry {index} refused: {rejection}"),
            }
        }

        let history: Vec<Event> = state.history().since(0).cloned().collect();
        prop_assert_eq!(history, expected_history);
        prop_assert_eq!(state.history().compacted_through(), 0);

        let mut again = KernelState::default();
        for (index, proposal) in log.iter().enumerate() {
            let _ = again.apply(index as u64 + 1, proposal);
        }
        prop_assert_eq!(again.digest(), state.digest(), "same log, same digest");
        let decoded = KernelState::decode_snapshot(&state.encode_snapshot());
        prop_assert_eq!(decoded.ok(), Some(state));
    }
}

fn publish_event(payload: Vec<u8>) -> Command {
    Command::PublishEvent { topic: name("deploys"), tenant: None, engine: Some(name("billing")), payload }
}

#[test]
fn an_event_over_the_payload_limit_is_refused_and_changes_nothing() {
    let mut state = KernelState::default();
    state.apply(1, &now(publish_event(vec![1; 8]))).expect("a small event applies");
    let digest = state.digest();
    let refused = state.apply(2, &now(publish_event(vec![0; EVENT_PAYLOAD_BYTES_MAX + 1])));
    match refused {
        Err(rejection) => assert_eq!(label(&rejection), "LIMIT_EXCEEDED EVENT_PAYLOAD_BYTES_MAX"),
        Ok(applied) => panic!("an oversized event applied: {:?}", applied.outcome),
    }
    assert_eq!(state.digest(), digest);
    let at_limit = state.apply(3, &now(publish_event(vec![0; EVENT_PAYLOAD_BYTES_MAX])));
    assert!(at_limit.is_ok(), "exactly at the limit is allowed");
}

#[test]
fn a_malformed_idempotency_key_is_refused_and_changes_nothing() {
    let mut state = KernelState::default();
    let digest = state.digest();
    let proposal = Proposal {
        leader_time_ms: T0_MS,
        semantics_version: keel_kernel::judge::SEMANTICS_VERSION,
        command: publish_event(Vec::new()),
        idempotency_key: Some("has space".to_owned()),
        actor: None,
    };
    let refused = state.apply(1, &proposal).err().map(|rejection| label(&rejection));
    assert_eq!(refused.as_deref(), Some("FIELD_INVALID idempotency_key"));
    assert_eq!(state.digest(), digest);
}

#[test]
fn user_events_carry_their_attributes_into_the_history() {
    let mut state = KernelState::default();
    let applied = state.apply(4, &at(T0_MS + 5, publish_event(b"{\"v\":1}".to_vec()))).expect("applies");
    assert_eq!(applied.outcome, Outcome::EventPublished { revision: 4 });
    let retained: Vec<&Event> = state.history().since(4).collect();
    assert_eq!(retained.len(), 1);
    assert_eq!(retained[0].time_ms, T0_MS + 5);
    assert_eq!(retained[0].kind.name(), "USER_EVENT");
    assert_eq!(retained[0].kind.engine().map(|engine| engine.as_str()), Some("billing"));
    assert!(matches!(&retained[0].kind, EventKind::UserEvent { payload, .. } if payload == b"{\"v\":1}"));
}
