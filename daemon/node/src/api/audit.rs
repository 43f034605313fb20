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
use keel_audit::{Problem, Record, Summary};
use keel_kernel::Rejection;
use keel_proto::v1 as pb;
use prost::Message as _;
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::path::Path;
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

/// The filter a request asks for (its tenant already scoped by the caller).
pub fn filter_of(body: &pb::QueryAuditRequest) -> Result<Filter, ApiError> {
    Filter::from_request(body).map_err(|_| invalid("kind", "is not an audit record kind"))
}

/// What a page token is bound to: the filter (and origin).
fn query_key(filter: &pb::QueryAuditRequest) -> String {
    let bound = pb::QueryAuditRequest { page_size: 0, page_token: String::new(), ..filter.clone() };
    format!("audit-{}", hex::encode(&sha2::Sha256::digest(bound.encode_to_vec())[..12]))
}

/// Per member, the last seq a page gave (the next page reads after it).
fn positions(query: &str, token: &str) -> Result<BTreeMap<u64, u64>, ApiError> {
    if token.is_empty() {
        return Ok(BTreeMap::new());
    }
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(ApiError::PageTokenInvalid)?;
    let positions =
        decoded.strip_prefix(query).and_then(|rest| rest.strip_prefix('\n')).ok_or(ApiError::PageTokenInvalid)?;
    serde_json::from_str(positions).map_err(|_| ApiError::PageTokenInvalid)
}

/// One member's part of a page.
struct Part {
    node: u64,
    records: Vec<Record>,
    /// Where that member's log continues when `records` is empty (a scan
    /// that read its bound without a match); 0 at its end.
    next_after_seq: u64,
    from_copy: bool,
}

/// Member `origin`'s records after `after`: asked of it (its own log), or
/// read from this member's copy when it does not answer.
async fn part_of(
    ctx: &ApiContext,
    origin: u64,
    peer_addr: Option<String>,
    body: &pb::QueryAuditRequest,
    filter: &Filter,
    after: u64,
    size: usize,
) -> Result<Part, ApiError> {
    let own = origin == ctx.replica.identity.node_id;
    if !own && let (Some(peer_addr), Some(channels)) = (peer_addr, &ctx.peer_channels) {
        let request = keel_proto::raft::v1::AuditQueryRequest {
            origin,
            after_seq: after,
            limit: u32::try_from(size).unwrap_or(u32::MAX),
            filter: body.encode_to_vec(),
        };
        let deadline = std::time::Duration::from_millis(READ_DEADLINE_DEFAULT_MS / 2);
        let asked = channels
            .call(&peer_addr, deadline, request, |mut client, request| async move { client.audit_query(request).await })
            .await;
        if let Ok(answer) = asked
            && answer.found
        {
            let records = answer.records.iter().filter_map(|line| serde_json::from_slice(line).ok()).collect();
            return Ok(Part { node: origin, records, next_after_seq: answer.next_after_seq, from_copy: false });
        }
    }
    let Some(dir) = ctx.audit.log_dir_of(origin).filter(|dir| dir.exists()) else {
        return Ok(Part { node: origin, records: Vec::new(), next_after_seq: 0, from_copy: !own });
    };
    let filter = filter.clone();
    let page = tokio::task::spawn_blocking(move || scan(&dir, after, &filter, size))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Part { node: origin, records: page.records, next_after_seq: page.next_after_seq.unwrap_or(0), from_copy: !own })
}

/// Export chunks waiting for a slow reader.
const EXPORT_CHUNKS_QUEUED: usize = 4;

/// The CSV export's columns.
const CSV_HEADER: &str = "id,time_ms,node,region,kind,principal,tenant,engine,action,decision,reason,detail,decision_id,policy_version,revision,degraded,request_id,trace_id";

fn csv_field(data: &mut Vec<u8>, text: &str) {
    if text.contains([',', '"', '\n', '\r']) {
        data.push(b'"');
        data.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        data.push(b'"');
    } else {
        data.extend_from_slice(text.as_bytes());
    }
}

fn csv_row(data: &mut Vec<u8>, record: &Record) {
    let fields = [
        record.id.clone(),
        record.time_ms.to_string(),
        record.node.to_string(),
        record.region.clone(),
        record.kind.as_str().to_owned(),
        record.principal.clone(),
        record.tenant.clone(),
        record.engine.clone(),
        record.action.clone(),
        record.decision.clone(),
        record.reason.clone(),
        record.detail.clone(),
        record.decision_id.clone(),
        record.policy_version.clone(),
        record.revision.to_string(),
        record.degraded.clone(),
        record.request_id.clone(),
        record.trace_id.clone(),
    ];
    for (index, field) in fields.iter().enumerate() {
        if index > 0 {
            data.push(b',');
        }
        csv_field(data, field);
    }
    data.push(b'\n');
}

