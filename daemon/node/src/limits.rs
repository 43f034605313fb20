//! Every bound the node keeps — on connections, requests, watches, peers,
//! judging, transfers and deadlines — as a named constant, in one place.
//! The replicated state's limits (what `apply` enforces) are the kernel's
//! (`keel_kernel::limits`); configuration ranges live with their keys
//! (`config`, `telemetry::config`, `edge::slo`).
//!
//! [`NODE_LIMITS`] lists them by name and value; `/diagz` reports them.

/// `(name, value as u64)` for each constant named.
macro_rules! node_limits {
    ($($name:ident,)*) => { [$((stringify!($name), $name as u64),)*] };
}

// Client port: admission (used in `edge/load_shed.rs`).

/// Requests one node serves at once on its client port (streams excluded).
pub const IN_FLIGHT_REQUESTS_MAX: usize = 1024;
/// Concurrent HTTP/2 streams one client connection may open.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 256;

// Client port: authentication (used in `edge/authn.rs`).

/// Verified tokens the edge remembers (by SHA-256, until their expiry).
pub const AUTH_CACHE_ENTRIES_MAX: usize = 10_000;
/// Bytes of token the edge's cache may hold (each entry charged its token's length).
pub const AUTH_CACHE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Authentication failures one source address may cause per second,
/// sustained (default of `api.auth_failures_per_source_per_s`).
pub const AUTH_FAILURES_PER_SOURCE_PER_S: u32 = 5;
/// Authentication failures one source address may cause in a burst
/// (default of `api.auth_failure_burst`).
pub const AUTH_FAILURE_BURST: u32 = 20;
/// Source addresses whose failures are tracked apart; beyond, they share one budget.
pub const AUTH_FAILURE_SOURCES_MAX: usize = 10_000;

/// How long a stopping leader tries to hand leadership over before it
/// stops anyway (the cluster then elects).
pub const SHUTDOWN_TRANSFER_MS_MAX: u64 = 3_000;
/// How long a stopping node waits for its servers to finish the calls in
/// flight (watch streams, clients that keep connections open) before it
/// stops them.
pub const SHUTDOWN_DRAIN_MS_MAX: u64 = 5_000;

// Audit (used in `audit/`).

/// Record batches waiting for the audit writer; past it a must-audit call
/// is refused at once (`AUDIT_UNAVAILABLE`).
pub const AUDIT_QUEUE_MAX: usize = 16_384;
/// Records written with one fdatasync at most.
pub const AUDIT_BATCH_RECORDS_MAX: usize = 4_096;
/// A signed checkpoint after this many records.
pub const AUDIT_CHECKPOINT_EVERY_RECORDS: u64 = 1_024;
/// ... or after this long idle with unsigned records.
pub const AUDIT_CHECKPOINT_INTERVAL_MS: u64 = 1_000;
/// While failing, the writer probes the disk this often.
pub const AUDIT_RETRY_MS: u64 = 100;
/// How often each member pulls every other member's new audit records.
pub const AUDIT_COPY_INTERVAL_MS: u64 = 500;
/// Bytes of audit lines one pull answers at most.
pub const AUDIT_PULL_BYTES_MAX: usize = 2 * 1024 * 1024;
/// How often retention looks at the audit logs.
pub const AUDIT_RETENTION_INTERVAL_MS: u64 = 60_000;
/// Where audit query pages ended, remembered so the next page seeks there.
pub const AUDIT_RESUME_POINTS_MAX: usize = 4_096;
/// Records one `AuditService.Query` page holds at most.
pub const AUDIT_PAGE_SIZE_MAX: usize = 1_000;
/// Bytes of log one query page reads at most (a selective filter pages on).
pub const AUDIT_QUERY_SCAN_BYTES_MAX: u64 = 64 * 1024 * 1024;

// Admission (used in `admission/` and `api/admission.rs`).

