//! Reading a node's audit log: filtered pages in seq order, and verifying
//! its chain. Readers open the segment files read-only beside the writer
//! and stop at the last complete line.

pub use super::segments::seq_of;
use super::segments::{for_each_line, for_each_line_from, list};
use crate::limits::{AUDIT_QUERY_SCAN_BYTES_MAX, AUDIT_RESUME_POINTS_MAX};
use keel_audit::{Kind, Record, Summary, Verifier};
use std::path::{Path, PathBuf};

/// Which records a query wants (empty fields: any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// From this time (ms, inclusive).
    pub from_ms: u64,
    /// Before this time (ms, exclusive; 0: no end).
    pub to_ms: u64,
    /// Tenant.
    pub tenant: String,
    /// Engine.
    pub engine: String,
    /// Action (or RPC method).
    pub action: String,
    /// Principal.
    pub principal: String,
    /// Decision.
    pub decision: String,
    /// Kind.
    pub kind: Option<Kind>,
    /// Checkpoints too (verification material; off for most queries).
    pub with_checkpoints: bool,
}

impl Filter {
    /// Whether `record` is wanted.
    pub fn matches(&self, record: &Record) -> bool {
        let text = |wanted: &str, value: &str| wanted.is_empty() || wanted == value;
        (self.with_checkpoints || record.kind != Kind::Checkpoint)
            && record.time_ms >= self.from_ms
            && (self.to_ms == 0 || record.time_ms < self.to_ms)
            && text(&self.tenant, &record.tenant)
            && text(&self.engine, &record.engine)
            && text(&self.action, &record.action)
            && text(&self.principal, &record.principal)
            && text(&self.decision, &record.decision)
            && self.kind.is_none_or(|kind| kind == record.kind)
    }
}

impl Filter {
    /// The filter of a `QueryAuditRequest` (its page fields aside); an
    /// unknown `kind` is an error naming it.
    pub fn from_request(body: &keel_proto::v1::QueryAuditRequest) -> Result<Filter, String> {
        let kind = match body.kind.as_str() {
            "" => None,
            name => Some(Kind::parse(name).ok_or_else(|| format!("{name} is not an audit record kind"))?),
        };
        Ok(Filter {
            from_ms: body.from_ms,
            to_ms: body.to_ms,
            tenant: body.tenant.clone(),
            engine: body.engine.clone(),
            action: body.action.clone(),
            principal: body.principal.clone(),
            decision: body.decision.clone(),
            with_checkpoints: kind == Some(Kind::Checkpoint),
            kind,
        })
    }
}

/// One page of a node's records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Matching records, in seq order.
    pub records: Vec<Record>,
    /// Where the next page starts (the last seq read), `None` at the end.
    pub next_after_seq: Option<u64>,
}

/// Where a page of a log ended: (log dir, last seq read) → (segment file,
/// the byte after that line). The next page of the same query starts there
/// instead of reading the segment again from its start. Bounded by
/// `AUDIT_RESUME_POINTS_MAX` (emptied when full: a miss only costs a read).
type ResumePoints = std::sync::Mutex<std::collections::HashMap<(PathBuf, u64), (PathBuf, u64)>>;

fn resume_points() -> &'static ResumePoints {
    static POINTS: std::sync::OnceLock<ResumePoints> = std::sync::OnceLock::new();
    POINTS.get_or_init(Default::default)
}

fn remember(dir: &Path, seq: u64, segment: &Path, offset: u64) {
    let mut points = resume_points().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if points.len() >= AUDIT_RESUME_POINTS_MAX {
        points.clear();
    }
    points.insert((dir.to_path_buf(), seq), (segment.to_path_buf(), offset));
}

fn resume_point(dir: &Path, seq: u64) -> Option<(PathBuf, u64)> {
    let points = resume_points().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    points.get(&(dir.to_path_buf(), seq)).cloned()
}

