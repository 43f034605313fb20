//! Starting and stopping a node.
//!
//! ```text
//!  run(config) ─ bind client, peer, ops TCP listeners (port 0 → OS-assigned; printed on stdout)
//!   └─ NodeBuilder::new(config) [.storage(Memory) .clock(..) .connector(..) .judge(..): tests]
//!        .start(listeners)
//!         ├─ root keys (files, or the generated dev root key)
//!         ├─ stores (RocksDB or memory) ─► openraft Raft (initialised on a first start)
//!         ├─ Replica (leader clock, leader link over the peer transport) ─► ApiContext
//!         ├─ bootstrap task: once leader, install root keys if the trust store has none
//!         └─ serve client gRPC, peer gRPC (Incoming: TCP or in-memory) and ops HTTP
//!  until SIGINT/SIGTERM, then Node::shutdown: stop serving, shut Raft down
//! ```

use crate::api::admission::AdmissionApi;
use crate::api::cluster::ClusterApi;
use crate::api::context::ApiContext;
use crate::api::events::EventApi;
use crate::api::policy::PolicyApi;
use crate::api::registry::RegistryApi;
use crate::api::tenant::TenantApi;
use crate::api::trust::TrustApi;
use crate::clock::Clock;
use crate::config::{Config, InitialState};
use crate::dev_credentials::DevCredentials;
use crate::judge::{NodeJudge, Sandbox};
use crate::leader_clock::LeaderClock;
use crate::limits::STREAMS_PER_CONNECTION_MAX;
use crate::limits::{APPEND_ENTRIES_MAX, SNAPSHOT_CHUNK_BYTES_MAX};
use crate::limits::{
    HTTP2_KEEPALIVE_INTERVAL_MS, HTTP2_KEEPALIVE_TIMEOUT_MS, INSTALL_SNAPSHOT_TIMEOUT_MS, OPS_CONNECTION_MS_MAX,
    OPS_CONNECTIONS_MAX, OPS_HEADER_READ_TIMEOUT_MS,
};
use crate::raft::shared_state::SharedState;
use crate::raft::{KeelNode, KeelRaft};
use crate::replica::peer_service::peer_server;
use crate::replica::{Identity, Replica, Write};
use crate::tls::{self, TlsMaterial};
use crate::transport::{Connector, Incoming, tcp_incoming};
use crate::trust_roots;
use anyhow::Context as _;
use keel_kernel::Command;
use keel_kernel::limits::GRPC_MESSAGE_BYTES_MAX;
use keel_kernel::trust_store::KeySpec;
use keel_proto::v1 as pb;
use openraft::{ServerState, SnapshotPolicy};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long bootstrap waits to become leader before retrying.
const BOOTSTRAP_LEADER_WAIT_MS: u64 = 5_000;
/// Deadline of the bootstrap proposal.
const BOOTSTRAP_WRITE_DEADLINE_MS: u64 = 10_000;
/// Attempts to install the root keys before giving up (the node keeps serving, not ready).
const BOOTSTRAP_ATTEMPTS_MAX: u32 = 20;
/// Directory under `data_dir` holding RocksDB.
pub const RAFT_DIR: &str = "raft";

/// What a node is built from besides its configuration: where it stores
/// its log and state, what clock stamps its proposals, how it reaches its
/// peers, and where it judges. keeld's `run` and the in-process tests use
/// the same builder.
pub struct NodeBuilder {
    config: Config,
    storage: Storage,
    clock: Arc<dyn Clock>,
    connector: Option<Arc<dyn Connector>>,
    judge: Option<NodeJudge>,
}

/// Where a node keeps its log and state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// RocksDB under `data_dir` (keeld).
    RocksDb,
    /// In memory, gone when the node stops (in-process clusters).
    Memory,
}

/// The ports a node serves: client and peer gRPC connections through the
/// transport seam, and the ops HTTP listener when there is one.
pub struct Listeners {
    /// Client connections.
    pub client: Incoming,
    /// Peer connections.
    pub peer: Incoming,
    /// Ops HTTP (TCP only).
    pub ops: Option<TcpListener>,
    /// The client address this node advertises when `advertise.client` is unset.
    pub client_addr: String,
}

