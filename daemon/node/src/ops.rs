//! Ops HTTP: `/healthz` (alive), `/readyz` (serving), `/diagz` (JSON status),
//! `/metrics` (Prometheus text).
//!
//! `/diagz` and `/metrics` name member addresses and digests, so they answer
//! callers on loopback only unless `ops.expose = "all"` (403 otherwise);
//! the probes answer everyone.

use crate::replica::Replica;
use crate::replica::status::{NodeStatus, Role};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::collector::Collector;
use std::sync::Arc;

/// Who may read `/diagz` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exposure {
    /// Callers on loopback only.
    #[default]
    Loopback,
    /// Anyone who reaches the port.
    All,
}

/// The connection's remote address, set per connection by the server.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub Option<std::net::SocketAddr>);

#[derive(Clone)]
struct OpsState {
    replica: Replica,
    boot_time_ms: u64,
    collectors: Arc<[Arc<dyn Collector>]>,
    limiter: Arc<crate::admission::LimiterHealth>,
    audit: crate::audit::AuditLog,
}

/// The ops router over `replica`; `/metrics` adds what each of
/// `collectors` (the layers above: edge, load shedding, watches) reports.
/// `/diagz` and `/metrics` answer as `expose` says (each request carries
/// its connection's [`RemoteAddr`] as an extension).
pub fn router(
    replica: Replica,
    boot_time_ms: u64,
    collectors: Vec<Arc<dyn Collector>>,
    expose: Exposure,
    limiter: Arc<crate::admission::LimiterHealth>,
    audit: crate::audit::AuditLog,
) -> Router {
    let guarded = Router::new().route("/diagz", get(diagz)).route("/metrics", get(metrics)).layer(
        axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| {
            let remote = request.extensions().get::<RemoteAddr>().and_then(|remote| remote.0);
            let is_allowed = expose == Exposure::All || remote.is_some_and(|addr| addr.ip().is_loopback());
            async move {
                if is_allowed {
                    next.run(request).await
                } else {
                    let body =
                        "diagnostics answer loopback callers only; set ops.expose = \"all\" to serve them to anyone\n";
                    (StatusCode::FORBIDDEN, body).into_response()
                }
            }
        }),
    );
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).merge(guarded).with_state(OpsState {
        replica,
        boot_time_ms,
        collectors: collectors.into(),
        limiter,
        audit,
    })
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Why the node is not ready, or `None` when it is.
pub fn not_ready_reason(status: &NodeStatus) -> Option<&'static str> {
    if !status.is_raft_running {
        return Some("raft core stopped");
    }
    if status.config_conflict.is_some() {
        return Some("configuration conflict (see /diagz config_conflict)");
    }
    match status.standing.standing {
        crate::replica::rejoin::Standing::Member => {}
        crate::replica::rejoin::Standing::Deciding => {
            return Some(
                "fresh data dir: asking the members whether a cluster ran without it (status standing_detail)",
            );
        }
        crate::replica::rejoin::Standing::Rejoining => {
            return Some("rejoining: the leader replaces this member's old incarnation (status standing_detail)");
        }
    }
    if status.leader_id.is_none() {
        return Some("no leader known");
    }
    if !status.is_trust_bootstrapped {
        return Some("trust store not bootstrapped yet");
    }
    if status.is_clock_distrusted {
        return Some("wall clock disagrees with a majority of the voters (raft.clock_skew_max_ms)");
    }
    if status.applied_index < status.last_log_index && status.role == Role::Leader {
        return Some("applying committed entries");
    }
    None
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    let status = NodeStatus::collect(&state.replica, state.boot_time_ms);
    let audit = state.audit.is_failing().then_some("the audit log cannot write: must-audit calls are refused");
    match not_ready_reason(&status).or_else(|| state.limiter.not_ready_reason()).or(audit) {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
    }
}

