//! Snapshot decoding (kernel state, the node's snapshot data with its
//! header) and log entry records.
#![no_main]

use keel_node::raft::log_store::decode_entry;
use keel_node::raft::snapshot_store::decode_snapshot_data;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(state) = keel_kernel::KernelState::decode_snapshot(bytes) {
        // A decoded snapshot re-encodes to the same bytes (it is canonical).
        assert_eq!(state.encode_snapshot(), bytes, "a snapshot decoded to a state that encodes differently");
    }
    let _ = decode_snapshot_data(bytes, &Default::default());
    let _ = decode_entry(bytes);
});