/// A started node: its replica and services, serving until [`Node::shutdown`].
pub struct Node {
    /// This node as a member.
    pub replica: Replica,
    /// What its client services share.
    pub ctx: ApiContext,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl NodeBuilder {
    /// keeld's node: RocksDB, the system clock (with `node.clock_offset_ms`),
    /// TCP, judging in children of the current executable.
    pub fn new(config: Config) -> NodeBuilder {
        let clock = Arc::new(crate::clock::SystemClock::new(config.node.clock_offset_ms));
        NodeBuilder { config, storage: Storage::RocksDb, clock, connector: None, judge: None }
    }

    /// Keeps the log and state in `storage`.
    pub fn storage(mut self, storage: Storage) -> NodeBuilder {
        self.storage = storage;
        self
    }

    /// Stamps proposals with `clock`.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> NodeBuilder {
        self.clock = clock;
        self
    }

    /// Opens peer connections through `connector` instead of TCP.
    pub fn connector(mut self, connector: Arc<dyn Connector>) -> NodeBuilder {
        self.connector = Some(connector);
        self
    }

    /// Judges with `judge` instead of a child process per judgement.
    pub fn judge(mut self, judge: NodeJudge) -> NodeBuilder {
        self.judge = Some(judge);
        self
    }

    /// Opens the stores, starts Raft (initialising the cluster on a first
    /// start when this node has the lowest initial id) and serves `listeners`.
    pub async fn start(self, listeners: Listeners) -> anyhow::Result<Node> {
        let NodeBuilder { config, storage, clock, connector, judge } = self;
        let boot_time_ms = clock.wall_ms();
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
        let roots = root_keys(&config)?;

        let shared = Arc::new(SharedState::default());
        tokio::spawn(crate::raft::shared_state::run_digester(Arc::downgrade(&shared)));
        // Policies and action schemas are judged in children of this very
        // executable (see `judge`), in apply and at the edge alike.
        let judge = match judge {
            Some(judge) => judge,
            None => NodeJudge::Sandbox(Arc::new(Sandbox::current_exe().context("locating keeld for judging")?)),
        };
        let raft_config = raft_config(&config)?;
        let tls = config.tls.as_ref().map(TlsMaterial::load).transpose().context("loading [tls]")?;
        let (network, leader_link) = crate::replica::peer_link::peer_transport(
            config.node.id,
            Some(&config.cluster.id),
            tls.as_ref().map(tls::peer_channels_tls),
            connector,
        );
        let raft = match storage {
            Storage::RocksDb => {
                let (log_store, state_machine) =
                    crate::raft::open_rocks(&config.data_dir.join(RAFT_DIR), shared.clone())
                        .await
                        .with_context(|| format!("opening RocksDB under {}", config.data_dir.display()))?;
                let state_machine = state_machine.with_judge(judge.clone());
                KeelRaft::new(config.node.id, raft_config, network, log_store, state_machine).await
            }
            Storage::Memory => {
                let (log_store, state_machine) = crate::raft::open_memory(shared.clone());
                let state_machine = state_machine.with_judge(judge.clone());
                KeelRaft::new(config.node.id, raft_config, network, log_store, state_machine).await
            }
        }
        .context("starting raft")?;

        let members = initial_members(&config, listeners.client_addr.clone());
        let is_fresh = !raft.is_initialized().await?;
        // With initial members, a fresh store first asks them whether a
        // cluster ran without it (replica::rejoin decides, and initialises
        // on the lowest id); a lone node initialises itself at once.
        let has_peers = !config.cluster.initial_members.is_empty();
        // A fresh store, or an earlier start that had not settled (it may have
        // received entries or a vote since): decide before voting.
        let must_decide = has_peers
            && config.cluster.initial_state == InitialState::New
            && (is_fresh || crate::replica::rejoin::is_unsettled(&config.data_dir));
        if is_fresh && config.cluster.initial_state == InitialState::Existing {
            tracing::info!("joining an existing cluster: waiting to be added as a learner");
        } else if is_fresh && !has_peers {
            tracing::info!(node_id = config.node.id, "initialising a new single-member cluster");
            raft.initialize(members.clone()).await.context("initialising the cluster")?;
        }

        let identity =
            Identity { node_id: config.node.id, region: config.node.region.clone(), zone: config.node.zone.clone() };
        let clock = LeaderClock::with_clock(config.raft.clock_skew_max_ms, clock);
        let peer_channels = leader_link.channels();
        let replica = Replica::new(raft.clone(), shared, identity, leader_link, clock);
        let audit = crate::audit::AuditLog::open(&config.audit, &config.data_dir, config.node.id, &config.node.region)
            .with_context(|| format!("opening the audit log under {}", config.audit.dir(&config.data_dir).display()))?;
        let ctx = ApiContext::new(replica.clone())
            .with_audit(audit.clone())
            .with_peer_channels(Arc::clone(&peer_channels))
            .with_watchers_max(config.watch.watchers_max)
            .with_judge(judge)
            .with_slo(&config.slo)
            .with_plaintext_peers(config.is_plaintext());
        let dev_credentials = dev_credentials(&config, &replica)?;
        let mut api_token_keys = api_token_keys(&config)?;
        api_token_keys.extend(dev_credentials.as_ref().map(|credentials| credentials.api_spec.clone()));
        tokio::spawn(bootstrap_trust(replica.clone(), roots, api_token_keys));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        if has_peers && config.cluster.initial_state == InitialState::New {
            if must_decide && members.keys().next() != Some(&config.node.id) {
                tokio::spawn(check_initial_membership(replica.clone(), members.clone()));
            }
            // Validation put this node among the initial members.
            let me = members.get(&config.node.id).cloned().context("this node is not among cluster.initial_members")?;
            // Both before the peer port serves anything.
            if must_decide {
                // Durable first: from here on a restart decides again.
                crate::replica::rejoin::mark_unsettled(&config.data_dir)
                    .with_context(|| format!("writing the UNSETTLED marker in {}", config.data_dir.display()))?;
                replica.set_standing(crate::replica::rejoin::Standing::Deciding, "starting".into());
            } else {
                replica.elect.hold(&replica.raft, crate::replica::rejoin::Hold::Quiet, true);
                let quiet = crate::replica::rejoin::quiet_start_ms(
                    config.raft.election_timeout_max_ms,
                    config.raft.heartbeat_interval_ms,
                );
                tokio::spawn(crate::replica::rejoin::quiet_start(replica.clone(), Duration::from_millis(quiet)));
            }
            let plan = crate::replica::rejoin::RejoinPlan {
                me,
                initial_members: members,
                must_decide,
                data_dir: config.data_dir.clone(),
            };
            tokio::spawn(crate::replica::rejoin::run(replica.clone(), plan, stop_rx.clone()));
        }
        if config.cluster.remove_unreachable_after_ms > 0 {
            tokio::spawn(crate::replica::replace::run_dead_member_rule(
                replica.clone(),
                Duration::from_millis(config.cluster.remove_unreachable_after_ms),
                config.cluster.min_voters,
                stop_rx.clone(),
            ));
        }

        tokio::spawn(crate::replica::clock_check::run(replica.clone(), stop_rx.clone()));
        if let Some(credentials) = dev_credentials {
            tokio::spawn(refresh_dev_token(credentials, Arc::clone(&replica.clock), stop_rx.clone()));
        }
        let mut tasks = Vec::new();
        let limiter_health = Arc::new(crate::admission::LimiterHealth::new(&config.redis));
        let admission = AdmissionApi::new(ctx.clone(), &config, Arc::clone(&limiter_health))?;
        admission.probe_redis(stop_rx.clone());
        admission.publish_breaker_events(stop_rx.clone());
        if let Some(ops_listener) = listeners.ops {
            let collectors: Vec<Arc<dyn prometheus_client::collector::Collector>> = vec![
                Arc::new(ctx.rpc_metrics.clone()),
                Arc::new(ctx.rpc_metrics.slo.clone()),
                ctx.shed_stats.clone(),
                ctx.watch_stats.clone(),
                limiter_health.clone(),
                Arc::new(audit.clone()),
            ];
            let router = crate::ops::router(
                replica.clone(),
                boot_time_ms,
                collectors,
                config.ops.expose,
                limiter_health,
                audit.clone(),
            );
            let ops = serve_ops(ops_listener, router, stop_rx.clone());
            tasks.push(tokio::spawn(ops));
        }
        let members: crate::audit::copies::Members = {
            let replica = replica.clone();
            Box::new(move || replica.member_peers())
        };
        tokio::spawn(crate::audit::copies::run(audit.clone(), config.node.id, members, peer_channels, stop_rx.clone()));
        tokio::spawn(crate::audit::retention::run(
            audit.clone(),
            Duration::from_millis(config.audit.retention_age_ms),
            config.audit.retention_bytes,
            stop_rx.clone(),
        ));
        let peers =
            serve_peers(listeners.peer, replica.clone(), audit.clone(), tls.clone(), config.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(peers));
        let in_flight_requests_max = config.api.in_flight_requests_max;
        let settings = crate::edge::authn::AuthSettings {
            mode: config.api.authentication,
            audience: config.cluster.id.clone(),
            bind_client_certificates: tls.as_ref().is_some_and(TlsMaterial::require_client_certs),
            failure_burst: config.api.auth_failure_burst,
            failures_per_s: config.api.auth_failures_per_source_per_s,
        };
        let authenticator = Arc::new(
            crate::edge::authn::Authenticator::new(
                &settings,
                Arc::new(PublishedTrust(Arc::clone(&replica.shared))),
                Arc::clone(&replica.clock),
                ctx.rpc_metrics.clone(),
            )
            .with_audit(audit),
        );
        let grpc = serve_grpc(
            listeners.client,
            ctx.clone(),
            GrpcSetup { in_flight_requests_max, authenticator, tls, boot_time_ms, admission },
            stop_rx,
        );
        tasks.push(tokio::spawn(grpc));
        Ok(Node { replica, ctx, stop, tasks })
    }
}

