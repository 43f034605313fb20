//! Tests of the peer transport: three nodes in one process over real gRPC on
//! loopback (ports from the OS), each with the in-memory store, its own
//! applied state and API context. Elections, replication, forwarded writes,
//! follower reads, catch-up by snapshot and fail-over; and how transport
//! failures map onto openraft's and the API's errors.
//!
//! Every wait has a deadline (`raft.wait(Some(..))`, `tokio::time::timeout`);
//! nothing sleeps to synchronise.

use super::peer_link::{PeerLink, peer_transport};
use super::peer_service::peer_server;
use super::{Consistency, Identity, LeaderLink, Replica, ReplicaError, Write};
use crate::leader_clock::LeaderClock;
use crate::limits::{APPEND_ENTRIES_BYTES_MAX, APPEND_ENTRIES_MAX, SNAPSHOT_CHUNK_BYTES_MAX};
use crate::raft::network::GrpcNetwork;
use crate::raft::peer_channels::PeerChannels;
use crate::raft::peer_message::{Envelope, PEER_FORMAT_VERSION};
use crate::raft::shared_state::SharedState;
use crate::raft::snapshot_store::SnapshotStore;
use crate::raft::{KeelNode, KeelRaft, KernelStateMachine, MemLogStore, NodeId};
use keel_kernel::tenant::{TenantSpec, TenantStatus, TenantTier};
use keel_kernel::{Command, Name, Rejection};
use keel_proto::raft::v1 as pb;
use keel_proto::raft::v1::raft_peer_server::{RaftPeer, RaftPeerServer};
use openraft::error::{RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::{ServerState, SnapshotPolicy, Vote};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How long any one condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(5);
/// Deadline of a proposal or read in these tests.
const DEADLINE: Duration = Duration::from_secs(5);

/// Raft timing for a loaded 2-core machine running debug builds: elections
/// that do not fire spuriously, snapshots only when a test asks.
fn raft_config(snapshot_chunk_bytes: u64) -> Arc<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "keel-peer-tests".into(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1_000,
        install_snapshot_timeout: 2_000,
        max_payload_entries: APPEND_ENTRIES_MAX,
        snapshot_max_chunk_size: snapshot_chunk_bytes,
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    };
    Arc::new(config.validate().expect("the test's Raft settings are valid"))
}

fn name(value: &str) -> Name {
    Name::parse("test", value).expect("test names are valid")
}

fn unkeyed(command: Command) -> Write {
    Write { command, idempotency_key: None, actor: None }
}

fn create_tenant(tenant_id: &str) -> Command {
    Command::CreateTenant {
        spec: TenantSpec {
            tenant_id: name(tenant_id),
            display_name: format!("Tenant {tenant_id}"),
            tier: TenantTier::Basic,
            home_region: name("eu-west"),
            status: TenantStatus::Active,
            enabled_engines: BTreeSet::new(),
        },
    }
}

fn member(peer_addr: SocketAddr) -> KeelNode {
    KeelNode {
        client_addr: format!("client-of-{peer_addr}"),
        peer_addr: peer_addr.to_string(),
        region: "eu-west".into(),
        zone: "a".into(),
    }
}

/// A running peer server: how to stop it, and its task.
type PeerServer = (oneshot::Sender<()>, JoinHandle<Result<(), tonic::transport::Error>>);

/// One node: Raft on the in-memory store, its API context, and its peer
/// server on `addr`. The log and snapshot stores outlive a stop, so the node
/// can restart as if from disk.
struct Node {
    id: NodeId,
    addr: SocketAddr,
    raft: KeelRaft,
    replica: Replica,
    log_store: MemLogStore,
    snapshots: SnapshotStore,
    server: Option<PeerServer>,
}

