//! `keel-bench --admission`: the hot path, with Redis on the same machine.
//!
//! One dev node (release build) sharing limits through a local
//! `redis-server`; tenant `bench`, engine `billing` (action `refund`, no
//! input schema), a policy that allows everything, tier limits far above the
//! load so every admission runs the whole pipeline and is admitted:
//! - unary `Admit`, closed loop, at each client count;
//! - `AdmitBatch` of `BATCH` admissions per call (admissions/s = calls × BATCH);
//! - the raw ceiling: the same GCRA script (keel-node's `RedisLimiter`, one
//!   scope, as Keel charges here) from Rust over redis-rs, same concurrency;
//! - Keel's limiter as a library: `RedisLimiter::check` in this process (the
//!   batched path admissions take), same concurrency;
//! - with `--limitador`: Limitador's library on its Redis storage (exact
//!   `redis` and the approximate `redis_cached`), the same limit (one counter
//!   for the tenant), same concurrency, in its own process
//!   (`chaos/limitador-peer`), against the same Redis server;
//! - `fail_closed` after `kill -9` of Redis: time from the kill to the first
//!   `LIMITER_UNAVAILABLE`, and the latency of every call sent after it.

use super::workload::{LoadResult, Writer, run_load};
use crate::process::{AuthChannel, KeelProcess};
use crate::redis::RedisServer;
use anyhow::{Context, Result, bail};
use keel_client::{KeelClient, KeyPair, KeySpec, SignedManifest, pb};
use keel_node::admission::limiter::ScopeLimit;
use keel_node::admission::redis_limiter::{RedisAnswer, RedisLimiter, RedisTls};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Admissions per `AdmitBatch` call.
pub const BATCH: usize = 64;
/// Clients in the stop-time run.
const STOP_CLIENTS: usize = 16;
/// How long the stop-time run lasts after the kill.
const STOP_AFTER_KILL: Duration = Duration::from_secs(3);
/// Tenant every admission is for.
const TENANT: &str = "bench";

const POLICY: &str = "package keel.policy\n\ndecision := {\"allow\": true, \"reason\": \"bench\"}\n";

/// What `--admission` measured.
#[derive(Debug, Clone, Serialize)]
pub struct AdmissionResult {
    /// Admissions per batch call.
    pub batch_size: usize,
    /// Unary `Admit`, per client count.
    pub unary: Vec<LoadResult>,
    /// `AdmitBatch` calls, per client count.
    pub batch: Vec<LoadResult>,
    /// The GCRA script straight from redis-rs, per client count.
    pub raw: Vec<LoadResult>,
    /// Keel's `RedisLimiter::check` in process, per client count.
    pub library: Vec<LoadResult>,
    /// Limitador's library, per storage, per client count (empty without
    /// `--limitador`).
    pub limitador: Vec<(String, Vec<LoadResult>)>,
    /// `fail_closed` after `kill -9` of Redis.
    pub stop: StopResult,
}

/// The cluster stopping admissions when Redis dies (`fail_closed`).
#[derive(Debug, Clone, Serialize)]
pub struct StopResult {
    /// Closed-loop clients.
    pub clients: usize,
    /// From the kill to the first `LIMITER_UNAVAILABLE`, ms.
    pub first_refusal_ms: f64,
    /// Calls sent after the kill.
    pub calls_after_kill: u64,
    /// Of those, admitted (must be 0).
    pub admitted_after_kill: u64,
    /// p99 latency of calls sent after the kill, µs.
    pub p99_after_kill_us: u64,
    /// Slowest call sent after the kill, µs.
    pub max_after_kill_us: u64,
}

fn admit_request() -> pb::AdmitRequest {
    pb::AdmitRequest { tenant: TENANT.into(), engine: "billing".into(), action: "refund".into(), ..Default::default() }
}

/// Unary `Admit`; a denial is an error.
#[derive(Clone)]
struct Unary(pb::admission_service_client::AdmissionServiceClient<AuthChannel>);

impl Writer for Unary {
    async fn write(&mut self, _id: String, timeout: Duration) -> Result<()> {
        let mut request = tonic::Request::new(admit_request());
        request.set_timeout(timeout);
        let answer = self.0.admit(request).await?.into_inner();
        anyhow::ensure!(answer.allowed, "denied: {} {}", answer.reason, answer.detail);
        Ok(())
    }
}

