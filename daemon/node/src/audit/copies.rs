//! Copies of the other members' audit logs, so a member's records outlive
//! its disk.
//!
//! ```text
//!  every AUDIT_COPY_INTERVAL_MS, for each other member M (the Raft membership):
//!    AuditPull{after_seq = last seq of my copy of M} ─► M's peer port ─► lines (≤ AUDIT_PULL_BYTES_MAX per pull)
//!    each line must chain onto my copy (seq + 1, prev = sha256 of my last line) ─► appended to
//!    <audit dir>/copies/node-<M>/<segment>.jsonl (the same files as M's), fdatasync
//!    lag(M) = M's last seq − my copy's last seq   (keel_audit_copy_lag_records{origin})
//! ```
//!
//! A line that does not chain is refused and the copy of that member stops
//! growing (logged, and visible as a growing lag): a member whose log was
//! rewritten is not copied over a good copy. The copy starts at the
//! member's first retained record, which is a signed checkpoint.

use super::segments::{complete_lines, list, sync_dir};
use crate::limits::AUDIT_COPY_INTERVAL_MS;
use keel_audit::Record;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Where this member keeps its copy of `origin`'s log.
pub fn copy_dir(dir: &Path, origin: u64) -> PathBuf {
    dir.join("copies").join(format!("node-{origin}"))
}

/// Why pulled lines were not appended.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A line that does not continue the copy's chain.
    #[error("line for seq {seq} does not chain onto the copy (last seq {last_seq})")]
    Broken {
        /// The refused line's seq.
        seq: u64,
        /// The copy's last seq.
        last_seq: u64,
    },
    /// A line that is not a record.
    #[error("a pulled line is not an audit record: {0}")]
    Undecodable(String),
    /// Writing the copy.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One origin's copy: where its chain ends.
#[derive(Debug)]
pub struct Copy {
    dir: PathBuf,
    last: Option<(u64, [u8; 32])>,
}

impl Copy {
    /// Opens (or starts) the copy in `dir`; a torn last line is cut.
    pub fn open(dir: PathBuf) -> std::io::Result<Copy> {
        std::fs::create_dir_all(&dir)?;
        let mut last = None;
        if let Some((_, path)) = list(&dir)?.pop() {
            let bytes = std::fs::read(&path)?;
            let (lines, complete) = complete_lines(&bytes);
            if complete != bytes.len() {
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(complete as u64)?;
                file.sync_data()?;
            }
            if let Some(line) = lines.last()
                && let Ok(record) = serde_json::from_slice::<Record>(line)
            {
                last = Some((record.seq, keel_audit::line_hash(line)));
            }
        }
        Ok(Copy { dir, last })
    }

    /// Moves this copy aside (`node-<id>.superseded-<unix ms>`) and starts
    /// an empty one in its place.
    pub fn supersede(&mut self) -> Result<(), CopyError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis())
            .unwrap_or(0);
        let mut aside = self.dir.clone().into_os_string();
        aside.push(format!(".superseded-{now}"));
        std::fs::rename(&self.dir, &aside)?;
        std::fs::create_dir_all(&self.dir)?;
        if let Some(parent) = self.dir.parent() {
            sync_dir(parent)?;
        }
        tracing::warn!(copy = %self.dir.display(), aside = ?aside, "a member started a new audit log: its old copy is kept aside");
        self.last = None;
        Ok(())
    }

    /// The last seq copied (0: none).
    pub fn last_seq(&self) -> u64 {
        self.last.map_or(0, |(seq, _)| seq)
    }

    /// Appends pulled chunks (segment first seq, lines) after checking each
    /// line chains onto the copy; what chained before a bad line is kept.
    pub fn append(&mut self, chunks: &[(u64, Vec<u8>)]) -> Result<(), CopyError> {
        let mut result = Ok(());
        'chunks: for (segment, lines) in chunks {
            let path = self.dir.join(format!("{segment:020}.jsonl"));
            let is_new = !path.exists();
            let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
            if is_new {
                sync_dir(&self.dir)?;
            }
            let (lines, _) = complete_lines(lines);
            let mut accepted = Vec::new();
            for line in lines {
                let record: Record = match serde_json::from_slice(line) {
                    Ok(record) => record,
                    Err(error) => {
                        result = Err(CopyError::Undecodable(error.to_string()));
                        file.write_all(&accepted)?;
                        file.sync_data()?;
                        break 'chunks;
                    }
                };
                let chains = match self.last {
                    None => record.kind == keel_audit::Kind::Checkpoint || record.seq == 1,
                    Some((seq, hash)) => record.seq == seq.saturating_add(1) && record.prev == hex::encode(hash),
                };
                if !chains {
                    result = Err(CopyError::Broken { seq: record.seq, last_seq: self.last_seq() });
                    file.write_all(&accepted)?;
                    file.sync_data()?;
                    break 'chunks;
                }
                accepted.extend_from_slice(line);
                accepted.push(b'\n');
                self.last = Some((record.seq, keel_audit::line_hash(line)));
            }
            file.write_all(&accepted)?;
            file.sync_data()?;
        }
        result
    }
}

