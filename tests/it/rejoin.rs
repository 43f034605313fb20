//! Members that replace themselves (issue 13), on real 3-node clusters of
//! keeld processes: a member whose data dir is wiped rejoins by itself
//! (the leader removes its old incarnation, adds it back as a learner,
//! waits until it caught up, promotes it) without losing an acknowledged
//! write; the dead-member rule removes a member gone for good, the cluster
//! stays writable, and the member rejoins when it comes back.

use crate::cluster_harness::{Cluster, ClusterOptions};
use crate::cluster_membership::peer_client;
use crate::fixture::{Fixture, reason_of};
use anyhow::{Context, Result, bail, ensure};
use keel_chaos::process::AuthChannel as Channel;
use keel_proto::raft::v1 as raft_pb;
use keel_proto::v1 as pb;
use std::time::{Duration, Instant};

/// The bound on a rejoin, start to voter.
const REJOIN_DEADLINE: Duration = Duration::from_secs(120);
/// How long the dead-member rule may take past its threshold.
const REMOVAL_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
/// How long a write may be retried while the cluster has no leader.
const WRITE_RETRY_DEADLINE: Duration = Duration::from_secs(15);
/// `cluster.remove_unreachable_after_ms` in the dead-member test.
const REMOVE_AFTER_MS: u64 = 3_000;

async fn tenants(channel: Channel) -> pb::tenant_service_client::TenantServiceClient<Channel> {
    pb::tenant_service_client::TenantServiceClient::new(channel)
}

/// Creates `count` tenants named `{prefix}-{n}` through member `index`;
/// returns their ids (every one acknowledged). A retryable refusal (no
/// leader for a moment, after a member stopped) is retried, as clients do.
async fn write_tenants(cluster: &Cluster, index: usize, prefix: &str, count: usize) -> Result<Vec<String>> {
    let mut client = tenants(cluster.nodes[index].channel().await?).await;
    let mut ids = Vec::new();
    for n in 0..count {
        let id = format!("{prefix}-{n}");
        let until = Instant::now() + WRITE_RETRY_DEADLINE;
        loop {
            match client.create_tenant(Fixture::tenant_request(&id)).await {
                Ok(_) => break,
                Err(status) if status.code() == tonic::Code::Unavailable && Instant::now() < until => {
                    tokio::time::sleep(POLL).await;
                }
                Err(status) => bail!("creating {id}: {status:?}"),
            }
        }
        ids.push(id);
    }
    Ok(ids)
}

/// Every id in `ids` reads back, linearizably, through member `index`.
async fn all_readable(cluster: &Cluster, index: usize, ids: &[String]) -> Result<()> {
    let mut client = tenants(cluster.nodes[index].channel().await?).await;
    for id in ids {
        let request = pb::GetTenantRequest { name: id.clone(), consistency: pb::ReadConsistency::Linearizable as i32 };
        client.get_tenant(request).await.with_context(|| format!("acknowledged tenant {id} is gone"))?;
    }
    Ok(())
}

/// Waits until member `index` reports every member of `expected_voters` a
/// voter, itself a settled member, and a leader.
async fn wait_voters(cluster: &Cluster, index: usize, expected_voters: &[u64], deadline: Duration) -> Result<()> {
    let until = Instant::now() + deadline;
    let mut last = String::new();
    while Instant::now() < until {
        if let Ok(status) = cluster.nodes[index].status().await {
            let mut voters: Vec<u64> = status.members.iter().filter(|m| m.is_voter).map(|m| m.node_id).collect();
            voters.sort_unstable();
            if voters == expected_voters && status.standing == "member" && status.leader_id != 0 {
                return Ok(());
            }
            last = format!(
                "voters {voters:?}, standing {} ({}), leader {}",
                status.standing, status.standing_detail, status.leader_id
            );
        }
        tokio::time::sleep(POLL).await;
    }
    bail!("member {index} did not report voters {expected_voters:?} within {deadline:?}; last: {last}")
}

/// The `keel-members` events, read from the start of the history through member `index`.
async fn member_events(cluster: &Cluster, index: usize) -> Result<Vec<serde_json::Value>> {
    let mut client = pb::event_service_client::EventServiceClient::new(cluster.nodes[index].channel().await?);
    let request = pb::WatchRequest {
        from_revision: 1,
        kinds: vec!["USER_EVENT".into()],
        progress_interval_ms: 100,
        ..pb::WatchRequest::default()
    };
    let mut stream = client.watch(request).await?.into_inner();
    let applied = cluster.nodes[index].status().await?.applied_index;
    let mut found = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let Ok(Ok(Some(message))) = tokio::time::timeout(Duration::from_secs(2), stream.message()).await else {
            break;
        };
        for event in message.events {
            if event.attributes.get("topic").map(String::as_str) == Some("keel-members") {
                found.push(serde_json::from_slice(&event.payload)?);
            }
        }
        if message.progress_revision >= applied {
            break;
        }
    }
    Ok(found)
}

