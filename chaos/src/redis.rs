//! A real `redis-server` for tests: its own port and directory, nothing
//! persisted, killed on drop; `pause`/`resume` (SIGSTOP/SIGCONT, so calls
//! hang rather than fail) and `kill_9` for outage tests. Also TLS-only
//! ([`RedisServer::start_tls`], a fresh CA) and a Redis Cluster of masters
//! ([`RedisCluster::start`], created with `redis-cli --cluster create`).

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer PING after it starts.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    /// `127.0.0.1:port`.
    pub addr: String,
    /// `requirepass`, if set.
    password: Option<String>,
    /// Served over TLS only, with these files.
    tls: Option<TlsFiles>,
    /// More `redis-server` arguments.
    extra_args: Vec<String>,
    dir: tempfile::TempDir,
}

/// A TLS Redis's files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed the server's certificate (PEM).
    pub ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits for PING.
    pub fn start() -> Result<RedisServer> {
        RedisServer::start_with(None)
    }

    /// [`RedisServer::start`] with `requirepass password`.
    pub fn start_with_password(password: &str) -> Result<RedisServer> {
        RedisServer::start_with(Some(password.to_owned()))
    }

    fn start_with(password: Option<String>) -> Result<RedisServer> {
        RedisServer::launch(password, false, Vec::new())
    }

    /// A server that speaks TLS only, its certificate from a fresh CA
    /// ([`RedisServer::tls_files`]), clients not asked for certificates.
    pub fn start_tls() -> Result<RedisServer> {
        RedisServer::launch(None, true, Vec::new())
    }

    fn launch(password: Option<String>, is_tls: bool, extra_args: Vec<String>) -> Result<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = tempfile::Builder::new().prefix("keel-redis-").tempdir()?;
        let tls = match is_tls {
            true => {
                let ca = keel_client::certs::generate_ca("keel test redis CA", 3)?;
                let ca_paths = keel_client::certs::write_ca(&ca, &dir.path().join("ca"))?;
                let sans = ["127.0.0.1".to_owned(), "localhost".to_owned()];
                let issued = keel_client::certs::issue(&ca, "redis", &sans, keel_client::certs::Usage::Server, 1)?;
                let paths = keel_client::certs::write_issued(&issued, &dir.path().join("server"), "redis")?;
                Some(TlsFiles { ca: ca_paths.cert, cert: paths.cert, key: paths.key })
            }
            false => None,
        };
        let mut server = RedisServer { child: None, addr: format!("127.0.0.1:{port}"), password, tls, extra_args, dir };
        server.spawn()?;
        Ok(server)
    }

    /// The TLS files, for a server started with [`RedisServer::start_tls`].
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    fn spawn(&mut self) -> Result<()> {
        let port = self.addr.rsplit_once(':').map(|(_, port)| port.to_owned()).context("port")?;
        let mut command = Command::new("redis-server");
        match &self.tls {
            Some(tls) => {
                command.args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no"]);
                command.arg("--tls-cert-file").arg(&tls.cert).arg("--tls-key-file").arg(&tls.key);
                command.arg("--tls-ca-cert-file").arg(&tls.ca);
            }
            None => {
                command.args(["--port", &port]);
            }
        }
        command.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        command.args(&self.extra_args);
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (apt-get install redis-server)")?;
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        while !self.answers() {
            if Instant::now() > deadline {
                bail!("redis-server on {} did not answer PING within {START_DEADLINE:?}", self.addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `redis://[:password@]127.0.0.1:port` (`rediss://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        match &self.password {
            Some(password) => format!("{scheme}://:{password}@{}", self.addr),
            None => format!("{scheme}://{}", self.addr),
        }
    }

    /// Whether it answers PING within 200 ms.
    pub fn answers(&self) -> bool {
        match &self.tls {
            Some(tls) => {
                let port = self.addr.rsplit_once(':').map(|(_, port)| port).unwrap_or_default();
                Command::new("redis-cli")
                    .args(["--tls", "-h", "127.0.0.1", "-p", port, "--cacert"])
                    .arg(&tls.ca)
                    .arg("PING")
                    .output()
                    .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains("PONG"))
            }
            None => self.command("PING").is_ok_and(|reply| reply.contains("+PONG")),
        }
    }

    /// One inline command's raw reply.
    pub fn command(&self, command: &str) -> Result<String> {
        let mut stream = std::net::TcpStream::connect(&self.addr)?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut sent = String::new();
        if let Some(password) = &self.password {
            sent.push_str(&format!("AUTH {password}\r\n"));
        }
        sent.push_str(&format!("{command}\r\n"));
        stream.write_all(sent.as_bytes())?;
        let mut reply = Vec::new();
        let mut buffer = [0u8; 4096];
        // The AUTH reply may come in its own read; wait for the command's.
        let deadline = Instant::now() + Duration::from_millis(200);
        while Instant::now() < deadline {
            let read = stream.read(&mut buffer)?;
            reply.extend_from_slice(&buffer[..read]);
            let replies = String::from_utf8_lossy(&reply).matches("\r\n").count();
            if read == 0 || replies > usize::from(self.password.is_some()) {
                break;
            }
        }
        let reply = String::from_utf8_lossy(&reply).into_owned();
        // The command's reply alone (after AUTH's "+OK").
        Ok(match &self.password {
            Some(_) => reply.strip_prefix("+OK\r\n").unwrap_or(&reply).to_owned(),
            None => reply,
        })
    }

    fn signal(&self, signal: &str) -> Result<()> {
        let pid = self.child.as_ref().map(Child::id).context("not running")?;
        let status = Command::new("kill").args([signal, &pid.to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill {signal} {pid} failed");
        Ok(())
    }

    /// SIGSTOP: connections stay open, calls hang.
    pub fn pause(&self) -> Result<()> {
        self.signal("-STOP")
    }

    /// SIGCONT.
    pub fn resume(&self) -> Result<()> {
        self.signal("-CONT")
    }

    /// SIGKILL.
    pub fn kill_9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts it again on the same port (empty: nothing was persisted).
    pub fn restart(&mut self) -> Result<()> {
        self.kill_9()?;
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How long a new Redis Cluster may take to agree on its slots.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(30);

/// A Redis Cluster of masters only, each a [`RedisServer`] with
/// `--cluster-enabled yes`, its slots assigned by `redis-cli --cluster create`.
pub struct RedisCluster {
    /// The masters.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` servers (at least 3), creates the cluster and waits
    /// until every node reports `cluster_state:ok`.
    pub fn start(masters: usize) -> Result<RedisCluster> {
        let args = |dir: &str| {
            ["--cluster-enabled", "yes", "--cluster-node-timeout", "5000", "--cluster-config-file", dir]
                .map(str::to_owned)
                .to_vec()
        };
        let nodes = (0..masters)
            .map(|index| RedisServer::launch(None, false, args(&format!("nodes-{index}.conf"))))
            .collect::<Result<Vec<_>>>()?;
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|node| node.addr.clone()))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .context("redis-cli --cluster create")?;
        anyhow::ensure!(
            output.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        while !nodes.iter().all(|node| node.command("CLUSTER INFO").is_ok_and(|info| info.contains("cluster_state:ok")))
        {
            anyhow::ensure!(Instant::now() < deadline, "the Redis Cluster did not reach cluster_state:ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(RedisCluster { nodes })
    }

    /// Every master's URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The keys each master holds (`DBSIZE`), in node order.
    pub fn key_counts(&self) -> Result<Vec<u64>> {
        self.nodes
            .iter()
            .map(|node| {
                let reply = node.command("DBSIZE")?;
                Ok(reply.trim().trim_start_matches(':').parse()?)
            })
            .collect()
    }
}
