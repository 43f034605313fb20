//! Real 3-node clusters of keeld processes on loopback: election, writes
//! through followers, consistent reads, and `kill -9` of the leader under a
//! steady write load.

use crate::cluster_harness::{Cluster, ClusterOptions, RaftTuning};
use crate::fixture::{Fixture, reason_of};
use anyhow::{Context, Result, bail, ensure};
use keel_chaos::process::AuthChannel as Channel;
use keel_proto::v1 as pb;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Writes the load test aims for after the leader is killed.
const WRITES_AFTER_KILL: usize = 20;
/// Bound on the whole load loop.
const LOAD_DEADLINE: Duration = Duration::from_secs(60);

async fn tenants(channel: Channel) -> pb::tenant_service_client::TenantServiceClient<Channel> {
    pb::tenant_service_client::TenantServiceClient::new(channel)
}

fn follower_indices(leader: usize, n: usize) -> Vec<usize> {
    (0..n).filter(|i| *i != leader).collect()
}

#[tokio::test]
async fn three_nodes_elect_one_leader_and_agree_on_the_digest() -> Result<()> {
    let cluster = Cluster::three(ClusterOptions::default()).await?;
    let leader = cluster.leader().await?;
    let statuses = cluster.statuses().await?;
    for status in &statuses {
        ensure!(status.members.len() == 3, "members: {:?}", status.members);
        ensure!(status.members.iter().all(|m| m.is_voter));
        ensure!(status.leader_id == cluster.ids[leader]);
    }
    let regions: BTreeSet<&str> = statuses[0].members.iter().map(|m| m.region.as_str()).collect();
    ensure!(regions == BTreeSet::from(["eu-west", "us-east"]), "{regions:?}");
    cluster.converged().await?;

    // Any member reports every member reachable, with its (applied index, digest).
    let (applied_index, digest) = cluster.converged().await?;
    let follower = (leader + 1) % 3;
    let health = cluster.nodes[follower].status().await?.member_health;
    ensure!(health.len() == 3 && health.iter().all(|h| h.is_reachable), "{health:?}");
    ensure!(
        health.iter().all(|h| h.applied_index == Some(applied_index) && h.state_digest.as_deref() == Some(&digest)),
        "{health:?}"
    );

    // A killed member is reported unreachable, without holding up the answer.
    let mut cluster = cluster;
    let victim = (leader + 2) % 3;
    let victim_id = cluster.ids[victim];
    cluster.nodes[victim].kill_9()?;
    let started = std::time::Instant::now();
    let health = cluster.nodes[leader].status().await?.member_health;
    ensure!(started.elapsed() < Duration::from_secs(3), "status waited {:?}", started.elapsed());
    let dead = health.iter().find(|h| h.node_id == victim_id).context("victim's health")?;
    ensure!(!dead.is_reachable && dead.applied_index.is_none(), "{dead:?}");
    Ok(())
}

#[tokio::test]
async fn writes_through_followers_are_read_linearizably_everywhere() -> Result<()> {
    let cluster = Cluster::three(ClusterOptions::default()).await?;
    let leader = cluster.leader().await?;
    let followers = follower_indices(leader, 3);
    let fixture = Fixture::with_root(cluster.root.clone());

    // Key added through one follower, manifest published through the other.
    let publisher = fixture.add_publisher_key(&cluster.nodes[followers[0]]).await?;
    let published =
        fixture.publish(&cluster.nodes[followers[1]], &Fixture::manifest("billing", "1.0.0"), &publisher).await?;
    ensure!(published.created);

    // A linearizable read on every node sees it at once.
    for node in &cluster.nodes {
        let mut registry = pb::registry_service_client::RegistryServiceClient::new(node.channel().await?);
        let request = pb::GetEngineVersionRequest {
            engine: "billing".into(),
            version: "1.0.0".into(),
            consistency: pb::ReadConsistency::Linearizable as i32,
        };
        let response = registry.get_engine_version(request).await?;
        let revision: u64 =
            response.metadata().get("keel-revision").and_then(|v| v.to_str().ok()).unwrap_or("0").parse()?;
        ensure!(revision >= response.get_ref().publish_revision, "read at {revision} before the publish");
    }

    // A tenant created through a follower; a serializable read reports the revision it used.
    let tenant = fixture.create_tenant(&cluster.nodes[followers[0]], "acme").await?;
    let mut client = tenants(cluster.nodes[followers[1]].channel().await?).await;
    let request = pb::GetTenantRequest { name: "acme".into(), consistency: pb::ReadConsistency::Serializable as i32 };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.get_tenant(request.clone()).await {
            Ok(response) => {
                let revision: u64 =
                    response.metadata().get("keel-revision").and_then(|v| v.to_str().ok()).unwrap_or("0").parse()?;
                ensure!(revision >= tenant.create_revision);
                break;
            }
            // A serializable read may lag; it must say so by not finding it yet, never by a wrong answer.
            Err(status) if reason_of(&status) == "TENANT_NOT_FOUND" && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => bail!("serializable read failed: {status:?}"),
        }
    }
    cluster.converged().await?;
    Ok(())
}

