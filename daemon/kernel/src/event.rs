//! Events: what `apply` reports about each change, with its revision and the
//! leader-stamped time of the entry that made it.
//!
//! Every event is also kept in the replicated [`crate::event_history`] so a
//! watcher on any node can resume from any retained revision.

use crate::ids::Name;
use serde::{Deserialize, Serialize};

/// One state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Revision (Raft index) of the entry that made the change.
    pub revision: u64,
    /// Leader-stamped time of that entry, Unix ms.
    pub time_ms: u64,
    /// What changed.
    pub kind: EventKind,
    /// Who caused it: the `sub` of the token the change was asked with;
    /// `None` for what authorised itself (root-signed trust changes, bootstrap).
    pub caused_by: Option<String>,
}

/// The kinds of change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum EventKind {
    TrustBootstrapped {
        root_key_ids: Vec<String>,
    },
    KeyAdded {
        key_id: String,
    },
    EngineVersionPublished {
        engine: Name,
        version: String,
    },
    TenantCreated {
        tenant_id: Name,
    },
    TenantUpdated {
        tenant_id: Name,
    },
    EngineVersionYanked {
        engine: Name,
        version: String,
    },
    RootRotated {
        version: u64,
    },
    KeyRevoked {
        key_id: String,
    },
    /// A policy got a new version.
    PolicyPut {
        name: Name,
        version: u64,
    },
    /// A user event published through `EventService.Publish`.
    UserEvent {
        /// The publisher's topic.
        topic: Name,
        /// The tenant it concerns, if any.
        tenant: Option<Name>,
        /// The engine it concerns, if any.
        engine: Option<Name>,
        /// Opaque bytes, at most [`crate::limits::EVENT_PAYLOAD_BYTES_MAX`].
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// A capability token was put on the deny-list.
    TokenRevoked {
        jti: String,
    },
}

/// Fixed bytes charged per event against the history's byte budget, on top of
/// its payload, so a flood of empty events is bounded too. It covers the
/// names and `caused_by` (each at most 256 bytes) approximately.
pub const EVENT_OVERHEAD_BYTES: usize = 256;

impl EventKind {
    /// The kind's stable name, as watch filters and clients spell it.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::TrustBootstrapped { .. } => "TRUST_BOOTSTRAPPED",
            EventKind::KeyAdded { .. } => "KEY_ADDED",
            EventKind::EngineVersionPublished { .. } => "ENGINE_VERSION_PUBLISHED",
            EventKind::TenantCreated { .. } => "TENANT_CREATED",
            EventKind::TenantUpdated { .. } => "TENANT_UPDATED",
            EventKind::EngineVersionYanked { .. } => "ENGINE_VERSION_YANKED",
            EventKind::RootRotated { .. } => "ROOT_ROTATED",
            EventKind::KeyRevoked { .. } => "KEY_REVOKED",
            EventKind::PolicyPut { .. } => "POLICY_PUT",
            EventKind::UserEvent { .. } => "USER_EVENT",
            EventKind::TokenRevoked { .. } => "TOKEN_REVOKED",
        }
    }

    /// Every kind name, for validating filters.
    pub const ALL_NAMES: &'static [&'static str] = &[
        "TRUST_BOOTSTRAPPED",
        "KEY_ADDED",
        "ENGINE_VERSION_PUBLISHED",
        "TENANT_CREATED",
        "TENANT_UPDATED",
        "ENGINE_VERSION_YANKED",
        "ROOT_ROTATED",
        "KEY_REVOKED",
        "POLICY_PUT",
        "USER_EVENT",
        "TOKEN_REVOKED",
    ];

    /// The tenant this change concerns, if any.
    pub fn tenant(&self) -> Option<&Name> {
        match self {
            EventKind::TenantCreated { tenant_id } | EventKind::TenantUpdated { tenant_id } => Some(tenant_id),
            EventKind::UserEvent { tenant, .. } => tenant.as_ref(),
            _ => None,
        }
    }

    /// The engine this change concerns, if any.
    pub fn engine(&self) -> Option<&Name> {
        match self {
            EventKind::EngineVersionPublished { engine, .. } | EventKind::EngineVersionYanked { engine, .. } => {
                Some(engine)
            }
            EventKind::UserEvent { engine, .. } => engine.as_ref(),
            _ => None,
        }
    }

    /// What the event is charged against the history's byte budget.
    pub fn charged_bytes(&self) -> usize {
        match self {
            EventKind::UserEvent { payload, .. } => EVENT_OVERHEAD_BYTES.saturating_add(payload.len()),
            _ => EVENT_OVERHEAD_BYTES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_name_is_listed() {
        let name = |value: &str| Name::parse("name", value).expect("a valid name");
        let kinds = [
            EventKind::TrustBootstrapped { root_key_ids: Vec::new() },
            EventKind::KeyAdded { key_id: String::new() },
            EventKind::RootRotated { version: 2 },
            EventKind::KeyRevoked { key_id: String::new() },
            EventKind::TokenRevoked { jti: String::new() },
        ];
        for kind in kinds {
            assert!(EventKind::ALL_NAMES.contains(&kind.name()), "{kind:?}");
        }
        let user = EventKind::UserEvent {
            topic: name("deploys"),
            tenant: Some(name("acme")),
            engine: None,
            payload: vec![1, 2, 3],
        };
        assert!(EventKind::ALL_NAMES.contains(&user.name()));
        assert_eq!(user.tenant().map(Name::as_str), Some("acme"));
        assert_eq!(user.charged_bytes(), EVENT_OVERHEAD_BYTES + 3);
    }
}
