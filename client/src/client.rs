//! [`KeelClient`]: routed channels, a deadline per call, retries and member
//! discovery.
//!
//! ```text
//!   typed method ──call(method, route, request, send)──┐
//!                                                       ▼
//!        deadline = now + call_timeout ── loop (bounded) ─────────────────────────────────────┐
//!          Connection::target(route) ─▶ [discovery due? GetStatus, bounded; target again]      │
//!            ─▶ send(channel, request with grpc-timeout) ─▶ Ok ─▶ record headers ─▶ Served{value, meta}
//!                                         │ Err(status)                                        │
//!                                         ▼                                                    │
//!                        ClientError::from_status ─▶ retry_action ─▶ Stop ─▶ Err               │
//!                                                       │ Same/Next endpoint: backoff (RetryInfo-aware)
//!                                                       │ Redirect: record the leader, go to it at once
//!                                                       └──────────────────────────────────────┘
//! ```
//!
//! Member discovery (on by default) runs once after the client first
//! connects and again after each failover: one `GetStatus`, bounded by
//! [`DISCOVERY_TIMEOUT_MS`] and by half the time the call has left, whose
//! members' client addresses join the endpoint list after the configured
//! ones. A failed discovery changes nothing; the call goes on with the
//! endpoints it has. See `routing` for where each kind of call goes.
//!
//! The deadline covers the whole call, retries and reconnects included: the
//! remaining time is sent as `grpc-timeout` so the server can give up too,
//! and enforced locally so a silent peer cannot hold the caller. A backoff
//! that would end past the deadline is not slept; the last real error is
//! returned instead, which says more than "deadline exceeded".

use crate::connection::{Connection, Target};
use crate::error::{self, ClientError};
use crate::limits::{
    CALL_TIMEOUT_DEFAULT_MS, CONNECT_TIMEOUT_DEFAULT_MS, DISCOVERY_TIMEOUT_MS, ENDPOINTS_MAX, LEADER_REDIRECTS_MAX,
    LIST_PAGES_MAX, RETRY_ATTEMPTS_MAX,
};
use crate::retry::{self, LEADER_ID_METADATA, RetryAction};
use crate::routing::Route;
use crate::served::{ResponseMeta, Served};
use crate::tls::ClientTls;
use crate::token::BearerToken;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::Channel;

/// How to reach the cluster and how long calls may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `http://host:port` addresses (`https://` when `tls` is set), tried in order.
    pub endpoints: Vec<String>,
    /// Deadline of one call, retries included.
    pub call_timeout: Duration,
    /// Time allowed to connect to one endpoint.
    pub connect_timeout: Duration,
    /// Whether the client asks the cluster for its members (`GetStatus`)
    /// after connecting and after a failover, and adds their client
    /// addresses to `endpoints`.
    pub discover_members: bool,
    /// Serializable reads go to a member of this region when one is known
    /// and reachable.
    pub preferred_region: Option<String>,
    /// TLS to `https://` endpoints; `None`: plaintext `http://` only.
    pub tls: Option<ClientTls>,
    /// Seed of the client's randomness (retry jitter, idempotency keys);
    /// `None`: from the OS. Set it to replay a run (tests, simulation).
    pub seed: Option<u64>,
    /// The capability token every call sends (`authorization: Bearer`).
    pub token: Option<BearerToken>,
}

