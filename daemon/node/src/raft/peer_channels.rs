//! [`PeerChannels`]: the client side of the peer transport — one lazily
//! connected gRPC channel per peer address, shared by the Raft network
//! ([`super::GrpcNetwork`]) and the leader link ([`super::PeerLink`]), and
//! the one place a peer call's failure is classified.
//!
//! ```text
//!  GrpcNetwork (openraft RPCs) ──┐
//!                                ├─► PeerChannels::call(peer_addr, timeout, message)
//!  PeerLink (forward, read) ─────┘      │ the channel for peer_addr: made on first use, then
//!                                       │ reused; tonic reconnects it after a failure
//!                                       ▼
//!                          RaftPeer client ──HTTP/2──► the peer's RaftPeerService
//!                                       │
//!                                       ▼
//!                the answer, or PeerCallError::{Unreachable, TimedOut, Failed, Garbage, ...}
//! ```
//!
//! Channels connect on their first call, with a connect timeout, TCP_NODELAY
//! and HTTP/2 keep-alive pings even while idle, so a connection through a
//! partition that healed is noticed dead and replaced instead of hanging.
//! TLS: [`PeerChannels::new`] takes an optional [`ClientTlsConfig`]; with
//! one, channels speak HTTPS to peers (mTLS when it carries an identity).

use super::peer_message::{PackError, UnpackError};
use crate::limits::{
    PEER_CHANNELS_MAX, PEER_CONNECT_TIMEOUT_MS, PEER_HTTP2_KEEPALIVE_INTERVAL_MS, PEER_HTTP2_KEEPALIVE_TIMEOUT_MS,
};
use crate::transport::{Connector, tonic_connector};
use keel_kernel::limits::GRPC_MESSAGE_BYTES_MAX;
use keel_proto::raft::v1::raft_peer_client::RaftPeerClient;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// One lazily connected channel per peer address.
#[derive(Debug)]
pub struct PeerChannels {
    tls: Option<ClientTlsConfig>,
    /// How connections are opened: TCP (`None`), or a seam such as
    /// `transport::MemNetwork` for an in-process cluster.
    connector: Option<Arc<dyn Connector>>,
    channels: Mutex<BTreeMap<String, Channel>>,
    /// This cluster's id, sent with every call (`CLUSTER_ID_HEADER`) so a
    /// member of another cluster at a reused address refuses it.
    cluster_id: Option<tonic::metadata::AsciiMetadataValue>,
    /// When a call to each peer address last got an answer (any answer from
    /// the peer's Raft, including a refusal, proves it reachable).
    last_answer: Mutex<BTreeMap<String, tokio::time::Instant>>,
}

/// The peer-call header naming the caller's cluster (`cluster.id`).
pub const CLUSTER_ID_HEADER: &str = "keel-cluster-id";

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerCallError {
    /// The peer address does not make a valid endpoint (or TLS settings do not apply to it).
    #[error("peer address {peer_addr:?} is not a valid endpoint")]
    Address {
        /// The address from the membership.
        peer_addr: String,
        /// tonic's reason.
        #[source]
        source: tonic::transport::Error,
    },
    /// The request does not encode or is over the message limit.
    #[error("request to peer {peer_addr} cannot be sent")]
    Pack {
        /// The peer's address.
        peer_addr: String,
        /// Why.
        #[source]
        source: PackError,
    },
    /// The peer cannot be reached: connection refused or reset, connect
    /// timeout, keep-alive timeout, peer shutting down.
    #[error("peer {peer_addr} is unreachable")]
    Unreachable {
        /// The peer's address.
        peer_addr: String,
        /// The transport's status.
        #[source]
        status: tonic::Status,
    },
    /// No answer within the call's timeout.
    #[error("peer {peer_addr} did not answer within {after_ms} ms")]
    TimedOut {
        /// The peer's address.
        peer_addr: String,
        /// The timeout.
        after_ms: u64,
    },
    /// The peer answered with an error status: it could not decode the
    /// request, or does not serve the method (an older build).
    #[error("peer {peer_addr} failed the call")]
    Failed {
        /// The peer's address.
        peer_addr: String,
        /// The peer's status.
        #[source]
        status: tonic::Status,
    },
    /// The peer's answer does not decode.
    #[error("peer {peer_addr} answered with a message this build cannot read")]
    Garbage {
        /// The peer's address.
        peer_addr: String,
        /// Why.
        #[source]
        source: UnpackError,
    },
}

impl PeerChannels {
    /// No channels yet; `tls` applies to every channel made.
    pub fn new(tls: Option<ClientTlsConfig>) -> Self {
        PeerChannels {
            tls,
            connector: None,
            channels: Mutex::default(),
            cluster_id: None,
            last_answer: Mutex::default(),
        }
    }

    /// These channels, naming `cluster_id` on every call (an id that is not
    /// valid header text is not sent; config validation refuses those).
    pub fn with_cluster_id(mut self, cluster_id: &str) -> Self {
        self.cluster_id = cluster_id.parse().ok();
        self
    }

    /// These channels, connecting through `connector` instead of TCP.
    pub fn with_connector(mut self, connector: Arc<dyn Connector>) -> Self {
        self.connector = Some(connector);
        self
    }