/// Bytes of an admission's `input_json`.
pub const ADMISSION_INPUT_BYTES_MAX: usize = 64 * 1024;
/// Units one admission may charge (`cost`; Envoy's `hits_addend`). The
/// Redis script computes in doubles: cost × the longest emission interval
/// (60 000 000 µs at 1 call/min) plus the time in µs stays below 2^53, so
/// every charge and wait is exact and no reply overflows an integer (which
/// the limiter would take for a Redis failure and answer with the outage
/// mode).
pub const ADMISSION_COST_MAX: u64 = 1_000_000;
/// Rate-limit scopes the in-process limiter tracks at once.
pub const ADMISSION_LOCAL_SCOPES_MAX: usize = 200_000;
/// Admissions in one `AdmitBatch`.
pub const ADMISSION_BATCH_MAX: usize = 256;
/// How often a member whose Redis failed asks it again.
pub const REDIS_PROBE_INTERVAL_MS: u64 = 500;
/// Limit checks waiting for Redis on one member; beyond, a check is
/// answered as an outage at once.
pub const REDIS_QUEUE_MAX: usize = 8_192;
/// Waiting checks sent to Redis in one script run (one round trip).
pub const REDIS_BATCH_CHECKS_MAX: usize = 256;
/// Batches in flight to Redis at once.
pub const REDIS_BATCHES_IN_FLIGHT: usize = 4;
/// While Redis is down, how often one admission asks it again (the others
/// apply the outage mode without waiting).
pub const REDIS_RETRY_WHILE_DOWN_MS: u64 = 100;
/// How long a retry with the same idempotency key is answered with the
/// first admitted decision (and not charged again).
pub const ADMISSION_IDEMPOTENCY_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Parsed engine manifests admission keeps (by engine and version).
pub const ADMISSION_MANIFESTS_CACHED: usize = 4_096;
/// Idempotency records kept in process (without Redis, or in its outage).
pub const ADMISSION_RECORDS_LOCAL_MAX: usize = 100_000;
/// Policy evaluations a member keeps for reuse (by policy version and input).
pub const DECISION_CACHE_ENTRIES_MAX: usize = 10_000;
/// Largest input document whose evaluation is kept.
pub const DECISION_CACHE_INPUT_BYTES_MAX: usize = 16 * 1024;
/// Descriptors in one Envoy `ShouldRateLimit` call.
pub const ENVOY_DESCRIPTORS_MAX: usize = 64;
/// Entries in one Envoy descriptor.
pub const ENVOY_ENTRIES_MAX: usize = 16;
/// Circuit breakers one member tracks (its own, and its view of shared ones).
pub const BREAKERS_LOCAL_MAX: usize = 10_000;
/// Breaker transitions buffered for a slow watcher (older ones are dropped).
pub const BREAKER_TRANSITIONS_BUFFERED: usize = 1_024;
/// How long a member tries to publish one breaker transition event.
pub const BREAKER_EVENT_DEADLINE_MS: u64 = 5_000;
/// Buckets a breaker's error-rate window is counted in.
pub const BREAKER_WINDOW_BUCKETS: usize = 10;
/// How long a shared breaker's state outlives its last report, in windows
/// or cool-downs (whichever is longer).
pub const BREAKER_STATE_TTL_FACTOR: u64 = 10;

// Client port: request ids (used in `edge/observe.rs`).

/// Longest request id taken from a caller; longer ones are replaced.
pub const REQUEST_ID_BYTES_MAX: usize = 64;

// Watches: memory (used in `api/watch_queue.rs`).

/// Bytes queued for one watcher (at least one message of the largest size).
pub const WATCH_WATCHER_BUFFER_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Bytes queued for all watchers of a node together.
pub const WATCH_NODE_BUFFER_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Messages queued for one watcher.
pub const WATCH_WATCHER_BUFFER_MESSAGES_MAX: usize = 16;
/// The largest watch message: a full batch, one more event (a batch ends at
/// a revision boundary) and the message's own fields.
pub const WATCH_MESSAGE_BYTES_MAX: usize =
    WATCH_BATCH_BYTES_MAX + keel_kernel::limits::EVENT_PAYLOAD_BYTES_MAX + 64 * 1024;

// Watches: pacing (used in `api/events.rs`).

/// Idle time before a progress message when the request does not say.
pub const WATCH_PROGRESS_INTERVAL_MS_DEFAULT: u64 = 5_000;
/// Shortest progress interval a request may ask for.
pub const WATCH_PROGRESS_INTERVAL_MS_MIN: u64 = 100;
/// Longest progress interval a request may ask for.
pub const WATCH_PROGRESS_INTERVAL_MS_MAX: u64 = 60_000;
/// How long a full stream may stay full before its watcher is cut off.
pub const WATCH_SEND_TIMEOUT_MS: u64 = 5_000;
/// Events in one watch message.
pub const WATCH_BATCH_EVENTS_MAX: usize = 256;
/// Payload bytes in one watch message (one more event may pass it: a batch
/// ends at a revision boundary). Small, because every message a stalled
/// client has not taken is held once in its queue and once more on its way
/// through the transport.
pub const WATCH_BATCH_BYTES_MAX: usize = 256 * 1024;

