//! Signing payloads and signature checks.
//!
//! Every signed object is signed over a domain-separated payload: a fixed
//! prefix naming what is signed, then RFC 8785 (JCS) canonical JSON. The
//! prefix stops a signature made for one kind of object from verifying as
//! another. Clients in any language rebuild the same bytes from the rules in
//! `proto/keel/v1/*.proto`.

use crate::rejection::Rejection;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of a key's signing payload.
pub const KEY_PAYLOAD_PREFIX: &[u8] = b"keel/v1/key\n";
/// Prefix of a manifest's signing payload.
pub const MANIFEST_PAYLOAD_PREFIX: &[u8] = b"keel/v1/manifest\n";
/// Prefix of root metadata's signing payload.
pub const ROOT_PAYLOAD_PREFIX: &[u8] = b"keel/v1/root\n";
/// Prefix of a key revocation's signing payload.
pub const REVOKE_PAYLOAD_PREFIX: &[u8] = b"keel/v1/revoke\n";
/// Bytes of a key id before hex encoding.
pub const KEY_ID_BYTES: usize = 16;

/// A detached Ed25519 signature by a key named by its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Lowercase hex key id (see [`key_id_of`]).
    pub key_id: String,
    /// The 64 signature bytes.
    // Bytes, not a sequence of u8: the same bincode, encoded and decoded as one copy.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// The id of a public key: lowercase hex of the first [`KEY_ID_BYTES`] bytes of SHA-256(key).
pub fn key_id_of(public_key: &[u8; 32]) -> String {
    let hash = Sha256::digest(public_key);
    hex::encode(&hash[..KEY_ID_BYTES])
}

/// `prefix` followed by `canonical`.
pub fn payload(prefix: &[u8], canonical: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(prefix.len() + canonical.len());
    bytes.extend_from_slice(prefix);
    bytes.extend_from_slice(canonical);
    bytes
}

/// Verifies one signature with `verify_strict` (rejects malleable and
/// small-order encodings). Any malformed input is a failed verification.
pub fn verify(public_key: &[u8; 32], message: &[u8], signature: &Signature) -> Result<(), Rejection> {
    let invalid = || Rejection::SignatureInvalid { key_id: signature.key_id.clone() };
    let key = ed25519_dalek::VerifyingKey::from_bytes(public_key).map_err(|_| invalid())?;
    let bytes: [u8; 64] = signature.signature.as_slice().try_into().map_err(|_| invalid())?;
    let sig = ed25519_dalek::Signature::from_bytes(&bytes);
    key.verify_strict(message, &sig).map_err(|_| invalid())
}

/// RFC 8785 canonical JSON of any serialisable value.
///
/// Total: the canonicaliser is third-party code on `apply`'s path (number
/// formatting, string escaping), so a panic inside it is caught and becomes
/// a deterministic rejection rather than a member that crashes on every replay.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, Rejection> {
    let canonical = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serde_json_canonicalizer::to_vec(value)));
    match canonical {
        Ok(canonical) => canonical.map_err(|error| Rejection::ManifestMalformed { detail: error.to_string() }),
        Err(payload) => Err(Rejection::EvaluationAborted {
            evaluator: "canonical_json".into(),
            failure: crate::judge::AbortCause::Panic.name().into(),
            detail: crate::policy::program::truncate(crate::judge::panic_message(payload.as_ref())),
        }),
    }
}
