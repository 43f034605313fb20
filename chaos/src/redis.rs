//! A real `redis-server` for tests: its own port and directory, nothing
//! persisted, killed on drop; `pause`/`resume` (SIGSTOP/SIGCONT, so calls
//! hang rather than fail) and `kill_9` for outage tests.

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
    dir: tempfile::TempDir,
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
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = tempfile::Builder::new().prefix("keel-redis-").tempdir()?;
        let mut server = RedisServer { child: None, addr: format!("127.0.0.1:{port}"), password, dir };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<()> {
        let port = self.addr.rsplit_once(':').map(|(_, port)| port.to_owned()).context("port")?;
        let mut command = Command::new("redis-server");
        command.args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
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

    /// `redis://[:password@]127.0.0.1:port`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@{}", self.addr),
            None => format!("redis://{}", self.addr),
        }
    }

    /// Whether it answers PING within 200 ms.
    pub fn answers(&self) -> bool {
        self.command("PING").is_ok_and(|reply| reply.contains("+PONG"))
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