impl ClientConfig {
    /// A configuration with default timeouts.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            call_timeout: Duration::from_millis(CALL_TIMEOUT_DEFAULT_MS),
            connect_timeout: Duration::from_millis(CONNECT_TIMEOUT_DEFAULT_MS),
            discover_members: true,
            preferred_region: None,
            tls: None,
            seed: None,
            token: None,
        }
    }

    /// Sends `token` with every call.
    pub fn with_token(mut self, token: Option<BearerToken>) -> Self {
        self.token = token;
        self
    }

    /// The same configuration drawing its randomness from `seed`.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Sets the per-call deadline.
    pub fn with_call_timeout(mut self, call_timeout: Duration) -> Self {
        self.call_timeout = call_timeout;
        self
    }

    /// Sets the per-endpoint connect timeout.
    pub fn with_connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Turns member discovery on or off.
    pub fn with_discover_members(mut self, discover_members: bool) -> Self {
        self.discover_members = discover_members;
        self
    }

    /// Sets the region serializable reads prefer.
    pub fn with_preferred_region(mut self, preferred_region: Option<String>) -> Self {
        self.preferred_region = preferred_region;
        self
    }

    /// Sets TLS (endpoints must then be `https://`).
    pub fn with_tls(mut self, tls: Option<ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Checks the configuration; errors name the field.
    pub fn validate(&self) -> Result<(), ClientError> {
        if self.endpoints.is_empty() {
            return Err(ClientError::ConfigInvalid { field: "endpoints", problem: "is empty".into() });
        }
        if self.endpoints.len() > ENDPOINTS_MAX {
            return Err(ClientError::ConfigInvalid {
                field: "endpoints",
                problem: format!("has {} entries; at most {ENDPOINTS_MAX} are allowed", self.endpoints.len()),
            });
        }
        if self.call_timeout.is_zero() {
            return Err(ClientError::ConfigInvalid { field: "call_timeout", problem: "must be positive".into() });
        }
        if self.connect_timeout.is_zero() {
            return Err(ClientError::ConfigInvalid { field: "connect_timeout", problem: "must be positive".into() });
        }
        if self.preferred_region.as_ref().is_some_and(|region| region.trim().is_empty()) {
            return Err(ClientError::ConfigInvalid { field: "preferred_region", problem: "is empty".into() });
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        Ok(())
    }
}

/// A client of Keel's public gRPC API. Cheap to clone; clones share the
/// channels and what the client learned about the cluster.
#[derive(Debug, Clone)]
pub struct KeelClient {
    connection: Arc<Connection>,
    call_timeout: Duration,
    pub(crate) randomness: Arc<crate::randomness::Randomness>,
    token: Option<BearerToken>,
}

impl KeelClient {
    /// A client that connects on its first call.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        config.validate()?;
        let connection = Connection::new(
            &config.endpoints,
            config.connect_timeout,
            config.preferred_region.map(|region| region.trim().to_owned()),
            config.discover_members,
            config.tls.as_ref().map(ClientTls::load).transpose()?,
        )?;
        Ok(KeelClient {
            connection: Arc::new(connection),
            call_timeout: config.call_timeout,
            randomness: Arc::new(crate::randomness::Randomness::new(config.seed)),
            token: config.token,
        })
    }

    /// A client that has connected: each endpoint is tried once, in order,
    /// within the call timeout, and members are discovered (when enabled;
    /// a failed discovery is not an error). Fails with
    /// [`ClientError::Connect`] when no endpoint accepts.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let client = KeelClient::new(config)?;
        client.target(Route::Nearby, Instant::now() + client.call_timeout).await?;
        Ok(client)
    }

    /// A client sharing this one's channels, with another per-call deadline.
    pub fn with_call_timeout(&self, call_timeout: Duration) -> Self {
        KeelClient {
            connection: Arc::clone(&self.connection),
            call_timeout,
            randomness: Arc::clone(&self.randomness),
            token: self.token.clone(),
        }
    }

    /// A client sharing this one's channels, sending another token.
    pub fn with_token(&self, token: Option<BearerToken>) -> Self {
        KeelClient { token, ..self.clone() }
    }

    /// Puts the token on `request`.
    fn authorize<T>(&self, request: &mut tonic::Request<T>) {
        if let Some(token) = &self.token {
            request.metadata_mut().insert("authorization", token.header().clone());
        }
    }

    /// The per-call deadline.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[String] {
        self.connection.configured()
    }

    /// Every endpoint the client knows: the configured ones first, then the
    /// members discovered or named as leader.
    pub fn known_endpoints(&self) -> Vec<String> {
        self.connection.known_addresses()
    }

    /// The leader's node id as last reported by the cluster, if any.
    pub fn leader_id(&self) -> Option<u64> {
        self.connection.leader_id()
    }

    /// The region serializable reads prefer.
    pub fn preferred_region(&self) -> Option<String> {
        self.connection.preferred_region()
    }

    /// A channel for `route`, running member discovery first when it is due
    /// (then asking again: the members found may change the best choice).
    async fn target(&self, route: Route, deadline: Instant) -> Result<Target, ClientError> {
        let target = self.connection.target(route, deadline).await?;
        if !self.connection.take_discovery_due() {
            return Ok(target);
        }
        self.discover_members(&target, deadline).await;
        self.connection.target(route, deadline).await
    }

    /// One bounded `GetStatus` on `target`; its members join the endpoint
    /// list. Any failure leaves the list as it was: discovery only ever
    /// improves routing, it never fails a call.
    async fn discover_members(&self, target: &Target, deadline: Instant) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let budget = (remaining / 2).min(Duration::from_millis(DISCOVERY_TIMEOUT_MS));
        if budget.is_zero() {
            return;
        }
        let mut request = tonic::Request::new(keel_proto::v1::GetStatusRequest {});
        request.set_timeout(budget);
        self.authorize(&mut request);
        let mut cluster_service = crate::cluster::cluster_service(target.channel.clone());
        if let Ok(Ok(response)) = tokio::time::timeout(budget, cluster_service.get_status(request)).await {
            let served = Served::from_response(response);
            self.connection.apply_status(&target.address, &served.value);
            self.connection.record_success(&target.address, &served.meta);
        }
    }

    /// Runs one RPC with the deadline and retry rules of this module, on the
    /// endpoint `route` prefers. `send` performs a single attempt on a
    /// channel.
    pub(crate) async fn call<Request, Response, Attempt>(
        &self,
        method: &'static str,
        route: Route,
        request: Request,
        send: impl Fn(Channel, tonic::Request<Request>) -> Attempt,
    ) -> Result<Served<Response>, ClientError>
    where
        Request: Clone,
        Attempt: Future<Output = Result<tonic::Response<Response>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.call_timeout;
        let deadline_exceeded = || ClientError::DeadlineExceeded {
            method,
            timeout_ms: u64::try_from(self.call_timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let mut n_retries: u32 = 0;
        let mut n_redirects: u32 = 0;
        let mut redirect_to: Option<String> = None;
        // Bounded: every pass either returns or increments `n_retries`
        // (at most RETRY_ATTEMPTS_MAX - 1) or `n_redirects` (at most
        // LEADER_REDIRECTS_MAX).
        loop {
            let target = match redirect_to.take() {
                Some(address) => self.connection.target_at(&address, deadline).await,
                None => self.target(route, deadline).await,
            };
            let error = match target {
                Err(error) => error,
                Ok(target) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return Err(deadline_exceeded());
                    }
                    let mut attempt = tonic::Request::new(request.clone());
                    attempt.set_timeout(remaining);
                    self.authorize(&mut attempt);
                    match tokio::time::timeout(remaining, send(target.channel.clone(), attempt)).await {
                        Err(_elapsed) => return Err(deadline_exceeded()),
                        Ok(Ok(response)) => {
                            let served = Served::from_response(response);
                            self.connection.record_success(&target.address, &served.meta);
                            return Ok(served);
                        }
                        Ok(Err(status)) if error::is_client_timeout(&status) => return Err(deadline_exceeded()),
                        Ok(Err(status)) => {
                            let error = ClientError::from_status(&status, &target.address);
                            if matches!(error, ClientError::Server { .. }) {
                                self.connection
                                    .record_answer(&target.address, &ResponseMeta::from_metadata(status.metadata()));
                            }
                            if retry::retry_action(&error) == RetryAction::NextEndpoint {
                                self.connection.mark_failed(&target.address);
                            }
                            error
                        }
                    }
                }
            };
            match retry::retry_action(&error) {
                RetryAction::Stop => return Err(error),
                RetryAction::Redirect { address } if n_redirects < LEADER_REDIRECTS_MAX => {
                    n_redirects += 1;
                    let leader_id = error.metadata().get(LEADER_ID_METADATA).and_then(|id| id.trim().parse().ok());
                    redirect_to = Some(self.connection.record_leader(leader_id, &address));
                    continue;
                }
                RetryAction::Redirect { .. } | RetryAction::SameEndpoint | RetryAction::NextEndpoint => {}
            }
            if n_retries + 1 >= RETRY_ATTEMPTS_MAX {
                return Err(error);
            }
            let delay = retry::retry_delay(n_retries, self.randomness.jitter(), &error);
            n_retries += 1;
            if Instant::now() + delay >= deadline {
                return Err(error);
            }
            tokio::time::sleep(delay).await;
        }
    }
}