impl Node {
    /// Stops serving and shuts Raft down; a leader first hands leadership to
    /// its most caught-up voter (at most `SHUTDOWN_TRANSFER_MS_MAX`), so a
    /// rolling restart does not wait out an election timeout.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let bound = Duration::from_millis(crate::limits::SHUTDOWN_TRANSFER_MS_MAX);
        match self.replica.step_down(bound).await {
            Ok(Some(target)) => tracing::info!(target, "stopping: leadership handed over"),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "stopping: leadership could not be handed over; the cluster elects"),
        }
        // A stopping member takes no further part in elections: it would
        // win one (its log is complete) while its servers drain, and take
        // the cluster's leadership away with it when it exits.
        self.replica.elect.hold(&self.replica.raft, crate::replica::rejoin::Hold::Stopping, true);
        let _ = self.stop.send(true);
        let drain = Duration::from_millis(crate::limits::SHUTDOWN_DRAIN_MS_MAX);
        let drained = tokio::time::timeout(drain, futures::future::join_all(self.tasks.iter_mut())).await;
        if drained.is_err() {
            tracing::warn!(
                drain_ms = drain.as_millis() as u64,
                "stopping: calls still in flight after the drain bound; cutting them off"
            );
            for task in &self.tasks {
                task.abort();
            }
        }
        self.replica.raft.shutdown().await.map_err(|error| anyhow::anyhow!("raft shutdown: {error}"))
    }
}

