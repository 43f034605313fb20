//! Trust store v1: which keys exist, what they may sign, and when.
//!
//! Root keys are installed once by [`crate::Command::BootstrapTrust`]. Every
//! other key is admitted by a signature from a root key that is valid at the
//! entry's (leader-stamped) time. A key's validity window is
//! `not_before_ms <= t < not_after_ms`. Verification fails closed: an unknown
//! key, a wrong purpose, a window miss or a bad signature all refuse.

use crate::limits::Limit;
use crate::rejection::Rejection;
use crate::signing::{self, Signature};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What a key may sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KeyPurpose {
    /// Trust-store changes.
    #[serde(rename = "ROOT")]
    Root,
    /// Engine manifests.
    #[serde(rename = "ENGINE_PUBLISHER")]
    EnginePublisher,
    /// API capability tokens.
    #[serde(rename = "API_TOKEN")]
    ApiToken,
}

impl KeyPurpose {
    /// The purpose's stable name, as in `keel.v1.KeyPurpose`.
    pub fn name(self) -> &'static str {
        match self {
            KeyPurpose::Root => "ROOT",
            KeyPurpose::EnginePublisher => "ENGINE_PUBLISHER",
            KeyPurpose::ApiToken => "API_TOKEN",
        }
    }
}

/// The signed description of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySpec {
    /// Raw Ed25519 public key.
    pub public_key: [u8; 32],
    /// At least one purpose.
    pub purposes: BTreeSet<KeyPurpose>,
    /// Valid from (inclusive), Unix ms.
    pub not_before_ms: u64,
    /// Valid until (exclusive), Unix ms; `None` never expires.
    pub not_after_ms: Option<u64>,
}

/// The JSON shape that is canonicalised and signed (see `keel.v1.KeySpec`).
#[derive(Serialize)]
struct KeySpecPayload<'a> {
    key_id: String,
    public_key: String,
    purposes: Vec<&'static str>,
    not_before_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_after_ms: Option<u64>,
    #[serde(skip)]
    _spec: std::marker::PhantomData<&'a ()>,
}

impl KeySpec {
    /// This key's id.
    pub fn key_id(&self) -> String {
        signing::key_id_of(&self.public_key)
    }

    /// The bytes a root key signs to admit this key.
    pub fn signing_payload(&self) -> Result<Vec<u8>, Rejection> {
        let payload = KeySpecPayload {
            key_id: self.key_id(),
            public_key: hex::encode(self.public_key),
            purposes: self.purposes.iter().map(|p| p.name()).collect(),
            not_before_ms: self.not_before_ms,
            not_after_ms: self.not_after_ms,
            _spec: std::marker::PhantomData,
        };
        Ok(signing::payload(signing::KEY_PAYLOAD_PREFIX, &signing::canonical_json(&payload)?))
    }

    /// Shape checks that need no state.
    pub fn validate(&self) -> Result<(), Rejection> {
        if self.purposes.is_empty() {
            return Err(Rejection::FieldRequired { field: "spec.purposes".into() });
        }
        let problem = match ed25519_dalek::VerifyingKey::from_bytes(&self.public_key) {
            Err(_) => Some("not a valid Ed25519 public key"),
            // `verify_strict` refuses every signature by a small-order key, so
            // storing one would take a slot (or, at bootstrap, the whole root
            // of trust) for a key that can never sign.
            Ok(key) if key.is_weak() => Some("a small-order Ed25519 key, which can never sign"),
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            return Err(Rejection::FieldInvalid { field: "spec.public_key".into(), problem: problem.into() });
        }
        if let Some(not_after_ms) = self.not_after_ms
            && not_after_ms <= self.not_before_ms
        {
            return Err(Rejection::KeyValidityInvalid { not_before_ms: self.not_before_ms, not_after_ms });
        }
        Ok(())
    }

