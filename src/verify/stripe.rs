//! Stripe: `Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>...][,v0=...]`.
//!
//! - Signed content: `{t}.{body}`, HMAC-SHA256 with the endpoint's `whsec_...` secret used as
//!   is (its UTF-8 bytes, not decoded).
//! - Any `v1` entry matching any secret passes (Stripe sends one per active secret while a
//!   secret is rolled). Other schemes (`v0`, test-mode) never verify; an unreadable `v1` entry
//!   is skipped, as Stripe's own libraries do.
//! - Exactly one `t`, within the tolerance (300 s, Stripe's default) of now.
//! - The delivery's ID is the event's `id` in the JSON body.

use bytes::Bytes;
use http::{HeaderMap, HeaderName};

use super::mac::{decode_hex, require_usable, Key};
use super::timestamp::{self, Window};
use super::{single_header, Delivery, DeliveryIdSource, Verified, Verifier, VerifyError};
use crate::config::Secret;

pub const SIGNATURE: HeaderName = HeaderName::from_static("stripe-signature");

const MAC_LEN: usize = 32;

/// Verifies `Stripe-Signature`.
pub struct StripeVerifier {
    keys: Vec<Key>,
    window: Window,
}

impl StripeVerifier {
    pub(super) fn new(secrets: &[Secret], window: Window) -> Self {
        Self {
            keys: secrets.iter().map(|s| Key::sha256(s.key_bytes())).collect(),
            window,
        }
    }
}

/// The `key=value` items of a `Stripe-Signature` value; `None` for an item without `=`.
fn items(value: &[u8]) -> impl Iterator<Item = Option<(&[u8], &[u8])>> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let eq = item.iter().position(|&b| b == b'=')?;
            Some((&item[..eq], &item[eq + 1..]))
        })
}

fn v1_entries(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    items(value)
        .flatten()
        .filter_map(|(k, v)| (k == b"v1").then_some(v))
}

impl Verifier for StripeVerifier {
    fn verify(&self, headers: &HeaderMap, body: Bytes) -> Result<Verified, VerifyError> {
        let value = single_header(headers, &SIGNATURE)?;
        let mut stamp = None;
        for item in items(value) {
            let (key, val) = item.ok_or(VerifyError::Malformed)?;
            if key == b"t" && stamp.replace(val).is_some() {
                // Two timestamps: which one was signed is ambiguous.
                return Err(VerifyError::Malformed);
            }
        }
        let stamp = stamp.ok_or(VerifyError::MissingTimestamp)?;
        let time = timestamp::parse(stamp)?;

        // Before any MAC: a `v1` entry must be there, and one must decode to a MAC.
        require_usable(v1_entries(value), |hex| decode_hex(hex, MAC_LEN))?;

        let matched = self.keys.iter().any(|key| {
            let expected = key.mac(&[stamp, b".", &body]);
            v1_entries(value)
                .any(|hex| decode_hex(hex, MAC_LEN).is_ok_and(|given| expected.matches(&given)))
        });
        if !matched {
            return Err(VerifyError::Mismatch);
        }
        self.window.check(time)?;
        Ok(Verified::new(body))
    }

    /// The event's `id` in the body (`/id`).
    fn default_delivery_id(&self) -> DeliveryIdSource {
        DeliveryIdSource::JsonPointer("/id".to_string())
    }
}

/// The `Stripe-Signature` value (`t=...,v1=...`) of `body` at `timestamp`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    let mac = Key::sha256(secret).mac(&[t.as_bytes(), b".", body]);
    format!("t={t},v1={}", mac.to_hex())
}

