//! [`ReplicaError`]: how proposing, reading, transferring leadership and
//! changing membership end when they do not succeed — on this node or, for
//! a forwarded write or a read index, on the leader, whose answer carries
//! this very type over the peer transport (bincode, so variants are only
//! ever appended: an older member still reads every variant it knew).

use super::membership::MembershipError;
use crate::status::{self, Fault, Metadata, NO_LEADER_RETRY_DELAY_MS};
use keel_kernel::Rejection;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tonic::Code;
use tonic_types::ErrorDetails;

/// Why the replica did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReplicaError {
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
    /// The caller's deadline passed first; a write may still apply.
    #[error("deadline exceeded after {after_ms} ms; the operation may still complete")]
    DeadlineExceeded {
        /// The deadline that passed.
        after_ms: u64,
    },
    /// The Raft core stopped or the node is shutting down.
    #[error("this node is unavailable: {detail}")]
    NodeUnavailable {
        /// What stopped.
        detail: String,
    },
    /// A deterministic refusal: before proposing, or by `apply`.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// A bug or a storage failure, logged under this id where it happened.
    #[error("internal error (request {request_id})")]
    Internal {
        /// Names the log line.
        request_id: String,
    },
    /// This leader's clock disagrees with the voters: it stamps nothing and
    /// hands leadership over.
    #[error("this leader's wall clock disagrees with a majority of the voters by more than {skew_max_ms} ms")]
    LeaderClockSkew {
        /// The bound (`raft.clock_skew_max_ms`).
        skew_max_ms: u64,
    },
    /// Another membership change or a leadership transfer is in progress.
    #[error("another membership change is in progress; retry shortly")]
    MembershipChangeInProgress,
    /// A membership change was refused.
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

impl ReplicaError {
    /// An internal error: logs the chain once, keeps the request id.
    pub fn internal(source: impl Into<anyhow::Error>) -> ReplicaError {
        ReplicaError::Internal { request_id: status::log_internal(&source.into()) }
    }

    /// The deadline error for `deadline`.
    pub fn deadline(deadline: Duration) -> ReplicaError {
        ReplicaError::DeadlineExceeded { after_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX) }
    }

    /// `NOT_LEADER` naming `leader_id`, or `NO_LEADER` when none is known.
    pub fn not_leader(leader_id: Option<u64>, leader_addr: Option<String>) -> ReplicaError {
        match leader_id {
            Some(leader_id) => ReplicaError::NotLeader { leader_id: Some(leader_id), leader_addr },
            None => ReplicaError::NoLeader,
        }
    }

    /// The error a follower answers its caller with when the leader it
    /// asked answered `self`: the leader's unavailability names the leader.
    pub fn from_leader(self, leader_id: u64) -> ReplicaError {
        match self {
            ReplicaError::NotLeader { leader_id, leader_addr } => ReplicaError::not_leader(leader_id, leader_addr),
            ReplicaError::NodeUnavailable { detail } => {
                ReplicaError::NodeUnavailable { detail: format!("leader {leader_id}: {detail}") }
            }
            ReplicaError::Internal { request_id } => {
                tracing::warn!(leader_id, %request_id, "the leader failed internally; see its log");
                ReplicaError::Internal { request_id }
            }
            other => other,
        }
    }

    /// Reasons this type produces besides the kernel's rejections.
    pub const REASONS: &'static [&'static str] = &[
        "NOT_LEADER",
        "NO_LEADER",
        "DEADLINE_EXCEEDED",
        "NODE_UNAVAILABLE",
        "INTERNAL",
        "LEADER_CLOCK_SKEW",
        "MEMBERSHIP_CHANGE_IN_PROGRESS",
        "MEMBER_ALREADY_EXISTS",
        "ADDRESS_IN_USE",
        "MEMBER_NOT_FOUND",
        "LAST_VOTER",
        "MEMBER_NOT_VOTER",
    ];
}

