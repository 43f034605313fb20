//! Signed manifest bundles: a manifest with its detached signatures, in one
//! file that can travel between signers before it is published.
//!
//! ```text
//! {"manifest": { …the manifest JSON… },
//!  "signatures": [{"key_id": "<32 hex>", "signature": "<base64 of 64 bytes>"}]}
//! ```
//!
//! ```text
//!   m.json ──parse──▶ SignedManifest{manifest, canonical} ──sign(key)──▶ + signature ──▶ m.signed.json
//!                                                         └─to_publish_request()──▶ PublishEngineVersionRequest
//! ```
//!
//! [`SignedManifest::parse`] accepts either a bare manifest or a bundle: a
//! JSON object whose `manifest` member is an object is a bundle (the
//! manifest schema has no `manifest` key, so the two never overlap).
//! Signatures are made over `"keel/v1/manifest\n"` + the RFC 8785 form of the
//! manifest, and the canonical bytes are what gets published, so whitespace
//! and key order in the file never matter.

use crate::key_pair::KeyPair;
use crate::limits::{MANIFEST_FILE_BYTES_MAX, SIGNATURES_PER_REQUEST_MAX};
use crate::local_error::LocalError;
use crate::local_file::{self, PUBLIC_FILE_MODE};
use crate::public_key::PublicKey;
use crate::signing::{self, SIGNATURE_BYTES};
use base64::Engine as _;
use keel_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Hex characters in a key id.
const KEY_ID_HEX_CHARS: usize = signing::KEY_ID_BYTES * 2;

/// The on-disk shape of a bundle.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleFile {
    manifest: serde_json::Value,
    #[serde(default)]
    signatures: Vec<BundleSignature>,
}

/// One signature in a bundle file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleSignature {
    key_id: String,
    signature: String,
}

/// A manifest, its canonical bytes and the signatures over them.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedManifest {
    source_name: String,
    manifest: serde_json::Value,
    canonical: Vec<u8>,
    signatures: Vec<pb::Signature>,
}

impl SignedManifest {
    /// An unsigned bundle for `manifest`. `source_name` names it in errors.
    pub fn new(source_name: &str, manifest: serde_json::Value) -> Result<Self, LocalError> {
        let canonical = signing::manifest_canonical(source_name, &manifest)?;
        Ok(SignedManifest { source_name: source_name.to_owned(), manifest, canonical, signatures: Vec::new() })
    }

    /// Parses a bare manifest or a bundle.
    pub fn parse(source_name: &str, bytes: &[u8]) -> Result<Self, LocalError> {
        let json_error = |source| LocalError::JsonInvalid { source_name: source_name.to_owned(), source };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(json_error)?;
        let is_bundle = value.get("manifest").is_some_and(serde_json::Value::is_object);
        if !is_bundle {
            return SignedManifest::new(source_name, value);
        }
        let file: BundleFile = serde_json::from_value(value).map_err(json_error)?;
        let mut bundle = SignedManifest::new(source_name, file.manifest)?;
        check_signature_count(source_name, file.signatures.len())?;
        for (index, signature) in file.signatures.into_iter().enumerate() {
            bundle.signatures.push(decode_signature(source_name, index, signature)?);
        }
        Ok(bundle)
    }

    /// Reads a bare manifest or a bundle from a file.
    pub fn read_file(path: &Path) -> Result<Self, LocalError> {
        let bytes = local_file::read_bounded(path, MANIFEST_FILE_BYTES_MAX)?;
        SignedManifest::parse(&path.display().to_string(), &bytes)
    }

    /// The manifest as written.
    pub fn manifest(&self) -> &serde_json::Value {
        &self.manifest
    }

    /// The RFC 8785 bytes that are signed and published.
    pub fn canonical(&self) -> &[u8] {
        &self.canonical
    }

    /// The bytes every signature covers.
    pub fn signing_payload(&self) -> Vec<u8> {
        signing::manifest_payload(&self.canonical)
    }

    /// The signatures, in the order they were added.
    pub fn signatures(&self) -> &[pb::Signature] {
        &self.signatures
    }

    /// Adds `key`'s signature, replacing an earlier one by the same key
    /// (Ed25519 is deterministic, so re-signing changes nothing).
    pub fn sign(&mut self, key: &KeyPair) -> Result<(), LocalError> {
        let signature = key.sign_to_proto(&self.signing_payload());
        if let Some(existing) = self.signatures.iter_mut().find(|existing| existing.key_id == signature.key_id) {
            *existing = signature;
            return Ok(());
        }
        check_signature_count(&self.source_name, self.signatures.len() + 1)?;
        self.signatures.push(signature);
        Ok(())
    }

