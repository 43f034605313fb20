//! A 3-member etcd cluster on loopback, for side-by-side benchmarks.
//!
//! Each member has its own temp data dir and reserved client and peer ports;
//! the members find each other through `--initial-cluster`. Elections are
//! tuned like Keel's launcher (heartbeat 100 ms, election timeout 500 ms,
//! which etcd randomises up to 1000 ms). Processes are killed on drop.

use crate::etcdserverpb::{StatusRequest, StatusResponse, maintenance_client::MaintenanceClient};
use anyhow::{Context, Result, anyhow, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// How long members may take to start, elect a leader or converge.
pub const ETCD_DEADLINE: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// One etcd member: process, data dir and addresses.
pub struct EtcdMember {
    /// Member name (`m1`..).
    pub name: String,
    /// `127.0.0.1:port` of the client gRPC port.
    pub client_addr: String,
    args: Vec<String>,
    dir: PathBuf,
    binary: PathBuf,
    child: Option<Child>,
}

impl EtcdMember {
    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("etcd.log"))?;
        let child = Command::new(&self.binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL.
    pub fn kill_9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the member again on its data dir and ports.
    pub fn restart(&mut self) -> Result<()> {
        self.kill_9()?;
        self.spawn()
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    /// A gRPC channel to the client port (connected lazily).
    pub fn channel(&self) -> Result<Channel> {
        Ok(Channel::from_shared(format!("http://{}", self.client_addr))?
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy())
    }

    /// `Maintenance.Status`, bounded by a 2 s timeout.
    pub async fn status(&self) -> Result<StatusResponse> {
        let mut client = MaintenanceClient::new(self.channel()?);
        let mut request = tonic::Request::new(StatusRequest {});
        request.set_timeout(Duration::from_secs(2));
        Ok(client.status(request).await?.into_inner())
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running etcd cluster. Members are dropped (killed) before the temp dir.
pub struct EtcdCluster {
    /// Members in name order.
    pub members: Vec<EtcdMember>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `size` members of the etcd at `binary` and waits for a leader.
    pub async fn start(binary: &Path, size: usize) -> Result<EtcdCluster> {
        let dir = tempfile::Builder::new().prefix("keel-bench-etcd-").tempdir()?;
        // Reserve every port at once so no two draw the same one, then release them together.
        let mut reserved = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..size {
            let client = std::net::TcpListener::bind("127.0.0.1:0")?;
            let peer = std::net::TcpListener::bind("127.0.0.1:0")?;
            addrs.push((client.local_addr()?.to_string(), peer.local_addr()?.to_string()));
            reserved.push((client, peer));
        }
        drop(reserved);
        let initial_cluster = addrs
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{}=http://{peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (client, peer)) in addrs.iter().enumerate() {
            let name = format!("m{}", i + 1);
            let member_dir = dir.path().join(&name);
            std::fs::create_dir_all(&member_dir)?;
            let args = vec![
                format!("--name={name}"),
                format!("--data-dir={}", member_dir.join("data").display()),
                format!("--listen-client-urls=http://{client}"),
                format!("--advertise-client-urls=http://{client}"),
                format!("--listen-peer-urls=http://{peer}"),
                format!("--initial-advertise-peer-urls=http://{peer}"),
                format!("--initial-cluster={initial_cluster}"),
                "--initial-cluster-state=new".to_owned(),
                "--initial-cluster-token=keel-bench".to_owned(),
                "--heartbeat-interval=100".to_owned(),
                "--election-timeout=500".to_owned(),
                "--logger=zap".to_owned(),
                "--log-level=warn".to_owned(),
            ];
            members.push(EtcdMember {
                name,
                client_addr: client.clone(),
                args,
                dir: member_dir,
                binary: binary.to_owned(),
                child: None,
            });
        }
        for member in &mut members {
            member.spawn()?;
        }
        let cluster = EtcdCluster { members, _dir: dir };
        cluster.leader().await?;
        Ok(cluster)
    }

    /// Index of the leader every running member agrees on.
    pub async fn leader(&self) -> Result<usize> {
        let deadline = Instant::now() + ETCD_DEADLINE;
        loop {
            let mut seen = Vec::new();
            for member in self.members.iter().filter(|m| m.is_running()) {
                seen.push(member.status().await.ok().map(|s| (s.header.map(|h| h.member_id).unwrap_or(0), s.leader)));
            }
            if let Some(Some((_, leader))) = seen.first().copied()
                && leader != 0
                && seen.iter().all(|s| s.map(|(_, l)| l) == Some(leader))
            {
                let running: Vec<usize> = (0..self.members.len()).filter(|i| self.members[*i].is_running()).collect();
                if let Some(position) = seen.iter().position(|s| s.map(|(id, _)| id) == Some(leader)) {
                    return Ok(running[position]);
                }
            }
            if Instant::now() > deadline {
                bail!("etcd: no agreed leader within {ETCD_DEADLINE:?}: {seen:?}; log of m1:\n{}", self.log_tail(0));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until every member runs, agrees on the leader and has applied the same index.
    pub async fn converged(&self) -> Result<u64> {
        let deadline = Instant::now() + ETCD_DEADLINE;
        loop {
            let mut seen = Vec::new();
            for member in &self.members {
                seen.push(member.status().await.ok().map(|s| (s.leader, s.raft_applied_index)));
            }
            if let Some(Some((leader, applied))) = seen.first().copied()
                && leader != 0
                && seen.iter().all(|s| *s == Some((leader, applied)))
            {
                return Ok(applied);
            }
            if Instant::now() > deadline {
                bail!("etcd members did not converge within {ETCD_DEADLINE:?}: {seen:?}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn log_tail(&self, index: usize) -> String {
        let log = self.members.get(index).map(EtcdMember::log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// The etcd binary: `explicit`, else `etcd` on `PATH`, else `/usr/bin/etcd`
/// after `apt-get install -y etcd-server` when `may_install`.
pub fn find_etcd(explicit: Option<&Path>, may_install: bool) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    if let Some(path) = on_path("etcd") {
        return Ok(path);
    }
    if !may_install {
        bail!("etcd not found on PATH; pass --etcd PATH or --skip-etcd");
    }
    eprintln!("etcd not found; running `apt-get install -y etcd-server`");
    let status = Command::new("apt-get")
        .args(["install", "-y", "etcd-server"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("apt-get install -y etcd-server failed ({status}); pass --etcd PATH or --skip-etcd");
    }
    on_path("etcd").ok_or_else(|| anyhow!("etcd still not on PATH after installing etcd-server"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|path| path.is_file())
}

/// First line of `etcd --version`.
pub fn etcd_version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown version".to_owned())
}
