//! The seam to the upstream: hand a verified request to the receiver app and relay its answer.
//!
//! Today this sends the request synchronously over a pooled HTTP/1.1 connection (TLS for an
//! `https://` upstream). It is written by hand (Pingora's connector, not its proxy loop)
//! because Pingora replays a body read in `request_filter` only up to 64 KiB; this one path
//! serves every size, so there is no second, rarely exercised path for large bodies. A later
//! asynchronous mode replaces [`Forwarder::send`] and [`Forwarder::relay`] with "enqueue, then
//! answer 202", behind the same calls.

use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::client::HttpSession;
use pingora::proxy::Session;
use pingora::upstreams::peer::{HttpPeer, Peer};

use crate::config::Upstream;
use crate::verify::Verified;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Hop-by-hop headers (RFC 9110 §7.6.1) and headers whose meaning the gateway re-establishes
/// itself: none of them is passed on in either direction.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Why a delivery failed before the upstream gave a response header.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Connecting, writing the request, or reading the response header failed.
    #[error("upstream unreachable or broke the exchange: {0}")]
    Unavailable(String),
    /// No response header within `upstream_timeout`.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
}

/// A request the upstream has answered: its response header is in, its body not yet relayed.
pub struct Exchange {
    session: HttpSession,
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
        Self { peer, authority }
    }
}

/// Sends verified requests upstream over pooled connections.
pub struct Forwarder {
    transport: TransportConnector,
    timeout: Duration,
}

impl Forwarder {
    /// A forwarder keeping up to `pool_size` idle upstream connections, giving each upstream
    /// `timeout` to accept a connection and send its response header.
    pub fn new(pool_size: usize, timeout: Duration) -> Self {
        Self {
            transport: TransportConnector::new(Some(ConnectorOptions::new(pool_size))),
            timeout,
        }
    }

    /// Sends `verified` to `target` with the downstream request's method, path, query and
    /// end-to-end headers, and waits for the upstream's response header.
    ///
    /// `Err` means the upstream gave no response header (the caller answers 502 or 504). The
    /// caller then relays the answer with [`Forwarder::relay`].
    pub async fn send(
        &self,
        target: &Target,
        downstream: &Session,
        verified: &Verified,
    ) -> Result<Exchange, ForwardError> {
        let header = upstream_request(downstream, target, verified.body().len());
        let started = Instant::now();
        let session =
            tokio::time::timeout(self.timeout, self.exchange(target, header, verified.body()))
                .await
                .map_err(|_| ForwardError::Timeout(self.timeout))??;
        let status = session
            .resp_header()
            .map(|h| h.status.as_u16())
            .unwrap_or(502);
        Ok(Exchange {
            session,
            reuse_hash: target.peer.reuse_hash(),
            status,
            upstream_time: started.elapsed(),
        })
    }

