//! Reloading the configuration without a restart: on SIGHUP, and when the file changes.
//!
//! The file is watched through its *directory* (inotify, via `notify`), so the watch survives
//! what replaces a file rather than writing it in place: editors that write a new file and
//! rename it over the old one, `git checkout`, and Kubernetes ConfigMap volumes, which swap a
//! `..data` symlink in that directory. The directories of the TLS listener's certificate and
//! key are watched too. Every event only triggers a look at the files: a reload happens when
//! the config file's bytes, or the certificate's or key's, differ from the last ones read (so a
//! renewed certificate written over the old one, or a Kubernetes Secret update, is picked up
//! without touching the YAML). SIGHUP reloads whatever the contents.
//!
//! A reload loads and validates the whole file first. A bad file is refused with a log line
//! naming the error, and the running configuration keeps serving. A good one is built into a
//! new [`Runtime`] over the same state (dedup records and limiter buckets carry over for
//! routes that keep their name) and swapped in atomically: requests already under way finish
//! on the runtime they started with.
//!
//! `listen`, `listen_tls` (its address and minimum version; its certificate does reload),
//! `admin_listen`, `threads`, `header_timeout`, `idle_timeout`, `drain_timeout` and `state`
//! are bound when the server starts; a reload that changes them applies everything else and logs that those keep
//! their running values until the next restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use sha2::{Digest, Sha256};

use crate::admin::Readiness;
use crate::clock::Clock;
use crate::config::{self, Config, ConfigError};
use crate::metrics::{Metrics, ReloadResult};
use crate::runtime::{Live, Runtime};
use crate::tls::CertStore;

/// How long the watcher waits after an event in the directory before it reads the file, so
/// that a multi-step replacement (write, rename, symlink swap) is read once, complete.
const SETTLE: Duration = Duration::from_millis(200);

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// A new runtime is serving.
    Swapped,
    /// The file's contents are those last read: nothing to do (file events only).
    Unchanged,
}

/// Loads the configuration file again and swaps the serving runtime.
pub struct Reloader {
    path: PathBuf,
    live: Live,
    /// The TLS listener's certificate, when `listen_tls` is set: a reload replaces it.
    cert_store: Option<Arc<CertStore>>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    /// The settings bound at start, to tell when a reload changes them.
    started: Bound,
    /// SHA-256 of the contents last read (the config file, then the files it names that a
    /// reload reads again), good or bad.
    last_read: Mutex<[u8; 32]>,
    /// The files besides the config whose contents a reload takes in: the TLS listener's
    /// certificate and key, as the serving configuration names them.
    files: Mutex<Vec<PathBuf>>,
}

/// The files other than the config file that a reload reads again: the TLS listener's
/// certificate and key.
fn named_files(config: &Config) -> Vec<PathBuf> {
    match &config.listen_tls {
        Some(tls) => vec![
            tls.cert.cert_path().to_path_buf(),
            tls.cert.key_path().to_path_buf(),
        ],
        None => Vec::new(),
    }
}

/// SHA-256 over the config file's bytes and, for each of `files`, its path and bytes (an
/// unreadable one counts as empty: the reload itself then reports it).
fn digest(contents: &[u8], files: &[PathBuf]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update((contents.len() as u64).to_le_bytes());
    hash.update(contents);
    for file in files {
        let bytes = std::fs::read(file).unwrap_or_default();
        let path = file.as_os_str().as_encoded_bytes();
        hash.update((path.len() as u64).to_le_bytes());
        hash.update(path);
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    hash.finalize().into()
}

/// The settings a reload cannot change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bound {
    listen: Option<std::net::SocketAddr>,
    /// The TLS listener's address and minimum version (its certificate reloads).
    listen_tls: Option<(std::net::SocketAddr, crate::tls::TlsVersion)>,
    admin_listen: std::net::SocketAddr,
    threads: std::num::NonZeroUsize,
    /// The connection deadlines, set on the listener at start.
    connection_timeouts: (std::time::Duration, std::time::Duration),
    drain_timeout: std::time::Duration,
    state: config::model::StateConfig,
}

