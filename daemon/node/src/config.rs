//! keeld's configuration.
//!
//! Built once in `main` with figment, in this order (later wins): defaults →
//! the TOML file given by `--config` → environment variables `KEEL_*` (nested
//! with `__`, e.g. `KEEL_NODE__REGION=eu-west`) → command-line flags. Unknown
//! keys are refused, and [`Config::validate`] names the offending key.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Default client gRPC port.
pub const CLIENT_PORT_DEFAULT: u16 = 7400;
/// Default peer (Raft) port.
pub const PEER_PORT_DEFAULT: u16 = 7401;
/// Default ops HTTP port.
pub const OPS_PORT_DEFAULT: u16 = 7402;
/// Data directory of `keeld --dev`.
pub const DEV_DATA_DIR: &str = "./keel-data";
/// Environment variables with the `KEEL_` prefix that belong to `keelctl`, not keeld.
const CLIENT_ENV_KEYS: &[&str] =
    &["endpoints", "output", "timeout_ms", "region", "ca_file", "cert_file", "key_file", "token", "cluster_id"];

/// Raft timing bounds (checked by `validate`).
pub const HEARTBEAT_INTERVAL_MS_MIN: u64 = 10;
/// The least gap between heartbeat and election timeout, as a factor.
pub const ELECTION_TO_HEARTBEAT_RATIO_MIN: u64 = 3;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Development mode: single node, plaintext, loopback only, a generated root key.
    pub dev: bool,
    /// Where RocksDB and the dev root key live.
    pub data_dir: PathBuf,
    /// Who this node is.
    pub node: NodeConfig,
    /// Listen addresses.
    pub listen: ListenConfig,
    /// Addresses others use to reach this node (default: the listen addresses).
    pub advertise: AdvertiseConfig,
    /// Raft timing and snapshots.
    pub raft: RaftConfig,
    /// Cluster membership at bootstrap.
    pub cluster: ClusterConfig,
    /// Trust roots installed at bootstrap.
    pub trust: TrustConfig,
    /// TLS for the client port and mTLS for the peer port. Required for any
    /// listener or member address off loopback.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Logging.
    pub log: LogConfig,
    /// Watch streams.
    pub watch: WatchConfig,
    /// Service-level objectives per RPC class (`/metrics` `keel_slo_*`).
    pub slo: crate::edge::slo::SloConfig,
    /// The client API's own bounds.
    #[serde(default)]
    pub api: ApiConfig,
    /// OpenTelemetry export of traces and metrics over OTLP (off by default).
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetryConfig,
    /// Who may read the ops port's diagnostics.
    #[serde(default)]
    pub ops: OpsConfig,
    /// Admission's default rate limits.
    #[serde(default)]
    pub admission: crate::admission::AdmissionConfig,
    /// The shared rate limiter.
    #[serde(default)]
    pub redis: crate::admission::RedisConfig,
    /// `[breaker]`: circuit breakers on admissions.
    #[serde(default)]
    pub breaker: crate::admission::breaker::BreakerConfig,
    /// `[audit]`: the node's audit log.
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
}

/// Bounds of the client API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Requests served at once (watch streams excluded); more are refused
    /// with `RESOURCE_EXHAUSTED` and `RetryInfo`.
    /// 1..=`IN_FLIGHT_REQUESTS_MAX` (the default).
    pub in_flight_requests_max: usize,
    /// `required` (the default): every client RPC needs a valid capability
    /// token. `off`: nobody is checked — for measuring what authentication
    /// costs; accepted only when every listener is on loopback.
    pub authentication: crate::edge::authn::AuthMode,
    /// Authentication failures one source address may cause in a burst
    /// before its failures are answered `AUTH_FAILURES_THROTTLED`.
    /// 1..=1000000 (default `AUTH_FAILURE_BURST`).
    pub auth_failure_burst: u32,
    /// Authentication failures per second one source address may sustain.
    /// 1..=1000000 (default `AUTH_FAILURES_PER_SOURCE_PER_S`).
    pub auth_failures_per_source_per_s: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            in_flight_requests_max: crate::limits::IN_FLIGHT_REQUESTS_MAX,
            authentication: crate::edge::authn::AuthMode::Required,
            auth_failure_burst: crate::limits::AUTH_FAILURE_BURST,
            auth_failures_per_source_per_s: crate::limits::AUTH_FAILURES_PER_SOURCE_PER_S,
        }
    }
}