impl Node {
    async fn start(
        id: NodeId,
        listener: TcpListener,
        config: &Arc<openraft::Config>,
        log_store: MemLogStore,
        snapshots: SnapshotStore,
    ) -> Result<Node, Box<dyn std::error::Error>> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(SharedState::default());
        let state_machine = KernelStateMachine::open(Arc::clone(&shared), snapshots.clone()).await?;
        let (network, link) = peer_transport(id, None, None, None);
        let raft = KeelRaft::new(id, Arc::clone(config), network, log_store.clone(), state_machine).await?;
        let identity = Identity { node_id: id, region: "eu-west".into(), zone: "a".into() };
        let replica = Replica::new(
            raft.clone(),
            shared,
            identity,
            link,
            LeaderClock::new(crate::config::CLOCK_SKEW_MAX_MS_DEFAULT, 0),
        );
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(peer_server(replica.clone(), crate::audit::AuditLog::disabled()))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stop_rx.await;
                }),
        );
        Ok(Node { id, addr, raft, replica, log_store, snapshots, server: Some((stop_tx, server)) })
    }

    /// Stops Raft, then the peer server (its port refuses connections after).
    async fn stop(&mut self) -> TestResult {
        self.raft.shutdown().await?;
        if let Some((stop, server)) = self.server.take() {
            let _ = stop.send(());
            tokio::time::timeout(WAIT, server).await???;
        }
        Ok(())
    }

    /// Starts again on the same address with the same log and snapshots.
    async fn restart(&mut self, config: &Arc<openraft::Config>) -> TestResult {
        let listener = TcpListener::bind(self.addr).await?;
        *self = Node::start(self.id, listener, config, self.log_store.clone(), self.snapshots.clone()).await?;
        Ok(())
    }

    fn shared(&self) -> &SharedState {
        &self.replica.shared
    }

    fn has_tenant(&self, tenant_id: &str) -> bool {
        self.shared().read().kernel.tenants().get(&name(tenant_id)).is_some()
    }
}

/// Three nodes on OS-assigned loopback ports, initialised by node 1, with a
/// leader every node knows.
async fn start_cluster(config: &Arc<openraft::Config>) -> Result<Vec<Node>, Box<dyn std::error::Error>> {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let mut members = BTreeMap::new();
    for (id, listener) in (1..).zip(&listeners) {
        members.insert(id, member(listener.local_addr()?));
    }
    let mut nodes = Vec::new();
    for (id, listener) in (1..).zip(listeners) {
        nodes.push(Node::start(id, listener, config, MemLogStore::new(), SnapshotStore::in_memory()).await?);
    }
    nodes[0].raft.initialize(members).await?;
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await?;
    Ok(nodes)
}

/// Waits until every node in `nodes` names the same leader, one of them.
async fn agreed_leader(nodes: &[&Node]) -> Result<NodeId, Box<dyn std::error::Error>> {
    let ids: BTreeSet<NodeId> = nodes.iter().map(|node| node.id).collect();
    let metrics = nodes[0]
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.current_leader.is_some_and(|leader| ids.contains(&leader)), "a leader among the running nodes")
        .await?;
    let leader = metrics.current_leader.ok_or("a leader was waited for")?;
    for node in nodes {
        node.raft.wait(Some(WAIT)).current_leader(leader, "every node knows the leader").await?;
    }
    Ok(leader)
}

fn by_id(nodes: &[Node], id: NodeId) -> &Node {
    nodes.iter().find(|node| node.id == id).expect("the id is one of the nodes")
}

