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
use crate::event_history::EventHistory;
use crate::idempotency::{IdempotencyTable, Lookup};
use crate::judge::{Applying, InProcessJudge, Judge};
use crate::limits::Limit;
use crate::policy::{Policies, StoredPolicy};
use crate::registry::{EngineVersion, Registry};
use crate::rejection::Rejection;
use crate::state_budget::StateBudget;
use crate::tenant::{Tenant, Tenants};
use crate::token::Actor;
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
/// Version 4 added the event history, the idempotency table (and
/// `Event::time_ms`) and the policies; version 3 snapshots are refused likewise.
/// Version 5 added the revoked-token deny-list and `Event::caused_by`;
/// version 4 snapshots are refused likewise.
pub const SNAPSHOT_FORMAT_VERSION: u16 = 5;

/// The whole replicated state. Its large parts are persistent maps (imbl's
/// `OrdMap` and `Vector`, items behind `Arc`), so a clone shares them and
/// costs O(1) per part; a write then copies only the path it changes. The
/// node publishes one clone per applied batch for readers. They iterate in
/// key order and encode exactly as the `BTreeMap`s and `VecDeque` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelState {
    /// Time of the last applied command, Unix ms; never decreases.
    clock_ms: u64,
    trust: TrustStore,
    registry: Registry,
    tenants: Tenants,
    history: EventHistory,
    idempotency: IdempotencyTable,
    policies: Policies,
    /// Bytes charged for tenants, engine versions and policies (derived:
    /// recounted when a snapshot is decoded, so not encoded).
    #[serde(skip)]
    budget: StateBudget,
}

