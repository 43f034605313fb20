//! Capability tokens: one pure verification against the trust store at a
//! revision and a time. Tokens are built here with jsonwebtoken's encoder
//! (what `keelctl token issue` will use) from the fixture's keys.

#[path = "fixture/mod.rs"]
mod fixture;

use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use fixture::*;
use keel_kernel::token::{Claims, TokenError, verify};
use keel_kernel::trust_store::KeyPurpose;
use keel_kernel::{Command, KernelState, Proposal, Rejection};

const AUD: &str = "keel-test-cluster";
const ROOT: u8 = 1;
const API: u8 = 20;
const PUBLISHER: u8 = 30;
const T0_S: u64 = T0_MS / 1000;

fn state() -> KernelState {
    let mut state = KernelState::default();
    let steps = [
        bootstrap(&[ROOT]),
        add_key(key_spec(API, &[KeyPurpose::ApiToken]), &[ROOT]),
        add_key(publisher_spec(PUBLISHER), &[ROOT]),
    ];
    for (revision, command) in (1..).zip(steps) {
        state.apply(revision, &now(command)).expect("setup applies");
    }
    state
}

fn claims() -> Claims {
    Claims {
        sub: "alice".into(),
        tenant: Some("acme".into()),
        permissions: vec!["tenant.read".into(), "tenant.write".into()],
        iat: T0_S,
        nbf: T0_S,
        exp: T0_S + 3600,
        jti: "t-1".into(),
        aud: AUD.into(),
    }
}

fn issue(seed: u8, kid: &str, claims: &Claims) -> String {
    let der = signing_key(seed).to_pkcs8_der().expect("pkcs8");
    let key = jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes());
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).expect("token encodes")
}

#[test]
fn a_token_signed_by_an_api_token_key_verifies_to_its_principal() {
    let state = state();
    let token = issue(API, &key_id(API), &claims());
    let principal = verify(&token, state.trust(), AUD, T0_MS + 1).expect("valid");
    assert_eq!(principal.actor.sub, "alice");
    assert_eq!(principal.actor.tenant.as_ref().map(|t| t.as_str()), Some("acme"));
    assert!(principal.permissions.contains("tenant.write"));
    assert_eq!(principal.actor.exp_ms, (T0_S + 3600) * 1000);
    assert_eq!(principal.actor.key_id, key_id(API));
}

#[test]
fn every_refusal_has_its_own_reason() {
    let state = state();
    let trust = state.trust();
    let at = T0_MS + 1;
    let reason = |token: &str, at_ms: u64| verify(token, trust, AUD, at_ms).map(|_| ()).map_err(|e| e.reason());
    let good = issue(API, &key_id(API), &claims());

    assert_eq!(reason(&good, (T0_S + 3600) * 1000), Err("TOKEN_EXPIRED"));
    assert_eq!(reason(&good, T0_MS - 1), Err("TOKEN_NOT_YET_VALID"));
    assert_eq!(
        verify(&good, trust, "another-cluster", at).map_err(|e| e.reason()).err(),
        Some("TOKEN_AUDIENCE_MISMATCH")
    );
    // Signed by a key the trust store holds for another purpose, or does not hold.
    assert_eq!(reason(&issue(PUBLISHER, &key_id(PUBLISHER), &claims()), at), Err("TOKEN_KEY_PURPOSE_MISMATCH"));
    assert_eq!(reason(&issue(99, &key_id(99), &claims()), at), Err("TOKEN_KEY_UNKNOWN"));
    // Signed by another key than the one it names.
    assert_eq!(reason(&issue(PUBLISHER, &key_id(API), &claims()), at), Err("TOKEN_SIGNATURE_INVALID"));
    // A tampered payload.
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged = issue(API, &key_id(API), &Claims { sub: "mallory".into(), ..claims() });
    let forged_payload = forged.split('.').nth(1).unwrap_or_default().to_owned();
    parts[1] = &forged_payload;
    assert_eq!(reason(&parts.join("."), at), Err("TOKEN_SIGNATURE_INVALID"));

    let long = Claims { exp: T0_S + 24 * 3600 + 1, ..claims() };
    assert_eq!(reason(&issue(API, &key_id(API), &long), at), Err("TOKEN_LIFETIME_TOO_LONG"));
    let many = Claims { permissions: (0..101).map(|i| format!("p{i}")).collect(), ..claims() };
    assert_eq!(reason(&issue(API, &key_id(API), &many), at), Err("TOKEN_TOO_MANY_PERMISSIONS"));
    let bad_tenant = Claims { tenant: Some("Not A Name".into()), ..claims() };
    assert_eq!(reason(&issue(API, &key_id(API), &bad_tenant), at), Err("TOKEN_MALFORMED"));
    assert_eq!(reason(&"x".repeat(9 * 1024), at), Err("TOKEN_TOO_LARGE"));
    for garbage in ["", "a.b", "a.b.c", "....", "eyJhbGciOiJub25lIn0.e30."] {
        assert_eq!(reason(garbage, at), Err("TOKEN_MALFORMED"), "{garbage:?}");
    }
}

