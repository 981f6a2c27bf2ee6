//! The seam to the upstream: hand a verified request to the receiver app and relay its answer.
//!
//! Today this sends the request synchronously over a pooled HTTP/1.1 connection (TLS for an
//! `https://` upstream). It is written by hand (Pingora's connector, not its proxy loop)
//! because Pingora replays a body read in `request_filter` only up to 64 KiB; this one path
//! serves every size, so there is no second, rarely exercised path for large bodies. A later
//! asynchronous mode replaces [`Forwarder::send`] and [`Forwarder::relay`] with "enqueue, then
//! answer 202", behind the same calls.
//!
//! `wire` writes the upstream request and the sender's answer header; `pool` keeps the idle
//! upstream connections (Pingora's connector makes them).

mod pool;
mod wire;

use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::connectors::TransportConnector;
use pingora::protocols::http::v1::client::HttpSession;
use pingora::proxy::Session;
use pingora::upstreams::peer::{HttpPeer, Peer};

use crate::config::Upstream;
use crate::events::Stamp;
use crate::verify::Verified;
use pool::IdlePool;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of the upstream's response body is read before the delivery counts as answered:
/// all of the small answers webhooks get. An answer that breaks off before that is a failed
/// delivery (502), not a truncated one relayed to the sender.
const ANSWER_HEAD: usize = 64 * 1024;

/// Why a delivery failed before the upstream gave a whole answer (its header and the first
/// [`ANSWER_HEAD`] bytes of its body).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Connecting, writing the request, or reading the answer failed (refused, reset, closed).
    #[error("upstream unreachable or broke the exchange: {0}")]
    Unavailable(String),
    /// No connection, or no answer, within `upstream_timeout`.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
}

/// A request the upstream has answered: its response header and the head of its body are in,
/// nothing is relayed yet.
pub struct Exchange {
    session: HttpSession,
    /// The first [`ANSWER_HEAD`] bytes of the body (all of it, usually), read before settling.
    head: Vec<Bytes>,
    reuse_hash: u64,
    /// The upstream's status code.
    pub status: u16,
    /// Time from starting the exchange to the upstream's response header.
    pub upstream_time: Duration,
}

impl Exchange {
    /// Whether the upstream accepted the delivery (2xx).
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// One upstream of a route.
#[derive(Debug, Clone)]
pub struct Target {
    peer: HttpPeer,
    /// The peer's `reuse_hash`, the key of its idle connections.
    reuse_hash: u64,
    /// `Host` for requests that arrived without one or an `:authority` (HTTP/1.0): the
    /// address of a plain upstream, the SNI name (and port) of an https one.
    authority: String,
}

impl Target {
    /// The upstream `upstream`; `timeout` bounds connecting (the TLS handshake included).
    ///
    /// An `https://` upstream is verified as its `tls` says: against its `ca` bundle or the
    /// system's roots, with `sni` sent and checked against the certificate's names (Pingora's
    /// `verify_cert` and `verify_hostname`). A certificate that fails is a failed connection:
    /// the sender gets 502 and nothing is sent.
    pub fn new(upstream: &Upstream, timeout: Duration) -> Self {
        let addr = upstream.addr;
        let mut peer = match &upstream.tls {
            None => HttpPeer::new(addr, false, String::new()),
            Some(tls) => {
                let mut peer = HttpPeer::new(addr, true, tls.sni.clone());
                peer.options.verify_cert = tls.verify;
                peer.options.verify_hostname = tls.verify;
                if let Some(ca) = &tls.ca {
                    peer.options.ca = Some(ca.certs());
                    // Pingora's pool key leaves the CA out: without this, a connection
                    // verified against another route's CA could be reused here.
                    peer.group_key = ca.pool_key();
                }
                // The forwarding path speaks HTTP/1.1 (`v1::client::HttpSession`).
                peer.options.alpn = pingora::protocols::ALPN::H1;
                peer
            }
        };
        peer.options.connection_timeout = Some(timeout);
        peer.options.idle_timeout = Some(POOL_IDLE_TIMEOUT);
        // An https upstream is addressed by the name its certificate carries (the SNI), so a
        // `Host` it has to make up matches it; a plain one by its address, as before.
        let authority = match &upstream.tls {
            Some(tls) if !tls.sni.is_empty() => match addr.port() {
                443 => tls.sni.clone(),
                port => format!("{}:{port}", tls.sni),
            },
            _ => addr.to_string(),
        };
        let reuse_hash = peer.reuse_hash();
        Self {
            peer,
            reuse_hash,
            authority,
        }
    }
}

/// Sends verified requests upstream over pooled connections.
pub struct Forwarder {
    /// Makes new connections (TCP, and TLS for an https upstream); reuse is `idle`'s.
    transport: TransportConnector,
    idle: IdlePool,
    timeout: Duration,
}

impl Forwarder {
    /// A forwarder keeping up to `pool_size` idle connections per upstream, giving each
    /// upstream `timeout` to accept a connection and send its response header.
    pub fn new(pool_size: usize, timeout: Duration) -> Self {
        Self {
            transport: TransportConnector::new(None),
            idle: IdlePool::new(pool_size, POOL_IDLE_TIMEOUT),
            timeout,
        }
    }