#[tokio::test]
async fn a_member_whose_data_dir_is_wiped_rejoins_as_a_voter_without_a_manual_step() -> Result<()> {
    // mTLS between members: the rejoining member is admitted by its certificate.
    let mut cluster = Cluster::three(ClusterOptions { is_tls: true, ..ClusterOptions::default() }).await?;
    let leader = cluster.leader().await?;
    let acknowledged = write_tenants(&cluster, leader, "before", 40).await?;
    // The worst case: the lowest id, the member that initialised the cluster
    // (started as before, it would initialise a second one).
    let victim = 0;
    let victim_id = cluster.ids[victim];
    let exited = cluster.nodes[victim].terminate()?;
    ensure!(exited.success(), "member {victim} exited with {exited}");
    std::fs::remove_dir_all(cluster.nodes[victim].data_dir())?;
    let others: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let acknowledged_meanwhile = write_tenants(&cluster, others[0], "meanwhile", 10).await?;

    let log_before = cluster.nodes[victim].log().len();
    let started = Instant::now();
    cluster.nodes[victim].restart().await?; // ready: settled, with a leader
    wait_voters(&cluster, victim, &[1, 2, 3], REJOIN_DEADLINE).await?;
    println!("member {victim_id} rejoined as a voter in {:?}", started.elapsed());
    for index in 0..3 {
        wait_voters(&cluster, index, &[1, 2, 3], Duration::from_secs(10)).await?;
    }

    // Nothing acknowledged was lost, read through the rejoined member.
    let acknowledged: Vec<String> = acknowledged.into_iter().chain(acknowledged_meanwhile).collect();
    all_readable(&cluster, victim, &acknowledged).await?;
    let written_after = write_tenants(&cluster, victim, "after", 5).await?;
    all_readable(&cluster, others[1], &written_after).await?;
    cluster.converged().await?;

    // The leader says what it did, in status and as an event.
    let leader = cluster.leader().await?;
    let status = cluster.nodes[leader].status().await?;
    let replaced: Vec<&pb::MemberChange> =
        status.member_changes.iter().filter(|c| c.node_id == victim_id && c.kind == "replaced").collect();
    // A later leader may not have made the change itself; the event is in the log either way.
    let events = member_events(&cluster, victim).await?;
    ensure!(
        events.iter().any(|e| e["kind"] == "replaced" && e["node_id"] == victim_id),
        "no replaced event for {victim_id}: {events:?} (leader's changes: {replaced:?})"
    );
    // The wiped member never initialised a cluster of its own.
    let log = cluster.nodes[victim].log().get(log_before..).unwrap_or_default().to_owned();
    ensure!(!log.contains("initialising a new cluster"), "the wiped initializer initialised again:\n{log}");
    ensure!(log.contains("rejoined: a voter again"), "no rejoin in the member's log:\n{log}");
    Ok(())
}

#[tokio::test]
async fn the_dead_member_rule_removes_a_member_gone_for_good_and_it_rejoins_when_back() -> Result<()> {
    let options = ClusterOptions { dead_member_rule: Some((REMOVE_AFTER_MS, 2)), ..ClusterOptions::default() };
    let mut cluster = Cluster::three(options).await?;
    let leader = cluster.leader().await?;
    let victim = (leader + 1) % 3;
    let victim_id = cluster.ids[victim];
    let survivor = (leader + 2) % 3;
    let mut remaining: Vec<u64> = cluster.ids.iter().copied().filter(|id| *id != victim_id).collect();
    remaining.sort_unstable();
    cluster.nodes[victim].kill_9()?;

    let killed_at = Instant::now();
    wait_voters(&cluster, leader, &remaining, Duration::from_millis(REMOVE_AFTER_MS) + REMOVAL_DEADLINE).await?;
    let took = killed_at.elapsed();
    ensure!(took >= Duration::from_millis(REMOVE_AFTER_MS), "removed after {took:?}, before the threshold");
    println!("member {victim_id} removed {took:?} after it died");
    let status = cluster.nodes[leader].status().await?;
    ensure!(
        status.member_changes.iter().any(|c| c.node_id == victim_id && c.kind == "removed"),
        "{:?}",
        status.member_changes
    );
    // Still writable with two voters, and the survivor agrees on the membership.
    let written = write_tenants(&cluster, survivor, "two-voters", 5).await?;
    wait_voters(&cluster, survivor, &remaining, Duration::from_secs(10)).await?;

    // The member comes back on a new disk (same id, same addresses): it rejoins by itself.
    std::fs::remove_dir_all(cluster.nodes[victim].data_dir())?;
    cluster.nodes[victim].restart().await?;
    wait_voters(&cluster, victim, &[1, 2, 3], REJOIN_DEADLINE).await?;
    all_readable(&cluster, victim, &written).await?;
    cluster.converged().await?;
    let events = member_events(&cluster, victim).await?;
    ensure!(events.iter().any(|e| e["kind"] == "removed" && e["node_id"] == victim_id), "{events:?}");
    Ok(())
}

