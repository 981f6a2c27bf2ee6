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
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> Self {
        let mut server = Self {
            port: super::free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        server.restart();
        server
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
