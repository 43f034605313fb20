//! Data-driven tests of `KernelState::apply`, all through one [`check`] helper.
//!
//! A case is a setup (proposals that must all apply), one proposal, and what
//! it must produce: the events of a change, or the label of a rejection (see
//! `fixture::label`). `check` also enforces the kernel's contract on every
//! case: a rejection or an idempotent replay leaves the state and its digest
//! exactly as they were; a change alters the digest; the snapshot
//! round-trips. (Same log, same digest is `tests/properties.rs`'s job.)

#[path = "../fixture/mod.rs"]
mod fixture;

mod dependencies;
mod policies;
mod publish;
mod tenants;
mod trust_keys;
mod trust_root;

use fixture::*;
use keel_kernel::command::{Command, Proposal};
use keel_kernel::limits::{
    ACTIONS_PER_ENGINE_MAX, BOOTSTRAP_ROOT_KEYS_MAX, CAPABILITIES_PER_ENGINE_MAX, DEPENDENCIES_PER_ENGINE_MAX,
    DESCRIPTION_BYTES_MAX, ENABLED_ENGINES_PER_TENANT_MAX, KEYS_PER_ROLE_MAX, MANIFEST_BYTES_MAX, NAME_BYTES_MAX,
    POLICIES_MAX, POLICY_NESTING_DEPTH_MAX, POLICY_SOURCE_BYTES_MAX, POLICY_VERSIONS_KEPT, SIGNATURES_PER_REQUEST_MAX,
    UI_ENTRY_BYTES_MAX, UI_SURFACES_PER_ENGINE_MAX,
};
use keel_kernel::signing::Signature;
use keel_kernel::trust_store::{KeyPurpose, KeySpec};
use keel_kernel::{Applied, Event, EventKind, KernelState, Outcome, Rejection};
use serde_json::json;
use sha2::{Digest, Sha256};

/// What one proposal must produce.
enum Expect {
    /// A change with exactly these events, each at the proposal's revision.
    Events(Vec<EventKind>),
    /// An idempotent success: no events, nothing changes.
    NoChange,
    /// A rejection with this label (`reason`, then the limit or field).
    Rejected(&'static str),
}

/// Applies `setup` at revisions 1..=n (each must succeed), then `proposal` at
/// n+1, and checks the outcome against `expect` and the kernel's contract.
/// Returns the state after the proposal and its result, for extra assertions.
fn check(setup: &[Proposal], proposal: Proposal, expect: Expect) -> Checked {
    let mut state = KernelState::default();
    for (index, entry) in setup.iter().enumerate() {
        if let Err(rejection) = state.apply(index as u64 + 1, entry) {
            panic!("setup entry {index} ({entry}) was rejected: {rejection}");
        }
    }
    let revision = setup.len() as u64 + 1;
    let before = state.clone();
    let digest_before = state.digest();
    let result = state.apply(revision, &proposal);

    match (&expect, &result) {
        (Expect::Events(kinds), Ok(applied)) => {
            let time_ms = before.clock_ms().max(proposal.leader_time_ms);
            let expected: Vec<Event> =
                kinds.iter().cloned().map(|kind| Event { revision, time_ms, kind, caused_by: None }).collect();
            assert_eq!(applied.events, expected, "events of {proposal}");
            assert_ne!(created(&applied.outcome), Some(false), "a change reports created: {:?}", applied.outcome);
            assert_ne!(state.digest(), digest_before, "a change must move the digest");
        }
        (Expect::NoChange, Ok(applied)) => {
            assert_eq!(applied.events, Vec::new(), "an idempotent replay emits no events");
            assert_eq!(created(&applied.outcome), Some(false), "a replay reports !created: {:?}", applied.outcome);
            assert_unchanged(&before, digest_before, &state);
        }
        (Expect::Rejected(label_expected), Err(rejection)) => {
            assert_eq!(label(rejection), *label_expected, "rejection of {proposal}: {rejection}");
            assert!(Rejection::ALL_REASONS.contains(&rejection.reason()), "{} is not registered", rejection.reason());
            assert_unchanged(&before, digest_before, &state);
        }
        (Expect::Rejected(label_expected), Ok(applied)) => {
            panic!("{proposal} should be rejected with {label_expected}, but applied: {applied:?}")
        }
        (_, Err(rejection)) => panic!("{proposal} should apply, but was rejected: {} ({rejection})", label(rejection)),
    }

    let decoded = KernelState::decode_snapshot(&state.encode_snapshot()).expect("own snapshot decodes");
    assert_eq!(decoded, state, "snapshot round trip");
    Checked { state, result }
}

/// The state after a checked proposal, and the proposal's result.
struct Checked {
    state: KernelState,
    result: Result<Applied, Rejection>,
}

/// The outcome's `created` flag, for outcomes that have one.
fn created(outcome: &Outcome) -> Option<bool> {
    match outcome {
        Outcome::TrustBootstrapped { created }
        | Outcome::KeyAdded { created, .. }
        | Outcome::EngineVersionPublished { created, .. }
        | Outcome::EngineVersionYanked { created, .. }
        | Outcome::KeyRevoked { created, .. }
        | Outcome::PolicyPut { created, .. }
        | Outcome::TokenRevoked { created } => Some(*created),
        Outcome::TenantWritten { .. } | Outcome::RootRotated { .. } | Outcome::EventPublished { .. } => None,
    }
}

fn assert_unchanged(before: &KernelState, digest_before: keel_kernel::StateDigest, after: &KernelState) {
    assert_eq!(after.digest(), digest_before, "digest must not change");
    assert_eq!(after, before, "state must equal its clone from before");
}

fn applied(result: Result<Applied, Rejection>) -> Applied {
    result.expect("check already asserted success")
}

/// Setup: ROOT bootstrapped.
fn trust() -> Vec<Proposal> {
    vec![now(bootstrap(&[ROOT]))]
}

/// Setup: ROOT bootstrapped, PUBLISHER added.
fn trust_and_publisher() -> Vec<Proposal> {
    vec![now(bootstrap(&[ROOT])), now(add_key(publisher_spec(PUBLISHER), &[ROOT]))]
}

fn published(engine: &str, version: &str) -> EventKind {
    EventKind::EngineVersionPublished { engine: name(engine), version: version.to_owned() }
}

/// A manifest with one field replaced.
fn manifest_with(field: &str, value: serde_json::Value) -> Vec<u8> {
    let mut document = manifest_value("echo", "1.0.0");
    document[field] = value;
    json_bytes(&document)
}

/// A manifest with one field removed.
fn manifest_without(field: &str) -> Vec<u8> {
    let mut document = manifest_value("echo", "1.0.0");
    document.as_object_mut().expect("manifest is an object").remove(field);
    json_bytes(&document)
}

/// Checks a publish of `manifest_bytes`, signed by PUBLISHER, after the usual setup.
fn check_publish(manifest_bytes: Vec<u8>, expect: Expect) -> Checked {
    check(&trust_and_publisher(), now(publish(manifest_bytes, PUBLISHER)), expect)
}
