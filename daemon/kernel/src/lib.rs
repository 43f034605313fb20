//! Keel's deterministic core: the replicated state machine.
//!
//! Everything here is a pure function of its inputs. There are no clocks
//! (time comes from the leader-stamped [`Proposal`]), no randomness, no I/O,
//! no async and no hash-ordered maps, so applying the same log yields the same
//! [`StateDigest`] on every node. `tests/purity.rs` checks the dependency list
//! and `clippy.toml` disallows clock and random APIs.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod action_schema;
pub mod command;
pub mod event;
pub mod event_history;
pub mod idempotency;
pub mod ids;
pub mod judge;
pub mod limits;
pub mod manifest;
pub mod persistent;
pub mod policy;
pub mod registry;
pub mod rejection;
pub mod revoked_tokens;
pub mod signing;
pub mod state;
pub mod state_budget;
pub mod tenant;
pub mod token;
pub mod trust_store;
pub mod ui_surface;

pub use command::{Command, Proposal};
pub use event::{Event, EventKind};
pub use ids::Name;
pub use judge::{InProcessJudge, Judge, Judgement, Verdict};
pub use rejection::{Rejection, RejectionClass};
pub use state::{Applied, KernelState, Outcome, SnapshotError, StateDigest};
