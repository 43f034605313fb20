//! The judging worker's frames (`keeld __judge --serve`): arbitrary bytes
//! read as the worker reads its input (4-byte little-endian length, then
//! JSON, at most `EVALUATION_MESSAGE_BYTES_MAX`), each judgement judged by
//! one long-lived cache of compiled evaluators, as the worker does, and
//! alone: the cache must never change a verdict. The parent's side, a
//! verdict frame, is decoded from the same bytes.
#![no_main]

use keel_kernel::judge::{self, Judgement, Verdict};
use keel_kernel::limits::EVALUATION_MESSAGE_BYTES_MAX;
use libfuzzer_sys::fuzz_target;

/// Frames judged per input (keeps one run short).
const FRAMES_MAX: usize = 4;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<Verdict>(data);
    let mut compiled = judge::Compiled::default();
    let mut rest = data;
    for _ in 0..FRAMES_MAX {
        let Some((length, body)) = rest.split_first_chunk::<4>() else {
            return;
        };
        let length = u32::from_le_bytes(*length) as usize;
        if length > EVALUATION_MESSAGE_BYTES_MAX || length > body.len() {
            return;
        }
        let (frame, next) = body.split_at(length);
        rest = next;
        let Ok(judgement) = serde_json::from_slice::<Judgement>(frame) else {
            continue;
        };
        let cached = keel_fuzz::on_judging_thread(|| judge::run_cached(&judgement, &mut compiled));
        let alone = keel_fuzz::judge_twice(&judgement);
        assert_eq!(cached, alone, "a cached judgement answered differently");
    }
});
