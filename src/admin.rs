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
use crate::state::State;

/// Whether the gateway can take traffic: every proxy listener (plain and TLS) accepts
/// connections, and the state backend answers (with Redis and `fail_closed`; see
/// [`State::is_ready`]).
pub struct Readiness {
    proxy_addrs: Vec<SocketAddr>,
    listening: AtomicBool,
    state: Arc<State>,
}

impl Readiness {
    /// Readiness of the proxy listeners at `proxy_addrs` over `state`.
    pub fn new(proxy_addrs: Vec<SocketAddr>, state: Arc<State>) -> Self {
        Self {
            proxy_addrs,
            listening: AtomicBool::new(false),
            state,
        }
    }

    /// `Ok` when the gateway can take traffic; otherwise why not, for the `/readyz` body.
    /// The state is checked on every call (a Redis PING): it can go away and come back.
    pub async fn check(&self) -> Result<(), &'static str> {
        if !self.is_listening().await {
            return Err("proxy listener not accepting connections yet\n");
        }
        if !self.state.is_ready().await {
            return Err("state backend (Redis) unreachable: requests are answered 503\n");
        }
        Ok(())
    }

    /// Whether [`Readiness::check`] passes.
    pub async fn is_ready(&self) -> bool {
        self.check().await.is_ok()
    }

    /// True once a TCP connection to every proxy listener has succeeded (checked on demand,
    /// then remembered). A TLS listener is probed with a bare TCP connection too: it accepts
    /// once it is bound.
    async fn is_listening(&self) -> bool {
        if self.listening.load(Ordering::Relaxed) {
            return true;
        }
        let mut ok = true;
        for addr in &self.proxy_addrs {
            let probe = tokio::net::TcpStream::connect(addr);
            ok &= matches!(
                tokio::time::timeout(Duration::from_millis(500), probe).await,
                Ok(Ok(_))
            );
        }
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
