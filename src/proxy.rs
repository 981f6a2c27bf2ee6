//! The gateway's `ProxyHttp` implementation: a request's whole path, top to bottom, in
//! [`Gateway::request_filter`]. Each step is one call into the module that owns it.
//!
//! Everything happens in `request_filter`, the only Pingora phase that runs before the upstream
//! is contacted (pingora#343): a rejected request causes nothing upstream, not even a connection.
//! The filter always answers the sender itself and returns `Ok(true)`, so Pingora's own proxy
//! loop (and its 64 KiB body replay limit) is never used.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};

use crate::body::{self, BodyError};
use crate::config::Config;
use crate::forward::{ForwardError, Forwarder, Target};
use crate::framing;
use crate::metrics::{Metrics, Outcome, RouteMetrics, NO_ROUTE};
use crate::respond::Answer;
use crate::route::Router;
use crate::verify::{self, Verifier};

/// Per-process upstream connection pool size.
const UPSTREAM_POOL_SIZE: usize = 256;

/// One route as the proxy runs it: its settings and everything built from them at start.
struct RouteRuntime {
    name: String,
    max_body_bytes: u64,
    body_timeout: std::time::Duration,
    verifier: Box<dyn Verifier>,
    target: Target,
    metrics: RouteMetrics,
}

/// The gateway: routes, their verifiers and upstreams, and the forwarder.
pub struct Gateway {
    router: Router,
    routes: Vec<RouteRuntime>,
    forwarder: Forwarder,
    no_route_metrics: RouteMetrics,
}

/// What one request went through, for metrics and the access log.
pub struct RequestCtx {
    started: Instant,
    route: Option<usize>,
    outcome: Option<Outcome>,
    status: u16,
}

impl Gateway {
    /// Builds every route's verifier, upstream target and metric handles.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        let routes = config
            .routes
            .iter()
            .map(|r| RouteRuntime {
                name: r.name.clone(),
                max_body_bytes: r.max_body_bytes,
                body_timeout: r.body_timeout,
                verifier: verify::build(&r.verify, crate::clock::system()),
                target: Target::new(r.upstream.addr, config.upstream_timeout),
                metrics: metrics.route(&r.name),
            })
            .collect();
        Self {
            router: Router::new(config.routes.iter().map(|r| &r.path)),
            routes,
            forwarder: Forwarder::new(UPSTREAM_POOL_SIZE, config.upstream_timeout),
            no_route_metrics: metrics.route(NO_ROUTE),
        }
    }

    /// Answers the sender on the gateway's behalf and records why.
    async fn answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        answer: Answer,
        outcome: Outcome,
    ) -> Result<bool> {
        ctx.outcome = Some(outcome);
        ctx.status = answer.status;
        if !session.is_body_done() {
            // The rest of the body is never read: this connection can't carry another request.
            session.set_keepalive(None);
        }
        if let Err(e) = answer.send(session).await {
            tracing::debug!(error = %e, "could not answer the sender");
        }
        Ok(true)
    }

    async fn reject(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        outcome: Outcome,
        message: impl Into<String>,
    ) -> Result<bool> {
        self.answer(session, ctx, Answer::for_outcome(outcome, message), outcome)
            .await
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            started: Instant::now(),
            route: None,
            outcome: None,
            status: 0,
        }
    }

    /// framing → route → method → size → body → verify → forward. Always answers and returns `Ok(true)`.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        if let Err(why) = framing::check(session.req_header(), || session.to_h1_raw()) {
            return self.reject(session, ctx, Outcome::BadRequest, why).await;
        }
        let Some(index) = self.router.find(session.req_header().uri.path()) else {
            return self
                .reject(session, ctx, Outcome::NoRoute, "no route for this path")
                .await;
        };
        ctx.route = Some(index);
        let route = &self.routes[index];

        if session.req_header().method != http::Method::POST {
            return self
                .reject(
                    session,
                    ctx,
                    Outcome::MethodNotAllowed,
                    "webhooks are delivered with POST",
                )
                .await;
        }
        if body::declared_length(session).is_some_and(|len| len > route.max_body_bytes) {
            let message = format!(
                "the body exceeds this route's limit of {} bytes",
                route.max_body_bytes
            );
            return self
                .reject(session, ctx, Outcome::BodyTooLarge, message)
                .await;
        }
        if is_expect_continue(session) {
            // The sender waits for this before sending a large body (curl does above 1 MiB).
            if session.write_continue_response().await.is_err() {
                return self
                    .reject(session, ctx, Outcome::BadRequest, "the sender went away")
                    .await;
            }
        }

        let body = match body::read_capped(session, route.max_body_bytes, route.body_timeout).await
        {
            Ok(body) => body,
            Err(e @ BodyError::TooLarge { .. }) => {
                return self
                    .reject(session, ctx, Outcome::BodyTooLarge, e.to_string())
                    .await
            }
            Err(e @ BodyError::Timeout(_)) => {
                return self
                    .reject(session, ctx, Outcome::BodyTimeout, e.to_string())
                    .await
            }
            Err(BodyError::Read(_)) => {
                return self
                    .reject(
                        session,
                        ctx,
                        Outcome::BadRequest,
                        "the body could not be read",
                    )
                    .await
            }
        };

        let verified = match route.verifier.verify(&session.req_header().headers, body) {
            Ok(verified) => verified,
            Err(e) => {
                let outcome = if e.is_missing() {
                    Outcome::MissingSignature
                } else if e.is_stale() {
                    Outcome::StaleEvent
                } else {
                    Outcome::InvalidSignature
                };
                return self.reject(session, ctx, outcome, e.to_string()).await;
            }
        };

        match self
            .forwarder
            .deliver(&route.target, session, &verified)
            .await
        {
            Ok(delivered) => {
                route
                    .metrics
                    .record_upstream(delivered.upstream_time.as_secs_f64());
                ctx.outcome = Some(Outcome::Forwarded);
                ctx.status = delivered.status;
                Ok(true)
            }
            Err(ForwardError::Timeout(_)) => {
                self.reject(
                    session,
                    ctx,
                    Outcome::UpstreamTimeout,
                    "the upstream did not answer in time",
                )
                .await
            }
            Err(ForwardError::Unavailable(e)) => {
                tracing::warn!(route = %route.name, error = %e, "upstream unavailable");
                self.reject(
                    session,
                    ctx,
                    Outcome::UpstreamError,
                    "the upstream is unreachable or failed",
                )
                .await
            }
        }
    }

    /// Never reached: `request_filter` answers every request itself.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        Error::e_explain(
            ErrorType::InternalError,
            "hookgate answers every request in request_filter",
        )
    }

    /// Records the request's outcome and duration, and writes the access log line.
    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Self::CTX) {
        let elapsed = ctx.started.elapsed();
        // A request that never reached our filter (a framing error Pingora caught) counts as bad.
        let outcome = ctx.outcome.unwrap_or(Outcome::BadRequest);
        let (name, metrics) = match ctx.route {
            Some(i) => (self.routes[i].name.as_str(), &self.routes[i].metrics),
            None => (NO_ROUTE, &self.no_route_metrics),
        };
        metrics.record(outcome, elapsed.as_secs_f64());
        tracing::info!(
            target: "hookgate::access",
            route = name,
            outcome = outcome.as_str(),
            status = ctx.status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            client = %session.client_addr().map(|a| a.to_string()).unwrap_or_default(),
            error = error.map(|e| e.etype().as_str()).unwrap_or(""),
        );
    }
}

fn is_expect_continue(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}