/// openraft's settings from `[raft]`.
fn raft_config(config: &Config) -> anyhow::Result<Arc<openraft::Config>> {
    let raft_config = openraft::Config {
        cluster_name: "keel".into(),
        heartbeat_interval: config.raft.heartbeat_interval_ms,
        election_timeout_min: config.raft.election_timeout_min_ms,
        election_timeout_max: config.raft.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.raft.snapshot_after_entries),
        max_in_snapshot_log_to_keep: config.raft.logs_kept_after_snapshot,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES_MAX,
        max_payload_entries: APPEND_ENTRIES_MAX,
        install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
        ..Default::default()
    };
    Ok(Arc::new(raft_config.validate().context("raft settings")?))
}

/// Runs keeld's node until a shutdown signal: binds the TCP listeners,
/// announces them on stdout, and serves.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let client_listener = TcpListener::bind(config.listen.client)
        .await
        .with_context(|| format!("binding listen.client {}", config.listen.client))?;
    let ops_listener = TcpListener::bind(config.listen.ops)
        .await
        .with_context(|| format!("binding listen.ops {}", config.listen.ops))?;
    let peer_listener = TcpListener::bind(config.listen.peer)
        .await
        .with_context(|| format!("binding listen.peer {}", config.listen.peer))?;
    let client_addr = client_listener.local_addr()?;
    let peer_addr = peer_listener.local_addr()?;
    let ops_addr = ops_listener.local_addr()?;
    let listeners = Listeners {
        client: tcp_incoming(client_listener),
        peer: tcp_incoming(peer_listener),
        ops: Some(ops_listener),
        client_addr: client_addr.to_string(),
    };
    let (node_id, region, data_dir) = (config.node.id, config.node.region.clone(), config.data_dir.clone());
    let node = NodeBuilder::new(config).start(listeners).await?;
    println!(
        "{}",
        serde_json::json!({
            "event": "listening",
            "node_id": node_id,
            "region": region,
            "client": client_addr.to_string(),
            "peer": peer_addr.to_string(),
            "ops": ops_addr.to_string(),
            "data_dir": data_dir.display().to_string(),
        })
    );
    tracing::info!(%client_addr, %ops_addr, node_id, %region, "serving");
    shutdown_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await
}

