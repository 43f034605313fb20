//! `keelctl audit`: read the cluster's audit records (`query`: every
//! member's, merged by time) and verify a member's chain, on the member
//! (`verify`) or in a copy of the files (`verify --dir`).

use super::error::CliError;
use super::output::Output;
use super::table::Table;
use super::{GlobalArgs, connect};
use keel_client::pb;
use serde::Serialize;
use std::path::PathBuf;

/// Records `query` prints when no `--limit` is given.
const QUERY_LIMIT_DEFAULT: usize = 100;
/// Records per page asked of the member.
const QUERY_PAGE_SIZE: u32 = 500;

/// `keelctl audit …`.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// The member's records, filtered, oldest first.
    Query(QueryArgs),
    /// Check the hash chain and signed checkpoints; names the first bad record.
    Verify(VerifyArgs),
    /// Every matching record to stdout as JSON Lines or CSV (streamed).
    Export(ExportArgs),
    /// Follow new records (JSON Lines) as they are made.
    Tail(TailArgs),
}

/// `keelctl audit export` arguments.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The filter.
    #[command(flatten)]
    pub filter: QueryArgs,
    /// jsonl or csv.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: ExportFormat,
}

/// `--format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON record per line.
    Jsonl,
    /// CSV with a header row.
    Csv,
}

/// `keelctl audit tail` arguments.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The filter (`--from-ms` default: now).
    #[command(flatten)]
    pub filter: QueryArgs,
    /// Stop after this many records (0: never).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Stop after this long without a new record (0: never).
    #[arg(long, default_value_t = 0)]
    pub idle_exit_ms: u64,
}

/// How often `tail` asks again.
const TAIL_POLL_MS: u64 = 500;

/// `keelctl audit query` arguments (empty: any).
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Tenant.
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// Engine.
    #[arg(long, default_value = "")]
    pub engine: String,
    /// Action (or RPC method).
    #[arg(long, default_value = "")]
    pub action: String,
    /// Principal (a token's subject).
    #[arg(long, default_value = "")]
    pub principal: String,
    /// Decision: allowed, denied, proposed, applied, rejected, failed, refused, …
    #[arg(long, default_value = "")]
    pub decision: String,
    /// Kind: admission, mutation, security, breaker, checkpoint.
    #[arg(long, default_value = "")]
    pub kind: String,
    /// From this time, Unix ms.
    #[arg(long, default_value_t = 0)]
    pub from_ms: u64,
    /// Before this time, Unix ms (0: no end).
    #[arg(long, default_value_t = 0)]
    pub to_ms: u64,
    /// Records to print at most.
    #[arg(long, default_value_t = QUERY_LIMIT_DEFAULT)]
    pub limit: usize,
    /// Only this member's records (0: every member's, merged by time).
    #[arg(long, default_value_t = 0)]
    pub origin: u64,
}

/// `keelctl audit verify` arguments.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Verify the segment files in this directory (a member's
    /// `<audit dir>/node-<id>`, or a copy of it) instead of asking a member.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// What `verify` shows.
#[derive(Debug, Serialize)]
struct VerifyView {
    node: u64,
    ok: bool,
    records: u64,
    checkpoints: u64,
    first_seq: u64,
    last_seq: u64,
    last_checkpoint: u64,
    public_key: String,
    first_bad: String,
    problem: String,
    /// The member's copies of the other members' logs (`verify` on a member).
    copies: Vec<CopyView>,
}

/// One copy's check.
#[derive(Debug, Serialize)]
struct CopyView {
    origin: u64,
    ok: bool,
    records: u64,
    first_seq: u64,
    last_seq: u64,
    first_bad: String,
    problem: String,
}

