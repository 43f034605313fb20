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