    /// Whether the key is inside its validity window at `at_ms`.
    fn check_valid_at(&self, at_ms: u64) -> Result<(), Rejection> {
        if at_ms < self.not_before_ms {
            return Err(Rejection::KeyNotYetValid { key_id: self.key_id(), not_before_ms: self.not_before_ms, at_ms });
        }
        if let Some(not_after_ms) = self.not_after_ms
            && at_ms >= not_after_ms
        {
            return Err(Rejection::KeyExpired { key_id: self.key_id(), not_after_ms, at_ms });
        }
        Ok(())
    }
}

/// A key in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedKey {
    /// Derived from the public key.
    pub key_id: String,
    /// What was signed.
    pub spec: KeySpec,
    /// Revision at which it was added.
    pub create_revision: u64,
    /// Root keys whose signatures admitted it (empty for bootstrap roots).
    pub signed_by: Vec<String>,
}

/// The trust store's replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustStore {
    keys: BTreeMap<String, TrustedKey>,
    is_bootstrapped: bool,
}

/// The signatures an operation needs: at least `threshold` valid ones by keys with `purpose`.
#[derive(Debug, Clone, Copy)]
pub struct Requirement {
    /// The purpose every counted key must hold.
    pub purpose: KeyPurpose,
    /// How many distinct valid keys must sign.
    pub threshold: usize,
}

impl TrustStore {
    /// Whether root keys are installed.
    pub fn is_bootstrapped(&self) -> bool {
        self.is_bootstrapped
    }

    /// One key by id.
    pub fn get(&self, key_id: &str) -> Option<&TrustedKey> {
        self.keys.get(key_id)
    }

