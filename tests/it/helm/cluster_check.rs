//! `keelctl cluster check`, the command the chart's `helm test` pod runs,
//! against three real keeld processes over TLS with a token scoped to the
//! probe tenant (what the chart's README tells operators to issue): it
//! passes on a healthy cluster (creating the probe tenant, then updating
//! it), and fails with exit 6 naming the problem when the voter count is
//! not the expected one or a member does not answer.

use crate::cluster_harness::{Cluster, ClusterOptions};
use crate::harness::keelctl_bin;
use anyhow::{Context, Result, ensure};
use serde_json::Value;
use std::process::{Command, Output};
use std::time::Duration;

/// Longest one keelctl run may take (its own deadlines are shorter).
const KEELCTL_DEADLINE: Duration = Duration::from_secs(90);
/// keelctl's exit code for a failed check.
const EXIT_CHECK_FAILED: i32 = 6;

/// keelctl against `cluster`'s first member over TLS, with `token`.
fn check(cluster: &Cluster, dir: &std::path::Path, token: &str, args: &[&str]) -> Result<Output> {
    let ca = cluster.ca.as_ref().context("a TLS cluster")?;
    let ca_file = dir.join("ca.crt");
    let token_file = dir.join("check.token");
    std::fs::write(&ca_file, &ca.cert_pem)?;
    std::fs::write(&token_file, token)?;
    let mut command = Command::new(keelctl_bin());
    command
        .env_remove("KEEL_TOKEN")
        .env_remove("KEEL_ENDPOINTS")
        .args(["--endpoints", &cluster.nodes[0].endpoint])
        .arg("--ca-file")
        .arg(&ca_file)
        .arg("--token")
        .arg(&token_file)
        .args(["--timeout-ms", "10000", "--output", "json", "cluster", "check"])
        .args(args);
    crate::commands::run(&mut command, KEELCTL_DEADLINE)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn cluster_check_passes_on_three_members_and_names_what_is_wrong_otherwise() -> Result<()> {
    let mut cluster = Cluster::three(ClusterOptions { is_tls: true, ..ClusterOptions::default() }).await?;
    let dir = tempfile::tempdir()?;
    // Least privilege: the probe tenant only, and the cluster's status.
    let token =
        cluster.token("keel-helm-test", Some("keel-check"), &["tenant.read", "tenant.write", "cluster.read"])?;

    let mut revisions = Vec::new();
    for round in ["creates the probe tenant", "updates it"] {
        let output = check(&cluster, dir.path(), &token, &["--expect-voters", "3", "--deadline-ms", "30000"])?;
        ensure!(output.status.success(), "check {round}: {}{}", text(&output.stdout), text(&output.stderr));
        let view: Value = serde_json::from_slice(&output.stdout).context("check JSON")?;
        let members = view["members"].as_array().context("members")?;
        ensure!(members.len() == 3, "{view}");
        ensure!(members.iter().all(|m| m["state_digest"] == view["state_digest"]), "{view}");
        ensure!(view["read_via"] != view["written_via"], "read back through another member: {view}");
        let probe_revision = view["probe_revision"].as_u64().context("probe_revision")?;
        ensure!(view["agreed_revision"].as_u64() >= Some(probe_revision), "{view}");
        ensure!(
            view["tenant"] == "keel-check"
                && view["probe"].as_str().is_some_and(|p| p.starts_with("keel cluster check "))
        );
        revisions.push(probe_revision);
    }
    ensure!(revisions[1] > revisions[0], "the second probe is a new write: {revisions:?}");

    let output = check(&cluster, dir.path(), &token, &["--expect-voters", "5"])?;
    ensure!(output.status.code() == Some(EXIT_CHECK_FAILED), "exit {:?}: {}", output.status, text(&output.stderr));
    let stderr = text(&output.stderr);
    ensure!(stderr.contains("CLUSTER_CHECK_FAILED") && stderr.contains("3 voters, expected 5"), "{stderr}");

    cluster.nodes[2].kill_9()?;
    let output = check(&cluster, dir.path(), &token, &["--expect-voters", "3", "--deadline-ms", "2000"])?;
    ensure!(output.status.code() == Some(EXIT_CHECK_FAILED), "exit {:?}: {}", output.status, text(&output.stderr));
    let stderr = text(&output.stderr);
    ensure!(stderr.contains("did not all report one state digest") && stderr.contains("node 3:"), "{stderr}");
    Ok(())
}