/// `Stripe-Signature` (the event ID travels in the body).
pub(super) fn signed_headers(
    secret: &Secret,
    delivery: &Delivery<'_>,
) -> Vec<(HeaderName, String)> {
    vec![(
        SIGNATURE,
        sign(secret.key_bytes(), delivery.timestamp, delivery.body),
    )]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;

    // stripe/stripe-dotnet, src/StripeTests/Services/Events/EventUtilityTest.cs with the body
    // src/StripeTests/Resources/event_test_signature.json (in
    // tests/fixtures/schemes/stripe.yaml). The v0 entry is from the same test.
    const SECRET: &str = "webhook_secret";
    const TS: u64 = 1_533_204_620;
    const HEADER: &str = "t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7,v0=63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef";
    const V1: &str = "2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7";

    fn body() -> Bytes {
        let fixture = include_str!("../../tests/fixtures/schemes/stripe.yaml");
        let doc: serde_yaml::Value = serde_yaml::from_str(fixture).unwrap();
        Bytes::from(doc["vectors"][0]["body"].as_str().unwrap().to_string())
    }

    fn check_at(now: u64, values: &[&str], body: Bytes) -> Result<(), VerifyError> {
        let clock = ManualClock::new(Duration::from_secs(now));
        let v = StripeVerifier::new(
            &[Secret::new(SECRET)],
            Window::new(clock, Duration::from_secs(300)),
        );
        let mut h = HeaderMap::new();
        for value in values {
            h.append(SIGNATURE, value.parse().unwrap());
        }
        v.verify(&h, body).map(drop)
    }

    fn check(values: &[&str]) -> Result<(), VerifyError> {
        check_at(TS + 100, values, body())
    }

    #[test]
    fn sdk_vector_signs_and_verifies() {
        assert_eq!(
            sign(SECRET.as_bytes(), TS, &body()),
            format!("t={TS},v1={V1}")
        );
        assert_eq!(check(&[HEADER]), Ok(()));
        // Spaces after commas, entry order, and extra v1 entries (a rolled secret) are fine.
        let zeros = "0".repeat(64);
        assert_eq!(check(&[&format!("v1={zeros}, t={TS}, v1={V1}")]), Ok(()));
        assert_eq!(
            check(&[&format!("t={TS},v1=bad_signature,v1={V1}")]),
            Ok(())
        );
    }

    #[test]
    fn malformed_headers_never_verify() {
        let zeros = "0".repeat(64);
        let cases: Vec<(Vec<String>, VerifyError)> = vec![
            (vec![], VerifyError::Missing),
            (vec![String::new()], VerifyError::Empty),
            (vec![HEADER.into(), HEADER.into()], VerifyError::Repeated),
            (vec![format!("v1={V1}")], VerifyError::MissingTimestamp),
            (vec![format!("t=,v1={V1}")], VerifyError::BadTimestamp),
            (vec![format!("t=-1,v1={V1}")], VerifyError::BadTimestamp),
            (
                vec![format!("t=1533204620.5,v1={V1}")],
                VerifyError::BadTimestamp,
            ),
            (vec![format!("t=soon,v1={V1}")], VerifyError::BadTimestamp),
            (
                vec![format!("t=99999999999999999999,v1={V1}")],
                VerifyError::BadTimestamp,
            ),
            (
                vec![format!("t={TS},t={TS},v1={V1}")],
                VerifyError::Malformed,
            ),
            (vec![format!("v1,t={TS}")], VerifyError::Malformed),
            (vec![format!("t={TS}")], VerifyError::NoKnownVersion),
            // Only v0 (or other schemes), even with the right MAC: never.
            (vec![format!("t={TS},v0={V1}")], VerifyError::NoKnownVersion),
            (vec![format!("t={TS},v2={V1}")], VerifyError::NoKnownVersion),
            (vec![format!("t={TS},v1=")], VerifyError::WrongLength),
            (
                vec![format!("t={TS},v1={}", &V1[..63])],
                VerifyError::WrongLength,
            ),
            (
                vec![format!("t={TS},v1={}g", &V1[..63])],
                VerifyError::Malformed,
            ),
            (vec![format!("t={TS},v1={zeros}")], VerifyError::Mismatch),
            // The signed timestamp is part of the content.
            (vec![format!("t={},v1={V1}", TS + 1)], VerifyError::Mismatch),
        ];
        for (values, want) in cases {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            assert_eq!(check(&values), Err(want), "{values:?}");
        }
        assert_eq!(
            check_at(TS, &[HEADER], Bytes::from_static(b"{}")),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn tolerance_is_300_seconds_inclusive() {
        assert_eq!(check_at(TS + 300, &[HEADER], body()), Ok(()));
        assert_eq!(
            check_at(TS + 301, &[HEADER], body()),
            Err(VerifyError::Stale)
        );
        assert_eq!(check_at(TS - 300, &[HEADER], body()), Ok(()));
        assert_eq!(
            check_at(TS - 301, &[HEADER], body()),
            Err(VerifyError::Stale)
        );
    }
}
