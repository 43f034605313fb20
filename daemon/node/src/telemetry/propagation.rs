//! W3C trace context (`traceparent`, `tracestate`) across the hops of one
//! request: a caller → the client port's edge, and a follower → the leader
//! when a write or a read index is forwarded.
//!
//! ```text
//!  follower: span rpc ─► inject_context(request.metadata_mut()) ─► peer gRPC ─┐
//!  leader:   span (forward) ◄─ set_parent_from_metadata(&span, request.metadata()) ◄─┘
//! ```
//!
//! The propagator is W3C Trace Context, always (the same one `init` installs
//! globally); without OTLP export there is no OpenTelemetry layer, so
//! nothing is injected and setting a parent is a no-op.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Writes the current `tracing` span's trace context into outgoing gRPC
/// metadata (`traceparent`, and `tracestate` when there is one). Call it
/// inside the span whose child the receiver's span should be.
pub fn inject_context(metadata: &mut tonic::metadata::MetadataMap) {
    inject_span_context(&tracing::Span::current(), metadata);
}

/// Writes `span`'s trace context into outgoing gRPC metadata.
pub fn inject_span_context(span: &tracing::Span, metadata: &mut tonic::metadata::MetadataMap) {
    let context = span.context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderCarrier(metadata.as_mut()));
}

/// The trace context a caller sent in gRPC metadata (an empty context when
/// it sent none or an invalid one).
pub fn extract_context(metadata: &tonic::metadata::MetadataMap) -> opentelemetry::Context {
    extract_header_context(metadata.as_ref())
}

/// The trace context in HTTP/2 request headers.
pub fn extract_header_context(headers: &http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderReader(headers))
}

/// Makes `span` a child of the trace context in `metadata`, when it carries
/// one. Call it before `span` is first entered.
pub fn set_parent_from_metadata(span: &tracing::Span, metadata: &tonic::metadata::MetadataMap) {
    set_parent_from_headers(span, metadata.as_ref());
}

/// Makes `span` a child of the trace context in HTTP/2 request headers, when
/// they carry one. Call it before `span` is first entered.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    if !headers.contains_key(TRACEPARENT_HEADER) {
        return;
    }
    let parent = extract_header_context(headers);
    // Refused only when the span has no OpenTelemetry data (no layer) or has
    // already started; the span then keeps its own trace.
    let _ = span.set_parent(parent);
}

/// The W3C header that carries trace id, parent span id and flags.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Writes trace context into HTTP/2 headers (gRPC metadata is headers).
struct HeaderCarrier<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        // W3C values are ASCII tokens; one that is not is dropped, not sent mangled.
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}

/// Reads trace context from HTTP/2 headers.
struct HeaderReader<'a>(&'a http::HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use tracing_subscriber::layer::SubscriberExt;

    /// Runs `check` under a subscriber with an OpenTelemetry layer (no exporter).
    fn with_otel_layer(check: impl FnOnce()) {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, check);
    }

    fn trace_id_of(span: &tracing::Span) -> opentelemetry::trace::TraceId {
        span.context().span().span_context().trace_id()
    }

    #[test]
    fn a_span_context_survives_metadata_and_parents_the_receiver_span() {
        with_otel_layer(|| {
            let sender = tracing::info_span!("sender");
            let mut metadata = tonic::metadata::MetadataMap::new();
            sender.in_scope(|| inject_context(&mut metadata));
            let sent_trace_id = trace_id_of(&sender);
            assert_ne!(sent_trace_id, opentelemetry::trace::TraceId::INVALID);

            let traceparent = metadata.get(TRACEPARENT_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let sender_span_id = sender.context().span().span_context().span_id();
            assert_eq!(traceparent, format!("00-{sent_trace_id}-{sender_span_id}-01"));

            let extracted = extract_context(&metadata);
            assert_eq!(extracted.span().span_context().trace_id(), sent_trace_id);
            assert!(extracted.span().span_context().is_remote());

            let receiver = tracing::info_span!("receiver");
            set_parent_from_metadata(&receiver, &metadata);
            assert_eq!(trace_id_of(&receiver), sent_trace_id);
            assert_ne!(receiver.context().span().span_context().span_id(), sender_span_id);
        });
    }

    #[test]
    fn without_a_traceparent_a_span_starts_its_own_trace() {
        with_otel_layer(|| {
            let mut headers = http::HeaderMap::new();
            headers.insert(TRACEPARENT_HEADER, http::HeaderValue::from_static("not-a-traceparent"));
            assert!(!extract_header_context(&headers).span().span_context().is_valid());
            let first = tracing::info_span!("first");
            set_parent_from_headers(&first, &headers);
            let second = tracing::info_span!("second");
            set_parent_from_headers(&second, &http::HeaderMap::new());
            assert_ne!(trace_id_of(&first), trace_id_of(&second));
            assert_ne!(trace_id_of(&first), opentelemetry::trace::TraceId::INVALID);
        });
    }

    #[test]
    fn without_the_layer_nothing_is_injected() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        tracing::info_span!("no layer").in_scope(|| inject_context(&mut metadata));
        assert!(metadata.is_empty());
    }
}
