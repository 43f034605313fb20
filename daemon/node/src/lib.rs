//! `keel-node`: everything in Keel that performs I/O.
//!
//! Configuration, Raft wiring over RocksDB, the gRPC API and its single
//! wire↔kernel conversion and error mapping, ops HTTP and telemetry. The
//! binary `keeld` (src/main.rs) only parses flags and calls [`server::run`].

pub mod admission;
pub mod api;
pub mod audit;
pub mod clock;
pub mod config;
pub mod deadline;
pub mod dev_credentials;
pub mod edge;
pub mod judge;
pub mod leader_clock;
pub mod limits;
pub mod ops;
pub mod raft;
pub mod replica;
pub mod server;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod transport;
pub mod trust_roots;
