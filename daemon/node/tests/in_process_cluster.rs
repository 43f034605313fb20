//! Three members in one process, through the seams: the node builder with
//! in-memory storage, one manual clock and an in-memory network. Nothing is
//! bound and no time is read from the OS on the stamping path; the client
//! speaks gRPC to the members over the same in-memory network.

use keel_node::clock::{Clock, ManualClock};
use keel_node::config::{Config, MemberConfig};
use keel_node::judge::NodeJudge;
use keel_node::server::{Listeners, Node, NodeBuilder, Storage};
use keel_node::transport::{MemNetwork, tonic_connector};
use keel_proto::v1 as pb;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How long the cluster gets to elect a leader and replicate.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(20);
/// The manual clock's start: 2027-01-15T08:00:00Z.
const START_MS: u64 = 1_800_000_000_000;

fn client_addr(id: u64) -> String {
    format!("node-{id}.keel:7400")
}

fn peer_addr(id: u64) -> String {
    format!("node-{id}.keel:7401")
}

fn config(id: u64, data_dir: &std::path::Path) -> Config {
    let mut config = Config { dev: true, ..Config::default() };
    config.node.id = id;
    config.node.region = "eu-west".into();
    config.node.zone = format!("eu-west-{id}");
    config.data_dir = data_dir.join(format!("node-{id}"));
    config.cluster.initial_members = (1..=3)
        .map(|member| MemberConfig {
            id: member,
            client_addr: client_addr(member),
            peer_addr: peer_addr(member),
            region: "eu-west".into(),
            zone: format!("eu-west-{member}"),
        })
        .collect();
    config
}

async fn start(id: u64, network: &MemNetwork, clock: &Arc<ManualClock>, dir: &std::path::Path) -> anyhow::Result<Node> {
    let listeners = Listeners {
        client: network.listen(&client_addr(id)),
        peer: network.listen(&peer_addr(id)),
        ops: None,
        client_addr: client_addr(id),
    };
    NodeBuilder::new(config(id, dir))
        .storage(Storage::Memory)
        .clock(Arc::clone(clock) as Arc<dyn Clock>)
        .connector(Arc::new(network.clone()))
        .judge(NodeJudge::InProcess)
        .start(listeners)
        .await
}

fn channel(network: &MemNetwork, addr: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_with_connector_lazy(tonic_connector(Arc::new(network.clone()))))
}

/// Polls `check` until it holds or `CONVERGE_DEADLINE` passes.
async fn wait_until(what: &str, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + CONVERGE_DEADLINE;
    while !check() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn tenant(tenant_id: &str) -> pb::Tenant {
    pb::Tenant {
        tenant_id: tenant_id.into(),
        display_name: format!("Tenant {tenant_id}"),
        tier: pb::TenantTier::Enterprise as i32,
        home_region: "eu-west".into(),
        status: pb::TenantStatus::Active as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_in_process_members_replicate_through_the_seams_with_time_from_the_manual_clock() -> TestResult {
    let dir = tempfile::tempdir()?;
    let network = MemNetwork::new();
    let clock = Arc::new(ManualClock::at(START_MS));
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(id, &network, &clock, dir.path()).await?);
    }

    // One leader that every member knows, and the trust store bootstrapped.
    wait_until("an agreed leader and a bootstrapped trust store", || {
        let leaders: Vec<Option<u64>> = nodes.iter().map(|node| node.replica.current_leader()).collect();
        leaders[0].is_some()
            && leaders.iter().all(|leader| *leader == leaders[0])
            && nodes.iter().all(|node| node.replica.shared.read().kernel.trust().is_bootstrapped())
    })
    .await?;
    let leader_id = nodes[0].replica.current_leader().ok_or("no leader")?;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader_id).collect();
    // Dev members each make their own dev keys; the leader bootstrapped the
    // trust store with its own, so its admin token is the cluster's.
    let token_file =
        dir.path().join(format!("node-{leader_id}")).join(keel_node::dev_credentials::DEV_ADMIN_TOKEN_FILE);
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", std::fs::read_to_string(token_file)?.trim()).parse()?;
    let authorize = move |mut request: tonic::Request<()>| {
        request.metadata_mut().insert("authorization", bearer.clone());
        Ok(request)
    };

    // A write sent to a follower over gRPC is forwarded to the leader, and
    // stamped with the manual clock's time.
    let mut writer = pb::tenant_service_client::TenantServiceClient::with_interceptor(
        channel(&network, &client_addr(followers[0]))?,
        authorize.clone(),
    );
    let created = writer
        .create_tenant(pb::CreateTenantRequest { tenant: Some(tenant("acme")), idempotency_key: String::new() })
        .await?
        .into_inner();
    assert_eq!(created.create_time_ms, i64::try_from(START_MS)?);

    // Time moves only when the test moves it.
    clock.advance(60_000);
    let mut update = tenant("acme");
    update.display_name = "Acme, renamed".into();
    let updated = writer
        .update_tenant(pb::UpdateTenantRequest {
            tenant: Some(update),
            etag: created.etag,
            idempotency_key: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(updated.update_time_ms, i64::try_from(START_MS + 60_000)?);

    // A linearizable read on the other follower sees the write.
    let mut reader = pb::tenant_service_client::TenantServiceClient::with_interceptor(
        channel(&network, &client_addr(followers[1]))?,
        authorize,
    );
    let read = reader
        .get_tenant(pb::GetTenantRequest {
            name: "tenants/acme".into(),
            consistency: pb::ReadConsistency::Linearizable as i32,
        })
        .await?;
    assert_eq!(read.get_ref().display_name, "Acme, renamed");
    let node_id = read.metadata().get("keel-node-id").and_then(|value| value.to_str().ok()).map(str::to_owned);
    assert_eq!(node_id, Some(followers[1].to_string()), "the member asked answered");

    // Same log, same state on every member.
    let revision = updated.update_revision;
    wait_until("every member applied the update", || {
        nodes.iter().all(|node| node.replica.shared.read().revision() >= revision)
    })
    .await?;
    let digests: Vec<_> = nodes.iter().map(|node| node.replica.shared.digest_now()).collect();
    assert!(digests.windows(2).all(|pair| pair[0] == pair[1]), "digests differ: {digests:?}");

    for node in nodes {
        node.shutdown().await?;
    }
    Ok(())
}
