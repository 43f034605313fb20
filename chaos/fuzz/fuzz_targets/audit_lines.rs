//! Audit log lines: arbitrary bytes verified as a log (keel-audit's
//! `Verifier`, which `keelctl audit verify --dir` and every member run on
//! files and on copies pulled from peers), and taken as a last line to
//! continue a chain from. Any input is a summary or a named problem.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = keel_audit::verify_lines(data, None);
    if let Ok(mut chain) = keel_audit::Chain::after(data) {
        let line = chain.seal(keel_audit::Record::default());
        assert!(line.is_ok(), "a chain continued from any decodable line seals");
    }
});
