//! Tests of the Raft storage: openraft's conformance suite against both
//! stores, restart from RocksDB (storage-level and through a real single-node
//! Raft), golden bytes of the persisted formats, and corrupt bytes becoming
//! errors rather than panics.

use super::codec;
use super::log_store::{decode_entry, encode_entry, log_key};
use super::rocks_db::{CF_LOGS, CF_SM, LAYOUT_VERSION, RaftDb, StorageOpenError};
use super::shared_state::SharedState;
use super::snapshot_store::{SnapshotStore, encode_snapshot_data};
use super::{
    ApplyResponse, KeelNode, KeelRaft, KernelStateMachine, MemLogStore, NoPeerNetwork, RocksLogStore, StorageError,
    TypeConfig, open_memory, open_rocks,
};
use keel_kernel::tenant::{TenantSpec, TenantStatus, TenantTier};
use keel_kernel::{Command, Name, Proposal};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine, StorageHelper};
use openraft::testing::{StoreBuilder, Suite, log_id};
use openraft::{
    Entry, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder, ServerState, SnapshotMeta, StoredMembership,
    Vote,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How long a test waits for Raft to reach a state before failing.
const RAFT_WAIT: Duration = Duration::from_secs(10);

struct MemBuilder;

impl StoreBuilder<TypeConfig, MemLogStore, KernelStateMachine> for MemBuilder {
    async fn build(&self) -> Result<((), MemLogStore, KernelStateMachine), StorageError> {
        let (log_store, state_machine) = open_memory(Arc::new(SharedState::default()));
        Ok(((), log_store, state_machine))
    }
}

struct RocksBuilder;

impl StoreBuilder<TypeConfig, RocksLogStore, KernelStateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, RocksLogStore, KernelStateMachine), StorageError> {
        let dir = TempDir::new().map_err(|e| openraft::StorageIOError::write(openraft::AnyError::new(&e)))?;
        let (log_store, state_machine) = open_rocks(dir.path(), Arc::new(SharedState::default()))
            .await
            .map_err(|e| openraft::StorageIOError::write(openraft::AnyError::new(&e)))?;
        Ok((dir, log_store, state_machine))
    }
}

// The suite runs each case on its own tokio runtime, so these are plain tests.
#[test]
fn mem_store_passes_openraft_suite() -> TestResult {
    Suite::<TypeConfig, MemLogStore, KernelStateMachine, MemBuilder, ()>::test_all(MemBuilder)?;
    Ok(())
}

#[test]
fn rocks_store_passes_openraft_suite() -> TestResult {
    Suite::<TypeConfig, RocksLogStore, KernelStateMachine, RocksBuilder, TempDir>::test_all(RocksBuilder)?;
    Ok(())
}

fn name(value: &str) -> Name {
    Name::parse("test", value).expect("test names are valid")
}

fn create_tenant(tenant_id: &str, leader_time_ms: u64) -> Proposal {
    Proposal {
        leader_time_ms,
        semantics_version: keel_kernel::judge::SEMANTICS_VERSION,
        command: Command::CreateTenant {
            spec: TenantSpec {
                tenant_id: name(tenant_id),
                display_name: format!("Tenant {tenant_id}"),
                tier: TenantTier::Basic,
                home_region: name("eu-west"),
                status: TenantStatus::Active,
                enabled_engines: BTreeSet::new(),
            },
        },
        idempotency_key: None,
        actor: None,
    }
}

fn normal(index: u64, proposal: Proposal) -> Entry<TypeConfig> {
    Entry { log_id: log_id(1, 1, index), payload: EntryPayload::Normal(proposal) }
}

fn blank(index: u64) -> Entry<TypeConfig> {
    Entry { log_id: log_id(1, 1, index), payload: EntryPayload::Blank }
}

fn node(peer_addr: &str) -> KeelNode {
    KeelNode {
        client_addr: "127.0.0.1:7400".into(),
        peer_addr: peer_addr.into(),
        region: "eu-west".into(),
        zone: "a".into(),
    }
}

fn single_voter_membership() -> Membership<u64, KeelNode> {
    Membership::new(vec![BTreeSet::from([1])], BTreeMap::from([(1, node("127.0.0.1:7401"))]))
}

