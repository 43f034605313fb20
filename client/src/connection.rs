//! The endpoint list and the one channel in use.
//!
//! ```text
//!   endpoints [e0, e1, e2] ──try in order from `next_index`──▶ first that connects ──▶ Current{channel}
//!        ▲                                                                               │
//!        └──────────── mark_failed(): drop channel, start after it next time ◀──────────┘
//!   NOT_LEADER{leader_addr} ──redirect()──▶ Current{channel to the leader}
//! ```
//!
//! The channel is kept and shared by every call until a call reports it
//! broken; then the next call connects afresh, starting with the endpoint
//! after the broken one, so a dead node is skipped rather than retried.
//! Every endpoint gets HTTP/2 keep-alive (without it a channel may not
//! recover after a partition heals) and a connect timeout.

use crate::error::{self, ClientError};
use crate::limits::{HTTP2_KEEP_ALIVE_INTERVAL_MS, HTTP2_KEEP_ALIVE_TIMEOUT_MS, TCP_KEEPALIVE_MS};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

/// The channel in use and where it goes.
#[derive(Clone, Debug)]
pub(crate) struct Current {
    /// The address as configured (or as the server named the leader).
    pub(crate) address: String,
    /// The open channel.
    pub(crate) channel: Channel,
    /// Position in the configured list; `None` for a redirect target.
    index: Option<usize>,
}

#[derive(Debug, Default)]
struct State {
    current: Option<Current>,
    /// Where the next connection attempt starts in the list.
    next_index: usize,
}

/// The configured endpoints and the shared channel.
#[derive(Debug)]
pub(crate) struct Connection {
    addresses: Vec<String>,
    endpoints: Vec<Endpoint>,
    connect_timeout: Duration,
    state: Mutex<State>,
}

impl Connection {
    /// Validates every address; connects lazily.
    pub(crate) fn new(addresses: &[String], connect_timeout: Duration) -> Result<Self, ClientError> {
        let endpoints =
            addresses.iter().map(|address| endpoint(address, connect_timeout)).collect::<Result<Vec<_>, _>>()?;
        Ok(Connection { addresses: addresses.to_vec(), endpoints, connect_timeout, state: Mutex::default() })
    }

    /// The configured addresses.
    pub(crate) fn addresses(&self) -> &[String] {
        &self.addresses
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update
        // is a single assignment.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The channel in use, connecting first if there is none: every endpoint
    /// is tried once, in order from the one after the last failure, until one
    /// connects or `deadline` passes.
    pub(crate) async fn current(&self, deadline: Instant) -> Result<Current, ClientError> {
        let start_index = {
            let state = self.lock();
            if let Some(current) = &state.current {
                return Ok(current.clone());
            }
            state.next_index
        };
        let mut last_error = String::from("no endpoint was tried before the deadline");
        let count = self.endpoints.len();
        for offset in 0..count {
            let index = (start_index + offset) % count;
            match self.open(&self.endpoints[index], deadline).await {
                Ok(channel) => {
                    let current = Current { address: self.addresses[index].clone(), channel, index: Some(index) };
                    let mut state = self.lock();
                    state.current = Some(current.clone());
                    state.next_index = index;
                    return Ok(current);
                }
                Err(error) => last_error = format!("{}: {error}", self.addresses[index]),
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Err(ClientError::Connect { endpoints: self.addresses.clone(), last_error })
    }

    /// Connects to the leader's address from a `NOT_LEADER` answer and makes
    /// it the channel in use. A bare `host:port` is taken as `http://`.
    pub(crate) async fn redirect(&self, address: &str, deadline: Instant) -> Result<Current, ClientError> {
        let address = if address.contains("://") { address.to_owned() } else { format!("http://{address}") };
        let target = endpoint(&address, self.connect_timeout)?;
        let channel = self
            .open(&target, deadline)
            .await
            .map_err(|error| ClientError::Connect { endpoints: vec![address.clone()], last_error: error })?;
        let current = Current { address, channel, index: None };
        self.lock().current = Some(current.clone());
        Ok(current)
    }

    /// Forgets `failed` if it is still the channel in use, so that the next
    /// call connects again starting after it.
    pub(crate) fn mark_failed(&self, failed: &Current) {
        let mut state = self.lock();
        let is_in_use = state.current.as_ref().is_some_and(|current| current.address == failed.address);
        if is_in_use {
            state.current = None;
            if let Some(index) = failed.index {
                state.next_index = (index + 1) % self.endpoints.len().max(1);
            }
        }
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

/// A configured tonic endpoint for `address` (`http://host:port`).
fn endpoint(address: &str, connect_timeout: Duration) -> Result<Endpoint, ClientError> {
    let invalid = |problem: String| ClientError::EndpointInvalid { endpoint: address.to_owned(), problem };
    let (scheme, rest) =
        address.split_once("://").ok_or_else(|| invalid("needs a scheme, e.g. http://127.0.0.1:7400".into()))?;
    if scheme != "http" {
        return Err(invalid(format!("uses scheme {scheme:?}; only http:// is supported (TLS is not implemented yet)")));
    }
    if rest.is_empty() {
        return Err(invalid("has no host".into()));
    }
    let endpoint = Endpoint::from_shared(address.to_owned()).map_err(|error| invalid(error::error_chain(&error)))?;
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
        assert!(endpoint("http://127.0.0.1:7400", timeout).is_ok());
        assert!(endpoint("http://keel-1.example:7400", timeout).is_ok());
        for bad in ["127.0.0.1:7400", "https://127.0.0.1:7400", "http://", "ftp://x:1", "http://bad host:1"] {
            assert!(
                matches!(endpoint(bad, timeout), Err(ClientError::EndpointInvalid { .. })),
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
        let connection = Connection::new(std::slice::from_ref(&address), Duration::from_secs(1)).expect("valid");
        let error = connection.current(Instant::now() + Duration::from_secs(2)).await.expect_err("closed");
        let ClientError::Connect { endpoints, last_error } = &error else { panic!("{error:?}") };
        assert_eq!(endpoints, std::slice::from_ref(&address));
        assert!(last_error.starts_with(&address), "{last_error}");
    }
}