/// Creates tenant `t-{i}` through any running node, trying each in turn;
/// returns whether the write was acknowledged.
async fn write_once(cluster: &Cluster, i: usize) -> bool {
    for node in cluster.nodes.iter().filter(|n| n.is_running()) {
        let Ok(channel) = node.channel().await else { continue };
        let mut client = tenants(channel).await;
        let mut request = tonic::Request::new(Fixture::tenant_request(&format!("t-{i:04}")));
        request.set_timeout(Duration::from_secs(3));
        match client.create_tenant(request).await {
            Ok(_) => return true,
            // An earlier, ambiguous attempt applied it: acknowledged now.
            Err(status) if reason_of(&status) == "TENANT_ALREADY_EXISTS" => return true,
            Err(_) => continue,
        }
    }
    false
}

#[tokio::test]
async fn killing_the_leader_under_load_loses_no_acknowledged_write() -> Result<()> {
    // Small snapshots, so the restarted node must catch up by snapshot install.
    let tuning = RaftTuning { snapshot_after_entries: 20, logs_kept_after_snapshot: 5, ..RaftTuning::default() };
    let mut cluster = Cluster::three(ClusterOptions { tuning, ..ClusterOptions::default() }).await?;
    let old_leader = cluster.leader().await?;

    let started = Instant::now();
    let mut acknowledged = Vec::new();
    let mut i = 0;
    // Steady load; the leader dies after 15 writes; continue until enough writes land on the new leader.
    while started.elapsed() < LOAD_DEADLINE {
        if i == 15 {
            cluster.nodes[old_leader].kill_9()?;
        }
        if write_once(&cluster, i).await {
            acknowledged.push(format!("t-{i:04}"));
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        i += 1;
        if acknowledged.len() >= 15 + WRITES_AFTER_KILL {
            break;
        }
    }
    ensure!(acknowledged.len() >= 15 + WRITES_AFTER_KILL, "only {} writes acknowledged", acknowledged.len());
    let new_leader = cluster.leader().await?;
    ensure!(new_leader != old_leader);

    // Every acknowledged write is on every survivor, and they agree on the digest.
    let (_, digest) = cluster.converged().await?;
    for node in cluster.nodes.iter().filter(|n| n.is_running()) {
        let mut client = tenants(node.channel().await?).await;
        let request = pb::ListTenantsRequest {
            page_size: 1000,
            page_token: String::new(),
            consistency: pb::ReadConsistency::Serializable as i32,
        };
        let present: BTreeSet<String> =
            client.list_tenants(request).await?.into_inner().tenants.into_iter().map(|t| t.tenant_id).collect();
        for tenant in &acknowledged {
            ensure!(present.contains(tenant), "acknowledged {tenant} missing on a survivor");
        }
    }

    // The killed node restarts and catches up (by snapshot install: its log was purged meanwhile).
    cluster.nodes[old_leader].restart().await?;
    let (_, digest_after) = cluster.converged().await?;
    ensure!(cluster.statuses().await?.len() == 3);
    // No writes since: a restart may add a blank leader entry, never a state change.
    ensure!(digest_after == digest, "digest moved from {digest} to {digest_after} without writes");
    Ok(())
}

/// A leader stopped with SIGTERM hands leadership over before it exits: the
/// others have a new leader at once, not after the lease and an election
/// timeout, and a write right after the stop succeeds.
#[tokio::test]
async fn a_leader_stopped_with_sigterm_hands_leadership_over_before_it_exits() -> Result<()> {
    let mut cluster = Cluster::three(ClusterOptions::default()).await?;
    let leader = cluster.leader().await?;
    let old = cluster.ids[leader];
    let exited = cluster.nodes[leader].terminate()?;
    ensure!(exited.success(), "keeld exited with {exited}");
    ensure!(cluster.nodes[leader].log().contains("leadership handed over"), "no hand-over in the log");
    // Right after the exit the others already follow a new leader (an
    // election after a crash needs the lease, 1 s here, and more).
    let stopped = Instant::now();
    let others: Vec<usize> = (0..3).filter(|index| *index != leader).collect();
    let mut new_leader = 0;
    for index in &others {
        let status = cluster.nodes[*index].status().await?;
        ensure!(status.leader_id != old && status.leader_id != 0, "{status:?}");
        new_leader = status.leader_id;
    }
    ensure!(stopped.elapsed() < Duration::from_millis(900), "asking took {:?}", stopped.elapsed());
    let target = others.iter().copied().find(|index| cluster.ids[*index] == new_leader).context("the new leader")?;
    let mut client = tenants(cluster.nodes[target].channel().await?).await;
    client.create_tenant(Fixture::tenant_request("after-stop")).await?;
    Ok(())
}

/// Every member stopped with SIGTERM and restarted, one at a time, while a
/// writer keeps writing: no gap between acknowledged writes is as long as a
/// leader lease (1 s here) — a stopping leader hands over instead of
/// leaving the others to wait out the lease and an election, takes no part
/// in elections while it drains, and a restarted member does not campaign
/// before it heard from the leader.
// Multi-threaded: `terminate` waits for the process on this thread, and the
// writer must keep writing meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_steady_writes_pauses_them_only_for_hand_overs() -> Result<()> {
    const GAP_MAX: Duration = Duration::from_millis(1000);
    let mut cluster = Cluster::three(ClusterOptions::default()).await?;
    cluster.leader().await?;
    let mut channels = Vec::new();
    for node in &cluster.nodes {
        channels.push(node.channel().await?);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), 0u64);
            let mut reasons = std::collections::BTreeMap::<String, u64>::new();
            let mut target = 0usize;
            for n in 0..100_000u64 {
                if stop.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                let mut client = tenants(channels[target].clone()).await;
                let mut request = tonic::Request::new(Fixture::tenant_request(&format!("roll-{n}")));
                request.set_timeout(Duration::from_millis(500));
                // The deadline on the client's side too, as keel-client keeps it:
                // a member that stops may leave its connection hanging (hyper#4170).
                let answer = tokio::time::timeout(Duration::from_millis(500), client.create_tenant(request)).await;
                let answer = answer.unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("client deadline")));
                match answer {
                    Ok(_) => acked.push(Instant::now()),
                    Err(status) => {
                        // Ask the next member (a stopped one, a follower without a leader yet).
                        failed += 1;
                        *reasons.entry(format!("{}@{target}", reason_of(&status))).or_default() += 1;
                        target = (target + 1) % channels.len();
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            println!("failures: {reasons:?}");
            (acked, failed)
        })
    };
    for index in 0..3 {
        let exited = cluster.nodes[index].terminate()?;
        ensure!(exited.success(), "member {index} exited with {exited}");
        cluster.nodes[index].restart().await?;
        // Caught up under the writes (they never stop, so "converged" never holds):
        // one leader for all, applied indices within a few hundred entries.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The restarted member's own view: one health report with every
            // member's applied index, gathered at once.
            let health = cluster.nodes[index].status().await?.member_health;
            let applied: Vec<u64> = health.iter().filter_map(|member| member.applied_index).collect();
            let (low, high) = (applied.iter().min().copied().unwrap_or(0), applied.iter().max().copied().unwrap_or(0));
            if applied.len() == 3 && high - low <= 300 {
                break;
            }
            ensure!(Instant::now() < deadline, "member {index} did not catch up: {applied:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (acked, failed) = writer.await?;
    ensure!(acked.len() > 20, "too few writes: {}", acked.len());
    let longest = acked.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap_or_default();
    println!("{} writes acknowledged, {failed} attempts failed, longest gap {longest:?}", acked.len());
    if longest >= GAP_MAX {
        for (index, node) in cluster.nodes.iter().enumerate() {
            let log = node.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|line| {
                    ["hand", "leader", "elect", "vote", "WARN", "ERROR", "stopping", "shutting", "serving", "standing"]
                        .iter()
                        .any(|word| line.contains(word))
                        || std::env::var_os("KEELTEST_FULL_LOGS").is_some()
                            && !line.contains("openraft::replication")
                            && !line.contains("replication_handler")
                })
                .collect();
            println!("--- member {index}:\n{}", lines.join("\n"));
        }
    }
    ensure!(longest < GAP_MAX, "writes stopped for {longest:?} during the rolling restart");
    Ok(())
}