    /// Whether the bundle holds a signature by `key` that verifies.
    pub fn is_signed_by(&self, key: &PublicKey) -> bool {
        let payload = self.signing_payload();
        self.signatures.iter().any(|signature| {
            signature.key_id == key.key_id() && signing::verify(key.bytes(), &payload, &signature.signature)
        })
    }

    /// The bundle file's JSON text (pretty, with a trailing newline).
    pub fn to_json(&self) -> String {
        let file = BundleFile {
            manifest: self.manifest.clone(),
            signatures: self
                .signatures
                .iter()
                .map(|signature| BundleSignature {
                    key_id: signature.key_id.clone(),
                    signature: base64::engine::general_purpose::STANDARD.encode(&signature.signature),
                })
                .collect(),
        };
        // A tree of JSON values and strings always serialises.
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Writes the bundle to `path`, replacing an existing file.
    pub fn write_file(&self, path: &Path) -> Result<(), LocalError> {
        local_file::write(path, self.to_json().as_bytes(), PUBLIC_FILE_MODE, false)
    }

    /// The publish request: canonical manifest bytes and every signature.
    pub fn to_publish_request(&self) -> pb::PublishEngineVersionRequest {
        pb::PublishEngineVersionRequest {
            manifest: self.canonical.clone(),
            signatures: self.signatures.clone(),
            idempotency_key: String::new(),
        }
    }
}

fn check_signature_count(source_name: &str, count: usize) -> Result<(), LocalError> {
    if count > SIGNATURES_PER_REQUEST_MAX {
        return Err(LocalError::TooManySignatures {
            source_name: source_name.to_owned(),
            count,
            count_max: SIGNATURES_PER_REQUEST_MAX,
        });
    }
    Ok(())
}

fn decode_signature(source_name: &str, index: usize, signature: BundleSignature) -> Result<pb::Signature, LocalError> {
    let invalid = |field: &str, problem: String| LocalError::FieldInvalid {
        source_name: source_name.to_owned(),
        field: format!("signatures[{index}].{field}"),
        problem,
    };
    let is_key_id = signature.key_id.len() == KEY_ID_HEX_CHARS
        && signature.key_id.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    if !is_key_id {
        return Err(invalid("key_id", format!("must be {KEY_ID_HEX_CHARS} lowercase hex characters")));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(signature.signature.as_bytes())
        .map_err(|error| invalid("signature", format!("is not base64: {error}")))?;
    if bytes.len() != SIGNATURE_BYTES {
        return Err(invalid("signature", format!("has {} bytes; expected {SIGNATURE_BYTES}", bytes.len())));
    }
    Ok(pb::Signature { key_id: signature.key_id, signature: bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"{
        "version": "1.2.0",
        "name": "echo",
        "tier": "standard",
        "actions": [{"name": "say", "input_schema": {"type": "object"}}]
    }"#;

    #[test]
    fn a_bare_manifest_parses_unsigned() {
        let bundle = SignedManifest::parse("m.json", MANIFEST.as_bytes()).expect("manifest");
        assert!(bundle.signatures().is_empty());
        assert_eq!(
            String::from_utf8_lossy(bundle.canonical()),
            r#"{"actions":[{"input_schema":{"type":"object"},"name":"say"}],"name":"echo","tier":"standard","version":"1.2.0"}"#
        );
    }

    /// Golden payload, cross-checked against the server's canonicalisation:
    /// keys sorted, whitespace dropped, `1e3` written as `1000`, non-ASCII
    /// kept as UTF-8, control characters escaped.
    #[test]
    fn manifest_payload_golden_bytes() {
        let manifest = r#"{"version":"1.2.0","name":"echo","tier":"standard",
            "description":"h\u00e9llo \"q\" \n",
            "actions":[{"name":"say","input_schema":{"type":"object","maximum":1e3,"minimum":-0.5,"b":1,"a":2}}],
            "data_classes":["pii","public"],"capabilities":["net"]}"#;
        let bundle = SignedManifest::parse("m.json", manifest.as_bytes()).expect("manifest");
        assert_eq!(
            String::from_utf8(bundle.signing_payload()).expect("utf-8"),
            concat!(
                "keel/v1/manifest\n",
                r#"{"actions":[{"input_schema":{"a":2,"b":1,"maximum":1000,"minimum":-0.5,"type":"object"},"name":"say"}],"#,
                r#""capabilities":["net"],"data_classes":["pii","public"],"description":"héllo \"q\" \n","#,
                r#""name":"echo","tier":"standard","version":"1.2.0"}"#
            )
        );
    }

    /// The kernel's golden manifest vector (`daemon/kernel/tests/snapshot_format.rs`).
    #[test]
    fn manifest_payload_matches_the_servers_golden_vector() {
        let sent = br#"{ "version": "2.0.0", "name": "coffee", "tier": "critical",
        "description": "caf\u00e9 \ud83d\ude00\t\"/",
        "actions": [{"name": "run", "input_schema": {"maximum": 1E3, "minimum": -0.0, "multipleOf": 0.10}}] }"#;
        let bundle = SignedManifest::parse("m.json", sent).expect("manifest");
        assert_eq!(
            String::from_utf8(bundle.signing_payload()).expect("utf-8"),
            concat!(
                "keel/v1/manifest\n",
                r#"{"actions":[{"input_schema":{"maximum":1000,"minimum":0,"multipleOf":0.1},"name":"run"}],"#,
                r#""description":"café 😀\t\"/","name":"coffee","tier":"critical","version":"2.0.0"}"#,
            )
        );
    }

    #[test]
    fn a_bundle_round_trips_and_signatures_verify() {
        let publisher = KeyPair::from_secret_bytes([7u8; 32]);
        let mut bundle = SignedManifest::parse("m.json", MANIFEST.as_bytes()).expect("manifest");
        bundle.sign(&publisher).expect("sign");
        let text = bundle.to_json();
        let parsed = SignedManifest::parse("m.signed.json", text.as_bytes()).expect("bundle");
        assert_eq!(parsed.canonical(), bundle.canonical());
        assert_eq!(parsed.signatures(), bundle.signatures());
        assert!(parsed.is_signed_by(&publisher.public()));
        assert!(!parsed.is_signed_by(&KeyPair::from_secret_bytes([8u8; 32]).public()));
    }

    #[test]
    fn signing_twice_with_one_key_keeps_one_signature() {
        let publisher = KeyPair::from_secret_bytes([7u8; 32]);
        let second = KeyPair::from_secret_bytes([8u8; 32]);
        let mut bundle = SignedManifest::parse("m.json", MANIFEST.as_bytes()).expect("manifest");
        bundle.sign(&publisher).expect("sign");
        bundle.sign(&publisher).expect("sign again");
        bundle.sign(&second).expect("second signer");
        let key_ids: Vec<&str> = bundle.signatures().iter().map(|s| s.key_id.as_str()).collect();
        assert_eq!(key_ids, [publisher.key_id(), second.key_id()]);
    }

    #[test]
    fn a_bundle_with_a_short_signature_names_the_field() {
        let text = format!(
            r#"{{"manifest": {MANIFEST}, "signatures": [{{"key_id": "{}", "signature": "AAAA"}}]}}"#,
            "ab".repeat(16)
        );
        let error = SignedManifest::parse("b.json", text.as_bytes()).expect_err("short signature");
        assert_eq!(error.to_string(), "b.json: field `signatures[0].signature` has 3 bytes; expected 64");
    }

    #[test]
    fn a_bundle_with_unknown_members_is_refused() {
        let text = format!(r#"{{"manifest": {MANIFEST}, "signatures": [], "comment": "x"}}"#);
        assert!(matches!(SignedManifest::parse("b.json", text.as_bytes()), Err(LocalError::JsonInvalid { .. })));
    }

    #[test]
    fn the_publish_request_carries_canonical_bytes() {
        let publisher = KeyPair::from_secret_bytes([7u8; 32]);
        let mut bundle = SignedManifest::parse("m.json", MANIFEST.as_bytes()).expect("manifest");
        bundle.sign(&publisher).expect("sign");
        let request = bundle.to_publish_request();
        assert_eq!(request.manifest, bundle.canonical());
        assert_eq!(request.signatures.len(), 1);
        assert!(signing::verify(&publisher.public_key(), &bundle.signing_payload(), &request.signatures[0].signature));
    }

    #[test]
    fn invalid_json_is_reported_with_the_source() {
        let error = SignedManifest::parse("m.json", b"{").expect_err("invalid");
        assert!(error.to_string().starts_with("m.json: "), "{error}");
    }
}
