//! Retention: whole closed segments are deleted, oldest first, once they
//! are older than `audit.retention_age_ms` (by their last write) or while
//! a log (this member's own, or a copy) is over `audit.retention_bytes`.
//! The newest segment of a log is never deleted. Every segment starts with
//! a signed checkpoint, so what remains still verifies from its first
//! record (`keel_audit::Verifier` anchors at it).

use super::segments::list;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Deletes what `age` and `bytes` (0: no bound) say may go from the log in
/// `dir`; answers the bytes left.
pub fn apply(dir: &Path, age: Duration, bytes: u64, now: SystemTime) -> std::io::Result<u64> {
    let segments = list(dir)?;
    let mut sized = Vec::with_capacity(segments.len());
    for (_, path) in segments {
        let meta = std::fs::metadata(&path)?;
        sized.push((path, meta.len(), meta.modified().unwrap_or(now)));
    }
    let mut total: u64 = sized.iter().map(|(_, len, _)| len).sum();
    let closed = sized.len().saturating_sub(1);
    let mut removed = false;
    for (path, len, modified) in sized.into_iter().take(closed) {
        let too_old = !age.is_zero() && now.duration_since(modified).unwrap_or_default() > age;
        let too_big = bytes > 0 && total > bytes;
        if !too_old && !too_big {
            break;
        }
        std::fs::remove_file(&path)?;
        total = total.saturating_sub(len);
        removed = true;
        tracing::info!(segment = %path.display(), too_old, too_big, "audit segment removed by retention");
    }
    if removed {
        super::segments::sync_dir(dir)?;
    }
    Ok(total)
}

/// Applies retention to this member's log and its copies every
/// `AUDIT_RETENTION_INTERVAL_MS` until `stop`.
pub async fn run(audit: super::AuditLog, age: Duration, bytes: u64, mut stop: tokio::sync::watch::Receiver<bool>) {
    let (Some(own), Some(dir)) = (audit.own_dir(), audit.dir().map(Path::to_path_buf)) else {
        return;
    };
    if age.is_zero() && bytes == 0 {
        return;
    }
    let interval = Duration::from_millis(crate::limits::AUDIT_RETENTION_INTERVAL_MS);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let (own, dir) = (own.clone(), dir.clone());
        let applied = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let now = SystemTime::now();
            let left = apply(&own, age, bytes, now)?;
            let copies = dir.join("copies");
            if let Ok(entries) = std::fs::read_dir(&copies) {
                for entry in entries.flatten() {
                    apply(&entry.path(), age, bytes, now)?;
                }
            }
            Ok(left)
        })
        .await;
        match applied {
            Ok(Ok(left)) => audit.set_bytes(left),
            Ok(Err(error)) => tracing::warn!(%error, "audit retention failed"),
            Err(error) => tracing::warn!(%error, "audit retention task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn old_or_excess_segments_go_oldest_first_and_the_rest_verifies() -> anyhow::Result<()> {
        let data = tempfile::tempdir()?;
        let config = super::super::AuditConfig { segment_bytes: 64 * 1024, ..Default::default() };
        let log = super::super::AuditLog::open(&config, data.path(), 5, "eu")?;
        for _ in 0..40 {
            let records = (0..25)
                .map(|_| keel_audit::Record { detail: "x".repeat(200), ..keel_audit::Record::default() })
                .collect();
            log.record(records).await?;
        }
        let dir = log.own_dir().expect("enabled");
        log.close();
        let before = list(&dir)?;
        assert!(before.len() >= 3, "{before:?}");
        let now = SystemTime::now();
        // No bound: nothing goes.
        apply(&dir, Duration::ZERO, 0, now)?;
        assert_eq!(list(&dir)?.len(), before.len());
        // A byte bound below one segment: all but the newest go.
        apply(&dir, Duration::ZERO, 1, now)?;
        assert_eq!(list(&dir)?, before[before.len() - 1..].to_vec());
        assert!(super::super::query::verify(&dir)?.is_ok());
        Ok(())
    }

    #[tokio::test]
    async fn an_age_bound_removes_segments_last_written_before_it() -> anyhow::Result<()> {
        let data = tempfile::tempdir()?;
        let config = super::super::AuditConfig { segment_bytes: 64 * 1024, ..Default::default() };
        let log = super::super::AuditLog::open(&config, data.path(), 6, "eu")?;
        for _ in 0..20 {
            let records = (0..25)
                .map(|_| keel_audit::Record { detail: "y".repeat(200), ..keel_audit::Record::default() })
                .collect();
            log.record(records).await?;
        }
        let dir = log.own_dir().expect("enabled");
        log.close();
        let before = list(&dir)?;
        assert!(before.len() >= 2);
        // An hour from now, every closed segment is over a minute old.
        apply(&dir, Duration::from_secs(60), 0, SystemTime::now() + Duration::from_secs(3600))?;
        assert_eq!(list(&dir)?.len(), 1);
        assert!(super::super::query::verify(&dir)?.is_ok());
        Ok(())
    }
}