/// Fetches every page of a list: `fetch(page_token)` gets one page and
/// `split` takes it apart into items and the next token. Stops at an empty
/// token; refuses a repeated token (a server bug that would loop forever) and
/// more than [`LIST_PAGES_MAX`] pages. Each page has its own deadline; pages
/// may reflect different revisions. The metadata is the last page's.
pub(crate) async fn collect_pages<Page, Item, Fetch>(
    method: &'static str,
    mut fetch: impl FnMut(String) -> Fetch,
    split: impl Fn(Page) -> (Vec<Item>, String),
) -> Result<Served<Vec<Item>>, ClientError>
where
    Fetch: Future<Output = Result<Served<Page>, ClientError>>,
{
    let mut items = Vec::new();
    let mut page_token = String::new();
    let mut seen_tokens = BTreeSet::new();
    for _ in 0..LIST_PAGES_MAX {
        let served = fetch(page_token).await?;
        let (page, next_page_token) = split(served.value);
        items.extend(page);
        if next_page_token.is_empty() {
            return Ok(Served { value: items, meta: served.meta });
        }
        if !seen_tokens.insert(next_page_token.clone()) {
            return Err(ClientError::ResponseInvalid {
                method,
                field: "next_page_token",
                problem: format!("{next_page_token:?} was returned twice"),
            });
        }
        page_token = next_page_token;
    }
    Err(ClientError::TooManyPages { method, pages_max: LIST_PAGES_MAX })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::served::ResponseMeta;

    #[test]
    fn config_validation_names_the_field() {
        let none: [&str; 0] = [];
        assert!(matches!(
            ClientConfig::new(none).validate(),
            Err(ClientError::ConfigInvalid { field: "endpoints", .. })
        ));
        let too_many = ClientConfig::new((0..=ENDPOINTS_MAX).map(|i| format!("http://h{i}:1")));
        assert!(matches!(too_many.validate(), Err(ClientError::ConfigInvalid { field: "endpoints", .. })));
        let zero = ClientConfig::new(["http://h:1"]).with_call_timeout(Duration::ZERO);
        assert!(matches!(zero.validate(), Err(ClientError::ConfigInvalid { field: "call_timeout", .. })));
        assert!(KeelClient::new(ClientConfig::new(["h:1"])).is_err(), "scheme required");
        assert!(KeelClient::new(ClientConfig::new(["http://h:1", "http://h:2"])).is_ok());
    }

    fn page(items: &[u32], next: &str) -> Result<Served<(Vec<u32>, String)>, ClientError> {
        Ok(Served { value: (items.to_vec(), next.to_owned()), meta: ResponseMeta::default() })
    }

    #[tokio::test]
    async fn collect_pages_follows_tokens_until_empty() {
        let pages = [page(&[1, 2], "a"), page(&[3], "b"), page(&[], "")];
        let mut pages = pages.into_iter();
        let mut requested = Vec::new();
        let result = collect_pages(
            "List",
            |token| {
                requested.push(token);
                let next = pages.next().unwrap_or_else(|| page(&[], ""));
                async move { next }
            },
            |(items, next)| (items, next),
        )
        .await
        .expect("pages");
        assert_eq!(result.value, [1, 2, 3]);
        assert_eq!(requested, ["", "a", "b"]);
    }

    #[tokio::test]
    async fn collect_pages_refuses_a_repeated_token() {
        let result = collect_pages("List", |_| async { page(&[1], "same") }, |(items, next)| (items, next)).await;
        assert!(matches!(result, Err(ClientError::ResponseInvalid { field: "next_page_token", .. })));
    }

    #[tokio::test]
    async fn connect_fails_fast_when_nothing_listens() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let config = ClientConfig::new([address]).with_call_timeout(Duration::from_secs(2));
        let error = KeelClient::connect(config).await.expect_err("nothing listens");
        assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");
    }
}