fn membership(index: u64) -> Entry<TypeConfig> {
    Entry { log_id: log_id(1, 1, index), payload: EntryPayload::Membership(single_voter_membership()) }
}

/// Six entries from index 0 (where openraft's log starts): blank, membership,
/// two tenants, a duplicate tenant (rejected), one more tenant.
fn six_entries() -> Vec<Entry<TypeConfig>> {
    vec![
        blank(0),
        membership(1),
        normal(2, create_tenant("acme", 1_000)),
        normal(3, create_tenant("beta", 2_000)),
        normal(4, create_tenant("acme", 3_000)),
        normal(5, create_tenant("gamma", 4_000)),
    ]
}

#[tokio::test]
async fn apply_answers_per_entry_kind_and_advances_revision() -> TestResult {
    let shared = Arc::new(SharedState::default());
    let (_log_store, mut state_machine) = open_memory(Arc::clone(&shared));
    let responses = state_machine.apply(six_entries()).await?;
    assert!(matches!(responses[0], ApplyResponse::NoCommand));
    assert!(matches!(responses[1], ApplyResponse::NoCommand));
    assert!(matches!(responses[2], ApplyResponse::Applied(_)));
    assert!(matches!(responses[3], ApplyResponse::Applied(_)));
    assert!(matches!(responses[4], ApplyResponse::Rejected(_)), "{:?}", responses[4]);
    assert!(matches!(responses[5], ApplyResponse::Applied(_)));
    let applied = shared.read();
    assert_eq!(applied.revision(), 5);
    assert_eq!(applied.membership.log_id(), &Some(log_id(1, 1, 1)));
    let acme = applied.kernel.tenants().get(&name("acme")).ok_or("acme exists")?;
    assert_eq!(acme.create_revision, 2, "the revision is the entry's log index");
    Ok(())
}

#[tokio::test]
async fn a_held_state_is_immutable_and_blocks_neither_apply_nor_a_snapshot_build() -> TestResult {
    let shared = Arc::new(SharedState::default());
    let (_log_store, mut state_machine) = open_memory(Arc::clone(&shared));
    let entries = six_entries();
    state_machine.apply(entries[..3].to_vec()).await?;
    // A reader holds the state across a batch and a build (with a lock held
    // by readers, this single thread would deadlock).
    let held = shared.read();
    let (held_revision, held_digest) = (held.revision(), held.kernel.digest());
    state_machine.apply(entries[3..].to_vec()).await?;
    let built = state_machine.get_snapshot_builder().await.build_snapshot().await?;
    assert_eq!(built.meta.last_log_id, Some(log_id(1, 1, 5)));
    assert_eq!(held.revision(), held_revision, "the held state did not move");
    assert_eq!(held.kernel.digest(), held_digest, "the held state did not change");
    assert_eq!(shared.read().revision(), 5);
    // The digest is worked out off the request path: `digest()` reports the
    // last one with its revision and never computes.
    assert_eq!(shared.digest().0, 0, "no digester ran");
    assert_eq!(shared.digest_now().0, 5);
    Ok(())
}

#[tokio::test]
async fn an_entry_judged_under_other_semantics_stops_the_state_machine_and_changes_nothing() -> TestResult {
    let shared = Arc::new(SharedState::default());
    let (_log_store, mut state_machine) = open_memory(Arc::clone(&shared));
    state_machine.apply(vec![blank(1)]).await?;
    let digest = shared.read().kernel.digest();
    let put = Command::PutPolicy {
        name: name("main"),
        source: "package keel.policy\n\ndecision := {\"allow\": true, \"reason\": \"ok\"}\n".into(),
        expected_version: None,
    };
    let proposal = Proposal {
        leader_time_ms: 1,
        semantics_version: keel_kernel::judge::SEMANTICS_VERSION + 1,
        command: put,
        idempotency_key: None,
        actor: None,
    };
    let result = state_machine.apply(vec![normal(2, proposal.clone())]).await;
    assert!(result.is_err(), "a member never judges an entry under other semantics");
    assert_eq!(shared.read().revision(), 1, "the entry is not applied");
    assert_eq!(shared.read().kernel.digest(), digest);
    // Entries that judge nothing do not depend on the semantics.
    let tenant = Proposal { semantics_version: 0, ..create_tenant("acme", 1) };
    assert!(matches!(state_machine.apply(vec![normal(2, tenant)]).await?[0], ApplyResponse::Applied(_)));
    Ok(())
}