/// Runs an `audit` command.
pub async fn run(command: AuditCommand, global: &GlobalArgs, output: &mut Output<'_>) -> Result<(), CliError> {
    match command {
        AuditCommand::Query(args) => query(args, global, output).await,
        AuditCommand::Export(args) => export(args, global, output).await,
        AuditCommand::Tail(args) => tail(args, global, output).await,
        AuditCommand::Verify(args) => {
            let view = match args.dir {
                Some(dir) => verify_dir(&dir)?,
                None => {
                    let served = connect(global).await?.verify_audit().await?;
                    output.served_by(&served.meta);
                    let answer = served.value;
                    VerifyView {
                        node: answer.node,
                        ok: answer.ok,
                        records: answer.records,
                        checkpoints: answer.checkpoints,
                        first_seq: answer.first_seq,
                        last_seq: answer.last_seq,
                        last_checkpoint: answer.last_checkpoint,
                        public_key: answer.public_key,
                        first_bad: answer.first_bad,
                        problem: answer.problem,
                        copies: answer
                            .copies
                            .into_iter()
                            .map(|copy| CopyView {
                                origin: copy.origin,
                                ok: copy.ok,
                                records: copy.records,
                                first_seq: copy.first_seq,
                                last_seq: copy.last_seq,
                                first_bad: copy.first_bad,
                                problem: copy.problem,
                            })
                            .collect(),
                    }
                }
            };
            output.show(&view, |view| {
                let mut table = Table::fields();
                table
                    .field("node", view.node.to_string())
                    .field("ok", view.ok.to_string())
                    .field("records", view.records.to_string())
                    .field("checkpoints", view.checkpoints.to_string())
                    .field("seq", format!("{}..={}", view.first_seq, view.last_seq))
                    .field("last_checkpoint", view.last_checkpoint.to_string())
                    .field("public_key", &view.public_key)
                    .field("first_bad", &view.first_bad)
                    .field("problem", &view.problem);
                for copy in &view.copies {
                    let state = match copy.ok {
                        true => format!("ok, {} records, seq {}..={}", copy.records, copy.first_seq, copy.last_seq),
                        false => format!("BAD at {}: {}", copy.first_bad, copy.problem),
                    };
                    table.field(&format!("copy of node {}", copy.origin), state);
                }
                table
            })?;
            if !view.ok {
                return Err(CliError::AuditInvalid { first_bad: view.first_bad, problem: view.problem });
            }
            match view.copies.into_iter().find(|copy| !copy.ok) {
                Some(copy) => Err(CliError::AuditInvalid {
                    first_bad: copy.first_bad,
                    problem: format!("the copy of node {}'s log: {}", copy.origin, copy.problem),
                }),
                None => Ok(()),
            }
        }
    }
}

/// Verifies the segment files of one member's log, oldest first.
fn verify_dir(dir: &std::path::Path) -> Result<VerifyView, CliError> {
    let usage = |problem: String| CliError::Usage { problem };
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|error| usage(format!("reading {}: {error}", dir.display())))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().and_then(|ext| ext.to_str()) == Some("jsonl"))
        .collect();
    segments.sort();
    if segments.is_empty() {
        return Err(usage(format!("{} holds no audit segments (*.jsonl)", dir.display())));
    }
    let mut verifier = keel_audit::Verifier::new();
    let mut problem = None;
    'segments: for path in &segments {
        let bytes = std::fs::read(path).map_err(|error| usage(format!("reading {}: {error}", path.display())))?;
        // A torn last line (no newline) was never acknowledged: not checked.
        for line in keel_audit::complete_lines(&bytes).0 {
            if let Err(found) = verifier.push(line) {
                problem = Some(found);
                break 'segments;
            }
        }
    }
    let summary = verifier.summary().clone();
    Ok(VerifyView {
        node: summary.node,
        ok: problem.is_none(),
        records: summary.records,
        checkpoints: summary.checkpoints,
        first_seq: summary.first_seq,
        last_seq: summary.last_seq,
        last_checkpoint: summary.last_checkpoint,
        public_key: summary.public_key,
        first_bad: problem.as_ref().and_then(keel_audit::Problem::first_bad).unwrap_or_default(),
        problem: problem.map(|problem| problem.to_string()).unwrap_or_default(),
        copies: Vec::new(),
    })
}

impl QueryArgs {
    /// The request for one page.
    fn request(&self, page_token: String) -> pb::QueryAuditRequest {
        pb::QueryAuditRequest {
            from_ms: self.from_ms,
            to_ms: self.to_ms,
            tenant: self.tenant.clone(),
            engine: self.engine.clone(),
            action: self.action.clone(),
            principal: self.principal.clone(),
            decision: self.decision.clone(),
            kind: self.kind.clone(),
            page_size: QUERY_PAGE_SIZE,
            page_token,
            origin: self.origin,
        }
    }
}

