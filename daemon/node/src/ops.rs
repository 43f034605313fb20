//! Ops HTTP: `/healthz` (alive), `/readyz` (serving), `/diagz` (JSON status),
//! `/metrics` (Prometheus text).

use crate::api::cluster::{NodeStatus, Role};
use crate::api::context::ApiContext;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

#[derive(Clone)]
struct OpsState {
    ctx: ApiContext,
    boot_time_ms: u64,
}

/// The ops router.
pub fn router(ctx: ApiContext, boot_time_ms: u64) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/diagz", get(diagz))
        .route("/metrics", get(metrics))
        .with_state(OpsState { ctx, boot_time_ms })
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
    let status = NodeStatus::collect(&state.ctx, state.boot_time_ms);
    match not_ready_reason(&status) {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
    }
}

async fn diagz(State(state): State<OpsState>) -> Json<NodeStatus> {
    Json(NodeStatus::collect(&state.ctx, state.boot_time_ms))
}

/// `/metrics`: OpenMetrics text from prometheus-client. Every series carries
/// `node_id` and `region`.
async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    use prometheus_client::metrics::{counter::ConstCounter, gauge::ConstGauge};
    let status = NodeStatus::collect(&state.ctx, state.boot_time_ms);
    let labels =
        [("node_id".into(), status.node_id.to_string().into()), ("region".into(), status.region.clone().into())];
    let mut registry = prometheus_client::registry::Registry::with_labels(labels.into_iter());
    let gauge = |value: u64| ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    let count = |value: usize| gauge(u64::try_from(value).unwrap_or(u64::MAX));
    let gauges: [(&str, &str, u64); 14] = [
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
        ("keel_watchers", "Watch streams open on this node", status.watchers_active),
        ("keel_watchers_cut_off", "Watchers cut off for not reading, since start", status.watchers_cut_off_total),
    ];
    for (name, help, value) in gauges {
        registry.register(name, help, gauge(value));
    }
    registry.register(
        "keel_watch_queued_bytes",
        "Bytes queued for watchers on this node (bound WATCH_NODE_BUFFER_BYTES_MAX)",
        count(state.ctx.watch_stats.budget.queued_bytes()),
    );
    registry.register(
        "keel_requests_shed",
        "Requests refused at the in-flight bound, since start",
        ConstCounter::new(state.ctx.shed_stats.shed_total.load(std::sync::atomic::Ordering::Relaxed)),
    );
    let rpc = &state.ctx.rpc_metrics;
    registry.register(
        "keel_rpc_duration_seconds",
        "Time to the response's start, per RPC method",
        rpc.duration.clone(),
    );
    registry.register("keel_rpc_responses", "Responses per RPC method and gRPC code", rpc.responses.clone());
    let mut body = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut body, &registry) {
        tracing::warn!(%error, "could not encode /metrics");
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
}
