//! Signature verification. The only way to obtain a [`Verified`] request is through a
//! [`Verifier`], and forwarding takes a `Verified`: no code path can forward an unverified body.
//!
//! One module per scheme, all behind the one [`Verifier`] trait; [`build`] picks the route's:
//!
//! | module                | scheme (`verify.scheme`) | signature header          |
//! |-----------------------|--------------------------|---------------------------|
//! | [`hmac_sha256`]       | `hmac-sha256` (default)  | `X-Webhook-Signature`     |
//! | [`standard_webhooks`] | `standard-webhooks`      | `webhook-signature`       |
//! | [`github`]            | `github`                 | `X-Hub-Signature-256`     |
//! | [`stripe`]            | `stripe`                 | `Stripe-Signature`        |
//! | [`shopify`]           | `shopify`                | `X-Shopify-Hmac-Sha256`   |
//! | [`slack`]             | `slack`                  | `X-Slack-Signature`       |
//! | [`generic`]           | `hmac`                   | configured                |
//!
//! Every scheme checks lengths before comparing and compares in constant time (`mac.rs`); keyed
//! HMAC states are computed once per secret when the verifier is built. Schemes that sign a
//! timestamp check it against the route's tolerance with an injectable [`Clock`]
//! (`timestamp.rs`), and only once the signature matched: [`VerifyError::Stale`] therefore
//! always means "genuine, but too old or too far ahead".
//!
//! The same modules sign requests the way each provider does ([`signed_headers`]), for
//! `hookgate sign`/`send` and for tests.

pub mod generic;
pub mod github;
pub mod hmac_sha256;
mod mac;
pub mod shopify;
pub mod slack;
pub mod standard_webhooks;
pub mod stripe;
mod timestamp;

#[cfg(test)]
mod tests;

pub use hmac_sha256::{sign, HmacSha256Verifier};

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName};

use crate::clock::Clock;
use crate::config::model::Scheme;
use crate::config::{Secret, VerifyConfig};

/// Why a request's signature was not accepted. None of the variants carries the expected
/// signature or any secret material, so they are safe to log and to answer with.
///
/// The proxy answers [`is_missing`](Self::is_missing) errors with `missing_signature`,
/// [`is_stale`](Self::is_stale) ones with `stale_event`, and every other one with
/// `invalid_signature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header is missing")]
    Missing,
    #[error("the signature header is empty")]
    Empty,
    #[error("the signature header was sent more than once")]
    Repeated,
    #[error("the signature is malformed (wrong prefix, syntax or encoding)")]
    Malformed,
    #[error("the signature has the wrong length")]
    WrongLength,
    #[error("the signature does not match the body")]
    Mismatch,
    /// A signature list (Standard Webhooks, Stripe, Slack) without one signature of the version
    /// this scheme verifies (`v1`, Slack's `v0`). Unknown versions never verify.
    #[error("the signature header holds no signature of a supported version")]
    NoKnownVersion,
    #[error("the signed timestamp header is missing, empty or repeated")]
    MissingTimestamp,
    /// Not a plain decimal number of seconds: a sign, a fraction, letters, spaces, or more than
    /// 64 bits.
    #[error("the signed timestamp is not a whole, non-negative number of seconds since the epoch")]
    BadTimestamp,
    #[error("the message ID header is missing, empty or repeated")]
    MissingId,
    /// A header named in the generic scheme's signed content (`{header:Name}`).
    #[error("a header that is part of the signed content is missing, empty or repeated")]
    MissingSignedHeader,
    /// The signature matched, but its signed timestamp is further from now than the tolerance,
    /// in either direction.
    #[error("the signed timestamp is outside the accepted tolerance")]
    Stale,
}

impl VerifyError {
    /// Missing (or empty) signatures are told apart from wrong ones in metrics and answers.
    pub fn is_missing(self) -> bool {
        matches!(self, Self::Missing | Self::Empty)
    }

    /// A correctly signed request whose timestamp is outside the tolerance: `stale_event`.
    pub fn is_stale(self) -> bool {
        matches!(self, Self::Stale)
    }
}

/// A request body whose signature was checked. Only this module can construct it.
#[derive(Debug, Clone)]
pub struct Verified {
    body: Bytes,
    signed_id: Option<Bytes>,
}

impl Verified {
    /// Only verifiers call this, after a successful check.
    fn new(body: Bytes) -> Self {
        Self {
            body,
            signed_id: None,
        }
    }

    /// Records the delivery ID the signature covers (Standard Webhooks signs `webhook-id` or
    /// `svix-id`, whichever family the request used).
    fn with_signed_id(mut self, id: &[u8]) -> Self {
        self.signed_id = Some(Bytes::copy_from_slice(id));
        self
    }

    /// The delivery ID covered by the signature, for schemes that sign one.
    pub fn signed_id(&self) -> Option<&[u8]> {
        self.signed_id.as_deref()
    }