/// What a successful apply produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The result returned to the proposer.
    pub outcome: Outcome,
    /// The changes, in order (empty for a no-op or a replay).
    pub events: Vec<Event>,
    /// When this answers a retried request (same idempotency key and
    /// command), the revision that first applied it; nothing was applied now.
    pub replay_of: Option<u64>,
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
    EventPublished { revision: u64 },
    PolicyPut { policy: Box<StoredPolicy>, created: bool },
    TokenRevoked { created: bool },
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
    /// Applies one committed entry at `revision` (its Raft index), judging
    /// in this thread ([`InProcessJudge`]).
    pub fn apply(&mut self, revision: u64, proposal: &Proposal) -> Result<Applied, Rejection> {
        self.apply_judged(revision, proposal, &InProcessJudge)
    }

    /// Applies one committed entry at `revision`, handing every third-party
    /// evaluation to `judge` (see `judge`).
    pub fn apply_judged(
        &mut self,
        revision: u64,
        proposal: &Proposal,
        judge: &dyn Judge,
    ) -> Result<Applied, Rejection> {
        let at_ms = self.clock_ms.max(proposal.leader_time_ms);
        if let Some(actor) = &proposal.actor {
            authorize(actor, &proposal.command, &self.trust, at_ms)?;
        }
        let key = proposal.idempotency_key.as_deref();
        if let Some(key) = key
            && let Lookup::Replay(record) = self.idempotency.lookup(key, &proposal.command, at_ms)?
        {
            let outcome = record.outcome.clone();
            return Ok(Applied { outcome, events: Vec::new(), replay_of: Some(record.revision) });
        }
        let mut budget = self.budget;
        let (outcome, kinds) = self.apply_command(revision, at_ms, &proposal.command, judge, &mut budget)?;
        self.budget = budget;
        let caused_by = proposal.actor.as_ref().map(|actor| actor.sub.clone());
        let events: Vec<Event> = kinds
            .into_iter()
            .map(|kind| Event { revision, time_ms: at_ms, kind, caused_by: caused_by.clone() })
            .collect();
        if let Some(key) = key {
            self.idempotency.record(key, &proposal.command, revision, at_ms, &outcome);
        }
        // Only a change moves the clock (and runs retention), so a rejected or
        // no-op entry leaves the digest as it was.
        if !events.is_empty() || key.is_some() {
            self.clock_ms = at_ms;
            self.history.push(&events);
            self.history.retain(at_ms);
            self.idempotency.retain(at_ms);
            self.trust.retain(at_ms);
        }
        Ok(Applied { outcome, events, replay_of: None })
    }

    /// Applies `command`: its outcome and the kinds of change it made (none for
    /// a no-op), or a rejection with nothing changed.
    fn apply_command(
        &mut self,
        revision: u64,
        at_ms: u64,
        command: &Command,
        judge: &dyn Judge,
        budget: &mut StateBudget,
    ) -> Result<(Outcome, Vec<EventKind>), Rejection> {
        let if_created = |created: bool, kind: EventKind| if created { vec![kind] } else { Vec::new() };
        let applying = Applying { revision, at_ms, judge };
        Ok(match command {
            Command::BootstrapTrust { root_keys, api_token_keys } => {
                let created = self.trust.bootstrap(root_keys, api_token_keys, revision)?;
                let root_key_ids = root_keys.iter().map(|k| k.key_id()).collect();
                let mut kinds = vec![EventKind::TrustBootstrapped { root_key_ids }];
                kinds.extend(api_token_keys.iter().map(|k| EventKind::KeyAdded { key_id: k.key_id() }));
                (Outcome::TrustBootstrapped { created }, if created { kinds } else { Vec::new() })
            }
            Command::AddKey { spec, signatures } => {
                let (key, created) = self.trust.add_key(spec, signatures, revision, at_ms)?;
                let kind = EventKind::KeyAdded { key_id: key.key_id.clone() };
                (Outcome::KeyAdded { key, created }, if_created(created, kind))
            }
            Command::PublishEngineVersion { manifest, signatures } => {
                let (version, created) = self.registry.publish(&self.trust, manifest, signatures, applying, budget)?;
                let kind = EventKind::EngineVersionPublished {
                    engine: version.engine.clone(),
                    version: version.version.to_string(),
                };
                (Outcome::EngineVersionPublished { version: Box::new(version), created }, if_created(created, kind))
            }
            Command::CreateTenant { spec } => {
                let tenant = self.tenants.create(spec, revision, at_ms, budget)?;
                let kind = EventKind::TenantCreated { tenant_id: spec.tenant_id.clone() };
                (Outcome::TenantWritten { tenant }, vec![kind])
            }
            Command::UpdateTenant { spec, expected_etag } => {
                let tenant = self.tenants.update(spec, expected_etag.as_deref(), revision, at_ms, budget)?;
                let kind = EventKind::TenantUpdated { tenant_id: spec.tenant_id.clone() };
                (Outcome::TenantWritten { tenant }, vec![kind])
            }
            Command::YankEngineVersion { engine, version } => {
                let (version, created) = self.registry.yank(engine, version)?;
                let kind = EventKind::EngineVersionYanked {
                    engine: version.engine.clone(),
                    version: version.version.to_string(),
                };
                (Outcome::EngineVersionYanked { version: Box::new(version), created }, if_created(created, kind))
            }
            Command::RotateRoot { metadata, signatures } => {
                let root = self.trust.rotate_root(metadata, signatures, revision, at_ms)?;
                let kind = EventKind::RootRotated { version: root.version };
                (Outcome::RootRotated { root }, vec![kind])
            }
            Command::RevokeKey { key_id, signatures } => {
                let (key, created) = self.trust.revoke_key(key_id, signatures, revision, at_ms)?;
                let kind = EventKind::KeyRevoked { key_id: key.key_id.clone() };
                (Outcome::KeyRevoked { key, created }, if_created(created, kind))
            }
            Command::PublishEvent { topic, tenant, engine, payload } => {
                Limit::EventPayloadBytes.check(payload.len())?;
                let kind = EventKind::UserEvent {
                    topic: topic.clone(),
                    tenant: tenant.clone(),
                    engine: engine.clone(),
                    payload: payload.clone(),
                };
                (Outcome::EventPublished { revision }, vec![kind])
            }
            Command::RevokeToken { jti, exp_ms } => {
                let created = self.trust.revoke_token(jti, *exp_ms, at_ms)?;
                let kind = EventKind::TokenRevoked { jti: jti.clone() };
                (Outcome::TokenRevoked { created }, if_created(created, kind))
            }
            Command::PutPolicy { name, source, expected_version } => {
                let (policy, created) = self.policies.put(name, source, *expected_version, applying, budget)?;
                let kind = EventKind::PolicyPut { name: name.clone(), version: policy.version };
                (Outcome::PolicyPut { policy: Box::new(policy), created }, if_created(created, kind))
            }
        })
    }

    /// The retained event history.
    pub fn history(&self) -> &EventHistory {
        &self.history
    }

    /// The remembered idempotency keys.
    pub fn idempotency(&self) -> &IdempotencyTable {
        &self.idempotency
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
        let mut state: KernelState = options.deserialize(body)?;
        state.budget = state.recount_budget();
        Ok(state)
    }

    /// The state budget counted afresh from the items.
    fn recount_budget(&self) -> StateBudget {
        StateBudget::recount(self.tenants.charged().chain(self.registry.charged()).chain(self.policies.charged()))
    }

    /// Bytes charged against `STATE_BYTES_MAX`.
    pub fn charged_bytes(&self) -> usize {
        self.budget.used_bytes()
    }

    /// SHA-256 of the canonical encoding.
    pub fn digest(&self) -> StateDigest {
        StateDigest(Sha256::digest(self.encode_snapshot()).into())
    }
}

/// Whether `actor` may still act (its token not revoked or expired at
/// `at_ms`, its key still valid) and `command` is within its tenant scope: a
/// tenant-scoped actor may change only its own tenant's things.
fn authorize(actor: &Actor, command: &Command, trust: &TrustStore, at_ms: u64) -> Result<(), Rejection> {
    crate::token::check_actor(actor, trust, at_ms).map_err(Rejection::Token)?;
    if let Some(scope) = &actor.tenant
        && command.tenant() != Some(scope)
    {
        let requested = command.tenant().map(|tenant| tenant.to_string()).unwrap_or_default();
        return Err(Rejection::TenantOutOfScope { scope: scope.to_string(), requested });
    }
    Ok(())
}

/// A state digest; equal states have equal digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDigest(pub [u8; 32]);

impl std::fmt::Display for StateDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