/// Records of the log in `dir` after `after_seq` that match `filter`: at
/// most `limit`, reading at most `AUDIT_QUERY_SCAN_BYTES_MAX` bytes (a
/// page may hold fewer records and still have a next page).
pub fn scan(dir: &Path, after_seq: u64, filter: &Filter, limit: usize) -> std::io::Result<Page> {
    let segments = list(dir)?;
    let mut page = Page::default();
    let mut scanned = 0u64;
    let mut last_seq = after_seq;
    let resume = resume_point(dir, after_seq);
    for (index, (_, path)) in segments.iter().enumerate() {
        // Skip segments that end before `after_seq`.
        if let Some((next_first, _)) = segments.get(index + 1)
            && *next_first <= after_seq.saturating_add(1)
        {
            continue;
        }
        let offset = match &resume {
            Some((segment, offset)) if segment == path => *offset,
            _ => 0,
        };
        let mut full = false;
        let mut end = offset;
        let read = for_each_line_from(path, offset, |line, after| {
            end = after;
            // Lines before the page are skipped without decoding them.
            if seq_of(line).is_some_and(|seq| seq <= after_seq) {
                return true;
            }
            let Ok(record) = serde_json::from_slice::<Record>(line) else {
                // Verification names bad lines; a query reads around them.
                return true;
            };
            if record.seq <= after_seq {
                return true;
            }
            last_seq = record.seq;
            if filter.matches(&record) {
                page.records.push(record);
                full = page.records.len() >= limit;
            }
            !full
        })?;
        if full {
            remember(dir, last_seq, path, end);
            page.next_after_seq = Some(last_seq);
            return Ok(page);
        }
        scanned = scanned.saturating_add(read);
        if scanned >= AUDIT_QUERY_SCAN_BYTES_MAX && index + 1 < segments.len() {
            remember(dir, last_seq, path, end);
            page.next_after_seq = Some(last_seq);
            return Ok(page);
        }
    }
    Ok(page)
}

/// Verifies the chain of the log in `dir` (every segment, in order).
pub fn verify(dir: &Path) -> std::io::Result<Result<Summary, (Summary, keel_audit::Problem)>> {
    let mut verifier = Verifier::new();
    let mut problem = None;
    for (_, path) in list(dir)? {
        for_each_line(&path, |line| match verifier.push(line) {
            Ok(()) => true,
            Err(found) => {
                problem = Some(found);
                false
            }
        })?;
        if let Some(problem) = problem {
            return Ok(Err((verifier.summary().clone(), problem)));
        }
    }
    Ok(Ok(verifier.summary().clone()))
}

/// Lines of the log in `dir` after `after_seq` and up to `up_to` (the last
/// durable seq: a line written but not yet synced is never copied), grouped
/// by segment (first seq, newline-terminated lines), about `max_bytes` at
/// most (always at least one line when there is one).
pub fn pull(dir: &Path, after_seq: u64, up_to: u64, max_bytes: usize) -> std::io::Result<Vec<(u64, Vec<u8>)>> {
    let segments = list(dir)?;
    let mut chunks: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut bytes = 0usize;
    for (index, (first_seq, path)) in segments.iter().enumerate() {
        if let Some((next_first, _)) = segments.get(index + 1)
            && *next_first <= after_seq.saturating_add(1)
        {
            continue;
        }
        let mut lines = Vec::new();
        let mut full = false;
        for_each_line(path, |line| {
            let Some(seq) = seq_of(line) else {
                // A line that is not a record stops the copy here: the
                // puller's chain check would refuse everything after it.
                full = true;
                return false;
            };
            if seq <= after_seq {
                return true;
            }
            if seq > up_to {
                full = true;
                return false;
            }
            if bytes > 0 && bytes + line.len() > max_bytes {
                full = true;
                return false;
            }
            bytes += line.len() + 1;
            lines.extend_from_slice(line);
            lines.push(b'\n');
            true
        })?;
        if !lines.is_empty() {
            chunks.push((*first_seq, lines));
        }
        if full {
            break;
        }
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pull_gives_durable_lines_after_a_seq_and_stops_at_the_bound() -> anyhow::Result<()> {
        let data = tempfile::tempdir()?;
        let log = super::super::AuditLog::open(&super::super::AuditConfig::default(), data.path(), 9, "eu")?;
        log.record((0..10).map(|_| Record::default()).collect()).await?;
        let dir = log.own_dir().expect("enabled");
        log.close();
        // Checkpoint 1, records 2..=11, closing checkpoint 12.
        let seqs = |chunks: &[(u64, Vec<u8>)]| -> Vec<u64> {
            chunks
                .iter()
                .flat_map(|(_, lines)| lines.split(|byte| *byte == b'\n').filter(|line| !line.is_empty()))
                .filter_map(seq_of)
                .collect()
        };
        assert_eq!(seqs(&pull(&dir, 4, 8, usize::MAX)?), [5, 6, 7, 8]);
        assert_eq!(seqs(&pull(&dir, 0, u64::MAX, usize::MAX)?).len(), 12);
        // A byte bound below one line still gives one line.
        assert_eq!(seqs(&pull(&dir, 4, u64::MAX, 1)?), [5]);
        assert!(pull(&dir, 12, u64::MAX, usize::MAX)?.is_empty());
        Ok(())
    }

    #[test]
    fn a_lines_seq_is_read_from_its_prefix_only() {
        assert_eq!(seq_of(br#"{"seq":42,"prev":"00"}"#), Some(42));
        assert_eq!(seq_of(br#"{"prev":"00","seq":42}"#), None);
        assert_eq!(seq_of(b"garbage"), None);
        assert_eq!(seq_of(br#"{"seq":99999999999999999999999,"#), None);
    }
}
