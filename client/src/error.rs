//! Everything a client call can fail with, and the single conversion from
//! `tonic::Status`.
//!
//! Server errors carry a `google.rpc.ErrorInfo` detail whose `reason` is a
//! stable `UPPER_SNAKE` name (`keel.v1.ErrorReason`); callers match on
//! [`ClientError::reason`], never on message text. Failures that never
//! reached Keel's API layer (refused connections, broken streams, a proxy's
//! 503) carry no `ErrorInfo` and become [`ClientError::Transport`]; the
//! client also gives them stable reasons of its own, listed in
//! [`CLIENT_REASONS`], so every error has one.

use crate::local_error::LocalError;
use std::collections::BTreeMap;
use std::time::Duration;
use tonic_types::StatusExt;

/// Reason of a server error that carried no `ErrorInfo`.
pub const REASON_UNKNOWN: &str = "UNKNOWN";
/// Reason of a call that failed below the API (connection lost, refused).
pub const REASON_TRANSPORT: &str = "TRANSPORT_ERROR";
/// Reason when no endpoint could be connected to.
pub const REASON_CONNECT_FAILED: &str = "CONNECT_FAILED";
/// Reason when the caller's deadline passed (same name as the server's).
pub const REASON_DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";
/// Reason for bad local input: files, flags, manifests, endpoints.
pub const REASON_INVALID_INPUT: &str = "INVALID_INPUT";
/// Reason when a response breaks the API's contract.
pub const REASON_INVALID_RESPONSE: &str = "INVALID_RESPONSE";

/// Every reason the client itself produces (server reasons come from
/// `keel.v1.ErrorReason`).
pub const CLIENT_REASONS: &[&str] = &[
    REASON_UNKNOWN,
    REASON_TRANSPORT,
    REASON_CONNECT_FAILED,
    REASON_DEADLINE_EXCEEDED,
    REASON_INVALID_INPUT,
    REASON_INVALID_RESPONSE,
];

/// The `ErrorInfo.domain` Keel uses.
pub const ERROR_DOMAIN: &str = "keel";

/// How a failure should be treated by a caller such as `keelctl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The caller's own input is wrong; retrying will not help.
    LocalInput,
    /// The server answered and refused (or failed internally).
    Server,
    /// The cluster could not be reached or could not answer in time.
    Unavailable,
}

/// A failed client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{reason} ({code:?}): {message}")]
    Server {
        /// The gRPC status code.
        code: tonic::Code,
        /// `ErrorInfo.reason`, or [`REASON_UNKNOWN`] when absent.
        reason: String,
        /// The status message (for humans; do not match on it).
        message: String,
        /// `ErrorInfo.metadata`.
        metadata: BTreeMap<String, String>,
        /// `RetryInfo.retry_delay`, when the server suggested one.
        retry_delay: Option<Duration>,
    },
    /// The call failed below the API: the connection broke or was refused.
    #[error("transport error talking to {endpoint} ({code:?}): {detail}")]
    Transport {
        /// The endpoint in use.
        endpoint: String,
        /// The status code tonic reported.
        code: tonic::Code,
        /// The error and its causes.
        detail: String,
    },
    /// No endpoint accepted a connection.
    #[error("could not connect to any of [{}]: {last_error}", endpoints.join(", "))]
    Connect {
        /// Every endpoint tried.
        endpoints: Vec<String>,
        /// The last endpoint's failure.
        last_error: String,
    },
    /// The caller's deadline passed before an answer arrived. The operation
    /// may still take effect.
    #[error("{method} got no answer within {timeout_ms} ms")]
    DeadlineExceeded {
        /// The RPC.
        method: &'static str,
        /// The deadline the call had.
        timeout_ms: u64,
    },
    /// An endpoint address is unusable.
    #[error("endpoint {endpoint:?} {problem}")]
    EndpointInvalid {
        /// The address as given.
        endpoint: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The client configuration is unusable.
    #[error("client configuration `{field}` {problem}")]
    ConfigInvalid {
        /// The configuration field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// Bad local input (files, manifests, arguments).
    #[error(transparent)]
    Local(#[from] LocalError),
    /// A list did not end within the page bound.
    #[error("{method} returned more than {pages_max} pages")]
    TooManyPages {
        /// The RPC.
        method: &'static str,
        /// [`crate::limits::LIST_PAGES_MAX`].
        pages_max: usize,
    },
    /// A response broke the API contract (e.g. a page token repeated, a
    /// required field missing).
    #[error("{method} response: `{field}` {problem}")]
    ResponseInvalid {
        /// The RPC.
        method: &'static str,
        /// The response field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl ClientError {
    /// The one conversion from a tonic status. `endpoint` is the address the
    /// call went to.
    pub fn from_status(status: &tonic::Status, endpoint: &str) -> Self {
        let error_info = status.get_details_error_info();
        // Statuses decoded from a server's trailers never carry a source;
        // statuses synthesised by the channel from I/O errors always do.
        let is_transport = error_info.is_none()
            && (std::error::Error::source(status).is_some() || status.code() == tonic::Code::Unavailable);
        if is_transport {
            return ClientError::Transport {
                endpoint: endpoint.to_owned(),
                code: status.code(),
                detail: error_chain(status),
            };
        }
        let (reason, metadata) = match error_info {
            Some(info) if !info.reason.is_empty() => (info.reason, info.metadata.into_iter().collect()),
            Some(info) => (REASON_UNKNOWN.to_owned(), info.metadata.into_iter().collect()),
            None => (REASON_UNKNOWN.to_owned(), BTreeMap::new()),
        };
        ClientError::Server {
            code: status.code(),
            reason,
            message: status.message().to_owned(),
            metadata,
            retry_delay: status.get_details_retry_info().and_then(|info| info.retry_delay),
        }
    }

    /// The stable reason: the server's `ErrorInfo.reason`, or one of
    /// [`CLIENT_REASONS`].
    pub fn reason(&self) -> &str {
        match self {
            ClientError::Server { reason, .. } => reason,
            ClientError::Transport { .. } => REASON_TRANSPORT,
            ClientError::Connect { .. } => REASON_CONNECT_FAILED,
            ClientError::DeadlineExceeded { .. } => REASON_DEADLINE_EXCEEDED,
            ClientError::EndpointInvalid { .. } | ClientError::ConfigInvalid { .. } | ClientError::Local(_) => {
                REASON_INVALID_INPUT
            }
            ClientError::TooManyPages { .. } | ClientError::ResponseInvalid { .. } => REASON_INVALID_RESPONSE,
        }
    }

    /// The text for humans: the server's message, or this error's description.
    pub fn message(&self) -> String {
        match self {
            ClientError::Server { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// `ErrorInfo.metadata` for server errors; empty otherwise.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        match self {
            ClientError::Server { metadata, .. } => metadata.clone(),
            _ => BTreeMap::new(),
        }
    }

    /// The gRPC code, for errors that have one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Server { code, .. } | ClientError::Transport { code, .. } => Some(*code),
            ClientError::DeadlineExceeded { .. } => Some(tonic::Code::DeadlineExceeded),
            _ => None,
        }
    }

    /// How a caller should treat this failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            ClientError::Server { code, .. } => match code {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => ErrorClass::Unavailable,
                _ => ErrorClass::Server,
            },
            ClientError::Transport { .. } | ClientError::Connect { .. } | ClientError::DeadlineExceeded { .. } => {
                ErrorClass::Unavailable
            }
            ClientError::EndpointInvalid { .. } | ClientError::ConfigInvalid { .. } | ClientError::Local(_) => {
                ErrorClass::LocalInput
            }
            ClientError::TooManyPages { .. } | ClientError::ResponseInvalid { .. } => ErrorClass::Server,
        }
    }
}