/// Watch streams (`EventService.Watch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Most watch streams open at once on this node; more are refused with
    /// `RESOURCE_EXHAUSTED`. 1..=`WATCHERS_PER_NODE_MAX` (the default).
    pub watchers_max: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig { watchers_max: keel_kernel::limits::WATCHERS_PER_NODE_MAX }
    }
}

/// Node identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Raft node id, unique in the cluster, > 0.
    #[serde(default)]
    pub id: u64,
    /// Takes the node id from a name ending in `-<ordinal>` (a StatefulSet
    /// pod's name, from the downward API): id = ordinal + 1, so `keel-0` is
    /// node 1. Replaces `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_from_name: Option<String>,
    /// Region name.
    pub region: String,
    /// Zone name.
    pub zone: String,
    /// Shifts this node's wall clock by this many ms. For tests of a member
    /// with a wrong clock only; leave it 0.
    #[serde(default)]
    pub clock_offset_ms: i64,
}

/// Listen addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Client gRPC.
    pub client: SocketAddr,
    /// Peer Raft traffic.
    pub peer: SocketAddr,
    /// Ops HTTP (/healthz, /readyz, /diagz, /metrics).
    pub ops: SocketAddr,
    /// Ops HTTP is always plaintext: off loopback only when this says so
    /// (e.g. for Kubernetes probes), whatever `[tls]` says.
    #[serde(default)]
    pub ops_plaintext_off_loopback: bool,
}

/// The ops port's answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    /// Who may read `/diagz` and `/metrics` (member addresses, digests,
    /// counters): `loopback` (the default) or `all`. `/healthz` and
    /// `/readyz` answer everyone.
    #[serde(default)]
    pub expose: crate::ops::Exposure,
}

/// Advertised addresses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvertiseConfig {
    /// host:port for clients.
    pub client: Option<String>,
    /// host:port for peers.
    pub peer: Option<String>,
}

/// Raft settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftConfig {
    /// Leader heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomised election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised election timeout.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_after_entries: u64,
    /// Keep this many entries in the log after a snapshot (for lagging peers).
    pub logs_kept_after_snapshot: u64,
    /// Most two voters' wall clocks may differ. A leader stamps entries at
    /// most this far past the time a majority last agreed on (carried
    /// forward by its monotonic clock), and a member whose clock disagrees
    /// with a majority by more does not lead.
    #[serde(default = "clock_skew_max_ms_default")]
    pub clock_skew_max_ms: u64,
}

fn clock_skew_max_ms_default() -> u64 {
    CLOCK_SKEW_MAX_MS_DEFAULT
}

/// Default of `raft.clock_skew_max_ms`.
pub const CLOCK_SKEW_MAX_MS_DEFAULT: u64 = 5_000;
/// Bounds of `raft.clock_skew_max_ms`.
pub const CLOCK_SKEW_MAX_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=600_000;

/// Default of `cluster.id`.
pub const CLUSTER_ID_DEFAULT: &str = "keel";

/// The cluster's name and membership at bootstrap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's id: the audience (`aud`) every capability token must
    /// name. Every member lists the same. A name (lowercase letters,
    /// digits, `-`, `_`, `.`).
    pub id: String,
    /// The voters that form the cluster on its first start; every member lists
    /// the same set. Empty: this node alone. The member with the lowest id
    /// initialises the cluster; the others wait to be contacted. After the
    /// first start, membership lives in Raft and this list is only compared
    /// against it.
    pub initial_members: Vec<MemberConfig>,
    /// `new`: this node may initialise a cluster (a lone node, or the lowest id
    /// of `initial_members`). `existing`: it joins a running cluster, never
    /// initialises, and waits to be added with `keelctl cluster join`.
    pub initial_state: InitialState,
    /// With `initial_state = "existing"` and `[tls]`: the peer addresses
    /// (`host:port`) of the running cluster's members, whose certificates
    /// this node admits on its peer port until it has learned the cluster's
    /// membership (from then on only current members are admitted).
    #[serde(default)]
    pub existing_members: Vec<String>,
    /// The dead-member rule: the leader removes a voter it has not heard
    /// from for this long (ms), when at least `min_voters` voters remain and
    /// a majority of them answer. 0: off (the default; the Helm chart turns
    /// it on). A removed member that comes back rejoins by itself.
    #[serde(default)]
    pub remove_unreachable_after_ms: u64,
    /// The dead-member rule never leaves fewer voters than this.
    #[serde(default = "min_voters_default")]
    pub min_voters: usize,
}

