//! `keel-bench`: Keel against etcd, side by side on one machine, on loopback.
//!
//! Both systems run as 3-member clusters with the same failure-detection
//! window (a follower campaigns 450–600 ms after the leader's last heartbeat
//! in Keel, 500–1000 ms in etcd; see `Args::keel_election_max_ms`) and get
//! the same workloads: closed-loop linearizable writes of fresh objects
//! (Keel `CreateTenant`, etcd `KV.Put` of ~100 bytes) sent to the leader by N
//! concurrent clients over one shared HTTP/2 channel, and `kill -9` of the
//! leader while writers probe through the other members (time from the kill
//! to the first acknowledged write sent after it). Every loop is bounded;
//! processes and temp dirs are cleaned up by drop guards, also on error.

pub mod admission;
pub mod auth;
pub mod state;
pub mod stats;
pub mod workload;

use crate::cluster::{Cluster, ClusterOptions, RaftTuning};
use crate::etcd::{EtcdCluster, etcd_version, find_etcd};
use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::Serialize;
use stats::{median, us_to_ms};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;
use workload::{EtcdWriter, KeelWriter, LoadResult, measure_failover, run_load};

/// Members per cluster.
const CLUSTER_SIZE: usize = 3;
/// Unmeasured load before each measured run.
const WARMUP: Duration = Duration::from_secs(1);

/// Command-line arguments.
#[derive(Debug, Clone, Parser)]
#[command(name = "keel-bench", about = "Benchmarks a 3-node Keel cluster against a 3-member etcd cluster on loopback.")]
pub struct Args {
    /// keeld binary (default: `$CARGO_TARGET_DIR/release/keeld`, else next to keel-bench).
    #[arg(long)]
    pub keeld: Option<PathBuf>,
    /// etcd binary (default: `etcd` on PATH, installing the Debian `etcd-server` package if missing).
    #[arg(long)]
    pub etcd: Option<PathBuf>,
    /// Seconds of measured load per client count.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Leader kills per system.
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    /// Concurrent clients, comma-separated; one load run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub clients: Vec<usize>,
    /// Benchmark Keel only.
    #[arg(long)]
    pub skip_etcd: bool,
    /// Print JSON instead of the markdown table.
    #[arg(long)]
    pub json: bool,
    /// Also run the state benchmark with this many tenants (e.g. 100000):
    /// probes during snapshot builds, restart to ready, write p99 drift.
    #[arg(long, default_value_t = 0)]
    pub state_tenants: usize,
    /// Run only the state benchmark (needs --state-tenants).
    #[arg(long)]
    pub state_only: bool,
    /// Keel's `raft.heartbeat_interval_ms` in the throughput and failover runs.
    #[arg(long, default_value_t = 50)]
    pub keel_heartbeat_ms: u64,
    /// Keel's `raft.election_timeout_min_ms`.
    #[arg(long, default_value_t = 150)]
    pub keel_election_min_ms: u64,
    /// Keel's `raft.election_timeout_max_ms`, which is also openraft's leader
    /// lease: a follower campaigns lease + [min, max) after the last
    /// heartbeat, where an etcd member campaigns [et, 2·et) after it. The
    /// defaults (50 / 150–300, a campaign 450–600 ms after the leader's last
    /// heartbeat) match etcd's failure detection at `--election-timeout=500`;
    /// keeld's own defaults (100 / 500–1000) are for members across regions.
    #[arg(long, default_value_t = 300)]
    pub keel_election_max_ms: u64,
    /// Run only the authentication benchmark: token checks in process, and
    /// read throughput with authentication required vs off (at --clients).
    #[arg(long)]
    pub auth: bool,
    /// Run only the admission benchmark: unary and batched admissions on one
    /// node against the raw Redis GCRA script (at --clients), and how fast
    /// `fail_closed` stops admitting after `kill -9` of Redis.
    #[arg(long)]
    pub admission: bool,
    /// With --admission: the peer binary from `chaos/limitador-peer`
    /// (Limitador's library on its Redis storage), run against the same
    /// Redis server at each client count.
    #[arg(long)]
    pub limitador: Option<PathBuf>,
    /// Run only the audit cost benchmark: unary admissions on two nodes,
    /// audit on and off (at --clients), and the records read back.
    #[arg(long)]
    pub audit: bool,
}

