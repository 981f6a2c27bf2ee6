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

/// Whether the gateway can take traffic: every proxy listener (plain and TLS) accepts
/// connections, the config watcher runs, the state backend answers (with Redis and
/// `fail_closed`; see `State::is_ready`), and the process is not shutting down.
pub struct Readiness {
    plain: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    listening: AtomicBool,
    draining: AtomicBool,
    /// Set once SIGHUP is handled and the config file watched: before that a SIGHUP would
    /// end the process (its default action) and a changed file would go unnoticed.
    reloadable: AtomicBool,
    live: Live,
}

impl Readiness {
    /// Readiness of the plain listener at `plain` and the TLS listener at `tls` (at least one
    /// is set), over the state of the runtime `live` serves.
    pub fn new(plain: Option<SocketAddr>, tls: Option<SocketAddr>, live: Live) -> Self {
        Self {
            plain,
            tls,
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

    /// True once every proxy listener has accepted a probe (checked on demand, then
    /// remembered): a TCP connection to the plain one, a completed TLS handshake with the TLS
    /// one (a bare TCP connection closed mid-handshake would be logged as a failed handshake).
    async fn is_listening(&self) -> bool {
        if self.listening.load(Ordering::Relaxed) {
            return true;
        }
        let plain = match self.plain {
            Some(addr) => {
                within_probe_time(async { tokio::net::TcpStream::connect(addr).await.is_ok() })
                    .await
            }
            None => true,
        };
        let tls = match self.tls {
            Some(addr) if plain => within_probe_time(tls_handshake(addr)).await,
            _ => plain,
        };
        let ok = plain && tls;
        if ok {
            self.listening.store(true, Ordering::Relaxed);
        }
        ok
    }
}

async fn within_probe_time(probe: impl std::future::Future<Output = bool>) -> bool {
    tokio::time::timeout(Duration::from_millis(500), probe)
        .await
        .unwrap_or(false)
}

/// Whether a TLS handshake with `addr` completes. The certificate is not checked: this only
/// asks whether the listener serves one.
async fn tls_handshake(addr: SocketAddr) -> bool {
    use pingora::tls::ssl::{SslConnector, SslMethod, SslVerifyMode};
    use pingora::tls::tokio_ssl::SslStream;
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let ssl = SslConnector::builder(SslMethod::tls_client()).and_then(|mut builder| {
        builder.set_verify(SslVerifyMode::NONE);
        builder.build().configure()?.into_ssl("localhost")
    });
    let Ok(mut stream) = ssl.and_then(|ssl| SslStream::new(ssl, tcp)) else {
        return false;
    };
    let connected = std::pin::Pin::new(&mut stream).connect().await.is_ok();
    if connected {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
    }
    connected
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
