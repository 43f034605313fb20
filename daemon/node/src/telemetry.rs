//! Logs, traces and metrics: `tracing` to stderr as text or JSON, filtered
//! by `log.filter`; with `[telemetry] otlp_endpoint`, the same spans and the
//! OpenTelemetry metrics exported over OTLP/gRPC.
//!
//! ```text
//!  tracing spans/events ─► EnvFilter (log.filter / RUST_LOG)
//!                            ├─► fmt layer ─► stderr (text | json)
//!                            └─► tracing-opentelemetry ─► BatchSpanProcessor ─► OTLP SpanExporter ──┐
//!  opentelemetry::global::meter ─► SdkMeterProvider ─► PeriodicReader ─► OTLP MetricExporter ───────┤
//!                                                                                     collector ◄───┘
//! ```
//!
//! Both exporters talk tonic on the daemon's Tokio runtime (their channels
//! are created inside it), from the SDK's own threads. The resource names
//! the node: `service.name`, `service.instance.id` (the node id),
//! `keel.node.region`, `keel.node.zone`. Trace context crosses process
//! boundaries as W3C `traceparent` (see [`propagation`]). [`TelemetryGuard`]
//! flushes both pipelines when keeld stops.

mod config;
pub mod propagation;

/// The current span's W3C trace id (hex), empty when it is not traced.
pub fn current_trace_id() -> String {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    if span_context.is_valid() { span_context.trace_id().to_string() } else { String::new() }
}

pub use config::{
    CA_FILE_KEY, EXPORT_INTERVAL_MS_DEFAULT, EXPORT_INTERVAL_MS_KEY, EXPORT_INTERVAL_MS_RANGE, OTLP_ENDPOINT_BYTES_MAX,
    OTLP_ENDPOINT_KEY, OtlpEndpoint, SERVICE_NAME_BYTES_MAX, SERVICE_NAME_DEFAULT, SERVICE_NAME_KEY,
    TRACE_SAMPLE_RATIO_DEFAULT, TRACE_SAMPLE_RATIO_KEY, TRACE_SAMPLE_RATIO_RANGE, TelemetryConfig,
    TelemetryConfigError,
};
pub use propagation::{
    TRACEPARENT_HEADER, extract_context, extract_header_context, inject_context, inject_span_context,
    set_parent_from_headers, set_parent_from_metadata,
};