/// A tenant's token reads its tenant's records only.
fn scope_to_caller(call: &super::context::Call<'_>, body: &mut pb::QueryAuditRequest) -> Result<(), ApiError> {
    if let Some(scope) = call.tenant_scope() {
        if !body.tenant.is_empty() {
            call.check_tenant(&body.tenant)?;
        }
        body.tenant = scope.to_string();
    }
    Ok(())
}

/// One page of every member's records (or `origin`'s), merged by time.
struct MergedPage {
    records: Vec<Record>,
    next_page_token: String,
    node: u64,
    from_copies: Vec<u64>,
}

impl MergedPage {
    fn into_response(self) -> pb::QueryAuditResponse {
        pb::QueryAuditResponse {
            records: self.records.into_iter().map(record_to_pb).collect(),
            next_page_token: self.next_page_token,
            node: self.node,
            from_copies: self.from_copies,
        }
    }
}

/// One page of every member's records (or `origin`'s), merged by time.
async fn query_page(ctx: &ApiContext, body: &pb::QueryAuditRequest) -> Result<MergedPage, ApiError> {
    let node = ctx.replica.identity.node_id;
    let filter = filter_of(body)?;
    let size = match body.page_size {
        0 => PAGE_SIZE_DEFAULT,
        n => usize::try_from(n).unwrap_or(AUDIT_PAGE_SIZE_MAX).min(AUDIT_PAGE_SIZE_MAX),
    };
    let query = query_key(body);
    let mut positions = positions(&query, &body.page_token)?;
    let mut members: Vec<(u64, Option<String>)> =
        ctx.replica.member_peers().into_iter().map(|(id, peer_addr)| (id, Some(peer_addr))).collect();
    if !members.iter().any(|(id, _)| *id == node) {
        members.push((node, None));
    }
    let members: Vec<(u64, Option<String>)> =
        members.into_iter().filter(|(id, _)| body.origin == 0 || *id == body.origin).collect();
    let parts = futures::future::join_all(members.into_iter().map(|(origin, peer_addr)| {
        let after = positions.get(&origin).copied().unwrap_or(0);
        part_of(ctx, origin, peer_addr, body, &filter, after, size)
    }))
    .await;
    let mut merged = Vec::new();
    let mut from_copies = Vec::new();
    let mut more = false;
    for part in parts {
        let part = part?;
        if part.from_copy {
            from_copies.push(part.node);
        }
        if part.records.is_empty() && part.next_after_seq != 0 {
            positions.insert(part.node, part.next_after_seq);
            more = true;
        }
        // A member with a full part may have more after it.
        more |= part.records.len() >= size;
        merged.extend(part.records);
    }
    merged.sort_by_key(|record| (record.time_ms, record.node, record.seq));
    if merged.len() > size {
        merged.truncate(size);
        more = true;
    }
    for record in &merged {
        positions.insert(record.node, record.seq);
    }
    let next_page_token = if more {
        let positions = serde_json::to_string(&positions).map_err(ApiError::internal)?;
        page_token(&query, &positions)
    } else {
        String::new()
    };
    Ok(MergedPage { records: merged, next_page_token, node, from_copies })
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditApi {
    async fn query_audit(
        &self,
        request: Request<pb::QueryAuditRequest>,
    ) -> Result<Response<pb::QueryAuditResponse>, Status> {
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |mut body, call| async move {
                scope_to_caller(&call, &mut body)?;
                query_page(call.ctx(), &body).await.map(MergedPage::into_response)
            })
            .await
    }

    type ExportAuditStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ExportAuditChunk, Status>> + Send + 'static>>;

    async fn export_audit(
        &self,
        request: Request<pb::ExportAuditRequest>,
    ) -> Result<Response<Self::ExportAuditStream>, Status> {
        // Checked like a query (scope, filter), then streamed page by page:
        // the channel's bound is the backpressure.
        let ctx = self.ctx.clone();
        let checked = self
            .ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let format = pb::AuditExportFormat::try_from(body.format)
                    .map_err(|_| invalid("format", "is not an audit export format"))?;
                let mut query = body.query.unwrap_or_default();
                scope_to_caller(&call, &mut query)?;
                filter_of(&query)?;
                Ok((query, format))
            })
            .await?;
        let metadata = checked.metadata().clone();
        let (mut query, format) = checked.into_inner();
        let (sender, receiver) = tokio::sync::mpsc::channel(EXPORT_CHUNKS_QUEUED);
        tokio::spawn(async move {
            query.page_size = u32::try_from(AUDIT_PAGE_SIZE_MAX).unwrap_or(u32::MAX);
            let mut first = true;
            loop {
                let page = match query_page(&ctx, &query).await {
                    Ok(page) => page,
                    Err(error) => {
                        let _ = sender.send(Err(ctx.fail(error))).await;
                        return;
                    }
                };
                let mut data = Vec::new();
                if first && format == pb::AuditExportFormat::Csv {
                    data.extend_from_slice(CSV_HEADER.as_bytes());
                    data.push(b'\n');
                }
                first = false;
                for record in &page.records {
                    match format {
                        pb::AuditExportFormat::Csv => csv_row(&mut data, record),
                        _ => {
                            if let Ok(line) = serde_json::to_vec(record) {
                                data.extend_from_slice(&line);
                                data.push(b'\n');
                            }
                        }
                    }
                }
                let records = page.records.len() as u64;
                if sender.send(Ok(pb::ExportAuditChunk { data, records })).await.is_err() {
                    return;
                }
                if page.next_page_token.is_empty() {
                    return;
                }
                query.page_token = page.next_page_token;
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
        let mut response = Response::new(Box::pin(stream) as Self::ExportAuditStream);
        *response.metadata_mut() = metadata;
        Ok(response)
    }

    async fn verify_audit(
        &self,
        request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |_, call| async move {
                let node = call.ctx().replica.identity.node_id;
                let (Some(own), Some(dir)) =
                    (call.ctx().audit.own_dir(), call.ctx().audit.dir().map(Path::to_path_buf))
                else {
                    return Ok(pb::VerifyAuditResponse { node, ok: true, ..Default::default() });
                };
                let checked = tokio::task::spawn_blocking(move || verify_all(&own, &dir))
                    .await
                    .map_err(ApiError::internal)?
                    .map_err(ApiError::internal)?;
                Ok(checked.into_response(node))
            })
            .await
    }
}

