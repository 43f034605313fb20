//! The Raft log payload.
//!
//! The leader wraps every [`Command`] in a [`Proposal`] stamped with its
//! clock; `apply` reads time only from there. Variants are only ever appended
//! (the log encoding is positional), never reordered or removed.

use crate::ids::Name;
use crate::signing::Signature;
use crate::tenant::TenantSpec;
use crate::trust_store::KeySpec;
use serde::{Deserialize, Serialize};

/// A state change request, as replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Installs the root keys; the first command of every cluster.
    BootstrapTrust {
        /// Keys holding the ROOT purpose.
        root_keys: Vec<KeySpec>,
        /// Keys holding the API_TOKEN purpose (and no other), installed with
        /// the roots so a cluster's first tokens need no request first.
        api_token_keys: Vec<KeySpec>,
    },
    /// Adds a non-root key, admitted by root signatures.
    AddKey {
        /// The key.
        spec: KeySpec,
        /// Root signatures over `spec.signing_payload()`.
        signatures: Vec<Signature>,
    },
    /// Publishes one engine version.
    PublishEngineVersion {
        /// Manifest JSON as sent.
        // Bytes, not a sequence of u8: the same bincode, encoded and decoded as one copy.
        #[serde(with = "serde_bytes")]
        manifest: Vec<u8>,
        /// Publisher signatures over the canonical payload.
        signatures: Vec<Signature>,
    },
    /// Creates a tenant.
    CreateTenant {
        /// The new tenant.
        spec: TenantSpec,
    },
    /// Replaces a tenant's writable fields.
    UpdateTenant {
        /// The new values; `tenant_id` selects the tenant.
        spec: TenantSpec,
        /// Compare-and-set etag.
        expected_etag: Option<String>,
    },
    /// Yanks one engine version: still readable, no longer resolvable.
    YankEngineVersion {
        /// Engine name.
        engine: Name,
        /// The version to yank.
        version: semver::Version,
    },
    /// Replaces the root metadata with the next version.
    RotateRoot {
        /// JSON of the new metadata and its root public keys (see
        /// `trust_store::RootMetadataDocument`), as sent.
        #[serde(with = "serde_bytes")]
        metadata: Vec<u8>,
        /// Signatures over `keel/v1/root\n` + RFC 8785 of `metadata`, by a
        /// threshold of the current root keys and of the new ones.
        signatures: Vec<Signature>,
    },
    /// Revokes a key from this entry's revision on.
    RevokeKey {
        /// The key to revoke.
        key_id: String,
        /// Root signatures over `trust_store::revoke_signing_payload(key_id)`.
        signatures: Vec<Signature>,
    },
    /// Publishes a user event into the event history.
    PublishEvent {
        /// The publisher's topic.
        topic: Name,
        /// The tenant it concerns, if any.
        tenant: Option<Name>,
        /// The engine it concerns, if any.
        engine: Option<Name>,
        /// Opaque bytes, at most `EVENT_PAYLOAD_BYTES_MAX`.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Stores the next version of a policy (Rego source), compiled and
    /// probed in `apply` (see `policy`).
    PutPolicy {
        /// Policy name.
        name: Name,
        /// Rego source as sent.
        source: String,
        /// Compare-and-set: the current latest version (0: the name is new).
        expected_version: Option<u64>,
    },
    /// Puts a capability token's id on the deny-list until its expiry.
    RevokeToken {
        /// The token's `jti`.
        jti: String,
        /// The token's `exp`, Unix ms: the entry is forgotten then.
        exp_ms: u64,
    },
}

impl Command {
    /// Whether root signatures in the command are its whole authority (trust
    /// changes): such a write needs no capability token. Exhaustive, so a
    /// new command has to say.
    pub fn is_root_signed(&self) -> bool {
        match self {
            Command::AddKey { .. } | Command::RotateRoot { .. } | Command::RevokeKey { .. } => true,
            Command::BootstrapTrust { .. }
            | Command::PublishEngineVersion { .. }
            | Command::CreateTenant { .. }
            | Command::UpdateTenant { .. }
            | Command::YankEngineVersion { .. }
            | Command::PublishEvent { .. }
            | Command::PutPolicy { .. }
            | Command::RevokeToken { .. } => false,
        }
    }

    /// The tenant this command reads or changes, when it is one tenant's
    /// business; `None` for cluster-wide state (keys, engines, policies,
    /// revocations, an event about no tenant), which a tenant-scoped caller
    /// may not change.
    pub fn tenant(&self) -> Option<&Name> {
        match self {
            Command::CreateTenant { spec } | Command::UpdateTenant { spec, .. } => Some(&spec.tenant_id),
            Command::PublishEvent { tenant, .. } => tenant.as_ref(),
            Command::BootstrapTrust { .. }
            | Command::AddKey { .. }
            | Command::PublishEngineVersion { .. }
            | Command::YankEngineVersion { .. }
            | Command::RotateRoot { .. }
            | Command::RevokeKey { .. }
            | Command::PutPolicy { .. }
            | Command::RevokeToken { .. } => None,
        }
    }
}

/// What the leader proposes: a command and the leader's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The leader's wall clock when it proposed, Unix ms. `apply` uses
    /// `max(time of the last entry that changed state, this)`, so time never
    /// runs backwards; rejected and no-op entries do not move the clock, so
    /// they leave the state (and its digest) exactly as it was.
    pub leader_time_ms: u64,
    /// The evaluation semantics (`judge::SEMANTICS_VERSION`) of the build
    /// that proposed this entry. A member whose build judges otherwise stops
    /// rather than apply an entry that needs judging.
    pub semantics_version: u32,
    /// The change.
    pub command: Command,
    /// The client's idempotency key, if it sent one: a retry with the same
    /// key and command inside the window is answered with the first outcome
    /// and applies nothing (see `idempotency`).
    pub idempotency_key: Option<String>,
    /// Who asked, from the capability token the edge verified; `None` for
    /// what authorises itself (root-signed trust changes, the node's own
    /// bootstrap). `apply` re-checks it at the entry's revision and time,
    /// so a revocation committed first wins, and every event records it.
    pub actor: Option<crate::token::Actor>,
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.command {
            Command::BootstrapTrust { .. } => "bootstrap_trust",
            Command::AddKey { .. } => "add_key",
            Command::PublishEngineVersion { .. } => "publish_engine_version",
            Command::CreateTenant { .. } => "create_tenant",
            Command::UpdateTenant { .. } => "update_tenant",
            Command::YankEngineVersion { .. } => "yank_engine_version",
            Command::RotateRoot { .. } => "rotate_root",
            Command::RevokeKey { .. } => "revoke_key",
            Command::PublishEvent { .. } => "publish_event",
            Command::PutPolicy { .. } => "put_policy",
            Command::RevokeToken { .. } => "revoke_token",
        };
        write!(f, "{kind}@{}", self.leader_time_ms)
    }
}
