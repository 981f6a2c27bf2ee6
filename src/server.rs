//! Assembles the Pingora server: the proxy service (plain and TLS listeners), the admin service,
//! the state maintenance job and the config watcher; runs it; and saves the dedup snapshot when
//! it stops.
//!
//! Signals: SIGHUP reloads the configuration ([`crate::reload`]); SIGTERM drains and exits,
//! SIGQUIT hands the listening sockets to a new process started with `hookgate run --upgrade`
//! and then drains (Pingora's), SIGINT exits at once, also during either drain. On SIGTERM and
//! SIGQUIT `/readyz` starts failing at once. The dedup snapshot (`state.snapshot_path`) is
//! written when SIGQUIT arrives, before the sockets are handed over (the new process reads it
//! once it has them), and again when the process exits, whatever stopped it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::{Admin, Readiness};
use crate::config::Config;
use crate::drain::Drain;
use crate::handover;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::reload::{ConfigWatcher, Reloader};
use crate::runtime::{Live, Runtime};
use crate::snapshot::Snapshot;
use crate::state::{Maintenance, State};
use crate::tls::CertStore;

/// Pingora's own settings, derived from ours (River's approach: users never see Pingora's YAML).
fn server_conf(config: &Config) -> ServerConf {
    ServerConf {
        threads: config.threads.get(),
        // One single-threaded runtime per worker thread: Pingora hands each accepted connection
        // to one of them at random, and it stays there. Tokio's work-stealing scheduler cost
        // about 6% more CPU per forwarded request with 1 thread and 3% with 2 (BENCHMARKS.md);
        // a webhook request is short, so there is little to steal.
        work_stealing: false,
        // A process per listen port gets its own upgrade socket, so several gateways (tests,
        // sidecars) can share a machine.
        upgrade_sock: upgrade_sock(config).to_string_lossy().into_owned(),
        pid_file: std::env::temp_dir()
            .join(format!("hookgate-{}.pid", first_port(config)))
            .to_string_lossy()
            .into_owned(),
        // hookgate's drain ends the process when the requests in progress have finished
        // (`crate::drain`); Pingora's grace period and runtime shutdown are the backstop.
        grace_period_seconds: Some(config.drain_timeout.as_secs_f64().ceil() as u64 + 1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    }
}

/// How much longer than the old process may take the upgraded one watches for its last
/// snapshot (`crate::handover`).
const FOLLOW_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The socket a process started with `--upgrade` receives the listening sockets on.
pub fn upgrade_sock(config: &Config) -> PathBuf {
    std::env::temp_dir().join(format!("hookgate-upgrade-{}.sock", first_port(config)))
}

/// The port of the first proxy listener: unique per gateway on a machine, so it names the
/// upgrade socket and the pid file.
fn first_port(config: &Config) -> u16 {
    config.proxy_addrs()[0].port()
}

/// A server for `config` (read from `path`, which reloads read again), ready to run, and what
/// must happen when it stops. With `upgrade`, this waits for the sockets of the running
/// gateway (sent when it gets SIGQUIT) before it reads the dedup snapshot. Fails only if
/// OpenSSL refuses the TLS listener's settings.
pub fn build(config: &Config, path: &Path, upgrade: bool) -> pingora::Result<(Server, Lifecycle)> {
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(config));
    // With --upgrade, this is where the old process's sockets arrive; it writes its snapshot
    // before sending them, so the snapshot read below is that process's last word.
    server.bootstrap();

    let metrics = Arc::new(Metrics::new());
    metrics.record_config_loaded();
    let clock = crate::clock::system();
    let snapshot_path = config.state.snapshot_path().map(Path::to_path_buf);
    // The version first: a write between the two is merged again later, which adds nothing.
    let read_version = snapshot_path.as_deref().and_then(handover::Version::of);
    let snapshot = snapshot_path.as_deref().and_then(read_snapshot);
    // Memory or Redis per `config.state`; Redis is connected on first use, never here.
    let state = Arc::new(State::with_snapshot(
        config,
        clock.clone(),
        &metrics,
        snapshot,
    ));
    let live: Live = Arc::new(ArcSwap::from_pointee(Runtime::new(
        config, &metrics, state, &clock,
    )));

    let gateway = Gateway::new(live.clone(), &metrics, clock.clone());
    let deadlines = crate::conn::Deadlines {
        header: config.header_timeout,
        idle: config.idle_timeout,
    };
    let unrouted = metrics.route(crate::metrics::NO_ROUTE);
    let drain = Arc::new(Drain::new(config.drain_timeout));
    let mut proxy = crate::conn::proxy_service(
        &server.configuration,
        gateway,
        "hookgate proxy",
        deadlines,
        unrouted,
        drain.clone(),
    );
    if let Some(listen) = config.listen {
        proxy.add_tcp(&listen.to_string());
    }
    let cert_store = match &config.listen_tls {
        Some(tls) => {
            let store = Arc::new(CertStore::new(tls.cert.clone()));
            let settings = crate::tls::listener_settings(store.clone(), tls.min_version)?;
            proxy.add_tls_with_settings(&tls.addr.to_string(), None, settings);
            Some(store)
        }
        None => None,
    };

    let tls_addr = config.listen_tls.as_ref().map(|tls| tls.addr);
    let readiness = Arc::new(Readiness::new(config.listen, tls_addr, live.clone()));
    let mut admin = Service::new(
        "hookgate admin".to_string(),
        Admin::new(metrics.clone(), readiness.clone()),
    );
    admin.threads = Some(1);
    admin.add_tcp(&config.admin_listen.to_string());

    let maintenance =
        background_service("hookgate state maintenance", Maintenance::new(live.clone()));
    let reloader = Arc::new(Reloader::new(
        path,
        config,
        live.clone(),
        cert_store,
        metrics,
        clock,
    ));
    let watcher = background_service(
        "hookgate config watcher",
        ConfigWatcher::new(reloader, readiness.clone()),
    );

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(maintenance);
    server.add_service(watcher);
    if let Some(path) = snapshot_path.as_ref().filter(|_| upgrade) {
        let window = handover::OLD_PROCESS_ACCEPTS_FOR + config.drain_timeout + FOLLOW_MARGIN;
        let follower = handover::Follower::new(live.clone(), path.clone(), read_version, window);
        server.add_service(background_service("hookgate upgrade follow-up", follower));
    }
    let lifecycle = Lifecycle {
        live,
        readiness,
        snapshot_path,
        drain,
        writing: std::sync::Mutex::new(()),
    };
    Ok((server, lifecycle))
}

