//! `keel.v1.AuditService`: this member's audit log, read and verified.
//!
//! ```text
//!  QueryAudit{filter, page} ─► (a tenant-scoped token: its tenant only) ─► audit::query::scan on a blocking thread
//!                           ◄─ records in seq order + a token bound to the filter (resumes after the last seq read)
//!  VerifyAudit ─► audit::query::verify: every segment's chain and checkpoint signatures
//! ```

use super::context::{ApiContext, page_token};
use super::error::ApiError;
use crate::audit::query::{Filter, scan, verify};
use crate::limits::{AUDIT_PAGE_SIZE_MAX, READ_DEADLINE_DEFAULT_MS};
use base64::Engine as _;
use keel_audit::{Kind, Record};
use keel_kernel::Rejection;
use keel_proto::v1 as pb;
use sha2::Digest as _;
use tonic::{Request, Response, Status};

/// Records per page when the request names none.
const PAGE_SIZE_DEFAULT: usize = 100;

/// The service.
pub struct AuditApi {
    /// Shared by every client service.
    pub ctx: ApiContext,
}

fn invalid(field: &'static str, problem: &'static str) -> ApiError {
    ApiError::Rejected(Rejection::FieldInvalid { field: field.into(), problem: problem.into() })
}

/// The wire form of a record.
pub fn record_to_pb(record: Record) -> pb::AuditRecord {
    pb::AuditRecord {
        seq: record.seq,
        prev: record.prev,
        id: record.id,
        time_ms: record.time_ms,
        node: record.node,
        region: record.region,
        kind: record.kind.as_str().to_owned(),
        principal: record.principal,
        tenant: record.tenant,
        engine: record.engine,
        action: record.action,
        decision: record.decision,
        reason: record.reason,
        detail: record.detail,
        decision_id: record.decision_id,
        policy_version: record.policy_version,
        revision: record.revision,
        degraded: record.degraded,
        request_id: record.request_id,
        trace_id: record.trace_id,
        public_key: record.public_key,
        signature: record.signature,
    }
}

/// What a page token is bound to: the filter, on this member.
fn query_key(node: u64, filter: &Filter) -> String {
    let described = format!("{node}\n{filter:?}");
    format!("audit-{}", hex::encode(&sha2::Sha256::digest(described.as_bytes())[..12]))
}

fn after_seq(query: &str, token: &str) -> Result<u64, ApiError> {
    if token.is_empty() {
        return Ok(0);
    }
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(ApiError::PageTokenInvalid)?;
    decoded
        .strip_prefix(query)
        .and_then(|rest| rest.strip_prefix('\n'))
        .and_then(|seq| seq.parse().ok())
        .ok_or(ApiError::PageTokenInvalid)
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditApi {
    async fn query_audit(
        &self,
        request: Request<pb::QueryAuditRequest>,
    ) -> Result<Response<pb::QueryAuditResponse>, Status> {
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let audit = &call.ctx().audit;
                let node = call.ctx().replica.identity.node_id;
                let kind = match body.kind.as_str() {
                    "" => None,
                    name => Some(Kind::parse(name).ok_or_else(|| invalid("kind", "is not an audit record kind"))?),
                };
                // A tenant's token reads its tenant's records only.
                let tenant = match call.tenant_scope() {
                    Some(scope) => {
                        if !body.tenant.is_empty() {
                            call.check_tenant(&body.tenant)?;
                        }
                        scope.to_string()
                    }
                    None => body.tenant,
                };
                let filter = Filter {
                    from_ms: body.from_ms,
                    to_ms: body.to_ms,
                    tenant,
                    engine: body.engine,
                    action: body.action,
                    principal: body.principal,
                    decision: body.decision,
                    with_checkpoints: kind == Some(Kind::Checkpoint),
                    kind,
                };
                let size = match body.page_size {
                    0 => PAGE_SIZE_DEFAULT,
                    n => usize::try_from(n).unwrap_or(AUDIT_PAGE_SIZE_MAX).min(AUDIT_PAGE_SIZE_MAX),
                };
                let query = query_key(node, &filter);
                let after = after_seq(&query, &body.page_token)?;
                let Some(dir) = audit.own_dir() else {
                    return Ok(pb::QueryAuditResponse { node, ..Default::default() });
                };
                let page = tokio::task::spawn_blocking(move || scan(&dir, after, &filter, size))
                    .await
                    .map_err(ApiError::internal)?
                    .map_err(ApiError::internal)?;
                Ok(pb::QueryAuditResponse {
                    records: page.records.into_iter().map(record_to_pb).collect(),
                    next_page_token: page
                        .next_after_seq
                        .map(|seq| page_token(&query, &seq.to_string()))
                        .unwrap_or_default(),
                    node,
                })
            })
            .await
    }

    async fn verify_audit(
        &self,
        request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |_, call| async move {
                let node = call.ctx().replica.identity.node_id;
                let Some(dir) = call.ctx().audit.own_dir() else {
                    return Ok(pb::VerifyAuditResponse { node, ok: true, ..Default::default() });
                };
                let verified = tokio::task::spawn_blocking(move || verify(&dir))
                    .await
                    .map_err(ApiError::internal)?
                    .map_err(ApiError::internal)?;
                let (summary, problem) = match verified {
                    Ok(summary) => (summary, None),
                    Err((summary, problem)) => (summary, Some(problem)),
                };
                Ok(pb::VerifyAuditResponse {
                    node,
                    ok: problem.is_none(),
                    records: summary.records,
                    checkpoints: summary.checkpoints,
                    first_seq: summary.first_seq,
                    last_seq: summary.last_seq,
                    last_checkpoint: summary.last_checkpoint,
                    public_key: summary.public_key,
                    first_bad: problem.as_ref().and_then(keel_audit::Problem::first_bad).unwrap_or_default(),
                    problem: problem.map(|problem| problem.to_string()).unwrap_or_default(),
                })
            })
            .await
    }
}
