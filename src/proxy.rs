//! The gateway's `ProxyHttp` implementation: a request's whole path, top to bottom, in
//! [`Gateway::handle`]. Each step is one call into the module that owns it.
//!
//! Everything happens in `request_filter`, the only Pingora phase that runs before the upstream
//! is contacted (pingora#343): a rejected request causes nothing upstream, not even a connection.
//! The filter always answers the sender itself and returns `Ok(true)`, so Pingora's own proxy
//! loop (and its 64 KiB body replay limit) is never used.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::HeaderMap;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};

use crate::body::{self, BodyError};
use crate::clock::Clock;
use crate::conn;
use crate::dedup::{Claim, DeliveryKey, MissingId};
use crate::events::{Admitted, Refused, Stamp};
use crate::forward::ForwardError;
use crate::framing;
use crate::metrics::{Metrics, Outcome, RouteMetrics, NO_ROUTE};
use crate::ratelimit::{Decision, KeyValue, LimitKey, LimitKeyHash, RateLimit};
use crate::respond::Answer;
use crate::route;
use crate::runtime::{Live, RouteRuntime, Runtime};
use crate::state::{Admission, Ask, State};
use crate::verify::{Verified, VerifyError};

/// The gateway: the serving [`Runtime`] (swapped whole on reload) and what outlives reloads.
pub struct Gateway {
    live: Live,
    clock: Arc<dyn Clock>,
    no_route_metrics: RouteMetrics,
}

/// What one request went through, for metrics and the access log.
pub struct RequestCtx {
    started: Instant,
    /// The runtime the request started on: it finishes on it, whatever a reload swaps in.
    runtime: Option<Arc<Runtime>>,
    route: Option<usize>,
    outcome: Option<Outcome>,
    status: u16,
    /// Time spent on the upstream, for a request that was forwarded (or tried).
    upstream: Option<Duration>,
    /// The keyed hash of the delivery ID, for a route that deduplicates.
    delivery: Option<DeliveryKey>,
}

/// A step that stopped the request: what to answer, and why.
type Stop = (Outcome, Answer);

impl Gateway {
    /// A gateway serving whatever runtime `live` holds.
    pub fn new(live: Live, metrics: &Metrics, clock: Arc<dyn Clock>) -> Self {
        Self {
            live,
            clock,
            no_route_metrics: metrics.route(NO_ROUTE),
        }
    }

