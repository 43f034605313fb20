//! Admission (`keel.v1.AdmissionService`): may this tenant run this
//! engine's action now. See ARCHITECTURE.md → Admission.
//!
//! ```text
//!  resolve(state, request)  tenant ─► engine version ─► signers ─► action      (this module, pure)
//!  api/admission.rs         input schema (judge) ─► policy (judge) ─► breakers ─► limits
//!  limiter.rs               GCRA in process (no Redis; the `local` outage mode)
//!  redis_limiter.rs         GCRA + idempotency records in Redis (one server or a cluster)
//!  breaker.rs               circuit breakers (Redis-shared, local fallback)
//!  records.rs               idempotency records in process
//! ```
//!
//! A denial is an answer with a stable reason ([`Denial::reason`]), not an
//! error.

pub mod breaker;
pub mod limiter;
pub mod records;
pub mod redis_limiter;

use keel_kernel::manifest::Manifest;
use keel_kernel::registry::EngineVersion;
use keel_kernel::tenant::TenantStatus;
use keel_kernel::{KernelState, Name};
use serde::{Deserialize, Serialize};

/// Why an admission was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No such tenant.
    TenantNotFound,
    /// The tenant is not active.
    TenantSuspended,
    /// The tenant does not have the engine enabled.
    EngineNotEnabled,
    /// No such engine version (or every version is yanked).
    EngineVersionNotFound,
    /// The named version is yanked.
    EngineVersionYanked,
    /// A key that signed the version was revoked since.
    SignerRevoked {
        /// The key.
        key_id: String,
    },
    /// The manifest declares no such action.
    ActionUnknown,
    /// The input does not match the action's input schema.
    InputInvalid {
        /// The least violation.
        problem: String,
    },
    /// The policy said no.
    PolicyDenied {
        /// The policy's reason.
        reason: String,
    },
    /// A scope has no room.
    RateLimited {
        /// The scope.
        scope: String,
        /// When it has room again, ms.
        retry_after_ms: u64,
    },
    /// The shared limiter cannot answer and the outage mode is `fail_closed`.
    LimiterUnavailable {
        /// Why.
        detail: String,
    },
    /// The breaker refuses.
    CircuitOpen {
        /// The breaker.
        breaker: String,
        /// When its cool-down ends, ms.
        retry_after_ms: u64,
    },
    /// A dependency's breaker is open and the policy did not allow degraded mode.
    DependencyUnavailable {
        /// The engine depended on.
        dependency: String,
    },
}

impl Denial {
    /// Every reason a denial carries (names of `keel.v1.ErrorReason`).
    pub const REASONS: &'static [&'static str] = &[
        "TENANT_NOT_FOUND",
        "TENANT_SUSPENDED",
        "ENGINE_NOT_ENABLED",
        "ENGINE_VERSION_NOT_FOUND",
        "ENGINE_VERSION_YANKED",
        "ENGINE_SIGNER_REVOKED",
        "ACTION_UNKNOWN",
        "INPUT_INVALID",
        "POLICY_DENIED",
        "RATE_LIMITED",
        "LIMITER_UNAVAILABLE",
        "CIRCUIT_OPEN",
        "DEPENDENCY_UNAVAILABLE",
    ];

    /// The stable reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Denial::TenantNotFound => "TENANT_NOT_FOUND",
            Denial::TenantSuspended => "TENANT_SUSPENDED",
            Denial::EngineNotEnabled => "ENGINE_NOT_ENABLED",
            Denial::EngineVersionNotFound => "ENGINE_VERSION_NOT_FOUND",
            Denial::EngineVersionYanked => "ENGINE_VERSION_YANKED",
            Denial::SignerRevoked { .. } => "ENGINE_SIGNER_REVOKED",
            Denial::ActionUnknown => "ACTION_UNKNOWN",
            Denial::InputInvalid { .. } => "INPUT_INVALID",
            Denial::PolicyDenied { .. } => "POLICY_DENIED",
            Denial::RateLimited { .. } => "RATE_LIMITED",
            Denial::LimiterUnavailable { .. } => "LIMITER_UNAVAILABLE",
            Denial::CircuitOpen { .. } => "CIRCUIT_OPEN",
            Denial::DependencyUnavailable { .. } => "DEPENDENCY_UNAVAILABLE",
        }
    }

    /// The detail for humans.
    pub fn detail(&self) -> String {
        match self {
            Denial::SignerRevoked { key_id } => format!("key {key_id}, which signed this version, is revoked"),
            Denial::InputInvalid { problem } => problem.clone(),
            Denial::PolicyDenied { reason } => reason.clone(),
            Denial::RateLimited { scope, retry_after_ms } => {
                format!("{scope} has no room; retry in {retry_after_ms} ms")
            }
            Denial::LimiterUnavailable { detail } => detail.clone(),
            Denial::CircuitOpen { breaker, retry_after_ms } => {
                format!("the circuit breaker of {breaker} is open; retry in {retry_after_ms} ms")
            }
            Denial::DependencyUnavailable { dependency } => {
                format!("{dependency}, a dependency, has an open circuit breaker")
            }
            other => other.reason().to_lowercase().replace('_', " "),
        }
    }
}

