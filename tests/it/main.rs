//! Keel's multi-process tests: real `keeld` processes (path from `KEELD_BIN`,
//! else next to this binary) talking gRPC on OS-assigned loopback ports.
//! One test binary; modules by scenario.

mod admission;
mod audit;
mod auth;
mod bad_input;
mod cli;
mod cluster;
mod cluster_harness;
mod cluster_membership;
mod commands;
mod compose;
mod events;
mod fixture;
mod harness;
mod helm;
mod keelctl;
mod limits;
mod load_shedding;
mod manifest_schemas;
mod membership;
mod otlp_receiver;
mod policy;
mod registry_graph;
mod rejoin;
mod robustness;
mod single_node;
mod telemetry;
mod tenant_isolation;
mod trust_rotation;
