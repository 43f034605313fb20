//! Manifest parse + canonicalisation + action-schema check.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(parsed) = keel_kernel::manifest::parse(bytes) {
        // Canonical bytes are a fixed point.
        let again = keel_kernel::manifest::parse(&parsed.canonical).expect("canonical bytes parse");
        assert_eq!(again.canonical, parsed.canonical);
        if let Some(judgement) = keel_kernel::manifest::schema_judgement(&parsed.manifest) {
            keel_fuzz::judge_twice(&judgement);
        }
    }
});
