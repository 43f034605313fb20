//! The client's side of root rotation: the root metadata document a
//! `RotateRoot` carries, built from the current metadata, and its signatures.
//!
//! ```text
//!   GetRoot (version N, roles) ──next_from()──▶ RootMetadataDraft{version N+1, roles kept}
//!   new root public keys + threshold ──with_root_keys()──┘
//!        │ to_json()
//!        ▼
//!   document ──"keel/v1/root\n" + JCS──▶ payload ──old and new root KeyPairs──▶ RotateRootRequest
//! ```
//!
//! The server accepts the document only when it is exactly version N+1 and
//! is signed by a threshold of version N's root keys *and* a threshold of the
//! new root keys (see `proto/keel/v1/trust.proto`). Building the document
//! here refuses what the server would refuse for its shape alone (a threshold
//! of 0 or above the number of keys, a key listed twice), so a mistake is
//! found before anything is signed.

use crate::key_pair::KeyPair;
use crate::limits::SIGNATURES_PER_REQUEST_MAX;
use crate::local_error::LocalError;
use crate::signing::{self, PUBLIC_KEY_BYTES};
use keel_proto::v1 as pb;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Name of the root role in the metadata document.
pub const ROLE_ROOT: &str = "root";
/// Name of the engine-publisher role.
pub const ROLE_ENGINE_PUBLISHER: &str = "engine-publisher";
/// Name of the api-token role.
pub const ROLE_API_TOKEN: &str = "api-token";
/// Every role the document must name.
pub const ROLES: [&str; 3] = [ROLE_ROOT, ROLE_ENGINE_PUBLISHER, ROLE_API_TOKEN];

/// A key of the new root role, with its validity window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootKeyEntry {
    /// Raw Ed25519 public key.
    pub public_key: [u8; PUBLIC_KEY_BYTES],
    /// Valid from (inclusive), Unix ms.
    pub not_before_ms: u64,
    /// Valid until (exclusive), Unix ms; `None` never expires.
    pub not_after_ms: Option<u64>,
}

/// One role in the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleDraft {
    /// Ids of the keys in the role.
    pub key_ids: BTreeSet<String>,
    /// Signatures required.
    pub threshold: u32,
}

/// The JSON shape of a root key entry.
#[derive(Serialize)]
struct RootKeyJson {
    public_key: String,
    not_before_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_after_ms: Option<u64>,
}

/// The JSON shape of the whole document.
#[derive(Serialize)]
struct DocumentJson<'a> {
    version: u64,
    roles: &'a BTreeMap<String, RoleDraft>,
    root_keys: Vec<RootKeyJson>,
}

/// Root metadata being prepared for a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootMetadataDraft {
    /// The version the document claims; the server wants exactly current + 1.
    pub version: u64,
    /// Every role by name.
    pub roles: BTreeMap<String, RoleDraft>,
    /// The keys of the new root role.
    pub root_keys: Vec<RootKeyEntry>,
}

impl RootMetadataDraft {
    /// The next version of `current`: its roles kept as they are, the root
    /// role left for [`Self::with_root_keys`] to fill.
    pub fn next_from(current: &pb::RootMetadata) -> Self {
        let mut roles: BTreeMap<String, RoleDraft> = ROLES
            .iter()
            .map(|role| ((*role).to_owned(), RoleDraft { key_ids: BTreeSet::new(), threshold: 1 }))
            .collect();
        for role in &current.roles {
            roles.insert(
                role.role.clone(),
                RoleDraft { key_ids: role.key_ids.iter().cloned().collect(), threshold: role.threshold.max(1) },
            );
        }
        RootMetadataDraft { version: current.version.saturating_add(1), roles, root_keys: Vec::new() }
    }

    /// Replaces the root role with `keys` and `threshold` signatures required.
    /// Refuses no keys, a key listed twice, and a threshold outside `1..=keys`.
    pub fn with_root_keys(mut self, keys: Vec<RootKeyEntry>, threshold: u32) -> Result<Self, LocalError> {
        if keys.is_empty() {
            return Err(LocalError::ArgumentInvalid {
                argument: "--root-key".into(),
                problem: "needs at least one key for the new root role".into(),
            });
        }
        let key_ids: BTreeSet<String> = keys.iter().map(|key| signing::key_id_of(&key.public_key)).collect();
        if key_ids.len() != keys.len() {
            return Err(LocalError::ArgumentInvalid {
                argument: "--root-key".into(),
                problem: "lists the same key twice".into(),
            });
        }
        check_threshold("--root-threshold", threshold, key_ids.len())?;
        self.roles.insert(ROLE_ROOT.to_owned(), RoleDraft { key_ids, threshold });
        self.root_keys = keys;
        Ok(self)
    }

    /// Sets the threshold of a non-root role. A role with no keys may only
    /// have threshold 1 (the server's rule: it applies once keys are added).
    pub fn with_threshold(mut self, role: &str, threshold: u32) -> Result<Self, LocalError> {
        let argument = format!("--{role}-threshold");
        let Some(draft) = self.roles.get_mut(role) else {
            return Err(LocalError::ArgumentInvalid { argument, problem: "names no role".into() });
        };
        check_threshold(&argument, threshold, draft.key_ids.len().max(1))?;
        draft.threshold = threshold;
        Ok(self)
    }

