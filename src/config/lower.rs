//! Lowering: the validated file schema becomes the internal model.
//!
//! Values were validated while they were deserialized (see [`super::value`]); what is left here
//! is resolving defaults and per-route overrides, so it cannot fail.

use super::file;
use super::model::{Config, Route, VerifyConfig};
use super::model::{HmacAlgorithm, HmacScheme, Scheme, SignatureEncoding, SignedContent};
use super::value::SchemeName;

pub(crate) fn lower(file: file::Config) -> Config {
    let file::Config {
        listen,
        admin_listen,
        threads,
        max_body_bytes,
        upstream_timeout,
        body_timeout,
        routes,
    } = file;
    let routes = routes
        .0
        .into_iter()
        .map(|route| Route {
            name: route.name.0,
            path: route.path.0,
            upstream: route.upstream.0,
            max_body_bytes: route.max_body_bytes.unwrap_or(max_body_bytes).0,
            body_timeout: route.body_timeout.unwrap_or(body_timeout).0,
            verify: lower_verify(route.verify),
            dedup: None,
            replay: None,
            rate_limit: None,
        })
        .collect();
    Config {
        listen: listen.0,
        admin_listen: admin_listen.0,
        threads: threads.0,
        upstream_timeout: upstream_timeout.0,
        routes,
        tiers: crate::ratelimit::Tiers::builtin(),
        unverified_per_ip: None,
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
