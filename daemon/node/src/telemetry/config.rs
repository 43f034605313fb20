//! `TelemetryConfig`: the `[telemetry]` table — where traces and metrics go
//! over OTLP/gRPC, under which service name, how often and how many traces.
//!
//! ```toml
//! [telemetry]
//! otlp_endpoint = "http://127.0.0.1:4317"   # unset: no export (logs only)
//! service_name = "keeld"
//! export_interval_ms = 10000
//! trace_sample_ratio = 1.0
//! ```
//!
//! Plaintext stays on loopback like every other plaintext port of keeld: an
//! `http://` endpoint off loopback needs `plaintext_off_loopback = true`; an
//! `https://` endpoint is verified against `ca_file` (keeld links no system
//! trust store).

use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;
use std::path::PathBuf;

/// Configuration key of [`TelemetryConfig::otlp_endpoint`], as errors name it.
pub const OTLP_ENDPOINT_KEY: &str = "telemetry.otlp_endpoint";
/// Configuration key of [`TelemetryConfig::service_name`].
pub const SERVICE_NAME_KEY: &str = "telemetry.service_name";
/// Configuration key of [`TelemetryConfig::export_interval_ms`].
pub const EXPORT_INTERVAL_MS_KEY: &str = "telemetry.export_interval_ms";
/// Configuration key of [`TelemetryConfig::trace_sample_ratio`].
pub const TRACE_SAMPLE_RATIO_KEY: &str = "telemetry.trace_sample_ratio";
/// Configuration key of [`TelemetryConfig::ca_file`].
pub const CA_FILE_KEY: &str = "telemetry.ca_file";

/// Default of `telemetry.service_name` (OTel's `service.name`).
pub const SERVICE_NAME_DEFAULT: &str = "keeld";
/// Longest `telemetry.service_name`.
pub const SERVICE_NAME_BYTES_MAX: usize = 128;
/// Longest `telemetry.otlp_endpoint`.
pub const OTLP_ENDPOINT_BYTES_MAX: usize = 1024;
/// Default of `telemetry.export_interval_ms`.
pub const EXPORT_INTERVAL_MS_DEFAULT: u64 = 10_000;
/// Bounds of `telemetry.export_interval_ms`: how often the metrics are read
/// and sent, and the most a finished span waits in its batch.
pub const EXPORT_INTERVAL_MS_RANGE: RangeInclusive<u64> = 100..=600_000;
/// Default of `telemetry.trace_sample_ratio`: every trace that starts here.
pub const TRACE_SAMPLE_RATIO_DEFAULT: f64 = 1.0;
/// Bounds of `telemetry.trace_sample_ratio`.
pub const TRACE_SAMPLE_RATIO_RANGE: RangeInclusive<f64> = 0.0..=1.0;

const _: () = assert!(*EXPORT_INTERVAL_MS_RANGE.start() <= EXPORT_INTERVAL_MS_DEFAULT);
const _: () = assert!(EXPORT_INTERVAL_MS_DEFAULT <= *EXPORT_INTERVAL_MS_RANGE.end());

/// OpenTelemetry export, the `[telemetry]` table of the node configuration.
/// Every key has a default; without `otlp_endpoint` nothing is exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The OTLP/gRPC collector, `http://host:port` or `https://host:port`.
    /// Unset: no traces or metrics leave the node.
    pub otlp_endpoint: Option<String>,
    /// OTel `service.name` of this node's traces and metrics.
    pub service_name: String,
    /// How often metrics are sent, and the longest a finished span waits
    /// before its batch is sent. Within [`EXPORT_INTERVAL_MS_RANGE`].
    pub export_interval_ms: u64,
    /// Share of the traces starting on this node that are recorded, 0.0..=1.0.
    /// A trace continued from a caller's or peer's `traceparent` follows the
    /// caller's decision.
    pub trace_sample_ratio: f64,
    /// Allows an `http://` endpoint off loopback (telemetry in plaintext
    /// across the network). Off by default, like every plaintext port.
    pub plaintext_off_loopback: bool,
    /// The CA (PEM) an `https://` endpoint's certificate must chain to.
    /// Required with `https://`.
    pub ca_file: Option<PathBuf>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: SERVICE_NAME_DEFAULT.to_owned(),
            export_interval_ms: EXPORT_INTERVAL_MS_DEFAULT,
            trace_sample_ratio: TRACE_SAMPLE_RATIO_DEFAULT,
            plaintext_off_loopback: false,
            ca_file: None,
        }
    }
}