    /// Closes idle upstream connections that expired or that their upstream closed (called
    /// by the maintenance job every second).
    pub fn sweep_idle(&self) {
        self.idle.sweep();
    }

    /// Idle upstream connections kept for reuse.
    pub fn idle_connections(&self) -> usize {
        self.idle.len()
    }

    /// Sends `verified` to `target` with the downstream request's method, path, query and
    /// end-to-end headers, and the gateway's `stamp`, and waits for the upstream's response header and the first
    /// [`ANSWER_HEAD`] bytes of its body (or all of it, if shorter).
    ///
    /// `Err` means the upstream gave no complete answer: none at all, or one that broke off
    /// within its head (the caller answers 502 or 504, and releases the delivery). The caller
    /// then relays the answer with [`Forwarder::relay`].
    pub async fn send(
        &self,
        target: &Target,
        downstream: &Session,
        verified: &Verified,
        stamp: &Stamp<'_>,
    ) -> Result<Exchange, ForwardError> {
        let body = verified.body();
        let request = request_bytes(downstream, target, stamp, body)?;
        let started = Instant::now();
        let mut session = tokio::time::timeout(self.timeout, self.exchange(target, &request, body))
            .await
            .map_err(|_| ForwardError::Timeout(self.timeout))??;
        let status = session
            .resp_header()
            .map(|h| h.status.as_u16())
            .unwrap_or(502);
        let upstream_time = started.elapsed();
        let head = self.read_answer_head(&mut session).await?;
        Ok(Exchange {
            session,
            head,
            reuse_hash: target.reuse_hash,
            status,
            upstream_time,
        })
    }

    /// Reads the body until its end or [`ANSWER_HEAD`] bytes, each read under the timeout.
    async fn read_answer_head(
        &self,
        upstream: &mut HttpSession,
    ) -> Result<Vec<Bytes>, ForwardError> {
        let mut head = Vec::new();
        let mut len = 0;
        while len < ANSWER_HEAD && !upstream.is_body_done() {
            match tokio::time::timeout(self.timeout, upstream.read_body_bytes()).await {
                Ok(Ok(Some(chunk))) => {
                    len += chunk.len();
                    head.push(chunk);
                }
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    return Err(ForwardError::Unavailable(format!(
                        "the answer broke off: {e}"
                    )))
                }
                Err(_) => return Err(ForwardError::Timeout(self.timeout)),
            }
        }
        Ok(head)
    }

    /// Streams the upstream's response to the sender, then returns the upstream connection to
    /// the pool if it can be reused. Returns whether the whole response reached the sender;
    /// when it did not, the sender's connection is closed.
    pub async fn relay(&self, mut exchange: Exchange, downstream: &mut Session) -> bool {
        let head = std::mem::take(&mut exchange.head);
        let upstream = &mut exchange.session;
        let relayed = self.stream_response(upstream, head, downstream).await;
        if relayed && upstream.is_body_done() {
            upstream.respect_keepalive();
            if let Some(stream) = exchange.session.reuse().await {
                self.idle.put(exchange.reuse_hash, stream);
            }
        } else {
            // Close at once: Pingora would otherwise end a chunked response with its final
            // chunk, and the sender would take a truncated answer for a complete one.
            downstream.set_keepalive(None);
            downstream.shutdown().await;
        }
        relayed
    }

    /// Sends the request and reads the response header. A pooled connection may have been
    /// closed by the upstream meanwhile; such a failure is retried once on a new connection.
    async fn exchange(
        &self,
        target: &Target,
        request: &[u8],
        body: &Bytes,
    ) -> Result<HttpSession, ForwardError> {
        if let Some(stream) = self.idle.take(target.reuse_hash) {
            match send(stream, request, body, &target.peer).await {
                Ok(session) => return Ok(session),
                // The upstream closed the idle connection before reading this request: safe to
                // send again on a new one. Anything else (a malformed answer, a timeout) may
                // follow a request the upstream already processed, so it is not retried.
                Err(e) if closed_while_idle(&e) => {}
                Err(e) => return Err(ForwardError::Unavailable(e.to_string())),
            }
        }
        // A connection that is never accepted is cut by `send`'s timeout, which started first
        // (the peer's own connect timeout is the same length): 504, not 502.
        let stream = self
            .transport
            .new_stream(&target.peer)
            .await
            .map_err(|e| ForwardError::Unavailable(e.to_string()))?;
        send(stream, request, body, &target.peer)
            .await
            .map_err(|e| ForwardError::Unavailable(e.to_string()))
    }

