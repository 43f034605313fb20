//! `keel-campaign`: a chaos campaign against a real 3-member cluster of
//! keeld processes under steady writes. Each round injects one fault, waits
//! (bounded) until every member is a settled voter following one leader
//! again, and measures how long that took and the longest pause between
//! acknowledged writes. At the end every acknowledged write must read back
//! linearizably and every member must report the same state digest.
//!
//! ```text
//!  writers ──CreateTenant (1 s deadline)──► any member ──► acknowledged ids, with their times
//!  round: fault ─► restart ─► all voters, standing "member", one leader, a write acknowledged
//!         ─► recovery time, longest gap
//!  end:   writers stop ─► digests agree ─► every acknowledged id reads back (lost = 0)
//! ```
//!
//! Faults: `kill-leader` (kill -9, restart on its data), `stop-member`
//! (SIGTERM: the graceful stop, restart), `wipe-member` and `wipe-leader`
//! (kill -9, data dir deleted, restart: the member must replace itself).

use crate::bench::workload::{KeelWriter, Writer};
use crate::cluster::{Cluster, ClusterOptions};
use crate::process::AuthChannel;
use anyhow::{Context, Result, bail, ensure};
use keel_proto::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bound on one write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after a failed write before the writer tries the next member.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Bound on a round's recovery (the issue's bound on a member replacing itself is 2 min).
const RECOVERY_DEADLINE: Duration = Duration::from_secs(120);
/// Pause between status rounds while waiting for recovery.
const STATUS_POLL: Duration = Duration::from_millis(100);
/// Bound on reading one acknowledged write back.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// kill -9 the leader, restart it on its data.
    KillLeader,
    /// SIGTERM a random member (graceful stop), restart it.
    StopMember,
    /// kill -9 a random follower, delete its data dir, restart it.
    WipeMember,
    /// kill -9 the leader, delete its data dir, restart it.
    WipeLeader,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill-leader",
            Fault::StopMember => "stop-member",
            Fault::WipeMember => "wipe-member",
            Fault::WipeLeader => "wipe-leader",
        }
    }
}

/// What to run.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "keel-campaign", about = "Chaos campaign against a 3-member keeld cluster under writes")]
pub struct CampaignArgs {
    /// Rounds (one fault each).
    #[arg(long, default_value_t = 8)]
    pub rounds: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Seed of the fault and target choice (a run is repeatable).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Faults to draw from (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub faults: Vec<Fault>,
    /// Print the report as JSON instead of a markdown table.
    #[arg(long)]
    pub json: bool,
}

/// One round's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    /// 1-based.
    pub round: usize,
    /// The fault.
    pub fault: Fault,
    /// The member it hit.
    pub node_id: u64,
    /// From the fault to every member a settled voter under one leader again,
    /// with a write acknowledged after the restart.
    pub recovered_ms: u64,
    /// The longest pause between acknowledged writes during the round.
    pub longest_gap_ms: u64,
    /// Writes acknowledged during the round.
    pub acknowledged: usize,
}

/// The campaign's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignReport {
    /// The seed.
    pub seed: u64,
    /// Per round.
    pub rounds: Vec<RoundReport>,
    /// Writes acknowledged in all.
    pub acknowledged: usize,
    /// Acknowledged writes that did not read back (must be empty).
    pub lost: Vec<String>,
    /// The state digest every member reported at the end, and its revision.
    pub digest: String,
    /// The revision of that digest.
    pub revision: u64,
}

/// The acknowledged writes, with when they were acknowledged.
type Acked = Arc<Mutex<Vec<(String, Instant)>>>;

