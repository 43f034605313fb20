//! Audit: every decision and every change recorded on the serving node's
//! disk before the answer leaves, hash-chained and signed (`keel-audit`).
//!
//! ```text
//!  handler ─► AuditLog::record(records) ─► queue (AUDIT_QUEUE_MAX, try_send: full = AUDIT_UNAVAILABLE now)
//!                 │                               │
//!                 │ waits ≤ audit.write_timeout_ms ▼
//!                 │                      writer thread: takes what is queued (≤ AUDIT_BATCH_RECORDS_MAX),
//!                 │                      seals each into the chain, one write + one fdatasync (group commit),
//!                 │                      a signed checkpoint every AUDIT_CHECKPOINT_EVERY_RECORDS records
//!                 │                      (or AUDIT_CHECKPOINT_INTERVAL_MS idle), a new segment past segment_bytes
//!                 ◄──────── ids ─────────┘ (or the error: the chain and file go back to the last durable line)
//!  answer sent only after its record is durable; no answer waits longer than the bound
//! ```
//!
//! The log is node-local, not replicated through Raft (a Raft entry per
//! record would cap admissions at the log's write rate). While the writer
//! fails or a batch is stuck past the bound, [`AuditLog::is_failing`] is
//! true: `/readyz` says not ready, must-audit calls are refused with
//! `AUDIT_UNAVAILABLE` at once; the next successful batch clears it.

pub mod copies;
pub mod query;
pub mod retention;
mod segments;

pub use segments::{complete_lines, list as list_segments, node_dir};

use crate::limits::{
    AUDIT_BATCH_RECORDS_MAX, AUDIT_CHECKPOINT_EVERY_RECORDS, AUDIT_CHECKPOINT_INTERVAL_MS, AUDIT_QUEUE_MAX,
    AUDIT_RETRY_MS,
};
use keel_audit::{Chain, Record};
use segments::Segment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Record decisions and changes (on by default; off only for tests of
    /// other things and benchmarks comparing the cost).
    pub enabled: bool,
    /// Where the log lives (default `<data_dir>/audit`); its own volume in
    /// production.
    pub dir: Option<PathBuf>,
    /// The longest a call waits for its record to be durable before it is
    /// refused with `AUDIT_UNAVAILABLE`.
    pub write_timeout_ms: u64,
    /// A segment is closed (and a new one started) past this size.
    pub segment_bytes: u64,
    /// Closed segments last written longer ago than this are deleted (this
    /// member's log and its copies; 0: kept for ever).
    pub retention_age_ms: u64,
    /// While a log (own or a copy) is over this many bytes its oldest
    /// closed segments are deleted (0: no bound).
    pub retention_bytes: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            dir: None,
            write_timeout_ms: 250,
            segment_bytes: 64 * 1024 * 1024,
            // 90 days, 10 GiB per log.
            retention_age_ms: 90 * 24 * 3600 * 1000,
            retention_bytes: 10 * 1024 * 1024 * 1024,
        }
    }
}

impl AuditConfig {
    /// Rejects values that cannot work.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=60_000).contains(&self.write_timeout_ms) {
            return Err(("audit.write_timeout_ms", "must be 1..=60000".to_owned()));
        }
        if !(64 * 1024..=1024 * 1024 * 1024).contains(&self.segment_bytes) {
            return Err(("audit.segment_bytes", "must be 65536..=1073741824 (64 KiB to 1 GiB)".to_owned()));
        }
        Ok(())
    }

    /// The log's directory for a node whose data dir is `data_dir`.
    pub fn dir(&self, data_dir: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| data_dir.join("audit"))
    }
}

/// Why a record is not durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The log cannot take records now (failing, queue full, stopped).
    #[error("the audit log is unavailable: {0}")]
    Unavailable(String),
    /// The record was not durable within `write_timeout_ms`.
    #[error("the audit record was not durable within {0:?}")]
    Timeout(Duration),
}

struct Pending {
    records: Vec<Record>,
    done: tokio::sync::oneshot::Sender<Result<Vec<String>, AuditError>>,
}

