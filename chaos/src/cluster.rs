//! Real multi-process clusters: N keeld processes on loopback, each with its
//! own temp dir and TOML config, sharing one root key and one list of initial
//! members. Ports are reserved up front (bound, noted, released) because every
//! member's config must name every other member's addresses.

use crate::process::{KeelProcess, keeld_bin};
use anyhow::{Context, Result, bail};
use keel_client::KeyPair;
use keel_proto::v1 as pb;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a cluster may take to elect a leader or converge.
pub const CONVERGE_DEADLINE: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// One member's placement.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    /// Raft node id.
    pub id: u64,
    /// Region.
    pub region: &'static str,
    /// Zone.
    pub zone: &'static str,
}

/// Raft snapshot settings. Every cluster also runs fast elections (heartbeat
/// 100 ms, election timeout 500–1000 ms); tests shrink snapshots so catch-up
/// by snapshot install happens within a test.
#[derive(Debug, Clone, Copy)]
pub struct RaftTuning {
    /// Snapshot every this many entries.
    pub snapshot_after_entries: u64,
    /// Entries kept after a snapshot.
    pub logs_kept_after_snapshot: u64,
    /// `raft.heartbeat_interval_ms`.
    pub heartbeat_interval_ms: u64,
    /// `raft.election_timeout_min_ms`.
    pub election_timeout_min_ms: u64,
    /// `raft.election_timeout_max_ms` (also openraft's leader lease).
    pub election_timeout_max_ms: u64,
}

impl Default for RaftTuning {
    /// keeld's defaults (100 ms heartbeats, 500–1000 ms election timeout),
    /// with snapshots often enough for a test to see one.
    fn default() -> Self {
        RaftTuning {
            snapshot_after_entries: 5000,
            logs_kept_after_snapshot: 1000,
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
        }
    }
}

/// Cluster-wide options.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Raft tuning.
    pub tuning: RaftTuning,
    /// Serve TLS on client ports and mTLS between peers, with a test CA.
    pub is_tls: bool,
    /// Export every member's traces and metrics over OTLP.
    pub telemetry: Option<TelemetryOptions>,
    /// Share admission rate limits through this Redis deployment.
    pub redis: Option<RedisTarget>,
    /// `redis.on_unavailable` (default: keeld's, `fail_closed`).
    pub redis_on_unavailable: Option<&'static str>,
    /// The dead-member rule: `cluster.remove_unreachable_after_ms` and
    /// `cluster.min_voters` (default: off).
    pub dead_member_rule: Option<(u64, usize)>,
}

/// Where members share admission state.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// One server (`redis.url`).
    Server(String),
    /// A Redis Cluster (`redis.cluster_urls`).
    Cluster(Vec<String>),
}

/// Where members send traces and metrics (their `[telemetry]` section).
#[derive(Debug, Clone, Copy)]
pub struct TelemetryOptions {
    /// A plaintext OTLP/gRPC receiver on loopback.
    pub otlp_addr: std::net::SocketAddr,
    /// `telemetry.export_interval_ms`.
    pub export_interval_ms: u64,
}

fn telemetry_section(telemetry: Option<TelemetryOptions>) -> String {
    match telemetry {
        Some(telemetry) => format!(
            "[telemetry]\notlp_endpoint = \"http://{}\"\nexport_interval_ms = {}\n",
            telemetry.otlp_addr, telemetry.export_interval_ms
        ),
        None => String::new(),
    }
}

/// Test members are debug builds on a shared machine: Redis answers are
/// given 500 ms rather than the production 25 ms, so a loaded run measures
/// limits, not scheduling delays (outage tests set their own timeout).
fn redis_section(redis: Option<&RedisTarget>, on_unavailable: Option<&str>) -> String {
    let mode = on_unavailable.map(|mode| format!("on_unavailable = {mode:?}\n")).unwrap_or_default();
    match redis {
        Some(RedisTarget::Server(url)) => format!("[redis]\nurl = {url:?}\ntimeout_ms = 500\n{mode}"),
        Some(RedisTarget::Cluster(urls)) => format!("[redis]\ncluster_urls = {urls:?}\ntimeout_ms = 500\n{mode}"),
        None => String::new(),
    }
}