/// `cluster.min_voters` unless configured: three voters survive one loss.
pub const MIN_VOTERS_DEFAULT: usize = 3;
/// The shortest `cluster.remove_unreachable_after_ms`: well past any
/// election and restart, so a member restarting is not removed for it.
pub const REMOVE_UNREACHABLE_AFTER_MS_MIN: u64 = 3_000;

fn min_voters_default() -> usize {
    MIN_VOTERS_DEFAULT
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            id: CLUSTER_ID_DEFAULT.to_owned(),
            initial_members: Vec::new(),
            initial_state: InitialState::default(),
            existing_members: Vec::new(),
            remove_unreachable_after_ms: 0,
            min_voters: MIN_VOTERS_DEFAULT,
        }
    }
}

/// Whether a node starts a new cluster or joins an existing one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialState {
    /// Start a new cluster.
    #[default]
    New,
    /// Join a running cluster.
    Existing,
}

/// One initial member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Raft node id.
    pub id: u64,
    /// host:port clients use.
    pub client_addr: String,
    /// host:port peers use.
    pub peer_addr: String,
    /// Region name. Empty (or left out): the member says for itself
    /// (its `node.region`, e.g. from a Kubernetes node label).
    #[serde(default)]
    pub region: String,
    /// Zone name; empty as for `region`.
    #[serde(default)]
    pub zone: String,
}

/// The node id a name ending in `-<ordinal>` gives: ordinal + 1.
pub fn id_from_name(name: &str) -> Option<u64> {
    let (_, ordinal) = name.rsplit_once('-')?;
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ordinal.parse::<u64>().ok()?.checked_add(1)
}

/// Members of one cluster at most (a Raft group beyond this is a design smell).
pub const INITIAL_MEMBERS_MAX: usize = 9;

