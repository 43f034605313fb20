//! Policy evaluation on random inputs: the shipped policies (and one that
//! formats its input) decide arbitrary JSON documents.
#![no_main]

use keel_kernel::judge::Judgement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    let Ok(input) = serde_json::from_slice::<serde_json::Value>(input) else {
        return;
    };
    let source = keel_fuzz::POLICIES[usize::from(which) % keel_fuzz::POLICIES.len()].to_owned();
    keel_fuzz::judge_twice(&Judgement::PolicyDecide { source, inputs: vec![input], with_probes: false });
});