/// The members of [`Cluster::three`].
const THREE: [MemberSpec; 3] = [
    MemberSpec { id: 1, region: "eu-west", zone: "eu-west-a" },
    MemberSpec { id: 2, region: "eu-west", zone: "eu-west-b" },
    MemberSpec { id: 3, region: "us-east", zone: "us-east-a" },
];

/// A running cluster.
pub struct Cluster {
    /// Members in id order.
    pub nodes: Vec<KeelProcess>,
    /// Node ids, parallel to `nodes`.
    pub ids: Vec<u64>,
    /// The root key every member trusts.
    pub root: KeyPair,
    /// The API-token key every member installs at bootstrap.
    pub api_key: KeyPair,
    /// A token granting every permission, signed by `api_key`; every
    /// member's [`KeelProcess::token`].
    pub admin_token: String,
    /// The cluster CA, when TLS is on.
    pub ca: Option<keel_client::certs::CaBundle>,
    /// Its `cluster.id` (the audience of its tokens), unique per cluster.
    pub cluster_id: String,
    root_pub: PathBuf,
    api_pub: PathBuf,
    tuning: RaftTuning,
    /// The keeld executable every member runs.
    keeld: PathBuf,
    dir: tempfile::TempDir,
}

/// A token for the cluster `audience` (its `cluster.id`), signed by `key`,
/// valid for an hour.
pub fn issue_token(
    key: &KeyPair,
    audience: &str,
    sub: &str,
    tenant: Option<&str>,
    permissions: &[&str],
) -> Result<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let permissions = permissions.iter().map(|permission| (*permission).to_owned()).collect();
    let mut claims = keel_client::token::TokenClaims::new(sub, audience, permissions, now, Duration::from_secs(3600));
    claims.tenant = tenant.map(str::to_owned);
    Ok(keel_client::token::issue(key, &claims)?)
}

/// Writes a node certificate (SAN `ip`) signed by `ca` and returns the `[tls]` section.
pub fn tls_section(
    ca: &keel_client::certs::CaBundle,
    dir: &Path,
    name: &str,
    ip: std::net::Ipv4Addr,
) -> Result<String> {
    use keel_client::certs;
    let ca_paths = dir.join("ca.crt");
    if !ca_paths.exists() {
        std::fs::write(&ca_paths, &ca.cert_pem)?;
    }
    let issued = certs::issue(ca, name, &[ip.to_string()], certs::Usage::Both, 20)?;
    let paths = certs::write_issued(&issued, dir, name)?;
    Ok(format!(
        "[tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        ca_paths.display(),
        paths.cert.display(),
        paths.key.display()
    ))
}

fn raft_section(tuning: RaftTuning) -> String {
    format!(
        "[raft]\nheartbeat_interval_ms = {}\nelection_timeout_min_ms = {}\nelection_timeout_max_ms = {}\n\
         snapshot_after_entries = {}\nlogs_kept_after_snapshot = {}\n",
        tuning.heartbeat_interval_ms,
        tuning.election_timeout_min_ms,
        tuning.election_timeout_max_ms,
        tuning.snapshot_after_entries,
        tuning.logs_kept_after_snapshot
    )
}

/// Three free loopback addresses: client, peer, ops.
///
/// A member's addresses must be known before it starts (every member's
/// config lists them all), so they are reserved here and bound by keeld a
/// moment later. They come from below the kernel's ephemeral range
/// ([`RESERVED_PORTS`]): a port the kernel hands out to some other test's
/// `bind(0)` (every single-node test binds port 0) can never be one of them,
/// which was how a reserved port got taken in between under parallel tests.
pub fn reserve_addresses() -> Result<[String; 3]> {
    let listeners = [reserve_port()?, reserve_port()?, reserve_port()?];
    let addrs: Vec<String> =
        listeners.iter().map(|l| l.local_addr().map(|a| a.to_string())).collect::<Result<_, _>>()?;
    Ok([addrs[0].clone(), addrs[1].clone(), addrs[2].clone()])
}

