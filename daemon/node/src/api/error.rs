//! API errors and their one mapping to `tonic::Status`.
//!
//! Every error a client sees is built here: a canonical gRPC code, a
//! `google.rpc.ErrorInfo{reason, domain: "keel", metadata}` whose reason is a
//! name of `keel.v1.ErrorReason` (the one reason registry; a test checks every
//! reason the node or kernel can produce against it), and further details
//! where they fit (`BadRequest`, `RetryInfo`, `QuotaFailure`).
//! Internal errors reach the client as `INTERNAL` with a request id; the full
//! chain goes to the log, once, here.

use super::membership::MembershipError;
use keel_kernel::limits::Limit;
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

/// An error returned to an API caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A deterministic refusal, from edge validation or from `apply`.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The named resource does not exist.
    #[error("{resource} not found")]
    NotFound {
        /// `ENGINE_NOT_FOUND`, `ENGINE_VERSION_NOT_FOUND`, `KEY_UNKNOWN`, `TENANT_NOT_FOUND`, `POLICY_NOT_FOUND`.
        reason: &'static str,
        /// The resource name asked for.
        resource: String,
    },
    /// A membership change was refused.
    #[error(transparent)]
    Membership(#[from] super::membership::MembershipError),
    /// A peer connection without a member's certificate.
    #[error(transparent)]
    PeerCertificate(#[from] crate::tls::PeerCertificateError),
    /// Another membership change is still in progress.
    #[error("another membership change is in progress; retry shortly")]
    MembershipChangeInProgress,
    /// The page token was not issued for this query.
    #[error("page token is not valid for this query")]
    PageTokenInvalid,
    /// Another node leads; the client should go there.
    #[error("this node is not the leader")]
    NotLeader {
        /// The leader's id, when known.
        leader_id: Option<u64>,
        /// The leader's client address, when known.
        leader_addr: Option<String>,
    },
    /// No leader is known right now.
    #[error("no leader is known; retry shortly")]
    NoLeader,
    /// The Raft core stopped or the node is shutting down.
    #[error("this node is unavailable: {detail}")]
    NodeUnavailable {
        /// What stopped.
        detail: String,
    },
    /// The caller's deadline passed first; the write may still apply.
    #[error("deadline exceeded after {after_ms} ms; the operation may still complete")]
    DeadlineExceeded {
        /// The deadline that passed.
        after_ms: u64,
    },
    /// A watch start revision older than the retained history.
    #[error("revisions up to {compacted_revision} are compacted; read the state, then watch from its revision + 1")]
    Compacted {
        /// Highest revision no longer retained.
        compacted_revision: u64,
        /// This node's applied revision.
        resync_revision: u64,
    },
    /// A watch start revision beyond the cluster's latest.
    #[error("revision {revision} is in the future (current revision {current_revision})")]
    RevisionInFuture {
        /// The revision asked for.
        revision: u64,
        /// The latest revision.
        current_revision: u64,
    },
    /// This node already serves its most watch streams.
    #[error("this node serves its most watch streams ({watchers_max}); watch on another member or retry later")]
    TooManyWatchers {
        /// The configured bound (`watch.watchers_max`, at most `WATCHERS_PER_NODE_MAX`).
        watchers_max: usize,
    },
    /// A watcher stopped reading and was cut off.
    #[error("the watcher stopped reading its stream and was cut off; resume from revision {next_revision}")]
    WatcherTooSlow {
        /// Where to resume.
        next_revision: u64,
    },
    /// A bounded resource of this node is full (judging processes,
    /// in-flight requests): retry after `RetryInfo`, or on another member.
    #[error("this node is at its bound {limit} ({limit_value}); retry later or on another member")]
    Overloaded {
        /// The bound's name.
        limit: &'static str,
        /// Its value.
        limit_value: usize,
    },
    /// This leader's clock disagrees with the voters: it stamps nothing and
    /// hands leadership over.
    #[error("this leader's wall clock disagrees with a majority of the voters by more than {skew_max_ms} ms")]
    LeaderClockSkew {
        /// The bound (`raft.clock_skew_max_ms`).
        skew_max_ms: u64,
    },
    /// An evaluation could not run here (its process could not start or
    /// was stopped); nothing was decided.
    #[error("the evaluator is unavailable on this node: {detail}")]
    EvaluatorUnavailable {
        /// What went wrong.
        detail: String,
    },
    /// A bug or a storage failure. Logged in full here; the client gets the request id.
    #[error("internal error (request {request_id})")]
    Internal {
        /// Correlates the client's error with the log line.
        request_id: String,
        /// The full chain, for the log only.
        source: anyhow::Error,
    },
}

/// How long a client should wait before retrying on an overloaded node.
pub const OVERLOADED_RETRY_DELAY_MS: u64 = 100;

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(1);

impl ApiError {
    /// An internal error with a fresh request id; logs the chain once.
    pub fn internal(source: impl Into<anyhow::Error>) -> ApiError {
        let request_id = format!("req-{}", REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed));
        let source = source.into();
        tracing::error!(%request_id, error = ?source, "internal error");
        ApiError::Internal { request_id, source }
    }

    /// The stable reason, a name of `keel.v1.ErrorReason`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Rejected(rejection) => rejection.reason(),
            ApiError::NotFound { reason, .. } => reason,
            ApiError::Membership(error) => error.reason(),
            ApiError::PeerCertificate(error) => error.reason(),
            ApiError::MembershipChangeInProgress => "MEMBERSHIP_CHANGE_IN_PROGRESS",
            ApiError::PageTokenInvalid => "PAGE_TOKEN_INVALID",
            ApiError::NotLeader { .. } => "NOT_LEADER",
            ApiError::NoLeader => "NO_LEADER",
            ApiError::NodeUnavailable { .. } => "NODE_UNAVAILABLE",
            ApiError::DeadlineExceeded { .. } => "DEADLINE_EXCEEDED",
            ApiError::Compacted { .. } => "COMPACTED",
            ApiError::RevisionInFuture { .. } => "REVISION_IN_FUTURE",
            ApiError::WatcherTooSlow { .. } => "WATCHER_TOO_SLOW",
            ApiError::TooManyWatchers { .. } | ApiError::Overloaded { .. } => "LIMIT_EXCEEDED",
            ApiError::EvaluatorUnavailable { .. } => "NODE_UNAVAILABLE",
            ApiError::LeaderClockSkew { .. } => "LEADER_CLOCK_SKEW",
            ApiError::Internal { .. } => "INTERNAL",
        }
    }

    /// Reasons produced by the node itself (rejections add the kernel's).
    pub const NODE_REASONS: &'static [&'static str] = &[
        "ENGINE_NOT_FOUND",
        "ENGINE_VERSION_NOT_FOUND",
        "KEY_UNKNOWN",
        "TENANT_NOT_FOUND",
        "POLICY_NOT_FOUND",
        "PAGE_TOKEN_INVALID",
        "MEMBER_ALREADY_EXISTS",
        "ADDRESS_IN_USE",
        "MEMBER_NOT_FOUND",
        "LAST_VOTER",
        "MEMBER_NOT_VOTER",
        "MEMBERSHIP_CHANGE_IN_PROGRESS",
        "PEER_CERTIFICATE_REQUIRED",
        "PEER_NOT_MEMBER",
        "NOT_LEADER",
        "NO_LEADER",
        "NODE_UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "LEADER_CLOCK_SKEW",
        "COMPACTED",
        "REVISION_IN_FUTURE",
        "WATCHER_TOO_SLOW",
        "INTERNAL",
    ];

    fn code(&self) -> Code {
        match self {
            ApiError::Rejected(Rejection::LimitExceeded { limit, .. }) if is_capacity_limit(*limit) => {
                Code::ResourceExhausted
            }
            ApiError::Rejected(rejection) => match rejection.class() {
                RejectionClass::InvalidArgument => Code::InvalidArgument,
                RejectionClass::PermissionDenied => Code::PermissionDenied,
                RejectionClass::AlreadyExists => Code::AlreadyExists,
                RejectionClass::NotFound => Code::NotFound,
                RejectionClass::FailedPrecondition => Code::FailedPrecondition,
            },
            ApiError::NotFound { .. } => Code::NotFound,
            ApiError::Membership(error) => match error {
                MembershipError::AlreadyExists { .. } | MembershipError::AddressInUse { .. } => Code::AlreadyExists,
                MembershipError::NotFound { .. } => Code::NotFound,
                MembershipError::LastVoter { .. } | MembershipError::NotVoter { .. } => Code::FailedPrecondition,
            },
            ApiError::MembershipChangeInProgress => Code::Unavailable,
            ApiError::PeerCertificate(_) => Code::PermissionDenied,
            ApiError::PageTokenInvalid => Code::InvalidArgument,
            ApiError::NotLeader { .. } | ApiError::NoLeader | ApiError::NodeUnavailable { .. } => Code::Unavailable,
            ApiError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            ApiError::Compacted { .. } | ApiError::RevisionInFuture { .. } => Code::OutOfRange,
            ApiError::WatcherTooSlow { .. } | ApiError::TooManyWatchers { .. } | ApiError::Overloaded { .. } => {
                Code::ResourceExhausted
            }
            ApiError::EvaluatorUnavailable { .. } | ApiError::LeaderClockSkew { .. } => Code::Unavailable,
            ApiError::Internal { .. } => Code::Internal,
        }
    }

    fn metadata(&self) -> HashMap<String, String> {
        let mut metadata = HashMap::new();
        match self {
            ApiError::Rejected(rejection) => rejection_metadata(rejection, &mut metadata),
            ApiError::NotFound { resource, .. } => {
                metadata.insert("resource".into(), resource.clone());
            }
            ApiError::NotLeader { leader_id, leader_addr } => {
                if let Some(leader_id) = leader_id {
                    metadata.insert("leader_id".into(), leader_id.to_string());
                }
                if let Some(leader_addr) = leader_addr {
                    metadata.insert("leader_addr".into(), leader_addr.clone());
                }
            }
            ApiError::Internal { request_id, .. } => {
                metadata.insert("request_id".into(), request_id.clone());
            }
            ApiError::Compacted { compacted_revision, resync_revision } => {
                metadata.insert("compacted_revision".into(), compacted_revision.to_string());
                metadata.insert("resync_revision".into(), resync_revision.to_string());
            }
            ApiError::RevisionInFuture { revision, current_revision } => {
                metadata.insert("revision".into(), revision.to_string());
                metadata.insert("current_revision".into(), current_revision.to_string());
            }
            ApiError::WatcherTooSlow { next_revision } => {
                metadata.insert("next_revision".into(), next_revision.to_string());
            }
            ApiError::TooManyWatchers { watchers_max } => {
                metadata.insert("limit".into(), Limit::WatchersPerNode.name().to_owned());
                metadata.insert("limit_value".into(), watchers_max.to_string());
            }
            ApiError::Overloaded { limit, limit_value } => {
                metadata.insert("limit".into(), (*limit).to_owned());
                metadata.insert("limit_value".into(), limit_value.to_string());
            }
            ApiError::EvaluatorUnavailable { detail } => {
                metadata.insert("detail".into(), detail.clone());
            }
            ApiError::LeaderClockSkew { skew_max_ms } => {
                metadata.insert("clock_skew_max_ms".into(), skew_max_ms.to_string());
            }
            ApiError::PeerCertificate(crate::tls::PeerCertificateError::NotMember { sans }) => {
                metadata.insert("sans".into(), sans.join(","));
            }
            ApiError::PeerCertificate(crate::tls::PeerCertificateError::Missing) => {}
            ApiError::Membership(error) => match error {
                MembershipError::AlreadyExists { node_id }
                | MembershipError::NotFound { node_id }
                | MembershipError::LastVoter { node_id }
                | MembershipError::NotVoter { node_id } => {
                    metadata.insert("node_id".into(), node_id.to_string());
                }
                MembershipError::AddressInUse { addr, node_id } => {
                    metadata.insert("addr".into(), addr.clone());
                    metadata.insert("node_id".into(), node_id.to_string());
                }
            },
            ApiError::PageTokenInvalid
            | ApiError::MembershipChangeInProgress
            | ApiError::NoLeader
            | ApiError::NodeUnavailable { .. }
            | ApiError::DeadlineExceeded { .. } => {}
        }
        metadata
    }

    /// The wire form.
    pub fn into_status(self) -> Status {
        let mut details = ErrorDetails::with_error_info(self.reason(), ERROR_DOMAIN, self.metadata());
        match &self {
            ApiError::Rejected(Rejection::FieldRequired { field }) => {
                details.add_bad_request_violation(field.to_string(), "is required");
            }
            ApiError::Rejected(Rejection::FieldInvalid { field, problem }) => {
                details.add_bad_request_violation(field.to_string(), problem.to_string());
            }
            ApiError::Rejected(Rejection::ActionSchemaInvalid { action, schema, problem }) => {
                details.add_bad_request_violation(format!("manifest.actions[{action}].{schema}"), problem.clone());
            }
            ApiError::Rejected(Rejection::VersionInvalid { field, value }) => {
                details.add_bad_request_violation(field.to_string(), format!("{value:?} is not valid semver"));
            }
            ApiError::Rejected(Rejection::LimitExceeded { limit, actual }) => {
                details.add_quota_failure_violation(
                    limit.name(),
                    format!("{actual} exceeds {} = {}", limit.name(), limit.value()),
                );
            }
            ApiError::NoLeader | ApiError::MembershipChangeInProgress => {
                details.set_retry_info(Some(Duration::from_millis(NO_LEADER_RETRY_DELAY_MS)));
            }
            ApiError::Overloaded { limit, limit_value } => {
                details.add_quota_failure_violation(*limit, format!("at most {limit_value} at once on this node"));
                details.set_retry_info(Some(Duration::from_millis(OVERLOADED_RETRY_DELAY_MS)));
            }
            ApiError::EvaluatorUnavailable { .. } => {
                details.set_retry_info(Some(Duration::from_millis(OVERLOADED_RETRY_DELAY_MS)));
            }
            ApiError::LeaderClockSkew { .. } => {
                details.set_retry_info(Some(Duration::from_millis(NO_LEADER_RETRY_DELAY_MS)));
            }
            _ => {}
        }
        Status::with_error_details(self.code(), self.to_string(), details)
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        error.into_status()
    }
}

