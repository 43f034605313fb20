//! Data-driven tests of `KernelState::apply`, all through one [`check`] helper.
//!
//! A case is a setup (proposals that must all apply), one proposal, and what
//! it must produce: the events of a change, or the label of a rejection (see
//! `fixture::label`). `check` also enforces the kernel's contract on every
//! case: a rejection or an idempotent replay leaves the state and its digest
//! exactly as they were; a change alters the digest; the snapshot
//! round-trips. (Same log, same digest is `tests/properties.rs`'s job.)

mod fixture;

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
            let expected: Vec<Event> = kinds.iter().cloned().map(|kind| Event { revision, time_ms, kind }).collect();
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
        | Outcome::PolicyPut { created, .. } => Some(*created),
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

// ---------------------------------------------------------------- bootstrap

#[test]
fn bootstrap_installs_root_keys() {
    let Checked { state, result } = check(
        &[],
        now(bootstrap(&[ROOT, ROOT2])),
        Expect::Events(vec![EventKind::TrustBootstrapped { root_key_ids: vec![key_id(ROOT), key_id(ROOT2)] }]),
    );
    assert_eq!(applied(result).outcome, Outcome::TrustBootstrapped { created: true });
    assert!(state.trust().is_bootstrapped());
    assert_eq!(state.trust().len(), 2);
    let root = state.trust().get(&key_id(ROOT)).expect("root installed");
    assert_eq!((root.create_revision, root.signed_by.as_slice()), (1, &[][..]));
    assert_eq!(state.clock_ms(), T0_MS);
}

#[test]
fn bootstrap_again_with_the_same_roots_is_idempotent() {
    let Checked { result, .. } =
        check(&[now(bootstrap(&[ROOT, ROOT2]))], now(bootstrap(&[ROOT, ROOT2])), Expect::NoChange);
    assert_eq!(applied(result).outcome, Outcome::TrustBootstrapped { created: false });
}

#[test]
fn bootstrap_again_with_the_same_roots_in_another_order_is_idempotent() {
    check(&[now(bootstrap(&[ROOT, ROOT2]))], now(bootstrap(&[ROOT2, ROOT])), Expect::NoChange);
}

#[test]
fn bootstrap_again_with_different_roots_is_refused() {
    check(&trust(), now(bootstrap(&[ROOT2])), Expect::Rejected("TRUST_ALREADY_BOOTSTRAPPED"));
}

#[test]
fn bootstrap_again_with_a_superset_or_subset_is_refused() {
    check(&trust(), now(bootstrap(&[ROOT, ROOT2])), Expect::Rejected("TRUST_ALREADY_BOOTSTRAPPED"));
    check(&[now(bootstrap(&[ROOT, ROOT2]))], now(bootstrap(&[ROOT])), Expect::Rejected("TRUST_ALREADY_BOOTSTRAPPED"));
}

#[test]
fn bootstrap_again_with_the_same_key_but_other_attributes_is_refused() {
    let changed = with_window(root_spec(ROOT), 5, None);
    check(
        &trust(),
        now(Command::BootstrapTrust { root_keys: vec![changed] }),
        Expect::Rejected("TRUST_ALREADY_BOOTSTRAPPED"),
    );
}

#[test]
fn bootstrap_without_keys_is_refused() {
    check(&[], now(Command::BootstrapTrust { root_keys: vec![] }), Expect::Rejected("FIELD_REQUIRED root_keys"));
}

#[test]
fn bootstrap_with_a_non_root_key_is_refused() {
    let root_keys = vec![root_spec(ROOT), publisher_spec(PUBLISHER)];
    check(&[], now(Command::BootstrapTrust { root_keys }), Expect::Rejected("FIELD_INVALID root_keys.purposes"));
}

#[test]
fn bootstrap_with_a_key_without_purposes_is_refused() {
    let root_keys = vec![key_spec(ROOT, &[])];
    check(&[], now(Command::BootstrapTrust { root_keys }), Expect::Rejected("FIELD_REQUIRED spec.purposes"));
}

#[test]
fn bootstrap_with_an_invalid_public_key_is_refused() {
    let root_keys = vec![KeySpec { public_key: invalid_public_key(), ..root_spec(ROOT) }];
    check(&[], now(Command::BootstrapTrust { root_keys }), Expect::Rejected("FIELD_INVALID spec.public_key"));
}

#[test]
fn bootstrap_with_an_empty_validity_window_is_refused() {
    let root_keys = vec![with_window(root_spec(ROOT), 10, Some(10))];
    check(&[], now(Command::BootstrapTrust { root_keys }), Expect::Rejected("KEY_VALIDITY_INVALID"));
}

#[test]
fn bootstrap_with_too_many_keys_is_refused() {
    let seeds: Vec<u8> = (0..=BOOTSTRAP_ROOT_KEYS_MAX as u8).collect();
    assert_eq!(seeds.len(), BOOTSTRAP_ROOT_KEYS_MAX + 1);
    check(&[], now(bootstrap(&seeds)), Expect::Rejected("LIMIT_EXCEEDED BOOTSTRAP_ROOT_KEYS_MAX"));
    let Checked { state, .. } = check(
        &[],
        now(bootstrap(&seeds[1..])),
        Expect::Events(vec![EventKind::TrustBootstrapped {
            root_key_ids: seeds[1..].iter().map(|&seed| key_id(seed)).collect(),
        }]),
    );
    assert_eq!(state.trust().len(), BOOTSTRAP_ROOT_KEYS_MAX);
}

#[test]
fn bootstrap_listing_a_key_twice_is_refused() {
    check(&[], now(bootstrap(&[ROOT, ROOT])), Expect::Rejected("FIELD_INVALID root_keys"));
    let same_key_two_specs = vec![root_spec(ROOT), key_spec(ROOT, &[KeyPurpose::Root, KeyPurpose::ApiToken])];
    check(
        &[],
        now(Command::BootstrapTrust { root_keys: same_key_two_specs }),
        Expect::Rejected("FIELD_INVALID root_keys"),
    );
}

// ---------------------------------------------------------------- add key

#[test]
fn add_key_signed_by_root_is_added() {
    let Checked { state, result } = check(
        &trust(),
        now(add_key(publisher_spec(PUBLISHER), &[ROOT])),
        Expect::Events(vec![EventKind::KeyAdded { key_id: key_id(PUBLISHER) }]),
    );
    let Outcome::KeyAdded { key, created } = applied(result).outcome else { panic!("wrong outcome") };
    assert!(created);
    assert_eq!((key.create_revision, key.signed_by.clone()), (2, vec![key_id(ROOT)]));
    assert_eq!(state.trust().get(&key_id(PUBLISHER)), Some(&key));
}

#[test]
fn add_key_before_bootstrap_is_refused() {
    check(&[], now(add_key(publisher_spec(PUBLISHER), &[ROOT])), Expect::Rejected("TRUST_NOT_BOOTSTRAPPED"));
}

#[test]
fn add_key_signed_by_an_unknown_key_is_refused() {
    check(&trust(), now(add_key(publisher_spec(PUBLISHER), &[STRANGER])), Expect::Rejected("KEY_UNKNOWN"));
}

#[test]
fn add_key_signed_by_a_key_without_root_purpose_is_refused() {
    check(
        &trust_and_publisher(),
        now(add_key(publisher_spec(PUBLISHER2), &[PUBLISHER])),
        Expect::Rejected("KEY_PURPOSE_MISMATCH ROOT"),
    );
}

#[test]
fn add_key_signed_by_an_expired_root_is_refused() {
    let root = with_window(root_spec(ROOT), 0, Some(T0_MS));
    let setup = [at(T0_MS - 10, Command::BootstrapTrust { root_keys: vec![root] })];
    // `not_after_ms` is exclusive: the last valid instant is one ms before it.
    check(
        &setup,
        at(T0_MS - 1, add_key(publisher_spec(PUBLISHER), &[ROOT])),
        Expect::Events(vec![EventKind::KeyAdded { key_id: key_id(PUBLISHER) }]),
    );
    check(&setup, at(T0_MS, add_key(publisher_spec(PUBLISHER), &[ROOT])), Expect::Rejected("KEY_EXPIRED"));
}

#[test]
fn add_key_signed_by_a_root_not_yet_valid_is_refused() {
    let root = with_window(root_spec(ROOT), T0_MS, None);
    let setup = [at(T0_MS - 10, Command::BootstrapTrust { root_keys: vec![root] })];
    check(&setup, at(T0_MS - 1, add_key(publisher_spec(PUBLISHER), &[ROOT])), Expect::Rejected("KEY_NOT_YET_VALID"));
    // `not_before_ms` is inclusive.
    check(
        &setup,
        at(T0_MS, add_key(publisher_spec(PUBLISHER), &[ROOT])),
        Expect::Events(vec![EventKind::KeyAdded { key_id: key_id(PUBLISHER) }]),
    );
}

#[test]
fn add_key_with_a_tampered_spec_is_refused() {
    let signed = publisher_spec(PUBLISHER);
    let sent = with_window(publisher_spec(PUBLISHER), 0, Some(T0_MS * 2));
    let signatures = vec![sign_key_spec(&signed, ROOT)];
    check(&trust(), now(Command::AddKey { spec: sent, signatures }), Expect::Rejected("SIGNATURE_INVALID"));
}

#[test]
fn add_key_with_a_signature_over_another_kind_of_payload_is_refused() {
    // The root signs the spec's canonical JSON under the manifest prefix: the
    // domain separation must stop it verifying as a key admission.
    let spec = publisher_spec(PUBLISHER);
    let key_payload = spec.signing_payload().expect("canonicalises");
    let canonical = &key_payload[keel_kernel::signing::KEY_PAYLOAD_PREFIX.len()..];
    let wrong_domain = keel_kernel::signing::payload(keel_kernel::signing::MANIFEST_PAYLOAD_PREFIX, canonical);
    let signatures = vec![sign(ROOT, &wrong_domain)];
    check(&trust(), now(Command::AddKey { spec, signatures }), Expect::Rejected("SIGNATURE_INVALID"));
}