impl Args {
    /// Rejects values that would make an unbounded or empty run.
    pub fn validate(&self) -> Result<()> {
        if self.duration_s == 0 || self.duration_s > 3600 {
            bail!("--duration-s must be 1..=3600");
        }
        if self.keel_election_min_ms < 3 * self.keel_heartbeat_ms
            || self.keel_election_max_ms <= self.keel_election_min_ms
        {
            bail!("--keel-election-min-ms must be at least 3 × --keel-heartbeat-ms, and below --keel-election-max-ms");
        }
        if self.trials > 1000 {
            bail!("--trials must be at most 1000");
        }
        if self.clients.is_empty() || self.clients.iter().any(|c| *c == 0 || *c > 4096) {
            bail!("--clients must be a list of counts in 1..=4096");
        }
        if self.state_tenants > state::STATE_TENANTS_MAX || (self.state_only && self.state_tenants == 0) {
            bail!("--state-tenants must be 1..={} (--state-only needs it)", state::STATE_TENANTS_MAX);
        }
        Ok(())
    }

    /// The keeld binary to run: `--keeld`, else `$CARGO_TARGET_DIR/release/keeld`,
    /// else `keeld` next to this executable (both built into `target/release/`),
    /// else `target/release/keeld`.
    pub fn keeld_path(&self) -> PathBuf {
        if let Some(path) = &self.keeld {
            return path.clone();
        }
        if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
            return PathBuf::from(target).join("release").join("keeld");
        }
        let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join("keeld")));
        beside.filter(|path| path.is_file()).unwrap_or_else(|| PathBuf::from("target/release/keeld"))
    }
}

/// One system's results.
#[derive(Debug, Clone, Serialize)]
pub struct SystemResult {
    /// Binary and version.
    pub binary: String,
    /// One entry per client count.
    pub load: Vec<LoadResult>,
    /// Keel only: the same runs with an idempotency key on every write.
    pub keyed_load: Vec<LoadResult>,
    /// Kill-to-first-acknowledged-write per trial, ms.
    pub failover_ms: Vec<f64>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `nproc`.
    pub cpus: usize,
    /// CPU model from /proc/cpuinfo.
    pub cpu_model: String,
    /// Profile keel-bench itself was built with.
    pub bench_profile: &'static str,
    /// Measured seconds per load run.
    pub duration_s: u64,
    /// Keel (absent with --state-only).
    pub keel: Option<SystemResult>,
    /// etcd, unless skipped.
    pub etcd: Option<SystemResult>,
    /// The state benchmark, with --state-tenants.
    pub state: Option<state::StateResult>,
    /// The authentication benchmark, with --auth.
    pub auth: Option<auth::AuthResult>,
    /// The admission benchmark, with --admission.
    pub admission: Option<admission::AdmissionResult>,
    /// The audit cost benchmark, with --audit.
    pub audit: Option<admission::AuditCostResult>,
}

impl Report {
    /// This machine and run, no results yet.
    fn empty(args: &Args) -> Report {
        Report {
            cpus: std::thread::available_parallelism().map(usize::from).unwrap_or(0),
            cpu_model: cpu_model(),
            bench_profile: if cfg!(debug_assertions) { "debug" } else { "release" },
            duration_s: args.duration_s,
            keel: None,
            etcd: None,
            state: None,
            auth: None,
            admission: None,
            audit: None,
        }
    }
}

/// Runs every benchmark and returns the report.
pub async fn run(args: &Args) -> Result<Report> {
    args.validate()?;
    let keeld = args.keeld_path();
    if !keeld.is_file() {
        bail!(
            "keeld not found at {}; build it with `kc build --release -p keel-node --bins` or pass --keeld",
            keeld.display()
        );
    }
    let duration = Duration::from_secs(args.duration_s);
    if args.auth {
        let auth = auth::bench_auth(keeld.clone(), &args.clients, duration).await.context("the auth benchmark")?;
        return Ok(Report { auth: Some(auth), ..Report::empty(args) });
    }
    if args.audit {
        let result =
            admission::bench_audit_cost(keeld.clone(), &args.clients, duration).await.context("the audit benchmark")?;
        return Ok(Report { audit: Some(result), ..Report::empty(args) });
    }
    if args.admission {
        let result = admission::bench_admission(keeld.clone(), args.limitador.as_deref(), &args.clients, duration)
            .await
            .context("the admission benchmark")?;
        return Ok(Report { admission: Some(result), ..Report::empty(args) });
    }
    let etcd = if args.skip_etcd || args.state_only { None } else { Some(find_etcd(args.etcd.as_deref(), true)?) };

    let state = match args.state_tenants {
        0 => None,
        tenants => {
            eprintln!("keel: state benchmark, {tenants} tenants ({})", keeld.display());
            Some(state::bench_state(keeld.clone(), tenants, duration).await.context("the state benchmark")?)
        }
    };
    let keel = if args.state_only {
        None
    } else {
        eprintln!("keel: starting 3 nodes ({})", keeld.display());
        Some(bench_keel(keeld.clone(), args, duration).await.context("benchmarking Keel")?)
    };
    let etcd = match etcd {
        Some(binary) => {
            eprintln!("etcd: starting 3 members ({})", binary.display());
            Some(bench_etcd(binary, args, duration).await.context("benchmarking etcd")?)
        }
        None => None,
    };
    Ok(Report { keel, etcd, state, ..Report::empty(args) })
}