/// Limits on accumulated state rather than on one request's shape.
fn is_capacity_limit(limit: Limit) -> bool {
    matches!(limit, Limit::KeysPerRole | Limit::Policies | Limit::Tenants | Limit::StateBytes | Limit::Members)
}

fn rejection_metadata(rejection: &Rejection, metadata: &mut HashMap<String, String>) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_proto::v1::ErrorReason;

    /// One registry: every reason the node or the kernel can produce is a name
    /// of `keel.v1.ErrorReason`, and every registry name is produced somewhere.
    #[test]
    fn every_reason_is_in_the_proto_registry() {
        let produced: std::collections::BTreeSet<&str> =
            Rejection::ALL_REASONS.iter().chain(ApiError::NODE_REASONS).copied().collect();
        for reason in &produced {
            assert!(ErrorReason::from_str_name(reason).is_some(), "{reason} is missing from keel.v1.ErrorReason");
        }
        for value in 1..=200 {
            if let Ok(reason) = ErrorReason::try_from(value) {
                assert!(produced.contains(reason.as_str_name()), "{} is never produced", reason.as_str_name());
            }
        }
    }

    #[test]
    fn statuses_carry_error_info_with_the_reason() {
        let status =
            ApiError::Rejected(Rejection::LimitExceeded { limit: Limit::ManifestBytes, actual: 300_000 }).into_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        let info = status.get_details_error_info().expect("error info is attached");
        assert_eq!(info.reason, "LIMIT_EXCEEDED");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata.get("limit").map(String::as_str), Some("MANIFEST_BYTES_MAX"));
        assert!(ApiError::NoLeader.into_status().get_details_retry_info().is_some());
    }
}