/// Waits until every node applied exactly the leader's last log entry, then
/// checks they all hold the same state there.
async fn assert_same_state(nodes: &[&Node], leader: &Node) -> TestResult {
    let last = leader.raft.metrics().borrow().last_log_index;
    for node in nodes {
        node.raft.wait(Some(WAIT)).applied_index(last, "every node applied the leader's log").await?;
    }
    let expected = leader.shared().digest_now();
    assert_eq!(Some(expected.0), last);
    for node in nodes {
        assert_eq!(node.shared().digest_now(), expected, "node {} differs from the leader", node.id);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_forward_and_read_linearizably() -> TestResult {
    let config = raft_config(SNAPSHOT_CHUNK_BYTES_MAX);
    let mut nodes = start_cluster(&config).await?;
    let leader_id = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await?;
    let followers: Vec<&Node> = nodes.iter().filter(|node| node.id != leader_id).collect();
    let (writer, reader) = (followers[0], followers[1]);

    // Writes through a follower are forwarded to the leader and answered there.
    let mut last_revision = 0;
    for tenant in ["acme", "beta", "gamma"] {
        let (_applied, revision) = writer.replica.propose(unkeyed(create_tenant(tenant)), DEADLINE).await?;
        assert!(revision > last_revision, "revisions grow: {revision} after {last_revision}");
        last_revision = revision;
    }
    // A rejection comes back as the rejection, not as a transport failure.
    let duplicate = writer.replica.propose(unkeyed(create_tenant("acme")), DEADLINE).await;
    assert!(matches!(duplicate, Err(ReplicaError::Rejected(Rejection::TenantAlreadyExists { .. }))), "{duplicate:?}");

    // A linearizable read on the other follower sees each write at once.
    for tenant in ["delta", "epsilon"] {
        let (_applied, revision) = writer.replica.propose(unkeyed(create_tenant(tenant)), DEADLINE).await?;
        let state = reader.replica.read(Consistency::Linearizable, DEADLINE).await?;
        let (seen, read_revision) = (state.kernel.tenants().get(&name(tenant)).is_some(), state.revision());
        assert!(seen, "{tenant} written through node {} is visible on node {}", writer.id, reader.id);
        assert!(read_revision >= revision);
    }
    let (_applied, revision) =
        by_id(&nodes, leader_id).replica.propose(unkeyed(create_tenant("zeta")), DEADLINE).await?;
    let state = writer.replica.read(Consistency::Linearizable, DEADLINE).await?;
    let (seen, read_revision) = (state.kernel.tenants().get(&name("zeta")).is_some(), state.revision());
    assert!(seen && read_revision >= revision, "a write on the leader is visible to a follower's linearizable read");

    assert_same_state(&nodes.iter().collect::<Vec<_>>(), by_id(&nodes, leader_id)).await?;
    for node in &mut nodes {
        node.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_catches_up_by_snapshot_install() -> TestResult {
    // Small chunks, so the snapshot crosses in several InstallSnapshot calls.
    let config = raft_config(512);
    let mut nodes = start_cluster(&config).await?;
    let leader_id = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await?;
    let lagging_id = nodes.iter().map(|node| node.id).find(|id| *id != leader_id).ok_or("a follower")?;

    let leader = by_id(&nodes, leader_id);
    let (_applied, revision) = leader.replica.propose(unkeyed(create_tenant("before")), DEADLINE).await?;
    let lagging = nodes.iter_mut().find(|node| node.id == lagging_id).ok_or("the lagging node")?;
    lagging.raft.wait(Some(WAIT)).applied_index_at_least(Some(revision), "the lagging node is current").await?;
    lagging.stop().await?;

    // While it is down: more writes, then every running node snapshots and
    // purges its log, so no one can send the missing entries.
    let leader = by_id(&nodes, leader_id);
    for i in 0..20 {
        leader.replica.propose(unkeyed(create_tenant(&format!("while-down-{i}"))), DEADLINE).await?;
    }
    let (_applied, last_index) = leader.replica.propose(unkeyed(create_tenant("while-down-last")), DEADLINE).await?;
    for node in nodes.iter().filter(|node| node.id != lagging_id) {
        node.raft.wait(Some(WAIT)).applied_index_at_least(Some(last_index), "applied before snapshot").await?;
        node.raft.trigger().snapshot().await?;
        node.raft
            .wait(Some(WAIT))
            .metrics(|m| m.snapshot.is_some_and(|id| id.index >= last_index), "snapshot built")
            .await?;
        node.raft.trigger().purge_log(last_index).await?;
        node.raft
            .wait(Some(WAIT))
            .metrics(|m| m.purged.is_some_and(|id| id.index >= last_index), "log purged up to the snapshot")
            .await?;
    }

    let lagging = nodes.iter_mut().find(|node| node.id == lagging_id).ok_or("the lagging node")?;
    lagging.restart(&config).await?;
    let caught_up = lagging
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.snapshot.is_some_and(|snapshot| snapshot.index >= last_index), "snapshot installed")
        .await?;
    assert!(caught_up.snapshot.is_some(), "the node never builds snapshots itself: this one was installed");
    let lagging = by_id(&nodes, lagging_id);
    lagging.raft.wait(Some(WAIT)).applied_index_at_least(Some(last_index), "caught up").await?;
    assert!(lagging.has_tenant("before") && lagging.has_tenant("while-down-last"));

    // And it takes part again: a write through it is replicated everywhere.
    let leader_id = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await?;
    by_id(&nodes, lagging_id).replica.propose(unkeyed(create_tenant("after")), DEADLINE).await?;
    assert_same_state(&nodes.iter().collect::<Vec<_>>(), by_id(&nodes, leader_id)).await?;
    for node in &mut nodes {
        node.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_catches_up_in_batches_cut_to_the_byte_budget() -> TestResult {
    let config = raft_config(SNAPSHOT_CHUNK_BYTES_MAX);
    let mut nodes = start_cluster(&config).await?;
    let leader_id = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await?;
    let lagging_id = nodes.iter().map(|node| node.id).find(|id| *id != leader_id).ok_or("a follower")?;
    nodes.iter_mut().find(|node| node.id == lagging_id).ok_or("the lagging node")?.stop().await?;

    // Large entries (`apply` rejects them, but they are in the log all the
    // same): more than one AppendEntries' worth of bytes, far fewer than
    // APPEND_ENTRIES_MAX entries, so only the byte budget splits them.
    let entry_bytes = (APPEND_ENTRIES_BYTES_MAX / 3) as usize;
    let n_entries = 7;
    let leader = by_id(&nodes, leader_id);
    for _ in 0..n_entries {
        let command = Command::PublishEngineVersion { manifest: vec![b' '; entry_bytes], signatures: Vec::new() };
        let result = leader.replica.propose(unkeyed(command), DEADLINE).await;
        assert!(matches!(result, Err(ReplicaError::Rejected(_))), "{result:?}");
    }
    assert!(n_entries * entry_bytes as u64 > 2 * APPEND_ENTRIES_BYTES_MAX);

    let lagging = nodes.iter_mut().find(|node| node.id == lagging_id).ok_or("the lagging node")?;
    lagging.restart(&config).await?;
    let leader_id = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await?;
    assert_same_state(&nodes.iter().collect::<Vec<_>>(), by_id(&nodes, leader_id)).await?;
    assert_eq!(by_id(&nodes, lagging_id).raft.metrics().borrow().snapshot, None, "caught up from the log");
    for node in &mut nodes {
        node.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_stops_a_new_one_is_elected_and_accepts_writes() -> TestResult {
    let config = raft_config(SNAPSHOT_CHUNK_BYTES_MAX);
    let mut nodes = start_cluster(&config).await?;
    let old_leader_id = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await?;
    let follower = nodes.iter().find(|node| node.id != old_leader_id).ok_or("a follower")?;
    follower.replica.propose(unkeyed(create_tenant("before")), DEADLINE).await?;

    let old_leader = nodes.iter_mut().find(|node| node.id == old_leader_id).ok_or("the leader")?;
    old_leader.stop().await?;
    let running: Vec<&Node> = nodes.iter().filter(|node| node.id != old_leader_id).collect();
    for node in &running {
        node.raft
            .wait(Some(WAIT))
            .metrics(|m| m.current_leader.is_some_and(|leader| leader != old_leader_id), "a new leader")
            .await?;
    }
    let new_leader_id = agreed_leader(&running).await?;
    let new_leader = by_id(&nodes, new_leader_id);
    assert_eq!(new_leader.raft.metrics().borrow().state, ServerState::Leader);

    // Both the new leader and (forwarding) its follower accept writes.
    let other = running.iter().find(|node| node.id != new_leader_id).ok_or("a follower")?;
    new_leader.replica.propose(unkeyed(create_tenant("after-on-leader")), DEADLINE).await?;
    other.replica.propose(unkeyed(create_tenant("after-on-follower")), DEADLINE).await?;
    assert_same_state(&running, new_leader).await?;
    assert!(running.iter().all(|node| node.has_tenant("before") && node.has_tenant("after-on-follower")));
    for node in &mut nodes {
        if node.id != old_leader_id {
            node.stop().await?;
        }
    }
    Ok(())
}

// ---- failures of the transport itself ----

/// An address nothing listens on: bound by the OS, then released.
async fn closed_addr() -> Result<SocketAddr, Box<dyn std::error::Error>> {
    Ok(TcpListener::bind("127.0.0.1:0").await?.local_addr()?)
}

fn vote_request() -> VoteRequest<NodeId> {
    VoteRequest { vote: Vote::new(1, 1), last_log_id: None }
}

async fn connection_to(addr: SocketAddr) -> crate::raft::network::GrpcConnection {
    let mut network = GrpcNetwork::new(1, Arc::new(PeerChannels::new(None)));
    network.new_client(2, &member(addr)).await
}

#[tokio::test]
async fn a_closed_port_is_unreachable_and_a_silent_peer_times_out() -> TestResult {
    let mut closed = connection_to(closed_addr().await?).await;
    let error = closed.vote(vote_request(), RPCOption::new(Duration::from_secs(2))).await.expect_err("nothing listens");
    assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");

    // Accepts connections (the kernel's backlog) but never speaks HTTP/2.
    let silent = TcpListener::bind("127.0.0.1:0").await?;
    let mut connection = connection_to(silent.local_addr()?).await;
    let started = tokio::time::Instant::now();
    let error =
        connection.vote(vote_request(), RPCOption::new(Duration::from_millis(300))).await.expect_err("no answer");
    assert!(matches!(error, RPCError::Timeout(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "the ttl bounds the call: {:?}", started.elapsed());
    Ok(())
}

/// A peer that answers every call with bytes that do not decode.
struct GarbagePeer;

fn garbage<M: Envelope>() -> Result<tonic::Response<M>, tonic::Status> {
    Ok(tonic::Response::new(M::wrap(PEER_FORMAT_VERSION, vec![0xff; 3])))
}

#[tonic::async_trait]
impl RaftPeer for GarbagePeer {
    async fn append_entries(
        &self,
        _: tonic::Request<pb::AppendEntriesRequest>,
    ) -> Result<tonic::Response<pb::AppendEntriesResponse>, tonic::Status> {
        garbage()
    }
    async fn vote(
        &self,
        _: tonic::Request<pb::VoteRequest>,
    ) -> Result<tonic::Response<pb::VoteResponse>, tonic::Status> {
        garbage()
    }
    async fn install_snapshot(
        &self,
        _: tonic::Request<pb::InstallSnapshotRequest>,
    ) -> Result<tonic::Response<pb::InstallSnapshotResponse>, tonic::Status> {
        garbage()
    }
    async fn forward(
        &self,
        _: tonic::Request<pb::ForwardRequest>,
    ) -> Result<tonic::Response<pb::ForwardResponse>, tonic::Status> {
        garbage()
    }
    async fn read_index(
        &self,
        _: tonic::Request<pb::ReadIndexRequest>,
    ) -> Result<tonic::Response<pb::ReadIndexResponse>, tonic::Status> {
        garbage()
    }
    async fn timeout_now(
        &self,
        _: tonic::Request<pb::TimeoutNowRequest>,
    ) -> Result<tonic::Response<pb::TimeoutNowResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("garbage peer"))
    }
    async fn progress(
        &self,
        _: tonic::Request<pb::ProgressRequest>,
    ) -> Result<tonic::Response<pb::ProgressResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("garbage peer"))
    }
    async fn audit_pull(
        &self,
        _: tonic::Request<pb::AuditPullRequest>,
    ) -> Result<tonic::Response<pb::AuditPullResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("garbage peer"))
    }
    async fn audit_query(
        &self,
        _: tonic::Request<pb::AuditQueryRequest>,
    ) -> Result<tonic::Response<pb::AuditQueryResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("garbage peer"))
    }
    async fn clock(
        &self,
        _: tonic::Request<pb::ClockRequest>,
    ) -> Result<tonic::Response<pb::ClockResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("garbage peer"))
    }
    async fn rejoin(
        &self,
        _: tonic::Request<pb::RejoinRequest>,
    ) -> Result<tonic::Response<pb::RejoinResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("garbage peer"))
    }
}