// Status (used in `api/cluster.rs`).

/// How long GetStatus waits for each member's progress probe (all run at once).
pub const PROGRESS_PROBE_TIMEOUT_MS: u64 = 500;

// Connections and ops HTTP (used in `server.rs`).

/// HTTP/2 keep-alive ping period on client connections.
pub const HTTP2_KEEPALIVE_INTERVAL_MS: u64 = 10_000;
/// How long a keep-alive ping may go unanswered.
pub const HTTP2_KEEPALIVE_TIMEOUT_MS: u64 = 5_000;
/// How long a snapshot chunk may take to install on a follower.
pub const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 2_000;
/// Ops HTTP connections served at once; more are closed on accept.
pub const OPS_CONNECTIONS_MAX: usize = 64;
/// How long a client may take to send a request's headers.
pub const OPS_HEADER_READ_TIMEOUT_MS: u64 = 5_000;
/// Longest an ops connection may live (one request each: no keep-alive).
pub const OPS_CONNECTION_MS_MAX: u64 = 30_000;

// Peer protocol: replication (used in `raft/network.rs`).

/// Snapshot bytes per InstallSnapshot RPC; openraft's `snapshot_max_chunk_size`.
pub const SNAPSHOT_CHUNK_BYTES_MAX: u64 = 1024 * 1024;
/// Entries per AppendEntries RPC at most; openraft's `max_payload_entries`.
pub const APPEND_ENTRIES_MAX: u64 = 256;
/// Bytes of log entries an AppendEntries batch is cut to. openraft gives an
/// AppendEntries one heartbeat interval to complete — encoding, transfer,
/// decoding — so a batch must cross well within it (bincode moves about
/// 15 MB/s in debug builds, ten times that in release). An entry larger than
/// this still goes, alone, up to [`LOG_ENTRY_WIRE_BYTES_MAX`].
pub const APPEND_ENTRIES_BYTES_MAX: u64 = 512 * 1024;
/// First wait after a peer turned out unreachable; doubles per failure.
pub const PEER_BACKOFF_MIN_MS: u64 = 100;
/// Longest wait between attempts to reach an unreachable peer.
pub const PEER_BACKOFF_MAX_MS: u64 = 1_000;

// Log (used in `raft/log_store.rs`).

/// Largest encoded log entry this store decodes. Proposals arrive through
/// gRPC messages of at most 4 MiB, so anything larger is corruption.
pub const LOG_ENTRY_BYTES_MAX: u64 = 16 * 1024 * 1024;

// Snapshots received (used in `raft/snapshot_reception.rs`).

/// The largest snapshot a member receives. Replicated state is bounded
/// well below it (event history and idempotency records 32 MiB each, plus
/// tenants, engines, policies and keys under their own limits).
pub const SNAPSHOT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

// Peer channels (used in `raft/peer_channels.rs`).

/// How long opening a TCP connection to a peer may take before the call
/// fails as unreachable.
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// HTTP/2 keep-alive ping period on peer connections, also while idle.
pub const PEER_HTTP2_KEEPALIVE_INTERVAL_MS: u64 = 5_000;
/// How long a keep-alive ping may go unanswered before the connection is dropped.
pub const PEER_HTTP2_KEEPALIVE_TIMEOUT_MS: u64 = 3_000;
/// Channels kept at once. Membership names far fewer peers; addresses that
/// left the membership are evicted (oldest address first) past this bound.
pub const PEER_CHANNELS_MAX: usize = 64;

// Judging (used in `judge/mod.rs`).

/// Judgements one node runs at once for requests (`Evaluate`, `Test`,
/// admission, fail-fast checks before proposing), which is also the most
/// judging workers it keeps. `apply` judges serially beside them.
pub const JUDGES_CONCURRENT_MAX: usize = 4;
/// How long `apply` waits for one judgement before retrying it. Generous:
/// the deterministic budgets bound the work, this only catches a hung child.
pub const JUDGE_APPLY_TIMEOUT_MS: u64 = 60_000;
/// Attempts `apply` makes at a judgement the judge could not answer before
/// the member stops.
pub const JUDGE_APPLY_ATTEMPTS_MAX: u32 = 3;
/// Longest a request's judgement may run (less when the request's deadline
/// is nearer). A put whose fail-fast check runs longer is refused before it
/// enters the log.
pub const JUDGE_REQUEST_TIMEOUT_MS: u64 = 10_000;

