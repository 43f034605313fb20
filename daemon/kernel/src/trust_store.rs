//! Trust store v2: which keys exist, which roles they fill, what they may
//! sign, and when.
//!
//! Root keys are installed once by [`crate::Command::BootstrapTrust`], which
//! creates [`RootMetadata`] version 1 (root threshold 1). Every other key is
//! admitted by a threshold of signatures from root keys valid at the entry's
//! (leader-stamped) time, and joins the role(s) named by its purposes.
//! `RotateRoot` replaces the metadata with version N+1 when signed by a
//! threshold of version N's root keys *and* of its own. `RevokeKey` marks a
//! key revoked from its revision on. A key's validity window is
//! `not_before_ms <= t < not_after_ms`. Verification fails closed: an unknown
//! key, a revoked key, a key outside its role, a window miss or a bad
//! signature all refuse.
//!
//! ```text
//!  signatures --verify_one--> known? not revoked? in role? purpose? in window? verifies?
//!             --count distinct keys--> >= role threshold? --> counted signers
//! ```

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

impl KeyPurpose {
    /// The role a key with this purpose fills.
    pub fn role(self) -> Role {
        match self {
            KeyPurpose::Root => Role::Root,
            KeyPurpose::EnginePublisher => Role::EnginePublisher,
            KeyPurpose::ApiToken => Role::ApiToken,
        }
    }
}

/// A role in [`RootMetadata`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Signs trust-store changes.
    #[serde(rename = "root")]
    Root,
    /// Signs engine manifests.
    #[serde(rename = "engine-publisher")]
    EnginePublisher,
    /// Signs API capability tokens.
    #[serde(rename = "api-token")]
    ApiToken,
}

impl Role {
    /// Every role, in order.
    pub const ALL: [Role; 3] = [Role::Root, Role::EnginePublisher, Role::ApiToken];

    /// The role's stable name, as in the root metadata JSON.
    pub fn name(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::EnginePublisher => "engine-publisher",
            Role::ApiToken => "api-token",
        }
    }

    /// The purpose every key in this role holds.
    pub fn purpose(self) -> KeyPurpose {
        match self {
            Role::Root => KeyPurpose::Root,
            Role::EnginePublisher => KeyPurpose::EnginePublisher,
            Role::ApiToken => KeyPurpose::ApiToken,
        }
    }
}

/// The keys filling one role and how many of them must sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleKeys {
    /// Ids of the keys in the role.
    pub key_ids: BTreeSet<String>,
    /// Distinct valid signatures required; at least 1.
    pub threshold: u32,
}

/// Versioned root metadata: who fills each role, and each role's threshold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootMetadata {
    /// 1 after bootstrap; each rotation adds exactly 1. 0 before bootstrap.
    pub version: u64,
    /// Every role (after bootstrap), in role order.
    pub roles: BTreeMap<Role, RoleKeys>,
}

impl RootMetadata {
    /// The keys and threshold of `role` (empty with threshold 1 before bootstrap).
    pub fn role(&self, role: Role) -> RoleKeys {
        self.roles.get(&role).cloned().unwrap_or(RoleKeys { key_ids: BTreeSet::new(), threshold: 1 })
    }

    /// How many keys of `role` must sign.
    pub fn threshold(&self, role: Role) -> usize {
        self.roles.get(&role).map_or(1, |keys| keys.threshold as usize)
    }

    /// Whether `key_id` fills `role`.
    pub fn contains(&self, role: Role, key_id: &str) -> bool {
        self.roles.get(&role).is_some_and(|keys| keys.key_ids.contains(key_id))
    }
}

/// A new root key as written in a rotation's metadata document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootKeyDocument {
    /// Lowercase hex of the raw Ed25519 public key.
    pub public_key: String,
    /// Valid from (inclusive), Unix ms.
    #[serde(default)]
    pub not_before_ms: u64,
    /// Valid until (exclusive), Unix ms; absent never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after_ms: Option<u64>,
}