/// A `[telemetry]` value that is present but wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration key `{key}`: {problem}")]
pub struct TelemetryConfigError {
    /// Dotted key, e.g. `telemetry.otlp_endpoint`.
    pub key: &'static str,
    /// What is wrong.
    pub problem: String,
}

fn invalid(key: &'static str, problem: impl Into<String>) -> TelemetryConfigError {
    TelemetryConfigError { key, problem: problem.into() }
}

/// The parts of a checked `telemetry.otlp_endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint {
    /// The endpoint as configured (`scheme://authority`).
    pub uri: String,
    /// Whether it is `https://`.
    pub is_https: bool,
}

impl TelemetryConfig {
    /// Checks every key; errors name the key.
    pub fn validate(&self) -> Result<(), TelemetryConfigError> {
        if self.service_name.is_empty()
            || self.service_name.len() > SERVICE_NAME_BYTES_MAX
            || !self.service_name.bytes().all(|byte| byte.is_ascii_graphic())
        {
            return Err(invalid(
                SERVICE_NAME_KEY,
                format!("must be 1 to {SERVICE_NAME_BYTES_MAX} printable ASCII characters without spaces"),
            ));
        }
        if !EXPORT_INTERVAL_MS_RANGE.contains(&self.export_interval_ms) {
            return Err(invalid(EXPORT_INTERVAL_MS_KEY, format!("must be within {EXPORT_INTERVAL_MS_RANGE:?}")));
        }
        // `contains` is false for NaN, so NaN is refused too.
        if !TRACE_SAMPLE_RATIO_RANGE.contains(&self.trace_sample_ratio) {
            return Err(invalid(TRACE_SAMPLE_RATIO_KEY, format!("must be within {TRACE_SAMPLE_RATIO_RANGE:?}")));
        }
        let endpoint = self.endpoint()?;
        if self.ca_file.as_ref().is_some_and(|file| file.as_os_str().is_empty()) {
            return Err(invalid(CA_FILE_KEY, "must not be empty"));
        }
        match endpoint {
            Some(endpoint) if endpoint.is_https && self.ca_file.is_none() => Err(invalid(
                CA_FILE_KEY,
                "an https:// endpoint needs the CA its certificate chains to (keeld has no system trust store)",
            )),
            Some(endpoint) if !endpoint.is_https && self.ca_file.is_some() => {
                Err(invalid(CA_FILE_KEY, "is for an https:// endpoint; the endpoint is http://"))
            }
            None if self.ca_file.is_some() => Err(invalid(CA_FILE_KEY, "is set but telemetry.otlp_endpoint is not")),
            _ => Ok(()),
        }
    }

    /// The checked endpoint, or `None` when export is off. An endpoint is
    /// `http://` or `https://`, a host and a port, no path, query or user
    /// info; `http://` only on loopback unless `plaintext_off_loopback`.
    pub fn endpoint(&self) -> Result<Option<OtlpEndpoint>, TelemetryConfigError> {
        let Some(endpoint) = &self.otlp_endpoint else {
            return Ok(None);
        };
        if endpoint.len() > OTLP_ENDPOINT_BYTES_MAX {
            return Err(invalid(OTLP_ENDPOINT_KEY, format!("longer than {OTLP_ENDPOINT_BYTES_MAX} bytes")));
        }
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|error| invalid(OTLP_ENDPOINT_KEY, format!("{endpoint:?} is not a URL: {error}")))?;
        let is_https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(invalid(
                    OTLP_ENDPOINT_KEY,
                    format!("{endpoint:?} must start with http:// or https:// (e.g. http://127.0.0.1:4317)"),
                ));
            }
        };
        let Some(authority) = uri.authority() else {
            return Err(invalid(OTLP_ENDPOINT_KEY, format!("{endpoint:?} names no host")));
        };
        if authority.as_str().contains('@') {
            return Err(invalid(OTLP_ENDPOINT_KEY, format!("{endpoint:?}: user info is not allowed")));
        }
        if authority.port_u16().is_none() {
            return Err(invalid(OTLP_ENDPOINT_KEY, format!("{endpoint:?} names no port (OTLP/gRPC is usually 4317)")));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid(OTLP_ENDPOINT_KEY, format!("{endpoint:?}: OTLP/gRPC takes no path or query")));
        }
        if !is_https && !self.plaintext_off_loopback && !is_loopback_host(authority.host()) {
            return Err(invalid(
                OTLP_ENDPOINT_KEY,
                format!(
                    "{endpoint:?} is plaintext off loopback; use https:// (with telemetry.ca_file) or set \
                     telemetry.plaintext_off_loopback = true"
                ),
            ));
        }
        Ok(Some(OtlpEndpoint { uri: format!("{}://{authority}", uri.scheme_str().unwrap_or("http")), is_https }))
    }
}

