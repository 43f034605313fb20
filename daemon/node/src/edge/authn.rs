//! [`AuthnLayer`]: who is calling, and may they call this RPC at all.
//!
//! ```text
//!  request ─► permissions::guard(path)
//!     open service (health, reflection) ───────────────────────────────► service
//!     no client RPC ─► UNIMPLEMENTED
//!     authorization: Bearer <token>  (absent: TOKEN_MISSING, unless RootSigned)
//!       ─► sha256(token) ─► cache hit: token::check_actor (revoked? key? expired?) ─┐
//!                       └─► miss: token::verify(token, trust store, audience, now) ─┴► Principal
//!       ─► client certificate bound? sub must be the certificate's identity
//!       ─► permission granted? scope Cluster and the token tenant-scoped? ─► refuse
//!       ─► extension Authenticated(principal) ─► service (ApiContext::serve → Call)
//!  every refusal: counted per reason; per source address a failure budget,
//!  over it the refusal is AUTH_FAILURES_THROTTLED + RetryInfo (a valid token
//!  is still served: the budget only changes how failures are answered)
//! ```
//!
//! The check reads the published state (one `Arc` clone), so a revocation
//! is effective here as soon as this member applies it, cached tokens
//! included: the cache only saves the signature check and the parsing.

use super::permissions::{self, Guard, Scope};
use crate::limits::{AUTH_CACHE_BYTES_MAX, AUTH_CACHE_ENTRIES_MAX, AUTH_FAILURE_SOURCES_MAX};
use crate::status::{self, Fault, Metadata};
use keel_kernel::Rejection;
use keel_kernel::token::{self, Principal, TokenError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tonic::Code;
use tonic_types::ErrorDetails;

/// The caller, as the edge established it; a request extension that
/// `ApiContext::serve` hands to the call. `None`: a root-signed request
/// sent without a token, or authentication off.
#[derive(Debug, Clone, Default)]
pub struct Authenticated(pub Option<Arc<Principal>>);

/// Whether tokens are checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every client RPC needs a valid token (the default, dev mode included).
    #[default]
    Required,
    /// No token is checked and every caller may do everything. Accepted
    /// only when every listener is on loopback (benchmarks of the cost of
    /// authentication).
    Off,
}

/// Why the edge refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization: Bearer` header.
    #[error("this RPC needs a capability token (authorization: Bearer <token>)")]
    Missing,
    /// The token does not verify or no longer holds.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The token does not grant what the RPC needs.
    #[error("the token does not grant {permission}, which {rpc} needs")]
    PermissionMissing {
        /// The permission needed.
        permission: &'static str,
        /// The RPC.
        rpc: String,
    },
    /// A tenant-scoped token called a cluster-wide RPC.
    #[error(transparent)]
    OutOfScope(Rejection),
    /// With client certificates, the token's `sub` is not the certificate's.
    #[error("the token's sub {sub:?} is not the client certificate's identity")]
    SubjectMismatch {
        /// The token's subject.
        sub: String,
    },
    /// Too many failures from this source.
    #[error("too many authentication failures from this address; retry after {retry_after_ms} ms")]
    Throttled {
        /// When to retry.
        retry_after_ms: u64,
    },
}

impl AuthError {
    /// Every reason this type produces besides the token's and the rejection's.
    pub const REASONS: &'static [&'static str] =
        &["TOKEN_MISSING", "PERMISSION_MISSING", "TOKEN_SUBJECT_MISMATCH", "AUTH_FAILURES_THROTTLED"];
}