/// What an admission asks, validated.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Tenant.
    pub tenant: Name,
    /// Engine.
    pub engine: Name,
    /// Version; `None`: the highest unyanked.
    pub version: Option<semver::Version>,
    /// Action.
    pub action: Name,
    /// The call's input, when sent.
    pub input: Option<serde_json::Value>,
    /// Units charged per scope (≥ 1).
    pub cost: u64,
}

/// What the state says about an admission that passed the state checks.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The tenant's tier name (for default limits).
    pub tier: keel_kernel::tenant::TenantTier,
    /// The version the decision is about.
    pub version: semver::Version,
    /// The action's input schema, if it has one.
    pub input_schema: Option<serde_json::Value>,
    /// The engines this version depends on.
    pub dependencies: Vec<Name>,
}

/// Parsed manifests by (engine, version): a published version's manifest
/// never changes, so admissions parse it once. At most
/// `ADMISSION_MANIFESTS_CACHED` (emptied when full).
#[derive(Debug, Default)]
pub struct Manifests {
    parsed: std::sync::Mutex<std::collections::HashMap<(Name, semver::Version), std::sync::Arc<Manifest>>>,
}

impl Manifests {
    /// `version`'s manifest, parsed (`None` if the stored bytes do not
    /// parse, which `manifest::parse` at publish rules out).
    fn get(&self, engine: &Name, version: &EngineVersion) -> Option<std::sync::Arc<Manifest>> {
        let key = (engine.clone(), version.version.clone());
        let mut parsed = self.parsed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(manifest) = parsed.get(&key) {
            return Some(std::sync::Arc::clone(manifest));
        }
        let manifest = std::sync::Arc::new(serde_json::from_slice::<Manifest>(&version.manifest).ok()?);
        if parsed.len() >= crate::limits::ADMISSION_MANIFESTS_CACHED {
            parsed.clear();
        }
        parsed.insert(key, std::sync::Arc::clone(&manifest));
        Some(manifest)
    }
}

