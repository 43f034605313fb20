//! Generates the gRPC code for `keel.v1` (public API) and `keel.raft.v1`
//! (peer transport) with a vendored `protoc`, so no system protobuf compiler
//! is needed.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "keel/v1/common.proto",
    "keel/v1/trust.proto",
    "keel/v1/registry.proto",
    "keel/v1/tenant.proto",
    "keel/v1/cluster.proto",
    "keel/v1/events.proto",
    "keel/v1/policy.proto",
    "keel/v1/admission.proto",
    "keel/v1/audit.proto",
    "keel/raft/v1/raft.proto",
    "envoy/service/ratelimit/v3/rls.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().file_descriptor_set_path(out_dir.join("keel_descriptor.bin")).compile_with_config(
        config,
        PROTOS,
        &["."],
    )?;
    Ok(())
}
