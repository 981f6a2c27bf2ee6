//! Deadlines on the sender's connection that Pingora does not enforce.
//!
//! Pingora bounds each *read* of a request head (60 s), not the head as a whole, so a sender
//! that trickles one byte at a time holds a connection open indefinitely; and once a
//! connection has carried a request it waits for the next one with no limit at all (the
//! keep-alive timeout it derives from an HTTP/1.1 request is "infinite"). hookgate wraps every
//! accepted connection in a [`Timed`] stream that enforces two deadlines on its reads:
//!
//! - `idle_timeout`: while no request is in progress (before the first request and between
//!   requests), the connection is closed when no byte arrives within it;
//! - `header_timeout`: from the first byte of a request, the whole head must arrive within it,
//!   or the connection is closed.
//!
//! The proxy tells the stream when a request's head has been parsed ([`request_started`]) and
//! when its answer is done ([`request_finished`]); in between, reads (the body) have no
//! deadline here: `body_timeout` bounds them (`crate::body`).
//!
//! It also keeps each connection's [`Place`] in the proxy's [`Drain`]: whether a request is
//! pending on it and whether one is in progress, so stopping the gateway neither drops a
//! request on its way nor cuts one off (`crate::drain`).
//!
//! The stream also sees the answers Pingora writes on its own, for a head it refused before
//! hookgate's code ran (a malformed header line, too many fields: a bare 400): it counts them
//! and writes their access-log line, so every request has one.
//!
//! (Pingora 0.9.1, `protocols/http/v1/server.rs`: `read_request_buf` times each read;
//! `respect_keepalive` makes an HTTP/1.1 connection's keep-alive wait "infinite".)

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use pingora::protocols::{SocketDigest, TimingDigest};
use pingora::proxy::{HttpProxy, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::drain::{Drain, Place};
use crate::metrics::{Outcome, RouteMetrics, NO_ROUTE};

/// The two connection deadlines (`header_timeout`, `idle_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Total time for a request head, from its first byte.
    pub header: Duration,
    /// Longest wait for the first byte of a request.
    pub idle: Duration,
}

/// Pingora's HTTP proxy service for `app`, with every connection under `deadlines` and in
/// `drain`. The heads Pingora refuses on its own are counted in `unrouted` (the `none` route's
/// metrics).
pub fn proxy_service<SV>(
    conf: &Arc<ServerConf>,
    app: SV,
    name: &str,
    deadlines: Deadlines,
    unrouted: RouteMetrics,
    drain: Arc<Drain>,
) -> Service<Guarded<HttpProxy<SV>>>
where
    SV: ProxyHttp + Send + Sync + 'static,
    SV::CTX: Send + Sync,
{
    let mut proxy = HttpProxy::new(app, conf.clone());
    proxy.handle_init_modules();
    let guarded = Guarded {
        inner: Arc::new(proxy),
        deadlines,
        unrouted: Arc::new(unrouted),
        drain,
    };
    Service::new(name.to_string(), guarded)
}

/// A server app whose connections are [`Timed`], and which drains them when it stops.
pub struct Guarded<A> {
    inner: Arc<A>,
    deadlines: Deadlines,
    unrouted: Arc<RouteMetrics>,
    drain: Arc<Drain>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let place = self.drain.connection();
        let timed = Timed::new(stream, self.deadlines, self.unrouted.clone(), place);
        self.inner.process_new(Box::new(timed), shutdown).await
    }

    /// The listeners are closed: the drain's steps, in order (`crate::drain`).
    async fn cleanup(&self) {
        let deadline = tokio::time::Instant::now() + self.drain.limit();
        self.drain.arrivals().await;
        // Pingora's proxy drops the connections waiting for a request.
        self.inner.cleanup().await;
        let done = self.drain.requests_done(deadline).await;
        self.drain.finish(done);
    }
}

/// Tells the connection of `session` that a request's head has been read: its reads have no
/// deadline until [`request_finished`]. Does nothing on a connection that is not [`Timed`].
pub fn request_started(session: &Session) {
    if let Some(timed) = timed(session) {
        timed.place.request_started();
    }
}

/// Tells the connection of `session` that its request is answered: it may now idle for
/// `idle_timeout` before the next request.
pub fn request_finished(session: &Session) {
    if let Some(timed) = timed(session) {
        timed.place.request_finished();
    }
}

