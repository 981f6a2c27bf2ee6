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

/// Whether the gateway can take traffic: the proxy listener accepts connections.
pub struct Readiness {
    proxy_addr: SocketAddr,
    listening: AtomicBool,
}

impl Readiness {
    pub fn new(proxy_addr: SocketAddr) -> Self {
        Self {
            proxy_addr,
            listening: AtomicBool::new(false),
        }
    }

    /// True once a connection to the proxy listener has succeeded (checked on demand, then
    /// remembered).
    pub async fn is_ready(&self) -> bool {
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
            "/readyz" => {
                if self.readiness.is_ready().await {
                    text(200, "text/plain", "ready\n")
                } else {
                    text(
                        503,
                        "text/plain",
                        "proxy listener not accepting connections yet\n",
                    )
                }
            }
            _ => text(
                404,
                "text/plain",
                "not found: try /metrics, /healthz or /readyz\n",
            ),
        }
    }
}