/// The initial membership from config; a lone node is its own member.
fn initial_members(config: &Config, bound_client_addr: String) -> BTreeMap<u64, KeelNode> {
    if config.cluster.initial_members.is_empty() {
        let this_node = KeelNode {
            client_addr: config.advertise.client.clone().unwrap_or(bound_client_addr),
            peer_addr: config.advertised_peer(),
            region: config.node.region.clone(),
            zone: config.node.zone.clone(),
        };
        return BTreeMap::from([(config.node.id, this_node)]);
    }
    config
        .cluster
        .initial_members
        .iter()
        .map(|member| {
            // A member listed without a place says its own (its node.region/zone).
            let own = |listed: &str, own: &str| {
                if listed.is_empty() && member.id == config.node.id { own.to_owned() } else { listed.to_owned() }
            };
            let node = KeelNode {
                client_addr: member.client_addr.clone(),
                peer_addr: member.peer_addr.clone(),
                region: own(&member.region, &config.node.region),
                zone: own(&member.zone, &config.node.zone),
            };
            (member.id, node)
        })
        .collect()
}

/// Whether the cluster's entry for a member matches its configured one:
/// the same addresses, and the same place where both name one.
fn matches_configured(configured: &KeelNode, actual: &KeelNode) -> bool {
    let place = |listed: &str, actual: &str| listed.is_empty() || actual.is_empty() || listed == actual;
    configured.client_addr == actual.client_addr
        && configured.peer_addr == actual.peer_addr
        && place(&configured.region, &actual.region)
        && place(&configured.zone, &actual.zone)
}

/// How long a fresh member waits to learn the cluster's first membership before checking.
const INITIAL_MEMBERSHIP_WAIT_MS: u64 = 300_000;

/// On a fresh member that did not initialise the cluster: once it learns the
/// cluster's membership, compare it with its own `cluster.initial_members`. A
/// mismatch means the members were configured differently; the node reports it
/// (error log, `/readyz`, `/diagz`) instead of serving as if all were well.
async fn check_initial_membership(replica: Replica, expected: BTreeMap<u64, KeelNode>) {
    let learned = replica
        .raft
        .wait(Some(Duration::from_millis(INITIAL_MEMBERSHIP_WAIT_MS)))
        .metrics(|m| m.membership_config.membership().voter_ids().next().is_some(), "initial membership")
        .await;
    let Ok(metrics) = learned else {
        tracing::warn!("no membership learned yet; is the initialising member (lowest id) running?");
        return;
    };
    let membership = metrics.membership_config.membership().clone();
    let actual: BTreeMap<u64, KeelNode> = membership.nodes().map(|(id, node)| (*id, node.clone())).collect();
    // Members and addresses, not who votes: a replacement or the dead-member
    // rule may have a member as a learner for a while.
    let agrees = actual.len() == expected.len()
        && expected.iter().all(|(id, node)| actual.get(id).is_some_and(|actual| matches_configured(node, actual)));
    if !agrees {
        let conflict = format!(
            "cluster.initial_members disagrees with the cluster's membership: configured {:?}, cluster has {:?}",
            expected.keys().collect::<Vec<_>>(),
            actual.iter().map(|(id, node)| format!("{id}@{}", node.peer_addr)).collect::<Vec<_>>()
        );
        tracing::error!(%conflict, "configuration conflict");
        replica.set_config_conflict(conflict);
    }
}

/// The API-token keys installed at bootstrap (`trust.api_token_public_keys`).
fn api_token_keys(config: &Config) -> anyhow::Result<Vec<KeySpec>> {
    let read = |path: &std::path::PathBuf| -> anyhow::Result<KeySpec> {
        let mut spec = trust_roots::read_root_public_key(path)?;
        spec.purposes = std::collections::BTreeSet::from([keel_kernel::trust_store::KeyPurpose::ApiToken]);
        Ok(spec)
    };
    config.trust.api_token_public_keys.iter().map(read).collect()
}