/// Runs the gateway until a signal stops it, then saves the dedup snapshot and exits.
pub fn run(config: &Config, path: &Path, upgrade: bool) -> ! {
    let (server, lifecycle) = match build(config, path, upgrade) {
        Ok(built) => built,
        Err(e) => {
            eprintln!("hookgate: cannot start: {e}");
            std::process::exit(1)
        }
    };
    let lifecycle = Arc::new(lifecycle);
    // Once the listeners have closed and every request in progress has finished (or
    // `drain_timeout` has run out): the same end as below, without waiting for Pingora's grace
    // period. The drain lives as long as the process, so this reference never needs dropping.
    let at_drained = lifecycle.clone();
    lifecycle.drain.on_finish(move || {
        at_drained.save_snapshot();
        std::process::exit(0)
    });
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals(lifecycle.clone())),
    });
    // Every runtime has stopped: no request can commit anything any more.
    lifecycle.save_snapshot();
    std::process::exit(0)
}

/// What the gateway does around its shutdown.
pub struct Lifecycle {
    live: Live,
    readiness: Arc<Readiness>,
    snapshot_path: Option<PathBuf>,
    drain: Arc<Drain>,
    writing: std::sync::Mutex<()>,
}

impl Lifecycle {
    /// Writes the memory backend's delivered IDs to `state.snapshot_path`, if set. A failure
    /// is logged: the next start then begins without them.
    pub fn save_snapshot(&self) {
        let Some(path) = &self.snapshot_path else {
            return;
        };
        // One write at a time: the drain's end and a SIGINT may both get here.
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let Some(snapshot) = self.live.load().state.snapshot() else {
            return;
        };
        match snapshot.write(path) {
            Ok(()) => tracing::info!(
                path = %path.display(),
                records = snapshot.len(),
                "dedup snapshot written"
            ),
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "cannot write the dedup snapshot")
            }
        }
    }
}

