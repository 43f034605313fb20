//! The parent side of the judging sandbox, bounded in time, output and
//! concurrency: for `apply`, one fresh child process per judgement; for
//! requests, long-lived workers (`keeld __judge --serve`, at most one per
//! place in the pool) that keep compiled evaluators between judgements.
//! A worker that aborts (the allocation budget, the stack), times out or
//! says something unreadable is dropped (killed) and its judgement answered
//! from how it ended; the next request starts a fresh one.

use super::JudgeError;
use super::child::{JUDGE_SUBCOMMAND, SERVE_FLAG, abort_cause};
use crate::limits::JUDGES_CONCURRENT_MAX;
use crate::status::Overloaded;
use keel_kernel::judge::{Judgement, Verdict};
use keel_kernel::limits::EVALUATION_MESSAGE_BYTES_MAX;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Bytes of the child's stderr kept to classify an abort.
const STDERR_BYTES_MAX: u64 = 64 * 1024;
/// SIGABRT: the runtime's answer to a failed allocation or a stack overflow.
const SIGABRT: i32 = 6;

/// Runs judgements in children of `program` (keeld itself).
#[derive(Debug)]
pub struct Sandbox {
    program: PathBuf,
    pool: Semaphore,
    /// Idle workers (at most `JUDGES_CONCURRENT_MAX`: one per permit).
    workers: std::sync::Mutex<Vec<Worker>>,
}

/// A `keeld __judge --serve` child and its pipes.
#[derive(Debug)]
struct Worker {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::process::ChildStdout,
}

/// How a worker's judgement ended, when it gave no verdict.
enum WorkerFailure {
    /// The worker ended (its exit says why).
    Ended,
    /// Something that is not the worker's doing.
    Other(String),
}

impl Sandbox {
    /// A sandbox whose children run `program __judge`.
    pub fn new(program: PathBuf) -> Sandbox {
        Sandbox { program, pool: Semaphore::new(JUDGES_CONCURRENT_MAX), workers: std::sync::Mutex::default() }
    }

    /// A sandbox running this very executable, so children judge with the
    /// same evaluator versions as the parent.
    pub fn current_exe() -> std::io::Result<Sandbox> {
        Ok(Sandbox::new(std::env::current_exe()?))
    }

    /// A place in the request pool, waited for at most `timeout`.
    pub(super) async fn permit(&self, timeout: Duration) -> Result<SemaphorePermit<'_>, JudgeError> {
        let overloaded =
            || JudgeError::Busy(Overloaded { limit: "JUDGES_CONCURRENT_MAX", limit_value: JUDGES_CONCURRENT_MAX });
        match tokio::time::timeout(timeout, self.pool.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(overloaded()),
        }
    }

    /// Judges `judgement` in a fresh child, waiting at most `timeout`.
    pub async fn run(&self, judgement: &Judgement, timeout: Duration) -> Verdict {
        match tokio::time::timeout(timeout, self.run_child(judgement)).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(detail)) => Verdict::Unavailable { detail },
            Err(_) => {
                Verdict::Unavailable { detail: format!("the judging process ran past {} ms", timeout.as_millis()) }
            }
        }
    }

    /// Judges `judgement` in a worker (an idle one, else a new one),
    /// waiting at most `timeout`. For requests only: call with a permit.
    pub async fn run_in_worker(&self, judgement: &Judgement, timeout: Duration) -> Verdict {
        let request = match encode(judgement) {
            Ok(request) => request,
            Err(detail) => return Verdict::Unavailable { detail },
        };
        let idle = self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let mut worker = match idle {
            Some(worker) => worker,
            None => match self.spawn_worker() {
                Ok(worker) => worker,
                Err(detail) => return Verdict::Unavailable { detail },
            },
        };
        match tokio::time::timeout(timeout, worker.call(&request)).await {
            Ok(Ok(verdict)) => {
                self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(worker);
                verdict
            }
            Ok(Err(WorkerFailure::Ended)) => match worker.ended().await {
                Ok(cause) => judgement.aborted(cause, "the judging worker aborted"),
                Err(detail) => Verdict::Unavailable { detail },
            },
            Ok(Err(WorkerFailure::Other(detail))) => Verdict::Unavailable { detail },
            Err(_) => {
                Verdict::Unavailable { detail: format!("the judging worker ran past {} ms", timeout.as_millis()) }
            }
        }
    }

    /// A judging child (a worker when `args` is `--serve`) with piped stdio,
    /// in a clean environment: nothing from the parent's (RUST_MIN_STACK,
    /// RUST_BACKTRACE, ...) can change what the child allocates.
    fn spawn(&self, args: &[&str]) -> Result<tokio::process::Child, String> {
        tokio::process::Command::new(&self.program)
            .arg(JUDGE_SUBCOMMAND)
            .args(args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| format!("starting {}: {error}", self.program.display()))
    }

    fn spawn_worker(&self) -> Result<Worker, String> {
        let mut child = self.spawn(&[SERVE_FLAG])?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the judging worker has no pipes".to_owned());
        };
        Ok(Worker { child, stdin, stdout })
    }

    async fn run_child(&self, judgement: &Judgement) -> Result<Verdict, String> {
        let request = encode(judgement)?;
        let mut child = self.spawn(&[])?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("the judging process has no pipes".to_owned());
        };
        let write = async move {
            // A child that dies early closes its stdin; its exit says why.
            let _ = stdin.write_all(&request).await;
            drop(stdin);
        };
        let output_max = u64::try_from(EVALUATION_MESSAGE_BYTES_MAX).unwrap_or(u64::MAX) + 1;
        let read_stdout = async move {
            let mut bytes = Vec::new();
            stdout.take(output_max).read_to_end(&mut bytes).await.map(|_| bytes)
        };
        let read_stderr = async move {
            let mut bytes = Vec::new();
            stderr.take(STDERR_BYTES_MAX).read_to_end(&mut bytes).await.map(|_| bytes)
        };
        let ((), stdout, stderr) = tokio::join!(write, read_stdout, read_stderr);
        let status = child.wait().await.map_err(|error| format!("waiting for the judging process: {error}"))?;
        let stderr = String::from_utf8_lossy(&stderr.unwrap_or_default()).into_owned();
        if status.success() {
            let stdout = stdout.map_err(|error| format!("reading the verdict: {error}"))?;
            if stdout.len() > EVALUATION_MESSAGE_BYTES_MAX {
                return Err("the verdict is over EVALUATION_MESSAGE_BYTES_MAX".to_owned());
            }
            return serde_json::from_slice(&stdout).map_err(|error| format!("decoding the verdict: {error}"));
        }
        match status.signal() {
            Some(SIGABRT) => {
                let cause = abort_cause(&stderr);
                Ok(judgement.aborted(cause, last_line(&stderr)))
            }
            _ => Err(format!("the judging process ended with {status}: {}", last_line(&stderr))),
        }
    }
}