impl Bound {
    fn of(config: &Config) -> Self {
        Self {
            listen: config.listen,
            listen_tls: (config.listen_tls.as_ref()).map(|t| (t.addr, t.min_version)),
            admin_listen: config.admin_listen,
            threads: config.threads,
            connection_timeouts: (config.header_timeout, config.idle_timeout),
            drain_timeout: config.drain_timeout,
            state: config.state.clone(),
        }
    }

    /// The keys whose new values wait for a restart.
    fn changed(&self, new: &Self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.listen != new.listen {
            keys.push("listen");
        }
        if self.listen_tls != new.listen_tls {
            keys.push("listen_tls (addr, min_version, or whether it is set)");
        }
        if self.admin_listen != new.admin_listen {
            keys.push("admin_listen");
        }
        if self.threads != new.threads {
            keys.push("threads");
        }
        if self.connection_timeouts != new.connection_timeouts {
            keys.push("header_timeout, idle_timeout");
        }
        if self.drain_timeout != new.drain_timeout {
            keys.push("drain_timeout");
        }
        if self.state != new.state {
            keys.push("state");
        }
        keys
    }
}

impl Reloader {
    /// A reloader of the file at `path`, whose contents at start gave `config`, now served by
    /// `live`; `cert_store` holds the TLS listener's certificate, if there is one.
    pub fn new(
        path: &Path,
        config: &Config,
        live: Live,
        cert_store: Option<Arc<CertStore>>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let contents = std::fs::read(path).unwrap_or_default();
        let files = named_files(config);
        Self {
            path: path.to_path_buf(),
            live,
            cert_store,
            metrics,
            clock,
            started: Bound::of(config),
            last_read: Mutex::new(digest(&contents, &files)),
            files: Mutex::new(files),
        }
    }

    /// The directories a watcher should watch: the config file's, and those of the files it
    /// names that a reload reads again.
    pub fn directories(&self) -> Vec<PathBuf> {
        let parent = |p: &Path| {
            let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
            dir.unwrap_or_else(|| Path::new(".")).to_path_buf()
        };
        let mut dirs = vec![parent(&self.path)];
        for file in self.files.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let dir = parent(file);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        dirs
    }

    /// Whether a change to `path`, in one of the watched directories, can change what a reload
    /// reads: the config file or a file it names, under the same file name (written in place
    /// or renamed over), or a name starting with `..`, which is how Kubernetes swaps a whole
    /// ConfigMap or Secret volume (`..data`). Anything else in those directories (a log file
    /// next to the config, an editor's swap file) is not worth reading the files again.
    pub fn concerns(&self, path: &Path) -> bool {
        let Some(name) = path.file_name() else {
            return true;
        };
        if name.as_encoded_bytes().starts_with(b"..") || Some(name) == self.path.file_name() {
            return true;
        }
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.iter().any(|file| file.file_name() == Some(name))
    }

    /// Reads the file and, if it is valid, swaps in a runtime built from it. With `force`
    /// false (a file event), a file whose contents did not change is left alone.
    ///
    /// Success and failure are logged and counted in `hookgate_config_reloads_total`; an
    /// unchanged file is neither.
    pub fn reload(&self, force: bool) -> Result<Reloaded, ReloadError> {
        let result = self.try_reload(force);
        match &result {
            Ok(Reloaded::Unchanged) => {}
            Ok(Reloaded::Swapped) => self.metrics.record_reload(ReloadResult::Success),
            Err(error) => {
                tracing::error!(%error, "configuration reload refused; the running configuration keeps serving");
                self.metrics.record_reload(ReloadResult::Failure);
            }
        }
        result
    }