    /// A request's whole path through the gateway. Each step either passes it on or stops it
    /// with an answer; only a verified, admitted request reaches `forward`.
    async fn handle(
        &self,
        rt: &Runtime,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<(), Stop> {
        framing::check(session.req_header(), || session.to_h1_raw())
            .map_err(|why| stop(Outcome::BadRequest, why))?;
        let path = session.req_header().uri.path();
        route::check_path(path).map_err(|why| stop(Outcome::BadRequest, why))?;
        let index = (rt.router.find(path))
            .ok_or_else(|| stop(Outcome::NoRoute, "no route for this path"))?;
        ctx.route = Some(index);
        let route = &rt.routes[index];
        if session.req_header().method != http::Method::POST {
            return Err(stop(
                Outcome::MethodNotAllowed,
                "webhooks are delivered with POST",
            ));
        }
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        self.check_unverified(rt, client).await?;

        let body = read_body(session, route).await?;
        let verified =
            (route.verifier.verify(&session.req_header().headers, body)).map_err(verify_stop)?;
        if let Some(window) = &route.replay {
            (window.check_body(verified.body(), self.clock.now()))
                .map_err(|e| stop(Outcome::StaleEvent, &e.to_string()))?;
        }
        let event = check_event(route, &session.req_header().headers, verified.body())?;
        let headers = &session.req_header().headers;
        let claim = self
            .admit(rt, route, headers, client, &verified, ctx)
            .await?;

        // From here on, dropping `claim` (an error, a panic, a cancelled future) releases it.
        let stamp = Stamp::new(route.scheme, event.event.as_deref());
        let target = route.target_of(&event);
        let forwarding = Instant::now();
        let sent = rt.forwarder.send(target, session, &verified, &stamp).await;
        ctx.upstream = Some(
            sent.as_ref()
                .map_or(forwarding.elapsed(), |exchange| exchange.upstream_time),
        );
        let exchange = sent.map_err(|e| forward_stop(&route.name, e))?;
        if let Some(claim) = claim {
            // Settled before relaying, so a slow sender can't outlast the claim's lease.
            let settled = match exchange.accepted() {
                true => claim.commit().await,
                false => claim.release().await,
            };
            if let Err(e) = settled {
                tracing::warn!(route = %route.name, error = %e, "could not settle a dedup claim; its lease will expire it");
            }
        }
        route
            .metrics
            .record_upstream(exchange.upstream_time.as_secs_f64());
        ctx.outcome = Some(Outcome::Forwarded);
        ctx.status = exchange.status;
        rt.forwarder.relay(exchange, session).await;
        Ok(())
    }

    /// The optional per-IP limit on requests not yet verified (abuse shedding).
    async fn check_unverified(&self, rt: &Runtime, client: Option<IpAddr>) -> Result<(), Stop> {
        let (Some(limit), Some(ip)) = (rt.unverified_per_ip, client) else {
            return Ok(());
        };
        let key = rt.state.unverified_ip_key(ip);
        match rt.state.check_unverified(key, limit).await {
            Ok(decision) if decision.is_allowed() => Ok(()),
            Ok(decision) => Err((Outcome::IpLimited, limited(&decision, Outcome::IpLimited))),
            Err(e) => Err(state_unavailable(e)),
        }
    }

    /// The route's tier limit and dedup claim, decided together in one call to the state (one
    /// round trip with Redis). Only verified requests get here. `Ok(None)`: forward without a
    /// claim (the route doesn't deduplicate, or the ID is missing and the route forwards such
    /// requests). A limited request claims nothing, so its retry goes through once it passes.
    async fn admit(
        &self,
        rt: &Runtime,
        route: &RouteRuntime,
        headers: &HeaderMap,
        client: Option<IpAddr>,
        verified: &Verified,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Claim>, Stop> {
        let limit = route.rate_limit.as_ref().map(|limit| {
            let key = limit_key(&rt.state, route, limit, headers, client);
            (key, limit.per_minute)
        });
        let mut claim = None;
        let mut missing = None;
        if let Some(policy) = &route.dedup {
            match policy.delivery_id(headers, verified) {
                Some(id) => {
                    let key = rt.state.delivery_keys.key(&route.name, id.as_bytes());
                    ctx.delivery = Some(key);
                    claim = Some((key, rt.claim_lease));
                }
                None => missing = Some(policy.missing),
            }
        }
        let ask = Ask {
            route: route.index,
            limit,
            claim,
        };
        match rt.state.admit(ask).await {
            // A missing ID is refused after the limit, which still counts the request.
            Ok(Admission::Admitted(_)) if missing == Some(MissingId::Reject) => Err(stop(
                Outcome::MissingDeliveryId,
                "this route needs a delivery ID to deduplicate",
            )),
            Ok(Admission::Admitted(claim)) => Ok(claim),
            Ok(Admission::Limited(decision)) => Err((
                Outcome::RateLimited,
                limited(&decision, Outcome::RateLimited),
            )),
            Ok(Admission::InFlight) => Err(stop(
                Outcome::InFlight,
                "this delivery is being forwarded right now; retry shortly",
            )),
            Ok(Admission::Duplicate) => Err(stop(
                Outcome::Duplicate,
                "this delivery was already forwarded and accepted",
            )),
            Err(e) => Err(state_unavailable(e)),
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    /// None: Pingora's default adds a (disabled) response compression module, which would
    /// still cost every request a context and a filter call. hookgate relays the upstream's
    /// answer as it is.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            started: Instant::now(),
            runtime: None,
            route: None,
            outcome: None,
            status: 0,
            upstream: None,
            delivery: None,
        }
    }

    /// Runs [`Gateway::handle`] and answers the sender when a step stopped the request.
    /// Always answers the sender itself and returns `Ok(true)`.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        // The head is in: the connection's header and idle deadlines pause until `logging`.
        conn::request_started(session);
        let rt = self.live.load_full();
        ctx.runtime = Some(rt.clone());
        if let Err((outcome, answer)) = self.handle(&rt, session, ctx).await {
            ctx.outcome = Some(outcome);
            ctx.status = answer.status;
            if !session.is_body_done() {
                // The rest of the body is never read: the connection can't carry another request.
                session.set_keepalive(None);
            }
            if let Err(e) = answer.send(session).await {
                tracing::debug!(error = %e, "could not answer the sender");
            }
        }
        Ok(true)
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

    /// Records the request's outcome and duration, and writes the access log line: route,
    /// outcome, status, durations, and the delivery as a short keyed hash (never the ID, a
    /// secret, a signature or the body).
    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Self::CTX) {
        conn::request_finished(session);
        let elapsed = ctx.started.elapsed();
        // A request that never reached our filter (a framing error Pingora caught) counts as bad.
        let outcome = ctx.outcome.unwrap_or(Outcome::BadRequest);
        let route = (ctx.route.zip(ctx.runtime.as_deref())).map(|(i, rt)| &rt.routes[i]);
        let (name, metrics) = match route {
            Some(route) => (route.name.as_str(), &route.metrics),
            None => (NO_ROUTE, &self.no_route_metrics),
        };
        metrics.record(outcome, elapsed.as_secs_f64());
        tracing::info!(
            target: "hookgate::access",
            route = name,
            outcome = outcome.as_str(),
            status = ctx.status,
            duration_ms = elapsed.as_micros() as f64 / 1000.0,
            upstream_ms = ctx.upstream.map(|d| d.as_micros() as f64 / 1000.0),
            delivery = ctx.delivery.map(|k| tracing::field::display(ShortKey(k))),
            client = %session.client_addr().map(|a| a.to_string()).unwrap_or_default(),
            error = error.map(|e| e.etype().as_str()).unwrap_or(""),
        );
    }
}

/// The key the route's tier limit counts this request under.
fn limit_key(
    state: &State,
    route: &RouteRuntime,
    limit: &RateLimit,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> LimitKeyHash {
    let value = match &limit.key {
        LimitKey::Route => KeyValue::Route,
        // Requests without the header share one bucket.
        LimitKey::Header(name) => {
            KeyValue::Header(headers.get(name).map_or(&[][..], |v| v.as_bytes()))
        }
        LimitKey::ClientIp => match client {
            Some(ip) => KeyValue::ClientIp(ip),
            None => KeyValue::Route,
        },
    };
    state.limit_keys.route_key(&route.name, value)
}

/// A delivery's keyed hash as the access log shows it: its first 64 bits in hex. It tells
/// deliveries (and a sender's retries) apart without revealing the ID; with Redis it is the
/// start of the record's key.
struct ShortKey(DeliveryKey);

impl std::fmt::Display for ShortKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", (self.0.as_u128() >> 64) as u64)
    }
}

