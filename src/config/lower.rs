//! Lowering: the validated file schema becomes the internal model.
//!
//! Values were validated while they were deserialized (see [`super::value`]); what is left here
//! is resolving defaults and per-route overrides, and the checks that need the whole file: a
//! route's `tier` must exist (the top-level `tiers` may come after `routes`), `rate_limit_key`
//! needs `tier`, and a `dedup` block without an ID source needs a scheme that defines one
//! (`verify` may come after `dedup`). Those fail with [`Deferred`] errors, all of them, so that
//! `config::parse`, which places them at their keys by reading the file again, reports the
//! first in file order.

use std::sync::Arc;

use super::context::{Deferred, RouteKey};
use super::file;
use super::model::{Config, Route, VerifyConfig};
use super::model::{DedupPolicy, IdSource, LimitKey, RateLimit, ReplayWindow, Tiers};
use super::model::{HmacAlgorithm, HmacScheme, Scheme, SignatureEncoding, SignedContent};
use super::tls::Misfit;
use super::value::{RateLimitKey, SchemeName, TierRef};
use crate::verify::DeliveryIdSource;

pub(crate) fn lower(file: file::Config) -> Result<Config, Vec<Deferred>> {
    let file::Config {
        listen,
        listen_tls,
        admin_listen,
        threads,
        max_body_bytes,
        upstream_timeout,
        body_timeout,
        header_timeout,
        idle_timeout,
        drain_timeout,
        routes,
        tiers,
        unverified_per_ip,
        state,
    } = file;
    let tiers = tiers.0;
    let mut lowered = Vec::with_capacity(routes.0.len());
    let mut errors = Vec::new();
    for (index, route) in routes.0.into_iter().enumerate() {
        let mut failed = |key, message| {
            errors.push(Deferred {
                route: index,
                key,
                message,
            })
        };
        let verify = lower_verify(route.verify);
        let rate_limit = lower_rate_limit(&tiers, route.tier, route.rate_limit_key)
            .map_err(|(key, message)| failed(key, message));
        let dedup = route
            .dedup
            .map(|dedup| lower_dedup(dedup, &verify))
            .transpose()
            .map_err(|message| failed(RouteKey::Dedup, message));
        let upstream = super::tls::combine(route.upstream.0, route.upstream_tls.map(|t| t.0))
            .map_err(|misfit| match misfit {
                Misfit::TlsOnPlainHttp(m) => failed(RouteKey::UpstreamTls, m),
                Misfit::IpWithoutSni(m) => failed(RouteKey::Upstream, m),
            });
        let (Ok(rate_limit), Ok(dedup), Ok(upstream)) = (rate_limit, dedup, upstream) else {
            continue;
        };
        let events = route.events.map(|events| events.lower(&verify.scheme));
        lowered.push(Route {
            name: route.name.0,
            path: route.path.0,
            upstream,
            max_body_bytes: route.max_body_bytes.unwrap_or(max_body_bytes).0,
            body_timeout: route.body_timeout.unwrap_or(body_timeout).0,
            verify,
            dedup,
            replay: route.replay.map(|replay| ReplayWindow {
                max_age: replay.max_age.0,
                max_skew: replay.max_skew.0,
            }),
            rate_limit,
            events,
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let listen_tls = listen_tls.map(|tls| tls.0);
    // The default plain listener only when no listener is configured at all.
    let listen = match (listen, &listen_tls) {
        (Some(listen), _) => Some(listen.0),
        (None, None) => Some(file::defaults::LISTEN),
        (None, Some(_)) => None,
    };
    Ok(Config {
        listen,
        listen_tls,
        admin_listen: admin_listen.0,
        threads: threads.0,
        upstream_timeout: upstream_timeout.0,
        header_timeout: header_timeout.0,
        idle_timeout: idle_timeout.0,
        drain_timeout: drain_timeout.0,
        routes: lowered,
        tiers,
        unverified_per_ip: unverified_per_ip.map(|limit| limit.0),
        state: state.map(|state| state.0).unwrap_or_default(),
    })
}

/// A route's `tier` and `rate_limit_key` (default `route`).
fn lower_rate_limit(
    tiers: &Tiers,
    tier: Option<TierRef>,
    key: Option<RateLimitKey>,
) -> Result<Option<RateLimit>, (RouteKey, String)> {
    match (tier, key) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err((
            RouteKey::RateLimitKey,
            "`rate_limit_key` applies only to a route with a `tier`: add `tier` or remove \
             `rate_limit_key`"
                .to_string(),
        )),
        (Some(tier), key) => {
            let key = key.map_or(LimitKey::Route, |key| key.0);
            RateLimit::resolve(tiers, &tier.0, key)
                .map(Some)
                .map_err(|message| (RouteKey::Tier, message))
        }
    }
}

/// A route's `dedup` block; without `header`, `json` or `body_hash`, the ID source is the
/// default of the route's scheme, as its verifier states it.
fn lower_dedup(dedup: file::Dedup, verify: &VerifyConfig) -> Result<DedupPolicy, String> {
    let source = match dedup.source {
        Some(source) => source,
        None => scheme_delivery_id(verify)?,
    };
    Ok(DedupPolicy {
        source,
        ttl: dedup.ttl.0,
        capacity: dedup.capacity.0,
        missing: dedup.missing.0,
    })
}

/// Where the senders of `verify`'s scheme put a delivery ID.
fn scheme_delivery_id(verify: &VerifyConfig) -> Result<IdSource, String> {
    // The clock is never read: only the verifier's `default_delivery_id` is asked.
    let clock: Arc<dyn crate::clock::Clock> = crate::clock::system();
    match crate::verify::build(verify, clock).default_delivery_id() {
        DeliveryIdSource::Header(name) => Ok(IdSource::Header(name)),
        DeliveryIdSource::Signed => Ok(IdSource::Signed),
        DeliveryIdSource::JsonPointer(pointer) => Ok(IdSource::JsonPointer(pointer)),
        DeliveryIdSource::None => Err(format!(
            "scheme `{}` defines no delivery ID, so this `dedup` block must say where to find \
             one: set `header` (a request header), `json` (a JSON pointer into the body, e.g. \
             `/id`) or `body_hash: true` (the SHA-256 of the body)",
            verify.scheme.name()
        )),
    }
}

/// A route's `verify` block: the scheme with its options' defaults, the signature header, and
/// the tolerance of schemes that sign a timestamp.
fn lower_verify(verify: file::Verify) -> VerifyConfig {
    let file::Verify {
        scheme,
        header,
        secrets,
        tolerance,
        algorithm,
        encoding,
        prefix,
        signed_content,
        timestamp_header,
    } = verify;
    let scheme = match scheme {
        SchemeName::HmacSha256 => Scheme::HmacSha256,
        SchemeName::StandardWebhooks => Scheme::StandardWebhooks,
        SchemeName::GitHub => Scheme::GitHub,
        SchemeName::Stripe => Scheme::Stripe,
        SchemeName::Shopify => Scheme::Shopify,
        SchemeName::Slack => Scheme::Slack,
        SchemeName::Hmac => Scheme::Hmac(HmacScheme {
            algorithm: algorithm.map_or(HmacAlgorithm::Sha256, |a| a.0),
            encoding: encoding.map_or(SignatureEncoding::Hex, |e| e.0),
            prefix: prefix.map(|p| p.0).unwrap_or_default(),
            signed_content: signed_content.map_or_else(SignedContent::body_only, |t| t.0),
            timestamp_header: timestamp_header.map(|h| h.0),
        }),
    };
    // `file::Verify` guarantees a header for `hmac-sha256` and `hmac`, and none for the others.
    let header = scheme
        .fixed_header()
        .or(header.map(|h| h.0))
        .unwrap_or_else(|| http::HeaderName::from_static("x-webhook-signature"));
    let tolerance = scheme
        .signs_timestamp()
        .then(|| tolerance.map_or(file::defaults::VERIFY_TOLERANCE, |t| t.0));
    VerifyConfig {
        scheme,
        header,
        secrets: secrets.0,
        tolerance,
    }
}
