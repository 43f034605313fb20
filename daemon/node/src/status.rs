//! The one wire form of every Keel error.
//!
//! Each layer has its own error type (the kernel's `Rejection`, the
//! replica's `ReplicaError`, the judge's `JudgeError`, the API's `ApiError`,
//! the peer port's `PeerCertificateError`); each says what it is through
//! [`Fault`] — a stable reason (a name of `keel.v1.ErrorReason`), a gRPC
//! code, `ErrorInfo` metadata and further details — and [`to_status`] turns
//! any of them into a `tonic::Status` the same way:
//!
//! ```text
//!  Rejection │ ReplicaError │ JudgeError │ ApiError │ PeerCertificateError
//!        └──────── Fault { reason, code, metadata, details } ────────┘
//!                                   │ to_status (here, nowhere else)
//!                                   ▼
//!  Status { code, message, google.rpc.ErrorInfo{reason, domain: "keel", metadata}, BadRequest | QuotaFailure | RetryInfo }
//! ```
//!
//! Internal errors reach the client as `INTERNAL` with a request id; the full
//! chain goes to the log once, in [`log_internal`].

use keel_kernel::{Rejection, RejectionClass};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every Keel error.
pub const ERROR_DOMAIN: &str = "keel";
/// How long clients should wait before retrying when no leader is known.
pub const NO_LEADER_RETRY_DELAY_MS: u64 = 200;
/// How long a client should wait before retrying on an overloaded node.
pub const OVERLOADED_RETRY_DELAY_MS: u64 = 100;

/// `ErrorInfo.metadata`.
pub type Metadata = HashMap<String, String>;

/// What an error says on the wire.
pub trait Fault: std::fmt::Display {
    /// The stable reason, a name of `keel.v1.ErrorReason`.
    fn reason(&self) -> &'static str;
    /// The canonical gRPC code.
    fn code(&self) -> Code;
    /// `ErrorInfo.metadata`: the values a program needs to act on the error.
    fn metadata(&self) -> Metadata {
        Metadata::new()
    }
    /// Details beside `ErrorInfo` (`BadRequest`, `QuotaFailure`, `RetryInfo`).
    fn details(&self, _details: &mut ErrorDetails) {}
}

/// The status for `fault`.
pub fn to_status(fault: &dyn Fault) -> Status {
    let mut details = ErrorDetails::with_error_info(fault.reason(), ERROR_DOMAIN, fault.metadata());
    fault.details(&mut details);
    Status::with_error_details(fault.code(), fault.to_string(), details)
}

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(1);

/// Logs an internal error's full chain once and returns the request id the
/// client is told, which names the log line.
pub fn log_internal(source: &anyhow::Error) -> String {
    let request_id = format!("req-{}", REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed));
    tracing::error!(%request_id, error = ?source, "internal error");
    request_id
}

/// Sets `RetryInfo` to `delay_ms`.
pub fn retry_after(details: &mut ErrorDetails, delay_ms: u64) {
    details.set_retry_info(Some(Duration::from_millis(delay_ms)));
}

/// A bounded resource of this node is full (judging processes, in-flight
/// requests): retry after `RetryInfo`, or on another member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this node is at its bound {limit} ({limit_value}); retry later or on another member")]
pub struct Overloaded {
    /// The bound's name.
    pub limit: &'static str,
    /// Its value.
    pub limit_value: usize,
}

impl Fault for Overloaded {
    fn reason(&self) -> &'static str {
        "LIMIT_EXCEEDED"
    }
    fn code(&self) -> Code {
        Code::ResourceExhausted
    }
    fn metadata(&self) -> Metadata {
        Metadata::from([("limit".into(), self.limit.to_owned()), ("limit_value".into(), self.limit_value.to_string())])
    }
    fn details(&self, details: &mut ErrorDetails) {
        details.add_quota_failure_violation(self.limit, format!("at most {} at once on this node", self.limit_value));
        retry_after(details, OVERLOADED_RETRY_DELAY_MS);
    }
}