/// The route's `events` step: the event type, the allow-list, the schema and the event's
/// upstream (`crate::events`). A route without an `events` block does nothing here.
fn check_event(route: &RouteRuntime, headers: &HeaderMap, body: &[u8]) -> Result<Admitted, Stop> {
    let Some((events, _)) = &route.events else {
        return Ok(Admitted::default());
    };
    let refused = match events.admit(headers, body) {
        Ok(admitted) => return Ok(admitted),
        Err(refused) => refused,
    };
    Err(match refused {
        Refused::Filtered { event: Some(event) } => stop(
            Outcome::Filtered,
            &format!("event `{event}` is not forwarded by this route"),
        ),
        Refused::Filtered { event: None } => stop(
            Outcome::Filtered,
            "this request names no event type, so this route does not forward it",
        ),
        Refused::Invalid(invalid) => {
            let answer = Answer::for_outcome(Outcome::InvalidPayload, invalid.to_string())
                .with_path(invalid.path);
            (Outcome::InvalidPayload, answer)
        }
    })
}

/// The size cap (from `Content-Length` before reading), `100 Continue` for senders waiting
/// for it, then the whole body under the cap and the route's total deadline.
async fn read_body(session: &mut Session, route: &RouteRuntime) -> Result<bytes::Bytes, Stop> {
    let cap = route.max_body_bytes;
    if body::declared_length(session).is_some_and(|len| len > cap) {
        let message = format!("the body exceeds this route's limit of {cap} bytes");
        return Err(stop(Outcome::BodyTooLarge, &message));
    }
    // The sender waits for this before sending a large body (curl does above 1 MiB).
    if is_expect_continue(session) {
        // Pingora turns keep-alive off when it writes the 100 (the body is unread then);
        // the body is read in full below, so the connection stays reusable.
        let keepalive = session.get_keepalive();
        if session.write_continue_response().await.is_err() {
            return Err(stop(Outcome::BadRequest, "the sender went away"));
        }
        session.set_keepalive(keepalive);
    }
    (body::read_capped(session, cap, route.body_timeout).await).map_err(|e| match e {
        BodyError::TooLarge { .. } => stop(Outcome::BodyTooLarge, &e.to_string()),
        BodyError::Timeout(_) => stop(Outcome::BodyTimeout, &e.to_string()),
        BodyError::Read(_) => stop(Outcome::BadRequest, "the body could not be read"),
    })
}

