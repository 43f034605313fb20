//! Root rotation and revocation, and bad input at every trust role.

use super::dependencies::{version, yank, yanked};
use super::*;

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
            Command::BootstrapTrust {
                root_keys: vec![with_window(root_spec(ROOT), not_before_ms, not_after_ms)],
                api_token_keys: vec![],
            },
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
                    api_token_keys: vec![],
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
