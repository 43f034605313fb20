//! When a failed call is tried again, where, and after how long.
//!
//! Only failures that certainly did not apply, or that are safe to repeat,
//! are retried:
//!
//! | failure                                   | action                          |
//! |-------------------------------------------|---------------------------------|
//! | `NO_LEADER` (an election is running)      | same endpoint, after backoff    |
//! | `MEMBERSHIP_CHANGE_IN_PROGRESS`           | same endpoint, after backoff    |
//! | `NODE_UNAVAILABLE` (node stopping)        | next endpoint, after backoff    |
//! | `LEADER_CLOCK_SKEW` (leader handing over) | next endpoint, after backoff    |
//! | `LIMIT_EXCEEDED` of a node's own bound    | next endpoint, after backoff    |
//! | (`IN_FLIGHT_REQUESTS_MAX`, `JUDGES_CONCURRENT_MAX`: shed before it ran) |  |
//! | `NOT_LEADER` with `leader_addr`           | that address, at once (bounded) |
//! | `NOT_LEADER` without an address           | next endpoint, after backoff    |
//! | transport error / no endpoint connected   | next endpoint, after backoff    |
//! | anything else                             | returned to the caller          |
//!
//! `NOT_LEADER` is a refusal before the write was proposed, so following it
//! is as safe as retrying `NO_LEADER`; so is `MEMBERSHIP_CHANGE_IN_PROGRESS`
//! (the leader refused to start a second membership change while one is
//! being committed, and proposed nothing). A transport error is ambiguous for a
//! write: Keel's writes of keys and manifests are idempotent, but a retried
//! `CreateTenant` may answer `TENANT_ALREADY_EXISTS` for the tenant the
//! first attempt created.
//!
//! Backoff is exponential with "equal jitter" (half fixed, half random), and
//! a server's `RetryInfo.retry_delay` raises it (up to a bound). Retries
//! never outlast the caller's deadline.

use crate::error::ClientError;
use crate::limits::{RETRY_BACKOFF_INITIAL_MS, RETRY_BACKOFF_MAX_MS, RETRY_DELAY_SERVER_MAX_MS};
use keel_proto::v1 as pb;
use std::time::Duration;

/// `ErrorInfo.metadata` key with the leader's client address.
pub const LEADER_ADDR_METADATA: &str = "leader_addr";
/// `ErrorInfo.metadata` key with the leader's node id.
pub const LEADER_ID_METADATA: &str = "leader_id";
/// A node's own load bounds: a request refused at one of them was shed
/// before it ran, so it is safe to send again (elsewhere, after a pause).
pub const NODE_LOAD_LIMITS: &[&str] = &["IN_FLIGHT_REQUESTS_MAX", "JUDGES_CONCURRENT_MAX"];
/// Denominator of the jitter fraction passed to [`backoff_delay`].
pub const JITTER_SCALE: u64 = 1_000;

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RetryAction {
    /// Give the error to the caller.
    Stop,
    /// Try the same endpoint again after a backoff.
    SameEndpoint,
    /// Drop the channel and try the next endpoint after a backoff.
    NextEndpoint,
    /// Connect to the leader's address and try at once.
    Redirect {
        /// The leader's client address as the server gave it.
        address: String,
    },
}

/// Classifies a failed attempt.
pub(crate) fn retry_action(error: &ClientError) -> RetryAction {
    match error {
        ClientError::Server { reason, metadata, .. } => {
            if reason == pb::ErrorReason::NoLeader.as_str_name()
                || reason == pb::ErrorReason::MembershipChangeInProgress.as_str_name()
            {
                RetryAction::SameEndpoint
            } else if reason == pb::ErrorReason::NodeUnavailable.as_str_name()
                || reason == pb::ErrorReason::LeaderClockSkew.as_str_name()
                || (reason == pb::ErrorReason::LimitExceeded.as_str_name()
                    && metadata.get("limit").is_some_and(|limit| NODE_LOAD_LIMITS.contains(&limit.as_str())))
            {
                RetryAction::NextEndpoint
            } else if reason == pb::ErrorReason::NotLeader.as_str_name() {
                match metadata.get(LEADER_ADDR_METADATA).map(|address| address.trim()) {
                    Some(address) if !address.is_empty() => RetryAction::Redirect { address: address.to_owned() },
                    _ => RetryAction::NextEndpoint,
                }
            } else {
                RetryAction::Stop
            }
        }
        ClientError::Transport { .. } | ClientError::Connect { .. } => RetryAction::NextEndpoint,
        _ => RetryAction::Stop,
    }
}

/// The pause before retry number `retry_index` (0 for the first retry):
/// `base = min(initial * 2^retry_index, max)`, then `base/2 + base/2 *
/// jitter / JITTER_SCALE`. `jitter` is clamped to `0..=JITTER_SCALE`.
pub fn backoff_delay(retry_index: u32, jitter: u64) -> Duration {
    let factor = 1u64.checked_shl(retry_index).unwrap_or(u64::MAX);
    let base_ms = RETRY_BACKOFF_INITIAL_MS.saturating_mul(factor).min(RETRY_BACKOFF_MAX_MS);
    let half_ms = base_ms / 2;
    let jitter = jitter.min(JITTER_SCALE);
    Duration::from_millis(half_ms + (base_ms - half_ms) * jitter / JITTER_SCALE)
}