/// Why verification failed, as the sender is told.
fn verify_stop(e: VerifyError) -> Stop {
    let outcome = if e.is_missing() {
        Outcome::MissingSignature
    } else if e.is_stale() {
        Outcome::StaleEvent
    } else {
        Outcome::InvalidSignature
    };
    stop(outcome, &e.to_string())
}

/// The upstream gave no response header: 504 when it was too slow, 502 otherwise.
fn forward_stop(route: &str, e: ForwardError) -> Stop {
    match e {
        ForwardError::Timeout(_) => stop(
            Outcome::UpstreamTimeout,
            "the upstream did not answer in time",
        ),
        ForwardError::Unavailable(e) => {
            tracing::warn!(route, error = %e, "upstream unavailable");
            stop(
                Outcome::UpstreamError,
                "the upstream is unreachable or failed",
            )
        }
    }
}

/// A stop with the standard answer of `outcome`.
fn stop(outcome: Outcome, message: &str) -> Stop {
    (outcome, Answer::for_outcome(outcome, message))
}

/// The state backend failed: fail closed, the sender retries later.
fn state_unavailable(error: impl std::fmt::Display) -> Stop {
    tracing::warn!(%error, "state backend unavailable");
    stop(
        Outcome::StateUnavailable,
        "the gateway cannot check this delivery right now; retry later",
    )
}

/// The 429 answer for a denied rate-limit decision, with `Retry-After` and the `RateLimit-*`
/// headers (draft-ietf-httpapi-ratelimit-headers).
fn limited(decision: &Decision, outcome: Outcome) -> Answer {
    let retry_after = decision.retry_after_secs().map_or(1, |s| s.get());
    let message = format!(
        "rate limit of {} requests per minute exceeded; retry in {retry_after} s",
        decision.limit
    );
    Answer::for_outcome(outcome, message)
        .with_header("Retry-After", retry_after.to_string())
        .with_header("RateLimit-Limit", decision.limit.to_string())
        .with_header("RateLimit-Remaining", decision.remaining.to_string())
        .with_header("RateLimit-Reset", decision.reset_secs.to_string())
}

fn is_expect_continue(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}
