//! Capability tokens: one pure verification against the trust store at a
//! revision and a time. Tokens are built here with jsonwebtoken's encoder
//! (what `keelctl token issue` will use) from the fixture's keys.

#[path = "fixture/mod.rs"]
mod fixture;

use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use fixture::*;
use keel_kernel::KernelState;
use keel_kernel::token::{Claims, TokenError, verify};
use keel_kernel::trust_store::KeyPurpose;

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
    assert_eq!(principal.sub, "alice");
    assert_eq!(principal.tenant.as_ref().map(|t| t.as_str()), Some("acme"));
    assert!(principal.permissions.contains("tenant.write"));
    assert_eq!(principal.exp_ms, (T0_S + 3600) * 1000);
    assert_eq!(principal.key_id, key_id(API));
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