/// Trust roots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Files holding root public keys (`keelctl keys generate` `.pub` format),
    /// installed when the cluster is bootstrapped. In dev mode, empty means
    /// "generate `<data_dir>/dev-root.key` and use it".
    pub root_public_keys: Vec<PathBuf>,
    /// Public key files (same format) installed at bootstrap with the API_TOKEN
    /// purpose: their secret halves sign capability tokens
    /// (`keelctl token issue --key`), so the first admin token needs no
    /// request. More can be added later with root signatures (`trust add-key`).
    #[serde(default)]
    pub api_token_public_keys: Vec<PathBuf>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// text or json.
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info,openraft=warn`.
    pub filter: String,
}

impl Default for Config {
    fn default() -> Config {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Config {
            dev: false,
            data_dir: PathBuf::from(DEV_DATA_DIR),
            node: NodeConfig {
                id: 1,
                id_from_name: None,
                region: "local".into(),
                zone: "local-a".into(),
                clock_offset_ms: 0,
            },
            listen: ListenConfig {
                client: loopback(CLIENT_PORT_DEFAULT),
                peer: loopback(PEER_PORT_DEFAULT),
                ops: loopback(OPS_PORT_DEFAULT),
                ops_plaintext_off_loopback: false,
            },
            advertise: AdvertiseConfig::default(),
            cluster: ClusterConfig::default(),
            raft: RaftConfig {
                heartbeat_interval_ms: 100,
                election_timeout_min_ms: 500,
                election_timeout_max_ms: 1000,
                snapshot_after_entries: 5000,
                logs_kept_after_snapshot: 1000,
                clock_skew_max_ms: CLOCK_SKEW_MAX_MS_DEFAULT,
            },
            trust: TrustConfig::default(),
            tls: None,
            log: LogConfig { format: LogFormat::Text, filter: "info,openraft=warn".into() },
            watch: WatchConfig::default(),
            slo: crate::edge::slo::SloConfig::default(),
            api: ApiConfig::default(),
            telemetry: crate::telemetry::TelemetryConfig::default(),
            ops: OpsConfig::default(),
            admission: crate::admission::AdmissionConfig::default(),
            redis: crate::admission::RedisConfig::default(),
            breaker: crate::admission::breaker::BreakerConfig::default(),
            audit: crate::audit::AuditConfig::default(),
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Figment could not read or merge a source (its message names the key and source).
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A value is present but wrong.
    #[error("configuration key `{key}`: {problem}")]
    Invalid {
        /// Dotted key, e.g. `listen.client`.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, problem: problem.into() }
}

impl Config {
    /// Merges the sources. `overrides` come from flags (only the flags given).
    pub fn load(file: Option<&Path>, overrides: Figment) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(invalid("--config", format!("file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        let env = Env::prefixed("KEEL_").split("__").ignore(CLIENT_ENV_KEYS);
        figment = figment.merge(env).merge(overrides);
        let mut config: Config = figment.extract().map_err(Box::new)?;
        config.resolve_node_id()?;
        config.validate()?;
        Ok(config)
    }

    /// Sets `node.id` from `node.id_from_name`, if given.
    fn resolve_node_id(&mut self) -> Result<(), ConfigError> {
        let Some(name) = &self.node.id_from_name else {
            return Ok(());
        };
        let id = id_from_name(name).ok_or_else(|| {
            invalid("node.id_from_name", format!("{name:?} does not end in -<ordinal> (e.g. keel-0)"))
        })?;
        self.node.id = id;
        Ok(())
    }

    /// Checks relationships and ranges; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node.id == 0 {
            return Err(invalid("node.id", "must be greater than 0"));
        }
        for (key, value) in [("node.region", &self.node.region), ("node.zone", &self.node.zone)] {
            keel_kernel::Name::parse("name", value).map_err(|rejection| invalid(key, rejection.to_string()))?;
        }
        let listens =
            [("listen.client", self.listen.client), ("listen.peer", self.listen.peer), ("listen.ops", self.listen.ops)];
        for (i, (key, addr)) in listens.iter().enumerate() {
            // Plaintext stays on loopback: anything reachable from elsewhere needs TLS.
            if !addr.ip().is_loopback() && (self.dev || self.tls.is_none()) {
                return Err(invalid(
                    key,
                    format!(
                        "{addr} is not a loopback address; plaintext listeners (no [tls], or --dev) are loopback-only"
                    ),
                ));
            }
            if *key == "listen.ops" && !addr.ip().is_loopback() && !self.listen.ops_plaintext_off_loopback {
                return Err(invalid(
                    key,
                    format!(
                        "{addr} is not a loopback address; ops HTTP is plaintext, so serving it off loopback \
                         needs listen.ops_plaintext_off_loopback = true"
                    ),
                ));
            }
            if addr.port() != 0 && listens[..i].iter().any(|(_, other)| other == addr) {
                return Err(invalid(key, format!("{addr} is already used by another listener")));
            }
        }
        let raft = &self.raft;
        if raft.heartbeat_interval_ms < HEARTBEAT_INTERVAL_MS_MIN {
            return Err(invalid("raft.heartbeat_interval_ms", format!("must be at least {HEARTBEAT_INTERVAL_MS_MIN}")));
        }
        if raft.election_timeout_min_ms < raft.heartbeat_interval_ms * ELECTION_TO_HEARTBEAT_RATIO_MIN {
            return Err(invalid(
                "raft.election_timeout_min_ms",
                format!("must be at least {ELECTION_TO_HEARTBEAT_RATIO_MIN} × raft.heartbeat_interval_ms"),
            ));
        }
        if raft.election_timeout_max_ms <= raft.election_timeout_min_ms {
            return Err(invalid("raft.election_timeout_max_ms", "must be greater than raft.election_timeout_min_ms"));
        }
        if raft.snapshot_after_entries == 0 {
            return Err(invalid("raft.snapshot_after_entries", "must be greater than 0"));
        }
        if !CLOCK_SKEW_MAX_MS_RANGE.contains(&raft.clock_skew_max_ms) {
            return Err(invalid("raft.clock_skew_max_ms", format!("must be within {CLOCK_SKEW_MAX_MS_RANGE:?}")));
        }
        if !self.dev && self.trust.root_public_keys.is_empty() {
            return Err(invalid(
                "trust.root_public_keys",
                "at least one root public key file is required outside dev mode",
            ));
        }
        self.validate_cluster()?;
        if let Some(tls) = &self.tls {
            if self.dev {
                return Err(invalid("tls", "dev mode is plaintext on loopback; remove --dev to use TLS"));
            }
            tls.validate().map_err(|error| invalid("tls", error.to_string()))?;
        } else if self
            .cluster
            .initial_members
            .iter()
            .any(|m| !is_loopback_address(&m.peer_addr) || !is_loopback_address(&m.client_addr))
        {
            return Err(invalid("tls", "members off loopback talk over mTLS: configure [tls]"));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let in_flight_max = crate::limits::IN_FLIGHT_REQUESTS_MAX;
        if !(1..=in_flight_max).contains(&self.api.in_flight_requests_max) {
            return Err(invalid("api.in_flight_requests_max", format!("must be between 1 and {in_flight_max}")));
        }
        let watchers_max = keel_kernel::limits::WATCHERS_PER_NODE_MAX;
        if !(1..=watchers_max).contains(&self.watch.watchers_max) {
            return Err(invalid("watch.watchers_max", format!("must be between 1 and {watchers_max}")));
        }
        keel_kernel::Name::parse("name", &self.cluster.id)
            .map_err(|rejection| invalid("cluster.id", rejection.to_string()))?;
        for (key, value) in [
            ("api.auth_failure_burst", self.api.auth_failure_burst),
            ("api.auth_failures_per_source_per_s", self.api.auth_failures_per_source_per_s),
        ] {
            if !(1..=1_000_000).contains(&value) {
                return Err(invalid(key, format!("{value} is outside 1..=1000000")));
            }
        }
        let is_all_loopback = listens.iter().all(|(_, addr)| addr.ip().is_loopback());
        if self.api.authentication == crate::edge::authn::AuthMode::Off && !is_all_loopback {
            return Err(invalid(
                "api.authentication",
                "off is accepted only when every listener is on loopback: anyone who reaches the port could do anything",
            ));
        }
        self.slo.validate().map_err(|(key, problem)| invalid(key, problem))?;
        self.admission.validate().map_err(|(key, problem)| invalid(key, problem))?;
        self.redis.validate().map_err(|(key, problem)| invalid(key, problem))?;
        self.breaker.validate().map_err(|(key, problem)| invalid(key, problem))?;
        self.audit.validate().map_err(|(key, problem)| invalid(key, problem))?;
        self.telemetry.validate().map_err(|error| ConfigError::Invalid { key: error.key, problem: error.problem })?;
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        const KEY: &str = "cluster.initial_members";
        self.validate_dead_member_rule()?;
        let members = &self.cluster.initial_members;
        if self.cluster.initial_state == InitialState::Existing {
            if self.dev {
                return Err(invalid("cluster.initial_state", "dev mode starts its own cluster; it cannot join one"));
            }
            if !members.is_empty() {
                return Err(invalid(KEY, "a node joining an existing cluster lists no initial members"));
            }
            if self.tls.is_some() && self.cluster.existing_members.is_empty() {
                return Err(invalid(
                    "cluster.existing_members",
                    "a node joining over mTLS admits only the peers listed here until it learns the membership: \
                     list the running members' peer addresses",
                ));
            }
            return Ok(());
        }
        if !self.cluster.existing_members.is_empty() {
            return Err(invalid("cluster.existing_members", "only a node joining an existing cluster lists them"));
        }
        if members.is_empty() {
            return Ok(());
        }
        if self.dev {
            return Err(invalid(KEY, "dev mode is a single node; remove --dev to run a cluster"));
        }
        if members.len() > INITIAL_MEMBERS_MAX {
            return Err(invalid(KEY, format!("{} members; at most {INITIAL_MEMBERS_MAX}", members.len())));
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut addrs = std::collections::BTreeSet::new();
        for member in members {
            if member.id == 0 {
                return Err(invalid(KEY, "member ids must be greater than 0"));
            }
            if !ids.insert(member.id) {
                return Err(invalid(KEY, format!("node id {} is listed twice", member.id)));
            }
            for addr in [&member.client_addr, &member.peer_addr] {
                if addr.parse::<SocketAddr>().is_err() && !addr.contains(':') {
                    return Err(invalid(KEY, format!("member {}: {addr:?} is not host:port", member.id)));
                }
                if !addrs.insert(addr.as_str()) {
                    return Err(invalid(KEY, format!("address {addr} is used twice")));
                }
            }
            for (what, value) in [("region", &member.region), ("zone", &member.zone)] {
                if value.is_empty() {
                    continue;
                }
                keel_kernel::Name::parse("name", value)
                    .map_err(|rejection| invalid(KEY, format!("member {} {what}: {rejection}", member.id)))?;
            }
        }
        let me = members.iter().find(|member| member.id == self.node.id).ok_or_else(|| {
            invalid(KEY, format!("this node (node.id = {}) is not among the initial members", self.node.id))
        })?;
        let disagrees = |listed: &str, own: &str| !listed.is_empty() && listed != own;
        if disagrees(&me.region, &self.node.region) || disagrees(&me.zone, &self.node.zone) {
            return Err(invalid(
                KEY,
                format!(
                    "member {} is listed in {}/{} but node.region/node.zone say {}/{}",
                    me.id, me.region, me.zone, self.node.region, self.node.zone
                ),
            ));
        }
        Ok(())
    }

    fn validate_dead_member_rule(&self) -> Result<(), ConfigError> {
        let after = self.cluster.remove_unreachable_after_ms;
        if after != 0 && after < REMOVE_UNREACHABLE_AFTER_MS_MIN {
            return Err(invalid(
                "cluster.remove_unreachable_after_ms",
                format!("{after} is below {REMOVE_UNREACHABLE_AFTER_MS_MIN} (0 turns the rule off)"),
            ));
        }
        if after != 0 && after < self.raft.election_timeout_max_ms.saturating_mul(3) {
            return Err(invalid(
                "cluster.remove_unreachable_after_ms",
                "must be at least 3 × raft.election_timeout_max_ms: a member is not dead for missing one election",
            ));
        }
        if self.cluster.min_voters == 0 {
            return Err(invalid("cluster.min_voters", "must be at least 1"));
        }
        Ok(())
    }

    /// Whether peers talk plaintext (loopback-only clusters without `[tls]`).
    pub fn is_plaintext(&self) -> bool {
        self.tls.is_none()
    }

    /// Peer address others should use.
    pub fn advertised_peer(&self) -> String {
        self.advertise.peer.clone().unwrap_or_else(|| self.listen.peer.to_string())
    }
}

/// Whether `addr` (host:port) names a loopback host.
pub fn is_loopback_address(addr: &str) -> bool {
    match addr.parse::<SocketAddr>() {
        Ok(socket) => socket.ip().is_loopback(),
        Err(_) => addr.rsplit_once(':').is_some_and(|(host, _)| host == "localhost"),
    }
}

#[cfg(test)]
// figment's Jail closures return figment::Error, whose size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn no_flags() -> Figment {
        Figment::new()
    }

    #[test]
    fn sources_merge_in_order_file_then_env_then_flags() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "keel.toml",
                r#"
                dev = true
                [node]
                id = 3
                region = "eu-west"
                zone = "eu-west-1a"
                "#,
            )?;
            jail.set_env("KEEL_NODE__ZONE", "eu-west-1b");
            jail.set_env("KEEL_ENDPOINTS", "http://127.0.0.1:7400");
            jail.set_env("KEEL_REGION", "us-east");
            jail.set_env("KEEL_CA_FILE", "ca.crt");
            // keelctl's, in the same shell: not keeld's keys.
            jail.set_env("KEEL_TOKEN", "token-file");
            jail.set_env("KEEL_CLUSTER_ID", "keel");
            let flags = Figment::from(Serialized::default("node.id", 9));
            let config = Config::load(Some(Path::new("keel.toml")), flags).map_err(|e| e.to_string())?;
            assert_eq!(config.node.id, 9);
            assert_eq!(config.node.region, "eu-west");
            assert_eq!(config.node.zone, "eu-west-1b");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "keel.toml",
                "dev = true\n[node]\nid = 1\nregion = \"r\"\nzone = \"z\"\ncolour = \"red\"\n",
            )?;
            let error = Config::load(Some(Path::new("keel.toml")), no_flags()).expect_err("unknown key").to_string();
            assert!(error.contains("colour"), "{error}");

            jail.create_file("bad.toml", "dev = true\n[listen]\nclient = \"0.0.0.0:7400\"\npeer = \"127.0.0.1:7401\"\nops = \"127.0.0.1:7402\"\n")?;
            let error = Config::load(Some(Path::new("bad.toml")), no_flags()).expect_err("non-loopback").to_string();
            assert!(error.contains("listen.client"), "{error}");

            // Ops HTTP is plaintext even with [tls]: off loopback only by opt-in.
            let tls_ops = "[node]\nid = 1\nregion = \"r\"\nzone = \"z\"\n[trust]\nroot_public_keys = [\"root.pub\"]\n\
                           [tls]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n\
                           [listen]\nclient = \"127.0.0.1:7400\"\npeer = \"127.0.0.1:7401\"\nops = \"0.0.0.0:7402\"\n";
            jail.create_file("ops.toml", tls_ops)?;
            let error = Config::load(Some(Path::new("ops.toml")), no_flags()).expect_err("plaintext ops").to_string();
            assert!(error.contains("listen.ops_plaintext_off_loopback"), "{error}");
            jail.create_file("ops_opt_in.toml", &format!("{tls_ops}ops_plaintext_off_loopback = true\n"))?;
            // With the opt-in the listener passes (this jail has no TLS files, so the
            // load fails later, on those).
            let error = Config::load(Some(Path::new("ops_opt_in.toml")), no_flags()).expect_err("no files").to_string();
            assert!(!error.contains("listen.ops") && error.contains("tls"), "{error}");

            let error = Config::load(None, no_flags()).expect_err("no roots outside dev").to_string();
            assert!(error.contains("trust.root_public_keys"), "{error}");

            jail.create_file(
                "cluster.toml",
                r#"
                trust.root_public_keys = ["root.pub"]
                [node]
                id = 2
                region = "eu"
                zone = "eu-a"
                [[cluster.initial_members]]
                id = 1
                client_addr = "127.0.0.1:7400"
                peer_addr = "127.0.0.1:7401"
                region = "eu"
                zone = "eu-a"
                [[cluster.initial_members]]
                id = 1
                client_addr = "127.0.0.1:7410"
                peer_addr = "127.0.0.1:7411"
                region = "eu"
                zone = "eu-a"
                "#,
            )?;
            let error = Config::load(Some(Path::new("cluster.toml")), no_flags()).expect_err("dup id").to_string();
            assert!(error.contains("cluster.initial_members") && error.contains("twice"), "{error}");

            jail.set_env("KEEL_RAFT__ELECTION_TIMEOUT_MAX_MS", "10");
            let flags = Figment::from(Serialized::default("dev", true));
            let error = Config::load(None, flags).expect_err("inverted timeouts").to_string();
            assert!(error.contains("raft.election_timeout_max_ms"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn a_statefulset_pod_name_gives_the_node_id_and_members_may_leave_their_place_out() {
        assert_eq!(id_from_name("keel-0"), Some(1));
        assert_eq!(id_from_name("my-release-keel-4"), Some(5));
        for bad in ["keel", "keel-", "keel-x", "keel-+1", "keel-1a", "-", "keel-18446744073709551615"] {
            assert_eq!(id_from_name(bad), None, "{bad}");
        }
        Jail::expect_with(|jail| {
            let members = "[[cluster.initial_members]]\nid = 1\nclient_addr = \"127.0.0.1:7400\"\npeer_addr = \"127.0.0.1:7401\"\n\
                           [[cluster.initial_members]]\nid = 2\nclient_addr = \"127.0.0.2:7400\"\npeer_addr = \"127.0.0.2:7401\"\n\
                           [[cluster.initial_members]]\nid = 3\nclient_addr = \"127.0.0.3:7400\"\npeer_addr = \"127.0.0.3:7401\"\n";
            jail.create_file(
                "keel.toml",
                &format!("[node]\nregion = \"r\"\nzone = \"z\"\n[trust]\nroot_public_keys = [\"root.pub\"]\n{members}"),
            )?;
            jail.set_env("KEEL_NODE__ID_FROM_NAME", "keel-1");
            jail.set_env("KEEL_NODE__ZONE", "eu-west-1c");
            jail.set_env("KEEL_CLUSTER__REMOVE_UNREACHABLE_AFTER_MS", "300000");
            jail.set_env("KEEL_CLUSTER__MIN_VOTERS", "2");
            let config = Config::load(Some(Path::new("keel.toml")), no_flags()).map_err(|e| e.to_string())?;
            assert_eq!(config.node.id, 2);
            assert_eq!(config.node.zone, "eu-west-1c");
            assert_eq!(config.cluster.remove_unreachable_after_ms, 300_000);
            assert_eq!(config.cluster.min_voters, 2);

            jail.set_env("KEEL_NODE__ID_FROM_NAME", "keel-7");
            let error = Config::load(Some(Path::new("keel.toml")), no_flags()).expect_err("not a member").to_string();
            assert!(error.contains("initial_members"), "{error}");
            jail.set_env("KEEL_NODE__ID_FROM_NAME", "keel");
            let error = Config::load(Some(Path::new("keel.toml")), no_flags()).expect_err("no ordinal").to_string();
            assert!(error.contains("node.id_from_name"), "{error}");
            jail.set_env("KEEL_NODE__ID_FROM_NAME", "keel-0");
            jail.set_env("KEEL_CLUSTER__REMOVE_UNREACHABLE_AFTER_MS", "500");
            let error = Config::load(Some(Path::new("keel.toml")), no_flags()).expect_err("too eager").to_string();
            assert!(error.contains("cluster.remove_unreachable_after_ms"), "{error}");
            jail.set_env("KEEL_CLUSTER__REMOVE_UNREACHABLE_AFTER_MS", "0");
            jail.set_env("KEEL_CLUSTER__MIN_VOTERS", "0");
            let error = Config::load(Some(Path::new("keel.toml")), no_flags()).expect_err("no voters").to_string();
            assert!(error.contains("cluster.min_voters"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn telemetry_comes_from_the_file_and_keel_env_and_refuses_unknown_keys() {
        Jail::expect_with(|jail| {
            jail.create_file("keel.toml", "dev = true\n[telemetry]\nservice_name = \"keeld-eu\"\n")?;
            jail.set_env("KEEL_TELEMETRY__OTLP_ENDPOINT", "http://127.0.0.1:4317");
            jail.set_env("KEEL_TELEMETRY__EXPORT_INTERVAL_MS", "250");
            let config = Config::load(Some(Path::new("keel.toml")), no_flags()).map_err(|e| e.to_string())?;
            assert_eq!(config.telemetry.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
            assert_eq!(config.telemetry.export_interval_ms, 250);
            assert_eq!(config.telemetry.service_name, "keeld-eu");
            assert_eq!(config.telemetry.trace_sample_ratio, crate::telemetry::TRACE_SAMPLE_RATIO_DEFAULT);

            jail.set_env("KEEL_TELEMETRY__OTLP_ENDPOINT", "udp://127.0.0.1:4317");
            let error = Config::load(Some(Path::new("keel.toml")), no_flags()).expect_err("bad scheme").to_string();
            assert!(error.contains("telemetry.otlp_endpoint"), "{error}");

            jail.create_file("unknown.toml", "dev = true\n[telemetry]\nendpoint = \"http://127.0.0.1:4317\"\n")?;
            let error = Config::load(Some(Path::new("unknown.toml")), no_flags()).expect_err("unknown key").to_string();
            assert!(error.contains("endpoint"), "{error}");
            Ok(())
        });
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The example configs in deploy/examples are what operators copy: each
    /// must parse (every key known, every value of its type) and its
    /// sections that name no files must validate (the files they name, such
    /// as certificates, exist only on a real host).
    #[test]
    fn the_deploy_examples_load() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples");
        for name in ["cluster-member.toml", "single-node-tls.toml"] {
            let path = examples.join(name);
            let extracted = Figment::from(Serialized::defaults(Config::default()))
                .merge(Toml::file(&path))
                .extract::<Config>()
                .map_err(|error| error.to_string());
            let config = match extracted {
                Ok(config) => config,
                Err(error) => panic!("{name}: {error}"),
            };
            let checks = [
                config.admission.validate(),
                config.redis.validate(),
                config.breaker.validate(),
                config.audit.validate(),
            ];
            if let Some(Err((key, problem))) = checks.into_iter().find(Result::is_err) {
                panic!("{name}: {key}: {problem}");
            }
        }
    }
}