/// `AdmitBatch` of [`BATCH`]; any denial is an error.
#[derive(Clone)]
struct Batch(pb::admission_service_client::AdmissionServiceClient<AuthChannel>);

impl Writer for Batch {
    async fn write(&mut self, _id: String, timeout: Duration) -> Result<()> {
        let mut request = tonic::Request::new(pb::AdmitBatchRequest { requests: vec![admit_request(); BATCH] });
        request.set_timeout(timeout);
        let items = self.0.admit_batch(request).await?.into_inner().items;
        anyhow::ensure!(items.iter().all(|item| item.response.as_ref().is_some_and(|answer| answer.allowed)));
        Ok(())
    }
}

/// The GCRA script from redis-rs, as Keel charges one tenant scope.
#[derive(Clone)]
struct Raw(RedisLimiter, Vec<ScopeLimit>);

impl Writer for Raw {
    async fn write(&mut self, _id: String, _timeout: Duration) -> Result<()> {
        match self.0.check_alone("raw", &self.1, 1).await? {
            RedisAnswer::Admitted(_) => Ok(()),
            other => bail!("{other:?}"),
        }
    }
}

/// Keel's limiter in this process: the batched check admissions take.
#[derive(Clone)]
struct Library(RedisLimiter, Vec<ScopeLimit>);

impl Writer for Library {
    async fn write(&mut self, _id: String, _timeout: Duration) -> Result<()> {
        match self.0.check("library", &self.1, 1, None).await? {
            RedisAnswer::Admitted(_) => Ok(()),
            other => bail!("{other:?}"),
        }
    }
}

/// Limitador's storages the peer is run with.
const LIMITADOR_STORAGES: [&str; 2] = ["redis", "redis_cached"];

/// One closed-loop run of the Limitador peer binary.
async fn limitador_run(
    peer: &Path,
    redis: &RedisServer,
    storage: &str,
    clients: usize,
    duration: Duration,
) -> Result<LoadResult> {
    let output = tokio::process::Command::new(peer)
        .args(["--redis-url", &redis.url(), "--storage", storage])
        .args(["--clients", &clients.to_string(), "--duration-s", &duration.as_secs().to_string()])
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {}", peer.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} failed: {}",
        peer.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let result: LoadResult = serde_json::from_slice(&output.stdout).context("the Limitador peer's JSON line")?;
    anyhow::ensure!(result.errors == 0, "Limitador refused or failed {} checks", result.errors);
    Ok(result)
}

/// A release dev node on `redis`, with the engine, tenant and policy.
async fn bench_node(keeld: &Path, redis: &RedisServer, timeout_ms: &str) -> Result<KeelProcess> {
    bench_node_with(keeld, redis, timeout_ms, &[]).await
}

/// [`bench_node`] with more environment (configuration) for keeld.
async fn bench_node_with(
    keeld: &Path,
    redis: &RedisServer,
    timeout_ms: &str,
    envs: &[(&str, &str)],
) -> Result<KeelProcess> {
    let args = ["--dev", "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"];
    let mut node = KeelProcess::new(args.iter().map(|a| a.to_string()).collect())?.with_binary(keeld.to_path_buf());
    for (key, value) in envs {
        node.set_env(key, value);
    }
    node.set_env("KEEL_REDIS__URL", &redis.url());
    node.set_env("KEEL_REDIS__TIMEOUT_MS", timeout_ms);
    // Far above any load here: every admission is charged and admitted.
    node.set_env("KEEL_ADMISSION__ENTERPRISE__CALLS_PER_MINUTE", "6000000000");
    node.set_env("KEEL_ADMISSION__ENTERPRISE__BURST", "1000000000");
    node.launch().await?;
    node.wait_ready().await?;
    let client =
        KeelClient::new(keel_client::ClientConfig::new([node.endpoint.clone()]).with_token(node.bearer_token()))?;
    let root = KeyPair::read_secret_file(&node.dev_root_key())?;
    let publisher = KeyPair::generate();
    let spec = KeySpec::new(publisher.public_key(), [pb::KeyPurpose::EnginePublisher], 0, None)?;
    client.add_key_signed(&spec, &[&root]).await?;
    let manifest = serde_json::json!({
        "name": "billing", "version": "1.0.0", "tier": "standard", "actions": [{"name": "refund"}],
    });
    let mut bundle = SignedManifest::new("billing", manifest)?;
    bundle.sign(&publisher)?;
    client.publish_signed_manifest(&bundle).await?;
    let mut tenants = pb::tenant_service_client::TenantServiceClient::new(node.channel().await?);
    let tenant = super::workload::bench_tenant(TENANT.into(), "Bench".into());
    tenants.create_tenant(pb::CreateTenantRequest { tenant: Some(tenant), ..Default::default() }).await?;
    let mut policies = pb::policy_service_client::PolicyServiceClient::new(node.channel().await?);
    policies
        .put_policy(pb::PutPolicyRequest { policy: "main".into(), source: POLICY.into(), ..Default::default() })
        .await?;
    let mut admission = pb::admission_service_client::AdmissionServiceClient::new(node.channel().await?);
    let answer = admission.admit(admit_request()).await?.into_inner();
    anyhow::ensure!(answer.allowed && !answer.degraded, "the bench admission is not admitted: {answer:?}");
    Ok(node)
}

