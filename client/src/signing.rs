//! Signing payloads, rebuilt byte for byte as the server verifies them.
//!
//! Every signed object is signed over a domain-separated payload: a fixed
//! prefix naming what is signed, then RFC 8785 (JCS) canonical JSON. The
//! prefix stops a signature made for one kind of object from verifying as
//! another. These rules are part of the public API (see the comments in
//! `proto/keel/v1/trust.proto` and `registry.proto`); this module follows
//! them without depending on the server's code, as a client in any other
//! language would.
//!
//! ```text
//!   manifest JSON ──parse──▶ Value ──JCS──▶ canonical ──"keel/v1/manifest\n"+──▶ payload ──Ed25519──▶ signature
//!   KeySpec ──{key_id, public_key, purposes, not_before_ms, not_after_ms}──JCS──▶ "keel/v1/key\n"+ … ──▶ payload
//!   key id ──{key_id}──JCS──▶ "keel/v1/revoke\n"+ … ──▶ payload
//!   root metadata JSON ──JCS──▶ "keel/v1/root\n"+ … ──▶ payload
//! ```

use crate::limits::MANIFEST_BYTES_MAX;
use crate::local_error::LocalError;
use keel_proto::v1 as pb;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Prefix of a key's signing payload.
pub const KEY_PAYLOAD_PREFIX: &[u8] = b"keel/v1/key\n";
/// Prefix of a key revocation's signing payload.
pub const REVOKE_PAYLOAD_PREFIX: &[u8] = b"keel/v1/revoke\n";
/// Prefix of a root metadata document's signing payload.
pub const ROOT_PAYLOAD_PREFIX: &[u8] = b"keel/v1/root\n";
/// Prefix of a manifest's signing payload.
pub const MANIFEST_PAYLOAD_PREFIX: &[u8] = b"keel/v1/manifest\n";
/// Bytes of a key id before hex encoding.
pub const KEY_ID_BYTES: usize = 16;
/// Bytes of a raw Ed25519 public key.
pub const PUBLIC_KEY_BYTES: usize = 32;
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;

/// The id of a public key: lowercase hex of the first [`KEY_ID_BYTES`] bytes
/// of SHA-256 over the raw 32-byte key.
pub fn key_id_of(public_key: &[u8; PUBLIC_KEY_BYTES]) -> String {
    let hash = Sha256::digest(public_key);
    hex::encode(&hash[..KEY_ID_BYTES])
}

/// RFC 8785 canonical JSON of any serialisable value. `what` names the value
/// in the error.
pub fn canonical_json<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, LocalError> {
    serde_json_canonicalizer::to_vec(value)
        .map_err(|error| LocalError::CanonicalizeFailed { what: what.to_owned(), detail: error.to_string() })
}

/// `prefix` followed by `canonical`.
pub fn payload(prefix: &[u8], canonical: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(prefix.len() + canonical.len());
    bytes.extend_from_slice(prefix);
    bytes.extend_from_slice(canonical);
    bytes
}

/// The JSON object a key's signing payload canonicalises. Field order here
/// does not matter: JCS sorts object keys.
#[derive(Serialize)]
struct KeyPayload<'a> {
    key_id: &'a str,
    public_key: String,
    purposes: Vec<&'static str>,
    not_before_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_after_ms: Option<u64>,
}

/// The bytes a root key signs to admit a key: `"keel/v1/key\n"` + JCS of
/// `{"key_id", "public_key" (lowercase hex), "purposes" (names, in the
/// server's enum order ROOT < ENGINE_PUBLISHER < API_TOKEN, deduplicated),
/// "not_before_ms", "not_after_ms" (omitted when `None`)}`.
///
/// Refuses `KEY_PURPOSE_UNSPECIFIED`, which has no name the server signs.
pub fn key_payload(
    public_key: &[u8; PUBLIC_KEY_BYTES],
    purposes: &[pb::KeyPurpose],
    not_before_ms: u64,
    not_after_ms: Option<u64>,
) -> Result<Vec<u8>, LocalError> {
    let mut sorted: Vec<pb::KeyPurpose> = purposes.to_vec();
    // Prost enums order by their numeric value, which is the server's order.
    sorted.sort();
    sorted.dedup();
    if sorted.contains(&pb::KeyPurpose::Unspecified) {
        return Err(LocalError::ArgumentInvalid {
            argument: "purposes".into(),
            problem: "must not contain KEY_PURPOSE_UNSPECIFIED".into(),
        });
    }
    let key_id = key_id_of(public_key);
    let body = KeyPayload {
        key_id: &key_id,
        public_key: hex::encode(public_key),
        purposes: sorted.iter().map(|purpose| purpose.as_str_name()).collect(),
        not_before_ms,
        not_after_ms,
    };
    Ok(payload(KEY_PAYLOAD_PREFIX, &canonical_json("key payload", &body)?))
}