/// Whether `status` is tonic's own client-side timeout (the channel enforces
/// the `grpc-timeout` the client sent), as opposed to an answer.
pub(crate) fn is_client_timeout(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    for _ in 0..ERROR_CHAIN_DEPTH_MAX {
        let Some(cause) = source else { return false };
        if cause.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// An error's message followed by its causes, `": "`-separated.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    // The chain is finite in practice; bound it anyway.
    for _ in 0..ERROR_CHAIN_DEPTH_MAX {
        let Some(cause) = source else { break };
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Causes followed when describing a transport error.
const ERROR_CHAIN_DEPTH_MAX: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, StatusExt};

    fn keel_status(
        code: tonic::Code,
        reason: &str,
        metadata: &[(&str, &str)],
        retry_delay: Option<Duration>,
    ) -> tonic::Status {
        let mut details = ErrorDetails::with_error_info(
            reason,
            ERROR_DOMAIN,
            metadata
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect::<std::collections::HashMap<_, _>>(),
        );
        if let Some(delay) = retry_delay {
            details.set_retry_info(Some(delay));
        }
        tonic::Status::with_error_details(code, "the message", details)
    }

    #[test]
    fn server_errors_carry_reason_message_metadata_and_retry_delay() {
        let status = keel_status(
            tonic::Code::Unavailable,
            "NO_LEADER",
            &[("b", "2"), ("a", "1")],
            Some(Duration::from_millis(250)),
        );
        let error = ClientError::from_status(&status, "http://n1:7400");
        let ClientError::Server { code, reason, message, metadata, retry_delay } = &error else {
            panic!("expected a server error, got {error:?}")
        };
        assert_eq!(*code, tonic::Code::Unavailable);
        assert_eq!(reason, "NO_LEADER");
        assert_eq!(message, "the message");
        assert_eq!(metadata.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(), ["a=1", "b=2"]);
        assert_eq!(*retry_delay, Some(Duration::from_millis(250)));
        assert_eq!(error.class(), ErrorClass::Unavailable);
    }

    #[test]
    fn a_server_error_without_error_info_has_reason_unknown() {
        let error = ClientError::from_status(&tonic::Status::not_found("gone"), "http://n1:7400");
        assert_eq!(error.reason(), REASON_UNKNOWN);
        assert_eq!(error.message(), "gone");
        assert_eq!(error.class(), ErrorClass::Server);
    }

    #[test]
    fn unavailable_without_error_info_is_a_transport_error() {
        let error = ClientError::from_status(&tonic::Status::unavailable("connection refused"), "http://n1:7400");
        assert!(matches!(error, ClientError::Transport { .. }), "{error:?}");
        assert_eq!(error.reason(), REASON_TRANSPORT);
        assert_eq!(error.class(), ErrorClass::Unavailable);
    }

    #[test]
    fn a_status_with_a_source_is_a_transport_error() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        let status = tonic::Status::from_error(Box::new(io));
        let error = ClientError::from_status(&status, "http://n1:7400");
        assert!(matches!(error, ClientError::Transport { .. }), "{error:?}");
    }

    #[test]
    fn client_reasons_are_upper_snake_and_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for reason in CLIENT_REASONS {
            assert!(reason.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{reason}");
            assert!(seen.insert(reason), "duplicate {reason}");
        }
    }
}