/// The state checks, in order: tenant, engine version, signers, action.
pub fn resolve(kernel: &KernelState, manifests: &Manifests, admission: &Admission) -> Result<Resolved, Denial> {
    let tenant = kernel.tenants().get(&admission.tenant).ok_or(Denial::TenantNotFound)?;
    if tenant.spec.status != TenantStatus::Active {
        return Err(Denial::TenantSuspended);
    }
    if !tenant.spec.enabled_engines.contains(&admission.engine) {
        return Err(Denial::EngineNotEnabled);
    }
    let registry = kernel.registry();
    let version: &EngineVersion = match &admission.version {
        Some(version) => registry.get(&admission.engine, Some(version)).ok_or(Denial::EngineVersionNotFound)?,
        None => registry.latest_unyanked(&admission.engine).ok_or(Denial::EngineVersionNotFound)?,
    };
    if version.is_yanked {
        return Err(Denial::EngineVersionYanked);
    }
    let trust = kernel.trust();
    if let Some(revoked) = version
        .signatures
        .iter()
        .find(|signature| trust.get(&signature.key_id).is_none_or(|key| key.revoked_at_revision.is_some()))
    {
        return Err(Denial::SignerRevoked { key_id: revoked.key_id.clone() });
    }
    // The stored bytes passed `manifest::parse` at publish.
    let manifest = manifests.get(&admission.engine, version).ok_or(Denial::ActionUnknown)?;
    let action = manifest.actions.iter().find(|action| action.name == admission.action).ok_or(Denial::ActionUnknown)?;
    Ok(Resolved {
        tier: tenant.spec.tier,
        version: version.version.clone(),
        input_schema: action.input_schema.clone(),
        dependencies: manifest.dependencies.iter().map(|dependency| dependency.name.clone()).collect(),
    })
}

/// What admissions do while the shared limiter (Redis) cannot answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnavailable {
    /// Deny, reason `LIMITER_UNAVAILABLE`.
    #[default]
    FailClosed,
    /// Allow without limiting, marked degraded.
    FailOpen,
    /// Limit in process at limit ÷ voters (the cluster's total stays within
    /// the limit), marked degraded.
    Local,
}

/// The shared limiter's state, for `/readyz`, `/diagz` and `/metrics`.
#[derive(Debug)]
pub struct LimiterHealth {
    /// Whether limits are shared through Redis.
    pub is_shared: bool,
    /// What admissions do while Redis cannot answer.
    pub on_unavailable: OnUnavailable,
    is_down: std::sync::atomic::AtomicBool,
    /// When an admission last tried Redis while it was down, ms since `origin`.
    last_try_ms: std::sync::atomic::AtomicU64,
    origin: std::time::Instant,
}

impl LimiterHealth {
    /// The state of the limiter `config` describes (up until a call fails).
    pub fn new(config: &RedisConfig) -> LimiterHealth {
        LimiterHealth {
            is_shared: config.is_configured(),
            on_unavailable: config.on_unavailable,
            is_down: std::sync::atomic::AtomicBool::new(false),
            last_try_ms: std::sync::atomic::AtomicU64::new(0),
            origin: std::time::Instant::now(),
        }
    }

    /// Records whether Redis answered; true when that changed the state.
    pub fn record(&self, is_up: bool) -> bool {
        self.is_down.swap(!is_up, std::sync::atomic::Ordering::Relaxed) == is_up
    }

    /// Whether this admission should ask Redis: always while it answers;
    /// while it is down, one admission per `REDIS_RETRY_WHILE_DOWN_MS` (the
    /// others apply the outage mode at once, so an outage costs at most one
    /// deadline to a few admissions, never one to each).
    pub fn should_try(&self) -> bool {
        use std::sync::atomic::Ordering;
        if !self.is_degraded() {
            return true;
        }
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_try_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= crate::limits::REDIS_RETRY_WHILE_DOWN_MS
            && self.last_try_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// Whether admissions are decided without the shared limiter now.
    pub fn is_degraded(&self) -> bool {
        self.is_shared && self.is_down.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Why this member cannot admit anything now: Redis down and no
    /// degraded mode declared (`fail_closed`).
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        (self.is_degraded() && self.on_unavailable == OnUnavailable::FailClosed)
            .then_some("the shared rate limiter (redis) is unavailable and redis.on_unavailable is fail_closed")
    }

    /// What `/diagz` shows.
    pub fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "backend": if self.is_shared { "redis" } else { "local" },
            "degraded": self.is_degraded(),
            "on_unavailable": self.on_unavailable,
        })
    }
}