/// Counters and health, shared by the handle and the writer thread.
#[derive(Debug, Default)]
struct Shared {
    /// The last batch failed (cleared by the next that succeeds).
    failing: AtomicBool,
    /// Monotonic ms (since `origin`) the batch in flight started, 0: none.
    batch_started_ms: AtomicU64,
    records_total: AtomicU64,
    batches_total: AtomicU64,
    /// Must-audit calls refused because their record was not durable.
    refused_total: AtomicU64,
    /// Records that could not be queued and were not awaited by anyone
    /// (security events while the log fails).
    dropped_total: AtomicU64,
    /// The seq of the last durable record.
    last_seq: AtomicU64,
    /// Bytes in the log's segments.
    bytes: AtomicU64,
    /// Copies of other members' logs: origin → (copied, origin's last).
    copies: copies::Lags,
}

/// The node's audit log: a handle to its writer thread (cheap to clone).
#[derive(Clone)]
pub struct AuditLog {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    queue: std::sync::mpsc::SyncSender<Pending>,
    writer: std::thread::JoinHandle<()>,
    shared: Arc<Shared>,
    origin: Instant,
    timeout: Duration,
    node: u64,
    region: String,
    dir: PathBuf,
    public_key: String,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Some(inner) => f.debug_struct("AuditLog").field("dir", &inner.dir).finish(),
            None => f.write_str("AuditLog(disabled)"),
        }
    }
}

impl AuditLog {
    /// No audit (tests of other parts, `audit.enabled = false`): every
    /// record is accepted with an empty id.
    pub fn disabled() -> AuditLog {
        AuditLog { inner: None }
    }

    /// Opens (or creates) node `node`'s log under `config.dir(data_dir)`
    /// and starts its writer thread.
    pub fn open(config: &AuditConfig, data_dir: &Path, node: u64, region: &str) -> std::io::Result<AuditLog> {
        if !config.enabled {
            return Ok(AuditLog::disabled());
        }
        let dir = config.dir(data_dir);
        let key = segments::signing_key(&dir.join("signing.key"))?;
        let own = node_dir(&dir, node);
        let (segment, chain) = Segment::open(&own, node)?;
        let shared = Arc::new(Shared::default());
        shared.last_seq.store(chain.next_seq().saturating_sub(1), Ordering::Relaxed);
        let bytes: u64 = list_segments(&own)?
            .iter()
            .filter_map(|(_, path)| std::fs::metadata(path).ok().map(|meta| meta.len()))
            .sum();
        shared.bytes.store(bytes, Ordering::Relaxed);
        let (queue, waiting) = std::sync::mpsc::sync_channel(AUDIT_QUEUE_MAX);
        let public_key = hex::encode(key.verifying_key().as_bytes());
        let writer = Writer {
            dir: own,
            segment,
            chain,
            key,
            region: region.to_owned(),
            segment_bytes: config.segment_bytes,
            since_checkpoint: 0,
            shared: Arc::clone(&shared),
            origin: Instant::now(),
        };
        let origin = writer.origin;
        let writer = std::thread::Builder::new().name("audit-writer".to_owned()).spawn(move || writer.run(waiting))?;
        Ok(AuditLog {
            inner: Some(Arc::new(Inner {
                queue,
                writer,
                shared,
                origin,
                timeout: Duration::from_millis(config.write_timeout_ms),
                node,
                region: region.to_owned(),
                dir,
                public_key,
            })),
        })
    }

    /// Stops the writer (after it signs what is unsigned) and waits for it,
    /// when this is the last handle.
    pub fn close(self) {
        if let Some(inner) = self.inner.and_then(|inner| Arc::try_unwrap(inner).ok()) {
            let Inner { queue, writer, .. } = inner;
            drop(queue);
            let _ = writer.join();
        }
    }

    /// The seq of this node's last durable record.
    pub fn last_seq(&self) -> u64 {
        self.inner.as_deref().map_or(0, |inner| inner.shared.last_seq.load(Ordering::Acquire))
    }

    /// The bytes this member's own log holds (after retention).
    pub fn set_bytes(&self, bytes: u64) {
        if let Some(inner) = &self.inner {
            inner.shared.bytes.store(bytes, Ordering::Relaxed);
        }
    }

