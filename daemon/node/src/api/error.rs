//! [`ApiError`]: how a client RPC ends when it does not succeed. The
//! replica's and the judge's errors pass through unchanged; the rest are the
//! API's own (lookups, page tokens, watches). Every one reaches the wire
//! through `status::to_status`.

use crate::judge::JudgeError;
use crate::replica::ReplicaError;
use crate::status::{self, Fault, Metadata};
use keel_kernel::Rejection;
use keel_kernel::limits::Limit;
use tonic::{Code, Status};
use tonic_types::ErrorDetails;

/// An error returned to an API caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A deterministic refusal at the edge (the request's shape).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// Proposing, reading, membership or transfer did not succeed.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// A judgement could not run for this request.
    #[error(transparent)]
    Judge(#[from] JudgeError),
    /// The named resource does not exist.
    #[error("{resource} not found")]
    NotFound {
        /// `ENGINE_NOT_FOUND`, `ENGINE_VERSION_NOT_FOUND`, `KEY_UNKNOWN`, `TENANT_NOT_FOUND`, `POLICY_NOT_FOUND`.
        reason: &'static str,
        /// The resource name asked for.
        resource: String,
    },
    /// The page token was not issued for this query.
    #[error("page token is not valid for this query")]
    PageTokenInvalid,
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
    /// The call's audit record could not be made durable in time.
    #[error("{0}")]
    AuditUnavailable(#[from] crate::audit::AuditError),
    /// A bug or a storage failure. Logged in full once; the client gets the request id.
    #[error("internal error (request {request_id})")]
    Internal {
        /// Correlates the client's error with the log line.
        request_id: String,
    },
}

impl ApiError {
    /// An internal error with a fresh request id; logs the chain once.
    pub fn internal(source: impl Into<anyhow::Error>) -> ApiError {
        ApiError::Internal { request_id: status::log_internal(&source.into()) }
    }

    /// The stable reason, a name of `keel.v1.ErrorReason`.
    pub fn reason(&self) -> &'static str {
        Fault::reason(self)
    }

    /// Reasons the API produces itself (the replica, the judge, the peer
    /// port and the kernel list theirs).
    pub const REASONS: &'static [&'static str] = &[
        "ENGINE_NOT_FOUND",
        "ENGINE_VERSION_NOT_FOUND",
        "KEY_UNKNOWN",
        "TENANT_NOT_FOUND",
        "POLICY_NOT_FOUND",
        "PAGE_TOKEN_INVALID",
        "COMPACTED",
        "REVISION_IN_FUTURE",
        "WATCHER_TOO_SLOW",
        "LIMIT_EXCEEDED",
        "AUDIT_UNAVAILABLE",
        "INTERNAL",
    ];

    /// The wire form.
    pub fn into_status(self) -> Status {
        status::to_status(&self)
    }
}

impl Fault for ApiError {
    fn reason(&self) -> &'static str {
        match self {
            ApiError::Rejected(rejection) => rejection.reason(),
            ApiError::Replica(error) => error.reason(),
            ApiError::Judge(error) => error.reason(),
            ApiError::NotFound { reason, .. } => reason,
            ApiError::PageTokenInvalid => "PAGE_TOKEN_INVALID",
            ApiError::Compacted { .. } => "COMPACTED",
            ApiError::RevisionInFuture { .. } => "REVISION_IN_FUTURE",
            ApiError::WatcherTooSlow { .. } => "WATCHER_TOO_SLOW",
            ApiError::TooManyWatchers { .. } => "LIMIT_EXCEEDED",
            ApiError::AuditUnavailable(_) => "AUDIT_UNAVAILABLE",
            ApiError::Internal { .. } => "INTERNAL",
        }
    }

    fn code(&self) -> Code {
        match self {
            ApiError::Rejected(rejection) => rejection.code(),
            ApiError::Replica(error) => error.code(),
            ApiError::Judge(error) => error.code(),
            ApiError::NotFound { .. } => Code::NotFound,
            ApiError::PageTokenInvalid => Code::InvalidArgument,
            ApiError::Compacted { .. } | ApiError::RevisionInFuture { .. } => Code::OutOfRange,
            ApiError::WatcherTooSlow { .. } | ApiError::TooManyWatchers { .. } => Code::ResourceExhausted,
            ApiError::AuditUnavailable(_) => Code::Unavailable,
            ApiError::Internal { .. } => Code::Internal,
        }
    }

    fn metadata(&self) -> Metadata {
        let pairs: Vec<(&str, String)> = match self {
            ApiError::Rejected(rejection) => return rejection.metadata(),
            ApiError::Replica(error) => return error.metadata(),
            ApiError::Judge(error) => return error.metadata(),
            ApiError::NotFound { resource, .. } => vec![("resource", resource.clone())],
            ApiError::Internal { request_id } => vec![("request_id", request_id.clone())],
            ApiError::Compacted { compacted_revision, resync_revision } => vec![
                ("compacted_revision", compacted_revision.to_string()),
                ("resync_revision", resync_revision.to_string()),
            ],
            ApiError::RevisionInFuture { revision, current_revision } => {
                vec![("revision", revision.to_string()), ("current_revision", current_revision.to_string())]
            }
            ApiError::WatcherTooSlow { next_revision } => vec![("next_revision", next_revision.to_string())],
            ApiError::TooManyWatchers { watchers_max } => {
                vec![("limit", Limit::WatchersPerNode.name().to_owned()), ("limit_value", watchers_max.to_string())]
            }
            ApiError::PageTokenInvalid => vec![],
            ApiError::AuditUnavailable(error) => vec![("detail", error.to_string())],
        };
        pairs.into_iter().map(|(key, value)| (key.to_owned(), value)).collect()
    }

    fn details(&self, details: &mut ErrorDetails) {
        match self {
            ApiError::Rejected(rejection) => rejection.details(details),
            ApiError::Replica(error) => error.details(details),
            ApiError::Judge(error) => error.details(details),
            _ => {}
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        error.into_status()
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
        let produced: std::collections::BTreeSet<&str> = Rejection::ALL_REASONS
            .iter()
            .chain(ApiError::REASONS)
            .chain(ReplicaError::REASONS)
            .chain(JudgeError::REASONS)
            .chain(crate::tls::PeerCertificateError::REASONS)
            .chain(crate::tls::ClusterMismatch::REASONS)
            .chain(keel_kernel::token::TokenError::REASONS)
            .chain(crate::edge::authn::AuthError::REASONS)
            .chain(crate::admission::Denial::REASONS)
            .copied()
            .collect();
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
    fn replica_errors_keep_their_wire_form_through_the_api() {
        let status = ApiError::from(ReplicaError::NoLeader).into_status();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(tonic_types::StatusExt::get_details_retry_info(&status).is_some());
        let status =
            ApiError::from(ReplicaError::Rejected(Rejection::LimitExceeded { limit: Limit::Tenants, actual: 7 }))
                .into_status();
        assert_eq!(status.code(), Code::ResourceExhausted);
    }
}
