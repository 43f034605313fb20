//! The judging child: `keeld __judge` reads one JSON [`Judgement`] on
//! stdin, judges it on a thread with a fixed stack under the allocator's
//! cap, and writes one JSON [`Verdict`] on stdout. It starts no runtime,
//! reads no configuration and opens nothing else.
//!
//! `keeld __judge --serve` is a long-lived worker for requests (never for
//! `apply`): frames of a 4-byte little-endian length and JSON, a judgement
//! in, a verdict out, one at a time, each under its own allocation budget,
//! with compiled policies and input schemas kept between judgements
//! ([`judge::Compiled`]). It ends at end of input; an allocation past the
//! budget or a stack overflow aborts it, and its parent answers that
//! judgement from the abort and starts another worker.

use keel_kernel::judge::{self, AbortCause, Judgement, Verdict};
use keel_kernel::limits::{EVALUATION_MEMORY_BYTES_MAX, EVALUATION_MESSAGE_BYTES_MAX, EVALUATION_STACK_BYTES};
use std::io::{Read, Write};
use std::process::ExitCode;

/// The first argument that makes `keeld` a judging child.
pub const JUDGE_SUBCOMMAND: &str = "__judge";

/// Exit code for a request the child could not read (a bug in the parent).
const EXIT_BAD_REQUEST: u8 = 3;
/// Exit code when the verdict could not be written.
const EXIT_WRITE_FAILED: u8 = 4;

/// The argument after [`JUDGE_SUBCOMMAND`] that makes the child a worker.
pub const SERVE_FLAG: &str = "--serve";

/// Runs the child. `set_budget(Some(bytes))` caps the process's further
/// allocations at `bytes` (an allocation past the cap aborts the process);
/// `set_budget(None)` lifts the cap. `keeld`'s `main` passes its counting
/// global allocator's control.
pub fn child_main(set_budget: fn(Option<usize>)) -> ExitCode {
    if std::env::args_os().nth(2).is_some_and(|arg| arg == SERVE_FLAG) {
        return serve_main(set_budget);
    }
    let mut request = Vec::new();
    let limit = u64::try_from(EVALUATION_MESSAGE_BYTES_MAX).unwrap_or(u64::MAX).saturating_add(1);
    if std::io::stdin().lock().take(limit).read_to_end(&mut request).is_err()
        || request.len() > EVALUATION_MESSAGE_BYTES_MAX
    {
        return ExitCode::from(EXIT_BAD_REQUEST);
    }
    let Ok(judgement) = serde_json::from_slice::<Judgement>(&request) else {
        return ExitCode::from(EXIT_BAD_REQUEST);
    };
    drop(request);
    let judging =
        std::thread::Builder::new().name("judge".to_owned()).stack_size(EVALUATION_STACK_BYTES).spawn(move || {
            set_budget(Some(EVALUATION_MEMORY_BYTES_MAX));
            let verdict = judge::run(&judgement);
            set_budget(None);
            (judgement, verdict)
        });
    let verdict = match judging.map(std::thread::JoinHandle::join) {
        Ok(Ok((_, verdict))) => verdict,
        // `judge::run` catches panics, so the thread cannot end in one; say so anyway.
        Ok(Err(_)) => Verdict::Unavailable { detail: "the judging thread ended in a panic".to_owned() },
        Err(error) => Verdict::Unavailable { detail: format!("the judging thread did not start: {error}") },
    };
    let Ok(bytes) = serde_json::to_vec(&verdict) else {
        return ExitCode::from(EXIT_WRITE_FAILED);
    };
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(&bytes).and_then(|()| stdout.flush()).is_err() {
        return ExitCode::from(EXIT_WRITE_FAILED);
    }
    ExitCode::SUCCESS
}

/// The worker: judgements in, verdicts out, on one judging thread that
/// keeps compiled evaluators between them.
fn serve_main(set_budget: fn(Option<usize>)) -> ExitCode {
    let (requests, judged) = std::sync::mpsc::sync_channel::<Judgement>(0);
    let (verdicts, answers) = std::sync::mpsc::sync_channel::<Verdict>(0);
    let judging =
        std::thread::Builder::new().name("judge".to_owned()).stack_size(EVALUATION_STACK_BYTES).spawn(move || {
            let mut compiled = judge::Compiled::default();
            for judgement in judged {
                set_budget(Some(EVALUATION_MEMORY_BYTES_MAX));
                let verdict = judge::run_cached(&judgement, &mut compiled);
                drop(judgement);
                set_budget(None);
                if verdicts.send(verdict).is_err() {
                    return;
                }
            }
        });
    if judging.is_err() {
        return ExitCode::FAILURE;
    }
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    loop {
        let mut length = [0u8; 4];
        match stdin.read_exact(&mut length) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return ExitCode::SUCCESS,
            Err(_) => return ExitCode::from(EXIT_BAD_REQUEST),
        }
        let length = u32::from_le_bytes(length) as usize;
        if length > EVALUATION_MESSAGE_BYTES_MAX {
            return ExitCode::from(EXIT_BAD_REQUEST);
        }
        let mut request = vec![0u8; length];
        if stdin.read_exact(&mut request).is_err() {
            return ExitCode::from(EXIT_BAD_REQUEST);
        }
        let Ok(judgement) = serde_json::from_slice::<Judgement>(&request) else {
            return ExitCode::from(EXIT_BAD_REQUEST);
        };
        drop(request);
        let verdict = match requests.send(judgement).ok().and_then(|()| answers.recv().ok()) {
            Some(verdict) => verdict,
            None => Verdict::Unavailable { detail: "the judging thread stopped".to_owned() },
        };
        let Ok(bytes) = serde_json::to_vec(&verdict) else {
            return ExitCode::from(EXIT_WRITE_FAILED);
        };
        let Ok(length) = u32::try_from(bytes.len()) else {
            return ExitCode::from(EXIT_WRITE_FAILED);
        };
        let written = stdout.write_all(&length.to_le_bytes()).and_then(|()| stdout.write_all(&bytes));
        if written.and_then(|()| stdout.flush()).is_err() {
            return ExitCode::from(EXIT_WRITE_FAILED);
        }
    }
}

/// What the parent makes of a child that was aborted by SIGABRT, from the
/// runtime's last words on stderr. Every cause here is deterministic.
pub(super) fn abort_cause(stderr: &str) -> AbortCause {
    if stderr.contains("memory allocation of") {
        AbortCause::MemoryBudget
    } else if stderr.contains("has overflowed its stack") {
        AbortCause::Stack
    } else {
        AbortCause::Abort
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_causes_are_read_from_the_runtime_messages() {
        assert_eq!(abort_cause("memory allocation of 4294967296 bytes failed\n"), AbortCause::MemoryBudget);
        assert_eq!(
            abort_cause("\nthread 'judge' has overflowed its stack\nfatal runtime error: stack overflow\n"),
            AbortCause::Stack
        );
        assert_eq!(abort_cause(""), AbortCause::Abort);
    }
}
