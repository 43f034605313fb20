//! A request's deadline: the caller's `grpc-timeout`, else the default of
//! the RPC's class, never more than [`DEADLINE_MAX_MS`]. Client RPCs and
//! the peer transport's forwarded calls read it the same way (a forwarded
//! call carries the follower's remaining time).

use crate::limits::DEADLINE_MAX_MS;
use std::time::Duration;

/// The caller's deadline from the `grpc-timeout` header, else `default_ms`,
/// capped at [`DEADLINE_MAX_MS`].
pub fn from_metadata(metadata: &tonic::metadata::MetadataMap, default_ms: u64) -> Duration {
    let requested = metadata.get("grpc-timeout").and_then(|value| value.to_str().ok()).and_then(parse_grpc_timeout);
    requested.unwrap_or(Duration::from_millis(default_ms)).min(Duration::from_millis(DEADLINE_MAX_MS))
}

/// Parses the gRPC wire timeout format: up to 8 digits and a unit (H M S m u n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at_checked(split)?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    match unit {
        "H" => Some(Duration::from_secs(amount.checked_mul(3600)?)),
        "M" => Some(Duration::from_secs(amount.checked_mul(60)?)),
        "S" => Some(Duration::from_secs(amount)),
        "m" => Some(Duration::from_millis(amount)),
        "u" => Some(Duration::from_micros(amount)),
        "n" => Some(Duration::from_nanos(amount)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_per_the_wire_format() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
    }
}
