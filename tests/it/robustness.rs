//! Hostile input against a real 3-node cluster (issue 8): poison policies
//! refused at the edge and in `apply` on every member, with every member
//! ready and equal after a `kill -9` of all of them; entries that could
//! never replicate refused before they are proposed.

use crate::cluster_harness::{Cluster, ClusterOptions};
use crate::fixture::{Fixture, reason_of};
use crate::harness::KeelProcess;
use anyhow::{Context, Result, bail, ensure};
use keel_kernel::{Applied, Command, Name, Rejection};
use keel_proto::raft::v1 as raft_pb;
use keel_proto::v1 as pb;
use std::time::{Duration, Instant};
use tonic::Code;

/// The peer format this build speaks (`PEER_FORMAT_VERSION` in keel-node).
const PEER_FORMAT_VERSION: u32 = 4;

fn policy(decision: &str) -> String {
    format!("package keel.policy\n\n{decision}\n")
}

/// One of each kind of poison: a panic inside regorus, one instruction
/// asking for 4 GiB, and a value doubled per instruction.
fn poisons() -> Vec<(&'static str, String, &'static str)> {
    let mut doubling = String::from("package keel.policy\n\na0 := [1, 2, 3, 4]\n");
    for level in 1..=40 {
        doubling.push_str(&format!("a{level} := array.concat(a{}, a{})\n", level - 1, level - 1));
    }
    doubling.push_str("decision := {\"allow\": count(a40) > 0, \"reason\": \"big\"}\n");
    vec![
        ("panic", policy("decision := {\"allow\": false, \"reason\": sprintf(\"%①d\", [1])}"), "panic"),
        (
            "width",
            policy("decision := {\"allow\": false, \"reason\": sprintf(\"%4294967295d\", [1])}"),
            "memory_budget",
        ),
        ("doubling", doubling, "memory_budget"),
    ]
}

/// What a leader answered a forwarded write (mirrors keel-node's
/// `ApplyResponse` and `Forwarded` bincode layout).
#[derive(Debug, serde::Deserialize)]
enum ApplyResponse {
    #[allow(dead_code)]
    Applied(Applied),
    Rejected(Rejection),
    NoCommand,
}

#[derive(Debug, serde::Deserialize)]
struct Forwarded {
    response: ApplyResponse,
    #[allow(dead_code)]
    revision: u64,
}

/// Sends `command` to `node`'s peer port as a forwarded write, as a member
/// (or anyone who reaches a plaintext loopback peer port and names the
/// cluster) could: the edge's checks are skipped and the entry is judged in
/// `apply` on every member.
async fn forward(node: &KeelProcess, cluster_id: &str, command: Command) -> Result<ApplyResponse> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.peer_addr))?.connect().await?;
    let mut peer = raft_pb::raft_peer_client::RaftPeerClient::new(channel);
    // A forwarded `Write`: command, idempotency key, actor.
    let body = bincode::serialize(&(command, Option::<String>::None, Option::<u8>::None))?;
    let mut request = tonic::Request::new(raft_pb::ForwardRequest { format_version: PEER_FORMAT_VERSION, body });
    // As a member would: naming the cluster.
    request.metadata_mut().insert("keel-cluster-id", cluster_id.parse()?);
    let answer = peer.forward(request).await?;
    let answer: Result<Forwarded, ()> =
        bincode::deserialize(&answer.into_inner().body).context("the leader did not apply the forwarded write")?;
    match answer {
        Ok(forwarded) => Ok(forwarded.response),
        Err(()) => bail!("leader failure"),
    }
}

async fn put(node: &KeelProcess, source: &str) -> Result<pb::PutPolicyResponse, tonic::Status> {
    let channel = node.channel().await.map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let request = pb::PutPolicyRequest {
        policy: "main".into(),
        source: source.into(),
        expected_version: None,
        ..Default::default()
    };
    pb::policy_service_client::PolicyServiceClient::new(channel).put_policy(request).await.map(|r| r.into_inner())
}

async fn all_ready(cluster: &Cluster) -> Result<()> {
    for node in &cluster.nodes {
        node.wait_ready().await?;
    }
    Ok(())
}