    /// The exact bytes received, to be forwarded unchanged.
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

/// Where a scheme's senders put the delivery's unique ID: the default source for
/// deduplication, which a route's `dedup` block may override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryIdSource {
    /// This request header's value (`webhook-id`, `X-GitHub-Delivery`, ...).
    Header(HeaderName),
    /// The value at this JSON pointer (RFC 6901) in the body (Stripe's `/id`).
    JsonPointer(String),
    /// The ID the signature itself covers ([`Verified::signed_id`]): it cannot be swapped
    /// on a replayed request, unlike an unsigned header.
    Signed,
    /// The scheme defines no delivery ID.
    None,
}

/// A signature scheme with the secrets of one route.
pub trait Verifier: Send + Sync {
    /// Checks `body` against the signature in `headers`. On success, returns the body wrapped
    /// as [`Verified`]; on failure, says why without revealing what was expected.
    fn verify(&self, headers: &HeaderMap, body: Bytes) -> Result<Verified, VerifyError>;

    /// Where this scheme's senders put a delivery ID. By default: [`DeliveryIdSource::None`].
    fn default_delivery_id(&self) -> DeliveryIdSource {
        DeliveryIdSource::None
    }
}

/// The verifier of a route's `verify` settings. `clock` is what timestamped schemes compare
/// with (`crate::clock::system()` in production).
pub fn build(config: &VerifyConfig, clock: Arc<dyn Clock>) -> Box<dyn Verifier> {
    // The loader sets a tolerance exactly for timestamped schemes; a hand-built config without
    // one gets the default rather than no check at all.
    let tolerance = config
        .tolerance
        .unwrap_or(crate::config::defaults::VERIFY_TOLERANCE);
    let window = timestamp::Window::new(clock, tolerance);
    let secrets = &config.secrets;
    match &config.scheme {
        Scheme::HmacSha256 => Box::new(HmacSha256Verifier::new(config.header.clone(), secrets)),
        Scheme::StandardWebhooks => Box::new(standard_webhooks::StandardWebhooksVerifier::new(
            secrets, window,
        )),
        Scheme::GitHub => Box::new(github::GitHubVerifier::new(secrets)),
        Scheme::Stripe => Box::new(stripe::StripeVerifier::new(secrets, window)),
        Scheme::Shopify => Box::new(shopify::ShopifyVerifier::new(secrets)),
        Scheme::Slack => Box::new(slack::SlackVerifier::new(secrets, window)),
        Scheme::Hmac(scheme) => Box::new(generic::HmacVerifier::new(
            config.header.clone(),
            scheme,
            secrets,
            window,
        )),
    }
}

/// One delivery as a sender sees it before signing.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The exact body bytes.
    pub body: &'a [u8],
    /// When it is sent, in Unix seconds (for schemes that sign a timestamp).
    pub timestamp: u64,
    /// Its unique ID (for schemes that send one).
    pub id: &'a str,
    /// Other headers the request carries; the generic scheme's `{header:Name}` reads them.
    pub headers: &'a HeaderMap,
}

/// Why a request could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("{0}")]
    BadSecret(String),
    #[error("the signed content needs header `{0}`, which the request does not carry")]
    MissingHeader(HeaderName),
}

/// Every header a sender of `config.scheme` sets on `delivery`, signed with `secret`: the
/// signature, and the timestamp and delivery-ID headers the scheme defines. What
/// `hookgate sign --scheme` prints and `hookgate send --scheme` sends.
pub fn signed_headers(
    config: &VerifyConfig,
    secret: &Secret,
    delivery: &Delivery<'_>,
) -> Result<Vec<(HeaderName, String)>, SignError> {
    Ok(match &config.scheme {
        Scheme::HmacSha256 => hmac_sha256::signed_headers(&config.header, secret, delivery),
        Scheme::StandardWebhooks => standard_webhooks::signed_headers(secret, delivery)?,
        Scheme::GitHub => github::signed_headers(secret, delivery),
        Scheme::Stripe => stripe::signed_headers(secret, delivery),
        Scheme::Shopify => shopify::signed_headers(secret, delivery),
        Scheme::Slack => slack::signed_headers(secret, delivery),
        Scheme::Hmac(scheme) => generic::signed_headers(&config.header, scheme, secret, delivery)?,
    })
}

/// The one value of `name` in `headers`: rejects a missing, empty or repeated header.
fn single_header<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<&'h [u8], VerifyError> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(VerifyError::Missing)?;
    if values.next().is_some() {
        return Err(VerifyError::Repeated);
    }
    let value = value.as_bytes().trim_ascii();
    if value.is_empty() {
        return Err(VerifyError::Empty);
    }
    Ok(value)
}

/// The one value of a header that is signed but is not the signature (a timestamp, an ID):
/// missing, empty or repeated all give `error`.
fn signed_part<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
    error: VerifyError,
) -> Result<&'h [u8], VerifyError> {
    single_header(headers, name).map_err(|_| error)
}