/// `fail_closed`: closed-loop clients, `kill -9` of Redis, then how soon
/// and how fast the node refuses.
async fn stop_time(keeld: &Path) -> Result<StopResult> {
    let mut redis = RedisServer::start()?;
    // The production deadline: 25 ms.
    let node = bench_node(keeld, &redis, "25").await?;
    let killed: std::sync::Arc<std::sync::OnceLock<Instant>> = std::sync::Arc::default();
    let end = Instant::now() + Duration::from_secs(1) + STOP_AFTER_KILL;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..STOP_CLIENTS {
        let mut client = pb::admission_service_client::AdmissionServiceClient::new(node.channel().await?);
        let killed = std::sync::Arc::clone(&killed);
        tasks.spawn(async move {
            // (sent after the kill: latency µs, allowed, first refusal at)
            let mut after = Vec::new();
            while Instant::now() < end {
                let sent = Instant::now();
                let answer = client.admit(admit_request()).await?.into_inner();
                let latency = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                if let Some(kill) = killed.get()
                    && sent >= *kill
                {
                    let refused_at = (answer.reason == "LIMITER_UNAVAILABLE").then(|| Instant::now() - *kill);
                    after.push((latency, answer.allowed, refused_at));
                }
            }
            anyhow::Ok(after)
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = killed.set(Instant::now());
    redis.kill_9()?;
    let mut after = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        after.extend(joined??);
    }
    let first = after.iter().filter_map(|(_, _, refused)| *refused).min().context("no call was refused")?;
    let mut latencies: Vec<u64> = after.iter().map(|(latency, ..)| *latency).collect();
    latencies.sort_unstable();
    Ok(StopResult {
        clients: STOP_CLIENTS,
        first_refusal_ms: first.as_secs_f64() * 1000.0,
        calls_after_kill: after.len() as u64,
        admitted_after_kill: after.iter().filter(|(_, allowed, _)| *allowed).count() as u64,
        p99_after_kill_us: super::stats::percentile(&latencies, 99.0).unwrap_or(0),
        max_after_kill_us: latencies.last().copied().unwrap_or(0),
    })
}

/// Runs every measurement.
pub async fn bench_admission(
    keeld: PathBuf,
    limitador: Option<&Path>,
    clients: &[usize],
    duration: Duration,
) -> Result<AdmissionResult> {
    let redis = RedisServer::start()?;
    let node = bench_node(&keeld, &redis, "25").await.context("the bench node")?;
    let raw_limiter = RedisLimiter::single(&redis.url(), &RedisTls::default(), Duration::from_secs(1))?;
    let scope = ScopeLimit { key: format!("tenant:{TENANT}"), calls_per_minute: 6_000_000_000, burst: 1_000_000_000 };
    let library_limiter = RedisLimiter::single(&redis.url(), &RedisTls::default(), Duration::from_secs(1))?;
    let (mut unary, mut batch, mut raw, mut library) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut peer: Vec<(String, Vec<LoadResult>)> =
        LIMITADOR_STORAGES.iter().map(|storage| (storage.to_string(), Vec::new())).collect();
    for (run, clients) in clients.iter().copied().enumerate() {
        let channel = node.channel().await?;
        let admission = pb::admission_service_client::AdmissionServiceClient::new(channel);
        let writer = Unary(admission.clone());
        run_load(writer.clone(), "warm", clients, Duration::from_secs(1)).await?;
        let result = run_load(writer, &format!("unary-{run}"), clients, duration).await?;
        eprintln!("keel: admit, {clients} clients: {:.0}/s", result.ops_per_s);
        unary.push(result);
        let result = run_load(Batch(admission), &format!("batch-{run}"), clients, duration).await?;
        eprintln!("keel: admit batch of {BATCH}, {clients} clients: {:.0}/s", result.ops_per_s * BATCH as f64);
        batch.push(result);
        let result = run_load(Raw(raw_limiter.clone(), vec![scope.clone()]), "raw", clients, duration).await?;
        eprintln!("redis: raw GCRA script, {clients} clients: {:.0}/s", result.ops_per_s);
        raw.push(result);
        let result = run_load(Library(library_limiter.clone(), vec![scope.clone()]), "lib", clients, duration).await?;
        eprintln!("keel: RedisLimiter::check in process, {clients} clients: {:.0}/s", result.ops_per_s);
        library.push(result);
        if let Some(limitador) = limitador {
            for (storage, results) in &mut peer {
                let result = limitador_run(limitador, &redis, storage, clients, duration).await?;
                eprintln!("limitador: {storage} storage, {clients} clients: {:.0}/s", result.ops_per_s);
                results.push(result);
            }
        }
    }
    drop(node);
    if limitador.is_none() {
        peer.clear();
    }
    let stop = stop_time(&keeld).await.context("the fail_closed stop run")?;
    Ok(AdmissionResult { batch_size: BATCH, unary, batch, raw, library, limitador: peer, stop })
}

/// The `--admission` tables.
pub fn render(out: &mut String, result: &AdmissionResult) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "\n## Admission (one node, Redis on the same machine)\n");
    let _ = writeln!(
        out,
        "| clients | Admit /s | p50 ms | p99 ms | AdmitBatch({}) admissions/s | batch p99 ms | raw GCRA script /s | raw p99 ms | unary ÷ raw | batch ÷ raw |",
        result.batch_size
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for ((unary, batch), raw) in result.unary.iter().zip(&result.batch).zip(&result.raw) {
        let batched = batch.ops_per_s * result.batch_size as f64;
        let ratio = |value: f64| if raw.ops_per_s > 0.0 { value / raw.ops_per_s } else { 0.0 };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2}× | {:.2}× |",
            unary.clients,
            unary.ops_per_s,
            unary.p50_us as f64 / 1000.0,
            unary.p99_us as f64 / 1000.0,
            batched,
            batch.p99_us as f64 / 1000.0,
            raw.ops_per_s,
            raw.p99_us as f64 / 1000.0,
            ratio(unary.ops_per_s),
            ratio(batched),
        );
    }
    let _ = writeln!(out, "\n### Limiters as libraries, same Redis, same limit, same closed-loop clients\n");
    let mut header = "| clients | Keel `RedisLimiter::check` /s | p50 ms | p99 ms |".to_owned();
    for (storage, _) in &result.limitador {
        let _ = write!(header, " Limitador `{storage}` /s | p50 ms | p99 ms | Keel ÷ Limitador `{storage}` |");
    }
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out, "|---|---|---|---|{}", "---|---|---|---|".repeat(result.limitador.len()));
    for (row, keel) in result.library.iter().enumerate() {
        let mut line = format!(
            "| {} | {:.0} | {:.2} | {:.2} |",
            keel.clients,
            keel.ops_per_s,
            keel.p50_us as f64 / 1000.0,
            keel.p99_us as f64 / 1000.0
        );
        for (_, results) in &result.limitador {
            if let Some(peer) = results.get(row) {
                let ratio = if peer.ops_per_s > 0.0 { keel.ops_per_s / peer.ops_per_s } else { 0.0 };
                let _ = write!(
                    line,
                    " {:.0} | {:.2} | {:.2} | {:.2}× |",
                    peer.ops_per_s,
                    peer.p50_us as f64 / 1000.0,
                    peer.p99_us as f64 / 1000.0,
                    ratio
                );
            }
        }
        let _ = writeln!(out, "{line}");
    }
    if result.limitador.is_empty() {
        let _ = writeln!(
            out,
            "\nLimitador not run: build `chaos/limitador-peer` and pass `--limitador` (chaos/README.md)."
        );
    }
    let stop = &result.stop;
    let _ = writeln!(
        out,
        "\n`fail_closed`, `kill -9` of Redis under {} clients: first `LIMITER_UNAVAILABLE` {:.1} ms after the kill; \
         {} calls sent after it, {} admitted, p99 {:.2} ms, slowest {:.2} ms.",
        stop.clients,
        stop.first_refusal_ms,
        stop.calls_after_kill,
        stop.admitted_after_kill,
        stop.p99_after_kill_us as f64 / 1000.0,
        stop.max_after_kill_us as f64 / 1000.0,
    );
}

