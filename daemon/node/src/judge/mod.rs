//! Where this node runs judgements (kernel `judge`): every call into a
//! third-party evaluator — regorus for policies, `jsonschema` for action
//! schemas — whether from `apply` or from `Evaluate`/`Test`.
//!
//! ```text
//!  state machine: entries ─judgements_of─► NodeJudge::judge_for_apply (serial, no pool) ─► memo
//!                 then, under the state lock: kernel.apply_judged(entry, memo)
//!  Evaluate/Test/Admit: NodeJudge::judge_for_request (pool of JUDGES_CONCURRENT_MAX, deadline)
//!                 ─► a long-lived worker (`keeld __judge --serve`, compiled evaluators cached) ─► verdict
//!
//!  Sandbox (apply): a fresh `keeld __judge` child per judgement
//!     stdin: JSON Judgement ─► thread with EVALUATION_STACK_BYTES stack
//!            ─► allocator capped at EVALUATION_MEMORY_BYTES_MAX ─► judge::run (catch_unwind)
//!     stdout: JSON Verdict; SIGABRT ─► EVALUATION_ABORTED (memory_budget | stack | abort)
//!     killed, timed out, could not start ─► Verdict::Unavailable (never an outcome)
//! ```
//!
//! Why a process: a Rust allocation that fails aborts the process (there is
//! no stable way to turn it into an error), and regorus builtins can ask for
//! gigabytes in one instruction (`sprintf("%4294967295d", [1])`) or double a
//! value per instruction. In a child the allocator's cap turns that into an
//! abort of the child only, at exactly the same allocation on every member
//! (a fresh single-threaded process with the same binary and the same input
//! requests the same bytes in the same order), so the verdict is the same
//! everywhere. Panics are caught inside the child (`judge::run`) and become
//! verdicts too. The judging thread's stack (`EVALUATION_STACK_BYTES`) is
//! larger than any input within the size limits can use, so stack depth
//! (which differs between builds and hosts) never decides a verdict.
//!
//! What is not deterministic — the child could not start, was killed (OOM
//! killer, timeout) — is [`Verdict::Unavailable`]: `apply` retries it a few
//! times and then stops the member (fatal, not ready) rather than record a
//! verdict other members might not reach; a request gets `UNAVAILABLE`.

mod child;
mod sandbox;

pub use child::{JUDGE_SUBCOMMAND, child_main};
pub use sandbox::Sandbox;

use crate::limits::{JUDGE_APPLY_ATTEMPTS_MAX, JUDGE_APPLY_TIMEOUT_MS, JUDGE_REQUEST_TIMEOUT_MS};
use crate::status::{self, Fault, Metadata, OVERLOADED_RETRY_DELAY_MS, Overloaded};
use keel_kernel::judge::{self, Judge, Judgement, Verdict};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Why a request's judgement did not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JudgeError {
    /// Every judge is busy (`JUDGES_CONCURRENT_MAX`).
    #[error(transparent)]
    Busy(#[from] Overloaded),
    /// The evaluation could not run here (its process could not start or
    /// was stopped); nothing was decided.
    #[error("the evaluator is unavailable on this node: {detail}")]
    Unavailable {
        /// What went wrong.
        detail: String,
    },
}

impl JudgeError {
    /// Reasons this type produces.
    pub const REASONS: &'static [&'static str] = &["LIMIT_EXCEEDED", "NODE_UNAVAILABLE"];
}

impl Fault for JudgeError {
    fn reason(&self) -> &'static str {
        match self {
            JudgeError::Busy(overloaded) => overloaded.reason(),
            JudgeError::Unavailable { .. } => "NODE_UNAVAILABLE",
        }
    }
    fn code(&self) -> tonic::Code {
        match self {
            JudgeError::Busy(overloaded) => overloaded.code(),
            JudgeError::Unavailable { .. } => tonic::Code::Unavailable,
        }
    }
    fn metadata(&self) -> Metadata {
        match self {
            JudgeError::Busy(overloaded) => overloaded.metadata(),
            JudgeError::Unavailable { detail } => Metadata::from([("detail".to_owned(), detail.clone())]),
        }
    }
    fn details(&self, details: &mut tonic_types::ErrorDetails) {
        match self {
            JudgeError::Busy(overloaded) => overloaded.details(details),
            JudgeError::Unavailable { .. } => status::retry_after(details, OVERLOADED_RETRY_DELAY_MS),
        }
    }
}