    /// Where this member's copy of `origin`'s log stands.
    pub fn set_copy_lag(&self, origin: u64, copied: u64, origin_last: u64) {
        if let Some(inner) = &self.inner {
            let mut copies = inner.shared.copies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            copies.insert(origin, (copied, origin_last));
        }
    }

    /// The log of member `origin` as this member holds it: its own, or its
    /// copy (`None`: disabled).
    pub fn log_dir_of(&self, origin: u64) -> Option<PathBuf> {
        let inner = self.inner.as_deref()?;
        Some(if origin == inner.node { node_dir(&inner.dir, origin) } else { copies::copy_dir(&inner.dir, origin) })
    }

    /// Whether records are kept.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The log's directory (`None`: disabled).
    pub fn dir(&self) -> Option<&Path> {
        self.inner.as_deref().map(|inner| inner.dir.as_path())
    }

    /// This node's own log (`None`: disabled).
    pub fn own_dir(&self) -> Option<PathBuf> {
        self.inner.as_deref().map(|inner| node_dir(&inner.dir, inner.node))
    }

    /// The checkpoint signing key (hex), empty when disabled.
    pub fn public_key(&self) -> &str {
        self.inner.as_deref().map(|inner| inner.public_key.as_str()).unwrap_or("")
    }

    /// Whether the log is failing: the last batch failed, or the batch in
    /// flight has taken longer than the bound (a stalled volume).
    pub fn is_failing(&self) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        if inner.shared.failing.load(Ordering::Acquire) {
            return true;
        }
        let started = inner.shared.batch_started_ms.load(Ordering::Acquire);
        let now = u64::try_from(inner.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        started != 0 && now.saturating_sub(started) > u64::try_from(inner.timeout.as_millis()).unwrap_or(u64::MAX)
    }

    /// A record with this node's identity and the wall clock filled in.
    pub fn stamp(&self, mut record: Record) -> Record {
        if let Some(inner) = &self.inner {
            record.node = inner.node;
            record.region.clone_from(&inner.region);
        }
        record.time_ms = wall_ms();
        record
    }

    /// Makes `records` durable (in this order, one batch) and answers their
    /// ids, within the bound; a failing log refuses at once.
    pub async fn record(&self, records: Vec<Record>) -> Result<Vec<String>, AuditError> {
        let Some(inner) = &self.inner else {
            return Ok(vec![String::new(); records.len()]);
        };
        let refused = |error: AuditError| {
            inner.shared.refused_total.fetch_add(1, Ordering::Relaxed);
            error
        };
        if self.is_failing() {
            return Err(refused(AuditError::Unavailable("the last write failed or is stuck".to_owned())));
        }
        let (done, answer) = tokio::sync::oneshot::channel();
        inner.queue.try_send(Pending { records, done }).map_err(|error| {
            refused(AuditError::Unavailable(match error {
                std::sync::mpsc::TrySendError::Full(_) => "AUDIT_QUEUE_MAX records are waiting".to_owned(),
                std::sync::mpsc::TrySendError::Disconnected(_) => "the writer stopped".to_owned(),
            }))
        })?;
        match tokio::time::timeout(inner.timeout, answer).await {
            Ok(Ok(result)) => result.map_err(refused),
            Ok(Err(_)) => Err(refused(AuditError::Unavailable("the writer stopped".to_owned()))),
            Err(_) => Err(refused(AuditError::Timeout(inner.timeout))),
        }
    }

