//! The README walkthrough, through the real `keelctl` binary against a real keeld.

use crate::harness::{KeelProcess, keelctl_bin};
use crate::keelctl::{keelctl, keelctl_ok as ok};
use anyhow::{Context, Result, ensure};
use std::process::Command;

#[tokio::test]
async fn readme_walkthrough_with_keelctl() -> Result<()> {
    let mut node = KeelProcess::start().await?;
    let dir = node.scratch();
    let root = node.dev_root_key();
    let root = root.to_str().context("utf-8 path")?;

    ok(&node, &dir, &["keys", "generate", "--out", "publisher"])?;
    ensure!(dir.join("publisher.key").exists() && dir.join("publisher.pub").exists());
    ok(
        &node,
        &dir,
        &["trust", "add-key", "--public", "publisher.pub", "--purpose", "engine-publisher", "--signer", root],
    )?;
    let keys: serde_json::Value = serde_json::from_str(&ok(&node, &dir, &["--output", "json", "trust", "list"])?)?;
    ensure!(keys.to_string().contains("ENGINE_PUBLISHER"), "{keys}");

    let manifest = serde_json::json!({
        "name": "billing", "version": "1.0.0", "tier": "standard",
        "description": "Invoices and payments",
        "actions": [{"name": "charge", "input_schema": {"type": "object", "required": ["amount"]}}],
        "data_classes": ["pci"]
    });
    std::fs::write(dir.join("billing.json"), serde_json::to_vec_pretty(&manifest)?)?;
    ok(
        &node,
        &dir,
        &["engine", "sign", "--manifest", "billing.json", "--key", "publisher.key", "--out", "billing.signed.json"],
    )?;
    ok(&node, &dir, &["engine", "publish", "billing.signed.json"])?;
    let engine = ok(&node, &dir, &["--output", "json", "engine", "get", "billing"])?;
    ensure!(engine.contains("1.0.0") && engine.contains("billing"), "{engine}");
    let table = ok(&node, &dir, &["engine", "list"])?;
    ensure!(table.contains("billing"), "{table}");

    ok(
        &node,
        &dir,
        &[
            "tenant",
            "create",
            "acme",
            "--display-name",
            "Acme Corp",
            "--tier",
            "enterprise",
            "--home-region",
            "eu-west",
            "--enable-engine",
            "billing",
        ],
    )?;
    let tenant = ok(&node, &dir, &["--output", "json", "tenant", "get", "acme"])?;
    ensure!(tenant.contains("Acme Corp"), "{tenant}");
    let status = ok(&node, &dir, &["--output", "json", "cluster", "status"])?;
    ensure!(status.contains("state_digest") || status.contains("stateDigest"), "{status}");

    // A different manifest for the published version: non-zero exit, the reason on stderr, nothing changed.
    let digest_before = node.status().await?.state_digest;
    let mut changed = manifest.clone();
    changed["description"] = serde_json::Value::String("changed".into());
    std::fs::write(dir.join("changed.json"), serde_json::to_vec(&changed)?)?;
    let output = keelctl(&node, &dir, &["engine", "publish", "--manifest", "changed.json", "--key", "publisher.key"])?;
    ensure!(!output.status.success(), "republishing different content must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(stderr.contains("VERSION_ALREADY_PUBLISHED"), "stderr: {stderr}");
    ensure!(node.status().await?.state_digest == digest_before);

    // Restart: still there.
    node.restart().await?;
    let engine_after = ok(&node, &dir, &["--output", "json", "engine", "get", "billing"])?;
    ensure!(engine_after.contains("1.0.0"), "{engine_after}");
    Ok(())
}

#[tokio::test]
async fn keelctl_reports_unreachable_endpoints_with_a_non_zero_exit() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let output = Command::new(keelctl_bin())
        .current_dir(dir.path())
        .args(["--endpoints", "http://127.0.0.1:1", "--timeout-ms", "2000", "cluster", "status"])
        .output()?;
    ensure!(!output.status.success());
    ensure!(!output.stderr.is_empty());
    Ok(())
}