use crate::config::{LogConfig, LogFormat, NodeConfig};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Finished spans held for export; beyond it new spans are dropped (counted
/// by the SDK), never blocking a request.
pub const SPAN_QUEUE_LENGTH_MAX: usize = 2_048;
/// Spans sent in one OTLP request.
pub const SPAN_EXPORT_BATCH_LENGTH_MAX: usize = 512;
/// Longest one OTLP export request may take.
pub const OTLP_EXPORT_TIMEOUT_MS: u64 = 10_000;
/// Longest the final flush at shutdown may take, per pipeline.
pub const SHUTDOWN_FLUSH_TIMEOUT_MS: u64 = 5_000;
/// Bytes read from `telemetry.ca_file` before it is refused.
pub const CA_FILE_BYTES_MAX: u64 = crate::tls::CA_FILE_BYTES_MAX;
/// The instrumentation scope of keeld's tracer and meter.
pub const INSTRUMENTATION_SCOPE: &str = "keeld";
/// Span and event targets that never go to OTLP: the exporter's own
/// transport, whose spans would otherwise be exported by the export itself.
const EXPORT_TRANSPORT_TARGETS: &[&str] = &["h2", "hyper", "tonic", "tower", "opentelemetry"];

const _: () = assert!(SPAN_EXPORT_BATCH_LENGTH_MAX <= SPAN_QUEUE_LENGTH_MAX);

/// Why telemetry could not start. Each names the key at fault, when there is one.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `log.filter` (or `RUST_LOG`) is not an `EnvFilter` directive.
    #[error("configuration key `log.filter`: {0}")]
    LogFilter(#[from] tracing_subscriber::filter::ParseError),
    /// A global subscriber was already installed.
    #[error("installing the log subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
    /// A `[telemetry]` value is wrong.
    #[error(transparent)]
    Config(#[from] TelemetryConfigError),
    /// `telemetry.ca_file` could not be read.
    #[error("configuration key `telemetry.ca_file`: reading {path}: {source}")]
    CaFileRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `telemetry.ca_file` is larger than [`CA_FILE_BYTES_MAX`].
    #[error("configuration key `telemetry.ca_file`: {path} is larger than {bytes_max} bytes")]
    CaFileTooLarge {
        /// The file.
        path: PathBuf,
        /// [`CA_FILE_BYTES_MAX`].
        bytes_max: u64,
    },
    /// `telemetry.ca_file` holds no PEM certificate.
    #[error("configuration key `telemetry.ca_file`: {path} holds no PEM certificate")]
    CaFileNoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// An OTLP exporter could not be built.
    #[error("configuration key `telemetry.otlp_endpoint`: building the OTLP {signal} exporter: {source}")]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The SDK's reason.
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Keeps the OTLP pipelines alive; [`TelemetryGuard::shutdown`] (or drop)
/// flushes what is buffered. Without an endpoint it holds nothing.
#[derive(Debug, Default)]
#[must_use = "dropping the guard stops the OTLP export"]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl TelemetryGuard {
    /// Whether traces and metrics are exported.
    pub fn is_exporting(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Sends what is buffered and stops both pipelines. Call it while the
    /// Tokio runtime the exporters were built in is still running.
    pub fn shutdown(mut self) {
        self.shutdown_providers();
    }

    fn shutdown_providers(&mut self) {
        let timeout = Duration::from_millis(SHUTDOWN_FLUSH_TIMEOUT_MS);
        if let Some(provider) = self.tracer_provider.take()
            && let Err(error) = provider.shutdown_with_timeout(timeout)
        {
            eprintln!("keeld: flushing traces: {error}");
        }
        if let Some(provider) = self.meter_provider.take()
            && let Err(error) = provider.shutdown_with_timeout(timeout)
        {
            eprintln!("keeld: flushing metrics: {error}");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown_providers();
    }
}

/// Installs the global subscriber and, when `telemetry.otlp_endpoint` is
/// set, the OTLP trace and metric pipelines for node `node`. `RUST_LOG`,
/// when set, overrides `log.filter`. With an endpoint it must run inside a
/// Tokio runtime (the exporters' channels are spawned on it).
pub fn init(log: &LogConfig, telemetry: &TelemetryConfig, node: &NodeConfig) -> Result<TelemetryGuard, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directive) if !directive.is_empty() => EnvFilter::try_new(directive),
        _ => EnvFilter::try_new(&log.filter),
    }?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match log.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let mut guard = TelemetryGuard::default();
    let otel = match telemetry.endpoint()? {
        None => None,
        Some(endpoint) => {
            let tls = client_tls(telemetry)?;
            let resource = resource(telemetry, node);
            let tracer_provider = tracer_provider(telemetry, &endpoint, tls.clone(), resource.clone())?;
            let meter_provider = meter_provider(telemetry, &endpoint, tls, resource)?;
            opentelemetry::global::set_meter_provider(meter_provider.clone());
            let tracer = tracer_provider.tracer(INSTRUMENTATION_SCOPE);
            guard = TelemetryGuard { tracer_provider: Some(tracer_provider), meter_provider: Some(meter_provider) };
            let not_export_transport = tracing_subscriber::filter::filter_fn(|metadata| {
                let target = metadata.target();
                !EXPORT_TRANSPORT_TARGETS.iter().any(|prefix| {
                    target.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
                })
            });
            Some(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(not_export_transport))
        }
    };
    tracing_subscriber::registry().with(fmt).with(otel).with(filter).try_init()?;
    Ok(guard)
}

/// The resource every span and metric of this node carries.
fn resource(telemetry: &TelemetryConfig, node: &NodeConfig) -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder()
        .with_service_name(telemetry.service_name.clone())
        .with_attributes([
            KeyValue::new("service.instance.id", node.id.to_string()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("keel.node.region", node.region.clone()),
            KeyValue::new("keel.node.zone", node.zone.clone()),
        ])
        .build()
}

fn tracer_provider(
    telemetry: &TelemetryConfig,
    endpoint: &OtlpEndpoint,
    tls: Option<tonic::transport::ClientTlsConfig>,
    resource: opentelemetry_sdk::Resource,
) -> Result<SdkTracerProvider, TelemetryError> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.uri.clone())
        .with_timeout(Duration::from_millis(OTLP_EXPORT_TIMEOUT_MS));
    if let Some(tls) = tls {
        builder = builder.with_tls_config(tls);
    }
    let exporter = builder.build().map_err(|source| TelemetryError::Exporter { signal: "traces", source })?;
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(SPAN_QUEUE_LENGTH_MAX)
        .with_max_export_batch_size(SPAN_EXPORT_BATCH_LENGTH_MAX)
        .with_scheduled_delay(Duration::from_millis(telemetry.export_interval_ms))
        .build();
    let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(telemetry.trace_sample_ratio))))
        .with_resource(resource)
        .build())
}

