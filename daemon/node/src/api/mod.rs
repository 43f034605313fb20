//! The gRPC API (`keel.v1`): one module per service, plus the shared
//! context, the wire↔kernel conversion and the error mapping.
//!
//! ```text
//!  tonic ──► service (trust/registry/tenant/policy/cluster)
//!              │ convert::*  (pb → kernel, validated)       error::ApiError → Status (one place)
//!              ▼
//!            context::ApiContext ── propose ──► Raft ──► KernelState::apply
//!                                └─ read ─────► SharedState
//! ```

pub mod admission;
pub mod audit;
pub mod cluster;
pub mod context;
pub mod convert;
pub mod envoy_rls;
pub mod error;
pub mod events;
pub mod policy;
pub mod registry;
pub mod tenant;
pub mod trust;
pub mod watch_queue;
