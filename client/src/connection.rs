//! The channels: one per endpoint, opened when first needed and kept until
//! a call reports the endpoint broken.
//!
//! ```text
//!   target(route) ── RoutingTable::candidates(route) ──▶ first with a kept channel, or that connects ──▶ Target
//!                                                          │ connect failed: mark_failed, try the next
//!   target_at(leader_addr) ──▶ kept channel or a new one (NOT_LEADER redirect)
//!   mark_failed(address) ──▶ drop the channel; the routing table stops preferring it for a while
//! ```
//!
//! Which endpoint a call should use is the routing table's decision
//! (`routing`); this module only opens, keeps and drops channels. At most
//! one channel per known endpoint is kept ([`CHANNELS_MAX`]); a redirect
//! target that does not fit in the table gets a channel for that attempt
//! only. Every endpoint gets HTTP/2 keep-alive (without it a channel may not
//! recover after a partition heals) and a connect timeout.

use crate::error::{self, ClientError};
use crate::limits::{CHANNELS_MAX, HTTP2_KEEP_ALIVE_INTERVAL_MS, HTTP2_KEEP_ALIVE_TIMEOUT_MS, TCP_KEEPALIVE_MS};
use crate::routing::{DiscoveredMember, Route, RoutingTable};
use crate::served::ResponseMeta;
use crate::tls::LoadedTls;
use keel_proto::v1 as pb;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

/// Where one attempt goes.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The endpoint's address (`http://host:port`).
    pub(crate) address: String,
    /// An open channel to it.
    pub(crate) channel: Channel,
}

#[derive(Debug)]
struct State {
    table: RoutingTable,
    /// Open channels by address; only for addresses in `table`.
    channels: BTreeMap<String, Channel>,
}

/// The routing table and the kept channels.
#[derive(Debug)]
pub(crate) struct Connection {
    configured: Vec<String>,
    connect_timeout: Duration,
    /// TLS for every endpoint (`https://`), or none (`http://`).
    tls: Option<LoadedTls>,
    state: Mutex<State>,
}

impl Connection {
    /// Validates every configured address; connects lazily.
    pub(crate) fn new(
        addresses: &[String],
        connect_timeout: Duration,
        preferred_region: Option<String>,
        is_discovery_enabled: bool,
        tls: Option<LoadedTls>,
    ) -> Result<Self, ClientError> {
        for address in addresses {
            endpoint(address, connect_timeout, tls.as_ref())?;
        }
        let table = RoutingTable::new(addresses, preferred_region, is_discovery_enabled);
        Ok(Connection {
            configured: addresses.to_vec(),
            connect_timeout,
            tls,
            state: Mutex::new(State { table, channels: BTreeMap::new() }),
        })
    }

    /// The configured addresses.
    pub(crate) fn configured(&self) -> &[String] {
        &self.configured
    }

    /// Every known address: configured first, then discovered.
    pub(crate) fn known_addresses(&self) -> Vec<String> {
        self.lock().table.addresses()
    }

    /// The leader's node id, when known.
    pub(crate) fn leader_id(&self) -> Option<u64> {
        self.lock().table.leader_id()
    }

    /// The region serializable reads prefer.
    pub(crate) fn preferred_region(&self) -> Option<String> {
        self.lock().table.preferred_region().map(str::to_owned)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: no update
        // leaves it half-done across a panic point.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A channel for `route`: the routing table's candidates are tried in
    /// order, a kept channel is used at once, otherwise a connection is
    /// opened; an endpoint that does not connect is marked failed. Fails
    /// with [`ClientError::Connect`] when none connects before `deadline`.
    pub(crate) async fn target(&self, route: Route, deadline: Instant) -> Result<Target, ClientError> {
        let candidates = self.lock().table.candidates(route, Instant::now());
        let mut last_error = String::from("no endpoint was tried before the deadline");
        for address in &candidates {
            match self.target_at(address, deadline).await {
                Ok(target) => return Ok(target),
                Err(ClientError::Connect { last_error: error, .. }) => last_error = format!("{address}: {error}"),
                Err(error) => last_error = format!("{address}: {error}"),
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Err(ClientError::Connect { endpoints: candidates, last_error })
    }

    /// A channel to `address` (a known endpoint or a leader named by
    /// `NOT_LEADER`): the kept one, or a new one, kept if the address is in
    /// the table. A failure to connect marks the address failed.
    pub(crate) async fn target_at(&self, address: &str, deadline: Instant) -> Result<Target, ClientError> {
        let kept = self.lock().channels.get(address).cloned();
        if let Some(channel) = kept {
            return Ok(Target { address: address.to_owned(), channel });
        }
        let target = endpoint(address, self.connect_timeout, self.tls.as_ref())?;
        match self.open(&target, deadline).await {
            Ok(channel) => {
                let mut state = self.lock();
                if state.table.contains(address) && state.channels.len() < CHANNELS_MAX {
                    state.channels.insert(address.to_owned(), channel.clone());
                }
                Ok(Target { address: address.to_owned(), channel })
            }
            Err(last_error) => {
                self.mark_failed(address);
                Err(ClientError::Connect { endpoints: vec![address.to_owned()], last_error })
            }
        }
    }

    /// Drops the channel to `address`; the routing table stops preferring
    /// it for a while and, if it was the sticky endpoint, fails over.
    pub(crate) fn mark_failed(&self, address: &str) {
        let mut state = self.lock();
        state.channels.remove(address);
        state.table.mark_failed(address, Instant::now());
    }

    /// A call on `address` succeeded with these response headers.
    pub(crate) fn record_success(&self, address: &str, meta: &ResponseMeta) {
        let mut state = self.lock();
        state.table.record_answer(address, meta.node_id, meta.region.as_deref(), meta.leader_id());
        state.table.record_success(address);
    }

    /// A server error from `address` carried these response headers.
    pub(crate) fn record_answer(&self, address: &str, meta: &ResponseMeta) {
        self.lock().table.record_answer(address, meta.node_id, meta.region.as_deref(), meta.leader_id());
    }

    /// A `NOT_LEADER` answer named the leader; returns its endpoint address.
    pub(crate) fn record_leader(&self, leader_id: Option<u64>, leader_addr: &str) -> String {
        let address = endpoint_address(leader_addr, self.tls.is_some());
        self.lock().table.record_leader(leader_id, &address)
    }

    /// Whether member discovery should run now (taken once per connect or
    /// failover).
    pub(crate) fn take_discovery_due(&self) -> bool {
        self.lock().table.take_discovery_due()
    }

    /// Applies a `GetStatus` answer from `address`: members whose
    /// `client_addr` is not a usable endpoint are left out; channels to
    /// endpoints no longer known are closed.
    pub(crate) fn apply_status(&self, address: &str, status: &pb::ClusterStatus) {
        let members: Vec<DiscoveredMember> = status
            .members
            .iter()
            .filter(|member| !member.client_addr.trim().is_empty())
            .map(|member| DiscoveredMember {
                node_id: member.node_id,
                region: member.region.clone(),
                address: endpoint_address(&member.client_addr, self.tls.is_some()),
            })
            .filter(|member| endpoint(&member.address, self.connect_timeout, self.tls.as_ref()).is_ok())
            .collect();
        let mut state = self.lock();
        state.table.apply_status(address, status.node_id, &status.region, status.leader_id, &members);
        let State { table, channels } = &mut *state;
        channels.retain(|address, _| table.contains(address));
    }

    async fn open(&self, endpoint: &Endpoint, deadline: Instant) -> Result<Channel, String> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err("deadline passed".to_owned());
        }
        // The endpoint's own connect timeout bounds the TCP connect; this
        // bounds the whole handshake and respects the caller's deadline.
        match tokio::time::timeout(remaining.min(self.connect_timeout), endpoint.connect()).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(error)) => Err(error::error_chain(&error)),
            Err(_) => Err(format!("no connection within {} ms", remaining.min(self.connect_timeout).as_millis())),
        }
    }
}

