//! Running the real `keelctl` binary (path from `KEELCTL_BIN`) against a node.

use crate::harness::{KeelProcess, keelctl_bin};
use anyhow::{Context, Result, ensure};
use std::path::Path;
use std::process::{Command, Output};

/// Runs `keelctl args` in `cwd` against `node`, whatever its exit status.
pub fn keelctl(node: &KeelProcess, cwd: &Path, args: &[&str]) -> Result<Output> {
    let mut command = Command::new(keelctl_bin());
    command.current_dir(cwd).env("KEEL_ENDPOINTS", &node.endpoint).env_remove("KEEL_TOKEN");
    if let Some(token) = &node.token {
        command.env("KEEL_TOKEN", token);
    }
    command.args(args).output().with_context(|| format!("running keelctl {args:?}"))
}

/// Runs `keelctl args`, which must succeed; returns its stdout.
pub fn keelctl_ok(node: &KeelProcess, cwd: &Path, args: &[&str]) -> Result<String> {
    let output = keelctl(node, cwd, args)?;
    ensure!(
        output.status.success(),
        "keelctl {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// Runs `keelctl --output json args` in the node's scratch dir and parses what it prints.
pub fn keelctl_json(node: &KeelProcess, args: &[&str]) -> Result<serde_json::Value> {
    let json_args: Vec<&str> = ["--output", "json"].iter().chain(args).copied().collect();
    let stdout = keelctl_ok(node, &node.scratch(), &json_args)?;
    serde_json::from_str(&stdout).with_context(|| format!("keelctl {args:?} printed no JSON: {stdout}"))
}