#[tokio::test]
async fn garbage_answers_are_network_errors_and_remote_raft_errors_are_remote() -> TestResult {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftPeerServer::new(GarbagePeer))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let mut connection = connection_to(addr).await;
    let error = connection.vote(vote_request(), RPCOption::new(Duration::from_secs(2))).await.expect_err("garbage");
    assert!(matches!(error, RPCError::Network(_)), "{error:?}");
    let link = PeerLink::new(Arc::new(PeerChannels::new(None)));
    let error = link.read_index(2, &member(addr), DEADLINE).await.expect_err("garbage");
    assert!(matches!(error, ReplicaError::Internal { .. }), "{error:?}");
    server.abort();

    // A node whose Raft stopped answers with openraft's error, which comes
    // back as the remote's error.
    let config = raft_config(SNAPSHOT_CHUNK_BYTES_MAX);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mut node = Node::start(2, listener, &config, MemLogStore::new(), SnapshotStore::in_memory()).await?;
    node.raft.shutdown().await?;
    let mut connection = connection_to(node.addr).await;
    let error = connection.vote(vote_request(), RPCOption::new(Duration::from_secs(2))).await.expect_err("stopped");
    assert!(
        matches!(error, RPCError::RemoteError(ref remote) if matches!(remote.source, RaftError::Fatal(_))),
        "{error:?}"
    );
    node.stop().await?;
    Ok(())
}