async fn export(args: ExportArgs, global: &GlobalArgs, output: &mut Output<'_>) -> Result<(), CliError> {
    let client = connect(global).await?;
    let format = match args.format {
        ExportFormat::Jsonl => pb::AuditExportFormat::Jsonl,
        ExportFormat::Csv => pb::AuditExportFormat::Csv,
    };
    let request = pb::ExportAuditRequest { query: Some(args.filter.request(String::new())), format: format as i32 };
    let served = client.export_audit(request).await?;
    output.served_by(&served.meta);
    let mut stream = served.value;
    loop {
        let chunk =
            stream.message().await.map_err(|status| keel_client::error::ClientError::from_status(&status, ""))?;
        let Some(chunk) = chunk else {
            return Ok(());
        };
        output.write_stdout(&String::from_utf8_lossy(&chunk.data))?;
    }
}

async fn tail(args: TailArgs, global: &GlobalArgs, output: &mut Output<'_>) -> Result<(), CliError> {
    let client = connect(global).await?;
    let mut filter = args.filter;
    if filter.from_ms == 0 {
        filter.from_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
    }
    // Records at the cursor's ms already shown (a later query starts there again).
    let mut shown_at_cursor = std::collections::BTreeSet::new();
    let (mut printed, mut last_new) = (0u64, std::time::Instant::now());
    loop {
        let mut page_token = String::new();
        loop {
            let page = client.query_audit(filter.request(page_token)).await?.value;
            for record in page.records {
                if shown_at_cursor.contains(&record.id) {
                    continue;
                }
                if record.time_ms > filter.from_ms {
                    filter.from_ms = record.time_ms;
                    shown_at_cursor.clear();
                }
                shown_at_cursor.insert(record.id.clone());
                let line = serde_json::json!({
                    "id": record.id, "time_ms": record.time_ms, "kind": record.kind,
                    "principal": record.principal, "tenant": record.tenant, "engine": record.engine,
                    "action": record.action, "decision": record.decision, "reason": record.reason,
                    "detail": record.detail, "decision_id": record.decision_id, "revision": record.revision,
                });
                output.write_stdout(&format!("{line}\n"))?;
                printed += 1;
                last_new = std::time::Instant::now();
                if args.count > 0 && printed >= args.count {
                    return Ok(());
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        if args.idle_exit_ms > 0 && last_new.elapsed() >= std::time::Duration::from_millis(args.idle_exit_ms) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(TAIL_POLL_MS)).await;
    }
}

async fn query(args: QueryArgs, global: &GlobalArgs, output: &mut Output<'_>) -> Result<(), CliError> {
    let client = connect(global).await?;
    let mut records = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = args.request(page_token);
        let served = client.query_audit(request).await?;
        output.served_by(&served.meta);
        records.extend(served.value.records);
        page_token = served.value.next_page_token;
        if page_token.is_empty() || records.len() >= args.limit {
            break;
        }
    }
    records.truncate(args.limit);
    let rows: Vec<serde_json::Value> = records
        .iter()
        .map(|record| {
            serde_json::json!({
                "id": record.id, "time_ms": record.time_ms, "kind": record.kind,
                "principal": record.principal, "tenant": record.tenant, "engine": record.engine,
                "action": record.action, "decision": record.decision, "reason": record.reason,
                "detail": record.detail, "decision_id": record.decision_id,
                "policy_version": record.policy_version, "revision": record.revision,
                "degraded": record.degraded, "request_id": record.request_id, "trace_id": record.trace_id,
            })
        })
        .collect();
    output.show(&rows, |_| {
        let mut table =
            Table::with_header(&["ID", "TIME_MS", "KIND", "PRINCIPAL", "TENANT", "ACTION", "DECISION", "REASON"]);
        for record in &records {
            table.row([
                record.id.clone(),
                record.time_ms.to_string(),
                record.kind.clone(),
                record.principal.clone(),
                record.tenant.clone(),
                record.action.clone(),
                record.decision.clone(),
                record.reason.clone(),
            ]);
        }
        table
    })
}
