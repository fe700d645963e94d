//! The real binary as a child process on 127.0.0.1:0, for tests that need a process to kill, its
//! exit code or its log.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BINARY: &str = env!("CARGO_BIN_EXE_gitops-status-server");

/// A running `gitops-status-server serve`; killed when dropped.
pub struct Binary {
    pub child: Child,
    pub address: SocketAddr,
    log: std::sync::mpsc::Receiver<String>,
    early: Vec<String>,
}

/// The binary run in `dir` with none of the configuration this test run's environment may carry,
/// `env` set on top, logging at info without colour, and no stdin.
pub fn command(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("GITOPS_STATUS_LISTEN")
        .env_remove("GITOPS_STATUS_TOKENS_FILE")
        .env_remove("GITOPS_STATUS_NOTIFY_FILE")
        .env_remove("GITOPS_STATUS_WRITE_TOKEN")
        .env_remove("GITOPS_STATUS_SIGNING_KEY")
        .env_remove("GITOPS_STATUS_SIGN_INTERVAL")
        .env_remove("GITOPS_STATUS_PUBLIC_KEY")
        .env_remove("PGDATABASE")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

impl Binary {
    /// Starts the binary in `dir` with `args` and `env`, and waits for the address it logs.
    #[allow(
        clippy::zombie_processes,
        reason = "Drop kills and waits for the child"
    )]
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = command(dir, env);
        command
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let (lines, log) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut early = Vec::new();
        loop {
            let line = log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no address logged within 30 s: {early:?}"));
            let address = line
                .split("address=")
                .nth(1)
                .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap());
            early.push(line);
            if let Some(address) = address {
                return Self {
                    child,
                    address,
                    log,
                    early,
                };
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Sends a signal by name, as `kill` takes it: `-TERM`, `-KILL`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// `kill -9`: no chance to flush or close anything.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every line logged so far.
    pub fn logs(&mut self) -> Vec<String> {
        self.early.extend(self.log.try_iter());
        self.early.clone()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