/// `address` as an endpoint: a bare `host:port` (as members and
/// `NOT_LEADER` report addresses) gets `https://` with TLS, else `http://`.
fn endpoint_address(address: &str, is_tls: bool) -> String {
    let address = address.trim();
    if address.contains("://") || !is_tls {
        crate::routing::endpoint_address(address)
    } else {
        format!("https://{address}")
    }
}

/// A configured tonic endpoint for `address`: `http://host:port` without
/// TLS, `https://host:port` with it (the server's certificate must name
/// `host`).
fn endpoint(address: &str, connect_timeout: Duration, tls: Option<&LoadedTls>) -> Result<Endpoint, ClientError> {
    let invalid = |problem: String| ClientError::EndpointInvalid { endpoint: address.to_owned(), problem };
    let (scheme, rest) =
        address.split_once("://").ok_or_else(|| invalid("needs a scheme, e.g. http://127.0.0.1:7400".into()))?;
    match (scheme, tls.is_some()) {
        ("http", false) | ("https", true) => {}
        ("http", true) => return Err(invalid("uses http:// but TLS is configured (a CA file); use https://".into())),
        ("https", false) => {
            return Err(invalid("uses https:// but no CA file is configured (--ca-file or KEEL_CA_FILE)".into()));
        }
        _ => return Err(invalid(format!("uses scheme {scheme:?}; only http:// and https:// are supported"))),
    }
    if rest.is_empty() {
        return Err(invalid("has no host".into()));
    }
    let mut endpoint =
        Endpoint::from_shared(address.to_owned()).map_err(|error| invalid(error::error_chain(&error)))?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.config()).map_err(|error| invalid(error::error_chain(&error)))?;
    }
    Ok(endpoint
        .connect_timeout(connect_timeout)
        .http2_keep_alive_interval(Duration::from_millis(HTTP2_KEEP_ALIVE_INTERVAL_MS))
        .keep_alive_timeout(Duration::from_millis(HTTP2_KEEP_ALIVE_TIMEOUT_MS))
        .keep_alive_while_idle(true)
        .tcp_keepalive(Some(Duration::from_millis(TCP_KEEPALIVE_MS)))
        .tcp_nodelay(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_need_an_http_scheme_and_a_host() {
        let timeout = Duration::from_secs(1);
        assert!(endpoint("http://127.0.0.1:7400", timeout, None).is_ok());
        assert!(endpoint("http://keel-1.example:7400", timeout, None).is_ok());
        for bad in ["127.0.0.1:7400", "https://127.0.0.1:7400", "http://", "ftp://x:1", "http://bad host:1"] {
            assert!(
                matches!(endpoint(bad, timeout, None), Err(ClientError::EndpointInvalid { .. })),
                "{bad} should be refused"
            );
        }
    }

    #[tokio::test]
    async fn a_closed_port_gives_a_connect_error_naming_the_endpoint() {
        // Bind and drop a listener to get a port that is very likely closed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let connection =
            Connection::new(std::slice::from_ref(&address), Duration::from_secs(1), None, true, None).expect("valid");
        let error =
            connection.target(Route::Leader, Instant::now() + Duration::from_secs(2)).await.expect_err("closed");
        let ClientError::Connect { endpoints, last_error } = &error else { panic!("{error:?}") };
        assert_eq!(endpoints, std::slice::from_ref(&address));
        assert!(last_error.starts_with(&address), "{last_error}");
    }
}
