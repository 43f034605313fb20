//! The cluster launcher lives in `keel-chaos` (shared with campaigns and `keel-bench`).

pub use keel_chaos::cluster::{Cluster, ClusterOptions, MemberSpec, RaftTuning, TelemetryOptions, reserve_addresses};