#[tokio::test]
async fn an_unreachable_leader_is_no_leader_and_deadlines_hold() -> TestResult {
    let (_network, link) = peer_transport(1, None, None, None);
    let started = tokio::time::Instant::now();
    let closed = member(closed_addr().await?);
    let error = link.forward(2, &closed, unkeyed(create_tenant("acme")), DEADLINE).await.expect_err("nothing listens");
    assert!(matches!(error, ReplicaError::NoLeader), "{error:?}");
    let error = link.read_index(2, &closed, DEADLINE).await.expect_err("nothing listens");
    assert!(matches!(error, ReplicaError::NoLeader), "{error:?}");
    assert!(started.elapsed() < DEADLINE, "refused connections fail fast: {:?}", started.elapsed());

    let silent = TcpListener::bind("127.0.0.1:0").await?;
    let silent_leader = member(silent.local_addr()?);
    let deadline = Duration::from_millis(300);
    let started = tokio::time::Instant::now();
    let error = link.forward(2, &silent_leader, unkeyed(create_tenant("acme")), deadline).await.expect_err("no answer");
    assert!(matches!(error, ReplicaError::DeadlineExceeded { after_ms: 300 }), "{error:?}");
    let error = link.read_index(2, &silent_leader, deadline).await.expect_err("no answer");
    assert!(matches!(error, ReplicaError::DeadlineExceeded { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "the deadline bounds the calls: {:?}", started.elapsed());

    Ok(())
}