#[tokio::test]
async fn a_member_cannot_ask_the_leader_to_replace_another() -> Result<()> {
    let cluster = Cluster::three(ClusterOptions { is_tls: true, ..ClusterOptions::default() }).await?;
    let leader = cluster.leader().await?;
    let (asker, victim) = ((leader + 1) % 3, (leader + 2) % 3);
    let statuses = cluster.statuses().await?;
    let member = |index: usize| -> Result<pb::Member> {
        statuses[leader].members.iter().find(|m| m.node_id == cluster.ids[index]).cloned().context("member")
    };
    let (victim_member, leader_peer) = (member(victim)?, member(leader)?.peer_addr);
    let (cert, key) = cluster.member_identity(asker)?;
    let mut client = peer_client(&cluster, &leader_peer, tonic::transport::Identity::from_pem(&cert, &key)).await?;
    // The asker's certificate does not name the victim's host: refused, nothing changes.
    let mut request = tonic::Request::new(raft_pb::RejoinRequest {
        node_id: victim_member.node_id,
        client_addr: victim_member.client_addr.clone(),
        peer_addr: victim_member.peer_addr.clone(),
        incarnation: "hostile".into(),
    });
    request.metadata_mut().insert("keel-cluster-id", cluster.cluster_id.parse()?);
    let refused = client.rejoin(request).await.err().context("a Rejoin for another member was accepted")?;
    ensure!(refused.code() == tonic::Code::PermissionDenied, "{refused:?}");
    ensure!(reason_of(&refused) == "PEER_NOT_MEMBER", "{refused:?}");
    // Oversized fields: INVALID_ARGUMENT before anything else.
    let mut request = tonic::Request::new(raft_pb::RejoinRequest {
        node_id: victim_member.node_id,
        client_addr: victim_member.client_addr.clone(),
        peer_addr: "x".repeat(10_000),
        incarnation: "big".into(),
    });
    request.metadata_mut().insert("keel-cluster-id", cluster.cluster_id.parse()?);
    let refused = client.rejoin(request).await.err().context("an oversized Rejoin was accepted")?;
    ensure!(refused.code() == tonic::Code::InvalidArgument, "{refused:?}");
    let statuses = cluster.statuses().await?;
    ensure!(statuses.iter().all(|s| s.members.iter().all(|m| m.is_voter)), "membership changed: {statuses:?}");
    ensure!(statuses.iter().all(|s| s.member_changes.is_empty()), "a change was made: {statuses:?}");
    Ok(())
}

#[tokio::test]
async fn a_member_stopped_while_it_rejoins_decides_again_after_a_restart() -> Result<()> {
    let mut cluster = Cluster::three(ClusterOptions::default()).await?;
    let leader = cluster.leader().await?;
    write_tenants(&cluster, leader, "before", 10).await?;
    let victim = (leader + 1) % 3;
    cluster.nodes[victim].kill_9()?;
    let data_dir = cluster.nodes[victim].data_dir();
    std::fs::remove_dir_all(&data_dir)?;
    // Started (not waited for): killed again while it is still unsettled.
    cluster.nodes[victim].launch().await?;
    let marker = data_dir.join("UNSETTLED");
    let until = Instant::now() + Duration::from_secs(10);
    while !marker.exists() {
        ensure!(Instant::now() < until, "no UNSETTLED marker in {}", data_dir.display());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.nodes[victim].kill_9()?;
    // Its store may hold entries or a vote by now; the marker says they
    // cannot be trusted, so the next start decides (and rejoins) again.
    let still_unsettled = marker.exists();
    let log_before = cluster.nodes[victim].log().len();
    cluster.nodes[victim].restart().await?;
    wait_voters(&cluster, victim, &[1, 2, 3], REJOIN_DEADLINE).await?;
    let log = cluster.nodes[victim].log().get(log_before..).unwrap_or_default().to_owned();
    if still_unsettled {
        ensure!(log.contains("\"deciding\""), "restarted unsettled but did not decide again:\n{log}");
    }
    ensure!(!marker.exists(), "the marker outlived the rejoin");
    cluster.converged().await?;
    Ok(())
}
