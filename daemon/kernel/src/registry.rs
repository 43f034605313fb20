//! Engine registry v1: published engine versions, immutable once published.
//!
//! A publish verifies the manifest's signatures against the trust store at the
//! entry's time, then stores the canonical bytes under `name@version`. The
//! same canonical bytes again is an idempotent success; different bytes for a
//! published version is refused.

use crate::ids::Name;
use crate::manifest::{self, Tier};
use crate::rejection::Rejection;
use crate::signing::Signature;
use crate::trust_store::{KeyPurpose, Requirement, TrustStore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Signatures a manifest needs in v1: one valid engine-publisher key.
pub const PUBLISH_REQUIREMENT: Requirement = Requirement { purpose: KeyPurpose::EnginePublisher, threshold: 1 };

/// One published engine version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineVersion {
    /// Engine name.
    pub engine: Name,
    /// Parsed semver.
    pub version: semver::Version,
    /// Tier from the manifest.
    pub tier: Tier,
    /// Description from the manifest.
    pub description: String,
    /// Canonical manifest bytes as signed.
    // Bytes, not a sequence of u8: the same bincode, encoded and decoded as one copy.
    #[serde(with = "serde_bytes")]
    pub manifest: Vec<u8>,
    /// Lowercase hex SHA-256 of `manifest`.
    pub manifest_sha256: String,
    /// The signatures that verified at publish time: the first valid one of
    /// each key, in the order sent. Unverified ones are not kept, so every key
    /// listed here did sign; a check of signers for revocation can rely on it.
    pub signatures: Vec<Signature>,
    /// Revision of the publish.
    pub publish_revision: u64,
    /// Leader-stamped time of the publish, Unix ms.
    pub publish_time_ms: u64,
}

/// The registry's replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    engines: BTreeMap<Name, BTreeMap<semver::Version, EngineVersion>>,
}

impl Registry {
    /// Publishes one manifest; returns the stored version and whether it is new.
    pub(crate) fn publish(
        &mut self,
        trust: &TrustStore,
        manifest_bytes: &[u8],
        signatures: &[Signature],
        revision: u64,
        at_ms: u64,
    ) -> Result<(EngineVersion, bool), Rejection> {
        if !trust.is_bootstrapped() {
            return Err(Rejection::TrustNotBootstrapped);
        }
        let parsed = manifest::parse(manifest_bytes)?;
        if signatures.is_empty() {
            return Err(Rejection::FieldRequired { field: "signatures".into() });
        }
        let signatures = trust.counted_signatures(PUBLISH_REQUIREMENT, &parsed.signing_payload(), signatures, at_ms)?;
        let name = parsed.manifest.name.clone();
        if let Some(existing) = self.engines.get(&name).and_then(|versions| versions.get(&parsed.version)) {
            return if existing.manifest == parsed.canonical {
                Ok((existing.clone(), false))
            } else {
                Err(Rejection::VersionAlreadyPublished {
                    engine: name.to_string(),
                    version: parsed.version.to_string(),
                })
            };
        }
        let record = EngineVersion {
            engine: name.clone(),
            version: parsed.version.clone(),
            tier: parsed.manifest.tier,
            description: parsed.manifest.description.clone(),
            manifest_sha256: hex::encode(Sha256::digest(&parsed.canonical)),
            manifest: parsed.canonical,
            signatures,
            publish_revision: revision,
            publish_time_ms: at_ms,
        };
        self.engines.entry(name).or_default().insert(parsed.version, record.clone());
        Ok((record, true))
    }

    /// One version, or the highest when `version` is `None`.
    pub fn get(&self, engine: &Name, version: Option<&semver::Version>) -> Option<&EngineVersion> {
        let versions = self.engines.get(engine)?;
        match version {
            Some(version) => versions.get(version),
            None => versions.values().next_back(),
        }
    }

    /// Engines in name order strictly after `after`, each with its versions.
    pub fn engines_from<'a>(
        &'a self,
        after: Option<&Name>,
    ) -> impl Iterator<Item = (&'a Name, &'a BTreeMap<semver::Version, EngineVersion>)> + 'a {
        let start = match after {
            Some(after) => std::ops::Bound::Excluded(after.clone()),
            None => std::ops::Bound::Unbounded,
        };
        self.engines.range((start, std::ops::Bound::Unbounded))
    }

    /// Versions of one engine in ascending order strictly after `after`.
    pub fn versions_from<'a>(
        &'a self,
        engine: &Name,
        after: Option<&semver::Version>,
    ) -> Option<impl Iterator<Item = &'a EngineVersion> + 'a> {
        let versions = self.engines.get(engine)?;
        let start = match after {
            Some(after) => std::ops::Bound::Excluded(after.clone()),
            None => std::ops::Bound::Unbounded,
        };
        Some(versions.range((start, std::ops::Bound::Unbounded)).map(|(_, v)| v))
    }

    /// Number of engines.
    pub fn engine_count(&self) -> usize {
        self.engines.len()
    }

    /// Number of versions across all engines.
    pub fn version_count(&self) -> usize {
        self.engines.values().map(BTreeMap::len).sum()
    }
}
