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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::DeliveryKey;
    use crate::metrics::Metrics;
    use crate::runtime::Runtime;
    use crate::state::State;
    use arc_swap::ArcSwap;
    use std::sync::Arc;

    const YAML: &str = "routes:\n  - name: a\n    path: /a\n    upstream: http://127.0.0.1:3000\n    dedup: {}\n    verify:\n      secrets: [whsec_a]\n";

    fn snapshot(secret: [u8; 32], keys: &[u128]) -> Snapshot {
        let expires = (SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            + Duration::from_secs(3600))
        .as_secs() as u32;
        let records = keys
            .iter()
            .map(|&k| (DeliveryKey::from_u128(k), expires))
            .collect();
        Snapshot {
            key_secret: secret,
            routes: vec![("a".to_string(), records)],
        }
    }

    /// A gateway state started from `first`, as a process started with `--upgrade` is.
    fn started_from(dir: &std::path::Path, first: &Snapshot) -> Live {
        let config_path = dir.join("hookgate.yaml");
        std::fs::write(&config_path, YAML).unwrap();
        let config = crate::config::load(&config_path).unwrap();
        let metrics = Metrics::new();
        let clock = crate::clock::system();
        let state = State::with_snapshot(&config, clock.clone(), &metrics, Some(first.clone()));
        Arc::new(ArcSwap::from_pointee(Runtime::new(
            &config,
            &metrics,
            Arc::new(state),
            &clock,
        )))
    }

    fn held(live: &Live) -> usize {
        live.load().state.snapshot().unwrap().len()
    }

    #[test]
    fn the_old_process_s_last_write_is_merged_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dedup.snapshot");
        let first = snapshot([7; 32], &[1, 2]);
        first.write(&path).unwrap();
        let live = started_from(dir.path(), &first);
        let follower = Follower::new(live.clone(), path.clone(), Version::of(&path), WINDOW);
        assert!(
            !follower.check(),
            "the file read at start is not merged again"
        );
        assert_eq!(held(&live), 2);

        // The old process exits: its last snapshot holds what it delivered in the overlap.
        snapshot([7; 32], &[1, 2, 3, 4]).write(&path).unwrap();
        assert!(follower.check());
        assert_eq!(held(&live), 4);
    }

    #[test]
    fn a_snapshot_hashed_with_another_secret_is_not_merged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dedup.snapshot");
        let first = snapshot([7; 32], &[1]);
        first.write(&path).unwrap();
        let live = started_from(dir.path(), &first);
        let follower = Follower::new(live.clone(), path.clone(), Version::of(&path), WINDOW);
        snapshot([8; 32], &[5, 6, 7]).write(&path).unwrap();
        assert!(follower.check(), "looked at, and done with");
        assert_eq!(held(&live), 1);
    }

    const WINDOW: Duration = Duration::from_secs(1);
}