#[tokio::test]
async fn poison_policies_are_refused_and_every_member_survives_a_full_restart() -> Result<()> {
    let mut cluster = Cluster::three(ClusterOptions::default()).await?;
    let leader = cluster.leader().await?;
    let follower = (leader + 1) % 3;
    Fixture::with_root(cluster.root.clone()).create_tenant(&cluster.nodes[leader], "acme").await?;
    let (_, digest) = cluster.converged().await?;

    for (label, source, failure) in poisons() {
        // Through the API on a follower: refused before it is proposed.
        let status = put(&cluster.nodes[follower], &source).await.err().context(label)?;
        ensure!(status.code() == Code::InvalidArgument, "{label}: {status:?}");
        ensure!(reason_of(&status) == "EVALUATION_ABORTED", "{label}: {status:?}");
        // Straight into the log through the leader's peer port: every member
        // judges it in apply and refuses it the same way.
        let command =
            Command::PutPolicy { name: Name::parse("policy", "main")?, source: source.clone(), expected_version: None };
        match forward(&cluster.nodes[leader], &cluster.cluster_id, command).await? {
            ApplyResponse::Rejected(Rejection::EvaluationAborted { failure: found, .. }) if found == failure => {}
            other => bail!("{label}: expected EVALUATION_ABORTED ({failure}), got {other:?}"),
        }
    }
    all_ready(&cluster).await?;
    let (_, after) = cluster.converged().await?;
    ensure!(after == digest, "refused puts changed the state");

    // Every member replays the poison entries from its log on restart.
    for node in &mut cluster.nodes {
        node.kill_9()?;
    }
    for node in &mut cluster.nodes {
        node.launch().await?;
    }
    all_ready(&cluster).await?;
    let (_, restarted) = cluster.converged().await?;
    ensure!(restarted == digest, "members disagree after replaying the poison entries");
    let leader = cluster.leader().await?;
    Fixture::with_root(cluster.root.clone()).create_tenant(&cluster.nodes[leader], "bolt").await?;
    cluster.converged().await?;
    Ok(())
}

