//! The `keelctl` command line (in progress).