/// Ports reserved addresses come from: below Linux's default ephemeral range (32768–60999).
pub const RESERVED_PORTS: std::ops::Range<u16> = 20_000..32_000;
/// Ports tried before falling back to an OS-assigned one.
const RESERVE_ATTEMPTS_MAX: u32 = 64;

/// Where member `index` listens: in TLS clusters its own loopback address
/// (127.0.0.2 for the second, …), so its certificate names it alone and
/// peer identity is per member; plaintext clusters share 127.0.0.1.
pub fn member_ip(is_tls: bool, index: usize) -> std::net::Ipv4Addr {
    match is_tls {
        true => std::net::Ipv4Addr::new(127, 0, 0, u8::try_from(index + 1).unwrap_or(u8::MAX)),
        false => std::net::Ipv4Addr::LOCALHOST,
    }
}

fn reserve_port() -> Result<std::net::TcpListener> {
    reserve_port_on(std::net::Ipv4Addr::LOCALHOST)
}

fn reserve_port_on(ip: std::net::Ipv4Addr) -> Result<std::net::TcpListener> {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let span = u64::from(RESERVED_PORTS.end - RESERVED_PORTS.start);
    for _ in 0..RESERVE_ATTEMPTS_MAX {
        // A different start per process (tests run as separate processes) and per call.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        hasher.write_u32(std::process::id());
        let port = RESERVED_PORTS.start + u16::try_from(hasher.finish() % span).unwrap_or(0);
        if let Ok(listener) = std::net::TcpListener::bind((ip, port)) {
            return Ok(listener);
        }
    }
    Ok(std::net::TcpListener::bind((ip, 0))?)
}

/// [`reserve_addresses`] on `ip`.
pub fn reserve_addresses_on(ip: std::net::Ipv4Addr) -> Result<[String; 3]> {
    let listeners = [reserve_port_on(ip)?, reserve_port_on(ip)?, reserve_port_on(ip)?];
    let addrs: Vec<String> =
        listeners.iter().map(|l| l.local_addr().map(|a| a.to_string())).collect::<Result<_, _>>()?;
    Ok([addrs[0].clone(), addrs[1].clone(), addrs[2].clone()])
}

impl Cluster {
    /// Starts `members` and waits until every one is ready.
    pub async fn start(members: &[MemberSpec], options: ClusterOptions) -> Result<Cluster> {
        Cluster::start_with_binary(members, options, keeld_bin()).await
    }

    /// [`Cluster::start`] running the keeld executable at `keeld`.
    pub async fn start_with_binary(members: &[MemberSpec], options: ClusterOptions, keeld: PathBuf) -> Result<Cluster> {
        let tuning = options.tuning;
        let dir = tempfile::Builder::new().prefix("keel-cluster-").tempdir()?;
        let ca = if options.is_tls { Some(keel_client::certs::generate_ca("keel test CA", 30)?) } else { None };
        let root = KeyPair::generate();
        let root_paths = root.write_files(&dir.path().join("root"))?;
        let root_pub = root_paths.public.clone();
        // An API-token key installed at bootstrap, and an admin token it signs.
        let api_key = KeyPair::generate();
        let api_pub = api_key.write_files(&dir.path().join("api"))?.public;
        // Every test cluster its own id: a member of another cluster that
        // reaches one of its reused ports is refused (CLUSTER_MISMATCH).
        let cluster_id = dir
            .path()
            .file_name()
            .map(|name| name.to_string_lossy().to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "-"))
            .unwrap_or_else(|| "keel-test".to_owned());
        let admin_token = issue_token(&api_key, &cluster_id, "harness-admin", None, &["*"])?;

        // Reserve client, peer and ops ports for every member, then release them together.
        let mut reserved = Vec::new();
        let mut ports = Vec::new();
        for index in 0..members.len() {
            let ip = member_ip(options.is_tls, index);
            let listeners = [reserve_port_on(ip)?, reserve_port_on(ip)?, reserve_port_on(ip)?];
            let addrs: Vec<String> =
                listeners.iter().map(|l| l.local_addr().map(|a| a.to_string())).collect::<Result<_, _>>()?;
            ports.push(addrs);
            // Held until every member has its ports, so no two members draw the same one.
            reserved.extend(listeners);
        }
        drop(reserved);

