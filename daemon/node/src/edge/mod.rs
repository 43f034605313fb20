//! The client port's edge: the tower layers every RPC passes through before
//! any handler, in this order.
//!
//! ```text
//!  HTTP/2 request
//!   ─► observe::EdgeLayer   request id, span rpc{..} (continuing a caller's traceparent),
//!                           RPC metrics + SLO accounting when the response starts
//!   ─► load_shed::InFlightLayer   in-flight bound: over it RESOURCE_EXHAUSTED at once
//!   ─► authn::AuthnLayer    the caller's token (cached verification), the RPC's permission
//!                           (permissions::RPCS) and cluster-wide scope; failures counted and
//!                           throttled per source; the principal as a request extension
//!   ─► tonic router (message size limits per service) ─► api/* handler
//!        (ApiContext::serve: the deadline from grpc-timeout, the read or the write, the status)
//! ```

pub mod authn;
pub mod load_shed;
pub mod observe;
pub mod permissions;
pub mod slo;

pub use observe::{EdgeLayer, RpcMetrics};

use authn::{Authenticator, AuthnLayer};
use load_shed::{InFlightLayer, ShedStats};
use std::sync::Arc;
use tower::layer::util::{Identity, Stack};

/// The edge's layers, outermost first.
pub type EdgeStack = Stack<AuthnLayer, Stack<InFlightLayer, Stack<EdgeLayer, Identity>>>;

/// The edge's layers, outermost first, for `tonic::transport::Server::layer`.
pub fn stack(
    metrics: RpcMetrics,
    node_id: u64,
    region: &str,
    in_flight_requests_max: usize,
    shed: Arc<ShedStats>,
    authenticator: Arc<Authenticator>,
) -> tower::ServiceBuilder<EdgeStack> {
    tower::ServiceBuilder::new()
        .layer(EdgeLayer::new(metrics, node_id, region))
        .layer(InFlightLayer::new(in_flight_requests_max, shed))
        .layer(AuthnLayer::new(authenticator))
}