fn root_keys(config: &Config) -> anyhow::Result<Vec<KeySpec>> {
    if config.dev && config.trust.root_public_keys.is_empty() {
        let (spec, path) = trust_roots::ensure_dev_root_key(&config.data_dir)?;
        println!(
            "{}",
            serde_json::json!({"event": "dev_root_key", "path": path.display().to_string(), "key_id": spec.key_id()})
        );
        tracing::warn!(path = %path.display(), "dev mode: the root key is a local file; sign with `keelctl ... --signer {}`", path.display());
        return Ok(vec![spec]);
    }
    config
        .trust
        .root_public_keys
        .iter()
        .map(|path| trust_roots::read_root_public_key(path).map_err(anyhow::Error::from))
        .collect()
}

/// Dev mode's API-token key and admin token (see `dev_credentials`), when
/// this dev node made its own root key; the first token is written now.
fn dev_credentials(config: &Config, replica: &Replica) -> anyhow::Result<Option<DevCredentials>> {
    if !config.dev || !config.trust.root_public_keys.is_empty() {
        return Ok(None);
    }
    let credentials = DevCredentials::prepare(&config.data_dir, &config.cluster.id)?;
    credentials.write_admin_token(replica.clock.wall_now_ms())?;
    let path = credentials.token_path.display().to_string();
    println!("{}", serde_json::json!({"event": "dev_admin_token", "path": path}));
    tracing::warn!(
        %path,
        "dev mode: an admin token (every permission) is in a local file; `export KEEL_TOKEN=$(cat {path})`"
    );
    Ok(Some(credentials))
}

/// Rewrites the dev admin token every `DEV_TOKEN_REFRESH_MS` until stopped.
async fn refresh_dev_token(
    credentials: DevCredentials,
    clock: Arc<LeaderClock>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let period = Duration::from_millis(crate::dev_credentials::DEV_TOKEN_REFRESH_MS);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            () = tokio::time::sleep(period) => {}
        }
        if let Err(error) = credentials.write_admin_token(clock.wall_now_ms()) {
            tracing::error!(%error, "could not rewrite the dev admin token");
        }
    }
}

/// Installs the configured root and API-token keys once this node leads,
/// unless the trust store already has them. Bounded retries; failures leave
/// the node not ready.
async fn bootstrap_trust(replica: Replica, roots: Vec<KeySpec>, api_token_keys: Vec<KeySpec>) {
    for attempt in 1..=BOOTSTRAP_ATTEMPTS_MAX {
        let leader = replica
            .raft
            .wait(Some(Duration::from_millis(BOOTSTRAP_LEADER_WAIT_MS)))
            .state(ServerState::Leader, "bootstrap trust")
            .await;
        if leader.is_err() {
            tracing::debug!(attempt, "not leader yet; waiting to bootstrap trust");
            continue;
        }
        if replica.shared.read().kernel.trust().is_bootstrapped() {
            return;
        }
        let command = Command::BootstrapTrust { root_keys: roots.clone(), api_token_keys: api_token_keys.clone() };
        let write = Write { command, idempotency_key: None, actor: None };
        match replica.propose(write, Duration::from_millis(BOOTSTRAP_WRITE_DEADLINE_MS)).await {
            Ok(_) => {
                tracing::info!(
                    n_root_keys = roots.len(),
                    n_api_token_keys = api_token_keys.len(),
                    "trust store bootstrapped"
                );
                return;
            }
            Err(error) => tracing::warn!(attempt, %error, "bootstrapping the trust store failed; retrying"),
        }
    }
    tracing::error!("could not bootstrap the trust store; the node stays not ready");
}

/// The edge reads the trust store from the member's published state.
#[derive(Debug)]
struct PublishedTrust(Arc<SharedState>);

impl crate::edge::authn::TrustSource for PublishedTrust {
    fn with_trust(&self, f: &mut dyn FnMut(&keel_kernel::trust_store::TrustStore)) {
        f(self.0.read().kernel.trust());
    }
}

/// What the client port is served with, besides the services' context.
struct GrpcSetup {
    admission: AdmissionApi,
    in_flight_requests_max: usize,
    authenticator: Arc<crate::edge::authn::Authenticator>,
    tls: Option<TlsMaterial>,
    boot_time_ms: u64,
}

