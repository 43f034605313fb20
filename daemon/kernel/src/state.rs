//! [`KernelState`]: the replicated state machine.
//!
//! ```text
//!  Proposal{leader_time_ms, command} --apply(revision)--> Ok(Applied{outcome, events})
//!                                                    \--> Err(Rejection)  (state untouched)
//! ```
//!
//! `apply` is a pure function of the state and the entry: time comes from the
//! entry, ids are derived from content, and maps are ordered. Every
//! sub-operation checks everything before it mutates, so a rejection leaves
//! the state byte-for-byte unchanged; the digest proves it in tests.

use crate::command::{Command, Proposal};
use crate::event::{Event, EventKind};
use crate::policy::{Policies, StoredPolicy};
use crate::registry::{EngineVersion, Registry};
use crate::rejection::Rejection;
use crate::tenant::{Tenant, Tenants};
use crate::trust_store::{RootMetadata, TrustStore, TrustedKey};
use bincode::Options;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// First bytes of every snapshot.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"KEELSNAP";
/// Version of the snapshot encoding written by this build.
/// Version 2 added `EngineVersion::resolved_dependencies` and `is_yanked`;
/// a version 1 snapshot is refused (no cluster has persisted one in production).
/// Version 3 added the trust store's `RootMetadata` and
/// `TrustedKey::revoked_at_revision`; version 2 snapshots are refused likewise.
/// Version 4 added the policies.
pub const SNAPSHOT_FORMAT_VERSION: u16 = 4;

/// The whole replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelState {
    /// Time of the last applied command, Unix ms; never decreases.
    clock_ms: u64,
    trust: TrustStore,
    registry: Registry,
    tenants: Tenants,
    policies: Policies,
}

/// What a successful apply produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The result returned to the proposer.
    pub outcome: Outcome,
    /// The changes, in order (empty for an idempotent replay).
    pub events: Vec<Event>,
}

/// The result of one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Outcome {
    TrustBootstrapped { created: bool },
    KeyAdded { key: TrustedKey, created: bool },
    EngineVersionPublished { version: Box<EngineVersion>, created: bool },
    TenantWritten { tenant: Tenant },
    EngineVersionYanked { version: Box<EngineVersion>, created: bool },
    RootRotated { root: RootMetadata },
    KeyRevoked { key: TrustedKey, created: bool },
    PolicyPut { policy: Box<StoredPolicy>, created: bool },
}

/// Why a snapshot could not be decoded. Fatal for the node that reads it.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not a Keel snapshot.
    #[error("snapshot does not start with the Keel magic bytes")]
    BadMagic,
    /// Written by a newer build.
    #[error("snapshot format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// Version in the snapshot.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The body does not decode.
    #[error("snapshot body does not decode: {0}")]
    Corrupt(#[from] bincode::Error),
}