async fn bench_keel(keeld: PathBuf, args: &Args, duration: Duration) -> Result<SystemResult> {
    let profile = if keeld.components().any(|c| c.as_os_str() == "release") { "release" } else { "non-release path" };
    let binary = format!(
        "{} ({profile}; raft heartbeat {} ms, election {}–{} ms)",
        keeld.display(),
        args.keel_heartbeat_ms,
        args.keel_election_min_ms,
        args.keel_election_max_ms
    );
    let tuning = RaftTuning {
        heartbeat_interval_ms: args.keel_heartbeat_ms,
        election_timeout_min_ms: args.keel_election_min_ms,
        election_timeout_max_ms: args.keel_election_max_ms,
        ..RaftTuning::default()
    };
    let mut cluster = Cluster::three_with_binary(ClusterOptions { tuning, ..ClusterOptions::default() }, keeld).await?;
    let mut load = Vec::new();
    for (run, clients) in args.clients.iter().copied().enumerate() {
        let leader = cluster.leader().await?;
        let writer = KeelWriter::new(cluster.nodes[leader].channel().await?);
        run_load(writer.clone(), &format!("w{run}"), clients, WARMUP).await?;
        let result = run_load(writer, &format!("r{run}"), clients, duration).await?;
        eprintln!("keel: {clients} clients: {:.0} writes/s", result.ops_per_s);
        load.push(result);
    }
    let mut keyed_load = Vec::new();
    for (run, clients) in args.clients.iter().copied().enumerate() {
        let leader = cluster.leader().await?;
        let writer = KeelWriter::keyed(cluster.nodes[leader].channel().await?);
        run_load(writer.clone(), &format!("kw{run}"), clients, WARMUP).await?;
        let result = run_load(writer, &format!("kr{run}"), clients, duration).await?;
        eprintln!("keel: {clients} clients, keyed: {:.0} writes/s", result.ops_per_s);
        keyed_load.push(result);
    }
    let mut failover_ms = Vec::new();
    for trial in 0..args.trials {
        cluster.converged().await?;
        let leader = cluster.leader().await?;
        let mut survivors = Vec::new();
        for (index, node) in cluster.nodes.iter().enumerate().filter(|(i, _)| *i != leader) {
            survivors.push(KeelWriter::new(node.channel().await.with_context(|| format!("node {index}"))?));
        }
        let node = &mut cluster.nodes[leader];
        let elapsed = measure_failover(survivors, &format!("f{trial}"), || node.kill_9()).await?;
        eprintln!("keel: failover trial {trial}: {:.0} ms", elapsed.as_secs_f64() * 1000.0);
        failover_ms.push(elapsed.as_secs_f64() * 1000.0);
        cluster.nodes[leader].restart().await?;
        cluster.converged().await?;
    }
    Ok(SystemResult { binary, load, keyed_load, failover_ms })
}

