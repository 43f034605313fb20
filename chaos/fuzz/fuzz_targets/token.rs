//! Capability tokens: `token::verify` on arbitrary text against a trust
//! store holding one API-token key, with the input's header pointed at that
//! key half the time (so the signature and claim paths are reached): it
//! returns a `Principal` or a `TokenError`, never panics.
#![no_main]

use keel_kernel::KernelState;
use keel_kernel::command::{Command, Proposal};
use keel_kernel::trust_store::{KeyPurpose, KeySpec};
use libfuzzer_sys::fuzz_target;

const AUDIENCE: &str = "keel-fuzz";

fn with_api_key() -> (KernelState, String) {
    let public_key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key().to_bytes();
    let spec = KeySpec {
        public_key,
        purposes: [KeyPurpose::Root, KeyPurpose::ApiToken].into_iter().collect(),
        not_before_ms: 0,
        not_after_ms: None,
    };
    let key_id = spec.key_id();
    let mut state = KernelState::default();
    let proposal = Proposal {
        leader_time_ms: 1_000,
        semantics_version: keel_kernel::judge::SEMANTICS_VERSION,
        command: Command::BootstrapTrust { root_keys: vec![spec], api_token_keys: vec![] },
        idempotency_key: None,
        actor: None,
    };
    assert!(state.apply(1, &proposal).is_ok(), "bootstrap");
    (state, key_id)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (state, key_id) = with_api_key();
    let _ = keel_kernel::token::verify(text, state.trust(), AUDIENCE, 1_700_000_000_000);
    // The same body under a header naming the trust store's key.
    let header = format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{key_id}"}}"#);
    let encoded = base64url(header.as_bytes());
    let rest = text.split_once('.').map_or(text, |(_, rest)| rest);
    let _ = keel_kernel::token::verify(&format!("{encoded}.{rest}"), state.trust(), AUDIENCE, 1_700_000_000_000);
});

/// Unpadded base64url, as JWT segments are.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}