/// The JSON document a `RotateRoot` carries (canonicalised with RFC 8785 and
/// signed with the prefix `keel/v1/root\n`): the new metadata plus the
/// public keys of the new root role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootMetadataDocument {
    /// Must be exactly the current version + 1.
    pub version: u64,
    /// Every role, keyed by its name.
    pub roles: BTreeMap<Role, RoleKeys>,
    /// The public keys of every key in the new root role.
    pub root_keys: Vec<RootKeyDocument>,
}

impl RootMetadataDocument {
    /// Parses the bytes a `RotateRoot` carries and returns the document and
    /// its signing payload (`keel/v1/root\n` + RFC 8785 of the JSON).
    pub fn parse(bytes: &[u8]) -> Result<(RootMetadataDocument, Vec<u8>), Rejection> {
        let invalid = |problem: String| Rejection::FieldInvalid { field: "metadata".into(), problem: problem.into() };
        Limit::ManifestBytes.check(bytes.len())?;
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|error| invalid(error.to_string()))?;
        let canonical = signing::canonical_json(&value)?;
        let document: RootMetadataDocument =
            serde_json::from_value(value).map_err(|error| invalid(error.to_string()))?;
        Ok((document, signing::payload(signing::ROOT_PAYLOAD_PREFIX, &canonical)))
    }

    /// The signing payload of this document, as a client builds it.
    pub fn signing_payload(&self) -> Result<Vec<u8>, Rejection> {
        Ok(signing::payload(signing::ROOT_PAYLOAD_PREFIX, &signing::canonical_json(self)?))
    }
}

/// The JSON shape signed to revoke a key.
#[derive(Serialize)]
struct RevokePayload<'a> {
    key_id: &'a str,
}

/// The bytes root keys sign to revoke `key_id`: `keel/v1/revoke\n` + RFC 8785 of `{"key_id": ...}`.
pub fn revoke_signing_payload(key_id: &str) -> Result<Vec<u8>, Rejection> {
    Ok(signing::payload(signing::REVOKE_PAYLOAD_PREFIX, &signing::canonical_json(&RevokePayload { key_id })?))
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
    /// Revision at which it was revoked; every verification after it refuses the key.
    pub revoked_at_revision: Option<u64>,
}