    /// A client on the channel for `peer_addr` (`host:port`), made on first use.
    pub fn client(&self, peer_addr: &str) -> Result<RaftPeerClient<Channel>, PeerCallError> {
        let channel = {
            let mut channels = self.lock();
            match channels.get(peer_addr) {
                Some(channel) => channel.clone(),
                None => {
                    let endpoint = self.endpoint(peer_addr)?;
                    let channel = match &self.connector {
                        None => endpoint.connect_lazy(),
                        Some(connector) => endpoint.connect_with_connector_lazy(tonic_connector(Arc::clone(connector))),
                    };
                    if channels.len() >= PEER_CHANNELS_MAX {
                        channels.pop_first();
                    }
                    channels.insert(peer_addr.to_owned(), channel.clone());
                    channel
                }
            }
        };
        Ok(RaftPeerClient::new(channel)
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX))
    }

    fn endpoint(&self, peer_addr: &str) -> Result<Endpoint, PeerCallError> {
        let address_error = |source| PeerCallError::Address { peer_addr: peer_addr.to_owned(), source };
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{peer_addr}"))
            .map_err(address_error)?
            .connect_timeout(Duration::from_millis(PEER_CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_millis(PEER_HTTP2_KEEPALIVE_INTERVAL_MS))
            .keep_alive_timeout(Duration::from_millis(PEER_HTTP2_KEEPALIVE_TIMEOUT_MS))
            .keep_alive_while_idle(true);
        match &self.tls {
            Some(tls) => endpoint.tls_config(tls.clone()).map_err(address_error),
            None => Ok(endpoint),
        }
    }

    /// Sends `message` to `peer_addr` with `send` (one generated client
    /// method) and waits at most `timeout`, which also travels to the peer as
    /// the gRPC deadline. Never waits longer, connecting included.
    pub async fn call<Q, A, F, Fut>(
        &self,
        peer_addr: &str,
        timeout: Duration,
        message: Q,
        send: F,
    ) -> Result<A, PeerCallError>
    where
        F: FnOnce(RaftPeerClient<Channel>, tonic::Request<Q>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<A>, tonic::Status>>,
    {
        let client = self.client(peer_addr)?;
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        // The caller's trace (a forwarded write's RPC span) continues on the peer.
        crate::telemetry::inject_context(request.metadata_mut());
        if let Some(cluster_id) = &self.cluster_id {
            request.metadata_mut().insert(CLUSTER_ID_HEADER, cluster_id.clone());
        }
        let started = tokio::time::Instant::now();
        let timed_out = || PeerCallError::TimedOut { peer_addr: peer_addr.to_owned(), after_ms: duration_ms(timeout) };
        match tokio::time::timeout(timeout, send(client, request)).await {
            Err(_elapsed) => Err(timed_out()),
            Ok(Ok(response)) => {
                self.record_answer(peer_addr);
                Ok(response.into_inner())
            }
            Ok(Err(status)) => Err(match status.code() {
                Code::Unavailable => PeerCallError::Unreachable { peer_addr: peer_addr.to_owned(), status },
                Code::DeadlineExceeded => timed_out(),
                // tonic cancels a call when its own copy of the deadline fires,
                // and when the connection under it goes away.
                Code::Cancelled if started.elapsed() >= timeout => timed_out(),
                Code::Cancelled => PeerCallError::Unreachable { peer_addr: peer_addr.to_owned(), status },
                _ => PeerCallError::Failed { peer_addr: peer_addr.to_owned(), status },
            }),
        }
    }

    fn record_answer(&self, peer_addr: &str) {
        let mut last_answer = self.last_answer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if last_answer.len() >= PEER_CHANNELS_MAX && !last_answer.contains_key(peer_addr) {
            // Bounded like the channels: forget the stalest address.
            if let Some(stalest) = last_answer.iter().min_by_key(|(_, at)| **at).map(|(addr, _)| addr.clone()) {
                last_answer.remove(&stalest);
            }
        }
        last_answer.insert(peer_addr.to_owned(), tokio::time::Instant::now());
    }

    /// How long ago a call to `peer_addr` last got an answer, if ever.
    pub fn since_last_answer(&self, peer_addr: &str) -> Option<Duration> {
        let last_answer = self.last_answer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        last_answer.get(peer_addr).map(|at| at.elapsed())
    }

    /// The map. Nothing holding the lock can panic halfway through a change,
    /// so a poisoned lock still guards a consistent map.
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `duration` in whole milliseconds, saturating.
pub(crate) fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn channels_are_reused_and_bounded() -> Result<(), Box<dyn std::error::Error>> {
        let channels = PeerChannels::new(None);
        channels.client("127.0.0.1:7401")?;
        channels.client("127.0.0.1:7401")?;
        assert_eq!(channels.lock().len(), 1);
        for port in 0..PEER_CHANNELS_MAX + 5 {
            channels.client(&format!("127.0.0.1:{}", 10_000 + port))?;
        }
        assert_eq!(channels.lock().len(), PEER_CHANNELS_MAX);
        assert!(matches!(channels.client("not an address"), Err(PeerCallError::Address { .. })));
        Ok(())
    }
}