/// The pause before a retry: the backoff, raised to the server's suggested
/// delay (capped at [`RETRY_DELAY_SERVER_MAX_MS`]).
pub(crate) fn retry_delay(retry_index: u32, jitter: u64, error: &ClientError) -> Duration {
    let backoff = backoff_delay(retry_index, jitter);
    let suggested = match error {
        ClientError::Server { retry_delay: Some(delay), .. } => {
            (*delay).min(Duration::from_millis(RETRY_DELAY_SERVER_MAX_MS))
        }
        _ => Duration::ZERO,
    };
    backoff.max(suggested)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn server_error(reason: &str, metadata: &[(&str, &str)], retry_delay: Option<Duration>) -> ClientError {
        ClientError::Server {
            code: tonic::Code::Unavailable,
            reason: reason.into(),
            message: String::new(),
            metadata: metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            retry_delay,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_bound_with_jitter_in_the_upper_half() {
        assert_eq!(backoff_delay(0, 0), Duration::from_millis(RETRY_BACKOFF_INITIAL_MS / 2));
        assert_eq!(backoff_delay(0, JITTER_SCALE), Duration::from_millis(RETRY_BACKOFF_INITIAL_MS));
        assert_eq!(backoff_delay(1, JITTER_SCALE), Duration::from_millis(RETRY_BACKOFF_INITIAL_MS * 2));
        assert_eq!(backoff_delay(40, JITTER_SCALE), Duration::from_millis(RETRY_BACKOFF_MAX_MS));
        assert_eq!(backoff_delay(u32::MAX, u64::MAX), Duration::from_millis(RETRY_BACKOFF_MAX_MS));
        for retry_index in 0..20 {
            assert!(backoff_delay(retry_index, 0) <= backoff_delay(retry_index, JITTER_SCALE));
            assert!(backoff_delay(retry_index, 0) <= backoff_delay(retry_index + 1, 0));
        }
    }

    #[test]
    fn the_server_delay_raises_the_backoff_up_to_its_cap() {
        let error = server_error("NO_LEADER", &[], Some(Duration::from_millis(700)));
        assert_eq!(retry_delay(0, 0, &error), Duration::from_millis(700));
        let error = server_error("NO_LEADER", &[], Some(Duration::from_secs(3_600)));
        assert_eq!(retry_delay(0, 0, &error), Duration::from_millis(RETRY_DELAY_SERVER_MAX_MS));
    }

    #[test]
    fn only_availability_failures_are_retried() {
        assert_eq!(retry_action(&server_error("NO_LEADER", &[], None)), RetryAction::SameEndpoint);
        assert_eq!(retry_action(&server_error("MEMBERSHIP_CHANGE_IN_PROGRESS", &[], None)), RetryAction::SameEndpoint);
        assert_eq!(retry_action(&server_error("NODE_UNAVAILABLE", &[], None)), RetryAction::NextEndpoint);
        assert_eq!(
            retry_action(&server_error("NOT_LEADER", &[("leader_id", "2"), ("leader_addr", "n2:7400")], None)),
            RetryAction::Redirect { address: "n2:7400".into() }
        );
        assert_eq!(retry_action(&server_error("NOT_LEADER", &[("leader_addr", " ")], None)), RetryAction::NextEndpoint);
        assert_eq!(retry_action(&server_error("LEADER_CLOCK_SKEW", &[], None)), RetryAction::NextEndpoint);
        let shed = server_error("LIMIT_EXCEEDED", &[("limit", "IN_FLIGHT_REQUESTS_MAX")], None);
        assert_eq!(retry_action(&shed), RetryAction::NextEndpoint);
        let too_big = server_error("LIMIT_EXCEEDED", &[("limit", "MANIFEST_BYTES_MAX")], None);
        assert_eq!(retry_action(&too_big), RetryAction::Stop, "a request over a limit of its own is not retried");
        for reason in [
            "KEY_UNKNOWN",
            "DEADLINE_EXCEEDED",
            "INTERNAL",
            "TENANT_ALREADY_EXISTS",
            "UNKNOWN",
            "MEMBER_ALREADY_EXISTS",
            "ADDRESS_IN_USE",
            "MEMBER_NOT_FOUND",
            "LAST_VOTER",
        ] {
            assert_eq!(retry_action(&server_error(reason, &[], None)), RetryAction::Stop, "{reason}");
        }
        let transport =
            ClientError::Transport { endpoint: "e".into(), code: tonic::Code::Unavailable, detail: String::new() };
        assert_eq!(retry_action(&transport), RetryAction::NextEndpoint);
        let deadline = ClientError::DeadlineExceeded { method: "GetKey", timeout_ms: 1 };
        assert_eq!(retry_action(&deadline), RetryAction::Stop);
    }
}
