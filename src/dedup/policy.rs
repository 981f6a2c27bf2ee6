//! Per-route deduplication settings and finding a request's delivery ID.

use std::borrow::Cow;
use std::num::NonZeroUsize;
use std::time::Duration;

use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

use crate::verify::Verified;

/// How long a delivered ID is remembered by default: 24 hours, longer than the retry schedule
/// of the common senders (Stripe retries for 3 days in live mode, but most within hours).
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Records kept per route by the memory backend by default.
pub const DEFAULT_CAPACITY: NonZeroUsize = NonZeroUsize::new(1_000_000).unwrap();

/// Where a route's delivery ID comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSource {
    /// The value of this request header, as bytes (e.g. `webhook-id`, `X-GitHub-Delivery`).
    Header(HeaderName),
    /// The value at this JSON pointer (RFC 6901, e.g. `/id` or `/data/event_id`) in the body:
    /// a string as-is, a number as its decimal text.
    JsonPointer(String),
    /// The delivery ID the verified signature covers (Standard Webhooks' `webhook-id` or
    /// `svix-id`). Read from the verification result, not by [`extract_id`], which returns
    /// `None` for it.
    Signed,
    /// The SHA-256 of the body: identical bodies are the same delivery. For senders without
    /// an ID; a body that legitimately repeats is then dropped as a duplicate.
    BodyHash,
}

/// What to do with a request whose delivery ID is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingId {
    /// Refuse it (400): a route that deduplicates never forwards what it can't deduplicate.
    #[default]
    Reject,
    /// Forward it without deduplication.
    Forward,
}

/// A route's deduplication settings, as the config loader produces them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupPolicy {
    /// Where the delivery ID is read.
    pub source: IdSource,
    /// How long a delivered ID is remembered ([`DEFAULT_TTL`] by default).
    pub ttl: Duration,
    /// Records kept for this route by the memory backend ([`DEFAULT_CAPACITY`] by default).
    pub capacity: NonZeroUsize,
    /// What to do when a request has no ID ([`MissingId::Reject`] by default).
    pub missing: MissingId,
}

impl DedupPolicy {
    /// A policy reading IDs from `source`, with every other setting at its default.
    pub fn new(source: IdSource) -> Self {
        Self {
            source,
            ttl: DEFAULT_TTL,
            capacity: DEFAULT_CAPACITY,
            missing: MissingId::default(),
        }
    }

    /// The delivery ID of a verified request per [`DedupPolicy::source`]: taking a
    /// [`Verified`] request, only a verified request can claim an ID. See [`extract_id`].
    pub fn delivery_id<'a>(
        &self,
        headers: &'a HeaderMap,
        verified: &'a Verified,
    ) -> Option<DeliveryId<'a>> {
        match self.source {
            IdSource::Signed => verified
                .signed_id()
                .filter(|id| !id.is_empty())
                .map(DeliveryId::Header),
            _ => extract_id(&self.source, headers, verified.body()),
        }
    }

    /// Whether `capacity` is too small to remember every delivery for the whole TTL at
    /// `peak_rate` requests per second; see [`capacity_below_ttl`].
    pub fn capacity_below_ttl(&self, peak_rate: f64) -> bool {
        capacity_below_ttl(self.capacity.get(), self.ttl, peak_rate)
    }
}

/// A delivery ID as read from a request, borrowed where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryId<'a> {
    /// A header's value bytes.
    Header(&'a [u8]),
    /// A JSON string, or a number's decimal text.
    Json(Cow<'a, str>),
    /// The SHA-256 of the body.
    BodyHash([u8; 32]),
}

impl DeliveryId<'_> {
    /// The bytes that identify the delivery, to hash into a
    /// [`DeliveryKey`](super::DeliveryKey).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Header(bytes) => bytes,
            Self::Json(text) => text.as_bytes(),
            Self::BodyHash(digest) => digest,
        }
    }
}

/// Reads the delivery ID from a request's headers and body. `None` when it is missing: the
/// header is absent or empty, the body isn't JSON, the pointer leads nowhere or to something
/// other than a non-empty string or a number. A body hash is never missing.
pub fn extract_id<'a>(
    source: &IdSource,
    headers: &'a HeaderMap,
    body: &[u8],
) -> Option<DeliveryId<'a>> {
    match source {
        IdSource::Header(name) => {
            // A repeated header is ambiguous; the first value is the one senders set.
            let value = headers.get(name)?.as_bytes();
            (!value.is_empty()).then_some(DeliveryId::Header(value))
        }
        IdSource::JsonPointer(pointer) => {
            let document: serde_json::Value = serde_json::from_slice(body).ok()?;
            let text = match document.pointer(pointer)? {
                serde_json::Value::String(s) if !s.is_empty() => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some(DeliveryId::Json(Cow::Owned(text)))
        }
        IdSource::BodyHash => Some(DeliveryId::BodyHash(Sha256::digest(body).into())),
        // Only the verification result knows it: see `DedupPolicy::delivery_id`.
        IdSource::Signed => None,
    }
}

