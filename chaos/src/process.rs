//! Spawning real `keeld` processes (for `tests/`, campaigns and benchmarks).
//!
//! Each node gets its own temp dir; ports are assigned by the OS (keeld binds
//! port 0 and prints a `listening` JSON line on stdout, which we read);
//! readiness is polled with a deadline; `kill_9` and `restart` exercise crash
//! recovery. Logs go to `<dir>/keeld.log`, printed when a node fails to start.

use anyhow::{Context, Result, anyhow, bail};
use keel_proto::v1 as pb;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// How long a node may take to print its listening line and become ready.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long [`KeelProcess::status`] waits for the digest to reach the applied index.
const DIGEST_DEADLINE: Duration = Duration::from_secs(5);
/// Pause between readiness polls.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Path of the keeld binary: `KEELD_BIN`, else next to the running binary's target dir.
pub fn keeld_bin() -> PathBuf {
    binary("KEELD_BIN", "keeld")
}

/// Path of the keelctl binary: `KEELCTL_BIN`, else next to the running binary's target dir.
pub fn keelctl_bin() -> PathBuf {
    binary("KEELCTL_BIN", "keelctl")
}

fn binary(var: &str, name: &str) -> PathBuf {
    if let Ok(path) = std::env::var(var) {
        return PathBuf::from(path);
    }
    // target/debug/deps/it-xxxx → target/debug/<name>; target/release/keel-bench → target/<name>
    // (callers outside `deps/` pass the binary explicitly).
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().and_then(Path::parent).map(|dir| dir.join(name)).unwrap_or_else(|| PathBuf::from(name))
}

/// A running (or stopped) keeld with its own data dir.
pub struct KeelProcess {
    dir: tempfile::TempDir,
    /// The keeld executable.
    binary: PathBuf,
    child: Option<Child>,
    /// keeld's arguments (besides `--data-dir`), reused on restart.
    args: Vec<String>,
    /// When the client port serves TLS: the CA to trust (PEM).
    ca_pem: Option<String>,
    /// Extra environment variables (e.g. `KEEL_` config overrides), kept across restarts.
    envs: Vec<(String, String)>,
    /// `http://127.0.0.1:port` of the client gRPC port.
    pub endpoint: String,
    /// `127.0.0.1:port` of the ops HTTP port.
    pub ops_addr: String,
    /// `127.0.0.1:port` of the peer port.
    pub peer_addr: String,
    /// The capability token [`KeelProcess::channel`] sends: a dev node's
    /// admin token (read from its data dir at every start), or the one a
    /// cluster harness set.
    pub token: Option<String>,
}

/// A channel to a node's client port that sends a bearer token.
pub type AuthChannel = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// Puts `authorization: Bearer <token>` on every request (none: nothing).
#[derive(Debug, Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    /// Sends `token`.
    pub fn new(token: Option<&str>) -> Result<Bearer> {
        let header = token.map(|token| format!("Bearer {}", token.trim()).parse()).transpose()?;
        Ok(Bearer(header))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.0 {
            request.metadata_mut().insert("authorization", header.clone());
        }
        Ok(request)
    }
}

impl KeelProcess {
    /// Starts a dev node in a fresh temp dir and waits until it is ready.
    pub async fn start() -> Result<KeelProcess> {
        KeelProcess::start_with_env(&[]).await
    }

    /// [`KeelProcess::start`] with `envs` (`KEEL_*` configuration) set.
    pub async fn start_with_env(envs: &[(&str, &str)]) -> Result<KeelProcess> {
        let args = ["--dev", "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"];
        let mut node = KeelProcess::new(args.iter().map(|a| a.to_string()).collect())?;
        for (key, value) in envs {
            node.set_env(key, value);
        }
        node.spawn().await?;
        Ok(node)
    }

    /// A node that will run with `args` in a fresh temp dir; not started yet.
    pub fn new(args: Vec<String>) -> Result<KeelProcess> {
        let dir = tempfile::Builder::new().prefix("keel-it-").tempdir()?;
        Ok(KeelProcess {
            dir,
            binary: keeld_bin(),
            child: None,
            args,
            ca_pem: None,
            envs: Vec::new(),
            endpoint: String::new(),
            ops_addr: String::new(),
            peer_addr: String::new(),
            token: None,
        })
    }

    /// Run `binary` instead of [`keeld_bin`].
    pub fn with_binary(mut self, binary: PathBuf) -> KeelProcess {
        self.binary = binary;
        self
    }

    /// Talk TLS to the client port, trusting `ca_pem`.
    pub fn with_tls(mut self, ca_pem: String) -> KeelProcess {
        self.ca_pem = Some(ca_pem);
        self
    }