#[test]
fn add_key_with_a_malformed_signature_is_refused() {
    for bytes in [vec![], vec![0; 63], vec![0; 64], vec![0; 65]] {
        let signatures = vec![Signature { key_id: key_id(ROOT), signature: bytes }];
        let proposal = now(Command::AddKey { spec: publisher_spec(PUBLISHER), signatures });
        check(&trust(), proposal, Expect::Rejected("SIGNATURE_INVALID"));
    }
}

#[test]
fn add_key_without_signatures_is_refused() {
    check(
        &trust(),
        now(Command::AddKey { spec: publisher_spec(PUBLISHER), signatures: vec![] }),
        Expect::Rejected("SIGNATURE_THRESHOLD_NOT_MET"),
    );
}

#[test]
fn add_key_with_too_many_signatures_is_refused() {
    let signers = vec![ROOT; SIGNATURES_PER_REQUEST_MAX + 1];
    check(
        &trust(),
        now(add_key(publisher_spec(PUBLISHER), &signers)),
        Expect::Rejected("LIMIT_EXCEEDED SIGNATURES_PER_REQUEST_MAX"),
    );
}

#[test]
fn add_key_counts_the_valid_signature_among_invalid_ones() {
    let Checked { result, .. } = check(
        &[now(bootstrap(&[ROOT, ROOT2]))],
        now(add_key(publisher_spec(PUBLISHER), &[STRANGER, ROOT2, ROOT2])),
        Expect::Events(vec![EventKind::KeyAdded { key_id: key_id(PUBLISHER) }]),
    );
    let Outcome::KeyAdded { key, .. } = applied(result).outcome else { panic!("wrong outcome") };
    assert_eq!(key.signed_by, vec![key_id(ROOT2)], "each valid key counts once; invalid ones not at all");
}

#[test]
fn add_key_with_root_purpose_is_refused() {
    check(&trust(), now(add_key(root_spec(ROOT2), &[ROOT])), Expect::Rejected("FIELD_INVALID spec.purposes"));
    let mixed = key_spec(ROOT2, &[KeyPurpose::Root, KeyPurpose::EnginePublisher]);
    check(&trust(), now(add_key(mixed, &[ROOT])), Expect::Rejected("FIELD_INVALID spec.purposes"));
}

#[test]
fn add_key_without_purposes_is_refused() {
    check(&trust(), now(add_key(key_spec(PUBLISHER, &[]), &[ROOT])), Expect::Rejected("FIELD_REQUIRED spec.purposes"));
}

#[test]
fn add_key_with_an_invalid_public_key_is_refused() {
    let spec = KeySpec { public_key: invalid_public_key(), ..publisher_spec(PUBLISHER) };
    check(&trust(), now(add_key(spec, &[ROOT])), Expect::Rejected("FIELD_INVALID spec.public_key"));
}

#[test]
fn add_key_with_a_small_order_public_key_is_refused() {
    // The identity point (y = 1) decodes, but no signature by it ever verifies.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let spec = KeySpec { public_key: identity, ..publisher_spec(PUBLISHER) };
    check(&trust(), now(add_key(spec, &[ROOT])), Expect::Rejected("FIELD_INVALID spec.public_key"));
    let root_keys = vec![KeySpec { public_key: identity, ..root_spec(ROOT) }];
    check(&[], now(Command::BootstrapTrust { root_keys }), Expect::Rejected("FIELD_INVALID spec.public_key"));
}

#[test]
fn add_key_with_an_empty_validity_window_is_refused() {
    let spec = with_window(publisher_spec(PUBLISHER), T0_MS, Some(T0_MS - 1));
    check(&trust(), now(add_key(spec, &[ROOT])), Expect::Rejected("KEY_VALIDITY_INVALID"));
}

#[test]
fn add_key_again_with_the_same_spec_is_idempotent() {
    let Checked { result, .. } =
        check(&trust_and_publisher(), now(add_key(publisher_spec(PUBLISHER), &[ROOT])), Expect::NoChange);
    let Outcome::KeyAdded { key, created } = applied(result).outcome else { panic!("wrong outcome") };
    assert!(!created);
    assert_eq!(key.create_revision, 2, "the replay answers with the original key");
}

#[test]
fn add_key_again_with_other_attributes_is_refused() {
    let changed = with_window(publisher_spec(PUBLISHER), 0, Some(T0_MS * 2));
    check(&trust_and_publisher(), now(add_key(changed, &[ROOT])), Expect::Rejected("KEY_ALREADY_EXISTS"));
    let more_purposes = key_spec(PUBLISHER, &[KeyPurpose::EnginePublisher, KeyPurpose::ApiToken]);
    check(&trust_and_publisher(), now(add_key(more_purposes, &[ROOT])), Expect::Rejected("KEY_ALREADY_EXISTS"));
}

#[test]
fn add_key_over_keys_per_role_is_refused() {
    // Setup entries must all apply, so the setup itself shows the last key
    // within the limit is accepted.
    let mut setup = trust();
    let seeds: Vec<u8> = (100u8..).take(KEYS_PER_ROLE_MAX + 1).collect();
    let (within, over) = seeds.split_at(KEYS_PER_ROLE_MAX);
    setup.extend(within.iter().map(|&seed| now(add_key(publisher_spec(seed), &[ROOT]))));
    check(&setup, now(add_key(publisher_spec(over[0]), &[ROOT])), Expect::Rejected("LIMIT_EXCEEDED KEYS_PER_ROLE_MAX"));
    // Other roles are counted separately.
    check(
        &setup,
        now(add_key(key_spec(over[0], &[KeyPurpose::ApiToken]), &[ROOT])),
        Expect::Events(vec![EventKind::KeyAdded { key_id: key_id(over[0]) }]),
    );
}

// ---------------------------------------------------------------- publish

#[test]
fn publish_stores_the_canonical_manifest() {
    let bytes = manifest("echo", "1.0.0");
    let Checked { state, result } = check_publish(bytes.clone(), Expect::Events(vec![published("echo", "1.0.0")]));
    let Outcome::EngineVersionPublished { version, created } = applied(result).outcome else { panic!("wrong outcome") };
    assert!(created);
    let canonical = serde_json_canonicalizer::to_vec(&manifest_value("echo", "1.0.0")).expect("canonicalises");
    assert_eq!(version.manifest, canonical);
    assert_eq!(version.manifest_sha256, hex::encode(Sha256::digest(&canonical)));
    assert_eq!((version.publish_revision, version.publish_time_ms), (3, T0_MS));
    assert_eq!(version.description, "Echoes its input.");
    assert_eq!(version.signatures, vec![sign_manifest(&bytes, PUBLISHER)]);
    assert_eq!(state.registry().get(&name("echo"), None), Some(&*version));
    assert_eq!((state.registry().engine_count(), state.registry().version_count()), (1, 1));
}

#[test]
fn publish_of_a_new_version_adds_it_beside_the_old_one() {
    let mut setup = trust_and_publisher();
    setup.push(now(publish(manifest("echo", "1.0.0"), PUBLISHER)));
    let Checked { state, .. } = check(
        &setup,
        now(publish(manifest("echo", "1.1.0-beta.1"), PUBLISHER)),
        Expect::Events(vec![published("echo", "1.1.0-beta.1")]),
    );
    assert_eq!(state.registry().version_count(), 2);
    let latest = state.registry().get(&name("echo"), None).expect("has versions");
    assert_eq!(latest.version.to_string(), "1.1.0-beta.1");
}

#[test]
fn publish_keeps_only_the_signatures_that_verified() {
    // A valid publisher signature carries the publish; the others (an unknown
    // key, a repeat, a known publisher's bad bytes, a root) must not be
    // recorded as if those keys had signed.
    let mut setup = trust_and_publisher();
    setup.push(now(add_key(publisher_spec(PUBLISHER2), &[ROOT])));
    let bytes = manifest("echo", "1.0.0");
    let valid = sign_manifest(&bytes, PUBLISHER);
    let forged = Signature { key_id: key_id(PUBLISHER2), signature: valid.signature.clone() };
    let signatures = vec![
        sign_manifest(&bytes, STRANGER),
        forged,
        valid.clone(),
        sign_manifest(&bytes, ROOT),
        valid.clone(),
        sign_manifest(&bytes, PUBLISHER2),
    ];
    let proposal = now(Command::PublishEngineVersion { manifest: bytes.clone(), signatures });
    let Checked { state, .. } = check(&setup, proposal, Expect::Events(vec![published("echo", "1.0.0")]));
    let stored = state.registry().get(&name("echo"), None).expect("published");
    assert_eq!(stored.signatures, vec![valid, sign_manifest(&bytes, PUBLISHER2)]);
}

#[test]
fn publish_before_bootstrap_is_refused() {
    check(&[], now(publish(manifest("echo", "1.0.0"), PUBLISHER)), Expect::Rejected("TRUST_NOT_BOOTSTRAPPED"));
}

#[test]
fn publish_signed_by_an_unknown_key_is_refused() {
    check(&trust_and_publisher(), now(publish(manifest("echo", "1.0.0"), STRANGER)), Expect::Rejected("KEY_UNKNOWN"));
}

#[test]
fn publish_signed_by_a_key_without_publisher_purpose_is_refused() {
    let expected = Expect::Rejected("KEY_PURPOSE_MISMATCH ENGINE_PUBLISHER");
    check(&trust_and_publisher(), now(publish(manifest("echo", "1.0.0"), ROOT)), expected);
    let mut setup = trust();
    setup.push(now(add_key(key_spec(TOKEN, &[KeyPurpose::ApiToken]), &[ROOT])));
    let expected = Expect::Rejected("KEY_PURPOSE_MISMATCH ENGINE_PUBLISHER");
    check(&setup, now(publish(manifest("echo", "1.0.0"), TOKEN)), expected);
}

