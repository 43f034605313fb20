//! Engine manifests against a real keeld: action schemas are checked as JSON
//! Schemas at publish (through `keelctl` and raw gRPC), and UI surfaces come
//! back on `GetEngineVersion`.

use crate::fixture::{Fixture, reason_of};
use crate::harness::{KeelProcess, keelctl_bin};
use crate::single_node::{get, registry};
use anyhow::{Context, Result, bail, ensure};
use keel_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

/// A manifest whose one action carries `input_schema`.
fn with_input_schema(name: &str, input_schema: serde_json::Value) -> serde_json::Value {
    let mut manifest = Fixture::manifest(name, "1.0.0");
    manifest["actions"] = serde_json::json!([{"name": "run", "input_schema": input_schema}]);
    manifest
}

#[tokio::test]
async fn invalid_action_schemas_are_refused_with_the_action_and_schema_named() -> Result<()> {
    let node = KeelProcess::start().await?;
    let fixture = Fixture::new(&node).await?;
    let publisher = fixture.add_publisher_key(&node).await?;
    let digest = node.status().await?.state_digest;
    let cases = [
        ("bad-type", serde_json::json!({"type": "no-such-type"})),
        ("bad-pattern", serde_json::json!({"type": "string", "pattern": "(unclosed"})),
        ("remote-ref", serde_json::json!({"$ref": "https://example.com/schema.json"})),
        ("custom-meta", serde_json::json!({"$schema": "https://example.com/meta"})),
    ];
    for (name, schema) in cases {
        let status = match fixture.publish_value(&node, &with_input_schema(name, schema), &[&publisher]).await {
            Ok(value) => bail!("{name}: published: {value:?}"),
            Err(status) => status,
        };
        ensure!(status.code() == Code::InvalidArgument, "{name}: {status:?}");
        ensure!(reason_of(&status) == "ACTION_SCHEMA_INVALID", "{name}: {status:?}");
        let info = status.get_details_error_info().context("ErrorInfo")?;
        ensure!(info.metadata.get("action").map(String::as_str) == Some("run"), "{name}: {info:?}");
        ensure!(info.metadata.get("schema").map(String::as_str) == Some("input_schema"), "{name}: {info:?}");
        let bad_request = status.get_details_bad_request().context("BadRequest")?;
        ensure!(bad_request.field_violations.iter().any(|v| v.field == "manifest.actions[run].input_schema"));
        ensure!(node.status().await?.state_digest == digest, "{name}: a refusal changed the state");
    }

    // The same through keelctl: exit code 1, the reason on stderr.
    let dir = node.scratch();
    std::fs::write(
        dir.join("bad.json"),
        serde_json::to_vec(&with_input_schema("cli", serde_json::json!({"minimum": "0"})))?,
    )?;
    let key_file = dir.join("publisher.key");
    publisher.write_secret_file(&key_file)?;
    let output = std::process::Command::new(keelctl_bin())
        .current_dir(&dir)
        .env("KEEL_ENDPOINTS", &node.endpoint)
        .env("KEEL_TOKEN", node.token.as_deref().unwrap_or_default())
        .args(["engine", "publish", "--manifest", "bad.json", "--key", "publisher.key"])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.code() == Some(1), "keelctl: {output:?}");
    ensure!(stderr.contains("ACTION_SCHEMA_INVALID") && stderr.contains("action=run"), "stderr: {stderr}");
    ensure!(node.status().await?.state_digest == digest, "keelctl's refused publish changed the state");
    Ok(())
}

#[tokio::test]
async fn ui_surfaces_are_published_and_read_back() -> Result<()> {
    let node = KeelProcess::start().await?;
    let fixture = Fixture::new(&node).await?;
    let publisher = fixture.add_publisher_key(&node).await?;
    let mut manifest = Fixture::manifest("billing", "1.0.0");
    manifest["ui"] = serde_json::json!([
        {"name": "invoices", "kind": "panel", "entry": "ui/invoices.html", "description": "Open invoices"},
        {"name": "refund", "kind": "form", "entry": "https://console.example.com/refund"},
    ]);
    fixture.publish(&node, &manifest, &publisher).await?;
    let version = registry(&node).await?.get_engine_version(get("billing", "1.0.0")).await?.into_inner();
    let surfaces: Vec<(String, i32, String, String)> =
        version.ui_surfaces.iter().map(|s| (s.name.clone(), s.kind, s.entry.clone(), s.description.clone())).collect();
    ensure!(
        surfaces
            == [
                ("invoices".into(), pb::UiSurfaceKind::Panel as i32, "ui/invoices.html".into(), "Open invoices".into()),
                (
                    "refund".into(),
                    pb::UiSurfaceKind::Form as i32,
                    "https://console.example.com/refund".into(),
                    String::new()
                ),
            ],
        "{surfaces:?}"
    );

    let digest = node.status().await?.state_digest;
    let mut escaping = Fixture::manifest("billing", "1.0.1");
    escaping["ui"] = serde_json::json!([{"name": "x", "kind": "panel", "entry": "../../etc/passwd"}]);
    let status = match fixture.publish_value(&node, &escaping, &[&publisher]).await {
        Ok(value) => bail!("published an escaping entry: {value:?}"),
        Err(status) => status,
    };
    ensure!(status.code() == Code::InvalidArgument && reason_of(&status) == "FIELD_INVALID", "{status:?}");
    ensure!(node.status().await?.state_digest == digest);
    Ok(())
}