impl Fault for AuthError {
    fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "TOKEN_MISSING",
            AuthError::Token(error) => error.reason(),
            AuthError::PermissionMissing { .. } => "PERMISSION_MISSING",
            AuthError::OutOfScope(rejection) => rejection.reason(),
            AuthError::SubjectMismatch { .. } => "TOKEN_SUBJECT_MISMATCH",
            AuthError::Throttled { .. } => "AUTH_FAILURES_THROTTLED",
        }
    }

    fn code(&self) -> Code {
        match self {
            AuthError::Missing | AuthError::Token(_) | AuthError::SubjectMismatch { .. } => Code::Unauthenticated,
            AuthError::PermissionMissing { .. } | AuthError::OutOfScope(_) => Code::PermissionDenied,
            AuthError::Throttled { .. } => Code::ResourceExhausted,
        }
    }

    fn metadata(&self) -> Metadata {
        match self {
            AuthError::Token(error) => error.metadata(),
            AuthError::OutOfScope(rejection) => rejection.metadata(),
            AuthError::PermissionMissing { permission, rpc } => {
                Metadata::from([("permission".into(), (*permission).to_owned()), ("rpc".into(), rpc.clone())])
            }
            AuthError::SubjectMismatch { sub } => Metadata::from([("sub".into(), sub.clone())]),
            AuthError::Throttled { retry_after_ms } => Metadata::from([
                ("limit".into(), "AUTH_FAILURES_PER_SOURCE_PER_S".to_owned()),
                ("retry_after_ms".into(), retry_after_ms.to_string()),
            ]),
            AuthError::Missing => Metadata::new(),
        }
    }

    fn details(&self, details: &mut ErrorDetails) {
        if let AuthError::Throttled { retry_after_ms } = self {
            status::retry_after(details, *retry_after_ms);
        }
    }
}

type Limiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// Where the edge reads the trust store from: the member's published state
/// (the assembly supplies it, so the edge depends on no floor above it).
pub trait TrustSource: std::fmt::Debug + Send + Sync + 'static {
    /// Runs `f` on the trust store as last applied.
    fn with_trust(&self, f: &mut dyn FnMut(&keel_kernel::trust_store::TrustStore));
}

/// How an [`Authenticator`] checks (from `[api]` and `[cluster]`).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Whether tokens are checked.
    pub mode: AuthMode,
    /// The audience tokens must name (the cluster id).
    pub audience: String,
    /// With client certificates required: a token's `sub` must be the certificate's identity.
    pub bind_client_certificates: bool,
    /// Failures a source may cause in a burst.
    pub failure_burst: u32,
    /// Failures per second a source may sustain.
    pub failures_per_s: u32,
}

/// Checks callers against the published trust store.
#[derive(Debug)]
pub struct Authenticator {
    mode: AuthMode,
    trust: Arc<dyn TrustSource>,
    clock: Arc<crate::leader_clock::LeaderClock>,
    audience: Arc<str>,
    bind_client_certificates: bool,
    cache: Mutex<TokenCache>,
    failures: Limiter,
    metrics: super::RpcMetrics,
    /// Failures within a source's budget are recorded here.
    audit: crate::audit::AuditLog,
}

/// The address every source shares once [`AUTH_FAILURE_SOURCES_MAX`] are tracked.
const OVERFLOW_SOURCE: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);

impl Authenticator {
    /// Checks tokens as `settings` say against `trust` at `clock`'s wall time.
    pub fn new(
        settings: &AuthSettings,
        trust: Arc<dyn TrustSource>,
        clock: Arc<crate::leader_clock::LeaderClock>,
        metrics: super::RpcMetrics,
    ) -> Authenticator {
        let rate = NonZeroU32::new(settings.failures_per_s).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(settings.failure_burst).unwrap_or(NonZeroU32::MIN);
        let quota = governor::Quota::per_second(rate).allow_burst(burst);
        Authenticator {
            mode: settings.mode,
            trust,
            clock,
            audience: Arc::from(settings.audience.as_str()),
            bind_client_certificates: settings.bind_client_certificates,
            cache: Mutex::new(TokenCache::default()),
            failures: governor::RateLimiter::keyed(quota),
            metrics,
            audit: crate::audit::AuditLog::disabled(),
        }
    }