/// A judgement's request bytes, within `EVALUATION_MESSAGE_BYTES_MAX`.
fn encode(judgement: &Judgement) -> Result<Vec<u8>, String> {
    let request = serde_json::to_vec(judgement).map_err(|error| format!("encoding the judgement: {error}"))?;
    if request.len() > EVALUATION_MESSAGE_BYTES_MAX {
        return Err(format!(
            "the judgement is {} bytes, over EVALUATION_MESSAGE_BYTES_MAX ({EVALUATION_MESSAGE_BYTES_MAX})",
            request.len()
        ));
    }
    Ok(request)
}

impl Worker {
    /// One judgement: a frame out, a frame back.
    async fn call(&mut self, request: &[u8]) -> Result<Verdict, WorkerFailure> {
        let length = u32::try_from(request.len()).map_err(|_| WorkerFailure::Other("judgement too large".into()))?;
        let sent = async {
            self.stdin.write_all(&length.to_le_bytes()).await?;
            self.stdin.write_all(request).await?;
            self.stdin.flush().await
        };
        sent.await.map_err(|_| WorkerFailure::Ended)?;
        let mut length = [0u8; 4];
        self.stdout.read_exact(&mut length).await.map_err(|_| WorkerFailure::Ended)?;
        let length = u32::from_le_bytes(length) as usize;
        if length > EVALUATION_MESSAGE_BYTES_MAX {
            return Err(WorkerFailure::Other("the verdict is over EVALUATION_MESSAGE_BYTES_MAX".to_owned()));
        }
        let mut verdict = vec![0u8; length];
        self.stdout.read_exact(&mut verdict).await.map_err(|_| WorkerFailure::Ended)?;
        serde_json::from_slice(&verdict)
            .map_err(|error| WorkerFailure::Other(format!("decoding the worker's verdict: {error}")))
    }

    /// Why a worker that stopped answering ended: an abort's cause, or what
    /// else happened.
    async fn ended(mut self) -> Result<keel_kernel::judge::AbortCause, String> {
        let status = self.child.wait().await.map_err(|error| format!("waiting for the judging worker: {error}"))?;
        let mut stderr = Vec::new();
        if let Some(pipe) = self.child.stderr.take() {
            let _ = pipe.take(STDERR_BYTES_MAX).read_to_end(&mut stderr).await;
        }
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        match status.signal() {
            Some(SIGABRT) => Ok(abort_cause(&stderr)),
            _ => Err(format!("the judging worker ended with {status}: {}", last_line(&stderr))),
        }
    }
}

fn last_line(text: &str) -> &str {
    text.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("")
}