async fn serve_grpc(
    incoming: Incoming,
    ctx: ApiContext,
    setup: GrpcSetup,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let GrpcSetup { in_flight_requests_max, authenticator, tls, boot_time_ms, admission } = setup;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<pb::registry_service_server::RegistryServiceServer<RegistryApi>>().await;
    health_reporter.set_serving::<pb::trust_service_server::TrustServiceServer<TrustApi>>().await;
    health_reporter.set_serving::<pb::tenant_service_server::TenantServiceServer<TenantApi>>().await;
    health_reporter.set_serving::<pb::policy_service_server::PolicyServiceServer<PolicyApi>>().await;
    health_reporter.set_serving::<pb::cluster_service_server::ClusterServiceServer<ClusterApi>>().await;
    health_reporter.set_serving::<pb::event_service_server::EventServiceServer<EventApi>>().await;
    health_reporter.set_serving::<pb::admission_service_server::AdmissionServiceServer<AdmissionApi>>().await;
    health_reporter.set_serving::<pb::audit_service_server::AuditServiceServer<crate::api::audit::AuditApi>>().await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(keel_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(keel_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let identity = Arc::clone(&ctx.replica.identity);
    let edge = crate::edge::stack(
        ctx.rpc_metrics.clone(),
        identity.node_id,
        &identity.region,
        in_flight_requests_max,
        Arc::clone(&ctx.shed_stats),
        authenticator,
    );
    let mut server =
        tonic::transport::Server::builder().max_concurrent_streams(Some(STREAMS_PER_CONNECTION_MAX)).layer(edge);
    if let Some(material) = &tls {
        server = server.tls_config(tls::client_port_server_tls(material)).context("client port TLS")?;
    }
    server
        .http2_keepalive_interval(Some(Duration::from_millis(HTTP2_KEEPALIVE_INTERVAL_MS)))
        .http2_keepalive_timeout(Some(Duration::from_millis(HTTP2_KEEPALIVE_TIMEOUT_MS)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(limit(pb::trust_service_server::TrustServiceServer::new(TrustApi { ctx: ctx.clone() })))
        .add_service(limit(pb::registry_service_server::RegistryServiceServer::new(RegistryApi { ctx: ctx.clone() })))
        .add_service(limit(pb::tenant_service_server::TenantServiceServer::new(TenantApi { ctx: ctx.clone() })))
        .add_service(limit(pb::event_service_server::EventServiceServer::new(EventApi { ctx: ctx.clone() })))
        .add_service(limit(pb::policy_service_server::PolicyServiceServer::new(PolicyApi::new(ctx.clone()))))
        .add_service(limit(pb::audit_service_server::AuditServiceServer::new(crate::api::audit::AuditApi {
            ctx: ctx.clone(),
        })))
        .add_service(limit(keel_proto::envoy::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer::new(
            crate::api::envoy_rls::EnvoyRls(admission.clone()),
        )))
        .add_service(limit(pb::admission_service_server::AdmissionServiceServer::new(admission)))
        .add_service(limit(pb::cluster_service_server::ClusterServiceServer::new(ClusterApi { ctx, boot_time_ms })))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .await
        .context("gRPC server")
}

/// Serves `keel.raft.v1` on the peer port: mTLS with the member-certificate
/// check when `[tls]` is configured, plaintext on loopback otherwise (config
/// validation refuses plaintext members off loopback).
async fn serve_peers(
    connections: Incoming,
    replica: Replica,
    audit: crate::audit::AuditLog,
    tls: Option<TlsMaterial>,
    config: Config,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut server = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(STREAMS_PER_CONNECTION_MAX))
        .http2_keepalive_interval(Some(Duration::from_millis(HTTP2_KEEPALIVE_INTERVAL_MS)))
        .http2_keepalive_timeout(Some(Duration::from_millis(HTTP2_KEEPALIVE_TIMEOUT_MS)));
    let shutdown = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let is_tls = tls.is_some();
    if let Some(material) = &tls {
        server = server.tls_config(tls::peer_port_server_tls(material)).context("peer port TLS")?;
    }
    let raft = replica.raft.clone();
    let check = move |request: tonic::Request<()>| {
        if is_tls {
            member_certificate_check(&raft, &config, &request)?;
        }
        same_cluster_check(&config.cluster.id, &request)?;
        Ok(request)
    };
    let service = tonic::service::interceptor::InterceptedService::new(peer_server(replica, audit), check);
    server.add_service(service).serve_with_incoming_shutdown(connections, shutdown).await.context("peer gRPC server")
}

/// A peer request must name this cluster (`keel-cluster-id`, sent by every
/// member's peer channels): a member of another cluster that reached this
/// address (a reused port, a stale address) is refused before its message
/// reaches Raft, with reason `CLUSTER_MISMATCH`.
fn same_cluster_check(cluster_id: &str, request: &tonic::Request<()>) -> Result<(), tonic::Status> {
    use crate::raft::peer_channels::CLUSTER_ID_HEADER;
    let theirs = request.metadata().get(CLUSTER_ID_HEADER).and_then(|value| value.to_str().ok());
    if theirs == Some(cluster_id) {
        return Ok(());
    }
    let mismatch = tls::ClusterMismatch { ours: cluster_id.to_owned(), theirs: theirs.map(str::to_owned) };
    Err(crate::status::to_status(&mismatch))
}

/// A peer request must carry a certificate naming the host of a *current*
/// member's peer address: once this node knows a membership, that
/// membership alone (a removed member is refused from the moment its
/// removal is in the membership this node holds). Before it knows one, the
/// configured peers: `cluster.initial_members` on a new cluster,
/// `cluster.existing_members` on a joining node. No hosts: nobody.
fn member_certificate_check(
    raft: &KeelRaft,
    config: &Config,
    request: &tonic::Request<()>,
) -> Result<(), tonic::Status> {
    let mut hosts: BTreeSet<String> = BTreeSet::new();
    {
        let metrics = raft.metrics();
        let metrics = metrics.borrow();
        for (_, node) in metrics.membership_config.membership().nodes() {
            if let Ok(host) = tls::peer_host(&node.peer_addr) {
                hosts.insert(host);
            }
        }
    }
    if hosts.is_empty() {
        let configured = config.cluster.initial_members.iter().map(|member| member.peer_addr.as_str());
        for addr in configured.chain(config.cluster.existing_members.iter().map(String::as_str)) {
            if let Ok(host) = tls::peer_host(addr) {
                hosts.insert(host);
            }
        }
    }
    tls::member_cert_check(request, &hosts)
}

/// Applies the gRPC message size limit to a generated server.
trait MessageLimits {
    fn with_limits(self, bytes: usize) -> Self;
}

macro_rules! message_limits {
    ($($server:ty),*) => {$(
        impl MessageLimits for $server {
            fn with_limits(self, bytes: usize) -> Self {
                self.max_decoding_message_size(bytes).max_encoding_message_size(bytes)
            }
        }
    )*};
}

message_limits!(
    pb::trust_service_server::TrustServiceServer<TrustApi>,
    pb::registry_service_server::RegistryServiceServer<RegistryApi>,
    pb::tenant_service_server::TenantServiceServer<TenantApi>,
    pb::cluster_service_server::ClusterServiceServer<ClusterApi>,
    pb::event_service_server::EventServiceServer<EventApi>,
    pb::policy_service_server::PolicyServiceServer<PolicyApi>,
    pb::admission_service_server::AdmissionServiceServer<AdmissionApi>,
    pb::audit_service_server::AuditServiceServer<crate::api::audit::AuditApi>,
    keel_proto::envoy::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer<
        crate::api::envoy_rls::EnvoyRls,
    >
);

fn limit<S: MessageLimits>(server: S) -> S {
    server.with_limits(GRPC_MESSAGE_BYTES_MAX)
}

/// Pause after a failed accept (e.g. out of file descriptors) before the next.
const ACCEPT_RETRY_DELAY_MS: u64 = 50;

/// Serves ops HTTP: one request per connection, headers within
/// `OPS_HEADER_READ_TIMEOUT_MS`, each connection at most
/// `OPS_CONNECTION_MS_MAX`, at most `OPS_CONNECTIONS_MAX` at once (more are
/// closed as soon as they are accepted), so slow or half-sent requests cannot
/// hold file descriptors or tasks the rest of the node needs.
async fn serve_ops(
    listener: TcpListener,
    router: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(OPS_CONNECTIONS_MAX));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
        };
        let (stream, remote) = match accepted {
            Ok((stream, remote)) => (stream, remote),
            Err(error) => {
                tracing::warn!(%error, "ops HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_DELAY_MS)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let remote = crate::ops::RemoteAddr(Some(remote));
        let service = hyper_util::service::TowerToHyperService::new(router.clone().layer(axum::Extension(remote)));
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_millis(OPS_HEADER_READ_TIMEOUT_MS))
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_millis(OPS_CONNECTION_MS_MAX), connection).await;
            drop(permit);
        });
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