impl Fault for ReplicaError {
    fn reason(&self) -> &'static str {
        match self {
            ReplicaError::NotLeader { .. } => "NOT_LEADER",
            ReplicaError::NoLeader => "NO_LEADER",
            ReplicaError::DeadlineExceeded { .. } => "DEADLINE_EXCEEDED",
            ReplicaError::NodeUnavailable { .. } => "NODE_UNAVAILABLE",
            ReplicaError::Rejected(rejection) => rejection.reason(),
            ReplicaError::Internal { .. } => "INTERNAL",
            ReplicaError::LeaderClockSkew { .. } => "LEADER_CLOCK_SKEW",
            ReplicaError::MembershipChangeInProgress => "MEMBERSHIP_CHANGE_IN_PROGRESS",
            ReplicaError::Membership(error) => error.reason(),
        }
    }

    fn code(&self) -> Code {
        match self {
            ReplicaError::NotLeader { .. }
            | ReplicaError::NoLeader
            | ReplicaError::NodeUnavailable { .. }
            | ReplicaError::LeaderClockSkew { .. }
            | ReplicaError::MembershipChangeInProgress => Code::Unavailable,
            ReplicaError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            ReplicaError::Rejected(rejection) => Fault::code(rejection),
            ReplicaError::Internal { .. } => Code::Internal,
            ReplicaError::Membership(error) => match error {
                MembershipError::AlreadyExists { .. } | MembershipError::AddressInUse { .. } => Code::AlreadyExists,
                MembershipError::NotFound { .. } => Code::NotFound,
                MembershipError::LastVoter { .. } | MembershipError::NotVoter { .. } => Code::FailedPrecondition,
            },
        }
    }

    fn metadata(&self) -> Metadata {
        let mut metadata = Metadata::new();
        let mut put = |key: &str, value: String| {
            metadata.insert(key.to_owned(), value);
        };
        match self {
            ReplicaError::NotLeader { leader_id, leader_addr } => {
                if let Some(leader_id) = leader_id {
                    put("leader_id", leader_id.to_string());
                }
                if let Some(leader_addr) = leader_addr {
                    put("leader_addr", leader_addr.clone());
                }
            }
            ReplicaError::Rejected(rejection) => return rejection.metadata(),
            ReplicaError::Internal { request_id } => put("request_id", request_id.clone()),
            ReplicaError::LeaderClockSkew { skew_max_ms } => put("clock_skew_max_ms", skew_max_ms.to_string()),
            ReplicaError::Membership(error) => match error {
                MembershipError::AlreadyExists { node_id }
                | MembershipError::NotFound { node_id }
                | MembershipError::LastVoter { node_id }
                | MembershipError::NotVoter { node_id } => put("node_id", node_id.to_string()),
                MembershipError::AddressInUse { addr, node_id } => {
                    put("addr", addr.clone());
                    put("node_id", node_id.to_string());
                }
            },
            ReplicaError::NoLeader
            | ReplicaError::DeadlineExceeded { .. }
            | ReplicaError::NodeUnavailable { .. }
            | ReplicaError::MembershipChangeInProgress => {}
        }
        metadata
    }

    fn details(&self, details: &mut ErrorDetails) {
        match self {
            ReplicaError::Rejected(rejection) => rejection.details(details),
            ReplicaError::NoLeader
            | ReplicaError::MembershipChangeInProgress
            | ReplicaError::LeaderClockSkew { .. } => status::retry_after(details, NO_LEADER_RETRY_DELAY_MS),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::peer_message::pack;
    use crate::replica::Forwarded;
    use keel_proto::raft::v1 as pb;

    // Golden bytes of a leader's refusal on the peer wire. If this changes,
    // the wire changed: bump PEER_FORMAT_VERSION and keep reading the old layout.
    #[rustfmt::skip]
    const GOLDEN_NOT_LEADER: &str = concat!(
        "01000000",                                                // Err
        "00000000",                                                // ReplicaError::NotLeader
        "01", "0200000000000000",                                  // leader_id: Some(2)
        "01", "0d00000000000000", "31302e302e302e323a37343030",    // leader_addr: Some("10.0.0.2:7400")
    );

    #[test]
    fn a_leaders_refusal_keeps_its_wire_bytes() -> Result<(), Box<dyn std::error::Error>> {
        let not_leader: Result<Forwarded, ReplicaError> =
            Err(ReplicaError::NotLeader { leader_id: Some(2), leader_addr: Some("10.0.0.2:7400".into()) });
        assert_eq!(hex::encode(pack::<pb::ForwardResponse, _>(&not_leader)?.body), GOLDEN_NOT_LEADER);
        Ok(())
    }

    #[test]
    fn a_leaders_answer_reaches_the_caller_unchanged_but_for_whom_it_names() {
        assert_eq!(
            ReplicaError::NotLeader { leader_id: None, leader_addr: None }.from_leader(2),
            ReplicaError::NoLeader
        );
        assert_eq!(
            ReplicaError::DeadlineExceeded { after_ms: 5 }.from_leader(2),
            ReplicaError::DeadlineExceeded { after_ms: 5 }
        );
        assert_eq!(
            ReplicaError::NodeUnavailable { detail: "stopped".into() }.from_leader(2),
            ReplicaError::NodeUnavailable { detail: "leader 2: stopped".into() }
        );
        let skew = ReplicaError::LeaderClockSkew { skew_max_ms: 500 };
        assert_eq!(skew.clone().from_leader(2), skew);
    }
}