    /// This authenticator recording failures into `audit`.
    pub fn with_audit(mut self, audit: crate::audit::AuditLog) -> Authenticator {
        self.audit = audit;
        self
    }

    /// Who `bearer` is, if it verifies now: from the cache when this token
    /// verified before (re-checked for revocation and expiry), else verified.
    pub fn principal(&self, bearer: &str) -> Result<Arc<Principal>, TokenError> {
        let now_ms = self.clock.wall_now_ms();
        let mut answer = Err(TokenError::Malformed { detail: "no trust store".into() });
        self.trust.with_trust(&mut |trust| answer = self.principal_in(bearer, trust, now_ms));
        answer
    }

    fn principal_in(
        &self,
        bearer: &str,
        trust: &keel_kernel::trust_store::TrustStore,
        now_ms: u64,
    ) -> Result<Arc<Principal>, TokenError> {
        let hash: [u8; 32] = Sha256::digest(bearer.as_bytes()).into();
        let cached = self.lock_cache().entries.get(&hash).map(|(principal, _)| Arc::clone(principal));
        if let Some(principal) = cached {
            token::check_actor(&principal.actor, trust, now_ms)?;
            return Ok(principal);
        }
        let principal = Arc::new(token::verify(bearer, trust, &self.audience, now_ms)?);
        self.lock_cache().insert(hash, Arc::clone(&principal), bearer.len(), now_ms);
        Ok(principal)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, TokenCache> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Authenticates and authorises one request to `path`.
    pub fn check<B>(&self, request: &http::Request<B>) -> Result<Authenticated, AuthCheck> {
        let path = request.uri().path();
        let guard = match permissions::guard(path) {
            None => return Ok(Authenticated(None)),
            Some(None) => return Err(AuthCheck::Unimplemented),
            Some(Some(guard)) => guard,
        };
        if self.mode == AuthMode::Off {
            return Ok(Authenticated(None));
        }
        let source = source_address(request);
        self.authorise(guard, path, request).map_err(|error| {
            let answer = self.failed(error, source);
            // Failures within the source's budget are audited one by one;
            // past it they are counted (keel_rpc_errors_total
            // {reason="AUTH_FAILURES_THROTTLED"}), so a flood cannot fill the log.
            if !matches!(answer, AuthError::Throttled { .. }) {
                self.audit_failure(&answer, path, source, request.headers());
            }
            AuthCheck::Refused(answer)
        })
    }

    /// Queues the security record of a refused request.
    fn audit_failure(&self, error: &AuthError, path: &str, source: Option<IpAddr>, headers: &http::HeaderMap) {
        if !self.audit.is_enabled() {
            return;
        }
        let request_id = headers.get(super::observe::REQUEST_ID_HEADER).and_then(|value| value.to_str().ok());
        let record = keel_audit::Record {
            kind: keel_audit::Kind::Security,
            action: path.rsplit('/').next().unwrap_or(path).to_owned(),
            decision: "refused".to_owned(),
            reason: error.reason().to_owned(),
            detail: format!("{error} (from {})", source.map(|ip| ip.to_string()).unwrap_or_else(|| "?".to_owned())),
            request_id: request_id.unwrap_or_default().to_owned(),
            trace_id: crate::telemetry::current_trace_id(),
            ..keel_audit::Record::default()
        };
        self.audit.record_later(self.audit.stamp(record));
    }

    fn authorise<B>(&self, guard: Guard, path: &str, request: &http::Request<B>) -> Result<Authenticated, AuthError> {
        let bearer = bearer(request.headers())?;
        let Some(bearer) = bearer else {
            return match guard {
                Guard::RootSigned => Ok(Authenticated(None)),
                Guard::Token { .. } => Err(AuthError::Missing),
            };
        };
        let principal = self.principal(bearer)?;
        if self.bind_client_certificates
            && let Some(identities) = client_certificate_identities(request)
            && !identities.iter().any(|identity| *identity == principal.actor.sub)
        {
            return Err(AuthError::SubjectMismatch { sub: principal.actor.sub.clone() });
        }
        let is_cluster_wide = match guard {
            Guard::Token { permission, scope } => {
                if !principal.may(permission) {
                    return Err(AuthError::PermissionMissing { permission, rpc: path.to_owned() });
                }
                scope == Scope::Cluster
            }
            // The trust store is the cluster's: a tenant's token has no business there.
            Guard::RootSigned => true,
        };
        if is_cluster_wide && let Some(tenant) = &principal.actor.tenant {
            let rejection =
                Rejection::TenantOutOfScope { scope: tenant.to_string(), requested: "(the cluster)".into() };
            return Err(AuthError::OutOfScope(rejection));
        }
        Ok(Authenticated(Some(principal)))
    }

    /// Counts a failure from `source` and answers it: as itself within the
    /// source's failure budget, as throttled over it.
    fn failed(&self, error: AuthError, source: Option<IpAddr>) -> AuthError {
        let source = source.unwrap_or(OVERFLOW_SOURCE);
        if self.failures.len() >= AUTH_FAILURE_SOURCES_MAX {
            self.failures.retain_recent();
        }
        let key = if self.failures.len() >= AUTH_FAILURE_SOURCES_MAX { OVERFLOW_SOURCE } else { source };
        let answer = match self.failures.check_key(&key) {
            Ok(()) => error,
            Err(not_until) => {
                let wait =
                    not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
                AuthError::Throttled { retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1) }
            }
        };
        let reason = super::observe::ReasonLabels { reason: answer.reason().to_owned() };
        self.metrics.errors.get_or_create(&reason).inc();
        answer
    }
}