async fn bench_etcd(binary_path: PathBuf, args: &Args, duration: Duration) -> Result<SystemResult> {
    let binary = format!("{} ({})", binary_path.display(), etcd_version(&binary_path));
    let mut cluster = EtcdCluster::start(&binary_path, CLUSTER_SIZE).await?;
    let mut load = Vec::new();
    for (run, clients) in args.clients.iter().copied().enumerate() {
        let leader = cluster.leader().await?;
        let writer = EtcdWriter::new(cluster.members[leader].channel()?);
        run_load(writer.clone(), &format!("w{run}"), clients, WARMUP).await?;
        let result = run_load(writer, &format!("r{run}"), clients, duration).await?;
        eprintln!("etcd: {clients} clients: {:.0} writes/s", result.ops_per_s);
        load.push(result);
    }
    let mut failover_ms = Vec::new();
    for trial in 0..args.trials {
        cluster.converged().await?;
        let leader = cluster.leader().await?;
        let mut survivors = Vec::new();
        for member in cluster.members.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, m)| m) {
            survivors.push(EtcdWriter::new(member.channel()?));
        }
        let member = &mut cluster.members[leader];
        let elapsed = measure_failover(survivors, &format!("f{trial}"), || member.kill_9()).await?;
        eprintln!("etcd: failover trial {trial}: {:.0} ms", elapsed.as_secs_f64() * 1000.0);
        failover_ms.push(elapsed.as_secs_f64() * 1000.0);
        cluster.members[leader].restart()?;
        cluster.converged().await?;
    }
    Ok(SystemResult { binary, load, keyed_load: Vec::new(), failover_ms })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn failover_summary(ms: &[f64]) -> (Option<f64>, Option<f64>) {
    let durations: Vec<Duration> = ms.iter().map(|m| Duration::from_secs_f64(m / 1000.0)).collect();
    let median = median(&durations).map(|d| d.as_secs_f64() * 1000.0);
    let max = ms.iter().copied().fold(None, |acc: Option<f64>, m| Some(acc.map_or(m, |a| a.max(m))));
    (median, max)
}

/// The report as a markdown table plus the machine and binaries.
pub fn render_markdown(report: &Report) -> String {
    let mut out = String::new();
    if let Some(state) = &report.state {
        render_state(&mut out, state);
    }
    if let Some(keel) = &report.keel {
        render_comparison(&mut out, report, keel);
    }
    if let Some(admission) = &report.admission {
        admission::render(&mut out, admission);
    }
    if let Some(audit) = &report.audit {
        admission::render_audit(&mut out, audit);
    }
    if let Some(auth) = &report.auth {
        auth::render(&mut out, auth);
    }
    let _ = writeln!(out, "- machine: {} CPUs, {}", report.cpus, report.cpu_model);
    let _ = writeln!(out, "- keel-bench profile: {}; {} s per load run", report.bench_profile, report.duration_s);
    if let Some(keel) = &report.keel {
        let _ = writeln!(out, "- keeld: {}", keel.binary);
    }
    match &report.etcd {
        Some(etcd) => {
            let _ = writeln!(out, "- etcd: {}", etcd.binary);
        }
        None => {
            let _ = writeln!(out, "- etcd: skipped");
        }
    }
    out
}

/// The state benchmark: each measure beside its goal.
fn render_state(out: &mut String, state: &state::StateResult) {
    let n = state.tenants;
    let _ = writeln!(out, "| with {n} tenants | measured | goal |");
    let _ = writeln!(out, "|---|---:|---:|");
    let _ = writeln!(out, "| preload, s | {:.1} | — |", state.preload_s);
    let _ = writeln!(
        out,
        "| GetTenant (serializable, follower) p50 / p99 ms during {:.0} writes/s and snapshot builds | {:.2} / {:.2} | p99 ≤ 10 |",
        state.load_during_probes.ops_per_s,
        us_to_ms(state.get_tenant_p50_us),
        us_to_ms(state.get_tenant_p99_us)
    );
    let _ = writeln!(out, "| /readyz p99 ms (same load) | {:.2} | ≤ 5 |", us_to_ms(state.readyz_p99_us));
    let ratio = state.status_p99_us_large as f64 / state.status_p99_us_empty.max(1) as f64;
    let _ = writeln!(
        out,
        "| GetStatus p99 ms (follower, idle): empty state / {n} tenants; ratio | {:.2} / {:.2}; {ratio:.2} | independent of state |",
        us_to_ms(state.status_p99_us_empty),
        us_to_ms(state.status_p99_us_large)
    );
    let _ = writeln!(out, "| kill -9 of a follower → ready, ms | {:.0} | ≤ 2000 |", state.restart_to_ready_ms);
    let runs: Vec<String> = state.write_p99_ms_runs.iter().map(|ms| format!("{ms:.1}")).collect();
    let drift = match (state.write_p99_ms_runs.first(), state.write_p99_ms_runs.last()) {
        (Some(first), Some(last)) if *first > 0.0 => format!("{:.2}", last / first),
        _ => "—".to_owned(),
    };
    let _ = writeln!(
        out,
        "| write p99 ms, 64 clients, consecutive runs; last/first | {}; {drift} | ≤ 1.3 |",
        runs.join(", ")
    );
    let _ = writeln!(out, "| samples per probe | {} | — |", state.probe_samples);
    let _ = writeln!(out);
}