    /// Keys in id order, strictly after `after` when given.
    pub fn iter_from<'a>(&'a self, after: Option<&str>) -> impl Iterator<Item = &'a TrustedKey> + 'a {
        let start = match after {
            Some(after) => std::ops::Bound::Excluded(after.to_owned()),
            None => std::ops::Bound::Unbounded,
        };
        self.keys.range((start, std::ops::Bound::Unbounded)).map(|(_, key)| key)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks that `signatures` meet `requirement` over `message` at `at_ms`.
    /// Returns the ids of the keys whose signatures counted, in id order.
    ///
    /// Signatures are counted per distinct key. When too few are valid, the
    /// refusal is the first failing signature's own reason (unknown key,
    /// wrong purpose, outside window, bad signature), so callers learn why.
    pub fn verify(
        &self,
        requirement: Requirement,
        message: &[u8],
        signatures: &[Signature],
        at_ms: u64,
    ) -> Result<Vec<String>, Rejection> {
        let counted = self.counted_signatures(requirement, message, signatures, at_ms)?;
        let key_ids: BTreeSet<String> = counted.into_iter().map(|signature| signature.key_id).collect();
        Ok(key_ids.into_iter().collect())
    }

    /// Like [`Self::verify`], but returns the signatures that counted: the
    /// first valid signature of each key, in the order sent. Anything else
    /// (unknown keys, bad bytes, repeats) is dropped, so what callers store
    /// as provenance was actually verified.
    pub fn counted_signatures(
        &self,
        requirement: Requirement,
        message: &[u8],
        signatures: &[Signature],
        at_ms: u64,
    ) -> Result<Vec<Signature>, Rejection> {
        Limit::SignaturesPerRequest.check(signatures.len())?;
        let mut valid_key_ids: BTreeSet<&str> = BTreeSet::new();
        let mut counted = Vec::new();
        let mut first_failure: Option<Rejection> = None;
        for signature in signatures {
            if valid_key_ids.contains(signature.key_id.as_str()) {
                continue;
            }
            match self.verify_one(requirement.purpose, message, signature, at_ms) {
                Ok(()) => {
                    valid_key_ids.insert(&signature.key_id);
                    counted.push(signature.clone());
                }
                Err(rejection) => {
                    first_failure.get_or_insert(rejection);
                }
            }
        }
        if counted.len() >= requirement.threshold && requirement.threshold > 0 {
            return Ok(counted);
        }
        Err(first_failure.unwrap_or(Rejection::SignatureThresholdNotMet {
            required_purpose: requirement.purpose.name().into(),
            valid: counted.len(),
            threshold: requirement.threshold,
        }))
    }

    fn verify_one(
        &self,
        purpose: KeyPurpose,
        message: &[u8],
        signature: &Signature,
        at_ms: u64,
    ) -> Result<(), Rejection> {
        let key = self
            .keys
            .get(&signature.key_id)
            .ok_or_else(|| Rejection::KeyUnknown { key_id: signature.key_id.clone() })?;
        if !key.spec.purposes.contains(&purpose) {
            return Err(Rejection::KeyPurposeMismatch { key_id: key.key_id.clone(), required: purpose.name().into() });
        }
        key.spec.check_valid_at(at_ms)?;
        signing::verify(&key.spec.public_key, message, signature)
    }

    /// Installs the root keys. Idempotent for the same set.
    pub(crate) fn bootstrap(&mut self, roots: &[KeySpec], revision: u64) -> Result<bool, Rejection> {
        if roots.is_empty() {
            return Err(Rejection::FieldRequired { field: "root_keys".into() });
        }
        Limit::BootstrapRootKeys.check(roots.len())?;
        // A key listed twice would be stored once, so the same list could
        // never be replayed idempotently; refuse it instead.
        let mut key_ids = BTreeSet::new();
        for root in roots {
            root.validate()?;
            if !key_ids.insert(root.key_id()) {
                return Err(Rejection::FieldInvalid {
                    field: "root_keys".into(),
                    problem: "each key may be listed once".into(),
                });
            }
            if !root.purposes.contains(&KeyPurpose::Root) {
                return Err(Rejection::FieldInvalid {
                    field: "root_keys.purposes".into(),
                    problem: "every bootstrap key must hold the ROOT purpose".into(),
                });
            }
        }
        if self.is_bootstrapped {
            let same = roots.len() == self.count_with(KeyPurpose::Root)
                && roots.iter().all(|r| self.keys.get(&r.key_id()).is_some_and(|k| &k.spec == r));
            return if same { Ok(false) } else { Err(Rejection::TrustAlreadyBootstrapped) };
        }
        for root in roots {
            let key_id = root.key_id();
            self.keys.insert(
                key_id.clone(),
                TrustedKey { key_id, spec: root.clone(), create_revision: revision, signed_by: Vec::new() },
            );
        }
        self.is_bootstrapped = true;
        Ok(true)
    }

    /// Adds a non-root key admitted by root signatures. Returns the key and
    /// whether it was newly added (an identical re-add changes nothing).
    pub(crate) fn add_key(
        &mut self,
        spec: &KeySpec,
        signatures: &[Signature],
        revision: u64,
        at_ms: u64,
    ) -> Result<(TrustedKey, bool), Rejection> {
        if !self.is_bootstrapped {
            return Err(Rejection::TrustNotBootstrapped);
        }
        spec.validate()?;
        if spec.purposes.contains(&KeyPurpose::Root) {
            return Err(Rejection::FieldInvalid {
                field: "spec.purposes".into(),
                problem: "root keys change only through root rotation".into(),
            });
        }
        let signed_by = self.verify(
            Requirement { purpose: KeyPurpose::Root, threshold: 1 },
            &spec.signing_payload()?,
            signatures,
            at_ms,
        )?;
        let key_id = spec.key_id();
        if let Some(existing) = self.keys.get(&key_id) {
            return if &existing.spec == spec {
                Ok((existing.clone(), false))
            } else {
                Err(Rejection::KeyAlreadyExists { key_id })
            };
        }
        for purpose in &spec.purposes {
            Limit::KeysPerRole.check(self.count_with(*purpose) + 1)?;
        }
        let key = TrustedKey { key_id: key_id.clone(), spec: spec.clone(), create_revision: revision, signed_by };
        self.keys.insert(key_id, key.clone());
        Ok((key, true))
    }

    fn count_with(&self, purpose: KeyPurpose) -> usize {
        self.keys.values().filter(|k| k.spec.purposes.contains(&purpose)).count()
    }
}