    /// Queues `record` without waiting (security events: the call is
    /// refused either way). A record that cannot be queued is counted in
    /// `keel_audit_dropped_total`, never dropped silently.
    pub fn record_later(&self, record: Record) {
        let Some(inner) = &self.inner else {
            return;
        };
        let (done, _) = tokio::sync::oneshot::channel();
        if inner.queue.try_send(Pending { records: vec![record], done }).is_err() {
            inner.shared.dropped_total.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    segment: Option<Segment>,
    chain: Chain,
    key: ed25519_dalek::SigningKey,
    region: String,
    segment_bytes: u64,
    since_checkpoint: u64,
    shared: Arc<Shared>,
    origin: Instant,
}

impl Writer {
    fn run(mut self, waiting: std::sync::mpsc::Receiver<Pending>) {
        use std::sync::mpsc::RecvTimeoutError;
        let idle = Duration::from_millis(AUDIT_CHECKPOINT_INTERVAL_MS);
        let retry = Duration::from_millis(AUDIT_RETRY_MS);
        loop {
            let failing = self.shared.failing.load(Ordering::Acquire);
            let first = match waiting.recv_timeout(if failing { retry } else { idle }) {
                Ok(pending) => pending,
                Err(RecvTimeoutError::Timeout) => {
                    // Idle: sign what is not signed yet. Failing: a
                    // checkpoint is the probe that finds the disk back.
                    if failing || self.since_checkpoint > 0 {
                        let probe = self.write(&mut [], true);
                        if failing && probe.is_ok() {
                            self.shared.failing.store(false, Ordering::Release);
                            tracing::warn!(dir = %self.dir.display(), "audit log writes again");
                        }
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    if self.since_checkpoint > 0 {
                        let _ = self.write(&mut [], true);
                    }
                    return;
                }
            };
            let mut batch = vec![first];
            let mut records = batch[0].records.len();
            while records < AUDIT_BATCH_RECORDS_MAX {
                match waiting.try_recv() {
                    Ok(pending) => {
                        records += pending.records.len();
                        batch.push(pending);
                    }
                    Err(_) => break,
                }
            }
            let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
            self.shared.batch_started_ms.store(now, Ordering::Release);
            let counts: Vec<usize> = batch.iter().map(|pending| pending.records.len()).collect();
            let result = self.write(&mut batch, false);
            self.shared.batch_started_ms.store(0, Ordering::Release);
            match result {
                Ok(ids) => {
                    if self.shared.failing.swap(false, Ordering::AcqRel) {
                        tracing::warn!(dir = %self.dir.display(), "audit log writes again");
                    }
                    let mut ids = ids.into_iter();
                    for (pending, count) in batch.into_iter().zip(counts) {
                        let mine: Vec<String> = ids.by_ref().take(count).collect();
                        let _ = pending.done.send(Ok(mine));
                    }
                }
                Err(error) => {
                    if !self.shared.failing.swap(true, Ordering::AcqRel) {
                        tracing::error!(%error, dir = %self.dir.display(), "audit log write failed: must-audit calls are refused");
                    }
                    for pending in batch {
                        let _ = pending.done.send(Err(AuditError::Unavailable(error.to_string())));
                    }
                }
            }
        }
    }

    /// Seals the batch's records (plus a checkpoint when due, or when
    /// `checkpoint`), writes them with one fdatasync, and answers their ids.
    /// On failure the chain is as before.
    fn write(&mut self, batch: &mut [Pending], checkpoint: bool) -> std::io::Result<Vec<String>> {
        let before = self.chain.clone();
        let since_before = self.since_checkpoint;
        let result = self.write_inner(batch, checkpoint);
        if result.is_err() {
            self.chain = before;
            self.since_checkpoint = since_before;
        }
        result
    }

    fn write_inner(&mut self, batch: &mut [Pending], checkpoint: bool) -> std::io::Result<Vec<String>> {
        let full = self.segment.as_ref().is_none_or(|segment| segment.len() >= self.segment_bytes);
        if full {
            self.segment = Some(Segment::create(&self.dir, self.chain.next_seq())?);
        }
        let segment = self.segment.as_mut().ok_or_else(|| std::io::Error::other("no open segment"))?;
        if segment.is_dirty()? {
            segment.rewind()?;
        }
        let mut bytes = Vec::new();
        // Every segment starts with a checkpoint anchoring the previous head.
        if segment.len() == 0 {
            self.seal_checkpoint(&mut bytes)?;
        }
        let mut ids = Vec::new();
        for pending in batch.iter_mut() {
            for record in std::mem::take(&mut pending.records) {
                let id = format!("{}-{}", self.chain.node(), self.chain.next_seq());
                let line = self.chain.seal(record).map_err(std::io::Error::other)?;
                bytes.extend_from_slice(&line);
                bytes.push(b'\n');
                ids.push(id);
                self.since_checkpoint += 1;
            }
        }
        if checkpoint || self.since_checkpoint >= AUDIT_CHECKPOINT_EVERY_RECORDS {
            self.seal_checkpoint(&mut bytes)?;
        }
        let segment = self.segment.as_mut().ok_or_else(|| std::io::Error::other("no open segment"))?;
        segment.append_durably(&bytes)?;
        self.shared.records_total.fetch_add(ids.len() as u64, Ordering::Relaxed);
        self.shared.batches_total.fetch_add(1, Ordering::Relaxed);
        self.shared.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.shared.last_seq.store(self.chain.next_seq().saturating_sub(1), Ordering::Release);
        Ok(ids)
    }

    fn seal_checkpoint(&mut self, bytes: &mut Vec<u8>) -> std::io::Result<()> {
        let line = self.chain.checkpoint(&self.key, wall_ms(), &self.region).map_err(std::io::Error::other)?;
        bytes.extend_from_slice(&line);
        bytes.push(b'\n');
        self.since_checkpoint = 0;
        Ok(())
    }
}

impl prometheus_client::collector::Collector for AuditLog {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let shared = &inner.shared;
        let counters = [
            ("keel_audit_records", "Audit records made durable on this node", &shared.records_total),
            ("keel_audit_batches", "Audit write batches (one fdatasync each)", &shared.batches_total),
            (
                "keel_audit_refused",
                "Must-audit calls refused because their record was not durable in time (AUDIT_UNAVAILABLE)",
                &shared.refused_total,
            ),
            (
                "keel_audit_dropped",
                "Security records that could not be queued (the audit log was full or failing)",
                &shared.dropped_total,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        let gauges = [
            ("keel_audit_failing", "1 while the audit log cannot write", u64::from(self.is_failing())),
            ("keel_audit_last_seq", "Seq of the last durable audit record", shared.last_seq.load(Ordering::Relaxed)),
            ("keel_audit_bytes", "Bytes in this node's audit segments", shared.bytes.load(Ordering::Relaxed)),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let copies: Vec<(u64, (u64, u64))> = {
            let copies = shared.copies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            copies.iter().map(|(origin, lag)| (*origin, *lag)).collect()
        };
        if !copies.is_empty() {
            {
                let mut family = encoder.encode_descriptor(
                    "keel_audit_copy_lag_records",
                    "Records of another member's audit log not copied to this member, as of the last pull",
                    None,
                    prometheus_client::metrics::MetricType::Gauge,
                )?;
                for (origin, (copied, origin_last)) in &copies {
                    let labels = [("origin", origin.to_string())];
                    let gauge = ConstGauge::new(i64::try_from(origin_last.saturating_sub(*copied)).unwrap_or(i64::MAX));
                    gauge.encode(family.encode_family(&labels)?)?;
                }
            }
            let mut family = encoder.encode_descriptor(
                "keel_audit_copy_last_seq",
                "Seq of the last record of another member's audit log copied to this member",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (origin, (copied, _)) in &copies {
                let labels = [("origin", origin.to_string())];
                let gauge = ConstGauge::new(i64::try_from(*copied).unwrap_or(i64::MAX));
                gauge.encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_audit::Kind;
    use std::io::Write as _;

    fn config(segment_bytes: u64) -> AuditConfig {
        AuditConfig { segment_bytes, ..AuditConfig::default() }
    }

    fn admission(n: usize) -> Record {
        Record {
            kind: Kind::Admission,
            tenant: if n.is_multiple_of(2) { "acme" } else { "beta" }.to_owned(),
            engine: "billing".to_owned(),
            action: "refund".to_owned(),
            decision: "allowed".to_owned(),
            reason: "OK".to_owned(),
            detail: "x".repeat(200),
            ..Record::default()
        }
    }

    #[tokio::test]
    async fn records_are_durable_in_order_and_a_reopened_log_continues_its_chain() -> anyhow::Result<()> {
        let data = tempfile::tempdir()?;
        let log = AuditLog::open(&config(64 * 1024 * 1024), data.path(), 7, "eu")?;
        let first = log.record((0..3).map(admission).collect()).await?;
        let second = log.record(vec![admission(3)]).await?;
        // A checkpoint opens the segment: records are 2..=5.
        assert_eq!(first, ["7-2", "7-3", "7-4"]);
        assert_eq!(second, ["7-5"]);
        let dir = log.own_dir().expect("enabled");
        log.close();
        let log = AuditLog::open(&config(64 * 1024 * 1024), data.path(), 7, "eu")?;
        let next = log.record(vec![admission(4)]).await?;
        // 6 is the checkpoint written when the first writer closed.
        assert_eq!(next, ["7-7"]);
        log.close();
        let summary = query::verify(&dir)?.map_err(|(_, problem)| anyhow::anyhow!("{problem}"))?;
        assert_eq!((summary.node, summary.first_seq, summary.last_seq), (7, 1, 8));
        assert_eq!(summary.checkpoints, 3);
        Ok(())
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_when_the_log_is_opened() -> anyhow::Result<()> {
        let data = tempfile::tempdir()?;
        let log = AuditLog::open(&config(64 * 1024 * 1024), data.path(), 1, "eu")?;
        log.record(vec![admission(0)]).await?;
        let dir = log.own_dir().expect("enabled");
        log.close();
        let (_, last) = list_segments(&dir)?.pop().expect("a segment");
        std::fs::OpenOptions::new().append(true).open(&last)?.write_all(b"{\"seq\":99,\"prev")?;
        let log = AuditLog::open(&config(64 * 1024 * 1024), data.path(), 1, "eu")?;
        assert_eq!(log.record(vec![admission(1)]).await?, ["1-4"]);
        log.close();
        assert!(query::verify(&dir)?.is_ok());
        Ok(())
    }

    #[tokio::test]
    async fn segments_roll_each_starts_signed_and_the_rest_verifies_without_the_oldest() -> anyhow::Result<()> {
        let data = tempfile::tempdir()?;
        let log = AuditLog::open(&config(64 * 1024), data.path(), 2, "eu")?;
        for batch in 0..40 {
            log.record((0..25).map(|n| admission(batch * 25 + n)).collect()).await?;
        }
        let dir = log.own_dir().expect("enabled");
        log.close();
        let segments = list_segments(&dir)?;
        assert!(segments.len() >= 3, "{segments:?}");
        for (first_seq, path) in &segments {
            let text = std::fs::read_to_string(path)?;
            let first: Record = serde_json::from_str(text.lines().next().expect("a line"))?;
            assert_eq!((first.seq, first.kind), (*first_seq, Kind::Checkpoint));
        }
        assert!(query::verify(&dir)?.is_ok());
        std::fs::remove_file(&segments[0].1)?;
        let summary = query::verify(&dir)?.map_err(|(_, problem)| anyhow::anyhow!("{problem}"))?;
        assert_eq!(summary.first_seq, segments[1].0);
        Ok(())
    }

    #[tokio::test]
    async fn a_scan_pages_through_the_matching_records_once() -> anyhow::Result<()> {
        let data = tempfile::tempdir()?;
        let log = AuditLog::open(&config(64 * 1024), data.path(), 3, "eu")?;
        for batch in 0..10 {
            log.record((0..30).map(|n| admission(batch * 30 + n)).collect()).await?;
        }
        let dir = log.own_dir().expect("enabled");
        log.close();
        let filter = query::Filter { tenant: "acme".to_owned(), ..query::Filter::default() };
        let (mut seen, mut after) = (Vec::new(), 0);
        for _ in 0..100 {
            let page = query::scan(&dir, after, &filter, 7)?;
            seen.extend(page.records.iter().map(|record| record.seq));
            match page.next_after_seq {
                Some(next) => after = next,
                None => break,
            }
        }
        assert_eq!(seen.len(), 150);
        assert!(seen.windows(2).all(|pair| pair[0] < pair[1]));
        Ok(())
    }

    #[tokio::test]
    async fn a_disabled_log_accepts_everything_with_empty_ids() -> anyhow::Result<()> {
        let log = AuditLog::disabled();
        assert_eq!(log.record(vec![admission(0), admission(1)]).await?, ["", ""]);
        assert!(!log.is_failing());
        Ok(())
    }
}