impl prometheus_client::collector::Collector for LimiterHealth {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let gauge = prometheus_client::metrics::gauge::ConstGauge::new(i64::from(self.is_degraded()));
        let metric = encoder.encode_descriptor(
            "keel_limiter_degraded",
            "1 while admissions are limited without the shared limiter (redis unavailable)",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

/// Default of `redis.timeout_ms`.
pub const REDIS_TIMEOUT_MS_DEFAULT: u64 = 25;

/// `[redis]`: the shared rate limiter. Without `url` or `cluster_urls`,
/// every member limits in process at its share.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// One server: `redis://[:password@]host:port[/db]`, or `rediss://` for
    /// TLS. Never logged (it may hold a password).
    #[serde(default)]
    pub url: Option<String>,
    /// A Redis Cluster: some of its nodes' URLs (the client learns the
    /// rest). Never logged.
    #[serde(default)]
    pub cluster_urls: Vec<String>,
    /// With `rediss://`: CA certificates (PEM) to trust instead of the
    /// system's.
    #[serde(default)]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// With `rediss://`: a client certificate and key (PEM), when Redis
    /// asks for one (`tls-auth-clients`).
    #[serde(default)]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// The client certificate's key.
    #[serde(default)]
    pub tls_key_file: Option<std::path::PathBuf>,
    /// Longest an admission waits for Redis, ms (1..=1000).
    #[serde(default = "redis_timeout_ms_default")]
    pub timeout_ms: u64,
    /// What admissions do while Redis cannot answer.
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
}

fn redis_timeout_ms_default() -> u64 {
    REDIS_TIMEOUT_MS_DEFAULT
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            cluster_urls: Vec::new(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            timeout_ms: REDIS_TIMEOUT_MS_DEFAULT,
            on_unavailable: OnUnavailable::default(),
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("cluster_urls", &format_args!("<{} redacted>", self.cluster_urls.len()))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("timeout_ms", &self.timeout_ms)
            .field("on_unavailable", &self.on_unavailable)
            .finish()
    }
}

impl RedisConfig {
    /// Whether limits are shared through Redis.
    pub fn is_configured(&self) -> bool {
        self.url.is_some() || !self.cluster_urls.is_empty()
    }

    /// Checks the ranges; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=1_000).contains(&self.timeout_ms) {
            return Err(("redis.timeout_ms", format!("{} is outside 1..=1000", self.timeout_ms)));
        }
        let is_redis_url = |url: &String| url.starts_with("redis://") || url.starts_with("rediss://");
        if let Some(url) = &self.url
            && !is_redis_url(url)
        {
            return Err(("redis.url", "must start with redis:// or rediss://".to_owned()));
        }
        if !self.cluster_urls.iter().all(is_redis_url) {
            return Err(("redis.cluster_urls", "every URL must start with redis:// or rediss://".to_owned()));
        }
        if self.url.is_some() && !self.cluster_urls.is_empty() {
            return Err(("redis.cluster_urls", "set either redis.url (one server) or redis.cluster_urls".to_owned()));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(("redis.tls_key_file", "tls_cert_file and tls_key_file go together".to_owned()));
        }
        Ok(())
    }

    /// The TLS material the files name (read once, at start).
    pub fn tls(&self) -> anyhow::Result<redis_limiter::RedisTls> {
        let read = |key: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|error| anyhow::anyhow!("redis.{key} {}: {error}", path.display()))
        };
        let ca_pem = self.tls_ca_file.as_deref().map(|path| read("tls_ca_file", path)).transpose()?;
        let client = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some((read("tls_cert_file", cert)?, read("tls_key_file", key)?)),
            _ => None,
        };
        Ok(redis_limiter::RedisTls { ca_pem, client })
    }

    /// The shared limiter this describes, if any. Errors never quote a URL
    /// (it may hold a password).
    pub fn limiter(&self) -> anyhow::Result<Option<redis_limiter::RedisLimiter>> {
        let timeout = std::time::Duration::from_millis(self.timeout_ms);
        let unusable = |key: &str, error: redis::RedisError| {
            anyhow::anyhow!("redis.{key} is not a usable Redis URL ({:?})", error.kind())
        };
        if let Some(url) = &self.url {
            let limiter = redis_limiter::RedisLimiter::single(url, &self.tls()?, timeout);
            return limiter.map(Some).map_err(|error| unusable("url", error));
        }
        if !self.cluster_urls.is_empty() {
            let limiter = redis_limiter::RedisLimiter::cluster(&self.cluster_urls, &self.tls()?, timeout);
            return limiter.map(Some).map_err(|error| unusable("cluster_urls", error));
        }
        Ok(None)
    }
}