/// Records needed to remember every delivery for `ttl` at `peak_rate` requests per second.
pub fn entries_needed(ttl: Duration, peak_rate: f64) -> f64 {
    peak_rate.max(0.0) * ttl.as_secs_f64()
}

/// For `hookgate check`'s warning: whether `capacity` is below what `ttl` needs at
/// `peak_rate` requests per second (`capacity < rate * ttl_secs`). When it is, the oldest
/// delivered IDs are evicted before their TTL and late retries of them are forwarded again.
pub fn capacity_below_ttl(capacity: usize, ttl: Duration, peak_rate: f64) -> bool {
    (capacity as f64) < entries_needed(ttl, peak_rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn defaults() {
        let p = DedupPolicy::new(IdSource::BodyHash);
        assert_eq!(p.ttl, Duration::from_secs(86_400));
        assert_eq!(p.capacity.get(), 1_000_000);
        assert_eq!(p.missing, MissingId::Reject);
    }

    #[test]
    fn id_from_header() {
        let source = IdSource::Header(HeaderName::from_static("webhook-id"));
        let h = headers(&[("webhook-id", "msg_1"), ("webhook-id", "msg_2")]);
        let id = extract_id(&source, &h, b"{}").unwrap();
        assert_eq!(id, DeliveryId::Header(b"msg_1"));
        assert_eq!(id.as_bytes(), b"msg_1");

        assert_eq!(
            extract_id(&source, &HeaderMap::new(), b"{}"),
            None,
            "absent"
        );
        assert_eq!(
            extract_id(&source, &headers(&[("webhook-id", "")]), b""),
            None,
            "empty"
        );
        assert_eq!(extract_id(&source, &headers(&[("other", "x")]), b""), None);
    }

    #[test]
    fn id_from_json_pointer() {
        let h = HeaderMap::new();
        let at = |pointer: &str, body: &str| {
            extract_id(&IdSource::JsonPointer(pointer.into()), &h, body.as_bytes())
                .map(|id| id.as_bytes().to_vec())
        };
        assert_eq!(at("/id", r#"{"id":"evt_1"}"#).unwrap(), b"evt_1");
        assert_eq!(at("/data/n", r#"{"data":{"n":12345}}"#).unwrap(), b"12345");
        assert_eq!(at("/n", r#"{"n":-7}"#).unwrap(), b"-7");
        assert_eq!(at("/n", r#"{"n":1.5}"#).unwrap(), b"1.5");
        assert_eq!(at("/a/0", r#"{"a":["x"]}"#).unwrap(), b"x");

        for (pointer, body) in [
            ("/id", r#"{"other":1}"#),
            ("/id", r#"{"id":null}"#),
            ("/id", r#"{"id":true}"#),
            ("/id", r#"{"id":{"x":1}}"#),
            ("/id", r#"{"id":""}"#),
            ("/id", "not json"),
            ("/id", ""),
            ("id", r#"{"id":"x"}"#), // a pointer must start with '/'
        ] {
            assert_eq!(at(pointer, body), None, "{pointer} in {body}");
        }
    }

    #[test]
    fn id_from_body_hash() {
        let h = HeaderMap::new();
        let a = extract_id(&IdSource::BodyHash, &h, b"hello").unwrap();
        assert_eq!(
            a.as_bytes(),
            Sha256::digest(b"hello").as_slice(),
            "SHA-256 of the body"
        );
        assert_ne!(a, extract_id(&IdSource::BodyHash, &h, b"hello!").unwrap());
        assert!(extract_id(&IdSource::BodyHash, &h, b"").is_some());
    }

    #[test]
    fn capacity_warning() {
        let day = Duration::from_secs(86_400);
        // 10 req/s for a day needs 864,000 records.
        assert!(!capacity_below_ttl(1_000_000, day, 10.0));
        assert!(!capacity_below_ttl(864_000, day, 10.0));
        assert!(capacity_below_ttl(863_999, day, 10.0));
        assert!(capacity_below_ttl(1_000_000, day, 100.0));
        assert!(!capacity_below_ttl(1, day, 0.0));
        let mut p = DedupPolicy::new(IdSource::BodyHash);
        p.capacity = NonZeroUsize::new(1000).unwrap();
        p.ttl = Duration::from_secs(60);
        assert!(p.capacity_below_ttl(20.0));
        assert!(!p.capacity_below_ttl(16.0));
    }
}