impl Fault for Rejection {
    fn reason(&self) -> &'static str {
        Rejection::reason(self)
    }

    fn code(&self) -> Code {
        // Accumulated state full (the limit table's capacity limits) is
        // RESOURCE_EXHAUSTED; a request too big is INVALID_ARGUMENT.
        if let Rejection::LimitExceeded { limit, .. } = self
            && limit.is_capacity()
        {
            return Code::ResourceExhausted;
        }
        match self.class() {
            RejectionClass::InvalidArgument => Code::InvalidArgument,
            RejectionClass::PermissionDenied => Code::PermissionDenied,
            RejectionClass::AlreadyExists => Code::AlreadyExists,
            RejectionClass::NotFound => Code::NotFound,
            RejectionClass::FailedPrecondition => Code::FailedPrecondition,
            RejectionClass::Unauthenticated => Code::Unauthenticated,
        }
    }

    fn metadata(&self) -> Metadata {
        match self {
            Rejection::Token(error) => error.metadata(),
            _ => rejection_metadata(self),
        }
    }

    fn details(&self, details: &mut ErrorDetails) {
        match self {
            Rejection::FieldRequired { field } => {
                details.add_bad_request_violation(field.to_string(), "is required");
            }
            Rejection::FieldInvalid { field, problem } => {
                details.add_bad_request_violation(field.to_string(), problem.to_string());
            }
            Rejection::ActionSchemaInvalid { action, schema, problem } => {
                details.add_bad_request_violation(format!("manifest.actions[{action}].{schema}"), problem.clone());
            }
            Rejection::VersionInvalid { field, value } => {
                details.add_bad_request_violation(field.to_string(), format!("{value:?} is not valid semver"));
            }
            Rejection::LimitExceeded { limit, actual } => {
                details.add_quota_failure_violation(
                    limit.name(),
                    format!("{actual} exceeds {} = {}", limit.name(), limit.value()),
                );
            }
            _ => {}
        }
    }
}

impl Fault for keel_kernel::token::TokenError {
    fn reason(&self) -> &'static str {
        keel_kernel::token::TokenError::reason(self)
    }

    fn code(&self) -> Code {
        Code::Unauthenticated
    }

    fn metadata(&self) -> Metadata {
        use keel_kernel::limits::{TOKEN_BYTES_MAX, TOKEN_LIFETIME_MS_MAX, TOKEN_PERMISSIONS_MAX};
        use keel_kernel::token::TokenError;
        let pairs: Vec<(&str, String)> = match self {
            TokenError::Malformed { detail } => vec![("detail", detail.clone())],
            TokenError::UnknownKey { key_id }
            | TokenError::KeyNotForTokens { key_id }
            | TokenError::KeyRevoked { key_id } => vec![("key_id", key_id.clone())],
            TokenError::WrongAudience { aud } => vec![("aud", aud.clone())],
            TokenError::TooLarge { bytes } => vec![
                ("limit", "TOKEN_BYTES_MAX".to_owned()),
                ("limit_value", TOKEN_BYTES_MAX.to_string()),
                ("actual", bytes.to_string()),
            ],
            TokenError::TooManyPermissions { count } => vec![
                ("limit", "TOKEN_PERMISSIONS_MAX".to_owned()),
                ("limit_value", TOKEN_PERMISSIONS_MAX.to_string()),
                ("actual", count.to_string()),
            ],
            TokenError::TooLongLived => {
                vec![("limit", "TOKEN_LIFETIME_MS_MAX".to_owned()), ("limit_value", TOKEN_LIFETIME_MS_MAX.to_string())]
            }
            TokenError::Revoked { jti } => vec![("jti", jti.clone())],
            TokenError::ThresholdNotMet { threshold } => vec![("threshold", threshold.to_string())],
            TokenError::BadSignature | TokenError::Expired | TokenError::NotYetValid => vec![],
        };
        pairs.into_iter().map(|(key, value)| (key.to_owned(), value)).collect()
    }
}

