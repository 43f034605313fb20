//! The compose deployment, containerised: builds the image from the binaries
//! under test (`KEELD_BIN`, `KEELCTL_BIN`) with `deploy/image/build.sh`,
//! generates certificates and configs with `deploy/compose/gen.sh` into a
//! temp dir, starts `deploy/compose/docker-compose.yml` under a unique
//! project name, writes a tenant through node1 (keelctl exec'd in its
//! container) and reads it back, linearizably, through node3. Everything is
//! torn down (`down -v`, image removed) by a drop guard.
//!
//! Skipped, passing, when no Docker engine answers.

use crate::commands::{docker_answers, run, unique_suffix};
use crate::harness::{keelctl_bin, keeld_bin};
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Longest any single docker or compose command may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);
/// Longest the three nodes may take to agree on a leader.
const READY_DEADLINE: Duration = Duration::from_secs(45);
const POLL_INTERVAL: Duration = Duration::from_millis(250);
const NODES: [&str; 3] = ["node1", "node2", "node3"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Runs `command` and requires success; returns stdout.
fn run_ok(command: &mut Command) -> Result<String> {
    crate::commands::run_ok(command, COMMAND_DEADLINE)
}

/// `docker compose` when the v2 plugin is there, else `docker-compose`.
fn compose_program() -> Option<Vec<String>> {
    let answers = |program: &str, args: &[&str]| {
        run(Command::new(program).args(args), Duration::from_secs(20)).is_ok_and(|output| output.status.success())
    };
    if answers("docker", &["compose", "version"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else if answers("docker-compose", &["version"]) {
        Some(vec!["docker-compose".into()])
    } else {
        None
    }
}

/// A compose project; `down -v` and the test image removed on drop.
struct Project {
    compose: Vec<String>,
    name: String,
    image: String,
    generated: tempfile::TempDir,
}

impl Project {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.compose[0]);
        command
            .args(&self.compose[1..])
            .arg("--file")
            .arg(repo_root().join("deploy/compose/docker-compose.yml"))
            .arg("--project-name")
            .arg(&self.name)
            .env("KEEL_IMAGE", &self.image)
            .env("KEEL_COMPOSE_GENERATED", self.generated.path());
        command
    }

    fn container(&self, service: &str) -> Result<String> {
        let id = run_ok(self.command().args(["ps", "-q", service]))?.trim().to_owned();
        ensure!(!id.is_empty(), "no container for {service}");
        Ok(id)
    }

    fn logs(&self) -> String {
        run(self.command().args(["logs", "--no-color", "--tail", "30"]), COMMAND_DEADLINE)
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = run(self.command().args(["down", "-v", "--remove-orphans", "--timeout", "5"]), COMMAND_DEADLINE);
        let _ = run(Command::new("docker").args(["image", "rm", "--force", &self.image]), COMMAND_DEADLINE);
    }
}

/// keelctl inside `container` (JSON output unless `args` say otherwise),
/// talking TLS to its own node with the node certificate.
fn keelctl_in(container: &str, host: &str, args: &[&str]) -> Result<Output> {
    let endpoint = format!("https://{host}:7400");
    let mut command = Command::new("docker");
    command.args(["exec", container, "/usr/local/bin/keelctl", "--endpoints", &endpoint]);
    command.args(["--ca-file", "/etc/keel/ca.crt", "--cert-file", "/etc/keel/node.crt"]);
    command.args(["--key-file", "/etc/keel/node.key", "--token", "/etc/keel/admin.token", "--timeout-ms", "5000"]);
    if !args.contains(&"--output") {
        command.args(["--output", "json"]);
    }
    run(command.args(args), COMMAND_DEADLINE)
}

/// The leader a node reports, if any.
fn leader_of(container: &str, host: &str) -> Option<u64> {
    let output = keelctl_in(container, host, &["cluster", "status"]).ok()?;
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    status.get("leader_id").and_then(serde_json::Value::as_u64).filter(|id| *id != 0)
}

#[test]
fn three_containers_in_two_regions_serve_a_write_and_a_linearizable_read() -> Result<()> {
    let compose = compose_program();
    let (true, Some(compose)) = (docker_answers(), compose) else {
        println!("skipping compose smoke test: no Docker engine answers");
        return Ok(());
    };
    let started = Instant::now();
    let unique = unique_suffix()?;
    let project = Project {
        compose,
        name: format!("keel-it-{unique}"),
        image: format!("keel:it-{unique}"),
        generated: tempfile::tempdir()?,
    };

    let root = repo_root();
    run_ok(
        Command::new(root.join("deploy/image/build.sh"))
            .env("KEELD_BIN", keeld_bin())
            .env("KEELCTL_BIN", keelctl_bin())
            .env("KEEL_IMAGE", &project.image),
    )?;
    run_ok(
        Command::new(root.join("deploy/compose/gen.sh"))
            .env("KEELCTL_BIN", keelctl_bin())
            .env("KEEL_COMPOSE_GENERATED", project.generated.path()),
    )?;
    run_ok(project.command().args(["up", "-d"]))?;

    let containers: Vec<String> = NODES.iter().map(|node| project.container(node)).collect::<Result<_>>()?;
    let ready_by = Instant::now() + READY_DEADLINE;
    loop {
        let leaders: Vec<Option<u64>> =
            containers.iter().zip(NODES).map(|(container, host)| leader_of(container, host)).collect();
        if leaders[0].is_some() && leaders.iter().all(|leader| *leader == leaders[0]) {
            break;
        }
        if Instant::now() > ready_by {
            bail!("no agreed leader within {READY_DEADLINE:?}: {leaders:?}\n{}", project.logs());
        }
        std::thread::sleep(POLL_INTERVAL);
    }

    let output = keelctl_in(
        &containers[0],
        "node1",
        &[
            "tenant",
            "create",
            "compose-smoke",
            "--display-name",
            "Compose Smoke",
            "--tier",
            "basic",
            "--home-region",
            "us-east",
        ],
    )?;
    ensure!(output.status.success(), "create through node1: {}", String::from_utf8_lossy(&output.stderr));

    // Linearizable, from node3's container (the client may route it to the
    // leader it discovers): must see the write at once.
    let output =
        keelctl_in(&containers[2], "node3", &["tenant", "get", "compose-smoke", "--consistency", "linearizable"])?;
    ensure!(output.status.success(), "read through node3: {}", String::from_utf8_lossy(&output.stderr));
    let tenant: serde_json::Value = serde_json::from_slice(&output.stdout).context("tenant JSON")?;
    ensure!(tenant.get("display_name").and_then(serde_json::Value::as_str) == Some("Compose Smoke"), "{tenant}");
    ensure!(tenant.get("home_region").and_then(serde_json::Value::as_str) == Some("us-east"), "{tenant}");

    // Serializable, preferring us-east: answered by node3 itself from its
    // own replica once the entry has reached it.
    let replicated_by = Instant::now() + READY_DEADLINE;
    loop {
        let output = keelctl_in(
            &containers[2],
            "node3",
            &[
                "--output",
                "table",
                "--region",
                "us-east",
                "tenant",
                "get",
                "compose-smoke",
                "--consistency",
                "serializable",
            ],
        )?;
        let served_by = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.success() && served_by.contains("node 3") {
            break;
        }
        if Instant::now() > replicated_by {
            bail!("node3 did not serve the tenant within {READY_DEADLINE:?}: {served_by}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    println!("compose smoke test passed in {:?}", started.elapsed());
    Ok(())
}