// Deadlines (used in `replica/mod.rs`).

/// Deadline for a write when the caller sets none.
pub const WRITE_DEADLINE_DEFAULT_MS: u64 = 10_000;
/// Deadline for a linearizable read barrier when the caller sets none.
pub const READ_DEADLINE_DEFAULT_MS: u64 = 5_000;

// Leadership transfer (used in `replica/transfer.rs`).

/// Deadline of a leadership transfer when the caller sets none.
pub const TRANSFER_DEADLINE_DEFAULT_MS: u64 = 10_000;
/// Longest a transfer waits, with writes paused, for the writes in flight
/// and then for the target to hold the whole log. Writes are paused for at
/// most this plus the target's election, and where the old leader's vote
/// and the target's are not a majority (or the old leader is younger than
/// its lease), plus the followers' lease (`election_timeout_max`) and
/// `TRANSFER_LEASE_MARGIN_MS`.
pub const TRANSFER_CATCH_UP_MS_MAX: u64 = 500;
/// How long after the followers' lease the target campaigns.
pub const TRANSFER_LEASE_MARGIN_MS: u64 = 100;

// Membership (used in `replica/membership.rs`).

/// Deadline of a membership change when the caller sets none (a learner may
/// need a snapshot before it has caught up).
pub const MEMBERSHIP_DEADLINE_DEFAULT_MS: u64 = 30_000;

// Members that replace themselves (used in `replica/rejoin.rs`, `replica/replace.rs`).

/// Longest field (address, place, incarnation) of a Rejoin request a member accepts.
pub const REJOIN_FIELD_BYTES_MAX: usize = 256;
/// Longest a rejoining learner may take to catch up before the step fails
/// (the member asks again, and the replacement resumes from the learner).
pub const REJOIN_CATCH_UP_MS_MAX: u64 = 120_000;

// Leadership transfer: the target (used in `replica/peer_service.rs`).

/// The longest a TimeoutNow may ask this node to wait before campaigning
/// a second time.
pub const TIMEOUT_NOW_WAIT_MS_MAX: u64 = 10_000;

// Deadlines (used in `deadline.rs`).

/// The longest deadline honoured; longer ones are capped.
pub const DEADLINE_MAX_MS: u64 = 60_000;

// Clock check (used in `leader_clock.rs`).

/// How often every member checks its wall clock against the voters'.
pub const CLOCK_CHECK_INTERVAL_MS: u64 = 1_000;
/// How long one clock probe may take; slower answers are not counted.
pub const CLOCK_PROBE_DEADLINE_MS: u64 = 500;

// Transport (used in `transport.rs`).

/// TCP keep-alive probe period on accepted connections.
pub const TCP_KEEPALIVE_MS: u64 = 30_000;
/// Bytes buffered in each direction of an in-memory connection.
pub const MEM_CONN_BUFFER_BYTES: usize = 256 * 1024;
/// Connections an in-memory listener queues before `connect` waits.
pub const MEM_ACCEPT_QUEUE_MAX: usize = 64;

