//! Shared by the fuzz targets: judging exactly as a member does (in
//! process, panics caught), and a check that a verdict is deterministic.
//!
//! libfuzzer-sys installs a panic hook that aborts, which would turn a panic
//! that `judge::run` catches (a deterministic `EVALUATION_ABORTED` verdict)
//! into a crash report; [`judge_twice`] restores the default hook so that
//! only panics escaping Keel's own code are crashes. Allocations past the
//! judging budget show up as libFuzzer OOMs (run with `-malloc_limit_mb`):
//! in keeld they are the sandbox's `memory_budget` verdicts, not bugs, and
//! `run.sh` runs the judging targets with `-ignore_ooms`.

use keel_kernel::judge::{self, Judgement, Verdict};
use std::sync::Once;

static DEFAULT_PANIC_HOOK: Once = Once::new();

/// Judges `judgement` twice and checks both verdicts are equal (the verdict
/// is a pure function of the request) and never `Unavailable`.
pub fn judge_twice(judgement: &Judgement) -> Verdict {
    let first = on_judging_thread(|| judge::run(judgement));
    let second = on_judging_thread(|| judge::run(judgement));
    assert_eq!(first, second, "a judgement answered two ways");
    assert!(!matches!(first, Verdict::Unavailable { .. }), "an in-process judgement is always available");
    first
}

/// Runs `judging` on a thread with the judging stack, as keeld's judging
/// child and worker do (`judge::run` and `run_cached` catch panics).
pub fn on_judging_thread<T: Send>(judging: impl FnOnce() -> T + Send) -> T {
    DEFAULT_PANIC_HOOK.call_once(|| {
        let _ = std::panic::take_hook();
    });
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(keel_kernel::limits::EVALUATION_STACK_BYTES)
            .spawn_scoped(scope, judging)
            .expect("a judging thread starts")
            .join()
            .expect("judging catches panics")
    })
}

/// The example policies shipped in `deploy/policies/`, plus one whose
/// format string comes from the input.
pub const POLICIES: &[&str] = &[
    include_str!("../../../deploy/policies/critical_risk.rego"),
    include_str!("../../../deploy/policies/residency.rego"),
    include_str!("../../../deploy/policies/tier_limits.rego"),
    include_str!("../../../deploy/policies/main.rego"),
    "package keel.policy\n\ndecision := {\"allow\": true, \"reason\": sprintf(input.region, [input.tenant])}\n",
];