/// Per origin: (copied last seq, origin's last seq as last heard).
pub type Lags = std::sync::Mutex<BTreeMap<u64, (u64, u64)>>;

/// The members to copy from: (node id, peer address), read afresh each round
/// (the replica's membership; the audit floor sits below the replica).
pub type Members = Box<dyn Fn() -> Vec<(u64, String)> + Send + Sync>;

/// Pulls every other member's new records every `AUDIT_COPY_INTERVAL_MS`
/// until `stop`.
pub async fn run(
    audit: super::AuditLog,
    own: u64,
    members: Members,
    channels: std::sync::Arc<crate::raft::peer_channels::PeerChannels>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(dir) = audit.dir().map(Path::to_path_buf) else {
        return;
    };
    let mut copies: BTreeMap<u64, std::sync::Arc<std::sync::Mutex<Copy>>> = BTreeMap::new();
    let mut broken: BTreeMap<u64, bool> = BTreeMap::new();
    let interval = std::time::Duration::from_millis(AUDIT_COPY_INTERVAL_MS);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let members: Vec<(u64, String)> = members().into_iter().filter(|(id, _)| *id != own).collect();
        for (origin, peer_addr) in members {
            if broken.get(&origin).copied().unwrap_or(false) {
                continue;
            }
            let copy = match copies.get(&origin) {
                Some(copy) => std::sync::Arc::clone(copy),
                None => match Copy::open(copy_dir(&dir, origin)) {
                    Ok(copy) => {
                        let copy = std::sync::Arc::new(std::sync::Mutex::new(copy));
                        copies.insert(origin, std::sync::Arc::clone(&copy));
                        copy
                    }
                    Err(error) => {
                        tracing::warn!(origin, %error, "cannot open the audit copy");
                        continue;
                    }
                },
            };
            let after_seq = lock(&copy).last_seq();
            let request = keel_proto::raft::v1::AuditPullRequest { after_seq };
            let pulled = channels
                .call(
                    &peer_addr,
                    interval.max(std::time::Duration::from_secs(2)),
                    request,
                    |mut client, request| async move { client.audit_pull(request).await },
                )
                .await;
            let pulled = match pulled {
                Ok(pulled) => pulled,
                Err(error) => {
                    tracing::debug!(origin, %error, "pulling a member's audit records failed");
                    continue;
                }
            };
            if pulled.node != origin {
                continue;
            }
            // A log never shrinks, and pulls carry durable lines only: a
            // member whose last seq is below the copy's started a new log
            // (its disk was replaced). The old copy is kept aside, not
            // overwritten, and the new log is copied afresh next round.
            if pulled.last_seq < lock(&copy).last_seq() {
                let superseded = {
                    let copy = std::sync::Arc::clone(&copy);
                    tokio::task::spawn_blocking(move || lock(&copy).supersede()).await
                };
                if let Ok(Err(error)) = superseded {
                    tracing::warn!(origin, %error, "cannot set the old audit copy aside");
                }
                continue;
            }
            let chunks: Vec<(u64, Vec<u8>)> =
                pulled.chunks.into_iter().map(|chunk| (chunk.segment, chunk.lines)).collect();
            let appended = {
                let copy = std::sync::Arc::clone(&copy);
                tokio::task::spawn_blocking(move || lock(&copy).append(&chunks)).await
            };
            match appended {
                Ok(Ok(())) => {}
                Ok(Err(CopyError::Io(error))) => tracing::warn!(origin, %error, "writing the audit copy failed"),
                Ok(Err(error)) => {
                    tracing::error!(origin, %error, "member's audit log does not chain onto this member's copy: copy stopped");
                    broken.insert(origin, true);
                }
                Err(error) => tracing::warn!(origin, %error, "the audit copy task failed"),
            }
            audit.set_copy_lag(origin, lock(&copy).last_seq(), pulled.last_seq);
        }
    }
}

fn lock(copy: &std::sync::Mutex<Copy>) -> std::sync::MutexGuard<'_, Copy> {
    copy.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_audit::Chain;

    #[test]
    fn a_copy_takes_lines_that_chain_and_refuses_the_rest() -> anyhow::Result<()> {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let mut chain = Chain::new(4);
        let mut lines = chain.checkpoint(&key, 1, "eu")?;
        lines.push(b'\n');
        for _ in 0..3 {
            lines.extend(chain.seal(Record::default())?);
            lines.push(b'\n');
        }
        let dir = tempfile::tempdir()?;
        let mut copy = Copy::open(dir.path().join("node-4"))?;
        copy.append(&[(1, lines.clone())])?;
        assert_eq!(copy.last_seq(), 4);
        // The same lines again do not chain (seq 1 after 4).
        assert!(matches!(copy.append(&[(1, lines)]), Err(CopyError::Broken { seq: 1, last_seq: 4 })));
        // Reopened, it continues where it was.
        let mut copy = Copy::open(dir.path().join("node-4"))?;
        let mut more = chain.seal(Record::default())?;
        more.push(b'\n');
        copy.append(&[(1, more)])?;
        assert_eq!(copy.last_seq(), 5);
        assert!(super::super::query::verify(&dir.path().join("node-4"))?.is_ok());
        Ok(())
    }
}