/// One log verified: what it held, or that and its first problem.
type Verified = Result<Summary, (Summary, Problem)>;

/// A member's own log and its copies, verified.
struct Checked {
    own: Verified,
    copies: Vec<(u64, Verified)>,
}

/// Verifies `own` and every current copy under `dir/copies` (copies set
/// aside when a member started a new log are not checked).
fn verify_all(own: &Path, dir: &Path) -> std::io::Result<Checked> {
    let own = verify(own)?;
    let mut copies = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir.join("copies")) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(origin) = name.to_str().and_then(|name| name.strip_prefix("node-")).and_then(|id| id.parse().ok())
            else {
                continue;
            };
            copies.push((origin, verify(&entry.path())?));
        }
    }
    copies.sort_by_key(|(origin, _)| *origin);
    Ok(Checked { own, copies })
}

impl Checked {
    fn into_response(self, node: u64) -> pb::VerifyAuditResponse {
        let split = |checked: Verified| match checked {
            Ok(summary) => (summary, None),
            Err((summary, problem)) => (summary, Some(problem)),
        };
        let (summary, problem) = split(self.own);
        let copies = self
            .copies
            .into_iter()
            .map(|(origin, checked)| {
                let (summary, problem) = split(checked);
                pb::AuditCopyCheck {
                    origin,
                    ok: problem.is_none(),
                    records: summary.records,
                    first_seq: summary.first_seq,
                    last_seq: summary.last_seq,
                    public_key: summary.public_key,
                    first_bad: problem.as_ref().and_then(Problem::first_bad).unwrap_or_default(),
                    problem: problem.map(|problem| problem.to_string()).unwrap_or_default(),
                }
            })
            .collect();
        pb::VerifyAuditResponse {
            node,
            ok: problem.is_none(),
            records: summary.records,
            checkpoints: summary.checkpoints,
            first_seq: summary.first_seq,
            last_seq: summary.last_seq,
            last_checkpoint: summary.last_checkpoint,
            public_key: summary.public_key,
            first_bad: problem.as_ref().and_then(Problem::first_bad).unwrap_or_default(),
            problem: problem.map(|problem| problem.to_string()).unwrap_or_default(),
            copies,
        }
    }
}
