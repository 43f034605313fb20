//! The node's RocksDB database: one `DB` shared by the log store and the
//! state machine, its column families, its key layout and how it is opened.
//!
//! ```text
//!  <dir>/   (the server passes <data_dir>/raft; one RocksDB, one write-ahead log)
//!    cf "logs"        index as u64 BE   -> [v1] bincode(Entry)               log_store, synced
//!    cf "store_meta"  "layout_version"  -> [LAYOUT_VERSION]                  rocks_db
//!                     "vote"            -> [v1] bincode(Vote)                log_store, synced
//!                     "committed"       -> [v1] bincode(LogId), absent=None  log_store
//!                     "last_purged"     -> [v1] bincode(LogId)               log_store
//!    cf "sm"          "snapshot"        -> [v1] framed {meta, built} + data  snapshot_store, synced
//! ```
//!
//! One database rather than one per store because RocksDB keeps a single
//! write-ahead log for all column families: a write is durable whenever any
//! later synced write is, so the snapshot written before a log purge is always
//! on disk if the purge is. Big-endian index keys make RocksDB's bytewise order
//! the log order, so range deletes and forward scans need no custom comparator.

use super::log_store::RocksLogStore;
use super::shared_state::SharedState;
use super::snapshot_store::{SnapshotLoadError, SnapshotStore};
use super::state_machine::KernelStateMachine;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Options};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// On-disk layout written by this build (column families and keys above).
/// Bumped when the layout changes; an unknown layout refuses to open.
pub const LAYOUT_VERSION: u8 = 1;

pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_STORE_META: &str = "store_meta";
pub(crate) const CF_SM: &str = "sm";
const COLUMN_FAMILIES: [&str; 3] = [CF_LOGS, CF_STORE_META, CF_SM];

const KEY_LAYOUT_VERSION: &[u8] = b"layout_version";

/// Why the Raft storage could not be opened. Fatal: the node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StorageOpenError {
    /// The database directory could not be created.
    #[error("cannot create the Raft storage directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// RocksDB refused to open (corruption, lock held by another process, I/O).
    #[error("cannot open the Raft database at {path}")]
    Open {
        /// The database directory.
        path: PathBuf,
        /// RocksDB's error.
        #[source]
        source: rocksdb::Error,
    },
    /// RocksDB failed to read or write the layout marker.
    #[error("cannot read or write the layout version of the Raft database at {path}")]
    Layout {
        /// The database directory.
        path: PathBuf,
        /// RocksDB's error.
        #[source]
        source: rocksdb::Error,
    },
    /// The database was written with a layout this build does not read.
    #[error("Raft database at {path} has layout {found:?}; this build reads layout {supported}")]
    UnsupportedLayout {
        /// The database directory.
        path: PathBuf,
        /// The marker's bytes.
        found: Vec<u8>,
        /// The layout this build reads.
        supported: u8,
    },
    /// The persisted snapshot could not be read.
    #[error("cannot load the persisted snapshot from the Raft database at {path}")]
    LoadSnapshot {
        /// The database directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: SnapshotLoadError,
    },
    /// The persisted snapshot was read but does not restore (corrupt data).
    #[error("the persisted snapshot in the Raft database at {path} does not restore")]
    RestoreSnapshot {
        /// The database directory.
        path: PathBuf,
        /// What failed (boxed: openraft's storage error is large).
        #[source]
        source: Box<super::StorageError>,
    },
}

/// The opened database. Column family handles are looked up by name on use;
/// all three exist because [`RaftDb::open`] creates them.
pub struct RaftDb {
    db: DB,
    path: PathBuf,
}

impl std::fmt::Debug for RaftDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftDb").field("path", &self.path).finish_non_exhaustive()
    }
}