#[test]
fn publish_signed_by_an_expired_publisher_is_refused() {
    let publisher = with_window(publisher_spec(PUBLISHER), 0, Some(T0_MS + 100));
    let setup = [now(bootstrap(&[ROOT])), now(add_key(publisher, &[ROOT]))];
    check(
        &setup,
        at(T0_MS + 99, publish(manifest("echo", "1.0.0"), PUBLISHER)),
        Expect::Events(vec![published("echo", "1.0.0")]),
    );
    check(&setup, at(T0_MS + 100, publish(manifest("echo", "1.0.0"), PUBLISHER)), Expect::Rejected("KEY_EXPIRED"));
}

#[test]
fn publish_signed_by_a_publisher_not_yet_valid_is_refused() {
    let publisher = with_window(publisher_spec(PUBLISHER), T0_MS + 100, None);
    let setup = [now(bootstrap(&[ROOT])), now(add_key(publisher, &[ROOT]))];
    check(&setup, at(T0_MS + 99, publish(manifest("echo", "1.0.0"), PUBLISHER)), Expect::Rejected("KEY_NOT_YET_VALID"));
    check(
        &setup,
        at(T0_MS + 100, publish(manifest("echo", "1.0.0"), PUBLISHER)),
        Expect::Events(vec![published("echo", "1.0.0")]),
    );
}

#[test]
fn publish_of_other_bytes_than_were_signed_is_refused() {
    let signatures = vec![sign_manifest(&manifest("echo", "1.0.0"), PUBLISHER)];
    let tampered = manifest_with("description", json!("Echoes its input, and exfiltrates it."));
    let proposal = now(Command::PublishEngineVersion { manifest: tampered, signatures });
    check(&trust_and_publisher(), proposal, Expect::Rejected("SIGNATURE_INVALID"));
}

#[test]
fn publish_without_signatures_is_refused() {
    let proposal = now(Command::PublishEngineVersion { manifest: manifest("echo", "1.0.0"), signatures: vec![] });
    check(&trust_and_publisher(), proposal, Expect::Rejected("FIELD_REQUIRED signatures"));
}

#[test]
fn publish_of_the_identical_manifest_again_is_idempotent() {
    let mut setup = trust_and_publisher();
    setup.push(now(publish(manifest("echo", "1.0.0"), PUBLISHER)));
    let Checked { result, .. } =
        check(&setup, at(T0_MS + 5, publish(manifest("echo", "1.0.0"), PUBLISHER)), Expect::NoChange);
    let Outcome::EngineVersionPublished { version, created } = applied(result).outcome else { panic!("wrong outcome") };
    assert!(!created);
    assert_eq!((version.publish_revision, version.publish_time_ms), (3, T0_MS), "the original record");
}

#[test]
fn publish_of_the_same_canonical_json_formatted_differently_is_idempotent() {
    let mut setup = trust_and_publisher();
    setup.push(now(publish(manifest("echo", "1.0.0"), PUBLISHER)));
    // Keys in another order, pretty-printed, with an escaped character: same RFC 8785 form.
    let reordered = br#"{
        "capabilities": ["net.none"],
        "data_classes": ["public"],
        "actions": [{"output_schema": true, "input_schema": {"type": "object"},
                     "description": "Returns the input.", "name": "echo"}],
        "dependencies": [ ],
        "description": "Echoes its input\u002e",
        "tier": "standard",
        "version": "1.0.0",
        "name": "echo"
    }"#
    .to_vec();
    assert_ne!(reordered, manifest("echo", "1.0.0"));
    check(&setup, now(publish(reordered, PUBLISHER)), Expect::NoChange);
}

#[test]
fn publish_of_different_content_under_a_published_version_is_refused() {
    let mut setup = trust_and_publisher();
    setup.push(now(publish(manifest("echo", "1.0.0"), PUBLISHER)));
    let other = manifest_with("description", json!("A different build."));
    check(&setup, now(publish(other, PUBLISHER)), Expect::Rejected("VERSION_ALREADY_PUBLISHED"));
}

#[test]
fn publish_checks_the_signature_before_idempotency() {
    // A replay must still be signed by a currently valid publisher.
    let mut setup = trust_and_publisher();
    setup.push(now(publish(manifest("echo", "1.0.0"), PUBLISHER)));
    check(&setup, now(publish(manifest("echo", "1.0.0"), STRANGER)), Expect::Rejected("KEY_UNKNOWN"));
}

#[test]
fn publish_with_an_invalid_version_is_refused() {
    for version in ["1.0", "v1.0.0", "1.0.0.0", "01.0.0", " 1.0.0", "latest"] {
        check_publish(manifest("echo", version), Expect::Rejected("VERSION_INVALID manifest.version"));
    }
    check_publish(manifest("echo", ""), Expect::Rejected("FIELD_REQUIRED manifest.version"));
    check_publish(manifest_with("version", json!(1)), Expect::Rejected("MANIFEST_MALFORMED"));
}

#[test]
fn publish_with_build_metadata_is_refused() {
    check_publish(manifest("echo", "1.0.0+build.7"), Expect::Rejected("VERSION_INVALID manifest.version"));
    check_publish(manifest("echo", "1.0.0-rc.1+sha.abc"), Expect::Rejected("VERSION_INVALID manifest.version"));
}

#[test]
fn publish_of_an_oversized_manifest_is_refused() {
    // Valid JSON padded with whitespace: the limit applies to the bytes as sent.
    let mut bytes = manifest("echo", "1.0.0");
    let padding = MANIFEST_BYTES_MAX - bytes.len();
    bytes.splice(1..1, std::iter::repeat_n(b' ', padding));
    assert_eq!(bytes.len(), MANIFEST_BYTES_MAX);
    check_publish(bytes.clone(), Expect::Events(vec![published("echo", "1.0.0")]));
    bytes.insert(1, b' ');
    check_publish(bytes, Expect::Rejected("LIMIT_EXCEEDED MANIFEST_BYTES_MAX"));
}

#[test]
fn publish_with_a_name_over_the_limit_is_refused() {
    let at_limit = "e".repeat(NAME_BYTES_MAX);
    check_publish(manifest(&at_limit, "1.0.0"), Expect::Events(vec![published(&at_limit, "1.0.0")]));
    check_publish(
        manifest(&"e".repeat(NAME_BYTES_MAX + 1), "1.0.0"),
        Expect::Rejected("LIMIT_EXCEEDED NAME_BYTES_MAX"),
    );
}

#[test]
fn publish_with_an_invalid_name_is_refused() {
    check_publish(manifest("Echo", "1.0.0"), Expect::Rejected("FIELD_INVALID manifest.name"));
    check_publish(manifest("", "1.0.0"), Expect::Rejected("FIELD_REQUIRED manifest.name"));
    check_publish(manifest_with("name", json!(7)), Expect::Rejected("MANIFEST_MALFORMED"));
}

#[test]
fn publish_with_invalid_names_inside_is_refused() {
    let long = "a".repeat(NAME_BYTES_MAX + 1);
    let cases = [
        ("dependencies", json!([{"name": "Base", "requirement": "^1"}]), "FIELD_INVALID manifest.dependencies.name"),
        ("dependencies", json!([{"name": long, "requirement": "^1"}]), "LIMIT_EXCEEDED NAME_BYTES_MAX"),
        ("actions", json!([{"name": "has space"}]), "FIELD_INVALID manifest.actions.name"),
        ("actions", json!([{"name": ""}]), "FIELD_REQUIRED manifest.actions.name"),
        ("capabilities", json!(["net/raw"]), "FIELD_INVALID manifest.capabilities"),
        ("capabilities", json!([long]), "LIMIT_EXCEEDED NAME_BYTES_MAX"),
    ];
    for (field, value, expected) in cases {
        check_publish(manifest_with(field, value), Expect::Rejected(expected));
    }
}

#[test]
fn publish_with_a_description_over_the_limit_is_refused() {
    let at_limit = "d".repeat(DESCRIPTION_BYTES_MAX);
    check_publish(manifest_with("description", json!(at_limit)), Expect::Events(vec![published("echo", "1.0.0")]));
    let over = "d".repeat(DESCRIPTION_BYTES_MAX + 1);
    check_publish(manifest_with("description", json!(over)), Expect::Rejected("LIMIT_EXCEEDED DESCRIPTION_BYTES_MAX"));
    let action = json!([{"name": "echo", "description": over}]);
    check_publish(manifest_with("actions", action), Expect::Rejected("LIMIT_EXCEEDED DESCRIPTION_BYTES_MAX"));
}

#[test]
fn publish_of_malformed_json_is_refused() {
    let cases: [&[u8]; 6] = [b"{", b"not json", b"[]", b"null", b"{\"name\": \"echo\",}", b"\xff\xfe"];
    for bytes in cases {
        check_publish(bytes.to_vec(), Expect::Rejected("MANIFEST_MALFORMED"));
    }
    let mut trailing = manifest("echo", "1.0.0");
    trailing.extend_from_slice(b" {}");
    check_publish(trailing, Expect::Rejected("MANIFEST_MALFORMED"));
    check_publish(b"{\"s\": \"\\ud800\"}".to_vec(), Expect::Rejected("MANIFEST_MALFORMED"));
}

#[test]
fn publish_with_a_repeated_key_is_refused() {
    // Parsers disagree on which repeated value wins; the canonical form must not depend on it.
    let top_level = br#"{"name":"echo","version":"1.0.0","tier":"core","description":"a","description":"b"}"#;
    check_publish(top_level.to_vec(), Expect::Rejected("MANIFEST_MALFORMED"));
    let nested = br#"{"name":"echo","version":"1.0.0","tier":"core",
        "actions":[{"name":"run","input_schema":{"type":"object","type":"string"}}]}"#;
    check_publish(nested.to_vec(), Expect::Rejected("MANIFEST_MALFORMED"));
    let escaped = br#"{"name":"echo","version":"1.0.0","tier":"core","name":"echo"}"#;
    check_publish(escaped.to_vec(), Expect::Rejected("MANIFEST_MALFORMED"));
    // The same key in different objects is fine.
    let distinct = br#"{"name":"echo","version":"1.0.0","tier":"core",
        "actions":[{"name":"run","input_schema":{"name":{"name":"x"}}}]}"#;
    check_publish(distinct.to_vec(), Expect::Events(vec![published("echo", "1.0.0")]));
}

