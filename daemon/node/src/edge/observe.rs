//! [`EdgeLayer`]: what every RPC on the client port passes through first —
//! its request id, its span, its metrics.
//!
//! ```text
//!  HTTP/2 request ─► request id: the caller's `x-request-id` when it is a
//!                    short token, else `<node_id>-<n>`; set on the request
//!                    (handlers read it) and on the response
//!                 ─► span rpc{rpc.method, request_id, node_id, region} around the call,
//!                    a child of the caller's W3C `traceparent` when it sends one
//!                 ─► keel_rpc_duration_seconds{method} (histogram) and
//!                    keel_rpc_responses_total{method, code} when the response starts
//!                    (and the same as OTel `keel.rpc.duration` / `keel.rpc.responses`)
//!                 ─► InFlightLayer (load shedding) ─► router ─► handler
//! ```
//!
//! The code is the `grpc-status` the response starts with: a refusal
//! (trailers-only) carries it there; a response that starts well counts as
//! `OK` (a stream that fails later is not re-counted).

use crate::limits::REQUEST_ID_BYTES_MAX;
use opentelemetry::KeyValue;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// The request-id header, read from callers and set on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The RPC's method name (`CreateTenant`), put in the request's extensions
/// here for the handlers (audit records name it).
#[derive(Debug, Clone)]
pub struct RpcMethod(pub String);
/// Latency buckets: 0.25 ms doubling to ~8 s.
const DURATION_BUCKET_FIRST_S: f64 = 0.000_25;
const DURATION_BUCKETS: u16 = 16;

/// One RPC method.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// `/package.Service/Method`.
    pub method: String,
}

/// One RPC method and the gRPC status code it answered.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// `/package.Service/Method`.
    pub method: String,
    /// The gRPC code's name (`OK`, `UNAVAILABLE`, …).
    pub code: String,
}

/// One error reason (`keel.v1.ErrorReason`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The reason.
    pub reason: String,
}

/// Per-RPC metrics, shared by the layer and `/metrics`, and the same
/// measurements as OpenTelemetry instruments (exported over OTLP when
/// `[telemetry]` configures it; no-ops otherwise).
#[derive(Debug, Clone)]
pub struct RpcMetrics {
    /// Time to the response's start, per method.
    pub duration: Family<MethodLabels, Histogram>,
    /// Responses per method and code.
    pub responses: Family<CodeLabels, Counter>,
    /// Errors answered per reason (recorded where the status is built).
    pub errors: Family<ReasonLabels, Counter>,
    /// Good and total RPCs per class against their objectives.
    pub slo: super::slo::SloTracker,
    /// OTel `keel.rpc.duration` (s), attributes `rpc.method`.
    otel_duration: opentelemetry::metrics::Histogram<f64>,
    /// OTel `keel.rpc.responses`, attributes `rpc.method`, `rpc.response.status_code`.
    otel_responses: opentelemetry::metrics::Counter<u64>,
}

/// OTel name of the per-RPC latency histogram.
pub const OTEL_RPC_DURATION: &str = "keel.rpc.duration";
/// OTel name of the per-RPC response counter.
pub const OTEL_RPC_RESPONSES: &str = "keel.rpc.responses";

/// The latency bucket bounds, in seconds: 0.25 ms doubling.
fn duration_bounds_s() -> impl Iterator<Item = f64> {
    exponential_buckets(DURATION_BUCKET_FIRST_S, 2.0, DURATION_BUCKETS)
}

impl Default for RpcMetrics {
    /// Takes its OTel instruments from the global meter provider, so build it
    /// after `telemetry::init`.
    fn default() -> Self {
        let buckets = || Histogram::new(duration_bounds_s());
        let meter = opentelemetry::global::meter(crate::telemetry::INSTRUMENTATION_SCOPE);
        RpcMetrics {
            duration: Family::new_with_constructor(buckets as fn() -> Histogram),
            responses: Family::default(),
            errors: Family::default(),
            slo: super::slo::SloTracker::default(),
            otel_duration: meter
                .f64_histogram(OTEL_RPC_DURATION)
                .with_unit("s")
                .with_description("Time to the response's start, per RPC method")
                .with_boundaries(duration_bounds_s().collect())
                .build(),
            otel_responses: meter
                .u64_counter(OTEL_RPC_RESPONSES)
                .with_description("Responses per RPC method and gRPC code")
                .build(),
        }
    }
}

impl RpcMetrics {
    /// These metrics, judging RPCs against `slo`.
    pub fn with_slo(mut self, slo: &super::slo::SloConfig) -> RpcMetrics {
        self.slo = super::slo::SloTracker::new(slo);
        self
    }

