//! What a process started with `--upgrade` takes over from the one it replaces, beyond the
//! sockets: the dedup records that one committed after it wrote the snapshot read at start.
//!
//! The old process writes its snapshot, hands the sockets over, and goes on accepting for
//! Pingora's 5 s before it closes its listeners and drains; both processes serve in that time.
//! Without a second look, what the old one delivered then would be unknown here for the whole
//! dedup TTL, and a sender's retry a minute later would be forwarded again. The old process
//! writes the snapshot once more when it exits: [`Follower`] watches the file for that write,
//! for as long as the old one may take (the 5 s, `drain_timeout` and a margin), and adds its
//! records to the memory backend. A retry that reaches this process *during* the overlap is
//! still forwarded again: only a shared backend (Redis) closes that window.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::runtime::Live;
use crate::snapshot::Snapshot;

/// Pingora's time between handing the sockets over and closing the listeners
/// (`pingora-core` 0.9.1 `server::CLOSE_TIMEOUT`).
pub const OLD_PROCESS_ACCEPTS_FOR: Duration = Duration::from_secs(5);

/// How often the file is looked at.
const POLL: Duration = Duration::from_millis(200);

/// What identifies one write of the snapshot file: its modification time and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version(Option<SystemTime>, u64);

impl Version {
    /// The file's version now; `None` if it cannot be read.
    pub fn of(path: &std::path::Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self(meta.modified().ok(), meta.len()))
    }
}

/// Watches the snapshot for the old process's last write and merges it (see the module
/// docs).
pub struct Follower {
    live: Live,
    path: PathBuf,
    /// The version read at start.
    read: Option<Version>,
    /// How long to watch.
    window: Duration,
}

impl Follower {
    /// Watches `path`, which held `read` when the process started, for `window`.
    pub fn new(live: Live, path: PathBuf, read: Option<Version>, window: Duration) -> Self {
        Self {
            live,
            path,
            read,
            window,
        }
    }

    /// Merges the snapshot if it changed since the start; tells whether it did.
    pub fn check(&self) -> bool {
        let now = Version::of(&self.path);
        if now.is_none() || now == self.read {
            return false;
        }
        match Snapshot::read(&self.path) {
            Ok(Some(snapshot)) => match self.live.load().state.import(&snapshot) {
                Some(added) => tracing::info!(
                    path = %self.path.display(),
                    added,
                    "merged the replaced process's last dedup snapshot"
                ),
                None => tracing::warn!(
                    path = %self.path.display(),
                    "the replaced process's last dedup snapshot was hashed with another secret; ignored"
                ),
            },
            Ok(None) => {}
            Err(error) => tracing::warn!(
                path = %self.path.display(),
                %error,
                "ignoring the replaced process's last dedup snapshot"
            ),
        }
        true
    }
}

#[async_trait]
impl BackgroundService for Follower {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let deadline = tokio::time::Instant::now() + self.window;
        let mut tick = tokio::time::interval(POLL);
        while tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if self.check() {
                return;
            }
        }
        tracing::info!(
            path = %self.path.display(),
            "the replaced process wrote no last dedup snapshot in time; not waiting any longer"
        );
    }
}