/// Runs the campaign.
pub async fn run(args: &CampaignArgs) -> Result<CampaignReport> {
    let faults = if args.faults.is_empty() {
        vec![Fault::KillLeader, Fault::StopMember, Fault::WipeMember, Fault::WipeLeader]
    } else {
        args.faults.clone()
    };
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut cluster = Cluster::three(ClusterOptions::default()).await?;
    cluster.leader().await?;
    let mut channels = Vec::new();
    for node in &cluster.nodes {
        channels.push(node.channel().await?);
    }
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..args.writers.max(1))
        .map(|writer| tokio::spawn(write_until(writer, channels.clone(), Arc::clone(&acked), Arc::clone(&stop))))
        .collect();

    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let fault = faults[rng.gen_range(0..faults.len())];
        let leader = cluster.leader().await?;
        let target = match fault {
            Fault::KillLeader | Fault::WipeLeader => leader,
            Fault::StopMember => rng.gen_range(0..cluster.nodes.len()),
            Fault::WipeMember => {
                let followers: Vec<usize> = (0..cluster.nodes.len()).filter(|i| *i != leader).collect();
                followers[rng.gen_range(0..followers.len())]
            }
        };
        let started = Instant::now();
        let acked_before = acked.lock().map(|acked| acked.len()).unwrap_or(0);
        inject(&mut cluster, fault, target).await.with_context(|| format!("round {round}: {}", fault.name()))?;
        let restarted_at = Instant::now();
        let restarted_ms = millis(started.elapsed());
        recovered(&cluster, &acked, restarted_at)
            .await
            .with_context(|| format!("round {round}: {} did not recover", fault.name()))?;
        let recovered_ms = millis(started.elapsed());
        let (acknowledged, longest_gap) = {
            let acked = acked.lock().map_err(|_| anyhow::anyhow!("a writer panicked"))?;
            let during: Vec<Instant> = acked[acked_before..].iter().map(|(_, at)| *at).collect();
            let mut times = vec![started];
            times.extend(during.iter().copied());
            times.push(Instant::now());
            (during.len(), times.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap_or_default())
        };
        let node_id = cluster.ids[target];
        eprintln!(
            "round {round}: {} on node {node_id}: ready again after {restarted_ms} ms, all recovered after {recovered_ms} ms",
            fault.name()
        );
        rounds.push(RoundReport {
            round,
            fault,
            node_id,
            recovered_ms,
            longest_gap_ms: millis(longest_gap),
            acknowledged,
        });
    }

    stop.store(true, Ordering::Release);
    for writer in writers {
        writer.await?;
    }
    let (revision, digest) = cluster.converged().await?;
    let ids: Vec<String> =
        acked.lock().map_err(|_| anyhow::anyhow!("a writer panicked"))?.iter().map(|(id, _)| id.clone()).collect();
    let lost = read_back(&channels, &ids).await?;
    Ok(CampaignReport { seed: args.seed, rounds, acknowledged: ids.len(), lost, digest, revision })
}

/// Applies `fault` to member `target` and starts it again (the restart
/// waits until the member is ready: settled, with a leader).
async fn inject(cluster: &mut Cluster, fault: Fault, target: usize) -> Result<()> {
    let node = &mut cluster.nodes[target];
    match fault {
        Fault::KillLeader | Fault::WipeMember | Fault::WipeLeader => node.kill_9()?,
        Fault::StopMember => {
            // The graceful stop waits for the process; other tasks keep running.
            let exited = tokio::task::block_in_place(|| node.terminate())?;
            ensure!(exited.success(), "exited with {exited}");
        }
    }
    if matches!(fault, Fault::WipeMember | Fault::WipeLeader) {
        std::fs::remove_dir_all(node.data_dir()).with_context(|| format!("deleting {}", node.data_dir().display()))?;
    }
    node.restart().await
}

