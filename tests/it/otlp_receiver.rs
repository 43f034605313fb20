//! A real OTLP/gRPC receiver for tests: `opentelemetry-proto`'s generated
//! `TraceService` and `MetricsService` servers on an OS-assigned loopback
//! port, keeping every span and metric data point it is sent, flattened with
//! its resource so tests can ask "which node sent this span?".
//!
//! ```text
//!  keeld ─OTLP/gRPC─► TraceServiceServer / MetricsServiceServer ─► Received (Mutex) ─► wait_for(predicate, deadline)
//!                                                   └─ watch::Sender<u64> bumped per export: waiters wake, no polling sleeps
//! ```

use anyhow::{Result, bail};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Attributes as strings, by key.
pub type Attributes = BTreeMap<String, String>;

/// One span as received.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// Resource attributes of the process that sent it.
    pub resource: Attributes,
    /// Span name.
    pub name: String,
    /// Lowercase hex, 32 characters.
    pub trace_id: String,
    /// Lowercase hex, 16 characters.
    pub span_id: String,
    /// Lowercase hex; empty for a root span.
    pub parent_span_id: String,
    /// Span attributes.
    pub attributes: Attributes,
}

impl ReceivedSpan {
    /// The sender's `service.instance.id` (keeld: its node id).
    pub fn instance_id(&self) -> Option<&str> {
        self.resource.get("service.instance.id").map(String::as_str)
    }

    /// An attribute of the span.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// Which kind of data a metric carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Explicit-bucket histogram.
    Histogram,
    /// Counter or up-down counter.
    Sum,
    /// Gauge.
    Gauge,
    /// Anything else (exponential histogram, summary).
    Other,
}

/// One metric data point as received.
#[derive(Debug, Clone)]
pub struct ReceivedPoint {
    /// Resource attributes of the process that sent it.
    pub resource: Attributes,
    /// Metric name.
    pub name: String,
    /// Its kind.
    pub kind: MetricKind,
    /// The data point's attributes.
    pub attributes: Attributes,
    /// Histogram: observations; sum: the integer value (0 otherwise).
    pub count: u64,
}

#[derive(Debug, Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    points: Vec<ReceivedPoint>,
}

/// Received data is kept up to this many spans and points each; a test
/// sends far fewer, and a runaway sender cannot exhaust the test's memory.
const RECEIVED_ITEMS_MAX: usize = 100_000;

#[derive(Debug, Clone)]
struct Sink {
    received: Arc<Mutex<Received>>,
    exports: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Sink {
    fn keep(&self, keep: impl FnOnce(&mut Received)) {
        if let Ok(mut received) = self.received.lock() {
            keep(&mut received);
            received.spans.truncate(RECEIVED_ITEMS_MAX);
            received.points.truncate(RECEIVED_ITEMS_MAX);
        }
        self.exports.send_modify(|n| *n += 1);
    }
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    sink: Sink,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl OtlpReceiver {
    /// Serves on `127.0.0.1:<any free port>`.
    pub async fn start() -> Result<OtlpReceiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (exports, _) = tokio::sync::watch::channel(0);
        let sink = Sink { received: Arc::default(), exports: Arc::new(exports) };
        let router = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink.clone()))
            .add_service(MetricsServiceServer::new(sink.clone()));
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = tokio::spawn(async move {
            if let Err(error) = router.serve_with_incoming(incoming).await {
                eprintln!("OTLP receiver stopped: {error}");
            }
        });
        Ok(OtlpReceiver { addr, sink, server })
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`, for `telemetry.otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.sink.received.lock().map(|received| received.spans.clone()).unwrap_or_default()
    }

    /// Every metric data point received so far.
    pub fn points(&self) -> Vec<ReceivedPoint> {
        self.sink.received.lock().map(|received| received.points.clone()).unwrap_or_default()
    }

    /// The first span matching `matches`, waiting for exports until `timeout`.
    pub async fn span(&self, timeout: Duration, matches: impl Fn(&ReceivedSpan) -> bool) -> Result<ReceivedSpan> {
        self.wait_for(timeout, || self.spans().into_iter().find(|span| matches(span)))
            .await
            .map_err(|error| anyhow::anyhow!("{error}; spans received: {:#?}", self.spans()))
    }

    /// The first metric data point matching `matches`, waiting for exports until `timeout`.
    pub async fn point(&self, timeout: Duration, matches: impl Fn(&ReceivedPoint) -> bool) -> Result<ReceivedPoint> {
        self.wait_for(timeout, || self.points().into_iter().find(|point| matches(point)))
            .await
            .map_err(|error| anyhow::anyhow!("{error}; metric points received: {:#?}", self.points()))
    }

    /// `found()` once it is `Some`, re-checked after every export received.
    async fn wait_for<T>(&self, timeout: Duration, found: impl Fn() -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let mut exports = self.sink.exports.subscribe();
        loop {
            exports.mark_unchanged();
            if let Some(value) = found() {
                return Ok(value);
            }
            match tokio::time::timeout_at(deadline, exports.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("the OTLP receiver stopped"),
                Err(_) => bail!("nothing matching was exported within {timeout:?}"),
            }
        }
    }
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = attributes(resource_spans.resource.map(|r| r.attributes).unwrap_or_default());
            for span in resource_spans.scope_spans.into_iter().flat_map(|scope| scope.spans) {
                spans.push(ReceivedSpan {
                    resource: resource.clone(),
                    name: span.name,
                    trace_id: hex::encode(span.trace_id),
                    span_id: hex::encode(span.span_id),
                    parent_span_id: hex::encode(span.parent_span_id),
                    attributes: attributes(span.attributes),
                });
            }
        }
        self.keep(|received| received.spans.extend(spans));
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut points = Vec::new();
        for resource_metrics in request.into_inner().resource_metrics {
            let resource = attributes(resource_metrics.resource.map(|r| r.attributes).unwrap_or_default());
            for metric in resource_metrics.scope_metrics.into_iter().flat_map(|scope| scope.metrics) {
                let point = |kind, attributes, count| ReceivedPoint {
                    resource: resource.clone(),
                    name: metric.name.clone(),
                    kind,
                    attributes,
                    count,
                };
                match metric.data {
                    Some(Data::Histogram(histogram)) => points.extend(
                        histogram
                            .data_points
                            .into_iter()
                            .map(|p| point(MetricKind::Histogram, attributes(p.attributes), p.count)),
                    ),
                    Some(Data::Sum(sum)) => points.extend(sum.data_points.into_iter().map(|p| {
                        let value = match p.value {
                            Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(n)) => {
                                u64::try_from(n).unwrap_or(0)
                            }
                            _ => 0,
                        };
                        point(MetricKind::Sum, attributes(p.attributes), value)
                    })),
                    Some(Data::Gauge(gauge)) => points.extend(
                        gauge.data_points.into_iter().map(|p| point(MetricKind::Gauge, attributes(p.attributes), 0)),
                    ),
                    _ => points.push(point(MetricKind::Other, Attributes::new(), 0)),
                }
            }
        }
        self.keep(|received| received.points.extend(points));
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

fn attributes(key_values: Vec<KeyValue>) -> Attributes {
    key_values.into_iter().map(|kv| (kv.key, kv.value.map(value_text).unwrap_or_default())).collect()
}

fn value_text(value: AnyValue) -> String {
    match value.value {
        Some(any_value::Value::StringValue(text)) => text,
        Some(any_value::Value::IntValue(n)) => n.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(x)) => x.to_string(),
        other => format!("{other:?}"),
    }
}