/// The JSON object a revocation's signing payload canonicalises.
#[derive(Serialize)]
struct RevokePayload<'a> {
    key_id: &'a str,
}

/// The bytes root keys sign to revoke `key_id`: `"keel/v1/revoke\n"` + JCS
/// of `{"key_id": ...}`.
pub fn revoke_payload(key_id: &str) -> Result<Vec<u8>, LocalError> {
    Ok(payload(REVOKE_PAYLOAD_PREFIX, &canonical_json("revoke payload", &RevokePayload { key_id })?))
}

/// The bytes root keys sign to rotate the root: `"keel/v1/root\n"` + JCS of
/// the metadata JSON document.
pub fn root_payload(metadata: &serde_json::Value) -> Result<Vec<u8>, LocalError> {
    Ok(payload(ROOT_PAYLOAD_PREFIX, &canonical_json("root metadata", metadata)?))
}

/// The canonical (RFC 8785) bytes of a manifest document, checked against
/// [`MANIFEST_BYTES_MAX`]. These are the bytes sent as
/// `PublishEngineVersionRequest.manifest`; the server canonicalises what it
/// receives, and canonical JSON is a fixed point of canonicalisation.
pub fn manifest_canonical(source_name: &str, manifest: &serde_json::Value) -> Result<Vec<u8>, LocalError> {
    if !manifest.is_object() {
        return Err(LocalError::ManifestNotObject { source_name: source_name.to_owned() });
    }
    let canonical = canonical_json(source_name, manifest)?;
    if canonical.len() > MANIFEST_BYTES_MAX {
        return Err(LocalError::ManifestTooLarge {
            source_name: source_name.to_owned(),
            bytes: canonical.len(),
            bytes_max: MANIFEST_BYTES_MAX,
        });
    }
    Ok(canonical)
}

/// The bytes a publisher signs: `"keel/v1/manifest\n"` + canonical manifest.
pub fn manifest_payload(canonical_manifest: &[u8]) -> Vec<u8> {
    payload(MANIFEST_PAYLOAD_PREFIX, canonical_manifest)
}

/// Whether `signature` verifies over `message` under `public_key`, with the
/// same strict check the server applies. Malformed input does not verify.
pub fn verify(public_key: &[u8; PUBLIC_KEY_BYTES], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    let Ok(bytes) = <[u8; SIGNATURE_BYTES]>::try_from(signature) else {
        return false;
    };
    let signature = ed25519_dalek::Signature::from_bytes(&bytes);
    key.verify_strict(message, &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_is_first_16_bytes_of_sha256_in_hex() {
        let public_key = [0u8; 32];
        let expected = hex::encode(&Sha256::digest(public_key)[..16]);
        assert_eq!(key_id_of(&public_key), expected);
        assert_eq!(key_id_of(&public_key).len(), 32);
    }

    #[test]
    fn revoke_payload_is_prefix_and_canonical_key_id() {
        let bytes = revoke_payload("00112233445566778899aabbccddeeff").map_err(|e| e.to_string());
        assert_eq!(
            bytes.as_deref().map(String::from_utf8_lossy),
            Ok("keel/v1/revoke\n{\"key_id\":\"00112233445566778899aabbccddeeff\"}".into())
        );
    }

    #[test]
    fn key_payload_refuses_unspecified_purpose() {
        let result = key_payload(&[1u8; 32], &[pb::KeyPurpose::Unspecified], 0, None);
        assert!(matches!(result, Err(LocalError::ArgumentInvalid { .. })));
    }

    #[test]
    fn manifest_canonical_sorts_keys_and_drops_whitespace() {
        let manifest = serde_json::json!({"version": "1.0.0", "name": "echo", "tier": "core"});
        let canonical = manifest_canonical("m.json", &manifest).map_err(|e| e.to_string());
        assert_eq!(
            canonical.as_deref().map(String::from_utf8_lossy),
            Ok(r#"{"name":"echo","tier":"core","version":"1.0.0"}"#.into())
        );
    }

    #[test]
    fn manifest_canonical_refuses_non_objects() {
        let result = manifest_canonical("m.json", &serde_json::json!([1, 2]));
        assert!(matches!(result, Err(LocalError::ManifestNotObject { .. })));
    }

    #[test]
    fn manifest_canonical_refuses_oversized_manifests() {
        let manifest = serde_json::json!({"description": "x".repeat(MANIFEST_BYTES_MAX)});
        let result = manifest_canonical("m.json", &manifest);
        assert!(matches!(result, Err(LocalError::ManifestTooLarge { .. })));
    }
}