#[tokio::test]
async fn an_entry_that_could_never_replicate_is_refused_and_writes_keep_committing() -> Result<()> {
    let cluster = Cluster::three(ClusterOptions::default()).await?;
    let leader = cluster.leader().await?;
    let node = &cluster.nodes[leader];
    let (_, digest) = cluster.converged().await?;
    let mut trust = pb::trust_service_client::TrustServiceClient::new(node.channel().await?);
    // Just under the 4 MiB message limit, so it reaches the node.
    let signature = vec![7u8; 4 * 1024 * 1024 - 4096];
    let request = pb::RevokeKeyRequest {
        key_id: cluster.root.key_id(),
        signatures: vec![pb::Signature { key_id: cluster.root.key_id(), signature }],
        idempotency_key: String::new(),
    };
    let status = trust.revoke_key(request).await.err().context("a 4 MiB signature is refused")?;
    ensure!(status.code() == Code::InvalidArgument && reason_of(&status) == "LIMIT_EXCEEDED", "{status:?}");
    let limit = tonic_types::StatusExt::get_details_error_info(&status).map(|info| info.metadata);
    ensure!(
        limit.as_ref().and_then(|m| m.get("limit")).map(String::as_str) == Some("SIGNATURE_BYTES_MAX"),
        "{limit:?}"
    );
    // The same through the peer port (no edge check): apply refuses it too.
    let revoke = Command::RevokeKey {
        key_id: cluster.root.key_id(),
        signatures: vec![keel_kernel::signing::Signature {
            key_id: cluster.root.key_id(),
            signature: vec![7u8; 2 * 1024 * 1024],
        }],
    };
    match forward(node, &cluster.cluster_id, revoke).await? {
        ApplyResponse::Rejected(Rejection::LimitExceeded { .. }) => {}
        other => bail!("expected LIMIT_EXCEEDED, got {other:?}"),
    }
    let (_, after) = cluster.converged().await?;
    ensure!(after == digest, "a refused revoke changed the state");
    let started = Instant::now();
    Fixture::with_root(cluster.root.clone()).create_tenant(node, "acme").await?;
    ensure!(started.elapsed() < Duration::from_secs(2), "a write after the refusal took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test]
async fn an_evaluation_that_would_exhaust_memory_costs_one_request() -> Result<()> {
    let node = KeelProcess::start().await?;
    // Passes the put's probes (their tenant is `probe-tenant`), but asks for
    // 4 GiB in one instruction when the tenant is `acme`.
    let source = "package keel.policy\n\n\
        default decision := {\"allow\": true, \"reason\": \"fine\"}\n\n\
        decision := {\"allow\": false, \"reason\": sprintf(\"%4294967295d\", [1])} if {\n\
        \tinput.tenant == \"acme\"\n}\n";
    put(&node, source).await?;
    let mut client = pb::policy_service_client::PolicyServiceClient::new(node.channel().await?);
    let evaluate = |tenant: &str| pb::EvaluateRequest {
        policy: String::new(),
        context: Some(pb::EvaluationContext {
            tenant: tenant.into(),
            engine: "billing".into(),
            action: "run".into(),
            ..Default::default()
        }),
        consistency: 0,
    };
    for _ in 0..3 {
        let denied = client.evaluate(evaluate("acme")).await?.into_inner();
        ensure!(!denied.allow && denied.reason.contains("memory_budget"), "{denied:?}");
    }
    let fine = client.evaluate(evaluate("bolt")).await?.into_inner();
    ensure!(fine.allow && fine.reason == "fine", "{fine:?}");
    node.wait_ready().await?;
    Ok(())
}

#[tokio::test]
async fn a_member_with_its_clock_ten_years_ahead_cannot_move_the_replicated_clock() -> Result<()> {
    use crate::fixture::now_ms;
    const TEN_YEARS_MS: i64 = 10 * 365 * 24 * 60 * 60 * 1000;
    let mut cluster = Cluster::three(ClusterOptions::default()).await?;
    let leader = cluster.leader().await?;
    let skewed = (leader + 1) % 3;
    let skewed_id = cluster.ids[skewed];
    cluster.nodes[skewed].kill_9()?;
    cluster.nodes[skewed].set_env("KEEL_NODE__CLOCK_OFFSET_MS", &TEN_YEARS_MS.to_string());
    cluster.nodes[skewed].launch().await?;
    // It finds itself out of agreement and says so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = keel_chaos::process::http_get(&cluster.nodes[skewed].ops_addr, "/readyz").await?;
        if code == 503 && body.contains("clock") {
            break;
        }
        ensure!(Instant::now() < deadline, "the skewed member never reported its clock: {code} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Hand it leadership: it must not stamp, and it hands leadership back.
    let mut cluster_client =
        pb::cluster_service_client::ClusterServiceClient::new(cluster.nodes[leader].channel().await?);
    cluster_client
        .transfer_leadership(pb::TransferLeadershipRequest { node_id: skewed_id })
        .await
        .context("leadership moves to the skewed member")?;
    let fixture = Fixture::with_root(cluster.root.clone());
    let writer = (skewed + 1) % 3;
    let deadline = Instant::now() + Duration::from_secs(30);
    let tenant = loop {
        match fixture.create_tenant(&cluster.nodes[writer], "acme").await {
            Ok(tenant) => break tenant,
            Err(error) => {
                ensure!(Instant::now() < deadline, "no write committed: {error:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let stamped = u64::try_from(tenant.create_time_ms).unwrap_or(u64::MAX);
    ensure!(stamped <= now_ms() + 60_000, "the replicated clock moved to {stamped}, ahead of {}", now_ms());
    // Asked of a member with a sound clock: the skewed one cannot tell a
    // token's expiry, so it refuses every token (and is not ready anyway).
    let leader_now = cluster.nodes[writer].status().await?.leader_id;
    ensure!(leader_now != skewed_id, "the skewed member still leads");
    Ok(())
}

#[tokio::test]
async fn fat_tenants_list_with_default_paging_and_a_learner_flood_stops_at_the_bound() -> Result<()> {
    let mut cluster = Cluster::three(ClusterOptions::default()).await?;
    let leader = cluster.leader().await?;
    let mut tenants = crate::single_node::tenants(&cluster.nodes[leader]).await?;
    // 24 tenants of ~260 KiB each: one default page (100) would be ~6 MiB,
    // over the 4 MiB message limit.
    for index in 0..24 {
        let mut request = Fixture::tenant_request(&format!("fat{index:02}"));
        if let Some(tenant) = request.tenant.as_mut() {
            tenant.display_name = "d".repeat(4096);
            tenant.enabled_engines = (0..1024).map(|engine| format!("{engine:0>256}")).collect();
        }
        tenants.create_tenant(request).await?;
    }
    let list_all = |mut client: pb::tenant_service_client::TenantServiceClient<keel_chaos::process::AuthChannel>| async move {
        let (mut seen, mut token, mut pages) = (0usize, String::new(), 0usize);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let request = pb::ListTenantsRequest { page_size: 0, page_token: token.clone(), consistency: 0 };
            let page = match client.list_tenants(request).await {
                Ok(page) => page.into_inner(),
                // An election after the restart: retry, as a client does.
                Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(status) => return Err(status.into()),
            };
            seen += page.tenants.len();
            pages += 1;
            ensure!(pages <= 24, "paging does not end");
            if page.next_page_token.is_empty() {
                return Ok::<_, anyhow::Error>((seen, pages));
            }
            token = page.next_page_token;
        }
    };
    let (seen, pages) = list_all(tenants.clone()).await?;
    ensure!(seen == 24 && pages > 1, "{seen} tenants in {pages} pages");

    // Junk learners (unreachable): each AddLearner times out waiting for its
    // learner but adds it; the cluster stops at MEMBERS_MAX.
    let mut cluster_client =
        pb::cluster_service_client::ClusterServiceClient::new(cluster.nodes[leader].channel().await?);
    let mut refused = None;
    let mut answers = Vec::new();
    let (mut node_id, flood_deadline) = (100u64, Instant::now() + Duration::from_secs(60));
    while node_id < 130 && Instant::now() < flood_deadline {
        let member = pb::Member {
            node_id,
            region: "junk".into(),
            zone: "junk-a".into(),
            client_addr: format!("127.0.0.1:{}", 20_000 + node_id),
            peer_addr: format!("127.0.0.1:{}", 30_000 + node_id),
            is_voter: false,
        };
        let mut request = tonic::Request::new(pb::AddLearnerRequest { member: Some(member) });
        // Long enough to commit the membership change on a loaded machine (a
        // call cancelled before it is proposed adds nothing); the wait for the
        // unreachable learner to catch up then runs out.
        request.set_timeout(Duration::from_millis(1_000));
        match cluster_client.add_learner(request).await {
            Err(status) if reason_of(&status) == "LIMIT_EXCEEDED" => {
                refused = Some(status);
                break;
            }
            // The last change is still committing: the same learner again.
            Err(status) if reason_of(&status) == "MEMBERSHIP_CHANGE_IN_PROGRESS" => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            // Leadership moved (a loaded machine can miss a heartbeat while
            // the leader dials junk learners): the same learner, at the new leader.
            Err(status) if matches!(reason_of(&status).as_str(), "NO_LEADER" | "NOT_LEADER") => {
                let leader = cluster.leader().await?;
                cluster_client =
                    pb::cluster_service_client::ClusterServiceClient::new(cluster.nodes[leader].channel().await?);
                continue;
            }
            Err(status) => answers.push(format!("{node_id}: {:?} {}", status.code(), reason_of(&status))),
            Ok(_) => answers.push(format!("{node_id}: added")),
        }
        node_id += 1;
    }
    let refused = refused.with_context(|| format!("the learner flood was never refused: {answers:?}"))?;
    ensure!(refused.code() == Code::ResourceExhausted, "{refused:?}");
    let status = cluster.nodes[leader].status().await?;
    ensure!(status.members.len() <= 16, "{} members", status.members.len());

    // Every member restarts (snapshot and membership within their bounds) and lists.
    for node in &mut cluster.nodes {
        node.kill_9()?;
    }
    for node in &mut cluster.nodes {
        node.launch().await?;
    }
    all_ready(&cluster).await?;
    // Ready is not led: a linearizable list needs every member to know the
    // leader the restart elected.
    cluster.leader().await?;
    for node in &cluster.nodes {
        let (seen, _) = list_all(crate::single_node::tenants(node).await?).await?;
        ensure!(seen == 24, "{seen} tenants after restart");
    }
    Ok(())
}

#[tokio::test]
async fn leadership_moves_within_three_seconds_under_steady_linearizable_reads_and_writes_pause_under_two() -> Result<()>
{
    let cluster = Cluster::three(ClusterOptions::default()).await?;
    let leader = cluster.leader().await?;
    let target = (leader + 1) % 3;
    let target_id = cluster.ids[target];
    Fixture::with_root(cluster.root.clone()).create_tenant(&cluster.nodes[leader], "acme").await?;
    // 50 linearizable reads a second, spread over every member.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for node in &cluster.nodes {
        let mut client = crate::single_node::tenants(node).await?;
        let stop = std::sync::Arc::clone(&stop);
        readers.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(60));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ticker.tick().await;
                let request = pb::GetTenantRequest { name: "acme".into(), consistency: 0 };
                let _ = client.get_tenant(request).await;
            }
        }));
    }
    // Writes, one after another, through the member that neither leads nor
    // takes over: the longest gap between two commits is the write pause.
    let commits = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let writer = {
        let mut client = crate::single_node::tenants(&cluster.nodes[3 - leader - target]).await?;
        let (stop, commits) = (std::sync::Arc::clone(&stop), std::sync::Arc::clone(&commits));
        tokio::spawn(async move {
            let (mut last, mut longest, mut index) = (Instant::now(), Duration::ZERO, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && index < 10_000 {
                index += 1;
                let mut request = tonic::Request::new(Fixture::tenant_request(&format!("w{index}")));
                request.set_timeout(Duration::from_secs(1));
                if client.create_tenant(request).await.is_ok() {
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                    commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await; // retry pace, as a client would
                }
            }
            longest
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await; // the load is steady before the transfer
    let mut client = pb::cluster_service_client::ClusterServiceClient::new(cluster.nodes[leader].channel().await?);
    let started = Instant::now();
    let mut request = tonic::Request::new(pb::TransferLeadershipRequest { node_id: target_id });
    request.set_timeout(Duration::from_secs(10));
    let outcome = client.transfer_leadership(request).await;
    let took = started.elapsed();
    // Writes resume under the new leader before the writer stops.
    let (before, deadline) =
        (commits.load(std::sync::atomic::Ordering::Relaxed), Instant::now() + Duration::from_secs(10));
    while commits.load(std::sync::atomic::Ordering::Relaxed) < before + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        reader.await?;
    }
    let pause = writer.await?;
    outcome.context("the transfer under read load")?;
    eprintln!("transfer took {took:?}; writes paused for {pause:?} at most");
    ensure!(took < Duration::from_secs(3), "the transfer took {took:?}");
    ensure!(pause < Duration::from_secs(2), "writes paused for {pause:?}");
    ensure!(cluster.ids[cluster.leader().await?] == target_id, "leadership did not move");
    Ok(())
}

#[tokio::test]
async fn a_peer_call_naming_another_cluster_is_refused_before_raft_sees_it() -> Result<()> {
    let cluster = Cluster::three(ClusterOptions::default()).await?;
    let leader = cluster.leader().await?;
    let node = &cluster.nodes[leader];
    let digest = cluster.converged().await?.1;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.peer_addr))?.connect().await?;
    let mut peer = raft_pb::raft_peer_client::RaftPeerClient::new(channel);
    for named in [None, Some("another-cluster")] {
        let mut request = tonic::Request::new(raft_pb::ClockRequest {});
        if let Some(cluster_id) = named {
            request.metadata_mut().insert("keel-cluster-id", cluster_id.parse()?);
        }
        let refused = peer.clock(request).await;
        ensure!(
            refused.as_ref().is_err_and(
                |status| status.code() == Code::FailedPrecondition && reason_of(status) == "CLUSTER_MISMATCH"
            ),
            "{named:?}: {refused:?}"
        );
    }
    let mut request = tonic::Request::new(raft_pb::ClockRequest {});
    request.metadata_mut().insert("keel-cluster-id", cluster.cluster_id.parse()?);
    peer.clock(request).await.context("a call naming the cluster is answered")?;
    ensure!(cluster.converged().await?.1 == digest, "nothing changed");
    Ok(())
}
