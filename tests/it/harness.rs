//! The process launcher lives in `keel-chaos` (shared with campaigns and `keel-bench`).

pub use keel_chaos::process::{KeelProcess, http_get, keelctl_bin, keeld_bin};