/// Whether `host` (as in a URL: IPv6 in brackets) is a loopback address or `localhost`.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_endpoint(endpoint: &str) -> TelemetryConfig {
        TelemetryConfig { otlp_endpoint: Some(endpoint.to_owned()), ..TelemetryConfig::default() }
    }

    fn key_of(config: &TelemetryConfig) -> Option<&'static str> {
        config.validate().err().map(|error| error.key)
    }

    #[test]
    fn the_defaults_export_nothing_and_pass() {
        let config = TelemetryConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.endpoint(), Ok(None));
    }

    #[test]
    fn endpoints_are_http_or_https_with_a_host_and_port_only() {
        for good in ["http://127.0.0.1:4317", "http://localhost:4317/", "http://[::1]:4317"] {
            assert_eq!(key_of(&with_endpoint(good)), None, "{good}");
        }
        let endpoint = with_endpoint("http://127.0.0.1:4317/").endpoint();
        assert_eq!(endpoint, Ok(Some(OtlpEndpoint { uri: "http://127.0.0.1:4317".into(), is_https: false })));
        for bad in [
            "127.0.0.1:4317",
            "grpc://127.0.0.1:4317",
            "http://127.0.0.1",
            "http://127.0.0.1:4317/v1/traces",
            "http://user@127.0.0.1:4317",
            "not a url",
            "",
        ] {
            assert_eq!(key_of(&with_endpoint(bad)), Some(OTLP_ENDPOINT_KEY), "{bad}");
        }
        let long = format!("http://{}:4317", "a".repeat(OTLP_ENDPOINT_BYTES_MAX));
        assert_eq!(key_of(&with_endpoint(&long)), Some(OTLP_ENDPOINT_KEY));
    }

    #[test]
    fn plaintext_stays_on_loopback_unless_opted_in_and_https_needs_a_ca() {
        let remote = with_endpoint("http://collector.example.com:4317");
        assert_eq!(key_of(&remote), Some(OTLP_ENDPOINT_KEY));
        assert_eq!(key_of(&TelemetryConfig { plaintext_off_loopback: true, ..remote }), None);

        let https = with_endpoint("https://collector.example.com:4317");
        assert_eq!(key_of(&https), Some(CA_FILE_KEY));
        let with_ca = TelemetryConfig { ca_file: Some("ca.pem".into()), ..https };
        assert_eq!(key_of(&with_ca), None);
        let ca_without_https = TelemetryConfig { ca_file: Some("ca.pem".into()), ..with_endpoint("http://[::1]:4317") };
        assert_eq!(key_of(&ca_without_https), Some(CA_FILE_KEY));
    }

    #[test]
    fn bounds_name_their_key() {
        let config = TelemetryConfig::default();
        let cases = [
            (
                TelemetryConfig { export_interval_ms: *EXPORT_INTERVAL_MS_RANGE.start() - 1, ..config.clone() },
                EXPORT_INTERVAL_MS_KEY,
            ),
            (
                TelemetryConfig { export_interval_ms: *EXPORT_INTERVAL_MS_RANGE.end() + 1, ..config.clone() },
                EXPORT_INTERVAL_MS_KEY,
            ),
            (TelemetryConfig { trace_sample_ratio: 1.5, ..config.clone() }, TRACE_SAMPLE_RATIO_KEY),
            (TelemetryConfig { trace_sample_ratio: f64::NAN, ..config.clone() }, TRACE_SAMPLE_RATIO_KEY),
            (TelemetryConfig { service_name: String::new(), ..config.clone() }, SERVICE_NAME_KEY),
            (TelemetryConfig { service_name: "has space".into(), ..config.clone() }, SERVICE_NAME_KEY),
            (
                TelemetryConfig { service_name: "x".repeat(SERVICE_NAME_BYTES_MAX + 1), ..config.clone() },
                SERVICE_NAME_KEY,
            ),
        ];
        for (config, key) in cases {
            assert_eq!(key_of(&config), Some(key), "{config:?}");
        }
    }
}