#[test]
fn revoking_the_signing_key_voids_its_tokens() {
    let mut state = state();
    let token = issue(API, &key_id(API), &claims());
    assert!(verify(&token, state.trust(), AUD, T0_MS + 1).is_ok());
    state.apply(4, &now(revoke(API, &[ROOT]))).expect("revocation applies");
    assert!(matches!(verify(&token, state.trust(), AUD, T0_MS + 1), Err(TokenError::KeyRevoked { .. })));
}

fn actor_of(token: &str, state: &KernelState) -> keel_kernel::token::Actor {
    verify(token, state.trust(), AUD, T0_MS + 1).expect("valid").actor
}

fn revoke_token(jti: &str, exp_ms: u64) -> Command {
    Command::RevokeToken { jti: jti.to_owned(), exp_ms }
}

fn label_of(result: Result<keel_kernel::Applied, Rejection>) -> String {
    result.err().map(|rejection| rejection.reason().to_owned()).unwrap_or_else(|| "applied".to_owned())
}

#[test]
fn a_revoked_jti_is_refused_by_verify_and_by_apply_until_its_expiry() {
    let mut state = state();
    let token = issue(API, &key_id(API), &claims());
    let actor = actor_of(&token, &state);
    let exp_ms = actor.exp_ms;
    let applied = state.apply(4, &at(T0_MS + 10, revoke_token("t-1", exp_ms))).expect("revocation applies");
    assert_eq!(applied.events.len(), 1);
    assert!(matches!(verify(&token, state.trust(), AUD, T0_MS + 20), Err(TokenError::Revoked { .. })));
    // A write proposed with the token before the revocation applied is refused when it applies.
    let before = state.digest();
    let write = Proposal { actor: Some(actor), ..at(T0_MS + 20, create_tenant("acme", "Acme")) };
    assert_eq!(label_of(state.apply(5, &write)), "TOKEN_REVOKED");
    assert_eq!(state.digest(), before, "a refused entry changes nothing");
    // The list forgets the id once the token has expired anyway.
    state.apply(6, &at(exp_ms, create_tenant("later", "Later"))).expect("applies");
    assert!(state.trust().revoked_tokens().is_empty());
}

#[test]
fn apply_rechecks_the_actor_key_expiry_and_tenant_scope() {
    let mut state = state();
    let actor = actor_of(&issue(API, &key_id(API), &claims()), &state);
    let with = |time_ms: u64, command: Command| Proposal { actor: Some(actor.clone()), ..at(time_ms, command) };
    // Scoped to acme: its own tenant only, and nothing cluster-wide.
    assert_eq!(label_of(state.apply(4, &with(T0_MS + 10, create_tenant("beta", "Beta")))), "TENANT_OUT_OF_SCOPE");
    let policy = Command::PutPolicy { name: name("main"), source: String::new(), expected_version: None };
    assert_eq!(label_of(state.apply(4, &with(T0_MS + 10, policy))), "TENANT_OUT_OF_SCOPE");
    assert_eq!(label_of(state.apply(4, &with(T0_MS + 10, revoke_token("x", T0_MS + 99)))), "TENANT_OUT_OF_SCOPE");
    // Its own tenant: applied, and the event says who caused it.
    let applied = state.apply(4, &with(T0_MS + 10, create_tenant("acme", "Acme"))).expect("in scope");
    assert_eq!(applied.events[0].caused_by.as_deref(), Some("alice"));
    let event = Command::PublishEvent { topic: name("deploys"), tenant: None, engine: None, payload: vec![] };
    assert_eq!(label_of(state.apply(5, &with(T0_MS + 11, event))), "TENANT_OUT_OF_SCOPE");
    // Expired by the entry's time.
    assert_eq!(label_of(state.apply(5, &with(actor.exp_ms, create_tenant("acme", "X")))), "TOKEN_EXPIRED");
    // Its key revoked in between.
    state.apply(5, &at(T0_MS + 12, revoke(API, &[ROOT]))).expect("key revocation applies");
    assert_eq!(label_of(state.apply(6, &with(T0_MS + 13, update_tenant("acme", "Y", None)))), "TOKEN_KEY_REVOKED");
}

