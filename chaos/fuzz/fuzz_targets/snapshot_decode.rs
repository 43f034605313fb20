//! Snapshot decoding (kernel state, the node's snapshot data with its
//! header) and log entry records.
#![no_main]

use keel_node::raft::log_store::decode_entry;
use keel_node::raft::snapshot_store::decode_snapshot_data;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(state) = keel_kernel::KernelState::decode_snapshot(bytes) {
        // Bytes with maps out of order decode (to the sorted state); what is
        // canonical is the re-encoding, which the digest is computed over, so
        // it must decode to the same state and re-encode to itself.
        let canonical = state.encode_snapshot();
        let again = keel_kernel::KernelState::decode_snapshot(&canonical).expect("a canonical snapshot decodes");
        assert_eq!(again, state, "the canonical encoding decodes to another state");
        assert_eq!(again.encode_snapshot(), canonical, "the canonical encoding is not a fixed point");
    }
    let _ = decode_snapshot_data(bytes, &Default::default());
    let _ = decode_entry(bytes);
});