    /// Sets an environment variable for this and every later start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.envs.retain(|(known, _)| known != key);
        self.envs.push((key.to_owned(), value.to_owned()));
    }

    /// Starts the process and waits for its listening line (not for readiness).
    pub async fn launch(&mut self) -> Result<()> {
        self.spawn_process().await
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// [`KeelProcess::token`] for a `keel_client::ClientConfig`.
    pub fn bearer_token(&self) -> Option<keel_client::token::BearerToken> {
        self.token.as_deref().and_then(|token| keel_client::token::BearerToken::new(token).ok())
    }

    /// The dev admin token keeld wrote (dev nodes only).
    pub fn dev_token_file(&self) -> PathBuf {
        self.data_dir().join("dev-admin.token")
    }

    /// The dev root key pair keeld generated.
    pub fn dev_root_key(&self) -> PathBuf {
        self.data_dir().join("dev-root.key")
    }

    /// A scratch directory for the caller's own files.
    pub fn scratch(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    async fn spawn(&mut self) -> Result<()> {
        self.spawn_process().await?;
        self.wait_ready().await
    }

    async fn spawn_process(&mut self) -> Result<()> {
        let log_path = self.dir.path().join("keeld.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut command = Command::new(&self.binary);
        // keeld reads KEEL_* variables as configuration: the caller's
        // environment must not configure test nodes (only `set_env` does).
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|key| key.starts_with("KEEL_")) {
                command.env_remove(&key);
            }
        }
        let mut child = command
            .args(&self.args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .env("RUST_LOG", "info,openraft=warn")
            .envs(self.envs.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        self.child = Some(child);
        // keeld prints its bound addresses once; read lines on a blocking thread with a deadline.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                    && value["event"] == "listening"
                {
                    let field = |name: &str| value[name].as_str().map(str::to_owned);
                    let _ = tx.send((field("client"), field("ops"), field("peer")));
                }
            }
        });
        let (client, ops, peer) = rx
            .recv_timeout(START_DEADLINE)
            .map_err(|_| anyhow!("keeld printed no listening line; log:\n{}", self.log()))?;
        let scheme = if self.ca_pem.is_some() { "https" } else { "http" };
        self.endpoint = format!("{scheme}://{}", client.ok_or_else(|| anyhow!("listening line without client"))?);
        self.ops_addr = ops.ok_or_else(|| anyhow!("listening line without ops"))?;
        self.peer_addr = peer.ok_or_else(|| anyhow!("listening line without peer"))?;
        if self.args.iter().any(|arg| arg == "--dev") {
            // Written before the listening line, rewritten at every start.
            self.token = Some(std::fs::read_to_string(self.dev_token_file())?.trim().to_owned());
        }
        Ok(())
    }

    /// The OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// keeld's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("keeld.log")).unwrap_or_default()
    }

    /// Polls `/readyz` until 200 or the deadline; with a token, also until
    /// the token is accepted (a dev node adds its API-token key right after
    /// it bootstraps).
    pub async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok((200, _)) = http_get(&self.ops_addr, "/readyz").await
                && (self.token.is_none() || self.status_once().await.is_ok())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("keeld not ready within {START_DEADLINE:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill_9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Stops keeld with SIGTERM (its graceful stop) and waits for it to exit.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().ok_or_else(|| anyhow!("keeld is not running"))?;
        let pid = child.id().to_string();
        let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status()?;
        anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
        Ok(child.wait()?)
    }

    /// Starts keeld again on the same data dir (new ports).
    pub async fn restart(&mut self) -> Result<()> {
        self.kill_9()?;
        self.spawn().await
    }

    /// A gRPC channel to the client port that sends [`KeelProcess::token`].
    pub async fn channel(&self) -> Result<AuthChannel> {
        let channel = self.raw_channel().await?;
        Ok(tonic::service::interceptor::InterceptedService::new(channel, Bearer::new(self.token.as_deref())?))
    }

    /// A gRPC channel to the client port that sends no token.
    pub async fn raw_channel(&self) -> Result<Channel> {
        let mut endpoint = Channel::from_shared(self.endpoint.clone())?.connect_timeout(Duration::from_secs(5));
        if let Some(ca_pem) = &self.ca_pem {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem));
            endpoint = endpoint.tls_config(tls)?;
        }
        Ok(endpoint.connect().await?)
    }

    /// One `ClusterService.GetStatus`, with the token, as it is (under
    /// steady writes the digest trails the applied index).
    pub async fn status_once(&self) -> Result<pb::ClusterStatus> {
        let mut client = pb::cluster_service_client::ClusterServiceClient::new(self.channel().await?);
        Ok(client.get_status(pb::GetStatusRequest {}).await?.into_inner())
    }

    /// `ClusterService.GetStatus`.
    /// The node's status once its state digest is of its applied index (the
    /// digest is worked out in the background, at most 200 ms behind), so a
    /// digest read right after a write is of that write; the latest status
    /// if that takes longer than `DIGEST_DEADLINE`.
    pub async fn status(&self) -> Result<pb::ClusterStatus> {
        let mut client = pb::cluster_service_client::ClusterServiceClient::new(self.channel().await?);
        let deadline = Instant::now() + DIGEST_DEADLINE;
        loop {
            let status = client.get_status(pb::GetStatusRequest {}).await?.into_inner();
            if status.state_digest_revision == status.applied_index || Instant::now() > deadline {
                return Ok(status);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for KeelProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A minimal HTTP/1.1 GET over loopback: (status code, body).
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await??;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await??;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("malformed HTTP response"))?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((code, body))
}