/// Verified tokens by SHA-256, bounded in entries and in bytes (each entry
/// is charged its token's length: what it was derived from, and a bound on
/// its claims). Only tokens that verified are kept.
#[derive(Debug, Default)]
struct TokenCache {
    entries: HashMap<[u8; 32], (Arc<Principal>, usize)>,
    bytes: usize,
}

impl TokenCache {
    /// Adds an entry; when full, drops the expired ones, and if it is
    /// still full, everything (the next calls verify afresh).
    fn insert(&mut self, hash: [u8; 32], principal: Arc<Principal>, bytes: usize, now_ms: u64) {
        let is_full = |cache: &TokenCache| {
            cache.entries.len() >= AUTH_CACHE_ENTRIES_MAX || cache.bytes.saturating_add(bytes) > AUTH_CACHE_BYTES_MAX
        };
        if is_full(self) {
            self.entries.retain(|_, (cached, _)| cached.actor.exp_ms > now_ms);
            self.bytes = self.entries.values().map(|(_, bytes)| bytes).sum();
            if is_full(self) {
                self.entries.clear();
                self.bytes = 0;
            }
        }
        if let Some((_, replaced)) = self.entries.insert(hash, (principal, bytes)) {
            self.bytes = self.bytes.saturating_sub(replaced);
        }
        self.bytes = self.bytes.saturating_add(bytes);
    }
}

/// What the edge does with a request it does not pass on.
#[derive(Debug)]
pub enum AuthCheck {
    /// No such client RPC.
    Unimplemented,
    /// Refused.
    Refused(AuthError),
}

/// The bearer token, if the request sent one.
fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, AuthError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    if value.len() > keel_kernel::limits::TOKEN_BYTES_MAX + "Bearer ".len() {
        return Err(TokenError::TooLarge { bytes: value.len() }.into());
    }
    let value = value.to_str().map_err(|_| TokenError::Malformed { detail: "not ASCII".into() })?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| TokenError::Malformed { detail: "the authorization header is not `Bearer <token>`".into() })?;
    Ok(Some(token.trim()))
}

/// The caller's address, when the connection has one.
fn source_address<B>(request: &http::Request<B>) -> Option<IpAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| extensions.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|info| info.get_ref().remote_addr()))
        .map(|addr| addr.ip())
}