    /// Streams the upstream's response to the sender, then returns the upstream connection to
    /// the pool if it can be reused. Returns whether the whole response reached the sender;
    /// when it did not, the sender's connection is closed.
    pub async fn relay(&self, mut exchange: Exchange, downstream: &mut Session) -> bool {
        let upstream = &mut exchange.session;
        let relayed = self.stream_response(upstream, downstream).await;
        if relayed && upstream.is_body_done() {
            upstream.respect_keepalive();
            if let Some(stream) = exchange.session.reuse().await {
                self.transport
                    .release_stream(stream, exchange.reuse_hash, Some(POOL_IDLE_TIMEOUT));
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
        header: RequestHeader,
        body: &Bytes,
    ) -> Result<HttpSession, ForwardError> {
        if let Some(stream) = self.transport.reused_stream(&target.peer).await {
            let mut session = HttpSession::new_with_options(stream, &target.peer);
            match send(&mut session, header.clone(), body).await {
                Ok(()) => return Ok(session),
                // The upstream closed the idle connection before reading this request: safe to
                // send again on a new one. Anything else (a malformed answer, a timeout) may
                // follow a request the upstream already processed, so it is not retried.
                Err(e) if closed_while_idle(&e) => {}
                Err(e) => return Err(ForwardError::Unavailable(e.to_string())),
            }
        }
        let stream = self
            .transport
            .new_stream(&target.peer)
            .await
            .map_err(|e| ForwardError::Unavailable(e.to_string()))?;
        let mut session = HttpSession::new_with_options(stream, &target.peer);
        send(&mut session, header, body)
            .await
            .map_err(|e| ForwardError::Unavailable(e.to_string()))?;
        Ok(session)
    }

    /// Streams the upstream's response to the sender. Returns whether all of it got there.
    async fn stream_response(&self, upstream: &mut HttpSession, downstream: &mut Session) -> bool {
        let Some(header) = upstream.resp_header().map(response_for_sender) else {
            return false;
        };
        if downstream
            .write_response_header(Box::new(header), false)
            .await
            .is_err()
        {
            return false;
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

/// Writes the request header and the whole body, then reads the response header.
async fn send(
    session: &mut HttpSession,
    header: RequestHeader,
    body: &Bytes,
) -> pingora::Result<()> {
    session.write_request_header(Box::new(header)).await?;
    if !body.is_empty() {
        session.write_body(body).await?;
    }
    session.finish_body().await?;
    // Skip informational responses (a 100 Continue the upstream sends unasked).
    loop {
        session.read_response().await?;
        match session.resp_header().map(|h| h.status.as_u16()) {
            Some(100..=199) => continue,
            _ => return Ok(()),
        }
    }
}

/// The request as the upstream sees it: the sender's method, path, query and end-to-end
/// headers, framed by a `Content-Length` of the verified body.
///
/// Headers a sender names in `Connection` are not removed (as nginx does not): they could
/// otherwise strip the signature, `Host` or the gateway's own headers from the forwarded request.
fn upstream_request(downstream: &Session, target: &Target, body_len: usize) -> RequestHeader {
    let mut header = downstream.req_header().clone();
    header.set_version(http::Version::HTTP_11);
    for name in HOP_BY_HOP {
        header.remove_header(name);
    }
    if !header.headers.contains_key(http::header::HOST) {
        // An HTTP/2 sender names the host in `:authority` (RFC 9113 §8.3.1), which becomes
        // `Host` as it would in HTTP/1.1; HTTP/1.0 senders may omit it altogether, and
        // HTTP/1.1 upstreams require one.
        let authority = downstream.req_header().uri.authority().map(|a| a.as_str());
        let host = authority.unwrap_or(target.authority.as_str()).to_string();
        let _ = header.insert_header(http::header::HOST, host);
    }
    // The request line carries `raw_path()`: the target as received over HTTP/1, the
    // `:path` (path and query) of an HTTP/2 request.
    // The body is complete: the upstream has nothing to continue.
    header.remove_header("expect");
    let _ = header.insert_header("content-length", body_len.to_string());
    if let Some(ip) = downstream
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
    {
        let forwarded = match header
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prior) => format!("{prior}, {ip}"),
            None => ip.to_string(),
        };
        let _ = header.insert_header("x-forwarded-for", forwarded);
    }
    header
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

/// The upstream's response header as the sender sees it: hop-by-hop headers removed.
fn response_for_sender(upstream: &ResponseHeader) -> ResponseHeader {
    let mut header = upstream.clone();
    for name in connection_tokens(&upstream.headers) {
        header.remove_header(&name);
    }
    for name in HOP_BY_HOP {
        // Transfer-Encoding stays: it tells Pingora to re-chunk a body of unknown length.
        if name != "transfer-encoding" {
            header.remove_header(name);
        }
    }
    header
}

/// The header names listed in `Connection` headers (RFC 9110 §7.6.1): hop-by-hop as well.
fn connection_tokens(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}
