//! The node's floors point down: each module may use the floors below it,
//! never one above. Read from the sources, so a new upward `use` fails here.
//!
//! ```text
//!  server (assembly) · ops · api/            services
//!  edge/                                     the client port's layers
//!  replica/                                  this node as a member
//!  audit/                                    the audit log, its copies and queries
//!  raft/                                     consensus, storage, peer client
//!  judge/ tls/ status deadline transport clock leader_clock telemetry   base
//! ```

use std::path::{Path, PathBuf};

/// (path under src/, the crate modules it must not use).
const FLOORS: &[(&str, &[&str])] = &[
    ("api", &["server", "ops"]),
    ("edge", &["server", "ops", "api", "replica", "raft"]),
    ("replica", &["server", "ops", "api", "edge"]),
    ("raft", &["server", "ops", "api", "edge", "replica", "audit"]),
    ("audit", &["server", "ops", "api", "edge", "replica"]),
    ("judge", &["server", "ops", "api", "edge", "replica", "raft", "audit"]),
    ("tls", &["server", "ops", "api", "edge", "replica", "raft", "audit"]),
    ("tls.rs", &["server", "ops", "api", "edge", "replica", "raft", "audit"]),
    ("status.rs", &["server", "ops", "api", "edge", "replica", "raft", "audit"]),
    ("deadline.rs", &["server", "ops", "api", "edge", "replica", "raft", "audit"]),
    ("transport.rs", &["server", "ops", "api", "edge", "replica", "raft", "audit"]),
    ("clock.rs", &["server", "ops", "api", "edge", "replica", "raft", "audit"]),
    ("leader_clock.rs", &["server", "ops", "api", "edge", "replica", "raft", "audit"]),
    ("telemetry", &["server", "ops", "api", "edge", "replica", "raft", "audit"]),
    ("telemetry.rs", &["server", "ops", "api", "edge", "replica", "raft", "audit"]),
    ("ops.rs", &["server", "api"]),
    ("limits.rs", &["server", "ops", "api", "edge", "replica", "raft", "audit", "judge", "tls", "telemetry"]),
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            rust_files(&entry?.path(), out)?;
        }
    } else if path.extension().is_some_and(|ext| ext == "rs") {
        out.push(path.to_owned());
    }
    Ok(())
}

#[test]
fn no_module_uses_a_floor_above_it() -> std::io::Result<()> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut upward = Vec::new();
    for (floor, above) in FLOORS {
        let mut files = Vec::new();
        rust_files(&src.join(floor), &mut files)?;
        assert!(!files.is_empty(), "{floor} has no sources: the table is out of date");
        for file in files {
            let text = std::fs::read_to_string(&file)?;
            for (number, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for module in *above {
                    if code.contains(&format!("crate::{module}::")) || code.contains(&format!("crate::{module};")) {
                        upward.push(format!("{}:{}: uses crate::{module}", file.display(), number + 1));
                    }
                }
            }
        }
    }
    assert!(upward.is_empty(), "upward arrows:\n{}", upward.join("\n"));
    Ok(())
}