/// The trust store's replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustStore {
    /// Persistent, like every large part of `KernelState`.
    keys: crate::persistent::Map<String, TrustedKey>,
    is_bootstrapped: bool,
    root: RootMetadata,
    /// Capability tokens revoked before their expiry.
    revoked_tokens: crate::revoked_tokens::RevokedTokens,
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

    /// The current root metadata.
    pub fn root(&self) -> &RootMetadata {
        &self.root
    }

    /// Whether the capability token `jti` is revoked.
    pub fn is_token_revoked(&self, jti: &str) -> bool {
        self.revoked_tokens.contains(jti)
    }

    /// The deny-list of revoked capability tokens.
    pub fn revoked_tokens(&self) -> &crate::revoked_tokens::RevokedTokens {
        &self.revoked_tokens
    }

    /// Revokes the capability token `jti` until `exp_ms` (see `revoked_tokens`).
    pub(crate) fn revoke_token(&mut self, jti: &str, exp_ms: u64, at_ms: u64) -> Result<bool, Rejection> {
        self.revoked_tokens.revoke(jti, exp_ms, at_ms)
    }

    /// Forgets revoked tokens that have expired by `at_ms`.
    pub(crate) fn retain(&mut self, at_ms: u64) {
        self.revoked_tokens.retain(at_ms);
    }

    /// What signing for `purpose` needs now: the threshold of its role.
    pub fn requirement(&self, purpose: KeyPurpose) -> Requirement {
        Requirement { purpose, threshold: self.root.threshold(purpose.role()) }
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
        for signature in signatures {
            Limit::SignatureBytes.check(signature.signature.len())?;
        }
        let (counted, first_failure) = self.valid_signatures(requirement.purpose, message, signatures, at_ms);
        if counted.len() >= requirement.threshold && requirement.threshold > 0 {
            return Ok(counted);
        }
        Err(first_failure.unwrap_or(Rejection::SignatureThresholdNotMet {
            required_purpose: requirement.purpose.name().into(),
            valid: counted.len(),
            threshold: requirement.threshold,
        }))
    }

    /// The first valid signature of each distinct key, in the order sent,
    /// and the first failure among the others.
    fn valid_signatures(
        &self,
        purpose: KeyPurpose,
        message: &[u8],
        signatures: &[Signature],
        at_ms: u64,
    ) -> (Vec<Signature>, Option<Rejection>) {
        let mut valid_key_ids: BTreeSet<&str> = BTreeSet::new();
        let mut counted = Vec::new();
        let mut first_failure: Option<Rejection> = None;
        for signature in signatures {
            if valid_key_ids.contains(signature.key_id.as_str()) {
                continue;
            }
            match self.verify_one(purpose, message, signature, at_ms) {
                Ok(()) => {
                    valid_key_ids.insert(&signature.key_id);
                    counted.push(signature.clone());
                }
                Err(rejection) => {
                    first_failure.get_or_insert(rejection);
                }
            }
        }
        (counted, first_failure)
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
        if let Some(revoked_at_revision) = key.revoked_at_revision {
            return Err(Rejection::KeyRevoked { key_id: key.key_id.clone(), revoked_at_revision });
        }
        // A key counts only while it fills the role: a root key dropped by a
        // rotation keeps its ROOT purpose but no longer signs for root.
        if !key.spec.purposes.contains(&purpose) || !self.root.contains(purpose.role(), &key.key_id) {
            return Err(Rejection::KeyPurposeMismatch { key_id: key.key_id.clone(), required: purpose.name().into() });
        }
        key.spec.check_valid_at(at_ms)?;
        signing::verify(&key.spec.public_key, message, signature)
    }

    /// Installs the root keys. Idempotent for the same set.
    pub(crate) fn bootstrap(
        &mut self,
        roots: &[KeySpec],
        api_token_keys: &[KeySpec],
        revision: u64,
    ) -> Result<bool, Rejection> {
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
        Limit::KeysPerRole.check(api_token_keys.len())?;
        for key in api_token_keys {
            key.validate()?;
            if !key_ids.insert(key.key_id()) {
                return Err(Rejection::FieldInvalid {
                    field: "api_token_keys".into(),
                    problem: "each key may be listed once, and not also as a root key".into(),
                });
            }
            if key.purposes != BTreeSet::from([KeyPurpose::ApiToken]) {
                return Err(Rejection::FieldInvalid {
                    field: "api_token_keys.purposes".into(),
                    problem: "a bootstrap API-token key holds the API_TOKEN purpose only".into(),
                });
            }
        }
        if self.is_bootstrapped {
            let is_listed = |spec: &KeySpec| self.keys.get(&spec.key_id()).is_some_and(|k| &k.spec == spec);
            let same = roots.len() == self.count_with(KeyPurpose::Root)
                && roots.iter().all(is_listed)
                && api_token_keys.iter().all(is_listed);
            return if same { Ok(false) } else { Err(Rejection::TrustAlreadyBootstrapped) };
        }
        for root in roots.iter().chain(api_token_keys) {
            let key_id = root.key_id();
            self.keys.insert(
                key_id.clone(),
                TrustedKey {
                    key_id,
                    spec: root.clone(),
                    create_revision: revision,
                    signed_by: Vec::new(),
                    revoked_at_revision: None,
                },
            );
        }
        let empty = || RoleKeys { key_ids: BTreeSet::new(), threshold: 1 };
        let root_keys = RoleKeys { key_ids: roots.iter().map(|r| r.key_id()).collect(), threshold: 1 };
        self.root = RootMetadata {
            version: 1,
            roles: BTreeMap::from([
                (Role::Root, root_keys),
                (Role::EnginePublisher, empty()),
                (
                    Role::ApiToken,
                    RoleKeys { key_ids: api_token_keys.iter().map(|k| k.key_id()).collect(), threshold: 1 },
                ),
            ]),
        };
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
        let signed_by = self.verify(self.requirement(KeyPurpose::Root), &spec.signing_payload()?, signatures, at_ms)?;
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
            Limit::KeysPerRole.check(self.root.role(purpose.role()).key_ids.len() + 1)?;
        }
        let key = TrustedKey {
            key_id: key_id.clone(),
            spec: spec.clone(),
            create_revision: revision,
            signed_by,
            revoked_at_revision: None,
        };
        for purpose in &spec.purposes {
            if let Some(role) = self.root.roles.get_mut(&purpose.role()) {
                role.key_ids.insert(key_id.clone());
            }
        }
        self.keys.insert(key_id, key.clone());
        Ok((key, true))
    }

    /// Replaces the root metadata with the version carried by `metadata`
    /// (see [`RootMetadataDocument`]). Returns the new metadata.
    pub(crate) fn rotate_root(
        &mut self,
        metadata: &[u8],
        signatures: &[Signature],
        revision: u64,
        at_ms: u64,
    ) -> Result<RootMetadata, Rejection> {
        if !self.is_bootstrapped {
            return Err(Rejection::TrustNotBootstrapped);
        }
        Limit::SignaturesPerRequest.check(signatures.len())?;
        let (document, payload) = RootMetadataDocument::parse(metadata)?;
        let expected = self.root.version + 1;
        if document.version != expected {
            return Err(Rejection::RootVersionInvalid { expected, found: document.version });
        }
        for role in Role::ALL {
            if !document.roles.contains_key(&role) {
                return Err(Rejection::FieldRequired { field: format!("metadata.roles.{}", role.name()).into() });
            }
        }
        // Build the next store aside; `self` is replaced only when every check passed.
        let mut next = self.clone();
        let mut new_root_ids = BTreeSet::new();
        let mut new_root_specs = Vec::new();
        Limit::KeysPerRole.check(document.root_keys.len())?;
        for root_key in &document.root_keys {
            let public_key: [u8; 32] = hex::decode(&root_key.public_key)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| Rejection::FieldInvalid {
                field: "metadata.root_keys.public_key".into(),
                problem: "not 64 hex digits".into(),
            })?;
            let spec = KeySpec {
                public_key,
                purposes: BTreeSet::from([KeyPurpose::Root]),
                not_before_ms: root_key.not_before_ms,
                not_after_ms: root_key.not_after_ms,
            };
            spec.validate()?;
            let key_id = spec.key_id();
            if !new_root_ids.insert(key_id.clone()) {
                return Err(Rejection::FieldInvalid {
                    field: "metadata.root_keys".into(),
                    problem: "each key may be listed once".into(),
                });
            }
            new_root_specs.push(spec);
        }
        for (role, keys) in &document.roles {
            Limit::KeysPerRole.check(keys.key_ids.len())?;
            let n_keys = keys.key_ids.len() as u64;
            // A non-root role may be empty until AddKey fills it; its threshold is then 1.
            let threshold_max = if *role == Role::Root { n_keys } else { n_keys.max(1) };
            if keys.threshold == 0 || u64::from(keys.threshold) > threshold_max {
                return Err(Rejection::FieldInvalid {
                    field: format!("metadata.roles.{}.threshold", role.name()).into(),
                    problem: "must be between 1 and the number of keys in the role".into(),
                });
            }
        }
        if document.roles[&Role::Root].key_ids != new_root_ids {
            return Err(Rejection::FieldInvalid {
                field: "metadata.roles.root.key_ids".into(),
                problem: "must list exactly the ids of metadata.root_keys".into(),
            });
        }
        for spec in &new_root_specs {
            let key_id = spec.key_id();
            match self.keys.get(&key_id) {
                Some(existing) if existing.spec != *spec => return Err(Rejection::KeyAlreadyExists { key_id }),
                Some(existing) if let Some(revoked_at_revision) = existing.revoked_at_revision => {
                    return Err(Rejection::KeyRevoked { key_id, revoked_at_revision });
                }
                Some(_) => {}
                None => {
                    next.keys.insert(
                        key_id.clone(),
                        TrustedKey {
                            key_id,
                            spec: spec.clone(),
                            create_revision: revision,
                            signed_by: Vec::new(),
                            revoked_at_revision: None,
                        },
                    );
                }
            }
        }
        for role in [Role::EnginePublisher, Role::ApiToken] {
            for key_id in &document.roles[&role].key_ids {
                let key = self.keys.get(key_id).ok_or_else(|| Rejection::KeyUnknown { key_id: key_id.clone() })?;
                if let Some(revoked_at_revision) = key.revoked_at_revision {
                    return Err(Rejection::KeyRevoked { key_id: key_id.clone(), revoked_at_revision });
                }
                if !key.spec.purposes.contains(&role.purpose()) {
                    return Err(Rejection::KeyPurposeMismatch {
                        key_id: key_id.clone(),
                        required: role.purpose().name().into(),
                    });
                }
            }
        }
        let current_side = self.side_signers(KeyPurpose::Root, &payload, signatures, at_ms, self.root.version)?;
        next.root = RootMetadata { version: document.version, roles: document.roles };
        let new_side = next.side_signers(KeyPurpose::Root, &payload, signatures, at_ms, next.root.version)?;
        // New root keys record which keys admitted them: the signers of both sides.
        let signed_by: Vec<String> = current_side.union(&new_side).cloned().collect();
        for spec in &new_root_specs {
            if let Some(key) = next.keys.get_mut(&spec.key_id())
                && key.create_revision == revision
            {
                key.signed_by = signed_by.clone();
            }
        }
        *self = next;
        Ok(self.root.clone())
    }

    /// The distinct keys of the current root role whose signatures verify,
    /// when they reach its threshold; otherwise a threshold refusal naming
    /// the metadata version whose root keys fell short.
    fn side_signers(
        &self,
        purpose: KeyPurpose,
        message: &[u8],
        signatures: &[Signature],
        at_ms: u64,
        version: u64,
    ) -> Result<BTreeSet<String>, Rejection> {
        let threshold = self.root.threshold(purpose.role());
        let (counted, _) = self.valid_signatures(purpose, message, signatures, at_ms);
        if counted.len() >= threshold && threshold > 0 {
            return Ok(counted.into_iter().map(|signature| signature.key_id).collect());
        }
        Err(Rejection::SignatureThresholdNotMet {
            required_purpose: format!("{} (root metadata version {version})", purpose.name()).into(),
            valid: counted.len(),
            threshold,
        })
    }

    /// Revokes `key_id` from `revision` on, admitted by a root threshold.
    /// Returns the key and whether it was newly revoked.
    pub(crate) fn revoke_key(
        &mut self,
        key_id: &str,
        signatures: &[Signature],
        revision: u64,
        at_ms: u64,
    ) -> Result<(TrustedKey, bool), Rejection> {
        if !self.is_bootstrapped {
            return Err(Rejection::TrustNotBootstrapped);
        }
        if key_id.is_empty() {
            return Err(Rejection::FieldRequired { field: "key_id".into() });
        }
        self.verify(self.requirement(KeyPurpose::Root), &revoke_signing_payload(key_id)?, signatures, at_ms)?;
        let key = self.keys.get(key_id).ok_or_else(|| Rejection::KeyUnknown { key_id: key_id.to_owned() })?;
        if key.revoked_at_revision.is_some() {
            return Ok((key.clone(), false));
        }
        if self.root.contains(Role::Root, key_id) {
            let n_root_left =
                self.root.role(Role::Root).key_ids.iter().filter(|id| *id != key_id && self.is_live(id)).count();
            if n_root_left < self.root.threshold(Role::Root) {
                return Err(Rejection::FieldInvalid {
                    field: "key_id".into(),
                    problem: "revoking it would leave fewer unrevoked root keys than the root threshold".into(),
                });
            }
        }
        let Some(key) = self.keys.get_mut(key_id) else {
            return Err(Rejection::KeyUnknown { key_id: key_id.to_owned() });
        };
        key.revoked_at_revision = Some(revision);
        Ok((key.clone(), true))
    }

    fn is_live(&self, key_id: &str) -> bool {
        self.keys.get(key_id).is_some_and(|key| key.revoked_at_revision.is_none())
    }

    fn count_with(&self, purpose: KeyPurpose) -> usize {
        self.keys.values().filter(|k| k.spec.purposes.contains(&purpose)).count()
    }
}