#[test]
fn publish_of_deeply_nested_json_is_refused_without_overflowing_the_stack() {
    let depth = 100_000;
    let schema = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let bytes = format!(
        r#"{{"name":"echo","version":"1.0.0","tier":"core","actions":[{{"name":"a","input_schema":{{"x":{schema}}}}}]}}"#
    );
    check_publish(bytes.into_bytes(), Expect::Rejected("MANIFEST_MALFORMED"));
}

#[test]
fn publish_of_a_manifest_whose_canonical_form_is_over_the_limit_is_refused() {
    // `1e20` is 4 bytes as sent and 21 canonical bytes (`100000000000000000000`).
    let numbers = vec![json!(1e20); MANIFEST_BYTES_MAX / 21 + 1];
    let bytes = manifest_with("actions", json!([{"name": "a", "input_schema": {"enum": numbers}}]));
    assert!(bytes.len() < MANIFEST_BYTES_MAX, "{} bytes as sent", bytes.len());
    check_publish(bytes, Expect::Rejected("LIMIT_EXCEEDED MANIFEST_BYTES_MAX"));
}

#[test]
fn publish_of_an_empty_manifest_is_refused() {
    check_publish(Vec::new(), Expect::Rejected("FIELD_REQUIRED manifest"));
}

#[test]
fn publish_without_required_fields_is_refused() {
    for field in ["name", "version", "tier"] {
        check_publish(manifest_without(field), Expect::Rejected("MANIFEST_MALFORMED"));
    }
}

#[test]
fn publish_without_optional_fields_is_accepted() {
    let minimal = json_bytes(&json!({"name": "echo", "version": "1.0.0", "tier": "core"}));
    check_publish(minimal, Expect::Events(vec![published("echo", "1.0.0")]));
}

#[test]
fn publish_with_unknown_fields_is_refused() {
    check_publish(manifest_with("homepage", json!("https://example.com")), Expect::Rejected("MANIFEST_MALFORMED"));
    let action = json!([{"name": "echo", "timeout_ms": 5}]);
    check_publish(manifest_with("actions", action), Expect::Rejected("MANIFEST_MALFORMED"));
    let dependency = json!([{"name": "base", "requirement": "^1", "optional": true}]);
    check_publish(manifest_with("dependencies", dependency), Expect::Rejected("MANIFEST_MALFORMED"));
}

#[test]
fn publish_with_unknown_enum_values_is_refused() {
    check_publish(manifest_with("tier", json!("platinum")), Expect::Rejected("MANIFEST_MALFORMED"));
    check_publish(manifest_with("data_classes", json!(["secret"])), Expect::Rejected("MANIFEST_MALFORMED"));
}

#[test]
fn publish_with_duplicate_actions_is_refused() {
    let actions = json!([{"name": "echo"}, {"name": "other"}, {"name": "echo"}]);
    check_publish(manifest_with("actions", actions), Expect::Rejected("FIELD_INVALID manifest.actions"));
}

#[test]
fn publish_with_a_schema_that_is_not_an_object_is_refused() {
    let actions = json!([{"name": "echo", "input_schema": "object"}]);
    check_publish(manifest_with("actions", actions), Expect::Rejected("ACTION_SCHEMA_INVALID input_schema"));
}

// ---------------------------------------------------------------- action schemas

/// A manifest whose only action carries these schemas.
fn manifest_with_schemas(input: serde_json::Value, output: serde_json::Value) -> Vec<u8> {
    manifest_with("actions", json!([{"name": "echo", "input_schema": input, "output_schema": output}]))
}