    /// Records one RPC: its latency and the code it answered.
    pub fn record(&self, method: &str, code: &str, elapsed: Duration) {
        self.slo.record(method, code, elapsed, Instant::now());
        let elapsed_s = elapsed.as_secs_f64();
        self.duration.get_or_create(&MethodLabels { method: method.to_owned() }).observe(elapsed_s);
        self.responses.get_or_create(&CodeLabels { method: method.to_owned(), code: code.to_owned() }).inc();
        let method = KeyValue::new("rpc.method", method.to_owned());
        self.otel_duration.record(elapsed_s, std::slice::from_ref(&method));
        self.otel_responses.add(1, &[method, KeyValue::new("rpc.response.status_code", code.to_owned())]);
    }
}

/// The edge of the client port: request id, span, metrics.
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    metrics: RpcMetrics,
    node_id: u64,
    region: Arc<str>,
    next_id: Arc<AtomicU64>,
}

impl EdgeLayer {
    /// The edge of node `node_id` in `region`, recording into `metrics`.
    pub fn new(metrics: RpcMetrics, node_id: u64, region: &str) -> EdgeLayer {
        EdgeLayer { metrics, node_id, region: Arc::from(region), next_id: Arc::default() }
    }

    /// The caller's id when it is a short token, else a fresh one.
    fn request_id(&self, headers: &http::HeaderMap) -> String {
        let given = headers.get(REQUEST_ID_HEADER).and_then(|value| value.to_str().ok()).filter(|value| {
            !value.is_empty()
                && value.len() <= REQUEST_ID_BYTES_MAX
                && value.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(&byte))
        });
        match given {
            Some(id) => id.to_owned(),
            None => format!("{}-{}", self.node_id, self.next_id.fetch_add(1, Ordering::Relaxed)),
        }
    }
}

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge { inner, layer: self.clone() }
    }
}

/// The service [`EdgeLayer`] wraps.
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    layer: EdgeLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B, R> tower::Service<http::Request<B>> for Edge<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        request.extensions_mut().insert(RpcMethod(method.rsplit('/').next().unwrap_or_default().to_owned()));
        let request_id = self.layer.request_id(request.headers());
        let header = http::HeaderValue::from_str(&request_id).ok();
        if let Some(header) = &header {
            request.headers_mut().insert(REQUEST_ID_HEADER, header.clone());
        }
        let span = tracing::info_span!(
            "rpc",
            rpc.method = %method,
            request_id = %request_id,
            node_id = self.layer.node_id,
            region = %self.layer.region,
        );
        crate::telemetry::set_parent_from_headers(&span, request.headers());
        let response = span.in_scope(|| self.inner.call(request));
        let metrics = self.layer.metrics.clone();
        let started = Instant::now();
        Box::pin(
            async move {
                let mut response = response.await;
                let elapsed = started.elapsed();
                let code = match &mut response {
                    Ok(response) => {
                        if let Some(header) = header {
                            response.headers_mut().insert(REQUEST_ID_HEADER, header);
                        }
                        code_name(response.headers())
                    }
                    Err(_) => "TRANSPORT_ERROR",
                };
                metrics.record(&method, code, elapsed);
                response
            }
            .instrument(span),
        )
    }
}

/// The gRPC code a response starts with (`OK` when it carries none yet).
fn code_name(headers: &http::HeaderMap) -> &'static str {
    let code = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .unwrap_or(0);
    match tonic::Code::from_i32(code) {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_request_id_is_kept_only_when_it_is_a_short_token() {
        let edge = EdgeLayer::new(RpcMetrics::default(), 7, "eu-west");
        let mut headers = http::HeaderMap::new();
        assert_eq!(edge.request_id(&headers), "7-0");
        headers.insert(REQUEST_ID_HEADER, http::HeaderValue::from_static("abc-123"));
        assert_eq!(edge.request_id(&headers), "abc-123");
        headers.insert(REQUEST_ID_HEADER, http::HeaderValue::from_static("has space"));
        assert_eq!(edge.request_id(&headers), "7-1");
        let long = "a".repeat(REQUEST_ID_BYTES_MAX + 1);
        headers.insert(
            REQUEST_ID_HEADER,
            http::HeaderValue::from_str(&long).unwrap_or(http::HeaderValue::from_static("")),
        );
        assert_eq!(edge.request_id(&headers), "7-2");
    }

    #[test]
    fn the_code_is_read_from_the_response_start() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(code_name(&headers), "OK");
        headers.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(code_name(&headers), "UNAVAILABLE");
    }
}
