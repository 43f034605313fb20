//! `keel-bench --state-tenants N`: what a large state costs the request path.
//!
//! On one 3-member cluster: `GetStatus` p99 while the state is empty; then N
//! tenants are written (64 writers); then, during 64 clients of writes (a
//! snapshot is built every `snapshot_after_entries`), a follower is probed
//! one call at a time with serializable `GetTenant` and `/readyz`; then
//! `GetStatus` is timed idle as it was on the empty state; then a follower is `kill -9`ed and restarted (time to
//! ready); then write p99 over consecutive runs at 64 clients shows whether
//! latency grows with the state. Every loop is bounded by count or time.

use super::stats::{percentile, us_to_ms};
use super::workload::{KeelWriter, LoadResult, WRITE_TIMEOUT, Writer, bench_tenant, run_load};
use crate::cluster::{Cluster, ClusterOptions};
use crate::process::http_get;
use anyhow::{Context, Result, bail};
use keel_proto::v1 as pb;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Writers that preload the tenants.
const PRELOAD_WRITERS: usize = 64;
/// Attempts per preloaded tenant before the run fails.
const PRELOAD_ATTEMPTS: usize = 10;
/// `GetStatus` calls timed, idle, on the empty and on the large state.
const STATUS_SAMPLES: usize = 200;
/// Clients of the write load during the probes and the drift runs.
const LOAD_CLIENTS: usize = 64;
/// Consecutive write runs whose p99 is compared.
const DRIFT_RUNS: usize = 5;
/// Most tenants a run may ask for: the server's `TENANTS_MAX`.
pub const STATE_TENANTS_MAX: usize = 100_000;

/// What the state benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct StateResult {
    /// Tenants written before the probes.
    pub tenants: usize,
    /// Seconds the preload took.
    pub preload_s: f64,
    /// `GetStatus` p99 on a follower with an empty state, µs.
    pub status_p99_us_empty: u64,
    /// The probes, taken during the write load.
    pub get_tenant_p50_us: u64,
    /// Serializable `GetTenant` p99 on a follower, µs.
    pub get_tenant_p99_us: u64,
    /// `/readyz` p99 on a follower, µs.
    pub readyz_p99_us: u64,
    /// `GetStatus` p99 on a follower with the large state, idle, µs.
    pub status_p99_us_large: u64,
    /// Samples per probe.
    pub probe_samples: usize,
    /// The write load that ran during the probes.
    pub load_during_probes: LoadResult,
    /// `kill -9` of a follower to ready again, ms.
    pub restart_to_ready_ms: f64,
    /// Write p99 of each consecutive run, ms.
    pub write_p99_ms_runs: Vec<f64>,
}

/// Runs the state benchmark with `tenants` tenants and `duration` per run.
pub async fn bench_state(keeld: PathBuf, tenants: usize, duration: Duration) -> Result<StateResult> {
    if tenants == 0 || tenants > STATE_TENANTS_MAX {
        bail!("--state-tenants must be 1..={STATE_TENANTS_MAX}");
    }
    let mut cluster = Cluster::three_with_binary(ClusterOptions::default(), keeld).await?;
    let leader = cluster.leader().await?;
    let follower = (leader + 1) % cluster.nodes.len();
    let status_client = pb::cluster_service_client::ClusterServiceClient::new(cluster.nodes[follower].channel().await?);
    let status_p99_us_empty = p99(&time_calls(STATUS_SAMPLES, || status(status_client.clone())).await?);

    eprintln!("keel: writing {tenants} tenants");
    let writer = KeelWriter::new(cluster.nodes[leader].channel().await?);
    let started = Instant::now();
    preload(writer.clone(), tenants).await?;
    let preload_s = started.elapsed().as_secs_f64();
    eprintln!("keel: {tenants} tenants in {preload_s:.1} s");

    // Probes on a follower, one call at a time each, during a write load
    // (updates of the preloaded tenants: the state keeps its size).
    let updater = Updater::new(cluster.nodes[leader].channel().await?, tenants);
    let load = tokio::spawn(run_load(updater, "probe-load", LOAD_CLIENTS, duration));
    let probe_until = Instant::now() + duration;
    let node = &cluster.nodes[follower];
    let tenants_client = pb::tenant_service_client::TenantServiceClient::new(node.channel().await?);
    let ops_addr = node.ops_addr.clone();
    let (reads, readyz) = tokio::join!(
        time_until(probe_until, |index| {
            let request = pb::GetTenantRequest {
                name: format!("state-{}", index % tenants),
                consistency: pb::ReadConsistency::Serializable as i32,
            };
            let mut client = tenants_client.clone();
            async move { client.get_tenant(request).await.map(|_| ()).context("GetTenant") }
        }),
        time_until(probe_until, |_| {
            let ops_addr = ops_addr.clone();
            async move {
                let (code, _) = http_get(&ops_addr, "/readyz").await?;
                if code != 200 {
                    bail!("/readyz answered {code}");
                }
                Ok(())
            }
        }),
    );
    let load_during_probes = load.await.context("the write load")??;
    let (reads, readyz) = (reads?, readyz?);
    cluster.converged().await?;
    let status_p99_us_large = p99(&time_calls(STATUS_SAMPLES, || status(status_client.clone())).await?);

    eprintln!("keel: restarting a follower with {tenants} tenants");
    cluster.converged().await?;
    let node = &mut cluster.nodes[follower];
    node.kill_9()?;
    let started = Instant::now();
    node.launch().await?;
    let restart_to_ready_ms = started.elapsed().as_secs_f64() * 1000.0;

    let mut write_p99_ms_runs = Vec::new();
    for run in 0..DRIFT_RUNS {
        let leader = cluster.leader().await?;
        let updater = Updater::new(cluster.nodes[leader].channel().await?, tenants);
        let result = run_load(updater, &format!("drift{run}"), LOAD_CLIENTS, duration).await?;
        eprintln!("keel: drift run {run}: p99 {:.1} ms", us_to_ms(result.p99_us));
        write_p99_ms_runs.push(us_to_ms(result.p99_us));
    }
    Ok(StateResult {
        tenants,
        preload_s,
        status_p99_us_empty,
        get_tenant_p50_us: percentile(&sorted(reads.clone()), 50.0).unwrap_or(0),
        get_tenant_p99_us: p99(&reads),
        readyz_p99_us: p99(&readyz),
        status_p99_us_large,
        probe_samples: reads.len().min(readyz.len()),
        load_during_probes,
        restart_to_ready_ms,
        write_p99_ms_runs,
    })
}