    fn try_reload(&self, force: bool) -> Result<Reloaded, ReloadError> {
        let contents = std::fs::read(&self.path).map_err(|source| ReloadError::Read {
            path: self.path.display().to_string(),
            source,
        })?;
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let read = digest(&contents, &files);
        {
            let mut last = self.last_read.lock().unwrap_or_else(|e| e.into_inner());
            if !force && *last == read {
                return Ok(Reloaded::Unchanged);
            }
            *last = read;
        }
        let text = String::from_utf8_lossy(&contents);
        let origin = self.path.display().to_string();
        let config = config::parse(&text, &origin, &|name| std::env::var(name).ok())?;
        let waiting = self.started.changed(&Bound::of(&config));
        if !waiting.is_empty() {
            tracing::warn!(
                keys = waiting.join(", "),
                "these settings changed but apply only at the next restart; they keep their running values"
            );
        }
        let current = self.live.load();
        let state = Arc::new(current.state.reconfigured(&config));
        let runtime = Runtime::new(&config, &self.metrics, state, &self.clock);
        self.live.store(Arc::new(runtime));
        // The certificate was read and checked against its key by the loader: the next
        // handshake uses it, connections already open keep theirs.
        if let (Some(store), Some(tls)) = (&self.cert_store, &config.listen_tls) {
            store.replace(tls.cert.clone());
        }
        // From now on the files this configuration names are the ones compared.
        let files = named_files(&config);
        *self.last_read.lock().unwrap_or_else(|e| e.into_inner()) = digest(&contents, &files);
        *self.files.lock().unwrap_or_else(|e| e.into_inner()) = files;
        tracing::info!(
            routes = config.routes.len(),
            "configuration reloaded; new requests use it"
        );
        Ok(Reloaded::Swapped)
    }
}

/// The background job that reloads on SIGHUP and on changes in the config file's directory.
pub struct ConfigWatcher {
    reloader: Arc<Reloader>,
    readiness: Arc<Readiness>,
}

impl ConfigWatcher {
    /// A watcher reloading through `reloader`; it tells `readiness` once it listens.
    pub fn new(reloader: Arc<Reloader>, readiness: Arc<Readiness>) -> Self {
        Self {
            reloader,
            readiness,
        }
    }

    /// Watches the directories of the config file and of the files it names; events arrive
    /// on the returned channel. `None` (logged) if the config's directory cannot be watched:
    /// SIGHUP still works.
    fn watch_directories(
        &self,
    ) -> Option<(notify::RecommendedWatcher, tokio::sync::mpsc::Receiver<()>)> {
        use notify::Watcher;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let reloader = self.reloader.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let relevant =
                event.paths.is_empty() || event.paths.iter().any(|p| reloader.concerns(p));
            if relevant {
                // A full channel already holds a wake-up: nothing is lost.
                let _ = tx.try_send(());
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(watcher) => watcher,
            Err(error) => {
                tracing::warn!(%error, "cannot watch the configuration's files; reload with SIGHUP");
                return None;
            }
        };
        for (i, dir) in self.reloader.directories().iter().enumerate() {
            if let Err(error) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(%error, dir = %dir.display(), "cannot watch this directory; reload with SIGHUP");
                if i == 0 {
                    return None;
                }
            }
        }
        Some((watcher, rx))
    }
}

#[async_trait]
impl BackgroundService for ConfigWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(error) => {
                tracing::warn!(%error, "cannot handle SIGHUP; the file watcher still reloads");
                None
            }
        };
        let (_watcher, mut events) = match self.watch_directories() {
            Some((watcher, events)) => (Some(watcher), Some(events)),
            None => (None, None),
        };
        self.readiness.set_reloadable();
        loop {
            let force = tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = recv_signal(&mut hangup) => true,
                Some(()) = recv_event(&mut events) => {
                    // Let a multi-step replacement finish, then read once.
                    tokio::time::sleep(SETTLE).await;
                    if let Some(events) = events.as_mut() {
                        while events.try_recv().is_ok() {}
                    }
                    false
                }
            };
            let reloader = self.reloader.clone();
            // Parsing and compiling schemas is blocking work: off the async threads.
            let _ = tokio::task::spawn_blocking(move || reloader.reload(force)).await;
        }
    }
}