/// `/diagz`: the status report and every bound this node keeps.
#[derive(serde::Serialize)]
struct Diagnostics {
    #[serde(flatten)]
    status: NodeStatus,
    limits: std::collections::BTreeMap<&'static str, u64>,
    /// The admission rate limiter: backend, degraded, outage mode.
    limiter: serde_json::Value,
}

async fn diagz(State(state): State<OpsState>) -> Json<Diagnostics> {
    let limits = crate::limits::NODE_LIMITS.iter().copied().collect();
    let limiter = state.limiter.report();
    Json(Diagnostics { status: NodeStatus::collect(&state.replica, state.boot_time_ms), limits, limiter })
}

/// `/metrics`: OpenMetrics text from prometheus-client. Every series carries
/// `node_id` and `region`.
async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    use prometheus_client::metrics::gauge::ConstGauge;
    let status = NodeStatus::collect(&state.replica, state.boot_time_ms);
    let labels =
        [("node_id".into(), status.node_id.to_string().into()), ("region".into(), status.region.clone().into())];
    let mut registry = prometheus_client::registry::Registry::with_labels(labels.into_iter());
    let gauge = |value: u64| ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    let snapshot = status.snapshot;
    let gauges: [(&str, &str, u64); 15] = [
        ("keel_snapshot_bytes", "Bytes of the last snapshot built here", snapshot.last_bytes),
        ("keel_snapshot_build_milliseconds", "How long the last snapshot took to build", snapshot.last_build_ms),
        ("keel_snapshot_revision", "Revision the last snapshot built here is of", snapshot.last_revision),
        ("keel_raft_term", "Current Raft term", status.term),
        ("keel_raft_is_leader", "1 when this node leads", u64::from(status.role == Role::Leader)),
        ("keel_raft_last_log_index", "Index of the last log entry held", status.last_log_index),
        ("keel_raft_applied_index", "Index of the last applied entry", status.applied_index),
        (
            "keel_raft_apply_lag",
            "Log entries held but not yet applied",
            status.last_log_index.saturating_sub(status.applied_index),
        ),
        ("keel_state_digest_revision", "Revision the last state digest is of", status.state_digest_revision),
        ("keel_trust_keys", "Keys in the trust store", status.key_count as u64),
        ("keel_registry_engines", "Engines in the registry", status.engine_count as u64),
        ("keel_registry_engine_versions", "Engine versions in the registry", status.engine_version_count as u64),
        ("keel_tenants", "Tenants", status.tenant_count as u64),
        ("keel_event_history_events", "Events retained in the replicated history", status.event_history_events as u64),
        ("keel_idempotency_keys", "Idempotency keys remembered", status.idempotency_keys as u64),
    ];
    for (name, help, value) in gauges {
        registry.register(name, help, gauge(value));
    }
    registry.register(
        "keel_snapshot_builds",
        "Snapshots built here since start",
        prometheus_client::metrics::counter::ConstCounter::new(snapshot.builds_total),
    );
    for collector in state.collectors.iter() {
        registry.register_collector(Box::new(Shared(Arc::clone(collector))));
    }
    let mut body = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut body, &registry) {
        tracing::warn!(%error, "could not encode /metrics");
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
}

/// A collector shared with the layer that keeps its values.
#[derive(Debug)]
struct Shared(Arc<dyn Collector>);

impl Collector for Shared {
    fn encode(&self, encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

impl Collector for crate::edge::RpcMetrics {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let duration = encoder.encode_descriptor(
            "keel_rpc_duration_seconds",
            "Time to the response's start, per RPC method",
            None,
            self.duration.metric_type(),
        )?;
        self.duration.encode(duration)?;
        let responses = encoder.encode_descriptor(
            "keel_rpc_responses",
            "Responses per RPC method and gRPC code",
            None,
            self.responses.metric_type(),
        )?;
        self.responses.encode(responses)?;
        let errors = encoder.encode_descriptor(
            "keel_rpc_errors",
            "Errors answered to clients, per stable reason (keel.v1.ErrorReason)",
            None,
            self.errors.metric_type(),
        )?;
        self.errors.encode(errors)
    }
}