impl RaftDb {
    /// Opens (creating if missing) the database in directory `path` and checks
    /// its layout version.
    pub fn open(path: &Path) -> Result<RaftDb, StorageOpenError> {
        std::fs::create_dir_all(path)
            .map_err(|source| StorageOpenError::CreateDir { path: path.to_owned(), source })?;
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        // RocksDB's own info logs: keep a few, small.
        db_options.set_keep_log_file_num(4);
        db_options.set_max_log_file_size(8 * 1024 * 1024);
        let descriptors = COLUMN_FAMILIES.map(|name| {
            let mut cf_options = Options::default();
            cf_options.set_compression_type(DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(name, cf_options)
        });
        let db = DB::open_cf_descriptors(&db_options, path, descriptors)
            .map_err(|source| StorageOpenError::Open { path: path.to_owned(), source })?;
        let raft_db = RaftDb { db, path: path.to_owned() };
        raft_db.check_layout()?;
        Ok(raft_db)
    }

    fn check_layout(&self) -> Result<(), StorageOpenError> {
        let layout_error = |source| StorageOpenError::Layout { path: self.path.clone(), source };
        let meta = self.cf(CF_STORE_META);
        match self.db.get_cf(meta, KEY_LAYOUT_VERSION).map_err(layout_error)? {
            Some(found) if found.as_slice() == [LAYOUT_VERSION] => Ok(()),
            Some(found) => {
                Err(StorageOpenError::UnsupportedLayout { path: self.path.clone(), found, supported: LAYOUT_VERSION })
            }
            None => {
                let mut write_options = rocksdb::WriteOptions::default();
                write_options.set_sync(true);
                self.db.put_cf_opt(meta, KEY_LAYOUT_VERSION, [LAYOUT_VERSION], &write_options).map_err(layout_error)
            }
        }
    }

    /// The underlying RocksDB handle.
    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    /// The directory the database lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A column family handle. `name` is one of the `CF_*` constants.
    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        self.db.cf_handle(name).expect("RaftDb::open creates every column family named by a CF_* constant")
    }

    /// Applies `batch` atomically on a blocking thread, so an fsync never
    /// stalls the async runtime. With `is_synced` the call returns only once
    /// the write-ahead log is on disk.
    pub(crate) async fn write(self: &Arc<Self>, batch: rocksdb::WriteBatch, is_synced: bool) -> Result<(), WriteError> {
        let db = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut write_options = rocksdb::WriteOptions::default();
            write_options.set_sync(is_synced);
            db.db.write_opt(batch, &write_options)
        })
        .await
        .map_err(WriteError::TaskFailed)?
        .map_err(WriteError::Rocks)
    }
}

/// Why a batch write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// RocksDB refused the write (I/O error, disk full, corruption).
    #[error("RocksDB write failed")]
    Rocks(#[source] rocksdb::Error),
    /// The blocking write task panicked or was cancelled at runtime shutdown.
    #[error("RocksDB write task did not complete")]
    TaskFailed(#[source] tokio::task::JoinError),
}

/// Opens the Raft storage in directory `dir` (created if missing; the server
/// passes `<data_dir>/raft`): the log store and the state machine over one
/// shared database. If a snapshot was persisted, `shared` is loaded from it,
/// so a restarted node resumes from its snapshot and openraft re-applies the
/// committed log after it.
///
/// Blocks while RocksDB replays its write-ahead log; call it at startup.
pub async fn open_rocks(
    dir: &Path,
    shared: Arc<SharedState>,
) -> Result<(RocksLogStore, KernelStateMachine), StorageOpenError> {
    let db = Arc::new(RaftDb::open(dir)?);
    let snapshots = SnapshotStore::load_rocks(Arc::clone(&db))
        .map_err(|source| StorageOpenError::LoadSnapshot { path: dir.to_owned(), source })?;
    let state_machine = KernelStateMachine::open(shared, snapshots)
        .await
        .map_err(|source| StorageOpenError::RestoreSnapshot { path: dir.to_owned(), source: Box::new(source) })?;
    Ok((RocksLogStore::new(db), state_machine))
}
