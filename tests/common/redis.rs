//! A `redis-server` of the test's own: a free port, no persistence, killed on drop. It is
//! waited for by polling PING with a deadline, never by sleeping.
//!
//! The tests need `redis-server` on PATH (`scripts/dev.sh test` installs Debian's package). If
//! it is missing they fail with a message saying so: nothing is skipped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::FromRedisValue;

/// A running (or stopped, see [`RedisServer::stop`]) `redis-server`.
pub struct RedisServer {
    /// The plain-text port, which the test itself uses to look inside.
    pub port: u16,
    /// The TLS port, for a server started with [`RedisServer::start_tls`].
    pub tls_port: Option<u16>,
    /// Extra `redis-server` arguments (the TLS settings).
    args: Vec<String>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(None, Vec::new())
    }

    /// Starts a server that also listens for TLS on a second free port, with `pki`'s server
    /// certificate; `client_certs`: whether it requires a client certificate signed by `pki`'s
    /// CA (`tls-auth-clients`).
    pub fn start_tls(pki: &super::pki::Pki, client_certs: bool) -> Self {
        let tls_port = super::free_port();
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let args = vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path(&pki.server_cert),
            "--tls-key-file".into(),
            path(&pki.server_key),
            "--tls-ca-cert-file".into(),
            path(&pki.ca),
            "--tls-auth-clients".into(),
            if client_certs { "yes" } else { "no" }.into(),
        ];
        Self::start_with(Some(tls_port), args)
    }

    fn start_with(tls_port: Option<u16>, args: Vec<String>) -> Self {
        let mut server = Self {
            port: super::free_port(),
            tls_port,
            args,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        server.restart();
        server
    }

    /// `rediss://127.0.0.1:<tls port>/0`, for a server started with [`RedisServer::start_tls`].
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("started with start_tls");
        format!("rediss://127.0.0.1:{port}/0")
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server again, on the same port and empty, after [`RedisServer::stop`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.args)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): the Redis tests need it on PATH; \
                     `scripts/dev.sh test` installs it (Debian package `redis-server`)"
                )
            });
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while !self.ping() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "redis-server exited at start ({status}); is port {} taken?",
                    self.port
                );
            }
            assert!(
                Instant::now() < end,
                "redis-server did not answer PING in time"
            );
            std::thread::sleep(Duration::from_millis(5)); // poll interval
        }
    }

    /// Kills the server (as a crash would) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the server answers PING now.
    pub fn ping(&self) -> bool {
        self.connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
            .is_some_and(|pong| pong == "PONG")
    }

    /// A new synchronous connection, if the server is up.
    pub fn connection(&self) -> Option<redis::Connection> {
        redis::Client::open(self.url())
            .ok()?
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()
    }

    /// Runs one command, e.g. `&["KEYS", "*"]`, and returns its reply.
    pub fn cmd<T: FromRedisValue>(&self, args: &[&str]) -> T {
        let mut connection = self.connection().expect("redis-server is up");
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut connection)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// The `calls` of one command in `INFO commandstats` (0 if it never ran since the last
    /// `CONFIG RESETSTAT`).
    pub fn calls(&self, command: &str) -> u64 {
        let info: String = self.cmd(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