/// What `--audit` measured.
#[derive(Debug, Clone, Serialize)]
pub struct AuditCostResult {
    /// Unary `Admit` with audit on, per client count.
    pub on: Vec<LoadResult>,
    /// The same with `audit.enabled = false`, per client count.
    pub off: Vec<LoadResult>,
    /// Records read back through `QueryAudit` (pages of 1000), per second.
    pub query_records_per_s: f64,
    /// Records read in that run.
    pub query_records: u64,
}

/// Unary `Admit` on two nodes side by side, audit on and off (each with its
/// own Redis on this machine), at each client count; then the on-node's
/// records read back through `QueryAudit`.
pub async fn bench_audit_cost(keeld: PathBuf, clients: &[usize], duration: Duration) -> Result<AuditCostResult> {
    let (redis_on, redis_off) = (RedisServer::start()?, RedisServer::start()?);
    let on = bench_node_with(&keeld, &redis_on, "25", &[]).await.context("the audit-on node")?;
    let off = bench_node_with(&keeld, &redis_off, "25", &[("KEEL_AUDIT__ENABLED", "false")])
        .await
        .context("the audit-off node")?;
    let (mut on_results, mut off_results) = (Vec::new(), Vec::new());
    for (run, clients) in clients.iter().copied().enumerate() {
        for (node, results, label) in [(&on, &mut on_results, "on"), (&off, &mut off_results, "off")] {
            let writer = Unary(pb::admission_service_client::AdmissionServiceClient::new(node.channel().await?));
            run_load(writer.clone(), "warm", clients, Duration::from_secs(1)).await?;
            let result = run_load(writer, &format!("audit-{label}-{run}"), clients, duration).await?;
            eprintln!("keel: admit, audit {label}, {clients} clients: {:.0}/s", result.ops_per_s);
            results.push(result);
        }
    }
    drop(off);
    let mut audit = pb::audit_service_client::AuditServiceClient::new(on.channel().await?);
    let started = Instant::now();
    let (mut records, mut page_token) = (0u64, String::new());
    loop {
        let request =
            pb::QueryAuditRequest { kind: "admission".into(), page_size: 1000, page_token, ..Default::default() };
        let page = audit.query_audit(request).await?.into_inner();
        records += page.records.len() as u64;
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    Ok(AuditCostResult {
        on: on_results,
        off: off_results,
        query_records_per_s: records as f64 / elapsed,
        query_records: records,
    })
}

/// The `--audit` table.
pub fn render_audit(out: &mut String, result: &AuditCostResult) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "\n## Audit cost (unary Admit, one node, Redis on the same machine)\n");
    let _ = writeln!(
        out,
        "| clients | audit on /s | p50 ms | p99 ms | audit off /s | p50 ms | p99 ms | on ÷ off | p99 added ms |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for (on, off) in result.on.iter().zip(&result.off) {
        let ratio = if off.ops_per_s > 0.0 { on.ops_per_s / off.ops_per_s } else { 0.0 };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2}× | {:.2} |",
            on.clients,
            on.ops_per_s,
            on.p50_us as f64 / 1000.0,
            on.p99_us as f64 / 1000.0,
            off.ops_per_s,
            off.p50_us as f64 / 1000.0,
            off.p99_us as f64 / 1000.0,
            ratio,
            (on.p99_us as f64 - off.p99_us as f64) / 1000.0,
        );
    }
    let _ = writeln!(
        out,
        "\nRead back: {} admission records through `QueryAudit` (pages of 1000) at {:.0} records/s.",
        result.query_records, result.query_records_per_s
    );
}