#[tokio::test]
async fn rocks_restart_restores_snapshot_then_replays_committed_log() -> TestResult {
    let dir = TempDir::new()?;
    let first = Arc::new(SharedState::default());
    let (digest_at_3, digest_at_5) = {
        let (mut log_store, mut state_machine) = open_rocks(dir.path(), Arc::clone(&first)).await?;
        log_store.blocking_append(six_entries()).await?;
        log_store.save_vote(&Vote::new_committed(1, 1)).await?;
        log_store.save_committed(Some(log_id(1, 1, 5))).await?;
        let entries = six_entries();
        state_machine.apply(entries[..4].to_vec()).await?;
        let built = state_machine.get_snapshot_builder().await.build_snapshot().await?;
        assert_eq!(built.meta.last_log_id, Some(log_id(1, 1, 3)));
        let digest_at_3 = first.digest_now();
        state_machine.apply(entries[4..].to_vec()).await?;
        (digest_at_3, first.digest_now())
    };
    assert_eq!(digest_at_3.0, 3);
    assert_eq!(digest_at_5.0, 5);

    let second = Arc::new(SharedState::default());
    let (mut log_store, mut state_machine) = open_rocks(dir.path(), Arc::clone(&second)).await?;
    assert_eq!(second.digest_now(), digest_at_3, "opening restores the persisted snapshot");
    assert_eq!(second.read().membership.membership(), &single_voter_membership());
    assert_eq!(log_store.read_vote().await?, Some(Vote::new_committed(1, 1)));
    let snapshot = state_machine.get_current_snapshot().await?.ok_or("snapshot persisted")?;
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 1, 3)));

    // What openraft does at startup: re-apply committed entries after the snapshot.
    let initial = StorageHelper::new(&mut log_store, &mut state_machine).get_initial_state().await?;
    assert_eq!(initial.committed, Some(log_id(1, 1, 5)));
    assert_eq!(second.digest_now(), digest_at_5, "replay reaches the same digest");
    assert!(second.read().kernel.tenants().get(&name("gamma")).is_some());
    Ok(())
}

/// A real single-node Raft on RocksDB: write, snapshot, write, stop, reopen,
/// and find the same state (then keep writing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_raft_on_rocks_survives_restart() -> TestResult {
    let dir = TempDir::new()?;
    let config = Arc::new(
        openraft::Config {
            heartbeat_interval: 50,
            election_timeout_min: 150,
            election_timeout_max: 300,
            snapshot_policy: openraft::SnapshotPolicy::Never,
            ..Default::default()
        }
        .validate()?,
    );

    let first = Arc::new(SharedState::default());
    let raft = start_raft(&dir, Arc::clone(&first), &config).await?;
    raft.initialize(BTreeMap::from([(1, node("127.0.0.1:7401"))])).await?;
    raft.wait(Some(RAFT_WAIT)).state(ServerState::Leader, "leader after initialize").await?;
    let mut last_written = None;
    for (i, tenant) in ["acme", "beta", "gamma"].into_iter().enumerate() {
        let written = raft.client_write(create_tenant(tenant, 1_000 * i as u64)).await?;
        assert!(matches!(written.data, ApplyResponse::Applied(_)), "{:?}", written.data);
        last_written = Some(written.log_id);
    }
    // client_write returns once its entry is applied, so the snapshot covers it exactly.
    raft.trigger().snapshot().await?;
    let snapshot_at = last_written.ok_or("entries written")?;
    raft.wait(Some(RAFT_WAIT)).snapshot(snapshot_at, "snapshot built").await?;
    let rejected = raft.client_write(create_tenant("acme", 9_000)).await?;
    assert!(matches!(rejected.data, ApplyResponse::Rejected(_)), "{:?}", rejected.data);
    raft.client_write(create_tenant("delta", 10_000)).await?;
    let before = first.digest_now();
    raft.shutdown().await?;

    let second = Arc::new(SharedState::default());
    let raft = start_raft(&dir, Arc::clone(&second), &config).await?;
    raft.wait(Some(RAFT_WAIT)).applied_index(Some(before.0), "committed log re-applied").await?;
    assert_eq!(second.digest_now(), before);
    raft.wait(Some(RAFT_WAIT)).state(ServerState::Leader, "leader after restart").await?;
    let written = raft.client_write(create_tenant("epsilon", 11_000)).await?;
    assert!(matches!(written.data, ApplyResponse::Applied(_)), "{:?}", written.data);
    assert!(second.read().kernel.tenants().get(&name("delta")).is_some());
    raft.shutdown().await?;
    Ok(())
}

