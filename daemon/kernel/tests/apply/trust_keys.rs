//! Bootstrap and AddKey.

use super::*;

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
        now(Command::BootstrapTrust { root_keys: vec![changed], api_token_keys: vec![] }),
        Expect::Rejected("TRUST_ALREADY_BOOTSTRAPPED"),
    );
}

#[test]
fn bootstrap_without_keys_is_refused() {
    check(
        &[],
        now(Command::BootstrapTrust { root_keys: vec![], api_token_keys: vec![] }),
        Expect::Rejected("FIELD_REQUIRED root_keys"),
    );
}

#[test]
fn bootstrap_with_a_non_root_key_is_refused() {
    let root_keys = vec![root_spec(ROOT), publisher_spec(PUBLISHER)];
    check(
        &[],
        now(Command::BootstrapTrust { root_keys, api_token_keys: vec![] }),
        Expect::Rejected("FIELD_INVALID root_keys.purposes"),
    );
}

#[test]
fn bootstrap_with_a_key_without_purposes_is_refused() {
    let root_keys = vec![key_spec(ROOT, &[])];
    check(
        &[],
        now(Command::BootstrapTrust { root_keys, api_token_keys: vec![] }),
        Expect::Rejected("FIELD_REQUIRED spec.purposes"),
    );
}

#[test]
fn bootstrap_with_an_invalid_public_key_is_refused() {
    let root_keys = vec![KeySpec { public_key: invalid_public_key(), ..root_spec(ROOT) }];
    check(
        &[],
        now(Command::BootstrapTrust { root_keys, api_token_keys: vec![] }),
        Expect::Rejected("FIELD_INVALID spec.public_key"),
    );
}

#[test]
fn bootstrap_with_an_empty_validity_window_is_refused() {
    let root_keys = vec![with_window(root_spec(ROOT), 10, Some(10))];
    check(
        &[],
        now(Command::BootstrapTrust { root_keys, api_token_keys: vec![] }),
        Expect::Rejected("KEY_VALIDITY_INVALID"),
    );
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
        now(Command::BootstrapTrust { root_keys: same_key_two_specs, api_token_keys: vec![] }),
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
    let setup = [at(T0_MS - 10, Command::BootstrapTrust { root_keys: vec![root], api_token_keys: vec![] })];
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
    let setup = [at(T0_MS - 10, Command::BootstrapTrust { root_keys: vec![root], api_token_keys: vec![] })];
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
    for bytes in [vec![], vec![0; 63], vec![0; 64]] {
        let signatures = vec![Signature { key_id: key_id(ROOT), signature: bytes }];
        let proposal = now(Command::AddKey { spec: publisher_spec(PUBLISHER), signatures });
        check(&trust(), proposal, Expect::Rejected("SIGNATURE_INVALID"));
    }
    // Longer than any Ed25519 signature: refused by its limit, whatever it says.
    for bytes in [vec![0; 65], vec![7; 4 * 1024 * 1024]] {
        let signatures = vec![Signature { key_id: key_id(ROOT), signature: bytes }];
        let proposal = now(Command::AddKey { spec: publisher_spec(PUBLISHER), signatures });
        check(&trust(), proposal, Expect::Rejected("LIMIT_EXCEEDED SIGNATURE_BYTES_MAX"));
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
    check(
        &[],
        now(Command::BootstrapTrust { root_keys, api_token_keys: vec![] }),
        Expect::Rejected("FIELD_INVALID spec.public_key"),
    );
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