#[test]
fn revocations_are_bounded_and_checked() {
    let mut state = state();
    let far = T0_MS + 3 * keel_kernel::limits::TOKEN_LIFETIME_MS_MAX;
    assert_eq!(label_of(state.apply(4, &at(T0_MS, revoke_token("t", far)))), "FIELD_INVALID");
    assert_eq!(label_of(state.apply(4, &at(T0_MS, revoke_token("", T0_MS + 1)))), "FIELD_REQUIRED");
    let long = "j".repeat(keel_kernel::limits::TOKEN_CLAIM_BYTES_MAX + 1);
    assert_eq!(label_of(state.apply(4, &at(T0_MS, revoke_token(&long, T0_MS + 1)))), "LIMIT_EXCEEDED");
    // Revoking twice changes nothing the second time.
    let first = state.apply(4, &at(T0_MS, revoke_token("t", T0_MS + 1_000))).expect("applies");
    let again = state.apply(5, &at(T0_MS, revoke_token("t", T0_MS + 1_000))).expect("applies");
    assert_eq!((first.events.len(), again.events.len()), (1, 0));
}

#[test]
fn a_wildcard_grants_everything_to_cluster_tokens_only() {
    let state = state();
    let mut admin = claims();
    admin.tenant = None;
    admin.permissions = vec!["*".into()];
    let principal = verify(&issue(API, &key_id(API), &admin), state.trust(), AUD, T0_MS + 1).expect("valid");
    assert!(principal.may("cluster.admin"));
    let mut scoped = admin.clone();
    scoped.tenant = Some("acme".into());
    let principal = verify(&issue(API, &key_id(API), &scoped), state.trust(), AUD, T0_MS + 1).expect("valid");
    assert!(!principal.may("tenant.read"));
}

#[test]
fn api_token_keys_installed_at_bootstrap_sign_the_first_tokens() {
    let mut state = KernelState::default();
    let api = key_spec(API, &[KeyPurpose::ApiToken]);
    let bootstrap = Command::BootstrapTrust { root_keys: vec![root_spec(ROOT)], api_token_keys: vec![api.clone()] };
    let applied = state.apply(1, &now(bootstrap)).expect("bootstrap applies");
    assert_eq!(applied.events.len(), 2, "TRUST_BOOTSTRAPPED and KEY_ADDED");
    let token = issue(API, &key_id(API), &claims());
    assert!(verify(&token, state.trust(), AUD, T0_MS + 1).is_ok());
    // The same bootstrap again changes nothing; another one is refused.
    let again = Command::BootstrapTrust { root_keys: vec![root_spec(ROOT)], api_token_keys: vec![api] };
    assert!(state.apply(2, &now(again)).expect("replay").events.is_empty());
    // An API-token key may hold no other purpose, and no key is listed twice.
    for api_token_keys in [
        vec![key_spec(API, &[KeyPurpose::ApiToken, KeyPurpose::EnginePublisher])],
        vec![key_spec(ROOT, &[KeyPurpose::ApiToken])],
    ] {
        let mut fresh = KernelState::default();
        let command = Command::BootstrapTrust { root_keys: vec![root_spec(ROOT)], api_token_keys };
        assert_eq!(label_of(fresh.apply(1, &now(command))), "FIELD_INVALID");
    }
}

#[test]
fn a_key_signs_tokens_only_while_it_fills_the_api_token_role_at_threshold_one() {
    let token = issue(API, &key_id(API), &claims());
    let rotated = |api_ids: Vec<String>, threshold: u32| {
        let mut state = state();
        let mut document = root_document(2, &[ROOT], 1, &[PUBLISHER]);
        document["roles"]["api-token"] = serde_json::json!({"key_ids": api_ids, "threshold": threshold});
        state.apply(4, &now(rotate_root(&document, &[ROOT]))).expect("rotation applies");
        state
    };
    // Dropped from the role by a rotation: its tokens are refused.
    let dropped = rotated(vec![], 1);
    assert!(matches!(verify(&token, dropped.trust(), AUD, T0_MS + 1), Err(TokenError::KeyNotForTokens { .. })));
    // Still in the role, but the role wants two signatures.
    let second = 21;
    let mut state = state();
    state.apply(4, &now(add_key(key_spec(second, &[KeyPurpose::ApiToken]), &[ROOT]))).expect("second api key");
    let mut document = root_document(2, &[ROOT], 1, &[PUBLISHER]);
    document["roles"]["api-token"] = serde_json::json!({"key_ids": [key_id(API), key_id(second)], "threshold": 2});
    state.apply(5, &now(rotate_root(&document, &[ROOT]))).expect("rotation applies");
    assert_eq!(verify(&token, state.trust(), AUD, T0_MS + 1), Err(TokenError::ThresholdNotMet { threshold: 2 }));
    // Kept in the role at threshold one: still valid.
    let kept = rotated(vec![key_id(API)], 1);
    assert!(verify(&token, kept.trust(), AUD, T0_MS + 1).is_ok());
}
