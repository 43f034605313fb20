//! Every bound and default the client uses, as named constants.
//!
//! Timeouts, retry budgets, page loops, member discovery, the channel pool
//! and local file reads are all bounded here so that no loop or read in the
//! client can run without limit. The payload limits mirror the server's
//! so that oversized input fails locally, before it costs a
//! round trip.

/// Endpoints one client may be configured with.
pub const ENDPOINTS_MAX: usize = 64;

/// Default deadline of one call, retries included.
pub const CALL_TIMEOUT_DEFAULT_MS: u64 = 10_000;
/// Default time to establish a connection to one endpoint.
pub const CONNECT_TIMEOUT_DEFAULT_MS: u64 = 3_000;
/// Interval between HTTP/2 PING frames on an open channel. Without keep-alive
/// a channel may not notice that a partition has healed.
pub const HTTP2_KEEP_ALIVE_INTERVAL_MS: u64 = 10_000;
/// How long to wait for a PING acknowledgement before the connection is dead.
pub const HTTP2_KEEP_ALIVE_TIMEOUT_MS: u64 = 5_000;
/// TCP keep-alive idle time on client sockets.
pub const TCP_KEEPALIVE_MS: u64 = 30_000;

/// Attempts of one call, the first included.
pub const RETRY_ATTEMPTS_MAX: u32 = 8;
/// Backoff before the first retry (before jitter).
pub const RETRY_BACKOFF_INITIAL_MS: u64 = 50;
/// Upper bound of the exponential backoff (before jitter).
pub const RETRY_BACKOFF_MAX_MS: u64 = 2_000;
/// Upper bound on a server-suggested `RetryInfo.retry_delay` the client honours.
pub const RETRY_DELAY_SERVER_MAX_MS: u64 = 5_000;
/// Times one call follows a `NOT_LEADER` answer to the leader's address.
pub const LEADER_REDIRECTS_MAX: u32 = 3;

/// Upper bound on the one `GetStatus` call member discovery makes after a
/// connect or a failover. Discovery also never takes more than half of the
/// time left to the call that triggered it.
pub const DISCOVERY_TIMEOUT_MS: u64 = 1_000;
/// How long an endpoint that failed is not preferred (as the leader or as a
/// member of the preferred region). It is still tried when nothing else is
/// left.
pub const ENDPOINT_FAILURE_COOLDOWN_MS: u64 = 5_000;
/// Open channels one client keeps, one per known endpoint at most.
pub const CHANNELS_MAX: usize = ENDPOINTS_MAX;

/// Page size the "fetch every page" helpers ask for (the server's maximum).
pub const LIST_PAGE_SIZE: i32 = 1_000;
/// Pages the "fetch every page" helpers read before giving up.
pub const LIST_PAGES_MAX: usize = 10_000;

/// Bytes in one gRPC message, either direction (the server's limit).
pub const GRPC_MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Bytes in a canonical manifest (the server's `MANIFEST_BYTES_MAX`).
pub const MANIFEST_BYTES_MAX: usize = 256 * 1024;
/// Signatures attached to one request (the server's `SIGNATURES_PER_REQUEST_MAX`).
pub const SIGNATURES_PER_REQUEST_MAX: usize = 16;

/// Bytes read from a key file (secret or public) before it is refused.
pub const KEY_FILE_BYTES_MAX: u64 = 16 * 1024;
/// Bytes read from a TLS file (CA bundle, certificate or key) before it is refused.
pub const TLS_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Bytes read from a manifest or signed-manifest file before it is refused.
/// Larger than [`MANIFEST_BYTES_MAX`] because files may be pretty-printed and
/// carry signatures; the canonical size is checked separately.
pub const MANIFEST_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Bytes in a policy's Rego source (the server's `POLICY_SOURCE_BYTES_MAX`);
/// larger policy files are refused before they are sent.
pub const POLICY_SOURCE_BYTES_MAX: u64 = 64 * 1024;
/// Bytes read from a `policy test` cases file before it is refused.
pub const POLICY_CASES_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Cases in one `policy test` run (the server's `POLICY_TEST_CASES_MAX`).
pub const POLICY_TEST_CASES_MAX: usize = 256;

const _: () = assert!(RETRY_BACKOFF_INITIAL_MS <= RETRY_BACKOFF_MAX_MS);
const _: () = assert!(RETRY_ATTEMPTS_MAX >= 1);
const _: () = assert!(HTTP2_KEEP_ALIVE_TIMEOUT_MS < HTTP2_KEEP_ALIVE_INTERVAL_MS);
const _: () = assert!(CONNECT_TIMEOUT_DEFAULT_MS <= CALL_TIMEOUT_DEFAULT_MS);
const _: () = assert!(MANIFEST_BYTES_MAX < GRPC_MESSAGE_BYTES_MAX);
const _: () = assert!(MANIFEST_BYTES_MAX as u64 <= MANIFEST_FILE_BYTES_MAX);
const _: () = assert!(LIST_PAGE_SIZE > 0);
const _: () = assert!(DISCOVERY_TIMEOUT_MS < CALL_TIMEOUT_DEFAULT_MS);
const _: () = assert!(CHANNELS_MAX >= ENDPOINTS_MAX);

/// Reconnects in a row (without a message in between) before a watch gives
/// up and returns the last error.
pub const WATCH_RECONNECTS_MAX: u32 = 10;
const _: () = assert!(POLICY_SOURCE_BYTES_MAX < GRPC_MESSAGE_BYTES_MAX as u64);
const _: () = assert!(POLICY_CASES_FILE_BYTES_MAX < GRPC_MESSAGE_BYTES_MAX as u64);

/// Bytes in a capability token (the server's `TOKEN_BYTES_MAX`).
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;
/// Longest a capability token may live (the server's `TOKEN_LIFETIME_MS_MAX`).
pub const TOKEN_LIFETIME_MAX: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);
/// Bytes in a token file read by `--token`.
pub const TOKEN_FILE_BYTES_MAX: u64 = 16 * 1024;
