//! Policy put: compile + probes on arbitrary Rego source, as `apply` runs it.
#![no_main]

use keel_kernel::judge::Judgement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|source: &[u8]| {
    let source = String::from_utf8_lossy(source).into_owned();
    keel_fuzz::judge_twice(&Judgement::PolicyPut { source });
});
