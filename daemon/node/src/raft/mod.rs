//! Raft wiring: the openraft type configuration, the stores and the network.
//!
//! ```text
//!  replica ──propose(Proposal)──► Raft (openraft core)
//!                               │ append            │ apply committed
//!                               ▼                   ▼
//!                       log_store (RocksDB)   state_machine ──► KernelState (published per batch)
//!                                                   │ build/install snapshot
//!                                                   ▼
//!                                         snapshot persisted in RocksDB
//! ```
//!
//! `mem_store` offers the same traits without disk for tests and simulation.
//! `rocks_db` opens the one RocksDB both stores share ([`open_rocks`]);
//! `codec` is the versioned byte layout of everything persisted;
//! `snapshot_store` keeps the current snapshot.
//!
//! The client side of the peer transport (`keel.raft.v1` on the peer port)
//! is here; the server side and the replica's own calls are in `replica`:
//!
//! ```text
//!  node A                                                      node B: replica::peer_service
//!  Raft ────────► network::GrpcNetwork ──┐                  ┌─► Raft: AppendEntries, Vote, InstallSnapshot
//!                                        ├─► peer_channels ─┤
//!  Replica ─► replica::peer_link ────────┘   ──HTTP/2──►    └─► Replica: Forward, ReadIndex, TimeoutNow, ...
//!  every message: peer_message {format_version, bincode body}
//! ```

pub mod codec;
pub mod log_store;
pub mod mem_store;
pub mod network;
pub mod peer_channels;
pub mod peer_message;
pub mod rocks_db;
pub mod shared_state;
pub mod snapshot_reception;
pub mod snapshot_store;
pub mod state_machine;
#[cfg(test)]
mod tests;

pub use log_store::RocksLogStore;
pub use mem_store::{MemLogStore, open_memory};
pub use network::{GrpcNetwork, NoPeerNetwork};
pub use peer_channels::PeerChannels;
pub use rocks_db::{StorageOpenError, open_rocks};
pub use shared_state::SharedState;
pub use state_machine::KernelStateMachine;

use keel_kernel::{Applied, Proposal, Rejection};
use serde::{Deserialize, Serialize};
use std::io::Cursor;

/// Addressing and placement of one member, replicated in Raft membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeelNode {
    /// host:port clients use.
    pub client_addr: String,
    /// host:port peers use.
    pub peer_addr: String,
    /// Region name.
    pub region: String,
    /// Zone name.
    pub zone: String,
}

impl std::fmt::Display for KeelNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} client={} peer={}", self.region, self.zone, self.client_addr, self.peer_addr)
    }
}

/// What applying one log entry returned to its proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyResponse {
    /// The command changed state (or was an idempotent replay).
    Applied(Applied),
    /// The command was refused; state is unchanged.
    Rejected(Rejection),
    /// A blank or membership entry: no command to answer for.
    NoCommand,
}

openraft::declare_raft_types!(
    /// Keel's openraft type configuration.
    pub TypeConfig:
        D = Proposal,
        R = ApplyResponse,
        NodeId = u64,
        Node = KeelNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle for Keel.
pub type KeelRaft = openraft::Raft<TypeConfig>;
/// Raft node ids.
pub type NodeId = u64;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// Storage errors as openraft wants them.
pub type StorageError = openraft::StorageError<NodeId>;
