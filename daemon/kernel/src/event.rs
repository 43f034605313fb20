//! Events: what `apply` reports about each change, with its revision.

use crate::ids::Name;
use serde::{Deserialize, Serialize};

/// One state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Revision (Raft index) of the entry that made the change.
    pub revision: u64,
    /// What changed.
    pub kind: EventKind,
}

/// The kinds of change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum EventKind {
    TrustBootstrapped { root_key_ids: Vec<String> },
    KeyAdded { key_id: String },
    EngineVersionPublished { engine: Name, version: String },
    TenantCreated { tenant_id: Name },
    TenantUpdated { tenant_id: Name },
    EngineVersionYanked { engine: Name, version: String },
    RootRotated { version: u64 },
    KeyRevoked { key_id: String },
    PolicyPut { name: Name, version: u64 },
}
