//! Running external commands (docker, compose, helm, keelctl) from tests:
//! always within a deadline, the child killed past it, its output read on
//! threads so a full pipe never stalls the deadline.

use anyhow::{Context, Result, bail, ensure};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `command` to completion within `deadline`, killing it past that.
pub(crate) fn run(command: &mut Command, deadline: Duration) -> Result<Output> {
    run_with_input(command, &[], deadline)
}

/// [`run`] with `input` on stdin.
pub(crate) fn run_with_input(command: &mut Command, input: &[u8], deadline: Duration) -> Result<Output> {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {description}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).with_context(|| format!("stdin of {description}"))?;
    }
    // Readers on threads, so a child filling a pipe never stalls the deadline.
    let stdout = child.stdout.take().context("stdout")?;
    let stderr = child.stderr.take().context("stderr")?;
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let (stdout, stderr) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{description} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let join = |handle: std::thread::JoinHandle<Vec<u8>>| handle.join().unwrap_or_default();
    Ok(Output { status, stdout: join(stdout), stderr: join(stderr) })
}

/// Whether a Docker engine answers (tests that need one skip without it).
pub(crate) fn docker_answers() -> bool {
    run(Command::new("docker").arg("info"), Duration::from_secs(20)).is_ok_and(|output| output.status.success())
}

/// A suffix for names (containers, networks, images, projects) no other
/// test run on this machine uses at the same time.
pub(crate) fn unique_suffix() -> Result<String> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
    Ok(format!("{}-{nanos}", std::process::id()))
}

/// [`run`], requiring success; returns stdout.
pub(crate) fn run_ok(command: &mut Command, deadline: Duration) -> Result<String> {
    let description = format!("{command:?}");
    let output = run(command, deadline)?;
    ensure!(
        output.status.success(),
        "{description} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