/// Waits until every member reports every member a voter, itself a settled
/// member, and the same leader, and a write was acknowledged after
/// `restarted_at` (a restarted leader may still be named by the others
/// until their lease runs out).
async fn recovered(cluster: &Cluster, acked: &Acked, restarted_at: Instant) -> Result<()> {
    let mut ids = cluster.ids.clone();
    ids.sort_unstable();
    let until = Instant::now() + RECOVERY_DEADLINE;
    let mut last = String::new();
    while Instant::now() < until {
        // As they are: under the writers the digests never settle.
        let mut statuses = Ok(Vec::new());
        for node in &cluster.nodes {
            match (node.status_once().await, &mut statuses) {
                (Ok(status), Ok(all)) => all.push(status),
                (Err(error), _) => {
                    statuses = Err(error);
                    break;
                }
                (Ok(_), Err(_)) => {}
            }
        }
        if let Ok(statuses) = &statuses {
            let agree = statuses.len() == ids.len()
                && statuses.iter().all(|status| {
                    let mut voters: Vec<u64> =
                        status.members.iter().filter(|m| m.is_voter).map(|m| m.node_id).collect();
                    voters.sort_unstable();
                    voters == ids && status.standing == "member" && status.leader_id == statuses[0].leader_id
                })
                && statuses[0].leader_id != 0;
            let wrote_since = acked.lock().ok().and_then(|acked| acked.last().map(|(_, at)| *at > restarted_at));
            if agree && wrote_since == Some(true) {
                return Ok(());
            }
            last = statuses
                .iter()
                .map(|s| {
                    format!(
                        "node {}: leader {} standing {} ({})",
                        s.node_id, s.leader_id, s.standing, s.standing_detail
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
        }
        if let Err(error) = &statuses {
            last = format!("a status call failed: {error:#}");
        }
        tokio::time::sleep(STATUS_POLL).await;
    }
    bail!("not recovered within {RECOVERY_DEADLINE:?}; last: {last}")
}

/// One writer: unique tenant ids through the members in turn until `stop`.
async fn write_until(writer: usize, channels: Vec<AuthChannel>, acked: Acked, stop: Arc<AtomicBool>) {
    let mut target = writer % channels.len();
    let mut writers: Vec<KeelWriter> = channels.into_iter().map(KeelWriter::new).collect();
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        let id = format!("chaos-{writer}-{n}");
        let written = tokio::time::timeout(WRITE_TIMEOUT, writers[target].write(id.clone(), WRITE_TIMEOUT)).await;
        match written {
            Ok(Ok(())) => {
                if let Ok(mut acked) = acked.lock() {
                    acked.push((id, Instant::now()));
                }
                n += 1;
            }
            // Not acknowledged (it may still have applied: a new id next time).
            _ => {
                n += 1;
                target = (target + 1) % writers.len();
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// The ids among `ids` that do not read back linearizably (through any member).
async fn read_back(channels: &[AuthChannel], ids: &[String]) -> Result<Vec<String>> {
    let mut clients: Vec<_> =
        channels.iter().cloned().map(pb::tenant_service_client::TenantServiceClient::new).collect();
    let mut lost = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let mut found = None;
        for attempt in 0..clients.len() {
            let client = &mut clients[(i + attempt) % channels.len()];
            let request =
                pb::GetTenantRequest { name: id.clone(), consistency: pb::ReadConsistency::Linearizable as i32 };
            match tokio::time::timeout(READ_TIMEOUT, client.get_tenant(request)).await {
                Ok(Ok(_)) => {
                    found = Some(true);
                    break;
                }
                Ok(Err(status)) if status.code() == tonic::Code::NotFound => {
                    found = Some(false);
                    break;
                }
                _ => {} // this member could not answer: ask the next
            }
        }
        match found {
            Some(true) => {}
            Some(false) => lost.push(id.clone()),
            None => bail!("no member answered a read of {id}"),
        }
    }
    Ok(lost)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The report as a markdown table and a summary line.
pub fn render_markdown(report: &CampaignReport) -> String {
    let mut out = String::from(
        "| round | fault | node | recovered ms | longest write gap ms | writes acknowledged |\n|---|---|---|---|---|---|\n",
    );
    for round in &report.rounds {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            round.round,
            round.fault.name(),
            round.node_id,
            round.recovered_ms,
            round.longest_gap_ms,
            round.acknowledged
        );
    }
    out += &format!(
        "\nseed {}: {} writes acknowledged, {} lost; every member at revision {} with digest {}\n",
        report.seed,
        report.acknowledged,
        report.lost.len(),
        report.revision,
        report.digest
    );
    out
}
