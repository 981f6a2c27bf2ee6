//! The admin listener: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::runtime::Live;

/// Whether the gateway can take traffic: the proxy listener accepts connections, the state
/// backend answers (with Redis and `fail_closed`; see [`State::is_ready`]), and the process is
/// not shutting down.
pub struct Readiness {
    proxy_addr: SocketAddr,
    listening: AtomicBool,
    draining: AtomicBool,
    /// Set once SIGHUP is handled and the config file watched: before that a SIGHUP would
    /// end the process (its default action) and a changed file would go unnoticed.
    reloadable: AtomicBool,
    live: Live,
}

impl Readiness {
    pub fn new(proxy_addr: SocketAddr, live: Live) -> Self {
        Self {
            proxy_addr,
            listening: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            reloadable: AtomicBool::new(false),
            live,
        }
    }

    /// The config watcher is running: SIGHUP and file changes reload from now on.
    pub fn set_reloadable(&self) {
        self.reloadable.store(true, Ordering::Relaxed);
    }

    /// From now on `/readyz` fails: the process is draining its requests before it exits (or
    /// hands its sockets to a new process), and load balancers should send no more.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// `Ok` when the gateway can take traffic; otherwise why not, for the `/readyz` body.
    /// The state is checked on every call (a Redis PING): it can go away and come back.
    pub async fn check(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Relaxed) {
            return Err("shutting down: draining the requests in progress\n");
        }
        if !self.reloadable.load(Ordering::Relaxed) {
            return Err("config watcher (SIGHUP, file changes) not started yet\n");
        }
        if !self.is_listening().await {
            return Err("proxy listener not accepting connections yet\n");
        }
        let state = self.live.load().state.clone();
        if !state.is_ready().await {
            return Err("state backend (Redis) unreachable: requests are answered 503\n");
        }
        Ok(())
    }

    /// Whether [`Readiness::check`] passes.
    pub async fn is_ready(&self) -> bool {
        self.check().await.is_ok()
    }

    /// True once a connection to the proxy listener has succeeded (checked on demand, then
    /// remembered).
    async fn is_listening(&self) -> bool {
        if self.listening.load(Ordering::Relaxed) {
            return true;
        }
        let probe = tokio::net::TcpStream::connect(self.proxy_addr);
        let ok = matches!(
            tokio::time::timeout(Duration::from_millis(500), probe).await,
            Ok(Ok(_))
        );
        if ok {
            self.listening.store(true, Ordering::Relaxed);
        }
        ok
    }
}

/// The admin HTTP application.
pub struct Admin {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

impl Admin {
    pub fn new(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Self {
        Self { metrics, readiness }
    }
}

fn text(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response<Vec<u8>> {
    let body = body.into();
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Content-Length", body.len())
        .body(body)
        .expect("valid static response")
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/metrics" => text(200, "text/plain; version=0.0.4", self.metrics.render()),
            "/healthz" => text(200, "text/plain", "ok\n"),
            "/readyz" => match self.readiness.check().await {
                Ok(()) => text(200, "text/plain", "ready\n"),
                Err(why) => text(503, "text/plain", why),
            },
            _ => text(
                404,
                "text/plain",
                "not found: try /metrics, /healthz or /readyz\n",
            ),
        }
    }
}
