//! Membership and transport security across real keeld processes: a node in
//! another region joins as a learner, is promoted, and another member is
//! removed; a cluster runs over TLS/mTLS; peers without a member certificate
//! from the cluster CA cannot join or send Raft traffic.

use crate::cluster_harness::{Cluster, ClusterOptions, MemberSpec};
use crate::fixture::{Fixture, reason_of};
use anyhow::{Context, Result, bail, ensure};
use keel_client::certs;
use keel_proto::raft::v1 as raft_pb;
use keel_proto::v1 as pb;
use std::collections::BTreeSet;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn member(id: u64, client_addr: &str, peer_addr: &str) -> pb::Member {
    pb::Member {
        node_id: id,
        client_addr: client_addr.into(),
        peer_addr: peer_addr.into(),
        region: "ap-south".into(),
        zone: "ap-south-a".into(),
        is_voter: false,
    }
}

async fn admin(
    cluster: &Cluster,
    index: usize,
) -> Result<pb::cluster_service_client::ClusterServiceClient<keel_chaos::process::AuthChannel>> {
    Ok(pb::cluster_service_client::ClusterServiceClient::new(cluster.nodes[index].channel().await?))
}

#[tokio::test]
async fn a_node_in_another_region_joins_is_promoted_and_a_member_is_removed() -> Result<()> {
    let mut cluster = Cluster::three(ClusterOptions::default()).await?;
    let leader = cluster.leader().await?;
    let spec = MemberSpec { id: 4, region: "ap-south", zone: "ap-south-a" };
    let (joiner, client_addr, peer_addr) = cluster.launch_joiner(spec, None).await?;

    let mut client = admin(&cluster, leader).await?;
    let added = client.add_learner(pb::AddLearnerRequest { member: Some(member(4, &client_addr, &peer_addr)) }).await?;
    let added = added.into_inner();
    ensure!(added.members.iter().any(|m| m.node_id == 4 && !m.is_voter), "{:?}", added.members);
    cluster.nodes[joiner].wait_ready().await?;

    let promoted = client.promote_member(pb::PromoteMemberRequest { node_id: 4 }).await?.into_inner();
    ensure!(promoted.members.iter().any(|m| m.node_id == 4 && m.is_voter), "{:?}", promoted.members);

    // Remove a follower of the original three.
    let leader_id = cluster.ids[leader];
    let removed_id = *[1, 2, 3].iter().find(|id| **id != leader_id).context("a follower")?;
    let removed = client.remove_member(pb::RemoveMemberRequest { node_id: removed_id }).await?.into_inner();
    let ids: BTreeSet<u64> = removed.members.iter().map(|m| m.node_id).collect();
    ensure!(!ids.contains(&removed_id) && ids.contains(&4) && ids.len() == 3, "{ids:?}");
    let removed_index = cluster.ids.iter().position(|id| *id == removed_id).context("removed index")?;
    cluster.nodes[removed_index].kill_9()?;

    // The new member serves writes and the survivors agree.
    let fixture = Fixture::with_root(cluster.root.clone());
    fixture.create_tenant(&cluster.nodes[joiner], "after-join").await?;
    cluster.converged().await?;
    for status in cluster.statuses().await? {
        let ids: BTreeSet<u64> = status.members.iter().map(|m| m.node_id).collect();
        let expected: BTreeSet<u64> = [1, 2, 3, 4].into_iter().filter(|id| *id != removed_id).collect();
        ensure!(ids == expected, "{ids:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_tls_cluster_replicates_over_mtls() -> Result<()> {
    let cluster = Cluster::three(ClusterOptions { is_tls: true, ..ClusterOptions::default() }).await?;
    let leader = cluster.leader().await?;
    let follower = (leader + 1) % 3;
    let fixture = Fixture::with_root(cluster.root.clone());
    let publisher = fixture.add_publisher_key(&cluster.nodes[follower]).await?;
    fixture.publish(&cluster.nodes[(leader + 2) % 3], &Fixture::manifest("secure", "1.0.0"), &publisher).await?;
    cluster.converged().await?;
    Ok(())
}

/// A client of a member's peer port presenting `identity` (trusting the cluster CA).
pub(crate) async fn peer_client(
    cluster: &Cluster,
    peer_addr: &str,
    identity: Identity,
) -> Result<raft_pb::raft_peer_client::RaftPeerClient<Channel>> {
    let ca = cluster.ca.as_ref().map(|ca| ca.cert_pem.clone()).context("TLS cluster has a CA")?;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).identity(identity);
    let channel = Channel::from_shared(format!("https://{peer_addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(raft_pb::raft_peer_client::RaftPeerClient::new(channel))
}

#[tokio::test]
async fn peers_without_a_member_certificate_from_the_cluster_ca_are_refused() -> Result<()> {
    let mut cluster = Cluster::three(ClusterOptions { is_tls: true, ..ClusterOptions::default() }).await?;
    let leader = cluster.leader().await?;
    let digest_before = cluster.converged().await?.1;
    let status = cluster.nodes[leader].status().await?;
    let leader_peer =
        status.members.iter().find(|m| m.node_id == status.leader_id).context("leader")?.peer_addr.clone();

    // Raft traffic with a certificate from another CA: refused at the handshake.
    let foreign_ca = certs::generate_ca("foreign CA", 30)?;
    let foreign = certs::issue(&foreign_ca, "intruder", &["127.0.0.1".to_owned()], certs::Usage::Both, 20)?;
    let attempt = async {
        let mut client =
            peer_client(&cluster, &leader_peer, Identity::from_pem(&foreign.cert_pem, &foreign.key_pem)).await?;
        client.vote(raft_pb::VoteRequest { format_version: 1, body: vec![0; 8] }).await.map_err(anyhow::Error::from)
    };
    if attempt.await.is_ok() {
        bail!("a foreign-CA certificate reached the Raft service");
    }

    // A certificate from the cluster CA that names no member: PERMISSION_DENIED before Raft sees it.
    let cluster_ca = cluster.ca.clone().context("TLS cluster has a CA")?;
    let stranger = certs::issue(&cluster_ca, "stranger", &["10.99.99.99".to_owned()], certs::Usage::Both, 20)?;
    let mut client =
        peer_client(&cluster, &leader_peer, Identity::from_pem(&stranger.cert_pem, &stranger.key_pem)).await?;
    let refused = client.vote(raft_pb::VoteRequest { format_version: 1, body: vec![0; 8] }).await;
    match refused {
        Err(status) if status.code() == tonic::Code::PermissionDenied && reason_of(&status) == "PEER_NOT_MEMBER" => {}
        other => bail!("a non-member certificate got {other:?}"),
    }

    // A node with a foreign-CA certificate cannot join: the leader cannot reach it, so it never catches up.
    let spec = MemberSpec { id: 4, region: "ap-south", zone: "ap-south-a" };
    let (joiner, client_addr, peer_addr) = cluster.launch_joiner(spec, Some(&foreign_ca)).await?;
    let mut client = admin(&cluster, leader).await?;
    let mut request = tonic::Request::new(pb::AddLearnerRequest { member: Some(member(4, &client_addr, &peer_addr)) });
    request.set_timeout(Duration::from_secs(3));
    let joined = client.add_learner(request).await;
    ensure!(joined.is_err(), "a learner behind a foreign CA caught up: {joined:?}");
    let joiner_status = crate::harness::http_get(&cluster.nodes[joiner].ops_addr, "/diagz").await?;
    let diag: serde_json::Value = serde_json::from_str(&joiner_status.1)?;
    ensure!(diag["applied_index"] == 0, "the foreign node applied entries: {diag}");

    // The members' state did not change (a learner entry may be pending; the
    // kernel state is untouched). The foreign node has no trust store, so it
    // accepts no token: only the members are asked.
    for node in &cluster.nodes[..3] {
        ensure!(node.status().await?.state_digest == digest_before);
    }
    Ok(())
}

#[tokio::test]
async fn a_member_whose_initial_members_disagree_reports_a_conflict() -> Result<()> {
    use crate::cluster_harness::reserve_addresses;
    use crate::harness::KeelProcess;
    let dir = tempfile::tempdir()?;
    let root = keel_client::KeyPair::generate();
    let root_pub = root.write_files(&dir.path().join("root"))?.public;
    let addrs = [reserve_addresses()?, reserve_addresses()?, reserve_addresses()?];
    let members = |wrong_peer_for_2: bool| {
        let mut toml = String::new();
        for (i, a) in addrs.iter().enumerate() {
            let peer = if wrong_peer_for_2 && i == 1 { "127.0.0.1:1".to_owned() } else { a[1].clone() };
            toml.push_str(&format!(
                "[[cluster.initial_members]]\nid = {}\nclient_addr = \"{}\"\npeer_addr = \"{peer}\"\nregion = \"eu-west\"\nzone = \"z{}\"\n",
                i + 1,
                a[0],
                i + 1
            ));
        }
        toml
    };
    let mut nodes = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let config = format!(
            "[node]\nid = {id}\nregion = \"eu-west\"\nzone = \"z{id}\"\n[listen]\nclient = \"{}\"\npeer = \"{}\"\nops = \"{}\"\n\
             [trust]\nroot_public_keys = [\"{}\"]\n[raft]\nheartbeat_interval_ms = 100\nelection_timeout_min_ms = 500\n\
             election_timeout_max_ms = 1000\n{}",
            a[0],
            a[1],
            a[2],
            root_pub.display(),
            members(i == 2),
            id = i + 1,
        );
        let path = dir.path().join(format!("node-{}.toml", i + 1));
        std::fs::write(&path, config)?;
        let mut node = KeelProcess::new(vec!["--config".into(), path.to_str().context("utf-8")?.to_owned()])?;
        node.launch().await?;
        nodes.push(node);
    }
    nodes[0].wait_ready().await?;
    nodes[1].wait_ready().await?;
    // Node 3 learns the real membership, sees it differs from its own list, and says so.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = crate::harness::http_get(&nodes[2].ops_addr, "/readyz").await?;
        let (_, diag) = crate::harness::http_get(&nodes[2].ops_addr, "/diagz").await?;
        let diag: serde_json::Value = serde_json::from_str(&diag)?;
        if code == 503 && body.contains("configuration conflict") {
            let conflict = diag["config_conflict"].as_str().unwrap_or_default().to_owned();
            ensure!(conflict.contains("cluster.initial_members"), "{conflict}");
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "node 3 never reported the conflict: {code} {body} {diag}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test]
async fn leadership_moves_to_a_chosen_voter_and_never_to_a_learner() -> Result<()> {
    let mut cluster = Cluster::three(ClusterOptions::default()).await?;
    let leader = cluster.leader().await?;
    let target = (leader + 1) % 3;
    let target_id = cluster.ids[target];
    let transfer = |node_id| pb::TransferLeadershipRequest { node_id };

    // Only the leader hands over.
    let refused = admin(&cluster, target).await?.transfer_leadership(transfer(target_id)).await;
    match refused {
        Err(status) if reason_of(&status) == "NOT_LEADER" => {}
        other => bail!("a follower answered a transfer with {other:?}"),
    }

    let moved = admin(&cluster, leader).await?.transfer_leadership(transfer(target_id)).await?.into_inner();
    ensure!(moved.leader_id == target_id, "{moved:?}");
    ensure!(cluster.leader().await? == target);

    // Writes flow again, through the old leader (now a follower) too.
    let fixture = Fixture::with_root(cluster.root.clone());
    fixture.create_tenant(&cluster.nodes[leader], "after-transfer").await?;

    // Never to a learner, nor to a stranger; leadership stays put.
    let spec = MemberSpec { id: 4, region: "ap-south", zone: "ap-south-a" };
    let (_, client_addr, peer_addr) = cluster.launch_joiner(spec, None).await?;
    let mut client = admin(&cluster, target).await?;
    client.add_learner(pb::AddLearnerRequest { member: Some(member(4, &client_addr, &peer_addr)) }).await?;
    match client.transfer_leadership(transfer(4)).await {
        Err(status) if status.code() == tonic::Code::FailedPrecondition && reason_of(&status) == "MEMBER_NOT_VOTER" => {
        }
        other => bail!("a transfer to a learner got {other:?}"),
    }
    match client.transfer_leadership(transfer(9)).await {
        Err(status) if status.code() == tonic::Code::NotFound && reason_of(&status) == "MEMBER_NOT_FOUND" => {}
        other => bail!("a transfer to an unknown node got {other:?}"),
    }
    ensure!(cluster.leader().await? == target);

    // And back, through keelctl.
    let old_leader_id = cluster.ids[leader];
    let output = std::process::Command::new(crate::harness::keelctl_bin())
        .env("KEEL_ENDPOINTS", &cluster.nodes[leader].endpoint)
        .env("KEEL_TOKEN", &cluster.admin_token)
        .args(["--output", "json", "cluster", "transfer-leader", &old_leader_id.to_string()])
        .output()?;
    ensure!(output.status.success(), "keelctl: {}", String::from_utf8_lossy(&output.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    ensure!(answer["leader_id"] == old_leader_id, "{answer}");
    ensure!(cluster.leader().await? == leader);
    cluster.converged().await?;
    Ok(())
}

/// Every peer RPC a member could send, with a body no member would (the
/// membership check must answer before the body is read).
async fn peer_rpcs(
    client: &mut raft_pb::raft_peer_client::RaftPeerClient<Channel>,
) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let body = vec![0u8; 8];
    vec![
        ("Vote", client.vote(raft_pb::VoteRequest { format_version: 4, body: body.clone() }).await.map(|_| ())),
        (
            "AppendEntries",
            client
                .append_entries(raft_pb::AppendEntriesRequest { format_version: 4, body: body.clone() })
                .await
                .map(|_| ()),
        ),
        ("Forward", client.forward(raft_pb::ForwardRequest { format_version: 4, body }).await.map(|_| ())),
    ]
}

#[tokio::test]
async fn a_removed_members_certificate_is_refused_at_once_on_every_peer_rpc() -> Result<()> {
    let cluster = Cluster::three(ClusterOptions { is_tls: true, ..ClusterOptions::default() }).await?;
    let leader = cluster.leader().await?;
    let removed = (leader + 1) % 3;
    let remaining = (leader + 2) % 3;
    let (cert, key) = cluster.member_identity(removed)?;
    // A member: admitted (the garbage body is then refused on its own terms).
    let mut client = peer_client(&cluster, &cluster.nodes[leader].peer_addr, Identity::from_pem(&cert, &key)).await?;
    for (rpc, answer) in peer_rpcs(&mut client).await {
        if let Err(status) = answer {
            ensure!(reason_of(&status) != "PEER_NOT_MEMBER", "a member's {rpc} was refused: {status:?}");
        }
    }
    let mut admin_client = admin(&cluster, leader).await?;
    admin_client.remove_member(pb::RemoveMemberRequest { node_id: cluster.ids[removed] }).await?;
    // Removed: refused by the leader and by the member that stays, at once
    // (each holds the new membership once the removal committed).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for target in [leader, remaining] {
        let peer_addr = cluster.nodes[target].peer_addr.clone();
        loop {
            let mut client = peer_client(&cluster, &peer_addr, Identity::from_pem(&cert, &key)).await?;
            let answers = peer_rpcs(&mut client).await;
            let refused = answers.iter().all(|(_, answer)| {
                matches!(answer, Err(status) if status.code() == tonic::Code::PermissionDenied
                    && reason_of(status) == "PEER_NOT_MEMBER")
            });
            if refused {
                break;
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "member {target} still admits the removed member: {answers:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_learner_off_loopback_is_refused_on_a_plaintext_cluster() -> Result<()> {
    let cluster = Cluster::three(ClusterOptions::default()).await?;
    let leader = cluster.leader().await?;
    let digest = cluster.converged().await?.1;
    let mut client = admin(&cluster, leader).await?;
    let learner = pb::Member {
        node_id: 9,
        client_addr: "10.0.0.9:7400".into(),
        peer_addr: "10.0.0.9:7401".into(),
        region: "eu-west".into(),
        zone: "eu-west-z".into(),
        is_voter: false,
    };
    let refused = client.add_learner(pb::AddLearnerRequest { member: Some(learner) }).await;
    match refused {
        Err(status) if status.code() == tonic::Code::InvalidArgument && reason_of(&status) == "FIELD_INVALID" => {}
        other => bail!("a plaintext learner off loopback got {other:?}"),
    }
    ensure!(cluster.converged().await?.1 == digest);
    Ok(())
}

#[tokio::test]
async fn membership_changes_need_cluster_admin() -> Result<()> {
    let cluster = Cluster::three(ClusterOptions::default()).await?;
    let leader = cluster.leader().await?;
    let reader = cluster.token("observer", None, &["cluster.read"])?;
    let channel = cluster.nodes[leader].raw_channel().await?;
    let bearer = keel_chaos::process::Bearer::new(Some(&reader))?;
    let mut client = pb::cluster_service_client::ClusterServiceClient::new(
        tonic::service::interceptor::InterceptedService::new(channel, bearer),
    );
    client.get_status(pb::GetStatusRequest {}).await?;
    let target = cluster.ids[(leader + 1) % 3];
    let answers = [
        client.remove_member(pb::RemoveMemberRequest { node_id: target }).await.map(|_| ()),
        client.transfer_leadership(pb::TransferLeadershipRequest { node_id: target }).await.map(|_| ()),
        client.promote_member(pb::PromoteMemberRequest { node_id: target }).await.map(|_| ()),
    ];
    for answer in answers {
        match answer {
            Err(status)
                if status.code() == tonic::Code::PermissionDenied && reason_of(&status) == "PERMISSION_MISSING" => {}
            other => bail!("a cluster.read token changed membership: {other:?}"),
        }
    }
    ensure!(cluster.statuses().await?.iter().all(|status| status.members.len() == 3));
    Ok(())
}
