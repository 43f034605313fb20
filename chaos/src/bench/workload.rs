//! The write workloads (Keel `CreateTenant`, etcd `KV.Put`), the closed-loop
//! load driver and the failover probe, shared by both systems.

use super::stats::percentile;
use crate::etcdserverpb::{PutRequest, kv_client::KvClient};
use crate::process::AuthChannel;
use anyhow::{Result, bail};
use keel_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tonic::transport::Channel;

/// Bound on one write during a load run.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one write while probing for the new leader.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// A new failover probe starts this often through each surviving node.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// Bound on waiting for the first write acknowledged after a kill.
pub const FAILOVER_DEADLINE: Duration = Duration::from_secs(30);

/// One linearizable write with a unique id.
pub trait Writer: Clone + Send + 'static {
    /// Writes the object named `id`, failing after `timeout`.
    fn write(&mut self, id: String, timeout: Duration) -> impl Future<Output = Result<()>> + Send;
}

/// Keel: `TenantService.CreateTenant` with a fresh tenant id, optionally
/// under an idempotency key (what keel-client sends with every mutation).
#[derive(Clone)]
pub struct KeelWriter {
    client: pb::tenant_service_client::TenantServiceClient<AuthChannel>,
    is_keyed: bool,
}

impl KeelWriter {
    /// A writer over `channel`, without idempotency keys.
    pub fn new(channel: AuthChannel) -> KeelWriter {
        KeelWriter { client: pb::tenant_service_client::TenantServiceClient::new(channel), is_keyed: false }
    }

    /// A writer over `channel` that sends each write under its own idempotency key.
    pub fn keyed(channel: AuthChannel) -> KeelWriter {
        KeelWriter { is_keyed: true, ..KeelWriter::new(channel) }
    }
}

impl Writer for KeelWriter {
    async fn write(&mut self, id: String, timeout: Duration) -> Result<()> {
        let mut request = tonic::Request::new(pb::CreateTenantRequest {
            tenant: Some(bench_tenant(id.clone(), format!("Tenant {id}"))),
            idempotency_key: if self.is_keyed { format!("bench-{id}") } else { String::new() },
        });
        request.set_timeout(timeout);
        self.client.create_tenant(request).await?;
        Ok(())
    }
}

/// The tenant every Keel benchmark write carries.
pub fn bench_tenant(tenant_id: String, display_name: String) -> pb::Tenant {
    pb::Tenant {
        tenant_id,
        display_name,
        tier: pb::TenantTier::Enterprise as i32,
        home_region: "eu-west".into(),
        status: pb::TenantStatus::Active as i32,
        enabled_engines: vec!["billing".into()],
        ..Default::default()
    }
}

/// etcd: `KV.Put` of a ~100-byte value under a fresh key.
#[derive(Clone)]
pub struct EtcdWriter(KvClient<Channel>);

impl EtcdWriter {
    /// A writer over `channel`.
    pub fn new(channel: Channel) -> EtcdWriter {
        EtcdWriter(KvClient::new(channel))
    }
}

/// The value every etcd put writes: 100 bytes.
const ETCD_VALUE: [u8; 100] = [b'v'; 100];

impl Writer for EtcdWriter {
    async fn write(&mut self, id: String, timeout: Duration) -> Result<()> {
        let mut request = tonic::Request::new(PutRequest {
            key: format!("/bench/{id}").into_bytes(),
            value: ETCD_VALUE.to_vec(),
            ..Default::default()
        });
        request.set_timeout(timeout);
        self.0.put(request).await?;
        Ok(())
    }
}

/// Outcome of one closed-loop load run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadResult {
    /// Concurrent writers.
    pub clients: usize,
    /// Acknowledged writes.
    pub ops: u64,
    /// Failed writes.
    pub errors: u64,
    /// Wall time of the run, seconds.
    pub elapsed_s: f64,
    /// Acknowledged writes per second.
    pub ops_per_s: f64,
    /// Median latency of acknowledged writes, µs.
    pub p50_us: u64,
    /// 99th-percentile latency of acknowledged writes, µs.
    pub p99_us: u64,
}

/// `clients` tasks each write in a closed loop (one outstanding write each)
/// until `duration` has passed; ids are `{prefix}-{task}-{seq}`.
pub async fn run_load<W: Writer>(writer: W, prefix: &str, clients: usize, duration: Duration) -> Result<LoadResult> {
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = JoinSet::new();
    for task in 0..clients {
        let mut writer = writer.clone();
        let prefix = prefix.to_owned();
        tasks.spawn(async move {
            let mut latencies_us = Vec::new();
            let mut errors = 0u64;
            let mut seq = 0u64;
            while Instant::now() < end {
                let sent = Instant::now();
                match writer.write(format!("{prefix}-{task}-{seq}"), WRITE_TIMEOUT).await {
                    Ok(()) => latencies_us.push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX)),
                    Err(_) => {
                        errors += 1;
                        // Don't spin on a failing server.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                seq += 1;
            }
            (latencies_us, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        let (task_latencies, task_errors) = joined?;
        latencies.extend(task_latencies);
        errors += task_errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let ops = latencies.len() as u64;
    Ok(LoadResult {
        clients,
        ops,
        errors,
        elapsed_s: elapsed,
        ops_per_s: ops as f64 / elapsed,
        p50_us: percentile(&latencies, 50.0).unwrap_or(0),
        p99_us: percentile(&latencies, 99.0).unwrap_or(0),
    })
}

/// Writers probe through each surviving node before and after `kill` runs;
/// returns the time from the kill to the first acknowledged write that was
/// sent after it.
///
/// Probes are open-loop: each survivor starts a fresh write every
/// [`PROBE_INTERVAL`] without waiting for earlier ones, so a write stuck on
/// the dead leader does not delay noticing the new one (resolution is the
/// interval, not the per-write timeout).
pub async fn measure_failover<W: Writer>(
    survivors: Vec<W>,
    prefix: &str,
    kill: impl FnOnce() -> Result<()>,
) -> Result<Duration> {
    let killed_at: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for (index, writer) in survivors.into_iter().enumerate() {
        let (killed_at, stop, tx, prefix) = (killed_at.clone(), stop.clone(), tx.clone(), prefix.to_owned());
        tasks.spawn(async move {
            // Dropped with this task: aborts every probe still in flight.
            let mut probes = JoinSet::new();
            let mut ticker = tokio::time::interval(PROBE_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let started = Instant::now();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < FAILOVER_DEADLINE * 2 {
                ticker.tick().await;
                while probes.try_join_next().is_some() {}
                let (mut writer, killed_at, tx) = (writer.clone(), killed_at.clone(), tx.clone());
                let id = format!("{prefix}-{index}-{seq}");
                seq += 1;
                probes.spawn(async move {
                    let sent = Instant::now();
                    let result = writer.write(id, PROBE_TIMEOUT).await;
                    if let (Ok(()), Some(killed)) = (result, killed_at.get())
                        && sent >= *killed
                    {
                        let _ = tx.send(Instant::now().duration_since(*killed));
                    }
                });
            }
        });
    }
    drop(tx);
    // Let the writers reach steady state against the old leader first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = killed_at.set(Instant::now());
    kill()?;
    let first = tokio::time::timeout(FAILOVER_DEADLINE, rx.recv()).await;
    stop.store(true, Ordering::Relaxed);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    match first {
        Ok(Some(elapsed)) => Ok(elapsed),
        Ok(None) => bail!("every writer gave up before a write was acknowledged after the kill"),
        Err(_) => bail!("no write acknowledged within {FAILOVER_DEADLINE:?} of killing the leader"),
    }
}