    /// Streams the upstream's response (its header, the `head` already read, then the rest)
    /// to the sender. Returns whether all of it got there.
    async fn stream_response(
        &self,
        upstream: &mut HttpSession,
        head: Vec<Bytes>,
        downstream: &mut Session,
    ) -> bool {
        let Some(header) = upstream.resp_header().map(wire::response_for_sender) else {
            return false;
        };
        if downstream
            .write_response_header(Box::new(header), false)
            .await
            .is_err()
        {
            return false;
        }
        for chunk in head {
            let write = downstream.write_response_body(Some(chunk), false);
            if !matches!(tokio::time::timeout(self.timeout, write).await, Ok(Ok(()))) {
                return false;
            }
        }
        loop {
            let chunk = match tokio::time::timeout(self.timeout, upstream.read_body_bytes()).await {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(_)) | Err(_) => return false,
            };
            let done = chunk.is_none();
            // A sender that stops reading must not hold the upstream connection for ever.
            let write = downstream.write_response_body(chunk, done);
            if !matches!(tokio::time::timeout(self.timeout, write).await, Ok(Ok(()))) {
                return false;
            }
            if done {
                return true;
            }
        }
    }
}

/// Bodies up to this size are copied behind the head and leave in one write.
const COALESCE_LIMIT: usize = 64 * 1024;

/// The request's head on the wire ([`wire::write_request_head`]), followed by the body when it
/// is small enough to share the head's write: a webhook then costs the upstream one `send`,
/// where Pingora's `HttpSession` would write and flush the head and the body separately
/// (measured: a third of the gateway's sends per forwarded request). Larger bodies are written
/// after it.
fn request_bytes(
    downstream: &Session,
    target: &Target,
    stamp: &Stamp<'_>,
    body: &Bytes,
) -> Result<Vec<u8>, ForwardError> {
    let inline = body.len() <= COALESCE_LIMIT;
    let mut request = Vec::with_capacity(1024 + if inline { body.len() } else { 0 });
    let head = wire::Head {
        fallback_host: &target.authority,
        client: downstream
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip()),
        stamp,
        body_len: body.len(),
    };
    wire::write_request_head(downstream.req_header(), &head, &mut request)
        .map_err(|_| ForwardError::Unavailable("the request line cannot be written".to_string()))?;
    if inline {
        request.extend_from_slice(body);
    }
    Ok(request)
}

/// Writes the request (`head` from [`request_bytes`], then `body` unless the head holds it
/// already) on `stream`, then reads the response header. The head says `Content-Length` and
/// no `Connection`, `Upgrade` or `Transfer-Encoding` (all removed), and the method is POST, so
/// the session needs nothing of the request to read the answer.
async fn send(
    mut stream: pingora::protocols::Stream,
    head: &[u8],
    body: &Bytes,
    peer: &HttpPeer,
) -> pingora::Result<HttpSession> {
    use pingora::{ErrorType, OrErr};
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(head)
        .await
        .or_err(ErrorType::WriteError, "while writing the request")?;
    if body.len() > COALESCE_LIMIT {
        stream
            .write_all(body)
            .await
            .or_err(ErrorType::WriteError, "while writing the request body")?;
    }
    stream
        .flush()
        .await
        .or_err(ErrorType::WriteError, "while flushing the request")?;
    let mut session = HttpSession::new_with_options(stream, peer);
    // Skip informational responses (a 100 Continue the upstream sends unasked).
    loop {
        session.read_response().await?;
        match session.resp_header().map(|h| h.status.as_u16()) {
            Some(100..=199) => continue,
            _ => return Ok(session),
        }
    }
}

/// Whether a failed exchange on a pooled connection is the upstream having closed it while it
/// sat idle: the connection broke on write, or closed before any response byte (Pingora marks
/// those reads as retryable on reused connections).
fn closed_while_idle(e: &pingora::Error) -> bool {
    use pingora::{ErrorType, RetryType};
    match e.etype() {
        ErrorType::WriteError => true,
        ErrorType::ConnectionClosed | ErrorType::ReadError => {
            matches!(e.retry, RetryType::ReusedOnly | RetryType::Decided(true))
        }
        _ => false,
    }
}