/// Updates one of the preloaded tenants per write (the one the write's id
/// hashes to), so a load leaves the number of tenants as it was.
#[derive(Clone)]
struct Updater {
    client: pb::tenant_service_client::TenantServiceClient<crate::process::AuthChannel>,
    tenants: usize,
}

impl Updater {
    fn new(channel: crate::process::AuthChannel, tenants: usize) -> Updater {
        Updater { client: pb::tenant_service_client::TenantServiceClient::new(channel), tenants }
    }
}

impl Writer for Updater {
    async fn write(&mut self, id: String, timeout: Duration) -> Result<()> {
        // FNV-1a: spreads the loop's ids over the tenants.
        let hash = id
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
        let index = usize::try_from(hash).unwrap_or(0) % self.tenants.max(1);
        let mut request = tonic::Request::new(pb::UpdateTenantRequest {
            tenant: Some(bench_tenant(format!("state-{index}"), format!("Tenant {id}"))),
            ..Default::default()
        });
        request.set_timeout(timeout);
        self.client.update_tenant(request).await?;
        Ok(())
    }
}

/// Writes tenants `state-0` .. `state-{count-1}` with `PRELOAD_WRITERS` writers.
async fn preload(writer: KeelWriter, count: usize) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..PRELOAD_WRITERS {
        let (mut writer, next) = (writer.clone(), Arc::clone(&next));
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                let mut attempt = 0;
                while let Err(error) = writer.write(format!("state-{index}"), WRITE_TIMEOUT).await {
                    attempt += 1;
                    if attempt >= PRELOAD_ATTEMPTS {
                        return Err(error.context(format!("tenant state-{index}")));
                    }
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

async fn status(
    mut client: pb::cluster_service_client::ClusterServiceClient<crate::process::AuthChannel>,
) -> Result<()> {
    client.get_status(pb::GetStatusRequest {}).await?;
    Ok(())
}

/// Times `count` sequential calls, µs each.
async fn time_calls<F, Fut>(count: usize, mut call: F) -> Result<Vec<u64>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        call().await?;
        samples.push(micros(started.elapsed()));
    }
    Ok(samples)
}

/// Times sequential calls until `until`, µs each.
async fn time_until<F, Fut>(until: Instant, mut call: F) -> Result<Vec<u64>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut samples = Vec::new();
    while Instant::now() < until {
        let started = Instant::now();
        call(samples.len()).await?;
        samples.push(micros(started.elapsed()));
    }
    Ok(samples)
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

fn sorted(mut samples: Vec<u64>) -> Vec<u64> {
    samples.sort_unstable();
    samples
}

fn p99(samples: &[u64]) -> u64 {
    percentile(&sorted(samples.to_vec()), 99.0).unwrap_or(0)
}
