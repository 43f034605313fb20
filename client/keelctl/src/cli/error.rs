//! How `keelctl` fails: one error type, one exit code per kind, one format.
//!
//! ```text
//! error: <REASON>: <message>
//!   <metadata key>=<value>
//! ```
//!
//! Exit codes: [`EXIT_SERVER_ERROR`] when the server refused or failed (or
//! `policy test` cases failed),
//! [`EXIT_USAGE`] for invalid usage or local input (clap uses the same code
//! for its own usage errors), [`EXIT_UNAVAILABLE`] when the cluster could
//! not be reached or did not answer in time, [`EXIT_DENIED`] when `admit`
//! was answered with a denial, [`EXIT_AUDIT_INVALID`] when `audit verify`
//! found a bad record, [`EXIT_CHECK_FAILED`] when `cluster check` found the
//! members disagreeing.

use keel_client::error::{ClientError, ErrorClass, REASON_INVALID_INPUT};
use keel_client::local_error::LocalError;
use std::collections::BTreeMap;
use std::io::Write;

/// Exit code when the server answered with an error.
pub const EXIT_SERVER_ERROR: u8 = 1;
/// Exit code for invalid usage or bad local input.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the cluster was unavailable or a transport failed.
pub const EXIT_UNAVAILABLE: u8 = 3;
/// Exit code when `admit` was answered with a denial.
pub const EXIT_DENIED: u8 = 4;
/// Exit code when `audit verify` found a bad record.
pub const EXIT_AUDIT_INVALID: u8 = 5;
/// Exit code when `cluster check` found the cluster not working as one.
pub const EXIT_CHECK_FAILED: u8 = 6;
/// Reason reported when `cluster check` failed.
pub const REASON_CLUSTER_CHECK_FAILED: &str = "CLUSTER_CHECK_FAILED";
/// Reason reported when `audit verify` found a bad record.
pub const REASON_AUDIT_INVALID: &str = "AUDIT_INVALID";
/// Reason reported when writing the output failed.
pub const REASON_OUTPUT_FAILED: &str = "OUTPUT_FAILED";
/// Reason reported when `policy test` ran and some case did not pass.
pub const REASON_POLICY_TEST_FAILED: &str = "POLICY_TEST_FAILED";

/// A failed `keelctl` command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Local input (files, manifests) is bad.
    #[error(transparent)]
    Local(#[from] LocalError),
    /// The arguments make no sense together.
    #[error("{problem}")]
    Usage {
        /// What is wrong.
        problem: String,
    },
    /// Writing to stdout failed.
    #[error("cannot write output: {source}")]
    Output {
        /// Why.
        source: std::io::Error,
    },
    /// `policy test` ran, and some cases did not get the expected decision.
    #[error("{failed} of {total} policy test cases failed")]
    PolicyTestFailed {
        /// Cases that failed.
        failed: u32,
        /// Cases run.
        total: u32,
    },
    /// `admit` was answered: not allowed.
    #[error("the admission was denied")]
    Denied {
        /// The denial's reason.
        reason: String,
    },
    /// `cluster check` found the members not working as one cluster.
    #[error(transparent)]
    CheckFailed(#[from] super::cluster::check::CheckFailure),
    /// `audit verify` found a bad record.
    #[error("the audit log does not verify: {problem}")]
    AuditInvalid {
        /// The first bad record's id (empty: a line that is not a record).
        first_bad: String,
        /// What is wrong.
        problem: String,
    },
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(error) => match error.class() {
                ErrorClass::LocalInput => EXIT_USAGE,
                ErrorClass::Server => EXIT_SERVER_ERROR,
                ErrorClass::Unavailable => EXIT_UNAVAILABLE,
            },
            CliError::Local(_) | CliError::Usage { .. } => EXIT_USAGE,
            CliError::Output { .. } | CliError::PolicyTestFailed { .. } => EXIT_SERVER_ERROR,
            CliError::Denied { .. } => EXIT_DENIED,
            CliError::AuditInvalid { .. } => EXIT_AUDIT_INVALID,
            CliError::CheckFailed(_) => EXIT_CHECK_FAILED,
        }
    }

    /// The stable reason shown first.
    pub fn reason(&self) -> &str {
        match self {
            CliError::Client(error) => error.reason(),
            CliError::Local(_) | CliError::Usage { .. } => REASON_INVALID_INPUT,
            CliError::Output { .. } => REASON_OUTPUT_FAILED,
            CliError::PolicyTestFailed { .. } => REASON_POLICY_TEST_FAILED,
            CliError::Denied { reason } => reason,
            CliError::AuditInvalid { .. } => REASON_AUDIT_INVALID,
            CliError::CheckFailed(_) => REASON_CLUSTER_CHECK_FAILED,
        }
    }

    /// The message for humans.
    pub fn message(&self) -> String {
        match self {
            CliError::Client(error) => error.message(),
            other => other.to_string(),
        }
    }

    /// Metadata shown as `key=value` lines.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        match self {
            CliError::Client(error) => error.metadata(),
            CliError::AuditInvalid { first_bad, .. } => BTreeMap::from([("first_bad".to_owned(), first_bad.clone())]),
            CliError::CheckFailed(failure) => {
                failure.node_id().map(|id| BTreeMap::from([("node_id".to_owned(), id.to_string())])).unwrap_or_default()
            }
            _ => BTreeMap::new(),
        }
    }

    /// Writes `error: <REASON>: <message>` and the metadata lines.
    pub fn report(&self, stderr: &mut dyn Write) -> std::io::Result<()> {
        writeln!(stderr, "error: {}: {}", self.reason(), self.message())?;
        for (key, value) in self.metadata() {
            writeln!(stderr, "  {key}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: tonic::Code, reason: &str) -> CliError {
        CliError::Client(ClientError::Server {
            code,
            reason: reason.into(),
            message: "no trusted key has id ab".into(),
            metadata: [("key_id".to_owned(), "ab".to_owned())].into_iter().collect(),
            retry_delay: None,
        })
    }

    #[test]
    fn reports_reason_message_and_metadata() {
        let mut stderr = Vec::new();
        server_error(tonic::Code::PermissionDenied, "KEY_UNKNOWN").report(&mut stderr).expect("write");
        assert_eq!(String::from_utf8_lossy(&stderr), "error: KEY_UNKNOWN: no trusted key has id ab\n  key_id=ab\n");
    }

    #[test]
    fn exit_codes_follow_the_kind_of_failure() {
        assert_eq!(server_error(tonic::Code::PermissionDenied, "KEY_UNKNOWN").exit_code(), EXIT_SERVER_ERROR);
        assert_eq!(server_error(tonic::Code::Unavailable, "NO_LEADER").exit_code(), EXIT_UNAVAILABLE);
        assert_eq!(CliError::Usage { problem: "x".into() }.exit_code(), EXIT_USAGE);
        let connect = CliError::Client(ClientError::Connect { endpoints: vec![], last_error: String::new() });
        assert_eq!(connect.exit_code(), EXIT_UNAVAILABLE);
        let local = CliError::Client(ClientError::Local(LocalError::ArgumentInvalid {
            argument: "--x".into(),
            problem: "bad".into(),
        }));
        assert_eq!(local.exit_code(), EXIT_USAGE);
    }
}
