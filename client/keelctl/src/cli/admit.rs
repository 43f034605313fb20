//! `keelctl admit`: ask whether a tenant may run an engine's action now.
//! Exit status 0 when allowed, 3 when denied (the reason on stdout).

use super::error::CliError;
use super::output::Output;
use super::table::Table;
use super::{GlobalArgs, connect};
use keel_client::pb;
use serde::Serialize;

/// `keelctl admit` arguments.
#[derive(Debug, clap::Args)]
pub struct AdmitArgs {
    /// Tenant id.
    #[arg(long)]
    pub tenant: String,
    /// Engine name.
    #[arg(long)]
    pub engine: String,
    /// Action name.
    #[arg(long)]
    pub action: String,
    /// Engine version (default: the highest published, unyanked).
    #[arg(long, default_value = "")]
    pub version: String,
    /// The call's input, JSON text.
    #[arg(long, default_value = "")]
    pub input: String,
    /// Units charged per rate-limit scope.
    #[arg(long, default_value_t = 1)]
    pub cost: u64,
    /// For the policy.
    #[arg(long, default_value = "")]
    pub risk_band: String,
    /// For the policy.
    #[arg(long, default_value = "")]
    pub region: String,
    /// For the policy.
    #[arg(long, default_value = "")]
    pub role: String,
    /// A retry with the same key is answered with the first admitted
    /// decision and not charged again.
    #[arg(long, default_value = "")]
    pub idempotency_key: String,
}

/// `keelctl outcome` arguments.
#[derive(Debug, clap::Args)]
pub struct OutcomeArgs {
    /// Tenant id.
    #[arg(long)]
    pub tenant: String,
    /// Engine name.
    #[arg(long)]
    pub engine: String,
    /// Action name.
    #[arg(long)]
    pub action: String,
    /// How the call ended.
    #[arg(long, value_enum)]
    pub outcome: OutcomeArg,
    /// How long it took, ms.
    #[arg(long, default_value_t = 0)]
    pub duration_ms: u64,
}

/// `--outcome` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutcomeArg {
    /// It worked.
    Ok,
    /// It failed.
    Error,
    /// It timed out.
    Timeout,
}

/// What `outcome` shows.
#[derive(Debug, Serialize)]
struct OutcomeView {
    breaker: String,
    state: String,
}

/// Runs `outcome`: reports how an admitted call ended to its circuit breaker.
pub async fn run_outcome(args: OutcomeArgs, global: &GlobalArgs, output: &mut Output<'_>) -> Result<(), CliError> {
    let outcome = match args.outcome {
        OutcomeArg::Ok => pb::CallOutcome::Ok,
        OutcomeArg::Error => pb::CallOutcome::Error,
        OutcomeArg::Timeout => pb::CallOutcome::Timeout,
    };
    let request = pb::ReportOutcomeRequest {
        tenant: args.tenant,
        engine: args.engine,
        action: args.action,
        outcome: outcome as i32,
        duration_ms: args.duration_ms,
    };
    let client = connect(global).await?;
    let served = client.report_outcome(request).await?;
    output.served_by(&served.meta);
    let state = pb::BreakerState::try_from(served.value.state)
        .map(|state| state.as_str_name().trim_start_matches("BREAKER_STATE_").to_lowercase())
        .unwrap_or_default();
    let view = OutcomeView { breaker: served.value.breaker, state };
    output.show(&view, |view| {
        let mut table = Table::fields();
        table.field("breaker", &view.breaker).field("state", &view.state);
        table
    })
}

/// What `admit` shows.
#[derive(Debug, Serialize)]
struct AdmitView {
    allowed: bool,
    reason: String,
    detail: String,
    engine_version: String,
    policy_version: String,
    decision_id: String,
    retry_after_ms: u64,
    revision: u64,
    degraded: bool,
    degraded_reason: String,
    idempotent_replay: bool,
    remaining: Vec<(String, u64)>,
}

/// Runs `admit`; a denial is reported and then returned as [`CliError::Denied`].
pub async fn run(args: AdmitArgs, global: &GlobalArgs, output: &mut Output<'_>) -> Result<(), CliError> {
    let request = pb::AdmitRequest {
        tenant: args.tenant,
        engine: args.engine,
        version: args.version,
        action: args.action,
        input_json: args.input,
        cost: args.cost,
        risk_band: args.risk_band,
        region: args.region,
        role: args.role,
        idempotency_key: args.idempotency_key,
    };
    let client = connect(global).await?;
    let served = client.admit(request).await?;
    output.served_by(&served.meta);
    let answer = served.value;
    let view = AdmitView {
        allowed: answer.allowed,
        reason: answer.reason.clone(),
        detail: answer.detail,
        engine_version: answer.engine_version,
        policy_version: answer.policy_version,
        decision_id: answer.decision_id,
        retry_after_ms: answer.retry_after_ms,
        revision: answer.revision,
        degraded: answer.degraded,
        degraded_reason: answer.degraded_reason,
        idempotent_replay: answer.idempotent_replay,
        remaining: answer.remaining.into_iter().map(|room| (room.scope, room.remaining)).collect(),
    };
    output.show(&view, |view| {
        let mut table = Table::fields();
        table
            .field("allowed", view.allowed.to_string())
            .field("reason", &view.reason)
            .field("detail", &view.detail)
            .field("engine_version", &view.engine_version)
            .field("policy_version", &view.policy_version)
            .field("decision_id", &view.decision_id)
            .field("retry_after_ms", view.retry_after_ms.to_string())
            .field("revision", view.revision.to_string())
            .field("degraded", view.degraded.to_string())
            .field("degraded_reason", &view.degraded_reason)
            .field("idempotent_replay", view.idempotent_replay.to_string());
        for (scope, remaining) in &view.remaining {
            table.field(&format!("remaining {scope}"), remaining.to_string());
        }
        table
    })?;
    match answer.allowed {
        true => Ok(()),
        false => Err(CliError::Denied { reason: answer.reason }),
    }
}