/// One scope's default limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained rate, calls per minute (≥ 1).
    pub calls_per_minute: u64,
    /// Calls admitted at once from idle (≥ 1).
    pub burst: u64,
}

/// `[admission]`: default limits. A policy's `limits` replace a tenant's
/// tier default for its tenant × engine scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Per tenant, by tier.
    pub basic: RateLimit,
    /// Per tenant, by tier.
    pub standard: RateLimit,
    /// Per tenant, by tier.
    pub enterprise: RateLimit,
    /// Per engine, across tenants; absent: none.
    #[serde(default)]
    pub engine: Option<RateLimit>,
    /// Across everything; absent: none.
    #[serde(default)]
    pub global: Option<RateLimit>,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            basic: RateLimit { calls_per_minute: 600, burst: 60 },
            standard: RateLimit { calls_per_minute: 6_000, burst: 600 },
            enterprise: RateLimit { calls_per_minute: 60_000, burst: 6_000 },
            engine: None,
            global: None,
        }
    }
}

impl AdmissionConfig {
    /// Checks every limit is at least 1; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let limits = [
            ("admission.basic", Some(self.basic)),
            ("admission.standard", Some(self.standard)),
            ("admission.enterprise", Some(self.enterprise)),
            ("admission.engine", self.engine),
            ("admission.global", self.global),
        ];
        for (key, limit) in limits {
            if let Some(limit) = limit
                && (limit.calls_per_minute == 0 || limit.burst == 0)
            {
                return Err((key, "calls_per_minute and burst must be at least 1".to_owned()));
            }
        }
        Ok(())
    }

    /// The scopes an admission is charged against, each at `1 / share` of
    /// its limit (this member's share of the cluster's), rounded down so the
    /// members' shares add up to at most the limit (but at least 1 each: a
    /// limit below the number of voters is exceeded by that rounding).
    pub fn scopes(
        &self,
        admission: &Admission,
        tier: keel_kernel::tenant::TenantTier,
        policy_limits: Option<keel_kernel::policy::DecisionLimits>,
        share: u64,
    ) -> Vec<limiter::ScopeLimit> {
        use keel_kernel::tenant::TenantTier;
        let split = |limit: RateLimit, key: String| limiter::ScopeLimit {
            key,
            calls_per_minute: (limit.calls_per_minute / share.max(1)).max(1),
            burst: (limit.burst / share.max(1)).max(1),
        };
        let tier_limit = match tier {
            TenantTier::Basic => self.basic,
            TenantTier::Standard => self.standard,
            TenantTier::Enterprise => self.enterprise,
        };
        let (tenant, engine) = (admission.tenant.as_str(), admission.engine.as_str());
        let mut scopes = vec![split(tier_limit, format!("tenant:{tenant}"))];
        if let Some(limits) = policy_limits {
            let limit = RateLimit { calls_per_minute: limits.calls_per_minute.max(1), burst: limits.burst.max(1) };
            scopes.push(split(limit, format!("tenant_engine:{tenant}/{engine}")));
        }
        if let Some(limit) = self.engine {
            scopes.push(split(limit, format!("engine:{engine}")));
        }
        if let Some(limit) = self.global {
            scopes.push(split(limit, "global".to_owned()));
        }
        scopes
    }
}
