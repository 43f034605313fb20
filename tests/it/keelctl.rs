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

/// keelctl with `KEEL_TOKEN` set to `token` (empty: none), whatever its exit status.
fn keelctl_with_token(node: &KeelProcess, token: &str, args: &[&str]) -> Result<Output> {
    Command::new(keelctl_bin())
        .current_dir(node.scratch())
        .env("KEEL_ENDPOINTS", &node.endpoint)
        .env("KEEL_TOKEN", token)
        .args(args)
        .output()
        .with_context(|| format!("running keelctl {args:?}"))
}

#[tokio::test]
async fn keelctl_issues_a_token_uses_it_from_the_environment_and_names_each_refusal() -> Result<()> {
    let node = KeelProcess::start().await?;
    let api_key = node.data_dir().join("dev-api.key");
    let api_key = api_key.to_str().context("utf-8 path")?;
    let issue = |extra: &[&str]| -> Result<String> {
        let mut args = vec!["token", "issue", "--key", api_key, "--sub", "alice", "--ttl", "10m"];
        args.extend_from_slice(extra);
        Ok(keelctl_ok(&node, &node.scratch(), &args)?.trim().to_owned())
    };
    let reader = issue(&["--permission", "cluster.read"])?;
    let output = keelctl_with_token(&node, &reader, &["cluster", "status"])?;
    ensure!(output.status.success(), "a fresh token: {}", String::from_utf8_lossy(&output.stderr));

    // Each refusal is named on stderr, with a failing exit status.
    let wrong_audience = issue(&["--permission", "cluster.read", "--audience", "another-cluster"])?;
    let no_permission = issue(&["--permission", "tenant.read"])?;
    let revoked = issue(&["--permission", "cluster.read", "--out", "revoked.token"]);
    ensure!(revoked.is_ok(), "issue --out: {revoked:?}");
    let revoked = std::fs::read_to_string(node.scratch().join("revoked.token"))?.trim().to_owned();
    let admin = node.token.clone().context("dev admin token")?;
    let output = keelctl_with_token(&node, &admin, &["token", "revoke", "--file", "revoked.token"])?;
    ensure!(output.status.success(), "revoke: {}", String::from_utf8_lossy(&output.stderr));
    for (token, reason) in [
        ("", "TOKEN_MISSING"),
        ("garbage", "TOKEN_MALFORMED"),
        (wrong_audience.as_str(), "TOKEN_AUDIENCE_MISMATCH"),
        (no_permission.as_str(), "PERMISSION_MISSING"),
        (revoked.as_str(), "TOKEN_REVOKED"),
    ] {
        let output = keelctl_with_token(&node, token, &["cluster", "status"])?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(!output.status.success() && stderr.contains(reason), "{reason}: {stderr}");
    }
    // A token file that is not there is a local error naming it.
    let output = keelctl_with_token(&node, "", &["--token", "missing.token", "cluster", "status"])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success() && stderr.contains("missing.token"), "{stderr}");
    // `token show` reads the claims back.
    let shown = keelctl_json(&node, &["token", "show", "revoked.token"])?;
    ensure!(shown["sub"] == "alice", "{shown}");
    Ok(())
}