/// Starts Raft on the RocksDB stores in `dir`. Openraft does not join its
/// state-machine task at shutdown, so a previous instance may still be closing
/// the database: opening is retried, until a deadline, while RocksDB reports
/// its lock held.
async fn start_raft(
    dir: &TempDir,
    shared: Arc<SharedState>,
    config: &Arc<openraft::Config>,
) -> Result<KeelRaft, Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + RAFT_WAIT;
    let (log_store, state_machine) = loop {
        match open_rocks(dir.path(), Arc::clone(&shared)).await {
            Ok(stores) => break stores,
            Err(StorageOpenError::Open { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => return Err(error.into()),
        }
    };
    Ok(KeelRaft::new(1, Arc::clone(config), NoPeerNetwork, log_store, state_machine).await?)
}

// Golden bytes: the persisted log format. If one of these changes, the on-disk
// format changed: bump LOG_ENTRY_FORMAT_VERSION (its docs say what older data does).
// Layout: format version, then bincode (fixint, LE) of Entry { log_id: { term, node_id, index }, payload }.
#[rustfmt::skip]
const GOLDEN_BLANK: &str = concat!(
    "04",                                                       // LOG_ENTRY_FORMAT_VERSION
    "0100000000000000", "0100000000000000", "0700000000000000", // term 1, node 1, index 7
    "00000000",                                                 // EntryPayload::Blank
);
#[rustfmt::skip]
const GOLDEN_MEMBERSHIP: &str = concat!(
    "04",
    "0100000000000000", "0100000000000000", "0800000000000000",
    "02000000",                                                 // EntryPayload::Membership
    "0100000000000000", "0100000000000000", "0100000000000000", // configs: [{1}]
    "0100000000000000", "0100000000000000",                     // nodes: {1: KeelNode}
    "0e00000000000000", "3132372e302e302e313a37343030",         // client_addr "127.0.0.1:7400"
    "0e00000000000000", "3132372e302e302e313a37343031",         // peer_addr "127.0.0.1:7401"
    "0700000000000000", "65752d77657374",                       // region "eu-west"
    "0100000000000000", "61",                                   // zone "a"
);
#[rustfmt::skip]
const GOLDEN_NORMAL: &str = concat!(
    "04",
    "0100000000000000", "0100000000000000", "0900000000000000",
    "01000000",                                                 // EntryPayload::Normal
    "0068e5cf8b010000",                                         // leader_time_ms 1_700_000_000_000
    "02000000",                                                 // semantics_version 2
    "03000000",                                                 // Command::CreateTenant
    "0400000000000000", "61636d65",                             // tenant_id "acme"
    "0b00000000000000", "54656e616e742061636d65",               // display_name "Tenant acme"
    "00000000",                                                 // TenantTier::Basic
    "0700000000000000", "65752d77657374",                       // home_region "eu-west"
    "00000000",                                                 // TenantStatus::Active
    "0000000000000000",                                         // enabled_engines: {}
    "00",                                                       // idempotency_key: None
    "00",                                                       // actor: None
);

#[test]
fn log_entry_encoding_matches_golden_bytes() -> TestResult {
    let cases = [
        (blank(7), GOLDEN_BLANK),
        (membership(8), GOLDEN_MEMBERSHIP),
        (normal(9, create_tenant("acme", 1_700_000_000_000)), GOLDEN_NORMAL),
    ];
    let mut mismatches = Vec::new();
    for (entry, golden) in &cases {
        let encoded = hex::encode(encode_entry(entry)?);
        if encoded != *golden {
            mismatches.push(format!("{entry}: {encoded}"));
        }
    }
    assert!(mismatches.is_empty(), "encodings changed:\n{}", mismatches.join("\n"));
    for (entry, golden) in cases {
        let decoded = decode_entry(&hex::decode(golden)?)?;
        assert_eq!(decoded.log_id, entry.log_id);
        assert_eq!(format!("{:?}", decoded.payload), format!("{:?}", entry.payload));
    }
    Ok(())
}

#[test]
fn corrupt_entry_bytes_are_errors_not_panics() -> TestResult {
    let bytes = encode_entry(&normal(9, create_tenant("acme", 1_700_000_000_000)))?;
    for cut in 0..bytes.len() {
        assert!(decode_entry(&bytes[..cut]).is_err(), "truncated at {cut}");
    }
    // Flipping any byte either fails to decode or decodes to some entry; it never panics.
    for position in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[position] ^= 0xff;
        let _ = decode_entry(&flipped);
    }
    let mut wrong_version = bytes.clone();
    wrong_version[0] = 1;
    assert!(matches!(
        decode_entry(&wrong_version),
        Err(codec::DecodeError::UnsupportedVersion { found: 1, supported: 4 })
    ));
    Ok(())
}