    /// The document as JSON, in the shape `RotateRootRequest.metadata` documents.
    pub fn to_json(&self) -> Result<serde_json::Value, LocalError> {
        let document = DocumentJson {
            version: self.version,
            roles: &self.roles,
            root_keys: self
                .root_keys
                .iter()
                .map(|key| RootKeyJson {
                    public_key: hex::encode(key.public_key),
                    not_before_ms: key.not_before_ms,
                    not_after_ms: key.not_after_ms,
                })
                .collect(),
        };
        serde_json::to_value(&document)
            .map_err(|error| LocalError::CanonicalizeFailed { what: "root metadata".into(), detail: error.to_string() })
    }
}

fn check_threshold(argument: &str, threshold: u32, n_keys: usize) -> Result<(), LocalError> {
    if threshold == 0 || usize::try_from(threshold).map_or(true, |threshold| threshold > n_keys) {
        return Err(LocalError::ArgumentInvalid {
            argument: argument.to_owned(),
            problem: format!("({threshold}) must be between 1 and the number of keys in the role ({n_keys})"),
        });
    }
    Ok(())
}

/// A `RotateRoot` request carrying `document` as canonical JSON, signed by
/// every key in `signers` (current and new root keys, in any order).
pub fn rotate_root_request(
    document: &serde_json::Value,
    signers: &[&KeyPair],
) -> Result<pb::RotateRootRequest, LocalError> {
    if signers.len() > SIGNATURES_PER_REQUEST_MAX {
        return Err(LocalError::TooManySignatures {
            source_name: "--signer".into(),
            count: signers.len(),
            count_max: SIGNATURES_PER_REQUEST_MAX,
        });
    }
    let metadata = signing::canonical_json("root metadata", document)?;
    let payload = signing::payload(signing::ROOT_PAYLOAD_PREFIX, &metadata);
    let signatures = signers.iter().map(|signer| signer.sign_to_proto(&payload)).collect();
    Ok(pb::RotateRootRequest { metadata, signatures, idempotency_key: String::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> pb::RootMetadata {
        pb::RootMetadata {
            version: 1,
            roles: vec![
                pb::RoleKeys { role: "root".into(), key_ids: vec!["aa".into()], threshold: 1 },
                pb::RoleKeys { role: "engine-publisher".into(), key_ids: vec!["bb".into(), "cc".into()], threshold: 2 },
                pb::RoleKeys { role: "api-token".into(), key_ids: vec![], threshold: 1 },
            ],
        }
    }

    fn entry(seed: u8) -> RootKeyEntry {
        RootKeyEntry {
            public_key: KeyPair::from_secret_bytes([seed; 32]).public_key(),
            not_before_ms: 5,
            not_after_ms: None,
        }
    }

    #[test]
    fn the_next_version_keeps_the_other_roles_and_replaces_the_root_role() {
        let draft =
            RootMetadataDraft::next_from(&current()).with_root_keys(vec![entry(1), entry(2)], 2).expect("valid");
        let json = draft.to_json().expect("json");
        assert_eq!(json["version"], 2);
        assert_eq!(json["roles"]["engine-publisher"]["threshold"], 2);
        assert_eq!(json["roles"]["engine-publisher"]["key_ids"], serde_json::json!(["bb", "cc"]));
        assert_eq!(json["roles"]["root"]["threshold"], 2);
        let mut ids = [entry(1), entry(2)].iter().map(|key| signing::key_id_of(&key.public_key)).collect::<Vec<_>>();
        ids.sort();
        assert_eq!(json["roles"]["root"]["key_ids"], serde_json::json!(ids));
        assert_eq!(json["root_keys"][0]["not_before_ms"], 5);
        assert!(json["root_keys"][0].get("not_after_ms").is_none(), "absent when the key never expires");
    }

    #[test]
    fn thresholds_outside_the_role_and_repeated_keys_are_refused() {
        let next = RootMetadataDraft::next_from(&current());
        assert!(next.clone().with_root_keys(vec![entry(1)], 0).is_err());
        assert!(next.clone().with_root_keys(vec![entry(1)], 2).is_err());
        assert!(next.clone().with_root_keys(vec![entry(1), entry(1)], 1).is_err());
        assert!(next.clone().with_root_keys(vec![], 1).is_err());
        assert!(next.clone().with_threshold(ROLE_ENGINE_PUBLISHER, 3).is_err());
        assert!(next.clone().with_threshold(ROLE_API_TOKEN, 2).is_err(), "an empty role keeps threshold 1");
        assert!(next.with_threshold(ROLE_ENGINE_PUBLISHER, 1).is_ok());
    }

    #[test]
    fn the_request_carries_canonical_bytes_signed_by_every_signer() {
        let document = RootMetadataDraft::next_from(&current())
            .with_root_keys(vec![entry(2)], 1)
            .and_then(|draft| draft.to_json())
            .expect("document");
        let (old, new) = (KeyPair::from_secret_bytes([1; 32]), KeyPair::from_secret_bytes([2; 32]));
        let request = rotate_root_request(&document, &[&old, &new]).expect("request");
        let canonical = signing::canonical_json("test", &document).expect("canonical");
        assert_eq!(request.metadata, canonical);
        let payload = signing::root_payload(&document).expect("payload");
        for (signer, signature) in [&old, &new].iter().zip(&request.signatures) {
            assert_eq!(signature.key_id, signer.key_id());
            assert!(signing::verify(&signer.public_key(), &payload, &signature.signature));
        }
    }
}
