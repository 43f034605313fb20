//! Generates a gRPC client for a minimal vendored subset of etcd's API
//! (`etcdserverpb`: `KV.Put` and `Maintenance.Status`) with a vendored
//! `protoc`, for running the same workload against etcd in `keel-bench`.

const PROTOS: &[&str] = &["proto/etcdserverpb/rpc.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().build_server(false).compile_with_config(config, PROTOS, &["proto"])?;
    Ok(())
}