        let mut members_toml = String::new();
        for (member, addrs) in members.iter().zip(&ports) {
            write!(
                members_toml,
                "\n[[cluster.initial_members]]\nid = {}\nclient_addr = \"{}\"\npeer_addr = \"{}\"\nregion = \"{}\"\nzone = \"{}\"\n",
                member.id, addrs[0], addrs[1], member.region, member.zone
            )?;
        }

        let mut nodes = Vec::new();
        for (index, (member, addrs)) in members.iter().zip(&ports).enumerate() {
            let config_path = dir.path().join(format!("node-{}.toml", member.id));
            let config = format!(
                "[node]\nid = {id}\nregion = \"{region}\"\nzone = \"{zone}\"\n\
                 [listen]\nclient = \"{client}\"\npeer = \"{peer}\"\nops = \"{ops}\"\n\
                 [trust]\nroot_public_keys = [\"{root_pub}\"]\napi_token_public_keys = [\"{api_pub}\"]\n\
                 [cluster]\nid = \"{cluster_id}\"\n{dead_member_rule}\
                 {raft}{tls}{telemetry}{members_toml}",
                id = member.id,
                region = member.region,
                zone = member.zone,
                client = addrs[0],
                peer = addrs[1],
                ops = addrs[2],
                root_pub = root_pub.display(),
                api_pub = api_pub.display(),
                raft = raft_section(tuning),
                dead_member_rule = match options.dead_member_rule {
                    Some((after_ms, min_voters)) => {
                        format!("remove_unreachable_after_ms = {after_ms}\nmin_voters = {min_voters}\n")
                    }
                    None => String::new(),
                },
                telemetry = telemetry_section(options.telemetry)
                    + &redis_section(options.redis.as_ref(), options.redis_on_unavailable),
                tls = match &ca {
                    Some(ca) => tls_section(ca, dir.path(), &format!("node-{}", member.id), member_ip(true, index))?,
                    None => String::new(),
                },
            );
            std::fs::write(&config_path, config)?;
            let config_arg = config_path.to_str().context("utf-8 config path")?.to_owned();
            let mut node = KeelProcess::new(vec!["--config".into(), config_arg])?.with_binary(keeld.clone());
            node.token = Some(admin_token.clone());
            nodes.push(match &ca {
                Some(ca) => node.with_tls(ca.cert_pem.clone()),
                None => node,
            });
        }
        for node in &mut nodes {
            node.launch().await?;
        }
        for node in &nodes {
            node.wait_ready().await?;
        }
        Ok(Cluster {
            nodes,
            ids: members.iter().map(|m| m.id).collect(),
            root,
            api_key,
            admin_token,
            ca,
            cluster_id,
            root_pub,
            api_pub,
            tuning,
            keeld,
            dir,
        })
    }

    /// The certificate and key (PEM) member `index` presents, in TLS clusters.
    pub fn member_identity(&self, index: usize) -> Result<(String, String)> {
        let name = format!("node-{}", self.ids.get(index).context("no such member")?);
        let read = |extension: &str| std::fs::read_to_string(self.dir.path().join(format!("{name}.{extension}")));
        Ok((read("crt")?, read("key")?))
    }

    /// A token signed by the cluster's API-token key, valid for an hour.
    pub fn token(&self, sub: &str, tenant: Option<&str>, permissions: &[&str]) -> Result<String> {
        issue_token(&self.api_key, &self.cluster_id, sub, tenant, permissions)
    }

    /// Starts a node that joins this cluster later (`initial_state = "existing"`),
    /// with a certificate from `ca` (default: the cluster's CA). Returns its
    /// index in `nodes` and its (client, peer) addresses; it is not ready until added.
    pub async fn launch_joiner(
        &mut self,
        member: MemberSpec,
        ca: Option<&keel_client::certs::CaBundle>,
    ) -> Result<(usize, String, String)> {
        let ca = ca.or(self.ca.as_ref()).cloned();
        let ip = member_ip(ca.is_some(), self.nodes.len());
        let addrs = reserve_addresses_on(ip)?;
        // Over mTLS a joiner admits only the peers it is told of until it learns the membership.
        let existing_members = match &ca {
            Some(_) => {
                let statuses = self.statuses().await?;
                let peers: Vec<String> = statuses
                    .first()
                    .map(|status| status.members.iter().map(|m| format!("\"{}\"", m.peer_addr)).collect())
                    .unwrap_or_default();
                format!("existing_members = [{}]\n", peers.join(", "))
            }
            None => String::new(),
        };
        let node_dir = self.dir.path().join(format!("joiner-{}", member.id));
        std::fs::create_dir_all(&node_dir)?;
        let config = format!(
            "[node]\nid = {}\nregion = \"{}\"\nzone = \"{}\"\n[listen]\nclient = \"{}\"\npeer = \"{}\"\nops = \"{}\"\n\
             [trust]\nroot_public_keys = [\"{}\"]\napi_token_public_keys = [\"{}\"]\n\
             [cluster]\nid = \"{}\"\ninitial_state = \"existing\"\n{}{}{}",
            member.id,
            member.region,
            member.zone,
            addrs[0],
            addrs[1],
            addrs[2],
            self.root_pub.display(),
            self.api_pub.display(),
            self.cluster_id,
            existing_members,
            raft_section(self.tuning),
            match &ca {
                Some(ca) => tls_section(ca, &node_dir, &format!("node-{}", member.id), ip)?,
                None => String::new(),
            },
        );
        let config_path = node_dir.join("keel.toml");
        std::fs::write(&config_path, config)?;
        let mut node =
            KeelProcess::new(vec!["--config".into(), config_path.to_str().context("utf-8 path")?.to_owned()])?
                .with_binary(self.keeld.clone());
        if let Some(ca) = &ca {
            node = node.with_tls(ca.cert_pem.clone());
        }
        node.token = Some(self.admin_token.clone());
        node.launch().await?;
        self.nodes.push(node);
        self.ids.push(member.id);
        Ok((self.nodes.len() - 1, addrs[0].clone(), addrs[1].clone()))
    }

    /// Three members: two in eu-west, one in us-east.
    pub async fn three(options: ClusterOptions) -> Result<Cluster> {
        Cluster::start(&THREE, options).await
    }

    /// [`Cluster::three`] running the keeld executable at `keeld`.
    pub async fn three_with_binary(options: ClusterOptions, keeld: PathBuf) -> Result<Cluster> {
        Cluster::start_with_binary(&THREE, options, keeld).await
    }

    /// Index (into `nodes`) of the leader every running member agrees on.
    pub async fn leader(&self) -> Result<usize> {
        let deadline = Instant::now() + CONVERGE_DEADLINE;
        loop {
            let mut leaders = Vec::new();
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                leaders.push(node.status().await.ok().map(|s| s.leader_id));
            }
            if let Some(Some(leader)) = leaders.first().copied()
                && leader != 0
                && leaders.iter().all(|l| *l == Some(leader))
                && let Some(index) = self.ids.iter().position(|id| *id == leader)
                && self.nodes[index].is_running()
            {
                return Ok(index);
            }
            if Instant::now() > deadline {
                bail!("no agreed leader within {CONVERGE_DEADLINE:?}: {leaders:?}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until every running member reports the same (applied_index, digest).
    pub async fn converged(&self) -> Result<(u64, String)> {
        let deadline = Instant::now() + CONVERGE_DEADLINE;
        loop {
            let mut seen: Vec<Option<(u64, String)>> = Vec::new();
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                seen.push(node.status().await.ok().map(|s| (s.applied_index, s.state_digest)));
            }
            if let Some(Some(first)) = seen.first()
                && seen.iter().all(|s| s.as_ref() == Some(first))
            {
                return Ok(first.clone());
            }
            if Instant::now() > deadline {
                bail!("members did not converge within {CONVERGE_DEADLINE:?}: {seen:?}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Status of every running member.
    pub async fn statuses(&self) -> Result<Vec<pb::ClusterStatus>> {
        let mut statuses = Vec::new();
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            statuses.push(node.status().await?);
        }
        Ok(statuses)
    }
}