/// Pingora's signals, with what hookgate does first: fail `/readyz` (SIGTERM, SIGQUIT) and save
/// the snapshot for the process taking over (SIGQUIT).
struct Signals(Arc<Lifecycle>);

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let signal = pingora::server::UnixShutdownSignalWatch.recv().await;
        match signal {
            // The SIGINT watch first, so that once `/readyz` fails a SIGINT is never lost.
            ShutdownSignal::GracefulUpgrade => {
                self.0.clone().exit_on_interrupt();
                self.0.readiness.start_draining();
                self.0.write_snapshot().await;
            }
            ShutdownSignal::GracefulTerminate => {
                self.0.clone().exit_on_interrupt();
                self.0.readiness.start_draining();
            }
            // Exit here rather than through Pingora's runtime shutdown, which can hang with
            // per-thread runtimes (`work_stealing: false`, Pingora 0.9.1): a listener belongs
            // to the reactor of the thread that built it, but its accept loop may run on
            // another; once the first thread's runtime stops, that accept loop gets "runtime
            // is being shut down" at every turn without ever yielding, so its own thread never
            // sees its shutdown order and the process never exits.
            ShutdownSignal::FastShutdown => self.0.clone().exit_now("SIGINT").await,
        }
        signal
    }
}

impl Lifecycle {
    /// Ends the process without draining: the requests in progress are cut off, so their
    /// senders retry and the retries are forwarded. The snapshot is written first; a delivery
    /// committed between its write and the exit (microseconds) may be forwarded once more on a
    /// retry, never lost.
    async fn exit_now(self: Arc<Self>, why: &'static str) -> ! {
        match self.drain.pending() {
            0 => tracing::info!("{why}: exiting without draining; nothing was in progress"),
            cut => tracing::warn!(in_progress = cut, "{why}: exiting without draining"),
        }
        self.write_snapshot().await;
        std::process::exit(0)
    }

    /// [`Lifecycle::save_snapshot`] off the async threads.
    async fn write_snapshot(self: &Arc<Self>) {
        let lifecycle = self.clone();
        let _ = tokio::task::spawn_blocking(move || lifecycle.save_snapshot()).await;
    }

    /// During the drain of SIGTERM or SIGQUIT, a SIGINT (an operator's Ctrl-C that won't
    /// wait) ends it at once. Pingora no longer listens for signals by then.
    fn exit_on_interrupt(self: Arc<Self>) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut interrupt) = signal(SignalKind::interrupt()) else {
            return; // only if the signal driver is gone; the drain ends on its own anyway
        };
        tokio::spawn(async move {
            if interrupt.recv().await.is_some() {
                self.exit_now("SIGINT during the drain").await
            }
        });
    }
}

/// The snapshot at `path`, if there is a usable one. A missing file is a first start; a
/// damaged or foreign one is logged and ignored (the gateway starts without it).
fn read_snapshot(path: &Path) -> Option<Snapshot> {
    match Snapshot::read(path) {
        Ok(Some(snapshot)) => {
            tracing::info!(path = %path.display(), records = snapshot.len(), "dedup snapshot loaded");
            Some(snapshot)
        }
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring the dedup snapshot; starting without it");
            None
        }
    }
}