/// Every constant above: (name, value).
#[allow(clippy::unnecessary_cast)]
pub const NODE_LIMITS: &[(&str, u64)] = &node_limits![
    IN_FLIGHT_REQUESTS_MAX,
    STREAMS_PER_CONNECTION_MAX,
    AUTH_CACHE_ENTRIES_MAX,
    AUTH_CACHE_BYTES_MAX,
    AUTH_FAILURES_PER_SOURCE_PER_S,
    AUTH_FAILURE_BURST,
    AUTH_FAILURE_SOURCES_MAX,
    SHUTDOWN_TRANSFER_MS_MAX,
    SHUTDOWN_DRAIN_MS_MAX,
    AUDIT_QUEUE_MAX,
    AUDIT_BATCH_RECORDS_MAX,
    AUDIT_CHECKPOINT_EVERY_RECORDS,
    AUDIT_CHECKPOINT_INTERVAL_MS,
    AUDIT_RETRY_MS,
    AUDIT_COPY_INTERVAL_MS,
    AUDIT_PULL_BYTES_MAX,
    AUDIT_RETENTION_INTERVAL_MS,
    AUDIT_RESUME_POINTS_MAX,
    AUDIT_PAGE_SIZE_MAX,
    AUDIT_QUERY_SCAN_BYTES_MAX,
    ADMISSION_INPUT_BYTES_MAX,
    ADMISSION_COST_MAX,
    ADMISSION_LOCAL_SCOPES_MAX,
    REDIS_PROBE_INTERVAL_MS,
    ADMISSION_BATCH_MAX,
    REDIS_RETRY_WHILE_DOWN_MS,
    REDIS_QUEUE_MAX,
    REDIS_BATCH_CHECKS_MAX,
    REDIS_BATCHES_IN_FLIGHT,
    ADMISSION_IDEMPOTENCY_WINDOW_MS,
    ADMISSION_RECORDS_LOCAL_MAX,
    ADMISSION_MANIFESTS_CACHED,
    DECISION_CACHE_ENTRIES_MAX,
    DECISION_CACHE_INPUT_BYTES_MAX,
    ENVOY_DESCRIPTORS_MAX,
    ENVOY_ENTRIES_MAX,
    BREAKERS_LOCAL_MAX,
    BREAKER_WINDOW_BUCKETS,
    BREAKER_STATE_TTL_FACTOR,
    BREAKER_TRANSITIONS_BUFFERED,
    BREAKER_EVENT_DEADLINE_MS,
    REQUEST_ID_BYTES_MAX,
    WATCH_WATCHER_BUFFER_BYTES_MAX,
    WATCH_NODE_BUFFER_BYTES_MAX,
    WATCH_WATCHER_BUFFER_MESSAGES_MAX,
    WATCH_MESSAGE_BYTES_MAX,
    WATCH_PROGRESS_INTERVAL_MS_DEFAULT,
    WATCH_PROGRESS_INTERVAL_MS_MIN,
    WATCH_PROGRESS_INTERVAL_MS_MAX,
    WATCH_SEND_TIMEOUT_MS,
    WATCH_BATCH_EVENTS_MAX,
    WATCH_BATCH_BYTES_MAX,
    PROGRESS_PROBE_TIMEOUT_MS,
    HTTP2_KEEPALIVE_INTERVAL_MS,
    HTTP2_KEEPALIVE_TIMEOUT_MS,
    INSTALL_SNAPSHOT_TIMEOUT_MS,
    OPS_CONNECTIONS_MAX,
    OPS_HEADER_READ_TIMEOUT_MS,
    OPS_CONNECTION_MS_MAX,
    SNAPSHOT_CHUNK_BYTES_MAX,
    APPEND_ENTRIES_MAX,
    APPEND_ENTRIES_BYTES_MAX,
    PEER_BACKOFF_MIN_MS,
    PEER_BACKOFF_MAX_MS,
    LOG_ENTRY_BYTES_MAX,
    SNAPSHOT_BYTES_MAX,
    PEER_CONNECT_TIMEOUT_MS,
    PEER_HTTP2_KEEPALIVE_INTERVAL_MS,
    PEER_HTTP2_KEEPALIVE_TIMEOUT_MS,
    PEER_CHANNELS_MAX,
    JUDGES_CONCURRENT_MAX,
    JUDGE_APPLY_TIMEOUT_MS,
    JUDGE_APPLY_ATTEMPTS_MAX,
    JUDGE_REQUEST_TIMEOUT_MS,
    WRITE_DEADLINE_DEFAULT_MS,
    READ_DEADLINE_DEFAULT_MS,
    TRANSFER_DEADLINE_DEFAULT_MS,
    TRANSFER_CATCH_UP_MS_MAX,
    TRANSFER_LEASE_MARGIN_MS,
    MEMBERSHIP_DEADLINE_DEFAULT_MS,
    TIMEOUT_NOW_WAIT_MS_MAX,
    REJOIN_FIELD_BYTES_MAX,
    REJOIN_CATCH_UP_MS_MAX,
    DEADLINE_MAX_MS,
    CLOCK_CHECK_INTERVAL_MS,
    CLOCK_PROBE_DEADLINE_MS,
    TCP_KEEPALIVE_MS,
    MEM_CONN_BUFFER_BYTES,
    MEM_ACCEPT_QUEUE_MAX,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_limit_is_listed_once_with_a_value() {
        let names: std::collections::BTreeSet<&str> = NODE_LIMITS.iter().map(|(name, _)| *name).collect();
        assert_eq!(names.len(), NODE_LIMITS.len());
        assert!(NODE_LIMITS.iter().all(|(_, value)| *value > 0));
        assert!(NODE_LIMITS.contains(&("IN_FLIGHT_REQUESTS_MAX", 1024)));
    }
}
