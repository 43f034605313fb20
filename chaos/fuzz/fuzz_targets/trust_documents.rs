//! Root metadata (rotation) documents and revocations, parsed and applied
//! to a bootstrapped trust store: refusals change nothing.
#![no_main]

use keel_kernel::KernelState;
use keel_kernel::command::{Command, Proposal};
use keel_kernel::signing::Signature;
use keel_kernel::trust_store::{KeyPurpose, KeySpec, RootMetadataDocument};
use libfuzzer_sys::fuzz_target;

fn bootstrapped() -> KernelState {
    let public_key = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]).verifying_key().to_bytes();
    let root = KeySpec {
        public_key,
        purposes: [KeyPurpose::Root].into_iter().collect(),
        not_before_ms: 0,
        not_after_ms: None,
    };
    let mut state = KernelState::default();
    let proposal = Proposal {
        leader_time_ms: 1_000,
        semantics_version: keel_kernel::judge::SEMANTICS_VERSION,
        command: Command::BootstrapTrust { root_keys: vec![root], api_token_keys: vec![] },
        idempotency_key: None,
        actor: None,
    };
    assert!(state.apply(1, &proposal).is_ok(), "bootstrap");
    state
}

fuzz_target!(|data: &[u8]| {
    let _ = RootMetadataDocument::parse(data);
    let mut state = bootstrapped();
    let digest = state.digest();
    let split = data.len() / 2;
    let signature = Signature { key_id: hex_id(&data[..split.min(16)]), signature: data[split..].to_vec() };
    for command in [
        Command::RotateRoot { metadata: data.to_vec(), signatures: vec![signature.clone()] },
        Command::RevokeKey {
            key_id: String::from_utf8_lossy(&data[..split]).into_owned(),
            signatures: vec![signature],
        },
    ] {
        let proposal = Proposal {
            leader_time_ms: 2_000,
            semantics_version: keel_kernel::judge::SEMANTICS_VERSION,
            command,
            idempotency_key: None,
            actor: None,
        };
        if state.apply(2, &proposal).is_err() {
            assert_eq!(state.digest(), digest, "a refused trust change changed the state");
        }
    }
});

fn hex_id(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