async fn recv_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_event(events: &mut Option<tokio::sync::mpsc::Receiver<()>>) -> Option<()> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arc_swap::ArcSwap;

    const YAML: &str = "routes:\n  - name: a\n    path: /a\n    upstream: http://127.0.0.1:3000\n    verify:\n      secrets: [whsec_a]\n";

    fn reloader(path: &Path) -> (Reloader, Live, Arc<Metrics>) {
        let config = config::load(path).unwrap();
        let metrics = Arc::new(Metrics::new());
        let clock = crate::clock::system();
        let state = Arc::new(crate::state::State::new(&config, clock.clone(), &metrics));
        let live: Live = Arc::new(ArcSwap::from_pointee(Runtime::new(
            &config, &metrics, state, &clock,
        )));
        let reloader = Reloader::new(path, &config, live.clone(), None, metrics.clone(), clock);
        (reloader, live, metrics)
    }

    #[test]
    fn only_the_files_a_reload_reads_and_volume_swaps_concern_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.yaml");
        std::fs::write(&path, YAML).unwrap();
        let (reloader, _live, _metrics) = reloader(&path);
        assert!(reloader.concerns(&path));
        assert!(reloader.concerns(&dir.path().join("..data")));
        assert!(reloader.concerns(&dir.path().join("..2026_12_01_22_00_00.123")));
        assert!(!reloader.concerns(&dir.path().join("hookgate.log")));
        assert!(!reloader.concerns(&dir.path().join(".hookgate.yaml.swp")));
        assert!(!reloader.concerns(&dir.path().join("hookgate.yaml~")));
    }

    #[test]
    fn unchanged_contents_reload_only_when_forced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.yaml");
        std::fs::write(&path, YAML).unwrap();
        let (reloader, live, metrics) = reloader(&path);
        let first = live.load_full();
        assert_eq!(reloader.reload(false).unwrap(), Reloaded::Unchanged);
        assert!(Arc::ptr_eq(&first, &live.load_full()), "nothing swapped");
        assert_eq!(reloader.reload(true).unwrap(), Reloaded::Swapped);
        assert!(!Arc::ptr_eq(&first, &live.load_full()));
        // The same bytes written again: unchanged.
        std::fs::write(&path, YAML).unwrap();
        assert_eq!(reloader.reload(false).unwrap(), Reloaded::Unchanged);
        let text = metrics.render();
        assert!(
            text.contains("hookgate_config_reloads_total{result=\"success\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn a_refused_file_leaves_the_runtime_and_a_fixed_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.yaml");
        std::fs::write(&path, YAML).unwrap();
        let (reloader, live, metrics) = reloader(&path);
        let first = live.load_full();
        std::fs::write(&path, YAML.replace("secrets", "secret")).unwrap();
        let error = reloader.reload(false).unwrap_err().to_string();
        assert!(
            error.contains("hookgate.yaml:6:") && error.contains("unknown field `secret`"),
            "{error}"
        );
        assert!(Arc::ptr_eq(&first, &live.load_full()));
        // The same bad contents again: not retried (and not counted) until they change.
        assert_eq!(reloader.reload(false).unwrap(), Reloaded::Unchanged);
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            reloader.reload(true),
            Err(ReloadError::Read { .. })
        ));
        std::fs::write(&path, YAML.replace("/a", "/b")).unwrap();
        assert_eq!(reloader.reload(false).unwrap(), Reloaded::Swapped);
        assert!(live.load().router.find("/b").is_some());
        assert!(live.load().router.find("/a").is_none());
        let text = metrics.render();
        assert!(
            text.contains("hookgate_config_reloads_total{result=\"failure\"} 2"),
            "{text}"
        );
    }
}
