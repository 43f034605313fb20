//! Keel's protobuf API, generated from `proto/keel/v1/*.proto`, and the peer
//! transport between nodes, from `proto/keel/raft/v1/raft.proto`.
//!
//! This crate holds generated code only. The node converts these types into
//! kernel types in one place (`keel-node`'s `convert` module); the kernel
//! never sees them.

#![allow(missing_docs, clippy::all)]

/// The public API, package `keel.v1`.
pub mod v1 {
    tonic::include_proto!("keel.v1");
}

/// The Raft peer transport between keeld nodes.
pub mod raft {
    /// Package `keel.raft.v1`, served on the peer port only.
    pub mod v1 {
        tonic::include_proto!("keel.raft.v1");
    }
}

/// Envoy's rate limit service API (a wire-compatible subset), served on the
/// client port so an Envoy can use Keel as its global rate limiter.
pub mod envoy {
    /// Package `envoy.service.ratelimit.v3`.
    pub mod ratelimit {
        /// `envoy.service.ratelimit.v3`.
        pub mod v3 {
            tonic::include_proto!("envoy.service.ratelimit.v3");
        }
    }
}

/// Encoded `FileDescriptorSet` of every Keel proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("keel_descriptor");