#[test]
fn publish_with_schemas_of_every_supported_draft_is_accepted() {
    for (uri, _) in keel_kernel::action_schema::SUPPORTED_DRAFTS {
        let input =
            json!({"$schema": uri, "type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}});
        check_publish(manifest_with_schemas(input, json!(true)), Expect::Events(vec![published("echo", "1.0.0")]));
    }
    let local_ref = json!({"$defs": {"n": {"type": "integer"}}, "properties": {"n": {"$ref": "#/$defs/n"}}});
    check_publish(manifest_with_schemas(json!(false), local_ref), Expect::Events(vec![published("echo", "1.0.0")]));
}

#[test]
fn publish_with_a_schema_that_breaks_its_meta_schema_is_refused() {
    let cases = [
        (json!({"type": "no-such-type"}), json!(true), "ACTION_SCHEMA_INVALID input_schema"),
        (json!(true), json!({"properties": {"n": {"minimum": "zero"}}}), "ACTION_SCHEMA_INVALID output_schema"),
        (json!({"required": "n"}), json!(true), "ACTION_SCHEMA_INVALID input_schema"),
        (json!(true), json!(17), "ACTION_SCHEMA_INVALID output_schema"),
    ];
    for (input, output, expected) in cases {
        check_publish(manifest_with_schemas(input, output), Expect::Rejected(expected));
    }
}

#[test]
fn publish_with_a_schema_that_does_not_compile_is_refused() {
    let bad_pattern = json!({"type": "string", "pattern": "(unclosed"});
    check_publish(
        manifest_with_schemas(bad_pattern, json!(true)),
        Expect::Rejected("ACTION_SCHEMA_INVALID input_schema"),
    );
}

#[test]
fn publish_with_a_schema_needing_io_is_refused() {
    for input in [
        json!({"$ref": "https://example.com/schemas/order.json"}),
        json!({"$ref": "file:///etc/passwd"}),
        json!({"$id": "https://example.com/a.json", "properties": {"x": {"$ref": "b.json"}}}),
        json!({"$schema": "https://example.com/custom-meta"}),
        json!({"$schema": "http://json-schema.org/draft-03/schema#"}),
    ] {
        check_publish(
            manifest_with_schemas(input, json!(true)),
            Expect::Rejected("ACTION_SCHEMA_INVALID input_schema"),
        );
    }
}

#[test]
fn a_schema_rejection_names_the_action_and_the_schema() {
    let checked = check_publish(
        manifest_with("actions", json!([{"name": "ok"}, {"name": "bad", "output_schema": {"type": 5}}])),
        Expect::Rejected("ACTION_SCHEMA_INVALID output_schema"),
    );
    let Err(Rejection::ActionSchemaInvalid { action, problem, .. }) = checked.result else { unreachable!() };
    assert_eq!(action, "bad");
    assert!(!problem.is_empty());
}

// ---------------------------------------------------------------- UI surfaces

fn ui_surface(name: &str, kind: &str, entry: &str) -> serde_json::Value {
    json!({"name": name, "kind": kind, "entry": entry, "description": format!("{name} {kind}")})
}

#[test]
fn publish_with_ui_surfaces_keeps_them_readable() {
    let ui = json!([
        ui_surface("invoices", "panel", "ui/invoices.html"),
        ui_surface("refund", "form", "https://console.example.com/refund"),
        {"name": "total", "kind": "widget", "entry": "widgets/total.js"},
    ]);
    let checked = check_publish(manifest_with("ui", ui), Expect::Events(vec![published("echo", "1.0.0")]));
    let stored = checked.state.registry().get(&name("echo"), None).expect("published");
    let surfaces = keel_kernel::manifest::ui_surfaces_of(&stored.manifest);
    let summary: Vec<(String, &str, String)> =
        surfaces.iter().map(|s| (s.name.to_string(), s.kind.as_str(), s.entry.clone())).collect();
    assert_eq!(
        summary,
        [
            ("invoices".to_owned(), "panel", "ui/invoices.html".to_owned()),
            ("refund".to_owned(), "form", "https://console.example.com/refund".to_owned()),
            ("total".to_owned(), "widget", "widgets/total.js".to_owned()),
        ]
    );
    assert_eq!(surfaces[2].description, "");
}

#[test]
fn publish_with_bad_ui_surfaces_is_refused() {
    let cases = [
        (json!([ui_surface("a", "panel", "../outside.html")]), "FIELD_INVALID manifest.ui.entry"),
        (json!([ui_surface("a", "panel", "javascript:alert(1)")]), "FIELD_INVALID manifest.ui.entry"),
        (json!([ui_surface("a", "panel", "http://example.com/a")]), "FIELD_INVALID manifest.ui.entry"),
        (json!([ui_surface("a", "panel", "")]), "FIELD_REQUIRED manifest.ui.entry"),
        (json!([ui_surface("a", "panel", &"x".repeat(UI_ENTRY_BYTES_MAX + 1))]), "LIMIT_EXCEEDED UI_ENTRY_BYTES_MAX"),
        (json!([ui_surface("a", "popup", "a.html")]), "MANIFEST_MALFORMED"),
        (json!([ui_surface("Has Space", "panel", "a.html")]), "FIELD_INVALID manifest.ui.name"),
        (json!([ui_surface("a", "panel", "a.html"), ui_surface("a", "form", "b.html")]), "FIELD_INVALID manifest.ui"),
        (json!([{"name": "a", "kind": "panel", "entry": "a.html", "icon": "x.png"}]), "MANIFEST_MALFORMED"),
        (
            json!([{"name": "a", "kind": "panel", "entry": "a.html", "description": "d".repeat(DESCRIPTION_BYTES_MAX + 1)}]),
            "LIMIT_EXCEEDED DESCRIPTION_BYTES_MAX",
        ),
        (json!({"name": "a"}), "MANIFEST_MALFORMED"),
    ];
    for (ui, expected) in cases {
        check_publish(manifest_with("ui", ui), Expect::Rejected(expected));
    }
}

#[test]
fn publish_with_too_many_ui_surfaces_is_refused() {
    let surfaces = |count: usize| {
        json!((0..count).map(|i| ui_surface(&format!("s{i}"), "widget", &format!("w/{i}.js"))).collect::<Vec<_>>())
    };
    check_publish(
        manifest_with("ui", surfaces(UI_SURFACES_PER_ENGINE_MAX)),
        Expect::Events(vec![published("echo", "1.0.0")]),
    );
    check_publish(
        manifest_with("ui", surfaces(UI_SURFACES_PER_ENGINE_MAX + 1)),
        Expect::Rejected("LIMIT_EXCEEDED UI_SURFACES_PER_ENGINE_MAX"),
    );
}

#[test]
fn publish_with_too_many_actions_is_refused() {
    let actions = |count: usize| json!((0..count).map(|i| json!({"name": format!("a{i}")})).collect::<Vec<_>>());
    check_publish(
        manifest_with("actions", actions(ACTIONS_PER_ENGINE_MAX)),
        Expect::Events(vec![published("echo", "1.0.0")]),
    );
    check_publish(
        manifest_with("actions", actions(ACTIONS_PER_ENGINE_MAX + 1)),
        Expect::Rejected("LIMIT_EXCEEDED ACTIONS_PER_ENGINE_MAX"),
    );
}

#[test]
fn publish_with_too_many_dependencies_is_refused() {
    let dependencies = |count: usize| {
        json!((0..count).map(|i| json!({"name": format!("d{i}"), "requirement": "^1"})).collect::<Vec<_>>())
    };
    check_publish(
        // Within the limit the manifest parses; then its dependencies are not published.
        manifest_with("dependencies", dependencies(DEPENDENCIES_PER_ENGINE_MAX)),
        Expect::Rejected("DEPENDENCY_UNRESOLVABLE"),
    );
    check_publish(
        manifest_with("dependencies", dependencies(DEPENDENCIES_PER_ENGINE_MAX + 1)),
        Expect::Rejected("LIMIT_EXCEEDED DEPENDENCIES_PER_ENGINE_MAX"),
    );
}

#[test]
fn publish_with_too_many_capabilities_is_refused() {
    let capabilities = |count: usize| json!((0..count).map(|i| format!("c{i}")).collect::<Vec<_>>());
    check_publish(
        manifest_with("capabilities", capabilities(CAPABILITIES_PER_ENGINE_MAX)),
        Expect::Events(vec![published("echo", "1.0.0")]),
    );
    check_publish(
        manifest_with("capabilities", capabilities(CAPABILITIES_PER_ENGINE_MAX + 1)),
        Expect::Rejected("LIMIT_EXCEEDED CAPABILITIES_PER_ENGINE_MAX"),
    );
}

#[test]
fn publish_with_a_bad_dependency_requirement_is_refused() {
    for requirement in ["", "not a range", "^1.x.y", ">>1"] {
        let dependencies = json!([{"name": "base", "requirement": requirement}]);
        check_publish(
            manifest_with("dependencies", dependencies),
            Expect::Rejected("VERSION_INVALID manifest.dependencies.requirement"),
        );
    }
}

#[test]
fn publish_with_a_self_or_repeated_dependency_is_refused() {
    let own = json!([{"name": "echo", "requirement": "^1"}]);
    check_publish(manifest_with("dependencies", own), Expect::Rejected("FIELD_INVALID manifest.dependencies"));
    let twice = json!([{"name": "base", "requirement": "^1"}, {"name": "base", "requirement": "^2"}]);
    check_publish(manifest_with("dependencies", twice), Expect::Rejected("FIELD_INVALID manifest.dependencies"));
}

#[test]
fn publish_with_too_many_signatures_is_refused() {
    let bytes = manifest("echo", "1.0.0");
    let signatures = vec![sign_manifest(&bytes, PUBLISHER); SIGNATURES_PER_REQUEST_MAX + 1];
    let proposal = now(Command::PublishEngineVersion { manifest: bytes, signatures });
    check(&trust_and_publisher(), proposal, Expect::Rejected("LIMIT_EXCEEDED SIGNATURES_PER_REQUEST_MAX"));
}

// ---------------------------------------------------------------- tenants

#[test]
fn tenant_create_stores_it() {
    let Checked { state, result } = check(
        &[],
        now(create_tenant("acme", "Acme Corp")),
        Expect::Events(vec![EventKind::TenantCreated { tenant_id: name("acme") }]),
    );
    let Outcome::TenantWritten { tenant } = applied(result).outcome else { panic!("wrong outcome") };
    assert_eq!(tenant.spec, tenant_spec("acme", "Acme Corp"));
    assert_eq!((tenant.create_revision, tenant.update_revision, tenant.etag()), (1, 1, "r1".to_owned()));
    assert_eq!((tenant.create_time_ms, tenant.update_time_ms), (T0_MS, T0_MS));
    assert_eq!(state.tenants().get(&name("acme")), Some(&tenant));
}

#[test]
fn tenant_create_of_an_existing_id_is_refused() {
    let setup = [now(create_tenant("acme", "Acme Corp"))];
    check(&setup, now(create_tenant("acme", "Acme Corp")), Expect::Rejected("TENANT_ALREADY_EXISTS"));
    check(&setup, now(create_tenant("acme", "Other")), Expect::Rejected("TENANT_ALREADY_EXISTS"));
}

#[test]
fn tenant_create_with_an_empty_display_name_is_refused() {
    check(&[], now(create_tenant("acme", "")), Expect::Rejected("FIELD_REQUIRED tenant.display_name"));
}

#[test]
fn tenant_create_with_a_display_name_over_the_limit_is_refused() {
    let over = "n".repeat(DESCRIPTION_BYTES_MAX + 1);
    check(&[], now(create_tenant("acme", &over)), Expect::Rejected("LIMIT_EXCEEDED DESCRIPTION_BYTES_MAX"));
}

#[test]
fn tenant_create_with_too_many_enabled_engines_is_refused() {
    let mut spec = tenant_spec("acme", "Acme Corp");
    spec.enabled_engines = (0..=ENABLED_ENGINES_PER_TENANT_MAX).map(|i| name(&format!("e{i}"))).collect();
    check(&[], now(Command::CreateTenant { spec }), Expect::Rejected("LIMIT_EXCEEDED ENABLED_ENGINES_PER_TENANT_MAX"));
}

#[test]
fn tenant_update_replaces_its_fields() {
    let setup = [now(create_tenant("acme", "Acme Corp"))];
    let Checked { result, .. } = check(
        &setup,
        at(T0_MS + 7, update_tenant("acme", "Acme Inc", None)),
        Expect::Events(vec![EventKind::TenantUpdated { tenant_id: name("acme") }]),
    );
    let Outcome::TenantWritten { tenant } = applied(result).outcome else { panic!("wrong outcome") };
    assert_eq!(tenant.spec.display_name, "Acme Inc");
    assert_eq!((tenant.create_revision, tenant.update_revision, tenant.etag()), (1, 2, "r2".to_owned()));
    assert_eq!((tenant.create_time_ms, tenant.update_time_ms), (T0_MS, T0_MS + 7));
}

#[test]
fn tenant_update_of_a_missing_tenant_is_refused() {
    check(&[], now(update_tenant("acme", "Acme Corp", None)), Expect::Rejected("TENANT_NOT_FOUND"));
    let setup = [now(create_tenant("acme", "Acme Corp"))];
    check(&setup, now(update_tenant("other", "Other", None)), Expect::Rejected("TENANT_NOT_FOUND"));
}

#[test]
fn tenant_update_with_the_current_etag_applies() {
    let setup = [now(create_tenant("acme", "Acme Corp")), now(update_tenant("acme", "Acme Inc", None))];
    check(
        &setup,
        now(update_tenant("acme", "Acme Ltd", Some("r2"))),
        Expect::Events(vec![EventKind::TenantUpdated { tenant_id: name("acme") }]),
    );
}

#[test]
fn tenant_update_with_a_stale_etag_is_refused() {
    let setup = [now(create_tenant("acme", "Acme Corp")), now(update_tenant("acme", "Acme Inc", None))];
    for stale in ["r1", "r3", "", "2"] {
        check(&setup, now(update_tenant("acme", "Acme Ltd", Some(stale))), Expect::Rejected("ETAG_MISMATCH"));
    }
}

#[test]
fn tenant_update_with_an_empty_display_name_is_refused() {
    let setup = [now(create_tenant("acme", "Acme Corp"))];
    check(&setup, now(update_tenant("acme", "", Some("r1"))), Expect::Rejected("FIELD_REQUIRED tenant.display_name"));
}

// ---------------------------------------------------------------- leader time

#[test]
fn an_earlier_leader_time_uses_the_previous_time() {
    let setup = [at(T0_MS, create_tenant("acme", "Acme Corp"))];
    let Checked { state, result } = check(
        &setup,
        at(T0_MS - 60_000, create_tenant("globex", "Globex")),
        Expect::Events(vec![EventKind::TenantCreated { tenant_id: name("globex") }]),
    );
    let Outcome::TenantWritten { tenant } = applied(result).outcome else { panic!("wrong outcome") };
    assert_eq!(tenant.create_time_ms, T0_MS);
    assert_eq!(state.clock_ms(), T0_MS);
}

#[test]
fn a_later_leader_time_moves_the_clock() {
    let setup = [at(T0_MS, create_tenant("acme", "Acme Corp"))];
    let Checked { state, .. } = check(
        &setup,
        at(T0_MS + 1, create_tenant("globex", "Globex")),
        Expect::Events(vec![EventKind::TenantCreated { tenant_id: name("globex") }]),
    );
    assert_eq!(state.clock_ms(), T0_MS + 1);
}

#[test]
fn key_validity_is_judged_at_the_monotonic_time() {
    // The root expires at T0 + 10. The tenant entry moved the clock to T0 + 20,
    // so a later entry stamped T0 (a leader with a slow clock) still sees the
    // root as expired.
    let root = with_window(root_spec(ROOT), 0, Some(T0_MS + 10));
    let setup =
        [at(T0_MS, Command::BootstrapTrust { root_keys: vec![root] }), at(T0_MS + 20, create_tenant("acme", "Acme"))];
    check(&setup, at(T0_MS, add_key(publisher_spec(PUBLISHER), &[ROOT])), Expect::Rejected("KEY_EXPIRED"));
}

#[test]
fn rejected_and_idempotent_entries_do_not_move_the_clock() {
    let setup = [at(T0_MS, create_tenant("acme", "Acme Corp")), at(T0_MS, bootstrap(&[ROOT]))];
    let Checked { state, .. } =
        check(&setup, at(T0_MS + 5, create_tenant("acme", "Again")), Expect::Rejected("TENANT_ALREADY_EXISTS"));
    assert_eq!(state.clock_ms(), T0_MS);
    let Checked { state, .. } = check(&setup, at(T0_MS + 5, bootstrap(&[ROOT])), Expect::NoChange);
    assert_eq!(state.clock_ms(), T0_MS);
}

// ---------------------------------------------------------------- dependencies and yanks

/// A manifest of `tier` depending on each (name, requirement).
fn manifest_depending(engine: &str, version: &str, tier: &str, dependencies: &[(&str, &str)]) -> Vec<u8> {
    let mut document = manifest_value(engine, version);
    document["tier"] = json!(tier);
    document["dependencies"] =
        json!(dependencies.iter().map(|(n, r)| json!({"name": n, "requirement": r})).collect::<Vec<_>>());
    json_bytes(&document)
}

/// Setup: trust and publisher, then each manifest published in order.
fn with_published(manifests: &[Vec<u8>]) -> Vec<Proposal> {
    let mut setup = trust_and_publisher();
    setup.extend(manifests.iter().map(|bytes| now(publish(bytes.clone(), PUBLISHER))));
    setup
}

fn yank(engine: &str, version: &str) -> Command {
    Command::YankEngineVersion { engine: name(engine), version: version.parse().expect("fixture versions parse") }
}

fn yanked(engine: &str, version: &str) -> EventKind {
    EventKind::EngineVersionYanked { engine: name(engine), version: version.to_owned() }
}

fn version(text: &str) -> semver::Version {
    text.parse().expect("fixture versions parse")
}

#[test]
fn publish_resolves_each_dependency_to_the_highest_matching_version() {
    let setup = with_published(&[
        manifest_depending("base", "1.2.0", "core", &[]),
        manifest_depending("base", "1.4.1", "core", &[]),
        manifest_depending("base", "2.0.0", "core", &[]),
    ]);
    let Checked { state, result } = check(
        &setup,
        now(publish(manifest_depending("echo", "1.0.0", "standard", &[("base", "^1.2")]), PUBLISHER)),
        Expect::Events(vec![published("echo", "1.0.0")]),
    );
    let Outcome::EngineVersionPublished { version: record, .. } = applied(result).outcome else { panic!("outcome") };
    assert_eq!(record.resolved_dependencies, vec![(name("base"), version("1.4.1"))]);
    assert!(!record.is_yanked);
    let graph = state.registry().resolved_graph(&name("echo"), &version("1.0.0")).expect("published");
    assert_eq!(graph, vec![(name("echo"), version("1.0.0")), (name("base"), version("1.4.1"))]);
}

#[test]
fn publish_with_an_unresolvable_requirement_is_refused() {
    // Nothing published under the name, and nothing matching the requirement.
    check_publish(
        manifest_depending("echo", "1.0.0", "standard", &[("base", "^1")]),
        Expect::Rejected("DEPENDENCY_UNRESOLVABLE"),
    );
    let setup = with_published(&[manifest_depending("base", "2.0.0", "core", &[])]);
    let Checked { result, .. } = check(
        &setup,
        now(publish(manifest_depending("echo", "1.0.0", "standard", &[("base", "^1")]), PUBLISHER)),
        Expect::Rejected("DEPENDENCY_UNRESOLVABLE"),
    );
    assert_eq!(
        result.expect_err("rejected"),
        Rejection::DependencyUnresolvable { engine: "base".into(), requirement: "^1".into() }
    );
}

#[test]
fn publish_depending_on_a_less_trusted_tier_is_refused() {
    let setup = with_published(&[manifest_depending("base", "1.0.0", "experimental", &[])]);
    let Checked { result, .. } = check(
        &setup,
        now(publish(manifest_depending("echo", "1.0.0", "critical", &[("base", "^1")]), PUBLISHER)),
        Expect::Rejected("DEPENDENCY_TIER_VIOLATION"),
    );
    assert_eq!(
        result.expect_err("rejected"),
        Rejection::DependencyTierViolation {
            engine: "echo".into(),
            tier: "critical".into(),
            dependency: "base".into(),
            dependency_tier: "experimental".into(),
        }
    );
}

#[test]
fn publish_depending_on_the_same_or_a_more_trusted_tier_is_accepted() {
    let setup = with_published(&[
        manifest_depending("core-lib", "1.0.0", "core", &[]),
        manifest_depending("std-lib", "1.0.0", "standard", &[("core-lib", "^1")]),
    ]);
    check(
        &setup,
        now(publish(
            manifest_depending("echo", "1.0.0", "standard", &[("std-lib", "^1"), ("core-lib", "*")]),
            PUBLISHER,
        )),
        Expect::Events(vec![published("echo", "1.0.0")]),
    );
}

#[test]
fn publish_closing_a_cycle_over_engine_names_is_refused() {
    // a@1 has no dependencies, b@1 depends on a; a@2 depending on b would make a -> b -> a.
    let setup = with_published(&[
        manifest_depending("a", "1.0.0", "core", &[]),
        manifest_depending("b", "1.0.0", "core", &[("a", "^1")]),
    ]);
    let Checked { result, .. } = check(
        &setup,
        now(publish(manifest_depending("a", "2.0.0", "core", &[("b", "^1")]), PUBLISHER)),
        Expect::Rejected("DEPENDENCY_CYCLE"),
    );
    assert_eq!(
        result.expect_err("rejected"),
        Rejection::DependencyCycle { path: vec!["a".into(), "b".into(), "a".into()] }
    );
}

#[test]
fn a_yanked_version_is_not_resolvable_for_new_dependants() {
    let setup = {
        let mut setup = with_published(&[
            manifest_depending("base", "1.0.0", "core", &[]),
            manifest_depending("base", "1.1.0", "core", &[]),
        ]);
        setup.push(now(yank("base", "1.1.0")));
        setup
    };
    // The highest unyanked match is chosen...
    let Checked { result, .. } = check(
        &setup,
        now(publish(manifest_depending("echo", "1.0.0", "core", &[("base", "^1")]), PUBLISHER)),
        Expect::Events(vec![published("echo", "1.0.0")]),
    );
    let Outcome::EngineVersionPublished { version: record, .. } = applied(result).outcome else { panic!("outcome") };
    assert_eq!(record.resolved_dependencies, vec![(name("base"), version("1.0.0"))]);
    // ...and a requirement only the yanked version matches does not resolve.
    check(
        &setup,
        now(publish(manifest_depending("echo", "1.0.0", "core", &[("base", "=1.1.0")]), PUBLISHER)),
        Expect::Rejected("DEPENDENCY_UNRESOLVABLE"),
    );
}

#[test]
fn yank_marks_the_version_and_keeps_it_readable() {
    let setup = with_published(&[manifest_depending("base", "1.0.0", "core", &[])]);
    let Checked { state, result } =
        check(&setup, now(yank("base", "1.0.0")), Expect::Events(vec![yanked("base", "1.0.0")]));
    let Outcome::EngineVersionYanked { version: record, created } = applied(result).outcome else { panic!("outcome") };
    assert!(created && record.is_yanked);
    assert_eq!(state.registry().get(&name("base"), Some(&version("1.0.0"))), Some(&*record));
}

#[test]
fn yank_again_is_idempotent() {
    let mut setup = with_published(&[manifest_depending("base", "1.0.0", "core", &[])]);
    setup.push(now(yank("base", "1.0.0")));
    check(&setup, now(yank("base", "1.0.0")), Expect::NoChange);
}

#[test]
fn yank_of_an_unknown_version_is_refused() {
    let setup = with_published(&[manifest_depending("base", "1.0.0", "core", &[])]);
    check(&setup, now(yank("base", "1.0.1")), Expect::Rejected("ENGINE_VERSION_NOT_FOUND"));
    check(&setup, now(yank("other", "1.0.0")), Expect::Rejected("ENGINE_VERSION_NOT_FOUND"));
}

#[test]
fn dependants_are_transitive_and_include_yanked_versions() {
    let mut setup = with_published(&[
        manifest_depending("base", "1.0.0", "core", &[]),
        manifest_depending("mid", "1.0.0", "core", &[("base", "^1")]),
        manifest_depending("top", "1.0.0", "standard", &[("mid", "^1")]),
        manifest_depending("lone", "1.0.0", "standard", &[]),
    ]);
    setup.push(now(yank("top", "1.0.0")));
    let Checked { state, .. } = check(
        &setup,
        now(publish(manifest_depending("side", "1.0.0", "standard", &[("base", "^1")]), PUBLISHER)),
        Expect::Events(vec![published("side", "1.0.0")]),
    );
    let names = |list: &[&str]| list.iter().map(|n| name(n)).collect::<std::collections::BTreeSet<_>>();
    assert_eq!(state.registry().dependants(&name("base")), names(&["mid", "side", "top"]));
    assert_eq!(state.registry().dependants(&name("mid")), names(&["top"]));
    assert_eq!(state.registry().dependants(&name("lone")), names(&[]));
    let graph = state.registry().resolved_graph(&name("top"), &version("1.0.0")).expect("published");
    assert_eq!(
        graph,
        vec![(name("top"), version("1.0.0")), (name("base"), version("1.0.0")), (name("mid"), version("1.0.0"))]
    );
    assert_eq!(state.registry().resolved_graph(&name("top"), &version("9.0.0")), None);
}

// ---------------------------------------------------------------- root rotation and revocation

/// Setup: ROOT bootstrapped, PUBLISHER added, root rotated to ROOT2 (version 2).
fn rotated_to_root2() -> Vec<Proposal> {
    let mut setup = trust_and_publisher();
    setup.push(now(rotate_root(&root_document(2, &[ROOT2], 1, &[PUBLISHER]), &[ROOT, ROOT2])));
    setup
}

fn threshold_side(checked: &Checked) -> String {
    match &checked.result {
        Err(Rejection::SignatureThresholdNotMet { required_purpose, .. }) => required_purpose.to_string(),
        other => panic!("expected a threshold refusal, got {other:?}"),
    }
}

#[test]
fn bootstrap_creates_root_metadata_version_1() {
    let checked = check(
        &[],
        now(bootstrap(&[ROOT, ROOT2])),
        Expect::Events(vec![EventKind::TrustBootstrapped { root_key_ids: vec![key_id(ROOT), key_id(ROOT2)] }]),
    );
    let root = checked.state.trust().root();
    assert_eq!(root.version, 1);
    let root_role = root.role(keel_kernel::trust_store::Role::Root);
    assert_eq!(root_role.threshold, 1);
    assert_eq!(root_role.key_ids, [key_id(ROOT), key_id(ROOT2)].into_iter().collect());
}

#[test]
fn add_key_joins_the_role_of_its_purpose() {
    let checked = check(
        &trust(),
        now(add_key(publisher_spec(PUBLISHER), &[ROOT])),
        Expect::Events(vec![EventKind::KeyAdded { key_id: key_id(PUBLISHER) }]),
    );
    let role = checked.state.trust().root().role(keel_kernel::trust_store::Role::EnginePublisher);
    assert!(role.key_ids.contains(&key_id(PUBLISHER)));
}

#[test]
fn rotate_root_signed_by_old_and_new_roots_moves_to_the_next_version() {
    let document = root_document(2, &[ROOT2], 1, &[PUBLISHER]);
    let checked = check(
        &trust_and_publisher(),
        now(rotate_root(&document, &[ROOT, ROOT2])),
        Expect::Events(vec![EventKind::RootRotated { version: 2 }]),
    );
    let trust = checked.state.trust();
    assert_eq!(trust.root().version, 2);
    assert!(trust.get(&key_id(ROOT2)).is_some(), "the new root key is stored");
}

#[test]
fn after_rotation_the_new_root_admits_keys_and_the_old_one_does_not() {
    check(
        &rotated_to_root2(),
        now(add_key(publisher_spec(PUBLISHER2), &[ROOT2])),
        Expect::Events(vec![EventKind::KeyAdded { key_id: key_id(PUBLISHER2) }]),
    );
    check(
        &rotated_to_root2(),
        now(add_key(publisher_spec(PUBLISHER2), &[ROOT])),
        Expect::Rejected("KEY_PURPOSE_MISMATCH ROOT"),
    );
}

#[test]
fn rotate_root_skipping_a_version_is_refused() {
    let document = root_document(3, &[ROOT2], 1, &[PUBLISHER]);
    check(
        &trust_and_publisher(),
        now(rotate_root(&document, &[ROOT, ROOT2])),
        Expect::Rejected("ROOT_VERSION_INVALID"),
    );
}

#[test]
fn rotate_root_to_the_same_version_is_refused() {
    let document = root_document(1, &[ROOT2], 1, &[PUBLISHER]);
    check(
        &trust_and_publisher(),
        now(rotate_root(&document, &[ROOT, ROOT2])),
        Expect::Rejected("ROOT_VERSION_INVALID"),
    );
}

#[test]
fn rotate_root_without_the_current_roots_signature_is_refused() {
    let document = root_document(2, &[ROOT2], 1, &[PUBLISHER]);
    let checked = check(
        &trust_and_publisher(),
        now(rotate_root(&document, &[ROOT2])),
        Expect::Rejected("SIGNATURE_THRESHOLD_NOT_MET"),
    );
    assert!(threshold_side(&checked).contains("version 1"), "names the current side");
}

#[test]
fn rotate_root_without_the_new_roots_signature_is_refused() {
    let document = root_document(2, &[ROOT2], 1, &[PUBLISHER]);
    let checked = check(
        &trust_and_publisher(),
        now(rotate_root(&document, &[ROOT])),
        Expect::Rejected("SIGNATURE_THRESHOLD_NOT_MET"),
    );
    assert!(threshold_side(&checked).contains("version 2"), "names the new side");
}

#[test]
fn rotate_root_with_too_few_current_root_signatures_is_refused() {
    // Version 2 needs two of {ROOT, ROOT2}; version 3 signed by only one of them falls short.
    let mut setup = vec![now(bootstrap(&[ROOT]))];
    setup.push(now(rotate_root(&root_document(2, &[ROOT, ROOT2], 2, &[]), &[ROOT, ROOT2])));
    let document = root_document(3, &[ROOT2], 1, &[]);
    let checked = check(&setup, now(rotate_root(&document, &[ROOT2])), Expect::Rejected("SIGNATURE_THRESHOLD_NOT_MET"));
    assert!(threshold_side(&checked).contains("version 2"));
}

#[test]
fn rotate_root_signed_by_a_non_root_key_is_refused() {
    let document = root_document(2, &[ROOT2], 1, &[PUBLISHER]);
    check(
        &trust_and_publisher(),
        now(rotate_root(&document, &[PUBLISHER, ROOT2])),
        Expect::Rejected("SIGNATURE_THRESHOLD_NOT_MET"),
    );
}

#[test]
fn rotate_root_with_a_threshold_above_its_keys_is_refused() {
    let document = root_document(2, &[ROOT2], 2, &[PUBLISHER]);
    check(
        &trust_and_publisher(),
        now(rotate_root(&document, &[ROOT, ROOT2])),
        Expect::Rejected("FIELD_INVALID metadata.roles.root.threshold"),
    );
}

#[test]
fn rotate_root_with_a_zero_threshold_is_refused() {
    let document = root_document(2, &[ROOT2], 0, &[PUBLISHER]);
    check(
        &trust_and_publisher(),
        now(rotate_root(&document, &[ROOT, ROOT2])),
        Expect::Rejected("FIELD_INVALID metadata.roles.root.threshold"),
    );
}

#[test]
fn rotate_root_naming_an_unknown_publisher_is_refused() {
    let document = root_document(2, &[ROOT2], 1, &[PUBLISHER2]);
    check(&trust_and_publisher(), now(rotate_root(&document, &[ROOT, ROOT2])), Expect::Rejected("KEY_UNKNOWN"));
}

#[test]
fn rotate_root_with_root_ids_not_matching_its_keys_is_refused() {
    let mut document = root_document(2, &[ROOT2], 1, &[PUBLISHER]);
    document["roles"]["root"]["key_ids"] = json!([key_id(ROOT)]);
    check(
        &trust_and_publisher(),
        now(rotate_root(&document, &[ROOT, ROOT2])),
        Expect::Rejected("FIELD_INVALID metadata.roles.root.key_ids"),
    );
}

#[test]
fn rotate_root_with_too_many_keys_in_a_role_is_refused() {
    let mut document = root_document(2, &[ROOT2], 1, &[PUBLISHER]);
    let ids: Vec<String> = (0..=KEYS_PER_ROLE_MAX).map(|n| format!("{n:032x}")).collect();
    document["roles"]["api-token"]["key_ids"] = json!(ids);
    check(
        &trust_and_publisher(),
        now(rotate_root(&document, &[ROOT, ROOT2])),
        Expect::Rejected("LIMIT_EXCEEDED KEYS_PER_ROLE_MAX"),
    );
}

#[test]
fn rotate_root_with_an_expired_new_root_is_refused() {
    let mut document = root_document(2, &[ROOT2], 1, &[PUBLISHER]);
    document["root_keys"][0]["not_after_ms"] = json!(T0_MS);
    document["root_keys"][0]["not_before_ms"] = json!(T0_MS - 1);
    check(
        &trust_and_publisher(),
        now(rotate_root(&document, &[ROOT, ROOT2])),
        Expect::Rejected("SIGNATURE_THRESHOLD_NOT_MET"),
    );
}

#[test]
fn revoke_key_records_the_revision() {
    let checked = check(
        &trust_and_publisher(),
        now(revoke(PUBLISHER, &[ROOT])),
        Expect::Events(vec![EventKind::KeyRevoked { key_id: key_id(PUBLISHER) }]),
    );
    let key = checked.state.trust().get(&key_id(PUBLISHER)).expect("still listed");
    assert_eq!(key.revoked_at_revision, Some(3));
}

#[test]
fn revoke_key_twice_is_idempotent() {
    let mut setup = trust_and_publisher();
    setup.push(now(revoke(PUBLISHER, &[ROOT])));
    check(&setup, now(revoke(PUBLISHER, &[ROOT])), Expect::NoChange);
}

#[test]
fn a_revoked_key_can_no_longer_publish() {
    let mut setup = trust_and_publisher();
    setup.push(now(revoke(PUBLISHER, &[ROOT])));
    check(&setup, now(publish(manifest("echo", "1.0.0"), PUBLISHER)), Expect::Rejected("KEY_REVOKED"));
}

#[test]
fn a_revoked_root_can_no_longer_admit_keys() {
    let mut setup = vec![now(bootstrap(&[ROOT, ROOT2]))];
    setup.push(now(revoke(ROOT2, &[ROOT])));
    check(&setup, now(add_key(publisher_spec(PUBLISHER), &[ROOT2])), Expect::Rejected("KEY_REVOKED"));
}

#[test]
fn revoking_the_last_root_key_is_refused() {
    check(&trust(), now(revoke(ROOT, &[ROOT])), Expect::Rejected("FIELD_INVALID key_id"));
}

#[test]
fn revoke_key_without_root_signature_is_refused() {
    check(&trust_and_publisher(), now(revoke(PUBLISHER, &[PUBLISHER])), Expect::Rejected("KEY_PURPOSE_MISMATCH ROOT"));
}

#[test]
fn revoke_of_an_unknown_key_is_refused() {
    check(&trust_and_publisher(), now(revoke(STRANGER, &[ROOT])), Expect::Rejected("KEY_UNKNOWN"));
}

#[test]
fn rotate_root_keeping_a_revoked_publisher_is_refused() {
    let mut setup = trust_and_publisher();
    setup.push(now(revoke(PUBLISHER, &[ROOT])));
    let document = root_document(2, &[ROOT2], 1, &[PUBLISHER]);
    check(&setup, now(rotate_root(&document, &[ROOT, ROOT2])), Expect::Rejected("KEY_REVOKED"));
}

// ---------------------------------------------------------------- trust: bad input at every role

/// Setup: ROOT bootstrapped with ROOT2 rotated in beside it (threshold 1),
/// PUBLISHER added.
fn two_roots_and_publisher() -> Vec<Proposal> {
    let mut setup = trust_and_publisher();
    setup.push(now(rotate_root(&root_document(2, &[ROOT, ROOT2], 1, &[PUBLISHER]), &[ROOT, ROOT2])));
    setup
}

#[test]
fn rotate_root_signed_by_a_revoked_current_root_is_refused() {
    let mut setup = two_roots_and_publisher();
    setup.push(now(revoke(ROOT2, &[ROOT])));
    let document = root_document(3, &[ROOT2], 1, &[PUBLISHER]);
    // ROOT2 is revoked: as a current signer it does not count, and it cannot be a new root either.
    check(&setup, now(rotate_root(&document, &[ROOT2])), Expect::Rejected("KEY_REVOKED"));
    let document = root_document(3, &[STRANGER], 1, &[PUBLISHER]);
    let checked =
        check(&setup, now(rotate_root(&document, &[ROOT2, STRANGER])), Expect::Rejected("SIGNATURE_THRESHOLD_NOT_MET"));
    assert!(threshold_side(&checked).contains("version 2"), "the current side falls short");
}

#[test]
fn rotate_root_signed_by_an_expired_or_not_yet_valid_current_root_is_refused() {
    let windowed = |not_before_ms, not_after_ms| {
        vec![at(
            T0_MS,
            Command::BootstrapTrust { root_keys: vec![with_window(root_spec(ROOT), not_before_ms, not_after_ms)] },
        )]
    };
    let document = root_document(2, &[ROOT2], 1, &[]);
    let expired = windowed(0, Some(T0_MS + 10));
    check(
        &expired,
        at(T0_MS + 10, rotate_root(&document, &[ROOT, ROOT2])),
        Expect::Rejected("SIGNATURE_THRESHOLD_NOT_MET"),
    );
    let not_yet = windowed(T0_MS + 1_000, None);
    check(&not_yet, at(T0_MS, rotate_root(&document, &[ROOT, ROOT2])), Expect::Rejected("SIGNATURE_THRESHOLD_NOT_MET"));
    // Inside the window it applies.
    check(
        &not_yet,
        at(T0_MS + 1_000, rotate_root(&document, &[ROOT, ROOT2])),
        Expect::Events(vec![EventKind::RootRotated { version: 2 }]),
    );
}

#[test]
fn rotate_root_with_a_new_root_not_yet_valid_is_refused() {
    let mut document = root_document(2, &[ROOT2], 1, &[PUBLISHER]);
    document["root_keys"][0]["not_before_ms"] = json!(T0_MS + 1);
    let checked = check(
        &trust_and_publisher(),
        now(rotate_root(&document, &[ROOT, ROOT2])),
        Expect::Rejected("SIGNATURE_THRESHOLD_NOT_MET"),
    );
    assert!(threshold_side(&checked).contains("version 2"), "the new side falls short");
}

#[test]
fn rotate_root_signed_twice_by_one_key_counts_it_once() {
    let mut setup = vec![now(bootstrap(&[ROOT]))];
    setup.push(now(rotate_root(&root_document(2, &[ROOT, ROOT2], 2, &[]), &[ROOT, ROOT2])));
    let document = root_document(3, &[ROOT2], 1, &[]);
    check(&setup, now(rotate_root(&document, &[ROOT2, ROOT2])), Expect::Rejected("SIGNATURE_THRESHOLD_NOT_MET"));
    check(
        &setup,
        now(rotate_root(&document, &[ROOT, ROOT2])),
        Expect::Events(vec![EventKind::RootRotated { version: 3 }]),
    );
}

#[test]
fn rotate_root_signed_by_an_api_token_key_is_refused() {
    let mut setup = trust_and_publisher();
    setup.push(now(add_key(key_spec(TOKEN, &[KeyPurpose::ApiToken]), &[ROOT])));
    let document = root_document(2, &[ROOT2], 1, &[PUBLISHER]);
    check(&setup, now(rotate_root(&document, &[TOKEN, ROOT2])), Expect::Rejected("SIGNATURE_THRESHOLD_NOT_MET"));
}

#[test]
fn revoke_signed_by_an_expired_or_not_yet_valid_root_is_refused() {
    let windowed = |not_before_ms, not_after_ms| {
        vec![
            at(
                T0_MS,
                Command::BootstrapTrust {
                    root_keys: vec![root_spec(ROOT2), with_window(root_spec(ROOT), not_before_ms, not_after_ms)],
                },
            ),
            at(T0_MS, add_key(publisher_spec(PUBLISHER), &[ROOT2])),
        ]
    };
    check(&windowed(0, Some(T0_MS + 10)), at(T0_MS + 10, revoke(PUBLISHER, &[ROOT])), Expect::Rejected("KEY_EXPIRED"));
    check(&windowed(T0_MS + 10, None), at(T0_MS, revoke(PUBLISHER, &[ROOT])), Expect::Rejected("KEY_NOT_YET_VALID"));
}

#[test]
fn revoke_signed_by_a_revoked_root_is_refused() {
    let mut setup = vec![now(bootstrap(&[ROOT, ROOT2])), now(add_key(publisher_spec(PUBLISHER), &[ROOT]))];
    setup.push(now(revoke(ROOT2, &[ROOT])));
    check(&setup, now(revoke(PUBLISHER, &[ROOT2])), Expect::Rejected("KEY_REVOKED"));
}

#[test]
fn revoke_within_a_higher_root_threshold_needs_that_many_signatures() {
    let mut setup = trust_and_publisher();
    setup.push(now(rotate_root(&root_document(2, &[ROOT, ROOT2], 2, &[PUBLISHER]), &[ROOT, ROOT2])));
    check(&setup, now(revoke(PUBLISHER, &[ROOT])), Expect::Rejected("SIGNATURE_THRESHOLD_NOT_MET"));
    // A 2-of-2 root cannot lose a key to revocation: it would lock the root out.
    check(&setup, now(revoke(ROOT2, &[ROOT, ROOT2])), Expect::Rejected("FIELD_INVALID key_id"));
    check(
        &setup,
        now(revoke(PUBLISHER, &[ROOT, ROOT2])),
        Expect::Events(vec![EventKind::KeyRevoked { key_id: key_id(PUBLISHER) }]),
    );
}

#[test]
fn a_publisher_threshold_above_one_needs_that_many_publisher_signatures() {
    let mut setup = trust_and_publisher();
    setup.push(now(add_key(publisher_spec(PUBLISHER2), &[ROOT])));
    let mut document = root_document(2, &[ROOT], 1, &[PUBLISHER, PUBLISHER2]);
    document["roles"]["engine-publisher"]["threshold"] = json!(2);
    setup.push(now(rotate_root(&document, &[ROOT])));
    let bytes = manifest("echo", "1.0.0");
    check(&setup, now(publish(bytes.clone(), PUBLISHER)), Expect::Rejected("SIGNATURE_THRESHOLD_NOT_MET"));
    let both = vec![sign_manifest(&bytes, PUBLISHER), sign_manifest(&bytes, PUBLISHER2)];
    let checked = check(
        &setup,
        now(Command::PublishEngineVersion { manifest: bytes, signatures: both }),
        Expect::Events(vec![published("echo", "1.0.0")]),
    );
    let stored = checked.state.registry().get(&name("echo"), None).expect("published");
    assert_eq!(stored.signatures.len(), 2);
}

#[test]
fn a_publisher_dropped_from_its_role_by_rotation_signs_nothing() {
    let document = root_document(2, &[ROOT], 1, &[]);
    let mut setup = trust_and_publisher();
    setup.push(now(publish(manifest("echo", "1.0.0"), PUBLISHER)));
    setup.push(now(rotate_root(&document, &[ROOT])));
    check(
        &setup,
        now(publish(manifest("echo", "1.0.1"), PUBLISHER)),
        Expect::Rejected("KEY_PURPOSE_MISMATCH ENGINE_PUBLISHER"),
    );
    // What it published before stays.
    let checked = check(&setup, now(yank("echo", "1.0.0")), Expect::Events(vec![yanked("echo", "1.0.0")]));
    assert!(checked.state.registry().get(&name("echo"), Some(&version("1.0.0"))).is_some());
}

#[test]
fn a_manifest_published_before_its_key_expires_stays_published() {
    let setup = vec![
        now(bootstrap(&[ROOT])),
        now(add_key(with_window(publisher_spec(PUBLISHER), 0, Some(T0_MS + 10)), &[ROOT])),
        now(publish(manifest("echo", "1.0.0"), PUBLISHER)),
    ];
    let checked =
        check(&setup, at(T0_MS + 10, publish(manifest("echo", "1.0.1"), PUBLISHER)), Expect::Rejected("KEY_EXPIRED"));
    let stored = checked.state.registry().get(&name("echo"), Some(&version("1.0.0"))).expect("still published");
    assert_eq!(stored.signatures[0].key_id, key_id(PUBLISHER));
}

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