/// The identities the client certificate names (its DNS and URI SANs and
/// its common name); `None` without a client certificate.
fn client_certificate_identities<B>(request: &http::Request<B>) -> Option<Vec<String>> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let info = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certificates = info.peer_certs()?;
    let leaf = certificates.first()?;
    Some(crate::tls::certificate_identities(leaf.as_ref()))
}

/// The edge layer around the services (see the module docs).
#[derive(Debug, Clone)]
pub struct AuthnLayer {
    authenticator: Arc<Authenticator>,
}

impl AuthnLayer {
    /// The layer checking with `authenticator`.
    pub fn new(authenticator: Arc<Authenticator>) -> AuthnLayer {
        AuthnLayer { authenticator }
    }
}

impl<S> tower::Layer<S> for AuthnLayer {
    type Service = Authn<S>;

    fn layer(&self, inner: S) -> Authn<S> {
        Authn { inner, authenticator: Arc::clone(&self.authenticator) }
    }
}

/// The service [`AuthnLayer`] wraps.
#[derive(Debug, Clone)]
pub struct Authn<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B, R> tower::Service<http::Request<B>> for Authn<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.authenticator.check(&request) {
            Ok(authenticated) => {
                request.extensions_mut().insert(authenticated);
                Box::pin(self.inner.call(request))
            }
            Err(AuthCheck::Unimplemented) => {
                let status = tonic::Status::unimplemented(format!("{} is not a Keel RPC", request.uri().path()));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
            Err(AuthCheck::Refused(error)) => Box::pin(std::future::ready(Ok(status::to_status(&error).into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_kernel::token::Actor;

    fn principal(index: usize, exp_ms: u64) -> Arc<Principal> {
        let actor =
            Actor { sub: format!("s{index}"), tenant: None, jti: format!("j{index}"), exp_ms, key_id: "k".into() };
        Arc::new(Principal { actor, permissions: Default::default() })
    }

    #[test]
    fn the_cache_stays_within_its_entry_and_byte_bounds() {
        let mut cache = TokenCache::default();
        for index in 0..AUTH_CACHE_ENTRIES_MAX + 10 {
            let hash: [u8; 32] = Sha256::digest(index.to_le_bytes()).into();
            cache.insert(hash, principal(index, 2_000), 100, 1_000);
            assert!(cache.entries.len() <= AUTH_CACHE_ENTRIES_MAX);
        }
        let big = AUTH_CACHE_BYTES_MAX / 4;
        for index in 0..10usize {
            let hash: [u8; 32] = Sha256::digest((index + 1_000_000).to_le_bytes()).into();
            cache.insert(hash, principal(index, 2_000), big, 1_000);
            assert!(cache.bytes <= AUTH_CACHE_BYTES_MAX);
            assert_eq!(cache.bytes, cache.entries.values().map(|(_, bytes)| bytes).sum::<usize>());
        }
        // Expired entries go first when it is full.
        let mut cache = TokenCache::default();
        for index in 0..AUTH_CACHE_ENTRIES_MAX {
            let hash: [u8; 32] = Sha256::digest(index.to_le_bytes()).into();
            cache.insert(hash, principal(index, if index % 2 == 0 { 500 } else { 2_000 }), 1, 1_000);
        }
        let hash: [u8; 32] = Sha256::digest(b"late").into();
        cache.insert(hash, principal(0, 2_000), 1, 1_000);
        assert_eq!(cache.entries.len(), AUTH_CACHE_ENTRIES_MAX / 2 + 1);
    }

    #[test]
    fn bearer_headers_are_parsed_strictly() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(bearer(&headers), Ok(None));
        headers.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer abc.def.ghi"));
        assert_eq!(bearer(&headers), Ok(Some("abc.def.ghi")));
        headers.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Basic dXNlcg=="));
        assert!(matches!(bearer(&headers), Err(AuthError::Token(TokenError::Malformed { .. }))));
    }
}