#[tokio::test]
async fn corrupt_log_records_on_disk_are_storage_errors() -> TestResult {
    let dir = TempDir::new()?;
    let (mut log_store, _state_machine) = open_rocks(dir.path(), Arc::default()).await?;
    log_store.blocking_append((1..=5).map(blank)).await?;
    assert_eq!(log_store.try_get_log_entries(1..=5).await?.len(), 5);

    let db = Arc::clone(log_store.db());
    // Garbage under index 3, and an entry for index 4 stored under index 5.
    db.db().put_cf(db.cf(CF_LOGS), log_key(3), b"\x01garbage")?;
    db.db().put_cf(db.cf(CF_LOGS), log_key(5), encode_entry(&blank(4))?)?;

    assert!(log_store.try_get_log_entries(1..3).await.is_ok(), "intact prefix still reads");
    assert!(log_store.try_get_log_entries(1..=3).await.is_err());
    assert!(log_store.try_get_log_entries(5..=5).await.is_err(), "index mismatch");
    assert!(log_store.get_log_state().await.is_err(), "last entry is the mismatched one");

    db.db().delete_cf(db.cf(CF_LOGS), log_key(4))?;
    db.db().put_cf(db.cf(CF_LOGS), log_key(3), encode_entry(&blank(3))?)?;
    db.db().put_cf(db.cf(CF_LOGS), log_key(5), encode_entry(&blank(5))?)?;
    assert!(log_store.try_get_log_entries(1..=5).await.is_err(), "a hole is corruption");
    Ok(())
}

#[tokio::test]
async fn bad_snapshot_is_an_error_and_installs_nothing() -> TestResult {
    let shared = Arc::new(SharedState::default());
    let (_log_store, mut state_machine) = open_memory(Arc::clone(&shared));
    state_machine.apply(six_entries()[..3].to_vec()).await?;
    let before = shared.digest_now();

    // A good snapshot of another state, at index 5.
    let donor = Arc::new(SharedState::default());
    let (_donor_log, mut donor_machine) = open_memory(Arc::clone(&donor));
    donor_machine.apply(six_entries()).await?;
    let good = donor_machine.get_snapshot_builder().await.build_snapshot().await?;
    let good_data = good.snapshot.into_inner();

    let mut truncated = good_data.clone();
    truncated.truncate(good_data.len() - 1);
    let mut bad_kernel = good_data.clone();
    let last = bad_kernel.len() - 1;
    bad_kernel[last] ^= 0xff;
    let mut wrong_meta = good.meta.clone();
    wrong_meta.last_log_id = Some(log_id(1, 1, 4));

    for (meta, data) in
        [(&good.meta, truncated), (&good.meta, bad_kernel), (&wrong_meta, good_data.clone()), (&good.meta, Vec::new())]
    {
        let result = state_machine.install_snapshot(meta, Box::new(Cursor::new(data))).await;
        assert!(result.is_err(), "installing a bad snapshot must fail");
        assert_eq!(shared.digest_now(), before, "a failed install changes nothing");
        assert!(state_machine.get_current_snapshot().await?.is_none());
    }

    state_machine.install_snapshot(&good.meta, Box::new(Cursor::new(good_data))).await?;
    assert_eq!(shared.digest_now(), donor.digest_now());
    assert_eq!(state_machine.applied_state().await?, (Some(log_id(1, 1, 5)), donor.read().membership.clone()));
    Ok(())
}