/// Keel against etcd.
fn render_comparison(out: &mut String, report: &Report, keel_result: &SystemResult) {
    let _ = writeln!(out, "| workload | Keel | etcd | Keel/etcd |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let mut row = |name: String, keel: Option<f64>, etcd: Option<f64>, digits: usize| {
        let cell = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.digits$}"));
        let ratio = match (keel, etcd) {
            (Some(k), Some(e)) if e > 0.0 => format!("{:.2}", k / e),
            _ => "—".to_owned(),
        };
        let _ = writeln!(out, "| {name} | {} | {} | {ratio} |", cell(keel), cell(etcd));
    };
    for (index, keel) in keel_result.load.iter().enumerate() {
        let etcd = report.etcd.as_ref().and_then(|e| e.load.get(index));
        let c = keel.clients;
        let s = if c == 1 { "" } else { "s" };
        row(format!("writes/s, {c} client{s} (higher is better)"), Some(keel.ops_per_s), etcd.map(|e| e.ops_per_s), 0);
        row(format!("write p50 ms, {c} client{s}"), Some(us_to_ms(keel.p50_us)), etcd.map(|e| us_to_ms(e.p50_us)), 2);
        row(format!("write p99 ms, {c} client{s}"), Some(us_to_ms(keel.p99_us)), etcd.map(|e| us_to_ms(e.p99_us)), 2);
        let errors = keel.errors + etcd.map_or(0, |e| e.errors);
        if errors > 0 {
            row(format!("failed writes, {c} client{s}"), Some(keel.errors as f64), etcd.map(|e| e.errors as f64), 0);
        }
    }
    // etcd has no idempotency keys: its column is its plain write, the
    // nearest thing it offers.
    for (index, keel) in keel_result.keyed_load.iter().enumerate() {
        let etcd = report.etcd.as_ref().and_then(|e| e.load.get(index));
        let c = keel.clients;
        let s = if c == 1 { "" } else { "s" };
        row(
            format!("keyed writes/s (idempotency key; etcd: plain), {c} client{s}"),
            Some(keel.ops_per_s),
            etcd.map(|e| e.ops_per_s),
            0,
        );
        row(
            format!("keyed write p99 ms, {c} client{s}"),
            Some(us_to_ms(keel.p99_us)),
            etcd.map(|e| us_to_ms(e.p99_us)),
            2,
        );
    }
    let (keel_median, keel_max) = failover_summary(&keel_result.failover_ms);
    let (etcd_median, etcd_max) =
        report.etcd.as_ref().map(|e| failover_summary(&e.failover_ms)).unwrap_or((None, None));
    let trials = keel_result.failover_ms.len();
    row(format!("failover ms (kill -9 leader → first ack), median of {trials}"), keel_median, etcd_median, 0);
    row(format!("failover ms, max of {trials}"), keel_max, etcd_max, 0);
    let _ = writeln!(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arguments_with_defaults() -> Result<()> {
        let args = Args::try_parse_from(["keel-bench"])?;
        assert_eq!((args.duration_s, args.trials, args.clients.clone()), (10, 10, vec![1, 64]));
        assert!(!args.skip_etcd && !args.json && args.keeld.is_none());
        args.validate()?;

        let args = Args::try_parse_from([
            "keel-bench",
            "--keeld",
            "/x/keeld",
            "--etcd",
            "/usr/bin/etcd",
            "--duration-s",
            "5",
            "--trials",
            "3",
            "--clients",
            "1,8,64",
            "--skip-etcd",
            "--json",
        ])?;
        assert_eq!(args.keeld_path(), PathBuf::from("/x/keeld"));
        assert_eq!(args.etcd, Some(PathBuf::from("/usr/bin/etcd")));
        assert_eq!((args.duration_s, args.trials, args.clients.clone()), (5, 3, vec![1, 8, 64]));
        assert!(args.skip_etcd && args.json);

        assert!(Args::try_parse_from(["keel-bench", "--clients", "0"])?.validate().is_err());
        assert!(Args::try_parse_from(["keel-bench", "--duration-s", "0"])?.validate().is_err());
        assert!(Args::try_parse_from(["keel-bench", "--clients", "x"]).is_err());
        Ok(())
    }
}