/// How this node judges.
#[derive(Debug, Clone, Default)]
pub enum NodeJudge {
    /// In the calling process (`judge::run` on a blocking thread): panics
    /// are caught, memory is not bounded. For in-process test clusters.
    #[default]
    InProcess,
    /// In a child process per judgement (keeld).
    Sandbox(Arc<Sandbox>),
}

impl NodeJudge {
    /// Judges for `apply`: no pool (the state machine applies one batch at
    /// a time), retried when unavailable. The result is `Unavailable` only
    /// after `JUDGE_APPLY_ATTEMPTS_MAX` attempts.
    pub async fn judge_for_apply(&self, judgement: &Judgement) -> Verdict {
        let mut verdict = Verdict::Unavailable { detail: "no attempt".to_owned() };
        for attempt in 1..=JUDGE_APPLY_ATTEMPTS_MAX {
            verdict = self.run(judgement.clone(), Duration::from_millis(JUDGE_APPLY_TIMEOUT_MS)).await;
            match &verdict {
                Verdict::Unavailable { detail } => {
                    tracing::warn!(attempt, %detail, evaluator = judgement.evaluator(), "judgement unavailable");
                }
                _ => break,
            }
        }
        verdict
    }

    /// Judges for a request: waits for a place in the pool no longer than
    /// `timeout`, runs at most `min(timeout, JUDGE_REQUEST_TIMEOUT_MS)`.
    pub async fn judge_for_request(&self, judgement: Judgement, timeout: Duration) -> Result<Verdict, JudgeError> {
        let timeout = timeout.min(Duration::from_millis(JUDGE_REQUEST_TIMEOUT_MS));
        let verdict = match self {
            NodeJudge::InProcess => self.run(judgement, timeout).await,
            NodeJudge::Sandbox(sandbox) => {
                let _permit = sandbox.permit(timeout).await?;
                sandbox.run_in_worker(&judgement, timeout).await
            }
        };
        match verdict {
            Verdict::Unavailable { detail } => Err(JudgeError::Unavailable { detail }),
            verdict => Ok(verdict),
        }
    }

    async fn run(&self, judgement: Judgement, timeout: Duration) -> Verdict {
        match self {
            NodeJudge::InProcess => tokio::task::spawn_blocking(move || judge::run(&judgement))
                .await
                .unwrap_or_else(|error| Verdict::Unavailable { detail: format!("judging task: {error}") }),
            NodeJudge::Sandbox(sandbox) => sandbox.run(&judgement, timeout).await,
        }
    }
}

/// Verdicts worked out before `apply`, handed to the kernel as its judge.
/// A judgement nobody worked out is answered `Unavailable` and remembered,
/// so the state machine stops instead of judging it under its state lock.
#[derive(Debug, Default)]
pub struct JudgedVerdicts {
    verdicts: Vec<(Judgement, Verdict)>,
    missed: AtomicBool,
}

impl JudgedVerdicts {
    /// Whether `judgement` has a verdict here.
    pub fn contains(&self, judgement: &Judgement) -> bool {
        self.verdicts.iter().any(|(known, _)| known == judgement)
    }

    /// Records a verdict.
    pub fn insert(&mut self, judgement: Judgement, verdict: Verdict) {
        self.verdicts.push((judgement, verdict));
    }

    /// Whether the kernel asked for a judgement that had no verdict, since
    /// the last call (the flag is cleared).
    pub fn take_missed(&self) -> bool {
        self.missed.swap(false, Ordering::AcqRel)
    }
}

impl Judge for JudgedVerdicts {
    fn judge(&self, judgement: &Judgement) -> Verdict {
        match self.verdicts.iter().find(|(known, _)| known == judgement) {
            Some((_, verdict)) => verdict.clone(),
            None => {
                self.missed.store(true, Ordering::Release);
                Verdict::Unavailable { detail: "judgement was not worked out before apply".to_owned() }
            }
        }
    }
}