fn timed(session: &Session) -> Option<&Timed> {
    let stream = session.as_downstream().stream()?;
    (**stream).as_any().downcast_ref::<Timed>()
}

/// Where a connection is between requests, as far as reading goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request is being handled: no deadline here.
    Busy,
    /// Waiting for a request's first byte, until the timer fires.
    Idle,
    /// Reading a request head, until the timer fires.
    Head,
}

/// A connection with the [`Deadlines`] on its reads. Everything else passes through.
pub struct Timed {
    inner: Stream,
    deadlines: Deadlines,
    phase: Phase,
    /// The deadline of the `Idle` or `Head` phase; one timer per connection, reset per phase.
    timer: Pin<Box<Sleep>>,
    /// When the current request's head started arriving.
    head_started: Instant,
    /// Where answers Pingora wrote on its own are counted.
    unrouted: Arc<RouteMetrics>,
    /// Whether such an answer was already recorded (Pingora closes the connection after it).
    answered_early: bool,
    /// Whether a request is pending, whether one is in progress (set by the proxy between a
    /// request's head and the end of its answer).
    place: Place,
}

impl Timed {
    fn new(inner: Stream, deadlines: Deadlines, unrouted: Arc<RouteMetrics>, place: Place) -> Self {
        Self {
            inner,
            deadlines,
            phase: Phase::Idle,
            timer: Box::pin(tokio::time::sleep(deadlines.idle)),
            head_started: Instant::now(),
            unrouted,
            answered_early: false,
            place,
        }
    }

    fn enter(&mut self, phase: Phase, limit: Duration) {
        self.phase = phase;
        let now = Instant::now();
        if phase == Phase::Head {
            self.head_started = now;
            self.place.head_started();
        }
        self.timer.as_mut().reset((now + limit).into());
    }

    /// Counts and logs an answer Pingora wrote outside a request hookgate handled: its answer
    /// to a head it refused (400; 405 for `CONNECT`). `written` starts with its status line.
    fn record_early_answer(&mut self, written: &[u8]) {
        self.answered_early = true;
        let status = (written.get(9..12))
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        let outcome = match status {
            405 => Outcome::MethodNotAllowed,
            _ => Outcome::BadRequest,
        };
        let elapsed = self.head_started.elapsed();
        self.unrouted.record(outcome, elapsed.as_secs_f64());
        let client = (self.inner.get_socket_digest())
            .and_then(|d| d.peer_addr().map(|a| a.to_string()))
            .unwrap_or_default();
        // The same fields as the proxy's access line (`Gateway::logging`).
        tracing::info!(
            target: "hookgate::access",
            route = NO_ROUTE,
            outcome = outcome.as_str(),
            status,
            duration_ms = elapsed.as_micros() as f64 / 1000.0,
            client = %client,
            error = "refused by Pingora's parser",
        );
    }
}

impl std::fmt::Debug for Timed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (f.debug_struct("Timed").field("inner", &self.inner))
            .field("phase", &self.phase)
            .finish()
    }
}

impl AsyncRead for Timed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.place.is_busy() {
            this.phase = Phase::Busy;
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if this.phase == Phase::Busy {
            // The previous request is answered: the idle period starts now.
            this.enter(Phase::Idle, this.deadlines.idle);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.phase == Phase::Idle {
                    this.enter(Phase::Head, this.deadlines.header);
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        if this.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        match this.phase {
            // End of file before any byte: Pingora closes the connection quietly.
            Phase::Idle | Phase::Busy => Poll::Ready(Ok(())),
            // Pingora logs it ("request head not complete in time") and closes the connection.
            Phase::Head => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not complete in time",
            ))),
        }
    }
}

impl AsyncWrite for Timed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Outside a request hookgate handles, only Pingora itself answers.
        if !this.place.is_busy() && !this.answered_early && buf.starts_with(b"HTTP/") {
            this.record_early_answer(buf);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs.iter().find(|b| !b.is_empty());
        if let Some(first) = first.filter(|b| b.starts_with(b"HTTP/")) {
            if !this.place.is_busy() && !this.answered_early {
                this.record_early_answer(first);
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Timed {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Timed {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Timed {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Timed {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Timed {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Timed {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Timed {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