#[tokio::test]
async fn older_build_never_replaces_a_newer_snapshot() -> TestResult {
    // Openraft builds in a spawned task; an install may land before it finishes.
    let store = SnapshotStore::in_memory();
    let stored = |index: u64| super::snapshot_store::StoredSnapshot {
        meta: SnapshotMeta {
            last_log_id: Some(log_id(1, 1, index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("1-{index}-1"),
        },
        data: Vec::new(),
    };
    store.save_installed(stored(6)).await?;
    assert!(!store.save_built(stored(2)).await?, "an older build is not made current");
    assert_eq!(store.current().await.ok_or("a snapshot is current")?.meta.snapshot_id, "1-6-1");
    assert!(store.save_built(stored(7)).await?);
    assert_eq!(store.current().await.ok_or("a snapshot is current")?.meta.snapshot_id, "1-7-1");
    Ok(())
}

#[tokio::test]
async fn corrupt_persisted_snapshot_refuses_to_open() -> TestResult {
    let dir = TempDir::new()?;
    {
        let (_log_store, mut state_machine) = open_rocks(dir.path(), Arc::default()).await?;
        state_machine.apply(six_entries()).await?;
        state_machine.get_snapshot_builder().await.build_snapshot().await?;
    }
    let damage = |position: fn(usize) -> usize| -> TestResult {
        let db = RaftDb::open(dir.path())?;
        let mut bytes = db.db().get_cf(db.cf(CF_SM), b"snapshot")?.ok_or("snapshot persisted")?;
        let at = position(bytes.len());
        bytes[at] ^= 0xff;
        db.db().put_cf(db.cf(CF_SM), b"snapshot", &bytes)?;
        Ok(())
    };
    // The last byte belongs to the kernel state: the record loads, the state does not restore.
    damage(|len| len - 1)?;
    let result = open_rocks(dir.path(), Arc::default()).await;
    assert!(matches!(result, Err(StorageOpenError::RestoreSnapshot { .. })), "{result:?}");
    // The first byte is the record's format version.
    damage(|_| 0)?;
    let result = open_rocks(dir.path(), Arc::default()).await;
    assert!(matches!(result, Err(StorageOpenError::LoadSnapshot { .. })), "{result:?}");
    Ok(())
}

#[tokio::test]
async fn unknown_layout_version_refuses_to_open() -> TestResult {
    let dir = TempDir::new()?;
    {
        let db = RaftDb::open(dir.path())?;
        db.db().put_cf(db.cf(super::rocks_db::CF_STORE_META), b"layout_version", [LAYOUT_VERSION + 1])?;
    }
    let result = open_rocks(dir.path(), Arc::default()).await;
    assert!(matches!(result, Err(StorageOpenError::UnsupportedLayout { .. })), "{result:?}");
    Ok(())
}

#[test]
fn snapshot_data_round_trips_through_meta_check() -> TestResult {
    let applied = super::shared_state::AppliedState {
        last_applied: Some(log_id(2, 1, 10)),
        membership: StoredMembership::new(Some(log_id(1, 1, 2)), single_voter_membership()),
        ..Default::default()
    };
    let data = encode_snapshot_data(&applied)?;
    let meta = SnapshotMeta {
        last_log_id: applied.last_applied,
        last_membership: applied.membership.clone(),
        snapshot_id: "2-10-1".into(),
    };
    let back = super::snapshot_store::decode_snapshot_data(&data, &meta)?;
    assert_eq!(back.last_applied, applied.last_applied);
    assert_eq!(back.membership, applied.membership);
    assert_eq!(back.kernel.digest(), applied.kernel.digest());
    Ok(())
}