/// The metadata of each rejection: the fields a program needs to act on it.
fn rejection_metadata(rejection: &Rejection) -> Metadata {
    let mut metadata = Metadata::new();
    let mut put = |key: &str, value: String| {
        metadata.insert(key.to_owned(), value);
    };
    match rejection {
        Rejection::FieldRequired { field } => put("field", field.to_string()),
        Rejection::FieldInvalid { field, .. } | Rejection::VersionInvalid { field, .. } => {
            put("field", field.to_string())
        }
        Rejection::LimitExceeded { limit, actual } => {
            put("limit", limit.name().to_owned());
            put("limit_value", limit.value().to_string());
            put("actual", actual.to_string());
        }
        Rejection::KeyUnknown { key_id }
        | Rejection::SignatureInvalid { key_id }
        | Rejection::KeyAlreadyExists { key_id } => put("key_id", key_id.clone()),
        Rejection::KeyPurposeMismatch { key_id, required } => {
            put("key_id", key_id.clone());
            put("required_purpose", required.to_string());
        }
        Rejection::KeyExpired { key_id, not_after_ms, at_ms } => {
            put("key_id", key_id.clone());
            put("not_after_ms", not_after_ms.to_string());
            put("at_ms", at_ms.to_string());
        }
        Rejection::KeyNotYetValid { key_id, not_before_ms, at_ms } => {
            put("key_id", key_id.clone());
            put("not_before_ms", not_before_ms.to_string());
            put("at_ms", at_ms.to_string());
        }
        Rejection::SignatureThresholdNotMet { required_purpose, valid, threshold } => {
            put("required_purpose", required_purpose.to_string());
            put("valid", valid.to_string());
            put("threshold", threshold.to_string());
        }
        Rejection::DependencyUnresolvable { engine, requirement } => {
            put("engine", engine.clone());
            put("requirement", requirement.clone());
        }
        Rejection::DependencyTierViolation { engine, tier, dependency, dependency_tier } => {
            put("engine", engine.clone());
            put("tier", tier.to_string());
            put("dependency", dependency.clone());
            put("dependency_tier", dependency_tier.to_string());
        }
        Rejection::DependencyCycle { path } => put("path", path.join(" -> ")),
        Rejection::VersionAlreadyPublished { engine, version }
        | Rejection::EngineVersionNotFound { engine, version } => {
            put("engine", engine.clone());
            put("version", version.clone());
        }
        Rejection::TenantNotFound { tenant_id } | Rejection::TenantAlreadyExists { tenant_id } => {
            put("tenant_id", tenant_id.clone())
        }
        Rejection::EtagMismatch { expected, current } => {
            put("expected_etag", expected.clone());
            put("current_etag", current.clone());
        }
        Rejection::KeyValidityInvalid { not_before_ms, not_after_ms } => {
            put("not_before_ms", not_before_ms.to_string());
            put("not_after_ms", not_after_ms.to_string());
        }
        Rejection::RootVersionInvalid { expected, found } => {
            put("expected_version", expected.to_string());
            put("found_version", found.to_string());
        }
        Rejection::KeyRevoked { key_id, revoked_at_revision } => {
            put("key_id", key_id.clone());
            put("revoked_at_revision", revoked_at_revision.to_string());
        }
        Rejection::IdempotencyKeyReused { key, revision } => {
            put("key", key.clone());
            put("revision", revision.to_string());
        }
        Rejection::ActionSchemaInvalid { action, schema, .. } => {
            put("action", action.clone());
            put("schema", schema.to_string());
        }
        Rejection::PolicyCompileFailed { detail } => put("detail", detail.clone()),
        Rejection::InputInvalid { action, problem } => {
            put("action", action.clone());
            put("problem", problem.clone());
        }
        Rejection::TenantOutOfScope { scope, requested } => {
            put("scope", scope.clone());
            put("requested", requested.clone());
        }
        // Its metadata is the token error's (see `Fault::metadata`).
        Rejection::Token(_) => {}
        Rejection::PolicyBuiltinForbidden { builtin } => put("builtin", builtin.clone()),
        Rejection::PolicyDecisionMalformed { probe, detail } | Rejection::PolicyEvaluationFailed { probe, detail } => {
            put("probe", probe.clone());
            put("detail", detail.clone());
        }
        Rejection::PolicyNotFound { name, version } => {
            put("name", name.clone());
            put("version", version.to_string());
        }
        Rejection::PolicyVersionMismatch { name, expected, current } => {
            put("name", name.clone());
            put("expected", expected.to_string());
            put("current", current.to_string());
        }
        Rejection::EvaluationAborted { evaluator, failure, detail } => {
            put("evaluator", evaluator.to_string());
            put("failure", failure.to_string());
            put("detail", detail.clone());
            if failure == "memory_budget" {
                put("limit", keel_kernel::limits::EVALUATION_MEMORY_BYTES_MAX_NAME.to_owned());
            }
        }
        Rejection::ManifestMalformed { .. } | Rejection::TrustNotBootstrapped | Rejection::TrustAlreadyBootstrapped => {
        }
    }
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_kernel::limits::Limit;

    #[test]
    fn statuses_carry_error_info_with_the_reason() {
        let status = to_status(&Rejection::LimitExceeded { limit: Limit::ManifestBytes, actual: 300_000 });
        assert_eq!(status.code(), Code::InvalidArgument);
        let info = status.get_details_error_info().expect("error info is attached");
        assert_eq!(info.reason, "LIMIT_EXCEEDED");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata.get("limit").map(String::as_str), Some("MANIFEST_BYTES_MAX"));
        let status = to_status(&keel_kernel::token::TokenError::TooManyPermissions { count: 101 });
        assert_eq!(status.code(), Code::Unauthenticated);
        let info = status.get_details_error_info().expect("error info is attached");
        assert_eq!(info.reason, "TOKEN_TOO_MANY_PERMISSIONS");
        assert_eq!(info.metadata.get("limit").map(String::as_str), Some("TOKEN_PERMISSIONS_MAX"));
        let status = to_status(&Overloaded { limit: "IN_FLIGHT_REQUESTS_MAX", limit_value: 3 });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.get_details_retry_info().is_some());
    }
}
