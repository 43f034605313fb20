//! Keel's out-of-process tooling: launchers for real `keeld` processes and
//! clusters on loopback ([`process`], [`cluster`]), used by `tests/`, and the
//! `keel-bench` benchmark ([`bench`]) that runs the same write workload
//! against Keel and etcd side by side on one machine, and the
//! `keel-campaign` chaos rounds ([`campaign`]).

pub mod bench;

/// Runs `work` until it ends or Ctrl-C (then an error): the tools' `main`.
/// Returning drops what `work` started (clusters: processes killed, temp
/// dirs removed), also on Ctrl-C.
pub async fn until_interrupted<T>(work: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::select! {
        outcome = work => outcome,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    }
}
pub mod campaign;
pub mod cluster;
pub mod etcd;
pub mod process;
pub mod redis;

/// Generated gRPC client for the vendored subset of etcd's API.
#[allow(clippy::all, missing_docs, clippy::unwrap_used)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