fn meter_provider(
    telemetry: &TelemetryConfig,
    endpoint: &OtlpEndpoint,
    tls: Option<tonic::transport::ClientTlsConfig>,
    resource: opentelemetry_sdk::Resource,
) -> Result<SdkMeterProvider, TelemetryError> {
    let mut builder = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.uri.clone())
        .with_timeout(Duration::from_millis(OTLP_EXPORT_TIMEOUT_MS));
    if let Some(tls) = tls {
        builder = builder.with_tls_config(tls);
    }
    let exporter = builder.build().map_err(|source| TelemetryError::Exporter { signal: "metrics", source })?;
    let reader =
        PeriodicReader::builder(exporter).with_interval(Duration::from_millis(telemetry.export_interval_ms)).build();
    Ok(SdkMeterProvider::builder().with_reader(reader).with_resource(resource).build())
}

/// TLS towards an `https://` collector: trust `telemetry.ca_file` only.
fn client_tls(telemetry: &TelemetryConfig) -> Result<Option<tonic::transport::ClientTlsConfig>, TelemetryError> {
    let Some(path) = &telemetry.ca_file else {
        return Ok(None);
    };
    let pem = read_ca_file(path)?;
    Ok(Some(tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem))))
}

fn read_ca_file(path: &Path) -> Result<Vec<u8>, TelemetryError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let read_error = |source| TelemetryError::CaFileRead { path: path.to_owned(), source };
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .map_err(read_error)?
        .take(CA_FILE_BYTES_MAX + 1)
        .read_to_end(&mut pem)
        .map_err(read_error)?;
    if pem.len() as u64 > CA_FILE_BYTES_MAX {
        return Err(TelemetryError::CaFileTooLarge { path: path.to_owned(), bytes_max: CA_FILE_BYTES_MAX });
    }
    if !CertificateDer::pem_slice_iter(&pem).any(|certificate| certificate.is_ok()) {
        return Err(TelemetryError::CaFileNoCertificate { path: path.to_owned() });
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_a_certificate_within_its_bound() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.pem");
        assert!(matches!(read_ca_file(&missing), Err(TelemetryError::CaFileRead { .. })));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem").expect("write");
        assert!(matches!(read_ca_file(&empty), Err(TelemetryError::CaFileNoCertificate { .. })));
        let large = dir.path().join("large.pem");
        std::fs::write(&large, vec![b'a'; usize::try_from(CA_FILE_BYTES_MAX).expect("small") + 1]).expect("write");
        assert!(matches!(read_ca_file(&large), Err(TelemetryError::CaFileTooLarge { .. })));
        let certified = rcgen::generate_simple_self_signed(vec!["collector".to_owned()]).expect("certificate");
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, certified.cert.pem()).expect("write");
        assert!(read_ca_file(&good).is_ok());
    }

    #[test]
    fn the_resource_names_the_node() {
        let node = NodeConfig {
            id: 7,
            id_from_name: None,
            region: "eu-west".into(),
            zone: "eu-west-a".into(),
            clock_offset_ms: 0,
        };
        let resource = resource(&TelemetryConfig::default(), &node);
        let get = |key: &'static str| resource.get(&opentelemetry::Key::from_static_str(key)).map(|v| v.to_string());
        assert_eq!(get("service.name").as_deref(), Some(SERVICE_NAME_DEFAULT));
        assert_eq!(get("service.instance.id").as_deref(), Some("7"));
        assert_eq!(get("keel.node.region").as_deref(), Some("eu-west"));
        assert_eq!(get("keel.node.zone").as_deref(), Some("eu-west-a"));
    }
}