impl KernelState {
    /// Applies one committed entry at `revision` (its Raft index).
    pub fn apply(&mut self, revision: u64, proposal: &Proposal) -> Result<Applied, Rejection> {
        let at_ms = self.clock_ms.max(proposal.leader_time_ms);
        let applied = match &proposal.command {
            Command::BootstrapTrust { root_keys } => {
                let created = self.trust.bootstrap(root_keys, revision)?;
                let events = if created {
                    let root_key_ids = root_keys.iter().map(|k| k.key_id()).collect();
                    vec![Event { revision, kind: EventKind::TrustBootstrapped { root_key_ids } }]
                } else {
                    Vec::new()
                };
                Applied { outcome: Outcome::TrustBootstrapped { created }, events }
            }
            Command::AddKey { spec, signatures } => {
                let (key, created) = self.trust.add_key(spec, signatures, revision, at_ms)?;
                let events = if created {
                    vec![Event { revision, kind: EventKind::KeyAdded { key_id: key.key_id.clone() } }]
                } else {
                    Vec::new()
                };
                Applied { outcome: Outcome::KeyAdded { key, created }, events }
            }
            Command::PublishEngineVersion { manifest, signatures } => {
                let (version, created) = self.registry.publish(&self.trust, manifest, signatures, revision, at_ms)?;
                let events = if created {
                    let kind = EventKind::EngineVersionPublished {
                        engine: version.engine.clone(),
                        version: version.version.to_string(),
                    };
                    vec![Event { revision, kind }]
                } else {
                    Vec::new()
                };
                Applied { outcome: Outcome::EngineVersionPublished { version: Box::new(version), created }, events }
            }
            Command::CreateTenant { spec } => {
                let tenant = self.tenants.create(spec, revision, at_ms)?;
                let kind = EventKind::TenantCreated { tenant_id: spec.tenant_id.clone() };
                Applied { outcome: Outcome::TenantWritten { tenant }, events: vec![Event { revision, kind }] }
            }
            Command::UpdateTenant { spec, expected_etag } => {
                let tenant = self.tenants.update(spec, expected_etag.as_deref(), revision, at_ms)?;
                let kind = EventKind::TenantUpdated { tenant_id: spec.tenant_id.clone() };
                Applied { outcome: Outcome::TenantWritten { tenant }, events: vec![Event { revision, kind }] }
            }
            Command::YankEngineVersion { engine, version } => {
                let (version, created) = self.registry.yank(engine, version)?;
                let events = if created {
                    let kind = EventKind::EngineVersionYanked {
                        engine: version.engine.clone(),
                        version: version.version.to_string(),
                    };
                    vec![Event { revision, kind }]
                } else {
                    Vec::new()
                };
                Applied { outcome: Outcome::EngineVersionYanked { version: Box::new(version), created }, events }
            }
            Command::RotateRoot { metadata, signatures } => {
                let root = self.trust.rotate_root(metadata, signatures, revision, at_ms)?;
                let kind = EventKind::RootRotated { version: root.version };
                Applied { outcome: Outcome::RootRotated { root }, events: vec![Event { revision, kind }] }
            }
            Command::RevokeKey { key_id, signatures } => {
                let (key, created) = self.trust.revoke_key(key_id, signatures, revision, at_ms)?;
                let events = if created {
                    vec![Event { revision, kind: EventKind::KeyRevoked { key_id: key.key_id.clone() } }]
                } else {
                    Vec::new()
                };
                Applied { outcome: Outcome::KeyRevoked { key, created }, events }
            }
            Command::PutPolicy { name, source, expected_version } => {
                let (policy, created) = self.policies.put(name, source, *expected_version, revision, at_ms)?;
                let events = if created {
                    vec![Event { revision, kind: EventKind::PolicyPut { name: name.clone(), version: policy.version } }]
                } else {
                    Vec::new()
                };
                Applied { outcome: Outcome::PolicyPut { policy: Box::new(policy), created }, events }
            }
        };
        // Only a change moves the clock, so a rejected or no-op entry leaves the digest as it was.
        if !applied.events.is_empty() {
            self.clock_ms = at_ms;
        }
        Ok(applied)
    }

    /// The trust store.
    pub fn trust(&self) -> &TrustStore {
        &self.trust
    }

    /// The engine registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The tenants.
    pub fn tenants(&self) -> &Tenants {
        &self.tenants
    }

    /// The policies.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Time of the last change, Unix ms.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Canonical, versioned encoding: magic, format version (u16 LE), bincode body.
    /// Equal states encode to equal bytes (ordered maps, no floats).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(1024);
        bytes.extend_from_slice(SNAPSHOT_MAGIC);
        bytes.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
        // Serialising plain data (ordered maps, strings, integers) into a Vec cannot fail.
        bincode::serialize_into(&mut bytes, self).expect("bincode serialises kernel state into a Vec");
        bytes
    }

    /// Decodes [`Self::encode_snapshot`]'s output.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<KernelState, SnapshotError> {
        let body = bytes.strip_prefix(SNAPSHOT_MAGIC.as_slice()).ok_or(SnapshotError::BadMagic)?;
        let (version, body) = body.split_at_checked(2).ok_or(SnapshotError::BadMagic)?;
        let found = u16::from_le_bytes([version[0], version[1]]);
        if found != SNAPSHOT_FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion { found, supported: SNAPSHOT_FORMAT_VERSION });
        }
        // The options `bincode::serialize` writes with (fixed-width integers,
        // little endian), except that bytes after the state are refused: a
        // snapshot with a tail is not one this build wrote.
        let options = bincode::DefaultOptions::new().with_fixint_encoding().reject_trailing_bytes();
        Ok(options.deserialize(body)?)
    }

    /// SHA-256 of the canonical encoding.
    pub fn digest(&self) -> StateDigest {
        StateDigest(Sha256::digest(self.encode_snapshot()).into())
    }
}

/// A state digest; equal states have equal digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDigest(pub [u8; 32]);

impl std::fmt::Display for StateDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
